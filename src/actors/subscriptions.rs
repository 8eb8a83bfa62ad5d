//! Subscriptions: what the user wants (desired state), independent of any socket.
//!
//! Bindings become pending when the socket goes down and are replayed on every new Ready socket;
//! each is confirmed the dialect's way (IBKR: the first message on its topic), re-sent when
//! unconfirmed (bounded), re-sent periodically where the gateway expires streams (IBKR `smd`),
//! and fanned out to consumers over bounded queues that drop the oldest event for a slow
//! consumer: the socket reader never waits for a consumer.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use super::StreamCtx;
use crate::channel::{self, Push};
use crate::dialect::{Confirmation, SubscriptionWire};
use crate::ids::Epoch;
use crate::messages::{
    Acknowledged, Deliver, Halt, InjectPanic, Report, Resume, SendFrame, StreamDown, StreamUp,
    Subscribe, TopicRefused, Unsubscribe,
};
use crate::status::{ActorKind, SubscriptionCounts};
use crate::subscription::{Event, Subscription, SubscriptionState};

/// One desired subscription and its consumers.
pub struct Binding {
    /// What the user asked for.
    pub subscription: Subscription,
    /// Its wire form.
    pub wire: SubscriptionWire,
    /// Where it stands on the current socket.
    pub state: SubscriptionState,
    consumers: Vec<channel::Sender<Event>>,
    last_sent: Option<Instant>,
}

/// The desired set, keyed by routing topic. Owned by the stream supervisor so that it survives a
/// rebuilt Subscriptions actor.
pub type Book = Rc<RefCell<BTreeMap<Arc<str>, Binding>>>;

/// How often bindings are checked for confirmation timeouts and re-sends.
const TICK: Duration = Duration::from_secs(1);

/// The subscriptions actor of one stream.
pub struct Subscriptions {
    ctx: StreamCtx,
    book: Book,
    epoch: Option<Epoch>,
    halted: bool,
    last_counts: Option<SubscriptionCounts>,
}

impl Subscriptions {
    /// A Subscriptions actor working on `book`.
    pub fn new(ctx: StreamCtx, book: Book) -> Self {
        Self {
            ctx,
            book,
            epoch: None,
            halted: false,
            last_counts: None,
        }
    }

    fn send(&self, text: String) {
        if let (Some(epoch), Some(frames)) = (self.epoch, self.ctx.frames()) {
            frames.do_send(SendFrame { epoch, text });
        }
    }

    fn counts(&self) -> SubscriptionCounts {
        let book = self.book.borrow();
        let mut c = SubscriptionCounts {
            desired: book.len(),
            ..Default::default()
        };
        for b in book.values() {
            match b.state {
                SubscriptionState::Active => c.active += 1,
                SubscriptionState::Pending | SubscriptionState::Sent { .. } => c.pending += 1,
                SubscriptionState::Failed { .. } => c.failed += 1,
            }
        }
        c
    }

    fn publish_counts(&mut self) {
        let c = self.counts();
        if self.last_counts != Some(c) {
            self.last_counts = Some(c);
            self.ctx.metrics.subscriptions(&c);
            self.ctx.report(Report::Subscriptions(c));
        }
    }

    /// Sends the subscribe frame of `key` and moves it to Sent (or Active when never acknowledged).
    fn subscribe_now(&mut self, key: &Arc<str>, now: Instant) {
        let frame = {
            let mut book = self.book.borrow_mut();
            let Some(b) = book.get_mut(key) else { return };
            let attempt = match b.state {
                SubscriptionState::Sent { attempt } => attempt + 1,
                _ => 1,
            };
            b.last_sent = Some(now);
            let next = match b.wire.confirmation {
                Confirmation::Immediate => SubscriptionState::Active,
                Confirmation::FirstMessage | Confirmation::Ack(_) => {
                    SubscriptionState::Sent { attempt }
                }
            };
            set_state(b, next);
            b.wire.subscribe.clone()
        };
        self.send(frame);
    }

    fn tick(&mut self) {
        if self.halted || self.epoch.is_none() {
            return;
        }
        let now = Instant::now();
        let confirm = self.ctx.config.confirm_timeout;
        let max_attempts = self.ctx.config.max_subscribe_attempts.max(1);
        let mut resend = Vec::new();
        {
            let mut book = self.book.borrow_mut();
            for (key, b) in book.iter_mut() {
                let since = b.last_sent.map(|t| now.saturating_duration_since(t));
                match (&b.state, since) {
                    (SubscriptionState::Sent { attempt }, Some(since)) if since >= confirm => {
                        if *attempt >= max_attempts {
                            let reason = format!("not confirmed after {attempt} attempts");
                            tracing::warn!(stream = %self.ctx.name, subscription = %b.subscription, %reason, "subscription failed");
                            set_state(b, SubscriptionState::Failed { reason });
                        } else {
                            resend.push(key.clone());
                        }
                    }
                    (SubscriptionState::Active, Some(since))
                        if b.wire.resend_every.is_some_and(|every| since >= every) =>
                    {
                        b.last_sent = Some(now);
                        resend.push(key.clone());
                    }
                    _ => {}
                }
            }
        }
        for key in resend {
            let refresh = self.book.borrow().get(&key).map(|b| {
                (
                    b.state == SubscriptionState::Active,
                    b.wire.subscribe.clone(),
                )
            });
            match refresh {
                Some((true, frame)) => {
                    tracing::debug!(stream = %self.ctx.name, topic = %key, "re-sending subscription before the gateway expires it");
                    self.send(frame);
                }
                Some((false, _)) => self.subscribe_now(&key, now),
                None => {}
            }
        }
        self.publish_counts();
    }
}

fn set_state(b: &mut Binding, state: SubscriptionState) {
    if b.state != state {
        b.state = state.clone();
        for c in &b.consumers {
            c.push(Event::State(state.clone()));
        }
    }
}

impl Actor for Subscriptions {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(TICK, |act, _| act.tick());
        self.publish_counts();
    }
}

impl Supervised for Subscriptions {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.ctx.report(Report::Restarted(ActorKind::Subscriptions));
    }
}

impl Handler<Subscribe> for Subscriptions {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) -> Self::Result {
        let wire = self.ctx.dialect.subscription(&msg.subscription)?;
        let key = wire.key.clone();
        let is_new = {
            let mut book = self.book.borrow_mut();
            match book.get_mut(&key) {
                Some(b) => {
                    msg.sender.push(Event::State(b.state.clone()));
                    b.consumers.push(msg.sender);
                    false
                }
                None => {
                    msg.sender.push(Event::State(SubscriptionState::Pending));
                    book.insert(
                        key.clone(),
                        Binding {
                            subscription: msg.subscription,
                            wire,
                            state: SubscriptionState::Pending,
                            consumers: vec![msg.sender],
                            last_sent: None,
                        },
                    );
                    true
                }
            }
        };
        if is_new && self.epoch.is_some() && !self.halted {
            self.subscribe_now(&key, Instant::now());
        }
        self.publish_counts();
        Ok(())
    }
}

impl Handler<Unsubscribe> for Subscriptions {
    type Result = bool;

    fn handle(&mut self, msg: Unsubscribe, _ctx: &mut Context<Self>) -> bool {
        let Ok(wire) = self.ctx.dialect.subscription(&msg.subscription) else {
            return false;
        };
        let removed = self.book.borrow_mut().remove(&wire.key);
        if let Some(b) = &removed {
            if let Some(frame) = &b.wire.unsubscribe {
                self.send(frame.clone());
            }
        }
        self.publish_counts();
        removed.is_some()
    }
}

impl Handler<StreamUp> for Subscriptions {
    type Result = ();

    fn handle(&mut self, msg: StreamUp, _ctx: &mut Context<Self>) {
        if self.epoch.is_some_and(|e| e > msg.epoch) {
            return;
        }
        self.epoch = Some(msg.epoch);
        if self.halted {
            return;
        }
        let now = Instant::now();
        let keys: Vec<Arc<str>> = self.book.borrow().keys().cloned().collect();
        tracing::debug!(stream = %self.ctx.name, epoch = %msg.epoch, count = keys.len(), "replaying subscriptions");
        for key in keys {
            if let Some(b) = self.book.borrow_mut().get_mut(&key) {
                set_state(b, SubscriptionState::Pending);
            }
            self.subscribe_now(&key, now);
        }
        self.publish_counts();
    }
}

impl Handler<StreamDown> for Subscriptions {
    type Result = ();

    fn handle(&mut self, msg: StreamDown, _ctx: &mut Context<Self>) {
        if self.epoch.is_some_and(|e| e > msg.epoch) {
            return; // about an older socket
        }
        self.epoch = None;
        for b in self.book.borrow_mut().values_mut() {
            set_state(b, SubscriptionState::Pending);
        }
        self.publish_counts();
    }
}

impl Handler<Deliver> for Subscriptions {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _ctx: &mut Context<Self>) {
        if self.epoch != Some(msg.epoch) {
            return;
        }
        let mut dropped = 0u64;
        let mut empty = None;
        {
            let mut book = self.book.borrow_mut();
            let Some(b) = book.get_mut(&msg.topic) else {
                return;
            };
            if b.state != SubscriptionState::Active {
                set_state(b, SubscriptionState::Active);
            }
            let event = Event::Data {
                topic: msg.topic.clone(),
                data: msg.data,
            };
            b.consumers.retain(|c| !c.is_closed());
            for c in &b.consumers {
                if c.push(event.clone()) == Push::DroppedOldest {
                    dropped += 1;
                }
            }
            if b.consumers.is_empty() {
                empty = Some(b.subscription.clone());
            }
        }
        if dropped > 0 {
            self.ctx.metrics.events_dropped.inc_by(dropped);
            self.ctx.report(Report::EventsDropped(dropped));
        }
        if let Some(subscription) = empty {
            // Every consumer is gone: really unsubscribe.
            let _ = self.handle(Unsubscribe { subscription }, _ctx);
        }
        self.publish_counts();
    }
}

impl Handler<Acknowledged> for Subscriptions {
    type Result = ();

    fn handle(&mut self, msg: Acknowledged, _ctx: &mut Context<Self>) {
        if self.epoch != Some(msg.epoch) {
            return;
        }
        for b in self.book.borrow_mut().values_mut() {
            if b.wire.confirmation != Confirmation::Ack(msg.id.clone()) {
                continue;
            }
            match &msg.refused {
                None => set_state(b, SubscriptionState::Active),
                Some(reason) => {
                    tracing::warn!(stream = %self.ctx.name, subscription = %b.subscription, %reason, "gateway refused subscription");
                    set_state(
                        b,
                        SubscriptionState::Failed {
                            reason: format!("gateway refused it: {reason}"),
                        },
                    );
                }
            }
        }
        self.publish_counts();
    }
}

impl Handler<TopicRefused> for Subscriptions {
    type Result = ();

    fn handle(&mut self, msg: TopicRefused, _ctx: &mut Context<Self>) {
        if self.epoch != Some(msg.epoch) || msg.topic.is_empty() {
            return;
        }
        for b in self.book.borrow_mut().values_mut() {
            if *b.wire.key == msg.topic || b.wire.subscribe.starts_with(&msg.topic) {
                tracing::warn!(stream = %self.ctx.name, subscription = %b.subscription, message = %msg.message, "gateway refused subscription");
                set_state(
                    b,
                    SubscriptionState::Failed {
                        reason: format!("gateway refused it: {}", msg.message),
                    },
                );
            }
        }
        self.publish_counts();
    }
}

impl Handler<Halt> for Subscriptions {
    type Result = ();

    fn handle(&mut self, _: Halt, _ctx: &mut Context<Self>) {
        self.halted = true;
    }
}

impl Handler<Resume> for Subscriptions {
    type Result = ();

    fn handle(&mut self, _: Resume, _ctx: &mut Context<Self>) {
        self.halted = false;
    }
}

impl Handler<InjectPanic> for Subscriptions {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, _ctx: &mut Context<Self>) {
        panic!("chaos: panic injected into Subscriptions");
    }
}
