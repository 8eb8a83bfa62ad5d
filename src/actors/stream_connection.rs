//! StreamConnection: owns one socket at a time.
//!
//! It dials with what GatewaySession and TokenManager give it *now*, performs the dialect's
//! opening exchange and declares itself Ready only when the gateway confirmed authentication
//! (an IBKR `sts` with `authenticated:false` is a failure, not a success). It watches for
//! heartbeat silence (half-open sockets are real), answers pings (awc does not), reassembles
//! fragments (awc does not), decodes text lossily (a non-UTF-8 byte must not kill the reader),
//! and classifies every close through the failure table. Every socket loss restarts this actor
//! alone; the restart waits out a jittered backoff before dialing again.

use std::time::Duration;

use actix::io::{SinkWrite, WriteHandler};
use actix::prelude::*;
use actix_codec::Framed;
use awc::error::WsProtocolError;
use awc::ws::{Codec, Frame, Message};
use awc::BoxedSocket;
use futures_util::stream::{SplitSink, StreamExt};
use secrecy::ExposeSecret;
use tokio::time::Instant;

use super::{mailbox, StreamCtx};
use crate::backoff::Backoff;
use crate::dialect::{Inbound, SocketDecoder};
use crate::failure::{close_failure, Class, Failure};
use crate::messages::Credentials;
use crate::messages::{
    Acknowledged, AwaitSession, ConnPhase, CredentialsChanged, CredentialsRejected, Deliver,
    GetCredentials, Halt, InjectPanic, PrepareDial, Report, Resume, Resync, SendFrame, SessionDown,
    SessionLost, StreamDown, StreamUp, TopicRefused,
};
use crate::metrics::FrameKind;
use crate::status::ActorKind;
use crate::transport::{redact_url, ws_failure, Assembler, MessageKind};

/// A rejection of credentials that replaced rejected ones, before the gateway ever accepted
/// them, is the "second 401 with a fresh token" of the failure table: hard.
fn mark_after_refresh(failure: Failure, creds: &Credentials, accepted: Option<u64>) -> Failure {
    match failure {
        Failure::Rejected { status, .. } => Failure::Rejected {
            status,
            after_refresh: creds.replaced_rejected && accepted != Some(creds.generation),
        },
        other => other,
    }
}

type WsSink = SinkWrite<Message, SplitSink<Framed<BoxedSocket, Codec>, Message>>;

/// An open socket.
struct Open {
    epoch: u64,
    generation: u64,
    sink: WsSink,
    decoder: Box<dyn SocketDecoder>,
    assembler: Assembler,
    ready: bool,
    last_rx: Instant,
    malformed_in_a_row: u32,
}

/// The socket's state machine.
enum Socket {
    /// Nothing in progress (before the first dial, while halted).
    Idle,
    /// Waiting out a backoff delay.
    Backoff,
    /// Waiting for the session, credentials and the upgrade.
    Dialing,
    /// Upgraded; `ready` once the gateway confirmed authentication.
    Open(Box<Open>),
}

/// The socket actor of one stream.
pub struct StreamConnection {
    ctx: StreamCtx,
    http: Option<awc::Client>,
    socket: Socket,
    backoff: Backoff,
    /// Delay to wait after the next restart.
    next_delay: Option<Duration>,
    /// The last generation the gateway accepted on a socket.
    accepted_generation: Option<u64>,
    halted: bool,
    /// Reused buffer for decoded messages.
    scratch: Vec<Inbound>,
}

impl StreamConnection {
    /// A StreamConnection for the stream.
    pub fn new(ctx: StreamCtx) -> Self {
        let backoff = Backoff::new(ctx.config.backoff.clone());
        Self {
            ctx,
            http: None,
            socket: Socket::Idle,
            backoff,
            next_delay: None,
            accepted_generation: None,
            halted: false,
            scratch: Vec::new(),
        }
    }

    fn report_phase(&self, phase: ConnPhase) {
        self.ctx.report(Report::Connection {
            phase,
            attempt: self.backoff.attempt(),
            epoch: self.ctx.epoch.get(),
        });
    }

    fn dial(&mut self, ctx: &mut Context<Self>) {
        if self.halted {
            return;
        }
        self.socket = Socket::Dialing;
        let (Some(gateway), Some(token)) = (self.ctx.gateway(), self.ctx.token()) else {
            return self.fail(
                Failure::Transport {
                    detail: "peers not started".into(),
                },
                ctx,
            );
        };
        let http = self
            .http
            .get_or_insert_with(|| self.ctx.clients.client())
            .clone();
        let max_frame = self.ctx.config.max_frame_size;
        let accepted = self.accepted_generation;
        let report = self.ctx.report.clone();
        let epoch = self.ctx.epoch.get();
        let attempt = self.backoff.attempt();
        let dialect = self.ctx.dialect.clone();
        let fut = async move {
            let no_gen = |f: Failure| (None, f);
            gateway
                .send(AwaitSession)
                .await
                .map_err(|e| no_gen(mailbox("gateway session", e)))?
                .map_err(no_gen)?;
            report.do_send(Report::Connection {
                phase: ConnPhase::Connecting,
                attempt,
                epoch,
            });
            let creds = token
                .send(GetCredentials)
                .await
                .map_err(|e| no_gen(mailbox("token manager", e)))?
                .map_err(no_gen)?;
            let with_gen = |f: Failure| {
                (
                    Some(creds.generation),
                    mark_after_refresh(f, &creds, accepted),
                )
            };
            let plan = gateway
                .send(PrepareDial {
                    credentials: creds.clone(),
                })
                .await
                .map_err(|e| with_gen(mailbox("gateway session", e)))?
                .map_err(with_gen)?;
            tracing::debug!(url = %redact_url(&plan.url), generation = creds.generation, "dialing");
            let mut req = http.ws(plan.url.as_str()).max_frame_size(max_frame);
            for (name, value) in &plan.headers {
                req = req.header(*name, value.expose_secret());
            }
            match req.connect().await {
                Ok((_resp, framed)) => Ok((creds.generation, framed)),
                Err(e) => Err(with_gen(ws_failure(&e, |status| {
                    dialect.upgrade_refused(status)
                }))),
            }
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok((generation, framed)) => act.opened(generation, framed, ctx),
            Err((generation, failure)) => act.fail_with(failure, generation, ctx),
        }));
    }

    fn opened(
        &mut self,
        generation: u64,
        framed: Framed<BoxedSocket, Codec>,
        ctx: &mut Context<Self>,
    ) {
        let opening = self.ctx.dialect.opening_frames();
        let epoch = self.ctx.epoch.get() + 1;
        self.ctx.epoch.set(epoch);
        let (sink, stream) = framed.split();
        let sink = SinkWrite::new(sink, ctx);
        ctx.add_stream(stream);
        let cfg = self.ctx.config.clone();
        self.socket = Socket::Open(Box::new(Open {
            epoch,
            generation,
            sink,
            decoder: self.ctx.dialect.decoder(),
            assembler: Assembler::new(cfg.max_message_size),
            ready: false,
            last_rx: Instant::now(),
            malformed_in_a_row: 0,
        }));
        for frame in opening {
            self.write(frame);
        }
        if self.ctx.dialect.ready_on_open() {
            self.on_inbound(Inbound::Authenticated, 0, ctx);
        }
        tracing::debug!(stream = %self.ctx.name, epoch, "socket open; waiting for the gateway to confirm authentication");
        ctx.run_later(cfg.auth_timeout, move |act, ctx| {
            if matches!(&act.socket, Socket::Open(o) if o.epoch == epoch && !o.ready) {
                act.fail(Failure::AuthTimeout, ctx);
            }
        });
        let hb = cfg.heartbeat_timeout;
        ctx.run_interval((hb / 4).max(Duration::from_millis(10)), move |act, ctx| {
            act.watchdog(hb, ctx)
        });
        if let Some((every, frame)) = self.ctx.dialect.socket_keepalive() {
            ctx.run_interval(every, move |act, _| act.write(frame.clone()));
        }
    }

    fn watchdog(&mut self, timeout: Duration, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let Socket::Open(open) = &self.socket else {
            return;
        };
        let silent_for = now.saturating_duration_since(open.last_rx);
        if silent_for > timeout {
            return self.fail(Failure::HeartbeatSilence { silent_for }, ctx);
        }
        if open.ready && self.backoff.maybe_reset(self.ctx.now()) {
            self.report_phase(ConnPhase::Ready);
        }
    }

    fn write(&mut self, text: String) {
        if let Socket::Open(open) = &mut self.socket {
            let _ = open.sink.write(Message::Text(text.into()));
            self.ctx.metrics.frame_sent(FrameKind::Text);
        }
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        let mut inbound = std::mem::take(&mut self.scratch);
        if let Socket::Open(open) = &mut self.socket {
            open.decoder.decode_frame(text, &mut inbound);
        }
        let epoch = self.ctx.epoch.get();
        for message in inbound.drain(..) {
            // A failure restarts this actor: nothing after it on that socket matters.
            if !matches!(&self.socket, Socket::Open(o) if o.epoch == epoch) {
                break;
            }
            self.on_inbound(message, text.len(), ctx);
        }
        self.scratch = inbound;
    }

    fn on_inbound(&mut self, message: Inbound, bytes: usize, ctx: &mut Context<Self>) {
        let Socket::Open(open) = &mut self.socket else {
            return;
        };
        match message {
            Inbound::Authenticated if !open.ready => {
                open.ready = true;
                let (epoch, generation) = (open.epoch, open.generation);
                self.accepted_generation = Some(generation);
                self.backoff.healthy(self.ctx.now());
                tracing::info!(stream = %self.ctx.name, epoch, "stream ready");
                self.report_phase(ConnPhase::Ready);
                if let Some(s) = self.ctx.subscriptions() {
                    s.do_send(StreamUp { epoch });
                }
            }
            Inbound::Authenticated | Inbound::Heartbeat | Inbound::Control => {
                open.malformed_in_a_row = 0
            }
            Inbound::Failure(failure) => self.fail(failure, ctx),
            Inbound::Data { topic, data } => {
                open.malformed_in_a_row = 0;
                if open.ready {
                    if let Some(s) = self.ctx.subscriptions() {
                        s.do_send(Deliver {
                            epoch: open.epoch,
                            topic,
                            data,
                        });
                    }
                }
            }
            Inbound::Ack { id } => {
                if let Some(s) = self.ctx.subscriptions() {
                    s.do_send(Acknowledged {
                        epoch: open.epoch,
                        id,
                        refused: None,
                    });
                }
            }
            Inbound::Nack { id, message } => {
                if let Some(s) = self.ctx.subscriptions() {
                    s.do_send(Acknowledged {
                        epoch: open.epoch,
                        id,
                        refused: Some(message),
                    });
                }
            }
            Inbound::TopicError { topic, message } => {
                if let Some(s) = self.ctx.subscriptions() {
                    s.do_send(TopicRefused {
                        epoch: open.epoch,
                        topic,
                        message,
                    });
                }
            }
            Inbound::Malformed => {
                self.ctx.metrics.decode_errors.inc();
                open.malformed_in_a_row += 1;
                let count = open.malformed_in_a_row;
                tracing::debug!(stream = %self.ctx.name, bytes, "skipped a malformed frame");
                if count > self.ctx.config.malformed_burst {
                    self.fail(Failure::MalformedBurst { count }, ctx);
                }
            }
        }
    }

    fn fail(&mut self, failure: Failure, ctx: &mut Context<Self>) {
        let generation = match &self.socket {
            Socket::Open(o) => Some(o.generation),
            _ => None,
        };
        self.fail_with(failure, generation, ctx);
    }

    /// Handles a failure through the failure table, then restarts this actor.
    fn fail_with(&mut self, failure: Failure, generation: Option<u64>, ctx: &mut Context<Self>) {
        if self.halted {
            return;
        }
        let class = self.ctx.class(&failure);
        let was_ready = matches!(&self.socket, Socket::Open(o) if o.ready);
        tracing::warn!(stream = %self.ctx.name, %failure, ?class, was_ready, "socket failed");
        self.ctx.report(Report::Failure {
            actor: ActorKind::StreamConnection,
            failure: failure.clone(),
        });
        let reject = |gen: Option<u64>| {
            if let (Some(generation), Some(token)) = (gen, self.ctx.token()) {
                token.do_send(CredentialsRejected { generation });
            }
        };
        let delay = match class {
            Class::Hard => {
                self.teardown(ctx);
                return;
            }
            Class::Auth => {
                reject(generation);
                // The fresh credentials are worth trying soon, but never in a hot loop.
                self.backoff.floor()
            }
            Class::Session | Class::NeedsLogin => {
                reject(generation);
                if let Some(g) = self.ctx.gateway() {
                    g.do_send(SessionLost {
                        failure: failure.clone(),
                    });
                }
                self.backoff.floor()
            }
            Class::Soft | Class::Ignore => self.backoff.next_delay_at_least(failure.retry_after()),
        };
        self.restart_after(delay, ctx);
    }

    /// Tells Subscriptions the socket is gone and closes it.
    fn teardown(&mut self, _ctx: &mut Context<Self>) {
        if let Socket::Open(open) = &mut self.socket {
            open.sink.close();
            self.ctx.metrics.frame_sent(FrameKind::Close);
            if let Some(s) = self.ctx.subscriptions() {
                s.do_send(StreamDown { epoch: open.epoch });
            }
        }
        self.socket = Socket::Idle;
    }

    fn restart_after(&mut self, delay: Duration, ctx: &mut Context<Self>) {
        self.teardown(ctx);
        self.next_delay = Some(delay);
        ctx.stop();
    }
}

impl Actor for StreamConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.halted {
            return;
        }
        match self.next_delay.take() {
            Some(delay) if !delay.is_zero() => {
                self.socket = Socket::Backoff;
                self.report_phase(ConnPhase::Backoff { delay });
                ctx.run_later(delay, |act, ctx| act.dial(ctx));
            }
            _ => {
                self.report_phase(ConnPhase::Waiting);
                self.dial(ctx);
            }
        }
    }
}

impl Supervised for StreamConnection {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.socket = Socket::Idle;
        if !self.halted {
            self.ctx
                .report(Report::Restarted(ActorKind::StreamConnection));
        }
    }
}

impl StreamHandler<Result<Frame, WsProtocolError>> for StreamConnection {
    fn handle(&mut self, item: Result<Frame, WsProtocolError>, ctx: &mut Context<Self>) {
        let frame = match item {
            Ok(frame) => frame,
            Err(WsProtocolError::Overflow) => {
                let limit = self.ctx.config.max_frame_size;
                return self.fail(Failure::Oversized { limit }, ctx);
            }
            Err(e) => {
                return self.fail(
                    Failure::Transport {
                        detail: format!("websocket protocol: {e}"),
                    },
                    ctx,
                )
            }
        };
        let Socket::Open(open) = &mut self.socket else {
            return;
        };
        open.last_rx = Instant::now();
        self.ctx.metrics.frame_received(FrameKind::from(&frame));
        match frame {
            Frame::Text(bytes) | Frame::Binary(bytes) => {
                self.on_text(&String::from_utf8_lossy(&bytes), ctx)
            }
            Frame::Continuation(item) => match open.assembler.push(item) {
                Ok(Some((MessageKind::Text | MessageKind::Binary, bytes))) => {
                    self.on_text(&String::from_utf8_lossy(&bytes), ctx)
                }
                Ok(None) => {}
                Err(failure) => self.fail(failure, ctx),
            },
            Frame::Ping(payload) => {
                let _ = open.sink.write(Message::Pong(payload));
                self.ctx.metrics.frame_sent(FrameKind::Pong);
            }
            Frame::Pong(_) => {}
            Frame::Close(reason) => {
                let (code, text) = match reason {
                    Some(r) => (Some(u16::from(r.code)), r.description.unwrap_or_default()),
                    None => (None, String::new()),
                };
                self.fail(close_failure(code, &text), ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        if matches!(self.socket, Socket::Open(_)) {
            self.fail(Failure::Dropped, ctx);
        }
    }
}

impl WriteHandler<WsProtocolError> for StreamConnection {
    fn error(&mut self, err: WsProtocolError, ctx: &mut Context<Self>) -> Running {
        self.fail(
            Failure::Transport {
                detail: format!("websocket write: {err}"),
            },
            ctx,
        );
        Running::Continue
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl Handler<SendFrame> for StreamConnection {
    type Result = ();

    fn handle(&mut self, msg: SendFrame, _ctx: &mut Context<Self>) {
        match &mut self.socket {
            Socket::Open(open) if open.epoch == msg.epoch && open.ready => {
                let _ = open.sink.write(Message::Text(msg.text.into()));
                self.ctx.metrics.frame_sent(FrameKind::Text);
            }
            _ => {
                tracing::trace!(stream = %self.ctx.name, epoch = msg.epoch, "frame for a dead socket dropped")
            }
        }
    }
}

impl Handler<SessionDown> for StreamConnection {
    type Result = ();

    fn handle(&mut self, _: SessionDown, ctx: &mut Context<Self>) {
        if !self.halted && matches!(self.socket, Socket::Open(_) | Socket::Dialing) {
            tracing::info!(stream = %self.ctx.name, "gateway session down; socket rebuilt once it is back");
            self.restart_after(Duration::ZERO, ctx);
        }
    }
}

impl Handler<CredentialsChanged> for StreamConnection {
    type Result = ();

    fn handle(&mut self, msg: CredentialsChanged, ctx: &mut Context<Self>) {
        if matches!(&self.socket, Socket::Open(o) if o.generation < msg.generation) {
            tracing::info!(stream = %self.ctx.name, generation = msg.generation, "new credentials; rebuilding the socket");
            self.ctx.metrics.reconnect("credentials_rotated");
            let delay = self.backoff.floor();
            self.restart_after(delay, ctx);
        }
    }
}

impl Handler<Resync> for StreamConnection {
    type Result = ();

    fn handle(&mut self, _: Resync, _ctx: &mut Context<Self>) {
        if let (Socket::Open(open), Some(s)) = (&self.socket, self.ctx.subscriptions()) {
            if open.ready {
                s.do_send(StreamUp { epoch: open.epoch });
            }
        }
    }
}

impl Handler<Halt> for StreamConnection {
    type Result = ();

    fn handle(&mut self, _: Halt, ctx: &mut Context<Self>) {
        // Close gracefully: frames already queued (unsubscribes on shutdown) are flushed first.
        // Timers keep ticking but find no open socket, and every failure path checks `halted`.
        self.teardown(ctx);
        self.halted = true;
        self.report_phase(ConnPhase::Waiting);
    }
}

impl Handler<Resume> for StreamConnection {
    type Result = ();

    fn handle(&mut self, _: Resume, ctx: &mut Context<Self>) {
        if self.halted {
            self.halted = false;
            self.backoff.reset();
            self.next_delay = None;
            ctx.stop();
        }
    }
}

impl Handler<InjectPanic> for StreamConnection {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, _ctx: &mut Context<Self>) {
        panic!("chaos: panic injected into StreamConnection");
    }
}
