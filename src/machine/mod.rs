//! The decisions of a stream, as pure machines: no I/O, no actix, no tokio, no clock.
//!
//! Each actor of [`crate::actors`] owns one machine, turns what happens (a message, a timer, a
//! finished HTTP call or dial, a frame) into an event, and performs the effects the machine gives
//! back (dial, HTTP call, arm a timer, message another actor, restart, stop). The same machines
//! run unchanged in the deterministic simulator ([`crate::sim`]), which explores millions of
//! fault schedules in virtual time. rumqttc's `MqttState` and quinn-proto are the models.
//!
//! | machine | actor | owns |
//! |---|---|---|
//! | [`token::TokenMachine`] | TokenManager | credential generations, single-flight refresh, refresh timer |
//! | [`session::SessionMachine`] | GatewaySession | REST session phases, repair steps, its backoff |
//! | [`connection::ConnMachine`] | StreamConnection | socket phases, epochs, the failure table's verdicts, its backoff |
//! | [`intensity::Intensity`] | the stream supervisor | restart intensity (panics only) |
//! | [`ha::HaMachine`] | the HA shell (`ha` feature) | leader or standby, the fence deadline |
//!
//! Time is a [`Now`]: the time elapsed since an origin fixed per stream.

pub mod connection;
pub mod ha;
pub mod intensity;
pub mod session;
pub mod subscriptions;
pub mod token;

pub use crate::backoff::Now;

use crate::failure::Failure;

/// What a request to a halted machine gets.
pub(crate) fn halted() -> Failure {
    Failure::Config {
        detail: "stream halted (hard failure or shutdown); call resume to retry".into(),
    }
}
