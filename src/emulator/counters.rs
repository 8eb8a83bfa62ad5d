//! Request and event counters, readable by tests and through the admin API.

use serde::{Deserialize, Serialize};

/// A snapshot of everything the emulator counts since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// `GET /iserver/auth/status` requests.
    pub auth_status_get: u64,
    /// `POST /iserver/auth/status` requests.
    pub auth_status_post: u64,
    /// `POST /iserver/auth/ssodh/init` requests.
    pub ssodh_init: u64,
    /// `POST /iserver/reauthenticate` requests.
    pub reauthenticate: u64,
    /// `/tickle` requests (GET or POST).
    pub tickle: u64,
    /// `GET /sso/validate` requests.
    pub sso_validate: u64,
    /// `POST /logout` requests.
    pub logout: u64,
    /// `GET /iserver/accounts` requests.
    pub accounts: u64,
    /// WebSocket upgrades answered with 101.
    pub ws_upgrades_accepted: u64,
    /// WebSocket upgrade requests answered with anything else.
    pub ws_upgrades_rejected: u64,
    /// Sockets open right now.
    pub ws_open_now: u64,
    /// `smd+…` commands received (including re-sends).
    pub smd_subscribe: u64,
    /// `umd+…` commands received.
    pub umd: u64,
    /// `tic` commands received.
    pub tic: u64,
    /// Messages sent on sockets (a fragmented message counts once).
    pub messages_sent: u64,
    /// Faults injected (through code, the admin API or a schedule).
    pub faults_injected: u64,
    /// Requests and upgrades answered 429.
    pub rate_limited: u64,
    /// RFC 6455 pongs received on sockets.
    pub pongs_received: u64,
    /// The SignalR hub's counters.
    #[serde(default)]
    pub hub: crate::emulator::signalr::HubCounters,
    /// The ticket API's counters.
    #[serde(default)]
    pub ticket: crate::emulator::ticket::TicketCounters,
}
