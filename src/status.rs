//! What embedders and operators see: a [`Status`] per supervisor, published on a `watch` channel.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

/// The actors of one stream, for restart counts and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// Credentials and their generations.
    TokenManager,
    /// REST session with the gateway.
    GatewaySession,
    /// The socket.
    StreamConnection,
    /// Desired subscriptions and consumers.
    Subscriptions,
}

impl ActorKind {
    /// Every actor, in start order.
    pub const ALL: [ActorKind; 4] = [
        ActorKind::TokenManager,
        ActorKind::GatewaySession,
        ActorKind::StreamConnection,
        ActorKind::Subscriptions,
    ];

    /// Snake-case name (metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::TokenManager => "token_manager",
            ActorKind::GatewaySession => "gateway_session",
            ActorKind::StreamConnection => "stream_connection",
            ActorKind::Subscriptions => "subscriptions",
        }
    }
}

/// The state of a stream as a user would describe it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StreamState {
    /// Not started yet.
    #[default]
    Starting,
    /// Establishing the gateway session (REST).
    Establishing,
    /// A person must log in / approve 2FA at the gateway.
    AwaitingLogin {
        /// What to do, in plain words.
        remedy: String,
    },
    /// Waiting before the next attempt.
    Backoff {
        /// Attempt number (1-based).
        attempt: u32,
        /// The delay being waited.
        delay_ms: u64,
    },
    /// Dialing the socket / waiting for the gateway to confirm authentication.
    Connecting,
    /// The gateway confirmed authentication on the socket.
    Ready,
    /// Stopped for a reason retrying cannot fix.
    Failed {
        /// Why.
        reason: String,
    },
    /// Shut down on request.
    Stopped,
    /// An exclusive stream on a replica that does not hold the HA lease: no call to the gateway,
    /// desired subscriptions kept; it runs when this replica is elected.
    Standby,
}

impl StreamState {
    /// A short snake-case name (metrics label).
    pub fn as_str(&self) -> &'static str {
        match self {
            StreamState::Starting => "starting",
            StreamState::Establishing => "establishing",
            StreamState::AwaitingLogin { .. } => "awaiting_login",
            StreamState::Backoff { .. } => "backoff",
            StreamState::Connecting => "connecting",
            StreamState::Ready => "ready",
            StreamState::Failed { .. } => "failed",
            StreamState::Stopped => "stopped",
            StreamState::Standby => "standby",
        }
    }

    /// Every state name, for exporting one-hot gauges.
    pub const NAMES: [&'static str; 9] = [
        "starting",
        "establishing",
        "awaiting_login",
        "backoff",
        "connecting",
        "ready",
        "failed",
        "stopped",
        "standby",
    ];
}

/// Subscription counts of a stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SubscriptionCounts {
    /// What the user asked for.
    pub desired: usize,
    /// Confirmed on the current socket.
    pub active: usize,
    /// Sent or waiting to be sent.
    pub pending: usize,
    /// Given up on for this socket (named in the failure).
    pub failed: usize,
}

/// The last failure of a stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LastFailure {
    /// Which actor saw it.
    pub actor: ActorKind,
    /// Stable short reason (as in metrics).
    pub reason: &'static str,
    /// Human description with the remedy.
    pub message: String,
    /// Its class (`soft`, `auth`, `session`, `hard`, …).
    pub class: String,
}

/// Status of one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StreamStatus {
    /// Current state.
    #[serde(flatten)]
    pub state: StreamState,
    /// Connection attempts since the last healthy period.
    pub attempt: u32,
    /// The last failure, if any.
    pub last_failure: Option<LastFailure>,
    /// Subscriptions.
    pub subscriptions: SubscriptionCounts,
    /// Restarts per actor.
    pub restarts: BTreeMap<ActorKind, u64>,
    /// Current credential generation.
    pub credential_generation: u64,
    /// Current socket epoch.
    pub epoch: u64,
    /// Completed recoveries (Ready lost, then Ready with every subscription active again).
    pub recoveries: u64,
    /// Duration of the last recovery.
    #[serde(serialize_with = "ser_opt_ms")]
    pub last_recovery: Option<Duration>,
    /// Hard failures so far.
    pub hard_failures: u64,
    /// Messages received on the socket (data and control).
    pub messages_received: u64,
    /// Events dropped because a consumer was too slow.
    pub events_dropped: u64,
    /// Credentials handed out for dials (one per attempt: a token is never captured).
    pub credential_requests: u64,
}

fn ser_opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_millis() as u64)),
        None => s.serialize_none(),
    }
}

impl StreamStatus {
    /// Ready with every desired subscription active.
    pub fn is_fully_ready(&self) -> bool {
        self.state == StreamState::Ready && self.subscriptions.active == self.subscriptions.desired
    }
}

/// Status of every stream of a supervisor, keyed by stream name.
///
/// Entries are shared: publishing one stream's change copies pointers to the others, never
/// their contents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Per stream.
    pub streams: BTreeMap<Arc<str>, Arc<StreamStatus>>,
}

impl Status {
    /// The named stream's status.
    pub fn stream(&self, name: &str) -> Option<&StreamStatus> {
        self.streams.get(name).map(|s| &**s)
    }
}

/// Watches a supervisor's [`Status`] (from [`crate::Handle::status`]).
///
/// Every read is an `Arc` snapshot taken under the watch's lock and released at once: a reader
/// may hold a snapshot across an `.await` as long as it likes without ever holding up keepwire's
/// thread (a `tokio::sync::watch::Ref` held that long would block every publication, and with
/// it every stream).
#[derive(Clone, Debug)]
pub struct StatusWatch {
    rx: watch::Receiver<Arc<Status>>,
}

impl StatusWatch {
    /// A watch on `rx`.
    pub fn new(rx: watch::Receiver<Arc<Status>>) -> Self {
        Self { rx }
    }

    /// The status now.
    pub fn snapshot(&self) -> Arc<Status> {
        self.rx.borrow().clone()
    }

    /// The status now, marked as seen (the next [`StatusWatch::changed`] waits for a newer one).
    pub fn snapshot_and_update(&mut self) -> Arc<Status> {
        self.rx.borrow_and_update().clone()
    }

    /// Waits for a status newer than the last one seen; an error once keepwire stopped.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.rx.changed().await
    }

    /// Waits until `pred` holds for the status (checking the current one first) and returns
    /// that status; an error once keepwire stopped.
    pub async fn wait_for(
        &mut self,
        mut pred: impl FnMut(&Status) -> bool,
    ) -> Result<Arc<Status>, watch::error::RecvError> {
        self.rx.wait_for(|s| pred(s)).await.map(|s| s.clone())
    }
}
