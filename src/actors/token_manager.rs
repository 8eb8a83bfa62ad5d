//! TokenManager: the shell around [`TokenMachine`], which owns the credentials of a stream and
//! their generations (single-flight refresh, generation-guarded rejections, refresh before
//! expiry). The shell performs what the machine decides: it calls the dialect's credential
//! source, keeps the secret of each generation, answers waiting dials and arms the refresh timer.

use actix::prelude::*;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::oneshot;

use super::StreamCtx;
use crate::dialect::Issued;
use crate::failure::Failure;
use crate::machine::token::{Held, TokenEffect, TokenEvent, TokenMachine};
use crate::messages::{
    Credentials, CredentialsChanged, CredentialsDiscarded, CredentialsObserved,
    CredentialsRejected, CredentialsStale, GetCredentials, Halt, InjectPanic, Report, Resume,
    SessionLost,
};
use crate::status::ActorKind;

type Waiter = oneshot::Sender<Result<Credentials, Failure>>;

/// The credentials actor of one stream.
pub struct TokenManager {
    ctx: StreamCtx,
    /// Tells the stream supervisor when this actor is dropped.
    _lifeline: super::Lifeline,
    http: Option<crate::transport::Http>,
    machine: TokenMachine,
    /// The secret of the current generation.
    secret: Option<SecretString>,
    /// A secret received (fetched or observed) and about to be installed.
    incoming: Option<SecretString>,
    waiters: Vec<Waiter>,
    refresh_timer: Option<SpawnHandle>,
}

impl TokenManager {
    /// A TokenManager for the stream.
    pub fn new(ctx: StreamCtx) -> Self {
        let machine = TokenMachine::new(ctx.generation.get(), rand::thread_rng().gen());
        let lifeline = super::Lifeline::new(crate::status::ActorKind::TokenManager, &ctx);
        Self {
            ctx,
            http: None,
            machine,
            secret: None,
            incoming: None,
            waiters: Vec::new(),
            refresh_timer: None,
            _lifeline: lifeline,
        }
    }

    fn on(&mut self, event: TokenEvent, ctx: &mut Context<Self>) {
        let now = self.ctx.now();
        for effect in self.machine.on(event, now) {
            self.perform(effect, ctx);
        }
    }

    fn credentials(&self, held: Held) -> Result<Credentials, Failure> {
        let secret = self.secret.clone().ok_or_else(|| Failure::Transport {
            detail: "credentials were installed without a secret".into(),
        })?;
        Ok(Credentials {
            generation: held.generation,
            secret,
            issued_at: held.issued_at,
            expires_at: held.expires_at,
            replaced_rejected: held.replaced_rejected,
        })
    }

    fn perform(&mut self, effect: TokenEffect, ctx: &mut Context<Self>) {
        match effect {
            TokenEffect::Fetch => {
                let http = self
                    .http
                    .get_or_insert_with(|| self.ctx.clients.client())
                    .clone();
                let fut = self.ctx.dialect.fetch_credentials(http);
                ctx.spawn(
                    fut.into_actor(self)
                        .map(|res, act, ctx| act.fetched(res, ctx)),
                );
            }
            TokenEffect::Install(held) => {
                self.secret = self.incoming.take();
                self.ctx.generation.set(held.generation);
                let now = self.ctx.now();
                self.ctx
                    .metrics
                    .credential_expiry(held.expires_at.map(|at| at.saturating_sub(now)));
                self.ctx.report(Report::CredentialsRefreshed {
                    generation: Some(held.generation),
                });
                tracing::debug!(stream = %self.ctx.name, generation = %held.generation, "credentials installed");
            }
            TokenEffect::Give(held) => {
                let answer = self.credentials(held);
                if let Some(w) = self.waiters.pop() {
                    let _ = w.send(answer);
                }
            }
            TokenEffect::Wait => {}
            TokenEffect::Answer(res) => {
                let answer = res.and_then(|held| self.credentials(held));
                for w in self.waiters.drain(..) {
                    let _ = w.send(answer.clone());
                }
            }
            TokenEffect::ArmRefresh(delay) => {
                if let Some(h) = self.refresh_timer.take() {
                    ctx.cancel_future(h);
                }
                self.refresh_timer = Some(ctx.run_later(delay, |act, ctx| {
                    act.refresh_timer = None;
                    tracing::debug!(stream = %act.ctx.name, "refreshing credentials before expiry");
                    act.on(TokenEvent::RefreshDue, ctx);
                }));
            }
            TokenEffect::CancelRefresh => {
                if let Some(h) = self.refresh_timer.take() {
                    ctx.cancel_future(h);
                }
            }
            TokenEffect::SessionLost(failure) => {
                if let Some(g) = self.ctx.gateway() {
                    g.do_send(SessionLost { failure });
                }
            }
            TokenEffect::Changed(generation) => {
                tracing::info!(stream = %self.ctx.name, %generation, "gateway rotated the session; socket will be rebuilt");
                if let Some(s) = self.ctx.stream() {
                    s.do_send(CredentialsChanged { generation });
                }
            }
        }
    }

    fn fetched(&mut self, res: Result<Issued, Failure>, ctx: &mut Context<Self>) {
        match res {
            Ok(issued) => {
                self.ctx.metrics.credential_refresh(true);
                self.incoming = Some(issued.secret);
                let event = TokenEvent::Issued {
                    expires_in: issued.expires_in,
                    age: issued.age,
                };
                self.on(event, ctx);
            }
            Err(failure) => {
                self.ctx.metrics.credential_refresh(false);
                self.ctx
                    .report(Report::CredentialsRefreshed { generation: None });
                self.ctx.report(Report::Failure {
                    actor: ActorKind::TokenManager,
                    failure: failure.clone(),
                });
                let class = self.ctx.class(&failure);
                self.on(TokenEvent::FetchFailed(failure, class), ctx);
            }
        }
    }
}

impl Actor for TokenManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.machine.current().is_none() {
            match self.ctx.dialect.cached_credentials() {
                Ok(Some(cached)) => {
                    tracing::debug!(stream = %self.ctx.name, "using cached credentials");
                    self.incoming = Some(cached.secret);
                    let event = TokenEvent::Issued {
                        expires_in: cached.expires_in,
                        age: cached.age,
                    };
                    self.on(event, ctx);
                }
                Ok(None) => {}
                Err(failure) => {
                    // Nothing is fetched either: the stream stops with the reason (and resumes,
                    // fetching a new credential, once the cause is fixed).
                    self.on(TokenEvent::Halt, ctx);
                    self.ctx.report(Report::Failure {
                        actor: ActorKind::TokenManager,
                        failure,
                    });
                }
            }
        }
    }
}

impl Supervised for TokenManager {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.refresh_timer = None;
        self.waiters.clear();
        self.machine = TokenMachine::new(self.ctx.generation.get(), rand::thread_rng().gen());
        self.secret = None;
        self.ctx.report(Report::Restarted(ActorKind::TokenManager));
    }
}

impl Handler<GetCredentials> for TokenManager {
    type Result = ResponseFuture<Result<Credentials, Failure>>;

    fn handle(&mut self, _: GetCredentials, ctx: &mut Context<Self>) -> Self::Result {
        self.ctx.metrics.credential_requests().inc();
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        self.on(TokenEvent::Get, ctx);
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(Failure::Transport {
                    detail: "token manager restarted during a fetch".into(),
                })
            })
        })
    }
}

impl Handler<CredentialsRejected> for TokenManager {
    type Result = ();

    fn handle(&mut self, msg: CredentialsRejected, ctx: &mut Context<Self>) {
        if self
            .machine
            .current()
            .is_some_and(|c| c.generation == msg.generation)
        {
            tracing::info!(stream = %self.ctx.name, generation = %msg.generation, "credentials rejected; refreshing");
        }
        self.on(TokenEvent::Rejected(msg.generation), ctx);
    }
}

impl Handler<CredentialsStale> for TokenManager {
    type Result = ();

    fn handle(&mut self, msg: CredentialsStale, ctx: &mut Context<Self>) {
        self.on(TokenEvent::Stale(msg.generation), ctx);
    }
}

impl Handler<CredentialsDiscarded> for TokenManager {
    type Result = ();

    fn handle(&mut self, msg: CredentialsDiscarded, ctx: &mut Context<Self>) {
        self.on(TokenEvent::Discard(msg.generation), ctx);
    }
}

impl Handler<CredentialsObserved> for TokenManager {
    type Result = ();

    fn handle(&mut self, msg: CredentialsObserved, ctx: &mut Context<Self>) {
        let differs = self
            .secret
            .as_ref()
            .map_or(true, |c| c.expose_secret() != msg.secret.expose_secret());
        if differs {
            self.incoming = Some(msg.secret);
        }
        self.on(TokenEvent::Observed { differs }, ctx);
        self.incoming = None;
    }
}

impl Handler<Halt> for TokenManager {
    type Result = ();

    fn handle(&mut self, _: Halt, ctx: &mut Context<Self>) {
        self.on(TokenEvent::Halt, ctx);
    }
}

impl Handler<Resume> for TokenManager {
    type Result = ();

    fn handle(&mut self, _: Resume, ctx: &mut Context<Self>) {
        self.on(TokenEvent::Resume, ctx);
    }
}

impl Handler<InjectPanic> for TokenManager {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, _ctx: &mut Context<Self>) {
        panic!("chaos: panic injected into TokenManager");
    }
}
