//! Active/standby replicas on an etcd lease (feature `ha`): the thin shell around
//! [`crate::machine::ha::HaMachine`].
//!
//! Each replica grants itself a lease of `[ha] lease_ttl`, keeps it alive every TTL/6 and
//! campaigns on the election `[ha] election` with it (etcd's v3 election API). The winner's
//! election key revision is the fencing token. While leading, the exclusive streams run and the
//! [`Fence`] lets their gateway calls through until half the TTL after the sending of the last
//! successful keepalive; the machine halts the streams (standby) at that deadline if no keepalive
//! succeeded, or at once when etcd says the lease is gone, and the replica campaigns again with a
//! fresh lease. Nothing here ever talks to the gateway.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use etcd_client::{Client, ConnectOptions};

use crate::config::HaConfig;
use crate::machine::ha::{HaEffect, HaEvent, HaMachine};
use crate::metrics::HaMetrics;
use crate::supervisor::{Role, SetRole, StreamSupervisor};
use crate::transport::Fence;

/// How often the machine is given the time (fences are due within this much of their deadline,
/// and the [`Fence`] itself refuses calls at the deadline exactly).
const TICK: Duration = Duration::from_millis(100);

/// The environment variable that, in a build with the `ha-test-defects` feature only, disables
/// self-fencing: tests/ha.rs plants it to prove that its checker catches two leaders.
#[cfg(feature = "ha-test-defects")]
pub const DISABLE_SELF_FENCE_ENV: &str = "KEEPWIRE_HA_TEST_DISABLE_SELF_FENCE";

fn self_fence_disabled() -> bool {
    #[cfg(feature = "ha-test-defects")]
    {
        std::env::var_os(DISABLE_SELF_FENCE_ENV).is_some()
    }
    #[cfg(not(feature = "ha-test-defects"))]
    {
        false
    }
}

/// Asks the election loop to give its lease back (graceful shutdown: the next replica is elected
/// at once instead of after the TTL).
pub(crate) struct HaControl {
    resign: tokio::sync::mpsc::UnboundedSender<tokio::sync::oneshot::Sender<()>>,
}

impl HaControl {
    /// Revokes this replica's lease (its streams must already be stopped) and ends the election
    /// loop; waits at most a few seconds.
    pub(crate) async fn resign(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.resign.send(done).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), wait).await;
        }
    }
}

/// The running shell: the election loop of this replica.
struct Shell {
    config: HaConfig,
    fence: Arc<Fence>,
    streams: Vec<Addr<StreamSupervisor>>,
    metrics: HaMetrics,
    machine: HaMachine,
    origin: Instant,
    defect: bool,
}

/// Starts the election loop of this replica on the current actix system.
pub(crate) fn spawn(
    config: HaConfig,
    fence: Arc<Fence>,
    streams: Vec<Addr<StreamSupervisor>>,
    metrics: HaMetrics,
) -> HaControl {
    let machine = HaMachine::new(config.lease_ttl);
    let defect = self_fence_disabled();
    if defect {
        tracing::error!("HA self-fencing is DISABLED (test-only defect): never use this build");
    }
    let shell = Shell {
        config,
        fence,
        streams,
        metrics,
        machine,
        origin: Instant::now(),
        defect,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    actix_rt::spawn(shell.run(rx));
    HaControl { resign: tx }
}

/// A resignation asked for by [`HaControl::resign`].
type Resign = tokio::sync::oneshot::Sender<()>;

impl Shell {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.config.lease_ttl.as_secs()).unwrap_or(10)
    }

    async fn run(mut self, mut resign: tokio::sync::mpsc::UnboundedReceiver<Resign>) {
        let ttl = self.config.lease_ttl;
        let mut resigned: Option<Resign> = None;
        loop {
            // No request timeout: a campaign waits as long as another replica leads. Every other
            // call is bounded below; HTTP/2 keepalives notice a dead connection.
            let options = ConnectOptions::new()
                .with_connect_timeout(ttl / 4)
                .with_keep_alive(ttl / 6, ttl / 6);
            let connect = Client::connect(self.config.endpoints.clone(), Some(options));
            match tokio::time::timeout(ttl / 2, connect).await {
                Ok(Ok(client)) => {
                    if let Err(e) = self.term(client, &mut resign, &mut resigned).await {
                        tracing::warn!(replica = %self.config.replica_id, error = %e, "HA: etcd call failed; campaigning again");
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(replica = %self.config.replica_id, error = %e, "HA: cannot connect to etcd")
                }
                Err(_) => {
                    tracing::warn!(replica = %self.config.replica_id, "HA: connecting to etcd timed out")
                }
            }
            // Whatever happened, this replica is not leading any more.
            self.feed(HaEvent::Lost);
            if let Some(done) = resigned.take() {
                tracing::info!(replica = %self.config.replica_id, "HA: lease given back (shutdown)");
                let _ = done.send(());
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                done = resign.recv() => {
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
            }
        }
    }

    /// One lease: grant, keep alive, campaign, lead until the lease is lost or overdue.
    async fn term(
        &mut self,
        mut client: Client,
        resign: &mut tokio::sync::mpsc::UnboundedReceiver<Resign>,
        resigned: &mut Option<Resign>,
    ) -> Result<(), String> {
        let call = self.config.lease_ttl / 4;
        let sent = self.now();
        let lease = tokio::time::timeout(call, client.lease_grant(self.ttl_secs(), None))
            .await
            .map_err(|_| "lease grant timed out".to_string())?
            .map_err(|e| format!("lease grant: {e}"))?;
        let id = lease.id();
        let mut renewed_at = sent;
        let (mut keeper, mut answers) = tokio::time::timeout(call, client.lease_keep_alive(id))
            .await
            .map_err(|_| "lease keepalive timed out".to_string())?
            .map_err(|e| format!("lease keepalive: {e}"))?;
        let mut campaigner = client.clone();
        let (name, value) = (self.config.election.clone(), self.config.replica_id.clone());
        let campaign = async move { campaigner.campaign(name, value, id).await };
        tokio::pin!(campaign);
        let mut elected = false;
        let mut renew = tokio::time::interval(self.machine.renew_every());
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval(TICK);
        let result = loop {
            tokio::select! {
                res = &mut campaign, if !elected => {
                    elected = true;
                    let resp = match res {
                        Ok(resp) => resp,
                        Err(e) => break Err(format!("campaign: {e}")),
                    };
                    let token = resp
                        .leader()
                        .map_or(0, |k| u64::try_from(k.rev()).unwrap_or(0));
                    tracing::info!(replica = %self.config.replica_id, token, "HA: won the election");
                    if self.feed(HaEvent::Elected { token, renewed_at }) {
                        break Ok(());
                    }
                }
                _ = renew.tick() => {
                    let sent = self.now();
                    let answer = tokio::time::timeout(self.machine.renew_every(), async {
                        keeper.keep_alive().await?;
                        answers.message().await
                    })
                    .await;
                    match answer {
                        Ok(Ok(Some(a))) if a.ttl() > 0 => {
                            renewed_at = sent;
                            if self.feed(HaEvent::Renewed { sent_at: sent }) {
                                break Ok(());
                            }
                        }
                        Ok(Ok(_)) => {
                            self.feed(HaEvent::Lost);
                            break Err("the lease expired".into());
                        }
                        Ok(Err(e)) => tracing::warn!(replica = %self.config.replica_id, error = %e, "HA: keepalive failed"),
                        Err(_) => tracing::warn!(replica = %self.config.replica_id, "HA: keepalive timed out"),
                    }
                    // Without a renewal for a whole TTL the lease is gone on the server too: a
                    // pending campaign could never be won with it.
                    if self.now().saturating_sub(renewed_at) > self.config.lease_ttl {
                        self.feed(HaEvent::Lost);
                        break Err("no keepalive succeeded for a whole TTL".into());
                    }
                }
                _ = tick.tick() => {
                    if self.feed(HaEvent::Tick) {
                        break Ok(());
                    }
                }
                done = resign.recv() => {
                    *resigned = done;
                    break Ok(());
                }
            }
        };
        // Best effort: give the lease back so that the next leader need not wait for its TTL.
        let _ = tokio::time::timeout(call, client.lease_revoke(id)).await;
        result
    }

    /// Feeds the machine and performs its effects; true when a new campaign is due.
    fn feed(&mut self, event: HaEvent) -> bool {
        let now = self.now();
        let mut recampaign = false;
        for effect in self.machine.on(event, now) {
            match effect {
                HaEffect::Lead { token, until } => {
                    self.open(token, until);
                    tracing::info!(replica = %self.config.replica_id, token, "HA: leader; starting the exclusive streams");
                    self.metrics.transition("leader");
                    self.tell(Role::Leader);
                }
                HaEffect::Extend { token, until } => self.open(token, until),
                HaEffect::Fence(reason) => {
                    if self.defect {
                        tracing::error!(replica = %self.config.replica_id, reason = reason.as_str(), "HA: NOT fencing (test-only defect)");
                        continue;
                    }
                    self.fence.close();
                    tracing::warn!(replica = %self.config.replica_id, reason = reason.as_str(), "HA: fenced; exclusive streams to standby");
                    self.metrics.transition("standby");
                    self.tell(Role::Standby);
                }
                HaEffect::Recampaign => recampaign = true,
            }
        }
        recampaign
    }

    fn open(&self, token: u64, until: Duration) {
        let until = if self.defect {
            Duration::from_secs(365 * 86_400)
        } else {
            until
        };
        let at = self.origin.checked_add(until).unwrap_or(self.origin);
        self.fence.open_until(token, at);
    }

    fn tell(&self, role: Role) {
        for s in &self.streams {
            s.do_send(SetRole(role));
        }
    }
}
