//! The library API: a [`Handle`] to a running supervisor, usable from any tokio task.
//!
//! keepwire runs its actix system on a thread of its own, so the host can be a plain
//! `#[tokio::main]` service (or anything else).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use actix::prelude::*;
use prometheus::Registry;
use tokio::sync::{oneshot, watch};

use crate::channel;
use crate::config::{ConfigProblem, HaConfig, StreamConfig};
use crate::messages::{Resume, Subscribe, Unsubscribe};
use crate::metrics::Metrics;
use crate::status::{ActorKind, Status, StatusWatch, StreamState};
use crate::subscription::{Event, Subscription};
use crate::supervisor::{PanicIn, Shutdown, StreamSupervisor};
use crate::transport::Fence;

/// Errors of the library API. None carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No stream of that name.
    #[error("no stream named {0:?}; configured streams: {1}")]
    UnknownStream(String, String),
    /// The subscription cannot be carried by the stream's dialect, or the stream is stopped.
    #[error("cannot subscribe on stream {stream:?}: {reason}")]
    Subscribe {
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
    /// keepwire has shut down.
    #[error("keepwire has shut down")]
    Closed,
    /// Two streams share a name.
    #[error("stream name {0:?} is used twice: names must be unique")]
    DuplicateStream(String),
    /// Metrics could not be registered (an invalid const label, or a collision with metrics of
    /// the host that are not keepwire's).
    #[error("cannot register keepwire metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// keepwire's metrics are already in the registry with the same const labels (typically a
    /// second supervisor sharing the host's registry).
    #[error(
        "cannot register keepwire metrics: this registry already holds keepwire metrics with the \
         same const labels ({const_labels}); give every supervisor that shares a registry \
         distinct const labels with the same names, e.g. \
         Handle::builder().const_labels([(\"supervisor\", \"a\")]) and \
         .const_labels([(\"supervisor\", \"b\")]) ({detail})"
    )]
    MetricsCollision {
        /// The const labels this supervisor asked for (`{}` when none).
        const_labels: String,
        /// What the registry said.
        detail: String,
    },
    /// A stream's settings are out of range (see [`StreamConfig::validate`]); every problem is
    /// listed with its field, value and fix.
    #[error("stream {stream:?} is misconfigured: {}", list_problems(problems))]
    InvalidConfig {
        /// The stream.
        stream: String,
        /// Everything wrong with it.
        problems: Vec<ConfigProblem>,
    },
    /// `[ha]` is out of range (see [`HaConfig::validate`]), or this build lacks the `ha`
    /// feature.
    #[error("[ha] is misconfigured: {}", list_problems(problems))]
    InvalidHa {
        /// Everything wrong with it.
        problems: Vec<ConfigProblem>,
    },
    /// The supervisor thread could not start.
    #[error("cannot start the keepwire thread: {0}")]
    Thread(#[from] std::io::Error),
}

fn list_problems(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; and ")
}

/// Builds a supervisor. Start it with [`Builder::start`].
#[derive(Default)]
pub struct Builder {
    streams: Vec<StreamConfig>,
    registry: Option<Registry>,
    const_labels: BTreeMap<String, String>,
    ha: Option<HaConfig>,
}

impl Builder {
    /// Adds a stream.
    pub fn stream(mut self, config: StreamConfig) -> Self {
        self.streams.push(config);
        self
    }

    /// Runs this supervisor as one replica of several (active/standby on an etcd lease, feature
    /// `ha`): only the replica holding the lease runs the exclusive streams
    /// ([`StreamConfig::exclusive`]); the others hold them in `standby`.
    pub fn ha(mut self, config: HaConfig) -> Self {
        self.ha = Some(config);
        self
    }

    /// Registers metrics into the host's registry instead of a private one.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Adds const labels to every keepwire series (e.g. `[("supervisor", "a")]`), so that
    /// several supervisors can share one registry: give each the same label names with
    /// different values. Names must not be one of keepwire's own labels (`stream`, `state`,
    /// `reason`, `result`, `actor`, `kind`). Never put a secret or an account id in a label.
    pub fn const_labels<I, K, V>(mut self, labels: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.const_labels
            .extend(labels.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Starts keepwire on its own thread and returns a handle. Each stream's actors start at once.
    ///
    /// Every stream is checked first ([`StreamConfig::validate`]): a setting out of range is
    /// [`Error::InvalidConfig`] and nothing starts.
    pub fn start(self) -> Result<Handle, Error> {
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.streams {
            if !seen.insert(s.name.clone()) {
                return Err(Error::DuplicateStream(s.name.clone()));
            }
            s.validate().map_err(|problems| Error::InvalidConfig {
                stream: s.name.clone(),
                problems,
            })?;
        }
        if let Some(ha) = &self.ha {
            ha.validate()
                .map_err(|problems| Error::InvalidHa { problems })?;
            if !cfg!(feature = "ha") {
                return Err(Error::InvalidHa {
                    problems: vec![ConfigProblem {
                        field: "ha".into(),
                        value: "[ha]".into(),
                        reason: "this build of keepwire lacks the `ha` feature".into(),
                        remedy: "build keepwire with `--features ha` (or remove [ha])".into(),
                    }],
                });
            }
        }
        let registry = self.registry.unwrap_or_default();
        let metrics = register_metrics(&registry, &self.const_labels)?;
        let fence = self
            .ha
            .as_ref()
            .map(|h| Arc::new(crate::transport::Fence::new(h.replica_id.clone())));
        #[cfg(feature = "ha")]
        let ha = match self.ha {
            Some(config) => Some((
                config,
                crate::metrics::HaMetrics::register_with(&registry, &self.const_labels)?,
            )),
            None => None,
        };
        let (status_tx, status_rx) = watch::channel(Arc::new(Status::default()));
        let status_tx = Arc::new(status_tx);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let fenced = fence.clone().map(|f| {
            let names = self
                .streams
                .iter()
                .filter(|s| s.is_exclusive())
                .map(|s| s.name.clone())
                .collect();
            (f, names)
        });
        let streams = self.streams;
        let thread = std::thread::Builder::new()
            .name("keepwire".into())
            .spawn(move || {
                let system = actix_rt::System::new();
                let roots = system.block_on(async move {
                    let mut exclusive = Vec::new();
                    let mut counters = Vec::new();
                    let roots = streams
                        .into_iter()
                        .map(|cfg| {
                            let name = cfg.name.clone();
                            let m = metrics.stream(&name);
                            let tx = status_tx.clone();
                            let supervisor = StreamSupervisor::new(cfg.clone(), m.clone(), tx);
                            counters.push((supervisor.name(), m));
                            match &fence {
                                Some(f) if cfg.is_exclusive() => {
                                    let addr = supervisor.exclusive(f.clone()).start();
                                    exclusive.push(addr.clone());
                                    (name, addr)
                                }
                                _ => (name, supervisor.start()),
                            }
                        })
                        .collect::<BTreeMap<_, _>>();
                    actix_rt::spawn(crate::supervisor::refresh_counters(
                        status_tx.clone(),
                        counters,
                    ));
                    #[cfg(feature = "ha")]
                    let control = match (ha, fence) {
                        (Some((config, metrics)), Some(fence)) => {
                            Some(crate::ha::spawn(config, fence, exclusive, metrics))
                        }
                        _ => None,
                    };
                    #[cfg(not(feature = "ha"))]
                    let control = {
                        drop((exclusive, fence));
                        None::<HaControl>
                    };
                    (roots, control)
                });
                let _ = ready_tx.send((roots, actix_rt::System::current()));
                let _ = system.run();
                let _ = done_tx.send(());
            })?;
        let ((roots, ha), system) = ready_rx.recv().map_err(|_| Error::Closed)?;
        Ok(Handle {
            inner: Arc::new(Inner {
                roots,
                system,
                status: StatusWatch::new(status_rx),
                registry,
                thread: Mutex::new(Some(thread)),
                done: Mutex::new(Some(done_rx)),
                fenced,
                ha,
            }),
        })
    }
}

/// Labels of keepwire's own series: a const label must not reuse them.
const OWN_LABELS: [&str; 7] = ["stream", "state", "reason", "result", "actor", "kind", "le"];

/// Registers keepwire's metrics, naming the fix when they collide with another supervisor's.
fn register_metrics(
    registry: &Registry,
    const_labels: &BTreeMap<String, String>,
) -> Result<Metrics, Error> {
    if let Some(name) = const_labels
        .keys()
        .find(|k| OWN_LABELS.contains(&k.as_str()))
    {
        return Err(Error::Metrics(prometheus::Error::Msg(format!(
            "const label {name:?} is one of keepwire's own labels ({}); choose another name, e.g. \"supervisor\"",
            OWN_LABELS.join(", ")
        ))));
    }
    Metrics::register_with(registry, const_labels).map_err(|e| {
        let detail = match &e {
            prometheus::Error::AlreadyReg => Some("identical descriptors are already registered"),
            prometheus::Error::Msg(m) if m.contains("different label names") => {
                Some("the same metric names are registered with other const label names")
            }
            _ => None,
        };
        if let Some(detail) = detail {
            Error::MetricsCollision {
                const_labels: format!(
                    "{{{}}}",
                    const_labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v:?}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                detail: detail.to_string(),
            }
        } else {
            Error::Metrics(e)
        }
    })
}

struct Inner {
    roots: BTreeMap<String, Addr<StreamSupervisor>>,
    system: actix_rt::System,
    status: StatusWatch,
    registry: Registry,
    thread: Mutex<Option<JoinHandle<()>>>,
    done: Mutex<Option<oneshot::Receiver<()>>>,
    /// Under HA: the fence and the names of the exclusive streams.
    fenced: Option<(Arc<Fence>, std::collections::BTreeSet<String>)>,
    /// Under HA: gives the lease back on shutdown.
    ha: Option<HaControl>,
}

#[cfg(feature = "ha")]
use crate::ha::HaControl;

/// Stands in for the HA control in a build without the `ha` feature.
#[cfg(not(feature = "ha"))]
struct HaControl;

#[cfg(not(feature = "ha"))]
impl HaControl {
    async fn resign(&self) {}
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.system.stop();
    }
}

/// A running keepwire supervisor. `Clone + Send + Sync`; dropping the last clone stops it.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("streams", &self.inner.roots.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Handle {
    /// A builder with no streams.
    pub fn builder() -> Builder {
        Builder::default()
    }

    fn root(&self, stream: &str) -> Result<&Addr<StreamSupervisor>, Error> {
        self.inner.roots.get(stream).ok_or_else(|| {
            Error::UnknownStream(
                stream.to_string(),
                self.inner
                    .roots
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
    }

    /// Subscribes on `stream`. Events arrive on the returned receiver, which keeps at most
    /// `consumer_capacity` events (the oldest are dropped, and counted, for a slow consumer).
    /// The subscription survives reconnects: it is replayed on every new socket.
    pub async fn subscribe(
        &self,
        stream: &str,
        subscription: Subscription,
    ) -> Result<channel::Receiver<Event>, Error> {
        self.subscribe_with_capacity(stream, subscription, 4096)
            .await
    }

    /// Like [`Handle::subscribe`] with an explicit queue capacity.
    pub async fn subscribe_with_capacity(
        &self,
        stream: &str,
        subscription: Subscription,
        capacity: usize,
    ) -> Result<channel::Receiver<Event>, Error> {
        self.subscribe_many(stream, [subscription], capacity).await
    }

    /// Subscribes to every one of `subscriptions` on `stream` with one receiver for all of them,
    /// which keeps at most `capacity` events in all. All or none: if the gateway's dialect
    /// refuses one, none is subscribed. Events name their topic ([`Event::Data`],
    /// [`Event::State`]).
    ///
    /// One consumer of many subscriptions is cheaper on one queue than on a receiver each merged
    /// with `select_all`: one wake-up and one lock per batch of messages, whichever topics they
    /// are on. Unsubscribing one of them leaves the receiver open for the others; it ends when
    /// every one is unsubscribed (at once, for an empty list).
    pub async fn subscribe_many(
        &self,
        stream: &str,
        subscriptions: impl IntoIterator<Item = Subscription>,
        capacity: usize,
    ) -> Result<channel::Receiver<Event>, Error> {
        let root = self.root(stream)?;
        let (tx, rx) = channel::bounded(capacity);
        root.send(Subscribe {
            subscriptions: subscriptions.into_iter().collect(),
            sender: tx,
        })
        .await
        .map_err(|_| Error::Closed)?
        .map_err(|reason| Error::Subscribe {
            stream: stream.to_string(),
            reason,
        })?;
        Ok(rx)
    }

    /// Unsubscribes (sends the gateway's unsubscribe command). Returns whether it was subscribed.
    pub async fn unsubscribe(
        &self,
        stream: &str,
        subscription: Subscription,
    ) -> Result<bool, Error> {
        self.root(stream)?
            .send(Unsubscribe { subscription })
            .await
            .map_err(|_| Error::Closed)
    }

    /// A watch of the status of every stream. Its reads are `Arc` snapshots: hold them as long
    /// as you like, keepwire's thread never waits for a reader.
    pub fn status(&self) -> StatusWatch {
        self.inner.status.clone()
    }

    /// The current status as [`Handle::status`] publishes it, except that under HA an exclusive
    /// stream shows `standby` from the moment this replica may no longer talk to the gateway (its
    /// lease is not known fresh), even before its supervisor has published the change (e.g. in
    /// a process that was frozen): what `keepwire run` serves on `/status` and `/readyz`.
    pub fn status_now(&self) -> Status {
        let mut status = Status::clone(&self.inner.status.snapshot());
        if let Some((fence, exclusive)) = &self.inner.fenced {
            if fence.admits().is_none() {
                for name in exclusive {
                    if let Some(s) = status.streams.get_mut(name.as_str()) {
                        if !matches!(s.state, StreamState::Failed { .. } | StreamState::Stopped) {
                            Arc::make_mut(s).state = StreamState::Standby;
                        }
                    }
                }
            }
        }
        status
    }

    /// The registry keepwire's metrics live in.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Clears a hard failure of `stream` (e.g. after closing a competing session) and reconnects.
    pub async fn resume(&self, stream: &str) -> Result<(), Error> {
        self.root(stream)?
            .send(Resume)
            .await
            .map_err(|_| Error::Closed)
    }

    /// Chaos: makes the named actor of `stream` panic inside a handler. The stream supervisor
    /// rebuilds that actor alone.
    pub async fn inject_panic(&self, stream: &str, actor: ActorKind) -> Result<(), Error> {
        self.root(stream)?
            .send(PanicIn(actor))
            .await
            .map_err(|_| Error::Closed)
    }

    /// Runs `task` on keepwire's own thread, next to the socket readers: data reaches a consumer
    /// there without a hop between threads (no wake-up of another thread per message, the lowest
    /// latency keepwire offers). That thread is shared by every stream: keep the task short and
    /// never block in it; parse-heavy or slow consumers belong on their own threads. The task
    /// ends with [`Handle::shutdown`] at the latest.
    pub fn spawn<F>(&self, task: F) -> Result<(), Error>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if self.inner.system.arbiter().spawn(task) {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    /// Stops every stream cleanly (unsubscribes, logs out when configured), then the thread.
    pub async fn shutdown(&self) {
        for root in self.inner.roots.values() {
            let _ = root.send(Shutdown).await;
        }
        if let Some(ha) = &self.inner.ha {
            // The exclusive streams are stopped: give the lease back so another replica leads now.
            ha.resign().await;
        }
        self.inner.system.stop();
        let done = self
            .inner
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(done) = done {
            let _ = done.await;
        }
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}
