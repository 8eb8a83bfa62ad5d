//! GatewaySession: everything over REST between credentials and the socket.
//!
//! IBKR: `auth/status` → `ssodh/init` → status → keepalive `tickle`. It knows whether the
//! brokerage session is really authenticated, waits (slowly, with a remedy) for a person to
//! approve 2FA, honours the competing-session policy, and re-establishes the session whenever
//! the socket or a keepalive reports it lost.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::StreamCtx;
use crate::backoff::Backoff;
use crate::dialect::{DialPlan, KeepaliveOutcome};
use crate::failure::{Class, Failure};
use crate::messages::{
    AwaitSession, CredentialsObserved, Halt, InjectPanic, Logout, PrepareDial, Report, Resume,
    SessionDown, SessionLost, SessionPhase,
};
use crate::status::ActorKind;

/// Where the session flow is.
#[derive(Clone, Debug, PartialEq)]
enum Phase {
    /// Not started (or halted).
    Idle,
    /// A REST handshake is in flight.
    Establishing,
    /// Waiting to retry.
    Backoff,
    /// A person must log in; polling slowly.
    AwaitingLogin,
    /// Established; keepalive running.
    Established,
}

/// The gateway-session actor of one stream.
pub struct GatewaySession {
    ctx: StreamCtx,
    http: Option<awc::Client>,
    phase: Phase,
    backoff: Backoff,
    waiters: Vec<oneshot::Sender<Result<(), Failure>>>,
    /// Why this actor was halted (shutdown or a hard failure); `None` while it works.
    halted: Option<Failure>,
}

impl GatewaySession {
    /// A GatewaySession for the stream.
    pub fn new(ctx: StreamCtx) -> Self {
        let backoff = Backoff::new(ctx.config.backoff.clone());
        Self {
            ctx,
            http: None,
            phase: Phase::Idle,
            backoff,
            waiters: Vec::new(),
            halted: None,
        }
    }

    fn http(&mut self) -> awc::Client {
        self.http
            .get_or_insert_with(|| self.ctx.clients.client())
            .clone()
    }

    fn establish(&mut self, ctx: &mut Context<Self>) {
        if self.halted.is_some() || matches!(self.phase, Phase::Establishing | Phase::Established) {
            return;
        }
        self.phase = Phase::Establishing;
        self.ctx.report(Report::Session(SessionPhase::Establishing));
        let http = self.http();
        let fut = self.ctx.dialect.establish(http);
        ctx.spawn(
            fut.into_actor(self)
                .map(|res, act, ctx| act.established(res, ctx)),
        );
    }

    fn established(&mut self, res: Result<(), Failure>, ctx: &mut Context<Self>) {
        if self.halted.is_some() {
            return;
        }
        match res {
            Ok(()) => {
                tracing::info!(stream = %self.ctx.name, "gateway session established");
                self.phase = Phase::Established;
                self.backoff.reset();
                self.ctx.report(Report::Session(SessionPhase::Established));
                for w in self.waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
                if let Some(every) = self.ctx.dialect.keepalive_interval() {
                    ctx.run_interval(every, |act, ctx| act.keepalive(ctx));
                }
            }
            Err(failure) => self.not_established(failure, ctx),
        }
    }

    fn not_established(&mut self, failure: Failure, ctx: &mut Context<Self>) {
        self.ctx.report(Report::Failure {
            actor: ActorKind::GatewaySession,
            failure: failure.clone(),
        });
        match self.ctx.class(&failure) {
            Class::Hard => {
                tracing::error!(stream = %self.ctx.name, %failure, "gateway session failed for good");
                self.phase = Phase::Idle;
                for w in self.waiters.drain(..) {
                    let _ = w.send(Err(failure.clone()));
                }
            }
            Class::NeedsLogin => {
                let poll = self.ctx.config.login_poll_interval;
                if self.phase != Phase::AwaitingLogin {
                    tracing::warn!(stream = %self.ctx.name, %failure, poll_ms = poll.as_millis() as u64, "waiting for login");
                }
                self.phase = Phase::AwaitingLogin;
                let remedy = failure
                    .remedy()
                    .unwrap_or("log in at the gateway")
                    .to_string();
                self.ctx
                    .report(Report::Session(SessionPhase::AwaitingLogin { remedy }));
                ctx.run_later(poll, |act, ctx| {
                    act.phase = Phase::Backoff;
                    act.establish(ctx)
                });
            }
            Class::Soft | Class::Session | Class::Auth | Class::Ignore => {
                let delay = match failure {
                    // `no bridge` right after ssodh/init: the session is being built.
                    Failure::NoBridge => self.backoff.floor().max(Duration::from_millis(500)),
                    _ => self.backoff.next_delay_at_least(failure.retry_after()),
                };
                tracing::info!(stream = %self.ctx.name, %failure, delay_ms = delay.as_millis() as u64, "gateway session not established; retrying");
                self.phase = Phase::Backoff;
                self.ctx
                    .report(Report::Session(SessionPhase::Backoff { delay }));
                ctx.run_later(delay, |act, ctx| act.establish(ctx));
            }
        }
    }

    fn keepalive(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Established {
            return;
        }
        let http = self.http();
        let fut = self.ctx.dialect.keepalive(http);
        let metrics = self.ctx.metrics.clone();
        let fut = async move {
            let res = fut.await;
            metrics.keepalive(res.as_ref().map_or_else(Failure::reason, |_| "ok"));
            res
        };
        ctx.spawn(fut.into_actor(self).map(|res: Result<KeepaliveOutcome, Failure>, act, ctx| match res {
            Ok(outcome) => {
                if let (Some(secret), Some(token)) = (outcome.observed, act.ctx.token()) {
                    token.do_send(CredentialsObserved { secret });
                }
            }
            Err(failure) => match act.ctx.class(&failure) {
                Class::Session | Class::NeedsLogin | Class::Hard => act.lost(failure, ctx),
                _ => {
                    tracing::debug!(stream = %act.ctx.name, %failure, "keepalive failed; next one retries");
                    act.ctx.report(Report::Failure { actor: ActorKind::GatewaySession, failure });
                }
            },
        }));
    }

    /// The session is gone: tell the socket, then restart this actor to re-establish it.
    fn lost(&mut self, failure: Failure, ctx: &mut Context<Self>) {
        if self.halted.is_some() {
            return;
        }
        tracing::warn!(stream = %self.ctx.name, %failure, "gateway session lost; re-establishing");
        self.ctx.report(Report::Failure {
            actor: ActorKind::GatewaySession,
            failure: failure.clone(),
        });
        if self.ctx.class(&failure) == Class::Hard {
            return;
        }
        if let Some(s) = self.ctx.stream() {
            s.do_send(SessionDown);
        }
        ctx.stop();
    }
}

impl Actor for GatewaySession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.establish(ctx);
    }
}

impl Supervised for GatewaySession {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.phase = Phase::Idle;
        if self.halted.is_none() {
            self.ctx
                .report(Report::Restarted(ActorKind::GatewaySession));
        }
    }
}

impl Handler<AwaitSession> for GatewaySession {
    type Result = ResponseFuture<Result<(), Failure>>;

    fn handle(&mut self, _: AwaitSession, _ctx: &mut Context<Self>) -> Self::Result {
        if self.phase == Phase::Established {
            return Box::pin(async { Ok(()) });
        }
        if let Some(f) = self.halted.clone() {
            return Box::pin(async move { Err(f) });
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(Failure::Transport {
                    detail: "gateway session restarted".into(),
                })
            })
        })
    }
}

impl Handler<PrepareDial> for GatewaySession {
    type Result = ResponseFuture<Result<DialPlan, Failure>>;

    fn handle(&mut self, msg: PrepareDial, _ctx: &mut Context<Self>) -> Self::Result {
        let http = self.http();
        let fut = self.ctx.dialect.prepare_dial(http, &msg.credentials.secret);
        Box::pin(fut)
    }
}

impl Handler<SessionLost> for GatewaySession {
    type Result = ();

    fn handle(&mut self, msg: SessionLost, ctx: &mut Context<Self>) {
        // Several reporters may notice the same loss; one re-establishment is enough.
        if matches!(self.phase, Phase::Established) {
            self.lost(msg.failure, ctx);
        }
    }
}

impl Handler<Logout> for GatewaySession {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Logout, _ctx: &mut Context<Self>) -> Self::Result {
        let http = self.http();
        let fut = self.ctx.dialect.logout(http);
        let name = self.ctx.name.clone();
        Box::pin(async move {
            if let Some(fut) = fut {
                match fut.await {
                    Ok(()) => tracing::info!(stream = %name, "logged out of the gateway"),
                    Err(failure) => tracing::warn!(stream = %name, %failure, "logout failed"),
                }
            }
        })
    }
}

impl Handler<Halt> for GatewaySession {
    type Result = ();

    fn handle(&mut self, _: Halt, ctx: &mut Context<Self>) {
        self.halted = Some(Failure::Config {
            detail: "stream halted (hard failure or shutdown); call resume to retry".into(),
        });
        for w in self.waiters.drain(..) {
            let _ = w.send(Err(Failure::Config {
                detail: "stream halted".into(),
            }));
        }
        // Cancels the keepalive and any retry timers.
        ctx.stop();
    }
}

impl Handler<Resume> for GatewaySession {
    type Result = ();

    fn handle(&mut self, _: Resume, ctx: &mut Context<Self>) {
        self.halted = None;
        self.backoff.reset();
        self.phase = Phase::Idle;
        self.establish(ctx);
    }
}

impl Handler<InjectPanic> for GatewaySession {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, _ctx: &mut Context<Self>) {
        panic!("chaos: panic injected into GatewaySession");
    }
}
