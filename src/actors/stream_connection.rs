//! StreamConnection: the shell around [`ConnMachine`], which owns one socket at a time.
//!
//! The machine decides (dial, Ready only on confirmed authentication, every failure through the
//! failure table, backoff, restart, halt); this shell does the I/O: it dials with what
//! GatewaySession and TokenManager give it *now*, writes the dialect's opening frames, watches
//! for heartbeat silence (half-open sockets are real), answers pings (awc does not), reassembles
//! fragments (awc does not), decodes text lossily (a non-UTF-8 byte must not kill the reader) and
//! turns closes into failures. A restart stops the actor (cancelling its timers, its stream and
//! the dial in flight) and actix's Supervisor starts it again with the same machine.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_codec::Framed;
use awc::error::WsProtocolError;
use awc::ws::{Codec, Frame, Message};
use awc::BoxedSocket;
use bytestring::ByteString;
use futures_util::stream::StreamExt;
use rand::Rng;
use secrecy::ExposeSecret;
use tokio::time::Instant;

use super::due_timer::DueTimer;
use super::subscriptions::{count_dropped, hand_over, Delivered, Payload};
use super::{mailbox, StreamCtx};
use crate::dialect::{Inbound, SocketDecoder};
use crate::failure::{close_failure, Failure};
use crate::ids::{Epoch, Generation};
use crate::machine::connection::{ConnEffect, ConnEvent, ConnMachine, ConnState, Presented};
use crate::machine::Now;
use crate::messages::{
    Acknowledged, AwaitSession, ConnPhase, CredentialsChanged, CredentialsDiscarded,
    CredentialsRejected, CredentialsStale, GetCredentials, Halt, InjectPanic, PrepareDial, Report,
    Resume, Resync, SendFrame, SessionDown, SessionLost, SocketHealthy, StreamDown, StreamUp,
    TopicRefused,
};
use crate::metrics::{FrameKind, RECONNECT_CREDENTIALS_ROTATED};
use crate::outbox::{outbox, Outbox};
use crate::status::ActorKind;
use crate::transport::{redact_url, text_of, ws_failure, Assembler, MessageKind};

/// The I/O half of an open socket (its phase lives in the machine).
struct Open {
    epoch: Epoch,
    /// Frames waiting for the socket, bounded: a gateway that stops reading is given up.
    outbox: Outbox,
    decoder: Box<dyn SocketDecoder>,
    assembler: Assembler,
    last_rx: Instant,
    malformed_in_a_row: u32,
}

/// The socket actor of one stream.
pub struct StreamConnection {
    ctx: StreamCtx,
    /// Tells the stream supervisor when this actor is dropped.
    _lifeline: super::Lifeline,
    http: Option<crate::transport::Http>,
    machine: ConnMachine,
    socket: Option<Open>,
    dial: Option<SpawnHandle>,
    /// The timer that feeds [`ConnEvent::Watchdog`] at [`ConnMachine::reset_due`].
    reset_timer: DueTimer,
    /// Reused buffer for decoded messages.
    scratch: Vec<Inbound>,
}

type Dialed = (Presented, Framed<BoxedSocket, Codec>);

impl StreamConnection {
    /// A StreamConnection for the stream.
    pub fn new(ctx: StreamCtx) -> Self {
        let machine = ConnMachine::new(
            ctx.config.backoff.clone(),
            ctx.dialect.competing_policy(),
            rand::thread_rng().gen(),
        );
        let lifeline = super::Lifeline::new(crate::status::ActorKind::StreamConnection, &ctx);
        Self {
            ctx,
            http: None,
            machine,
            socket: None,
            dial: None,
            reset_timer: DueTimer::default(),
            scratch: Vec::new(),
            _lifeline: lifeline,
        }
    }

    fn on(&mut self, event: ConnEvent, ctx: &mut Context<Self>) {
        let now = self.ctx.now();
        self.on_at(event, now, ctx);
    }

    /// Feeds `event` as of `now`, performs what the machine decides, and re-arms the reset timer.
    fn on_at(&mut self, event: ConnEvent, now: Now, ctx: &mut Context<Self>) {
        for effect in self.machine.on(event, now) {
            self.perform(effect, ctx);
        }
        self.arm_reset(ctx);
    }

    /// (Re)arms the one timer that tells the machine its Ready socket stayed healthy long enough
    /// for the backoff to start over.
    fn arm_reset(&mut self, ctx: &mut Context<Self>) {
        let due = self.machine.reset_due();
        let now = self.ctx.now();
        self.reset_timer.arm(
            due,
            now,
            Duration::ZERO,
            ctx,
            |act| &mut act.reset_timer,
            |act, due, ctx| {
                // Never before the due time, whatever the timer's rounding.
                let now = act.ctx.now().max(due);
                act.on_at(ConnEvent::Watchdog, now, ctx);
            },
        );
    }

    fn report_phase(&self, phase: ConnPhase) {
        self.ctx.report(Report::Connection {
            phase,
            attempt: self.machine.attempt(),
            epoch: self.ctx.epoch.get(),
        });
    }

    fn perform(&mut self, effect: ConnEffect, ctx: &mut Context<Self>) {
        match effect {
            ConnEffect::Dial => self.dial(ctx),
            ConnEffect::ArmBackoff(delay) => {
                ctx.run_later(delay, |act, ctx| act.on(ConnEvent::BackoffElapsed, ctx));
            }
            ConnEffect::Close(epoch) => self.close(epoch),
            ConnEffect::Up(epoch) => {
                tracing::info!(stream = %self.ctx.name, %epoch, "stream ready");
                if let Some(s) = self.ctx.subscriptions() {
                    s.do_send(StreamUp { epoch });
                }
            }
            ConnEffect::Reject(generation) => {
                if let Some(token) = self.ctx.token() {
                    token.do_send(CredentialsRejected { generation });
                }
            }
            ConnEffect::Stale(generation) => {
                if let Some(token) = self.ctx.token() {
                    token.do_send(CredentialsStale { generation });
                }
            }
            ConnEffect::Discard(generation) => {
                if let Some(token) = self.ctx.token() {
                    token.do_send(CredentialsDiscarded { generation });
                }
            }
            ConnEffect::CancelDial => {
                if let Some(h) = self.dial.take() {
                    ctx.cancel_future(h);
                }
            }
            ConnEffect::SessionLost(failure) => {
                if let Some(g) = self.ctx.gateway() {
                    g.do_send(SessionLost { failure });
                }
            }
            ConnEffect::Phase(phase) => self.report_phase(phase),
            ConnEffect::Report(failure) => {
                let class = self.ctx.class(&failure);
                tracing::warn!(stream = %self.ctx.name, %failure, ?class, "socket failed");
                self.ctx.report(Report::Failure {
                    actor: ActorKind::StreamConnection,
                    failure,
                });
            }
            ConnEffect::Healthy => {
                if let Some(g) = self.ctx.gateway() {
                    g.do_send(SocketHealthy);
                }
            }
            ConnEffect::Restart => ctx.stop(),
        }
    }

    fn dial(&mut self, ctx: &mut Context<Self>) {
        let (Some(gateway), Some(token)) = (self.ctx.gateway(), self.ctx.token()) else {
            let failure = Failure::Transport {
                detail: "peers not started".into(),
            };
            return self.on(
                ConnEvent::DialFailed {
                    failure,
                    presented: None,
                },
                ctx,
            );
        };
        let http = self
            .http
            .get_or_insert_with(|| self.ctx.clients.client())
            .clone();
        let max_frame = self.ctx.config.max_frame_size;
        let report = self.ctx.report.clone();
        let epoch = self.ctx.epoch.get();
        let attempt = self.machine.attempt();
        let dialect = self.ctx.dialect.clone();
        let fut = async move {
            let none = |f: Failure| (None, f);
            gateway
                .send(AwaitSession)
                .await
                .map_err(|e| none(mailbox("gateway session", e)))?
                .map_err(none)?;
            report.do_send(Report::Connection {
                phase: ConnPhase::Connecting,
                attempt,
                epoch,
            });
            let creds = token
                .send(GetCredentials)
                .await
                .map_err(|e| none(mailbox("token manager", e)))?
                .map_err(none)?;
            let presented = Presented {
                generation: creds.generation,
                replaced_rejected: creds.replaced_rejected,
                issued_at: creds.issued_at,
            };
            let with = |f: Failure| (Some(presented), f);
            let plan = gateway
                .send(PrepareDial {
                    credentials: creds.clone(),
                })
                .await
                .map_err(|e| with(mailbox("gateway session", e)))?
                .map_err(with)?;
            tracing::debug!(url = %redact_url(&plan.url), generation = %creds.generation, "dialing");
            let mut req = http
                .ws(plan.key, &plan.url)
                .map_err(with)?
                .max_frame_size(max_frame);
            for (name, value) in &plan.headers {
                req = req.header(*name, value.expose_secret());
            }
            match req.connect().await {
                Ok((_resp, framed)) => Ok((presented, framed)),
                Err(e) => Err(with(ws_failure(&e, |status| {
                    dialect.upgrade_refused(status)
                }))),
            }
        };
        let handle = ctx.spawn(fut.into_actor(self).map(
            |res: Result<Dialed, (Option<Presented>, Failure)>, act, ctx| {
                act.dial = None;
                match res {
                    Ok((presented, framed)) => act.opened(presented, framed, ctx),
                    Err((presented, failure)) => {
                        act.on(ConnEvent::DialFailed { failure, presented }, ctx)
                    }
                }
            },
        ));
        self.dial = Some(handle);
    }

    fn opened(
        &mut self,
        presented: Presented,
        framed: Framed<BoxedSocket, Codec>,
        ctx: &mut Context<Self>,
    ) {
        let epoch = self.ctx.epoch.get().next();
        self.ctx.epoch.set(epoch);
        let (sink, stream) = framed.split();
        let (outbox, writer) = outbox(sink);
        ctx.spawn(writer.into_actor(self).map(move |res, act, ctx| {
            if let Err(err) = res {
                if act.socket.as_ref().is_some_and(|o| o.epoch == epoch) {
                    let failure = Failure::Transport {
                        detail: format!("websocket write: {err}"),
                    };
                    act.on(ConnEvent::SocketFailed(failure), ctx);
                }
            }
        }));
        ctx.add_stream(stream);
        let cfg = self.ctx.config.clone();
        self.socket = Some(Open {
            epoch,
            outbox,
            decoder: self.ctx.dialect.decoder(),
            assembler: Assembler::new(cfg.max_message_size),
            last_rx: Instant::now(),
            malformed_in_a_row: 0,
        });
        self.on(ConnEvent::Opened { epoch, presented }, ctx);
        if self.socket.is_none() {
            // The machine closed it at once (a dial that finished after a halt).
            return;
        }
        for frame in self.ctx.dialect.opening_frames() {
            self.write(Message::Text(frame.into()), FrameKind::Text, ctx);
        }
        if self.ctx.dialect.ready_on_open() {
            self.on(ConnEvent::Authenticated, ctx);
        }
        tracing::debug!(stream = %self.ctx.name, %epoch, "socket open; waiting for the gateway to confirm authentication");
        ctx.run_later(cfg.auth_timeout, move |act, ctx| {
            if matches!(act.machine.state(), ConnState::Opening { epoch: e, .. } if e == epoch) {
                act.on(ConnEvent::SocketFailed(Failure::AuthTimeout), ctx);
            }
        });
        self.arm_silence(epoch, cfg.heartbeat_timeout, ctx);
        if let Some((every, frame)) = self.ctx.dialect.socket_keepalive() {
            ctx.run_interval(every, move |act, ctx| {
                act.write(Message::Text(frame.clone().into()), FrameKind::Text, ctx)
            });
        }
    }

    /// Closes socket `epoch` and tells Subscriptions it is gone.
    fn close(&mut self, epoch: Epoch) {
        if self.socket.as_ref().is_some_and(|o| o.epoch == epoch) {
            // Dropping the outbox lets its writer flush what is queued, then close the socket.
            if self.socket.take().is_some() {
                self.ctx.metrics.frame_sent(FrameKind::Close);
            }
            if let Some(s) = self.ctx.subscriptions() {
                s.do_send(StreamDown { epoch });
            }
        }
    }

    /// Arms the heartbeat deadline of socket `epoch`: one timer at `last_rx + timeout`. When it
    /// fires, a socket silent for `timeout` has failed; one that received meanwhile gets a new
    /// deadline, so an idle socket costs one wake-up per `timeout`, not a periodic check.
    fn arm_silence(&mut self, epoch: Epoch, timeout: Duration, ctx: &mut Context<Self>) {
        let Some(open) = self.socket.as_ref().filter(|o| o.epoch == epoch) else {
            return;
        };
        let silent_for = Instant::now().saturating_duration_since(open.last_rx);
        if silent_for >= timeout {
            return self.on(
                ConnEvent::SocketFailed(Failure::HeartbeatSilence { silent_for }),
                ctx,
            );
        }
        // Positive: `silent_for < timeout`.
        ctx.run_later(timeout - silent_for, move |act, ctx| {
            act.arm_silence(epoch, timeout, ctx)
        });
    }

    /// Queues a frame on the open socket; a full queue (the gateway stopped reading) gives the
    /// socket up.
    fn write(&mut self, msg: Message, kind: FrameKind, ctx: &mut Context<Self>) {
        let Some(open) = &self.socket else {
            return;
        };
        match open.outbox.push(msg) {
            Ok(()) => self.ctx.metrics.frame_sent(kind),
            Err(failure) => self.on(ConnEvent::SocketFailed(failure), ctx),
        }
    }

    fn on_text(&mut self, text: &ByteString, ctx: &mut Context<Self>) {
        let mut inbound = std::mem::take(&mut self.scratch);
        let Some(epoch) = self.socket.as_mut().map(|open| {
            open.decoder.decode_frame_deferred(text, &mut inbound);
            open.epoch
        }) else {
            return;
        };
        for message in inbound.drain(..) {
            // A failure restarts this actor: nothing after it on that socket matters.
            if self.socket.as_ref().map(|o| o.epoch) != Some(epoch) {
                break;
            }
            self.on_inbound(message, text.len(), ctx);
        }
        self.scratch = inbound;
    }

    fn on_inbound(&mut self, message: Inbound, bytes: usize, ctx: &mut Context<Self>) {
        let ready = self.machine.ready_epoch();
        let Some(open) = &mut self.socket else {
            return;
        };
        let epoch = open.epoch;
        match message {
            Inbound::Authenticated => {
                open.malformed_in_a_row = 0;
                self.on(ConnEvent::Authenticated, ctx);
            }
            Inbound::Heartbeat | Inbound::Control => open.malformed_in_a_row = 0,
            Inbound::Failure(failure) => self.on(ConnEvent::SocketFailed(failure), ctx),
            Inbound::Data { topic, data } => {
                open.malformed_in_a_row = 0;
                if ready == Some(epoch) {
                    self.hand_over(epoch, topic, Payload::Parsed(data));
                }
            }
            Inbound::Text { topic, text } => {
                open.malformed_in_a_row = 0;
                if ready == Some(epoch) {
                    self.hand_over(epoch, topic, Payload::Text(text));
                }
            }
            Inbound::Ack { id } => {
                if let Some(s) = self.ctx.subscriptions() {
                    s.do_send(Acknowledged {
                        epoch,
                        id,
                        refused: None,
                    });
                }
            }
            Inbound::Nack { id, message } => {
                if let Some(s) = self.ctx.subscriptions() {
                    s.do_send(Acknowledged {
                        epoch,
                        id,
                        refused: Some(message),
                    });
                }
            }
            Inbound::TopicError { topic, message } => {
                if let Some(s) = self.ctx.subscriptions() {
                    s.do_send(TopicRefused {
                        epoch,
                        topic,
                        message,
                    });
                }
            }
            Inbound::Malformed => {
                self.ctx.metrics.decode_errors().inc();
                open.malformed_in_a_row = open.malformed_in_a_row.saturating_add(1);
                let count = open.malformed_in_a_row;
                tracing::debug!(stream = %self.ctx.name, bytes, "skipped a malformed frame");
                if count > self.ctx.config.malformed_burst {
                    self.on(
                        ConnEvent::SocketFailed(Failure::MalformedBurst { count }),
                        ctx,
                    );
                }
            }
        }
    }

    /// Data from the Ready socket `epoch` straight to its consumers (same thread, no mailbox
    /// hop); Subscriptions hears of it only when something changed for it.
    fn hand_over(&self, epoch: Epoch, topic: Arc<str>, payload: Payload) {
        let Some(book) = self.ctx.book() else {
            return;
        };
        let Some(handed) = hand_over(&book, epoch, &topic, payload) else {
            return;
        };
        count_dropped(&self.ctx, handed.dropped);
        if handed.became_active || handed.orphaned {
            if let Some(s) = self.ctx.subscriptions() {
                s.do_send(Delivered { topic });
            }
        }
    }

    fn presented_generation(&self) -> Option<Generation> {
        match self.machine.state() {
            ConnState::Opening { presented, .. } | ConnState::Ready { presented, .. } => {
                Some(presented.generation)
            }
            _ => None,
        }
    }
}

impl Actor for StreamConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.on(ConnEvent::Started, ctx);
    }
}

impl Supervised for StreamConnection {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.socket = None;
        self.dial = None;
        self.reset_timer.forget();
        if self.machine.state() != ConnState::Halted {
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
                return self.on(ConnEvent::SocketFailed(Failure::Oversized { limit }), ctx);
            }
            Err(e) => {
                let failure = Failure::Transport {
                    detail: format!("websocket protocol: {e}"),
                };
                return self.on(ConnEvent::SocketFailed(failure), ctx);
            }
        };
        let Some(open) = &mut self.socket else {
            return;
        };
        open.last_rx = Instant::now();
        self.ctx.metrics.frame_received(FrameKind::from(&frame));
        match frame {
            Frame::Text(bytes) | Frame::Binary(bytes) => self.on_text(&text_of(bytes), ctx),
            Frame::Continuation(item) => match open.assembler.push(item) {
                Ok(Some((MessageKind::Text | MessageKind::Binary, bytes))) => {
                    self.on_text(&text_of(bytes), ctx)
                }
                Ok(None) => {}
                Err(failure) => self.on(ConnEvent::SocketFailed(failure), ctx),
            },
            Frame::Ping(payload) => self.write(Message::Pong(payload), FrameKind::Pong, ctx),
            Frame::Pong(_) => {}
            Frame::Close(reason) => {
                let (code, text) = match reason {
                    Some(r) => (Some(u16::from(r.code)), r.description.unwrap_or_default()),
                    None => (None, String::new()),
                };
                self.on(ConnEvent::SocketFailed(close_failure(code, &text)), ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        if self.socket.is_some() {
            self.on(ConnEvent::SocketFailed(Failure::Dropped), ctx);
        }
    }
}

impl Handler<SendFrame> for StreamConnection {
    type Result = ();

    fn handle(&mut self, msg: SendFrame, ctx: &mut Context<Self>) {
        match &self.socket {
            Some(_) if self.machine.ready_epoch() == Some(msg.epoch) => {
                self.write(Message::Text(msg.text.into()), FrameKind::Text, ctx);
            }
            _ => {
                tracing::trace!(stream = %self.ctx.name, epoch = %msg.epoch, "frame for a dead socket dropped")
            }
        }
    }
}

impl Handler<SessionDown> for StreamConnection {
    type Result = ();

    fn handle(&mut self, _: SessionDown, ctx: &mut Context<Self>) {
        tracing::info!(stream = %self.ctx.name, "gateway session down; socket rebuilt once it is back");
        self.on(ConnEvent::SessionDown, ctx);
    }
}

impl Handler<CredentialsChanged> for StreamConnection {
    type Result = ();

    fn handle(&mut self, msg: CredentialsChanged, ctx: &mut Context<Self>) {
        if self
            .presented_generation()
            .is_some_and(|g| g < msg.generation)
        {
            tracing::info!(stream = %self.ctx.name, generation = %msg.generation, "new credentials; rebuilding the socket");
            self.ctx.metrics.reconnect(RECONNECT_CREDENTIALS_ROTATED);
        }
        self.on(ConnEvent::CredentialsChanged(msg.generation), ctx);
    }
}

impl Handler<Resync> for StreamConnection {
    type Result = ();

    fn handle(&mut self, _: Resync, _ctx: &mut Context<Self>) {
        if let (Some(epoch), Some(s)) = (self.machine.ready_epoch(), self.ctx.subscriptions()) {
            s.do_send(StreamUp { epoch });
        }
    }
}

impl Handler<Halt> for StreamConnection {
    type Result = ();

    fn handle(&mut self, _: Halt, ctx: &mut Context<Self>) {
        // Close gracefully: frames already queued (unsubscribes on shutdown) are flushed first.
        self.on(ConnEvent::Halt, ctx);
    }
}

impl Handler<Resume> for StreamConnection {
    type Result = ();

    fn handle(&mut self, _: Resume, ctx: &mut Context<Self>) {
        self.on(ConnEvent::Resume, ctx);
    }
}

impl Handler<InjectPanic> for StreamConnection {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, _ctx: &mut Context<Self>) {
        panic!("chaos: panic injected into StreamConnection");
    }
}
