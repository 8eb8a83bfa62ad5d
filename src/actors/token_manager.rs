//! TokenManager: owns the credentials of a stream and their generations.
//!
//! * Every dial asks for credentials *at that moment* ([`GetCredentials`]): nothing captures a token.
//! * Refreshes are single-flight: concurrent requests wait for the one fetch in progress.
//! * A rejection names the generation it rejected; only a rejection of the *current* generation
//!   refreshes, so a thousand simultaneous 401s cause exactly one refresh.
//! * Credentials with a known expiry are refreshed before it (with jitter), and handed out only
//!   while they are not about to expire.

use std::time::Duration;

use actix::prelude::*;
use rand::Rng;
use secrecy::ExposeSecret;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::StreamCtx;
use crate::dialect::Issued;
use crate::failure::{Class, Failure};
use crate::messages::{
    Credentials, CredentialsChanged, CredentialsObserved, CredentialsRejected, GetCredentials,
    Halt, InjectPanic, Report, Resume, SessionLost,
};
use crate::status::ActorKind;

type Waiter = oneshot::Sender<Result<Credentials, Failure>>;

/// Refresh credentials this long before they expire (at most a fifth of their lifetime).
const SKEW: Duration = Duration::from_secs(30);

/// The refresh margin for a credential valid for `lifetime`.
fn skew(lifetime: Duration) -> Duration {
    SKEW.min(lifetime / 5)
}

/// The credentials actor of one stream.
pub struct TokenManager {
    ctx: StreamCtx,
    http: Option<awc::Client>,
    current: Option<Credentials>,
    /// The next generation replaces a rejected one.
    replacing_rejected: bool,
    fetching: bool,
    waiters: Vec<Waiter>,
    refresh_timer: Option<SpawnHandle>,
    halted: bool,
}

impl TokenManager {
    /// A TokenManager for the stream.
    pub fn new(ctx: StreamCtx) -> Self {
        Self {
            ctx,
            http: None,
            current: None,
            replacing_rejected: false,
            fetching: false,
            waiters: Vec::new(),
            refresh_timer: None,
            halted: false,
        }
    }

    /// The current credentials unless they expire within the skew: a credential about to expire
    /// is refreshed *before* a dial, never discovered by a failure after it.
    fn usable(&self, now: Instant) -> Option<Credentials> {
        let c = self.current.as_ref()?;
        match c.expires_at {
            Some(exp) if now + skew(exp.saturating_duration_since(c.issued_at)) >= exp => None,
            _ => Some(c.clone()),
        }
    }

    fn http(&mut self) -> awc::Client {
        self.http
            .get_or_insert_with(|| self.ctx.clients.client())
            .clone()
    }

    fn fetch(&mut self, ctx: &mut Context<Self>) {
        if self.fetching || self.halted {
            return;
        }
        self.fetching = true;
        let http = self.http();
        let fut = self.ctx.dialect.fetch_credentials(http);
        ctx.spawn(
            fut.into_actor(self)
                .map(|res, act, ctx| act.fetched(res, ctx)),
        );
    }

    fn fetched(&mut self, res: Result<Issued, Failure>, ctx: &mut Context<Self>) {
        self.fetching = false;
        match res {
            Ok(issued) => {
                let creds =
                    self.install(issued.secret, issued.expires_in.map(|d| Instant::now() + d));
                self.ctx.metrics.credential_refresh(true);
                self.ctx.report(Report::CredentialsRefreshed {
                    generation: Some(creds.generation),
                });
                tracing::debug!(stream = %self.ctx.name, generation = creds.generation, "credentials fetched");
                for w in self.waiters.drain(..) {
                    let _ = w.send(Ok(creds.clone()));
                }
                self.schedule_refresh(ctx);
            }
            Err(failure) => {
                self.ctx.metrics.credential_refresh(false);
                self.ctx
                    .report(Report::CredentialsRefreshed { generation: None });
                self.ctx.report(Report::Failure {
                    actor: ActorKind::TokenManager,
                    failure: failure.clone(),
                });
                if self.ctx.class(&failure) == Class::Session {
                    if let Some(g) = self.ctx.gateway() {
                        g.do_send(SessionLost {
                            failure: failure.clone(),
                        });
                    }
                }
                for w in self.waiters.drain(..) {
                    let _ = w.send(Err(failure.clone()));
                }
            }
        }
    }

    fn install(
        &mut self,
        secret: secrecy::SecretString,
        expires_at: Option<Instant>,
    ) -> Credentials {
        let generation = self.ctx.generation.get() + 1;
        self.ctx.generation.set(generation);
        let creds = Credentials {
            generation,
            secret,
            issued_at: Instant::now(),
            expires_at,
            replaced_rejected: self.replacing_rejected,
        };
        self.replacing_rejected = false;
        self.ctx
            .metrics
            .credential_expiry(expires_at.map(|at| at.saturating_duration_since(Instant::now())));
        self.current = Some(creds.clone());
        creds
    }

    fn schedule_refresh(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.refresh_timer.take() {
            ctx.cancel_future(h);
        }
        let Some(exp) = self.current.as_ref().and_then(|c| c.expires_at) else {
            return;
        };
        let lifetime = exp.saturating_duration_since(Instant::now());
        let skew = skew(lifetime);
        let jitter = Duration::from_millis(
            rand::thread_rng().gen_range(0..=skew.as_millis().min(5_000) as u64 / 2 + 1),
        );
        let at = lifetime.saturating_sub(skew + jitter);
        self.refresh_timer = Some(ctx.run_later(at, |act, ctx| {
            act.refresh_timer = None;
            tracing::debug!(stream = %act.ctx.name, "refreshing credentials before expiry");
            act.fetch(ctx);
        }));
    }
}

impl Actor for TokenManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.current.is_none() {
            if let Some(cached) = self.ctx.dialect.cached_credentials() {
                let creds =
                    self.install(cached.secret, cached.expires_in.map(|d| Instant::now() + d));
                if let Some(c) = self.current.as_mut() {
                    c.issued_at = Instant::now()
                        .checked_sub(cached.age)
                        .unwrap_or(c.issued_at);
                }
                tracing::debug!(stream = %self.ctx.name, generation = creds.generation, "using cached credentials");
                self.ctx.report(Report::CredentialsRefreshed {
                    generation: Some(creds.generation),
                });
                self.schedule_refresh(ctx);
            }
        }
    }
}

impl Supervised for TokenManager {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.fetching = false;
        self.refresh_timer = None;
        self.waiters.clear();
        self.ctx.report(Report::Restarted(ActorKind::TokenManager));
    }
}

impl Handler<GetCredentials> for TokenManager {
    type Result = ResponseFuture<Result<Credentials, Failure>>;

    fn handle(&mut self, _: GetCredentials, ctx: &mut Context<Self>) -> Self::Result {
        self.ctx.metrics.credential_requests.inc();
        if let Some(c) = self.usable(Instant::now()) {
            return Box::pin(async move { Ok(c) });
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        self.fetch(ctx);
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
        match &self.current {
            Some(c) if c.generation == msg.generation => {
                tracing::info!(stream = %self.ctx.name, generation = msg.generation, "credentials rejected; refreshing");
                self.current = None;
                self.replacing_rejected = true;
                self.fetch(ctx);
            }
            _ => {
                tracing::trace!(stream = %self.ctx.name, generation = msg.generation, "stale rejection ignored")
            }
        }
    }
}

impl Handler<CredentialsObserved> for TokenManager {
    type Result = ();

    fn handle(&mut self, msg: CredentialsObserved, _ctx: &mut Context<Self>) {
        let same = self
            .current
            .as_ref()
            .is_some_and(|c| c.secret.expose_secret() == msg.secret.expose_secret());
        if same || self.fetching {
            return;
        }
        let had = self.current.is_some();
        let creds = self.install(msg.secret, None);
        self.ctx.report(Report::CredentialsRefreshed {
            generation: Some(creds.generation),
        });
        if had {
            tracing::info!(stream = %self.ctx.name, generation = creds.generation, "gateway rotated the session; socket will be rebuilt");
            if let Some(s) = self.ctx.stream() {
                s.do_send(CredentialsChanged {
                    generation: creds.generation,
                });
            }
        }
    }
}

impl Handler<Halt> for TokenManager {
    type Result = ();

    fn handle(&mut self, _: Halt, ctx: &mut Context<Self>) {
        self.halted = true;
        if let Some(h) = self.refresh_timer.take() {
            ctx.cancel_future(h);
        }
    }
}

impl Handler<Resume> for TokenManager {
    type Result = ();

    fn handle(&mut self, _: Resume, _ctx: &mut Context<Self>) {
        self.halted = false;
    }
}

impl Handler<InjectPanic> for TokenManager {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, _ctx: &mut Context<Self>) {
        panic!("chaos: panic injected into TokenManager");
    }
}
