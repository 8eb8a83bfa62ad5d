//! keepwire keeps authenticated streaming connections to broker and market-data gateways alive.
//!
//! A stream is supervised by four actix actors — [`actors::TokenManager`],
//! [`actors::GatewaySession`], [`actors::StreamConnection`] and [`actors::Subscriptions`] — that
//! exchange the messages of [`messages`]; failures are classified by the one table in
//! [`failure`], and a failure restarts only the actor it concerns.
//!
//! ```no_run
//! # async fn run() -> Result<(), keepwire::Error> {
//! use keepwire::{Handle, StreamConfig, Subscription, TlsConfig};
//! let mut ibkr = StreamConfig::ibkr("ibkr", "https://127.0.0.1:5000");
//! ibkr.tls = TlsConfig::CaFile("gateway-cert.pem".into());
//! let kw = Handle::builder().stream(ibkr).start()?;
//! let mut quotes = kw.subscribe("ibkr", Subscription::market_data(265598, ["31", "84", "86"])).await?;
//! while let Some(event) = quotes.recv().await {
//!     println!("{event:?}");
//! }
//! kw.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod actors;
pub mod backoff;
pub mod channel;
pub mod config;
pub mod config_file;
pub mod dialect;
pub mod failure;
#[cfg(feature = "ha")]
pub mod ha;
pub mod handle;
pub mod ids;
pub mod machine;
pub mod messages;
pub mod metrics;
pub mod outbox;
pub mod secret;
pub mod sim;
pub mod status;
pub mod subscription;
pub mod supervisor;
pub mod tls;
pub mod transport;
pub mod url_rule;

#[cfg(feature = "emulator")]
pub mod emulator;

#[cfg(feature = "proxy")]
pub mod proxy;

pub use config::{
    BackoffConfig, CompetingPolicy, ConfigProblem, DialectKind, HaConfig, IbkrConfig,
    RestartIntensity, StreamConfig, TlsConfig,
};
pub use failure::{Class, Failure};
pub use handle::{Builder, Error, Handle};
pub use status::{ActorKind, Status, StatusWatch, StreamState, StreamStatus, SubscriptionCounts};
pub use subscription::{Event, Subscription, SubscriptionState};
