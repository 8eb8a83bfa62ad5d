//! The faults the emulator can inject, as one serde-tagged enum (`{"fault":"session_lost"}`),
//! with those of the SignalR hub ([`HubFault`]) and the ticket API ([`TicketFault`]) inside it.

use serde::{Deserialize, Serialize};

/// One fault to apply now (from code, the admin API or a schedule).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// Abort every open socket without a close frame (TCP drop).
    DropSockets,
    /// Close every open socket with this code and reason.
    CloseSockets {
        /// Close code sent in the close frame.
        code: u16,
        /// Close reason (truncated to fit a control frame).
        reason: String,
    },
    /// Brokerage session lost: every socket gets `sts authenticated:false` (per `StsStyle`) and goes
    /// quiet (no data; hb continues); auth/status and tickle say `authenticated:false` until a
    /// successful ssodh/init. Sockets that saw false never say true again.
    SessionLost,
    /// The next `count` WebSocket upgrades are answered with `status` (e.g. 401, 403, 500).
    RejectUpgrade {
        /// HTTP status of the rejection.
        status: u16,
        /// How many upgrades to reject.
        count: u32,
    },
    /// The next `count` tickles answer 200 `{"error":"no session"}`, and the brokerage session is
    /// lost as in [`Fault::SessionLost`] (at injection time).
    TickleNoSession {
        /// How many tickles answer `no session`.
        count: u32,
    },
    /// The next `count` tickles answer 401 `{"error":"not authenticated","statusCode":401}`.
    TickleUnauthorized {
        /// How many tickles answer 401.
        count: u32,
    },
    /// 2FA not yet approved: session lost, and ssodh/init answers 401 `not authenticated` until
    /// [`Fault::ApproveLogin`].
    RequireLogin,
    /// A person approved 2FA: ssodh/init (and reauthenticate) work again.
    ApproveLogin,
    /// The next `count` ssodh/init calls answer 400 `{"error":"no bridge","statusCode":400}`.
    NoBridge {
        /// How many ssodh/init calls fail.
        count: u32,
    },
    /// Another platform logged in: auth/status/tickle/sts show `competing:true` (and
    /// `authenticated:false` on sockets) until ssodh/init with `{"compete":true}`.
    CompetingSession,
    /// The gateway stops listening (connection refused; open sockets dropped) for `millis`, then
    /// listens again on the same port with a fresh, authenticated session.
    GatewayDown {
        /// Downtime in milliseconds.
        millis: u64,
    },
    /// The next `count` REST requests (any `/v1/api` endpoint) answer `status`, and the next
    /// `count` upgrades too.
    ServerError {
        /// HTTP status to answer (500 or 503 are typical).
        status: u16,
        /// How many requests (and, separately, upgrades) fail.
        count: u32,
    },
    /// Every REST request and upgrade answers 429 with `Retry-After` for `millis` (the penalty box).
    RateLimit {
        /// Length of the penalty box in milliseconds.
        millis: u64,
    },
    /// Open sockets go silent (no hb, no data, no replies, no close: half-open). New sockets are
    /// normal.
    HeartbeatSilence,
    /// Every active smd stream on open sockets ends silently (no more data until re-subscribed).
    SmdSilentEnd,
    /// A half-dead gateway: REST keeps saying authenticated while every socket (open and new)
    /// says `sts authenticated:false` and sends no data, until `reauthenticate` or ssodh/init.
    HalfDead,
    /// The gateway session id rotates: tickle returns the new id; upgrades with the old id in the
    /// cookie get 401; existing sockets keep working.
    RotateSession,
    /// The next message on each open socket is a text frame containing the non-UTF-8 byte 0x99
    /// inside a JSON string.
    NonUtf8Frame,
    /// The next smd data message on each open socket is sent as 3 fragments (text, continuation,
    /// final continuation).
    FragmentedMessage,
    /// Send one text frame of exactly `bytes` bytes on each open socket.
    OversizedFrame {
        /// Payload size of the frame.
        bytes: usize,
    },
    /// Send one text frame that is not JSON on each open socket.
    MalformedFrame,
    /// Send an RFC 6455 ping on each open socket (the client must answer with a pong).
    Ping,
    /// Every REST response is delayed by `millis` for the next `count` requests.
    SlowResponses {
        /// Delay per response in milliseconds.
        millis: u64,
        /// How many responses are delayed.
        count: u32,
    },
    /// A fault of the SignalR hub.
    Hub(HubFault),
    /// A fault of the ticket API.
    Ticket(TicketFault),
}

/// True, for flags that default to on.
fn yes() -> bool {
    true
}

/// One, for count fields that default to a single occurrence.
fn one() -> u32 {
    1
}

/// Faults of the hub, injected as `Fault::Hub(..)` (admin API: `{"fault":"hub","hub_fault":…}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "hub_fault", rename_all = "snake_case")]
pub enum HubFault {
    /// Every token expires now (`validate`, negotiate and upgrades answer 401 until a new
    /// login); open connections get Close with error `Unauthorized` and `allowReconnect:true`,
    /// as when a token expires mid-stream.
    ExpireTokens,
    /// The next `count` negotiate requests answer `status` (e.g. 401, 503).
    RejectNegotiate {
        /// HTTP status.
        status: u16,
        /// How many (default 1).
        #[serde(default = "one")]
        count: u32,
    },
    /// The next `count` WebSocket upgrades answer `status`.
    RejectUpgrade {
        /// HTTP status.
        status: u16,
        /// How many (default 1).
        #[serde(default = "one")]
        count: u32,
    },
    /// Every open connection gets a Close message (type 7), then a WebSocket close.
    Close {
        /// The Close message's `allowReconnect` (default false: do not reconnect).
        #[serde(default)]
        allow_reconnect: bool,
        /// The Close message's `error`, if any.
        #[serde(default)]
        error: Option<String>,
    },
    /// Every open connection is aborted without a Close message or WebSocket close.
    Drop,
    /// Open connections go half-open: no pings, no data, no replies, no close. New connections
    /// are normal.
    Silent,
    /// From now on, messages on open connections are split across several WebSocket messages
    /// (a message's tail shares a frame with the next one's head).
    SplitFrames,
    /// The next `count` handshakes are answered `{"error":"…"}` and the connection is closed.
    HandshakeError {
        /// How many (default 1).
        #[serde(default = "one")]
        count: u32,
    },
    /// The next `count` negotiates at the hub (with a valid token) are answered, as Azure SignalR
    /// Service's application servers do, with `{"url":url,"accessToken":…}`: a fresh token of the
    /// same user that only the redirect target (`/hubs/redirected` on this emulator) accepts.
    /// `url` is sent as given, so it may name this emulator's redirect target
    /// (`{base}/hubs/redirected`) or anything else.
    RedirectNegotiate {
        /// The URL the client is sent to.
        url: String,
        /// How many (default 1).
        #[serde(default = "one")]
        count: u32,
        /// Whether the redirect carries an `accessToken` (default true; without one a client
        /// must not send its own bearer to another origin).
        #[serde(default = "yes")]
        with_access_token: bool,
    },
}

/// Faults of the ticket API, injected as `Fault::Ticket(..)` (admin API:
/// `{"fault":"ticket","ticket_fault":"store_down","millis":3000}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ticket_fault", rename_all = "snake_case")]
pub enum TicketFault {
    /// Every JWT issued so far expires now (the ticket endpoint answers `INVALID_TOKEN`).
    ExpireJwts,
    /// JWTs (issued so far and from now on) lack their session: `MISSING_SESSION` until cleared.
    MissingSession {
        /// Whether the session is missing.
        on: bool,
    },
    /// The ticket store is unavailable (503 `REDIS_UNAVAILABLE`) for `millis`.
    StoreDown {
        /// How long.
        millis: u64,
    },
    /// The next issued ticket is consumed before the client can use it (a reused ticket).
    ReuseNextTicket,
    /// Block every origin (accepted, then closed with 1008 `ORIGIN_BLOCKED`) or lift the block.
    BlockOrigins {
        /// Whether origins are blocked.
        on: bool,
    },
    /// Abort every open socket without a close frame.
    Drop,
    /// Close every open socket with this code.
    Close {
        /// The close code.
        code: u16,
    },
    /// The next ticket request is answered `status` (a 3xx, e.g. 307) with `Location: location`
    /// and no ticket.
    RedirectTicket {
        /// The HTTP status.
        status: u16,
        /// The `Location` header.
        location: String,
    },
}
