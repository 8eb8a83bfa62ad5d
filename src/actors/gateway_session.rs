//! GatewaySession: the shell around [`SessionMachine`], which owns everything over REST between
//! credentials and the socket (IBKR: `auth/status` → `ssodh/init` → keepalive `tickle`; 2FA
//! waits; the competing policy; repairs of a session the socket finds dead). The shell runs the
//! dialect's REST calls, the retry and keepalive timers, and answers dials waiting for the session.

use actix::prelude::*;
use rand::Rng;
use tokio::sync::oneshot;

use super::StreamCtx;
use crate::dialect::{DialPlan, KeepaliveOutcome};
use crate::failure::Failure;
use crate::machine::session::{SessionEffect, SessionEvent, SessionMachine, SessionState};
use crate::messages::{
    AwaitSession, CredentialsObserved, Halt, InjectPanic, Logout, PrepareDial, Report, Resume,
    SessionDown, SessionLost, SocketHealthy,
};
use crate::status::ActorKind;

/// The gateway-session actor of one stream.
pub struct GatewaySession {
    ctx: StreamCtx,
    /// Tells the stream supervisor when this actor is dropped.
    _lifeline: super::Lifeline,
    http: Option<crate::transport::Http>,
    machine: SessionMachine,
    waiters: Vec<oneshot::Sender<Result<(), Failure>>>,
}

impl GatewaySession {
    /// A GatewaySession for the stream.
    pub fn new(ctx: StreamCtx) -> Self {
        let machine = SessionMachine::new(
            ctx.config.backoff.clone(),
            ctx.dialect.competing_policy(),
            ctx.config.login_poll_interval,
            rand::thread_rng().gen(),
        );
        let lifeline = super::Lifeline::new(crate::status::ActorKind::GatewaySession, &ctx);
        Self {
            ctx,
            http: None,
            machine,
            waiters: Vec::new(),
            _lifeline: lifeline,
        }
    }

    fn http(&mut self) -> crate::transport::Http {
        self.http
            .get_or_insert_with(|| self.ctx.clients.client())
            .clone()
    }

    fn on(&mut self, event: SessionEvent, ctx: &mut Context<Self>) {
        let now = self.ctx.now();
        for effect in self.machine.on(event, now) {
            self.perform(effect, ctx);
        }
    }

    fn perform(&mut self, effect: SessionEffect, ctx: &mut Context<Self>) {
        match effect {
            SessionEffect::Establish(repair) => {
                let http = self.http();
                let fut = self.ctx.dialect.establish(http, repair);
                ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
                    if res.is_ok() {
                        tracing::info!(stream = %act.ctx.name, "gateway session established");
                    }
                    act.on(SessionEvent::Established(res), ctx)
                }));
            }
            SessionEffect::ArmRetry(delay) => {
                ctx.run_later(delay, |act, ctx| act.on(SessionEvent::RetryDue, ctx));
            }
            SessionEffect::StartKeepalive => {
                if let Some(every) = self.ctx.dialect.keepalive_interval() {
                    ctx.run_interval(every, |act, ctx| act.keepalive(ctx));
                }
            }
            SessionEffect::Answer(res) => {
                for w in self.waiters.drain(..) {
                    let _ = w.send(res.clone());
                }
            }
            SessionEffect::Phase(phase) => self.ctx.report(Report::Session(phase)),
            SessionEffect::Report(failure) => {
                tracing::info!(stream = %self.ctx.name, %failure, "gateway session failure");
                self.ctx.report(Report::Failure {
                    actor: ActorKind::GatewaySession,
                    failure,
                });
            }
            SessionEffect::SessionDown => {
                if let Some(s) = self.ctx.stream() {
                    s.do_send(SessionDown);
                }
            }
            // Stopping cancels the keepalive, every timer and the calls in flight; actix's
            // Supervisor starts this actor again with the same machine.
            SessionEffect::Restart => ctx.stop(),
        }
    }

    fn keepalive(&mut self, ctx: &mut Context<Self>) {
        if !self.machine.keepalive_due() {
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
        ctx.spawn(
            fut.into_actor(self).map(
                |res: Result<KeepaliveOutcome, Failure>, act, ctx| match res {
                    Ok(outcome) => {
                        if let (Some(secret), Some(token)) = (outcome.observed, act.ctx.token()) {
                            token.do_send(CredentialsObserved { secret });
                        }
                    }
                    Err(failure) => act.on(SessionEvent::KeepaliveFailed(failure), ctx),
                },
            ),
        );
    }
}

impl Actor for GatewaySession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.on(SessionEvent::Started, ctx);
    }
}

impl Supervised for GatewaySession {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        if self.machine.state() != &SessionState::Halted {
            self.ctx
                .report(Report::Restarted(ActorKind::GatewaySession));
        }
    }
}

impl Handler<AwaitSession> for GatewaySession {
    type Result = ResponseFuture<Result<(), Failure>>;

    fn handle(&mut self, _: AwaitSession, _ctx: &mut Context<Self>) -> Self::Result {
        if let Some(answer) = self.machine.await_session() {
            return Box::pin(async move { answer });
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
        if self.machine.state() == &SessionState::Established {
            tracing::warn!(stream = %self.ctx.name, failure = %msg.failure, repair = ?self.machine.repair(), "gateway session lost; re-establishing");
        }
        self.on(SessionEvent::Lost(msg.failure), ctx);
    }
}

impl Handler<SocketHealthy> for GatewaySession {
    type Result = ();

    fn handle(&mut self, _: SocketHealthy, ctx: &mut Context<Self>) {
        self.on(SessionEvent::Healthy, ctx);
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
        self.on(SessionEvent::Halt, ctx);
    }
}

impl Handler<Resume> for GatewaySession {
    type Result = ();

    fn handle(&mut self, _: Resume, ctx: &mut Context<Self>) {
        self.on(SessionEvent::Resume, ctx);
    }
}

impl Handler<InjectPanic> for GatewaySession {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, _ctx: &mut Context<Self>) {
        panic!("chaos: panic injected into GatewaySession");
    }
}
