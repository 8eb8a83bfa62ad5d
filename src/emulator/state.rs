//! State shared by the IBKR half, the admin API and the controller: the session, the brokerage
//! state machine, pending fault budgets, counters and the registry of open sockets; and the
//! small pieces every half uses ([`Budget`], [`deadline_after`], [`epoch_ms`]). The SignalR hub
//! and the ticket API keep their own state; [`Gateway`](super::gateway::Gateway) holds all three.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use super::config::{EmulatorConfig, StsStyle};
use super::counters::Counters;
use super::faults::Fault;

/// Server name reported in `serverInfo` and `sts`.
pub(crate) const SERVER_NAME: &str = "kw-emu";
/// Server version reported in `serverInfo` and `sts`.
pub(crate) const SERVER_VERSION: &str = "Build 10.28.0";
/// The one (paper) account of the emulated user.
pub(crate) const ACCOUNT_ID: &str = "DU123456";

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// About thirty years: stands in for "never" when a caller-given duration would overflow.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `now + d`, saturating at a far-future instant instead of panicking on overflow.
pub(crate) fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// Sleeps until `at`, or forever without one.
pub(crate) async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A fresh random gateway session id (32 hex digits).
pub(crate) fn new_session_id() -> String {
    let id = format!("{:032x}", rand::random::<u128>());
    super::issued::remember(&id);
    id
}

/// The brokerage session as the gateway sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Brokerage {
    /// Authenticated and connected: data flows.
    Authenticated,
    /// Not authenticated (lost, logged out, or 2FA pending); ssodh/init restores it.
    Unauthenticated,
    /// Another platform holds the session; ssodh/init with `compete:true` takes it back.
    Competing,
    /// Half-dead: REST (auth/status, tickle) says authenticated while every socket says
    /// `sts authenticated:false`; `reauthenticate` or ssodh/init repairs it.
    HalfDead,
}

impl Brokerage {
    /// Whether REST calls say the brokerage session is authenticated.
    pub(crate) fn authenticated(self) -> bool {
        matches!(self, Self::Authenticated | Self::HalfDead)
    }

    /// Whether sockets find the brokerage session usable (`sts authenticated:true`, data).
    pub(crate) fn socket_authenticated(self) -> bool {
        matches!(self, Self::Authenticated)
    }

    /// Whether another session competes for this user.
    pub(crate) fn competing(self) -> bool {
        matches!(self, Self::Competing)
    }
}

/// Commands from the emulator to one socket task.
#[derive(Clone, Debug)]
pub(crate) enum SocketCmd {
    /// Abort without a close frame.
    Drop,
    /// Close with this code and reason.
    Close {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// The brokerage session is gone: send `sts authenticated:false` and stop data.
    Deauthenticate {
        /// Whether the loss is due to a competing session.
        competing: bool,
    },
    /// Go half-open: send nothing ever again.
    Silence,
    /// End every smd stream silently.
    EndStreams,
    /// Send a text frame containing the byte 0x99.
    NonUtf8,
    /// Fragment the next smd data message.
    FragmentNext,
    /// Send a text frame of this many bytes.
    Oversized(usize),
    /// Send a text frame that is not JSON.
    Malformed,
    /// Send an RFC 6455 ping.
    Ping,
}

/// Commands to the controller running on the emulator thread.
#[derive(Debug)]
pub(crate) enum ControlCmd {
    /// Stop the gateway listener for this long, then listen again.
    GatewayDown(Duration),
    /// Apply these faults at these offsets from now.
    RunSchedule(Vec<(Duration, Fault)>),
    /// Stop everything and end the emulator thread.
    Stop,
}

/// A status and a remaining count, for faults that apply to the next N requests.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Budget<T> {
    /// What to answer (a status, a delay…).
    pub(crate) value: T,
    /// How many more requests it applies to.
    pub(crate) remaining: u32,
}

impl<T: Clone> Budget<T> {
    /// Consumes one unit; returns the value if the budget was not exhausted.
    pub(crate) fn take(&mut self) -> Option<T> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(self.value.clone())
    }
}

/// Faults that apply to the next N requests.
#[derive(Debug, Default)]
pub(crate) struct Budgets {
    /// Upgrades to reject with a status.
    pub(crate) reject_upgrade: Budget<u16>,
    /// Tickles answering `no session`.
    pub(crate) tickle_no_session: Budget<()>,
    /// Tickles answering 401.
    pub(crate) tickle_unauthorized: Budget<()>,
    /// ssodh/init calls answering `no bridge`.
    pub(crate) no_bridge: Budget<()>,
    /// REST requests answering a server error.
    pub(crate) rest_error: Budget<u16>,
    /// Upgrades answering a server error.
    pub(crate) upgrade_error: Budget<u16>,
    /// REST responses to delay.
    pub(crate) slow: Budget<Duration>,
}

/// Mutable emulator state, behind [`Shared::lock`].
#[derive(Debug)]
pub(crate) struct State {
    /// Current gateway session id (authenticates sockets).
    pub(crate) session_id: String,
    /// The brokerage session.
    pub(crate) brokerage: Brokerage,
    /// Whether a person approved 2FA (ssodh/init can succeed).
    pub(crate) login_approved: bool,
    /// Whether the gateway listener is up.
    pub(crate) gateway_up: bool,
    /// The 429 penalty box ends at this instant.
    pub(crate) penalty_until: Option<Instant>,
    /// Per-request fault budgets.
    pub(crate) budgets: Budgets,
    /// Counters.
    pub(crate) counters: Counters,
    /// Open sockets by id.
    sockets: HashMap<u64, UnboundedSender<SocketCmd>>,
    /// The replica (`X-Keepwire-Replica`) of each open socket that named one.
    socket_replicas: HashMap<u64, String>,
    /// The replica holding the one brokerage session of the user, once a replica that names
    /// itself established it (clients that name no replica share the session as before).
    pub(crate) holder: Option<Holder>,
    /// Next socket id.
    next_socket_id: u64,
}

/// The replica holding the brokerage session, and the fencing token it established it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Holder {
    /// Its `X-Keepwire-Replica`.
    pub(crate) replica: String,
    /// Its `X-Keepwire-Fencing-Token` (0 when absent).
    pub(crate) token: u64,
}

impl State {
    /// Forgets the sockets whose task has ended.
    fn forget_closed_sockets(&mut self) {
        self.sockets.retain(|_, tx| !tx.is_closed());
        let open = &self.sockets;
        self.socket_replicas.retain(|id, _| open.contains_key(id));
    }

    /// Sends a command to every open socket, forgetting the ones whose task has ended.
    pub(crate) fn broadcast(&mut self, cmd: &SocketCmd) {
        self.sockets.retain(|_, tx| tx.send(cmd.clone()).is_ok());
    }

    /// The brokerage session as `replica` sees it: another replica holding it is, for this one,
    /// a competing session (IBKR allows one brokerage session per user).
    pub(crate) fn brokerage_for(&self, replica: Option<&str>) -> Brokerage {
        match (replica, &self.holder) {
            (Some(r), Some(h)) if h.replica != r => Brokerage::Competing,
            _ => self.brokerage,
        }
    }

    /// A replica using the session while nobody holds it holds it from now on (a gateway's
    /// session is that of whoever logged in first).
    pub(crate) fn claim(&mut self, replica: Option<&str>, token: u64) {
        if let (Some(r), None) = (replica, &self.holder) {
            self.holder = Some(Holder {
                replica: r.to_string(),
                token,
            });
        }
    }

    /// `ssodh/init` from `replica` succeeded: it holds the session now. When another replica
    /// held it (`compete:true`), that is a takeover: the other replica's sockets are told
    /// `competing` and closed at once (and forgotten: from now on they are not open).
    pub(crate) fn establish_for(&mut self, replica: &str, token: u64) {
        let previous = self.holder.replace(Holder {
            replica: replica.to_string(),
            token,
        });
        let Some(previous) = previous.filter(|p| p.replica != replica) else {
            return;
        };
        self.counters.takeovers += 1;
        if token <= previous.token {
            self.counters.takeovers_without_lease += 1;
            tracing::warn!(replica, token, holder = %previous.replica, holder_token = previous.token, "emulator: takeover with a stale fencing token");
        }
        let kicked: Vec<u64> = self
            .socket_replicas
            .iter()
            .filter(|(_, r)| r.as_str() != replica)
            .map(|(id, _)| *id)
            .collect();
        for id in kicked {
            self.socket_replicas.remove(&id);
            if let Some(tx) = self.sockets.remove(&id) {
                let _ = tx.send(SocketCmd::Deauthenticate { competing: true });
                let _ = tx.send(SocketCmd::Close {
                    code: 1000,
                    reason: "competing session".into(),
                });
            }
        }
        self.counters.ws_open_now = self.sockets.len() as u64;
    }

    /// Loses the brokerage session and tells every socket.
    pub(crate) fn lose_session(&mut self, brokerage: Brokerage) {
        self.brokerage = brokerage;
        self.broadcast(&SocketCmd::Deauthenticate {
            competing: brokerage.competing(),
        });
    }

    /// The gateway restarted: a fresh, authenticated session.
    pub(crate) fn restart_session(&mut self) {
        self.session_id = new_session_id();
        self.brokerage = Brokerage::Authenticated;
        self.login_approved = true;
    }

    /// Remaining penalty-box time, if inside it (clearing an expired one).
    pub(crate) fn penalty_left(&mut self) -> Option<Duration> {
        let until = self.penalty_until?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            self.penalty_until = None;
            None
        } else {
            Some(left)
        }
    }
}

/// A serialisable view of the emulator state (admin `GET /admin/state`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EmulatorState {
    /// Current gateway session id.
    pub session_id: String,
    /// Whether the brokerage session is authenticated.
    pub authenticated: bool,
    /// Whether another session competes.
    pub competing: bool,
    /// Whether 2FA is approved.
    pub login_approved: bool,
    /// Whether the gateway listener is up (false from the moment a `GatewayDown` closed it
    /// until it listens again).
    pub gateway_up: bool,
    /// Sockets open right now.
    pub open_sockets: u64,
}

/// The IBKR gateway's settings and locked state, and the controller channel, shared by every
/// task and thread.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Interval of the socket heartbeat.
    pub(crate) heartbeat_interval: Duration,
    /// Interval of smd updates.
    pub(crate) market_data_interval: Duration,
    /// smd stream expiry.
    pub(crate) smd_expiry: Option<Duration>,
    /// POST auth/status answers 400.
    pub(crate) auth_status_post_rejected: bool,
    /// Shape of sts messages.
    pub(crate) sts_style: StsStyle,
    /// User name.
    pub(crate) username: String,
    /// Controller channel.
    control: UnboundedSender<ControlCmd>,
    /// Mutable state.
    state: Mutex<State>,
}

impl Shared {
    /// Builds the shared state for a config.
    pub(crate) fn new(config: &EmulatorConfig, control: UnboundedSender<ControlCmd>) -> Self {
        let brokerage = if config.login_approved {
            Brokerage::Authenticated
        } else {
            Brokerage::Unauthenticated
        };
        Self {
            heartbeat_interval: config.heartbeat_interval.max(Duration::from_millis(1)),
            market_data_interval: config.market_data_interval.max(Duration::from_millis(1)),
            smd_expiry: config.smd_expiry,
            auth_status_post_rejected: config.auth_status_post_rejected,
            sts_style: config.sts_style,
            username: config.username.clone(),
            control,
            state: Mutex::new(State {
                session_id: new_session_id(),
                brokerage,
                login_approved: config.login_approved,
                gateway_up: true,
                penalty_until: None,
                budgets: Budgets::default(),
                counters: Counters::default(),
                sockets: HashMap::new(),
                socket_replicas: HashMap::new(),
                holder: None,
                next_socket_id: 1,
            }),
        }
    }

    /// Locks the state (a poisoned lock is recovered: the state stays consistent per field).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends a command to the controller (ignored once it has stopped).
    pub(crate) fn control(&self, cmd: ControlCmd) {
        if self.control.send(cmd).is_err() {
            tracing::debug!("emulator controller already stopped");
        }
    }

    /// Registers a new socket of `replica` (when it named one); returns its id. A socket
    /// opened while a socket of another replica is open counts as a replica overlap.
    pub(crate) fn register_socket(
        &self,
        tx: UnboundedSender<SocketCmd>,
        replica: Option<String>,
    ) -> u64 {
        let mut st = self.lock();
        let id = st.next_socket_id;
        st.next_socket_id += 1;
        st.sockets.insert(id, tx);
        if let Some(replica) = replica {
            st.forget_closed_sockets();
            let overlap = st.socket_replicas.values().any(|r| *r != replica);
            if overlap {
                st.counters.replica_socket_overlaps += 1;
                tracing::warn!(%replica, "emulator: sockets of two replicas open at once");
            }
            st.socket_replicas.insert(id, replica);
        }
        st.counters.ws_open_now = st.sockets.len() as u64;
        id
    }

    /// Forgets a socket whose task ended.
    pub(crate) fn unregister_socket(&self, id: u64) {
        let mut st = self.lock();
        st.sockets.remove(&id);
        st.socket_replicas.remove(&id);
        st.counters.ws_open_now = st.sockets.len() as u64;
    }

    /// Counts messages sent on a socket.
    pub(crate) fn count_sent(&self, n: u64) {
        self.lock().counters.messages_sent += n;
    }

    /// A snapshot of the gateway's counters (the hub's and the ticket API's left at zero).
    pub(crate) fn counters(&self) -> Counters {
        let mut st = self.lock();
        st.forget_closed_sockets();
        st.counters.ws_open_now = st.sockets.len() as u64;
        let mut by_replica = std::collections::BTreeMap::new();
        for r in st.socket_replicas.values() {
            *by_replica.entry(r.clone()).or_insert(0u64) += 1;
        }
        st.counters.ws_open_by_replica = by_replica;
        st.counters.clone()
    }

    /// Counts a fault injected into the hub or the ticket API.
    pub(crate) fn count_fault(&self) {
        self.lock().counters.faults_injected += 1;
    }

    /// A snapshot of the state.
    pub(crate) fn snapshot(&self) -> EmulatorState {
        let st = self.lock();
        EmulatorState {
            session_id: st.session_id.clone(),
            authenticated: st.brokerage.authenticated(),
            competing: st.brokerage.competing(),
            login_approved: st.login_approved,
            gateway_up: st.gateway_up,
            open_sockets: st.sockets.len() as u64,
        }
    }

    /// Counts and applies a fault of the IBKR gateway now (the hub's and the ticket API's are
    /// only counted: they are theirs to apply).
    pub(crate) fn inject(&self, fault: Fault) {
        let mut st = self.lock();
        st.counters.faults_injected += 1;
        match fault {
            Fault::Hub(_) | Fault::Ticket(_) => {}
            Fault::DropSockets => st.broadcast(&SocketCmd::Drop),
            Fault::CloseSockets { code, reason } => {
                st.broadcast(&SocketCmd::Close { code, reason });
            }
            Fault::SessionLost => st.lose_session(Brokerage::Unauthenticated),
            Fault::RejectUpgrade { status, count } => {
                st.budgets.reject_upgrade = Budget {
                    value: status,
                    remaining: count,
                };
            }
            Fault::TickleNoSession { count } => {
                st.budgets.tickle_no_session = Budget {
                    value: (),
                    remaining: count,
                };
                st.lose_session(Brokerage::Unauthenticated);
            }
            Fault::TickleUnauthorized { count } => {
                st.budgets.tickle_unauthorized = Budget {
                    value: (),
                    remaining: count,
                };
            }
            Fault::RequireLogin => {
                st.login_approved = false;
                st.lose_session(Brokerage::Unauthenticated);
            }
            Fault::ApproveLogin => st.login_approved = true,
            Fault::NoBridge { count } => {
                st.budgets.no_bridge = Budget {
                    value: (),
                    remaining: count,
                };
            }
            Fault::CompetingSession => st.lose_session(Brokerage::Competing),
            Fault::HalfDead => st.lose_session(Brokerage::HalfDead),
            Fault::GatewayDown { millis } => {
                drop(st);
                self.control(ControlCmd::GatewayDown(Duration::from_millis(millis)));
            }
            Fault::ServerError { status, count } => {
                let budget = Budget {
                    value: status,
                    remaining: count,
                };
                st.budgets.rest_error = budget;
                st.budgets.upgrade_error = budget;
            }
            Fault::RateLimit { millis } => {
                st.penalty_until = Some(deadline_after(Duration::from_millis(millis)));
            }
            Fault::HeartbeatSilence => st.broadcast(&SocketCmd::Silence),
            Fault::SmdSilentEnd => st.broadcast(&SocketCmd::EndStreams),
            Fault::RotateSession => st.session_id = new_session_id(),
            Fault::NonUtf8Frame => st.broadcast(&SocketCmd::NonUtf8),
            Fault::FragmentedMessage => st.broadcast(&SocketCmd::FragmentNext),
            Fault::OversizedFrame { bytes } => st.broadcast(&SocketCmd::Oversized(bytes)),
            Fault::MalformedFrame => st.broadcast(&SocketCmd::Malformed),
            Fault::Ping => st.broadcast(&SocketCmd::Ping),
            Fault::SlowResponses { millis, count } => {
                st.budgets.slow = Budget {
                    value: Duration::from_millis(millis),
                    remaining: count,
                };
            }
        }
    }
}
