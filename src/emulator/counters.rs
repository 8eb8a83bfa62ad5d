//! Request and event counters, readable by tests and through the admin API: the gateway's, the
//! SignalR hub's ([`HubCounters`]) and the ticket API's ([`TicketCounters`]).

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
    /// `ssodh/init` with `compete:true` from a replica (`X-Keepwire-Replica`) that took the one
    /// brokerage session from another replica (whose sockets were kicked).
    #[serde(default)]
    pub takeovers: u64,
    /// Takeovers whose fencing token (`X-Keepwire-Fencing-Token`) was not above the one the
    /// previous holder established the session with: a replica that had lost its lease.
    #[serde(default)]
    pub takeovers_without_lease: u64,
    /// Sockets accepted while a socket of another replica was open (two replicas holding
    /// sockets at the same moment).
    #[serde(default)]
    pub replica_socket_overlaps: u64,
    /// Sockets open right now, per replica that named itself.
    #[serde(default)]
    pub ws_open_by_replica: std::collections::BTreeMap<String, u64>,
    /// The SignalR hub's counters.
    #[serde(default)]
    pub hub: HubCounters,
    /// The ticket API's counters.
    #[serde(default)]
    pub ticket: TicketCounters,
}

/// What the hub counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HubCounters {
    /// `POST /api/Auth/loginKey` requests (successful or not).
    pub logins: u64,
    /// Logins refused (unknown user or wrong key).
    pub logins_rejected: u64,
    /// `POST /api/Auth/validate` requests (successful or not).
    pub validates: u64,
    /// Validates answered 401.
    pub validates_rejected: u64,
    /// Negotiate requests (successful or not).
    pub negotiates: u64,
    /// Negotiates answered with anything but 200 (no or expired token, fault).
    pub negotiate_rejected: u64,
    /// Negotiates presenting a token negotiate had already answered 401/403 (a credential
    /// generation used after it was rejected).
    pub refused_token_presented_again: u64,
    /// WebSocket upgrades answered 101.
    pub upgrades_accepted: u64,
    /// WebSocket upgrade requests answered with anything else (401, 404, 409, fault…).
    pub upgrades_rejected: u64,
    /// Handshakes answered `{}`.
    pub handshakes: u64,
    /// Handshakes answered `{"error":…}` (wrong protocol, fault) or never completed.
    pub handshake_errors: u64,
    /// `SubscribeContractQuotes` invocations.
    pub subscribe_invocations: u64,
    /// `UnsubscribeContractQuotes` invocations.
    pub unsubscribe_invocations: u64,
    /// Invocations of unknown hub methods.
    pub unknown_invocations: u64,
    /// `GatewayQuote` invocations sent.
    pub quotes_sent: u64,
    /// Pings (type 6) sent.
    pub pings_sent: u64,
    /// Pings (type 6) received.
    pub pings_received: u64,
    /// Close messages (type 7) sent.
    pub closes_sent: u64,
    /// Close messages (type 7) received from clients.
    pub closes_received: u64,
    /// Connections closed because the client was silent for `client_timeout`.
    pub client_timeouts: u64,
    /// Client records that could not be parsed (the connection is closed with an error).
    pub protocol_errors: u64,
    /// Connections with an open socket right now.
    pub open_connections: u64,
    /// Negotiates answered with a redirect (`HubFault::RedirectNegotiate`).
    pub negotiate_redirects: u64,
    /// Negotiates at the redirect target (`/hubs/redirected`).
    pub redirected_negotiates: u64,
    /// WebSocket upgrades accepted at the redirect target.
    pub redirected_upgrades: u64,
    /// Requests at the redirect target presenting a token that is not a redirect's access token
    /// of this hub (e.g. the client's own bearer, which must never follow a redirect).
    pub foreign_tokens_at_redirect: u64,
}

/// What the ticket API counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketCounters {
    /// Token requests (any outcome).
    pub token_requests: u64,
    /// Ticket requests (any outcome).
    pub ticket_requests: u64,
    /// Ticket requests refused with `INVALID_TOKEN`.
    pub invalid_token: u64,
    /// Ticket requests refused with `MISSING_SESSION`.
    pub missing_session: u64,
    /// Ticket requests answered 503.
    pub store_unavailable: u64,
    /// Ticket requests made without any bearer token.
    pub ticket_without_jwt: u64,
    /// Upgrades accepted.
    pub upgrades_accepted: u64,
    /// Upgrades refused (missing, unknown, used or expired ticket).
    pub upgrades_rejected: u64,
    /// Upgrades refused because their ticket had already been used.
    pub ticket_reused: u64,
    /// Tickets the client presented more than once (a client must never do this).
    pub ticket_presented_twice: u64,
    /// Ticket requests presenting a JWT the ticket endpoint had already refused.
    pub refused_jwt_presented_again: u64,
    /// Upgrades refused with 429 beyond `upgrades_per_second`.
    pub upgrades_not_admitted: u64,
    /// Sockets closed with 1008 `ORIGIN_BLOCKED`.
    pub origin_blocked: u64,
    /// Subscribe commands received.
    pub subscribes: u64,
    /// Unsubscribe commands received.
    pub unsubscribes: u64,
    /// Data messages sent.
    pub data_sent: u64,
    /// Sockets open now.
    pub open_sockets: u64,
}
