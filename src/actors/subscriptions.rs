//! Subscriptions: the shell of [`SubsMachine`], plus the consumers of each subscription.
//!
//! The machine decides (what is desired, what to send on which socket, which state each
//! subscription is in, whether a message is delivered); this actor performs it: frames go to the
//! StreamConnection of the socket they were decided for, states and data go to consumers over
//! bounded queues that drop the oldest event for a slow consumer, so the socket reader never
//! waits for a consumer.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;

use super::due_timer::DueTimer;
use super::StreamCtx;
use crate::channel::{self, Push};
use crate::ids::Epoch;
use crate::machine::subscriptions::{Limits, SubsEffect, SubsEvent, SubsMachine, Verdict};
use crate::machine::Now;
use crate::messages::{
    Acknowledged, Deliver, Halt, InjectPanic, Queued, Report, Resume, SendFrame, StreamDown,
    StreamUp, Subscribe, TopicRefused, Unsubscribe,
};
use crate::status::{ActorKind, SubscriptionCounts};
use crate::subscription::{Event, Subscription, SubscriptionState};

/// One desired subscription's consumers.
pub struct Binding {
    /// What the user asked for.
    pub subscription: Subscription,
    consumers: Vec<channel::Sender<Event>>,
}

/// The desired set and its consumers. Owned by the stream supervisor so that it survives a
/// rebuilt Subscriptions actor.
#[derive(Default)]
pub struct Ledger {
    /// What is desired and where each subscription stands.
    pub machine: SubsMachine,
    /// The consumers of each desired subscription, keyed like the machine's desired set.
    pub bindings: BTreeMap<Arc<str>, Binding>,
}

/// The ledger shared between the supervisor and its (possibly rebuilt) Subscriptions actor.
pub type Book = Rc<RefCell<Ledger>>;

/// The shortest delay the tick timer is armed for: even a machine that keeps asking for a tick
/// right away (a zero re-send interval that slipped past validation) is not checked in a loop.
const MIN_TICK_DELAY: Duration = Duration::from_millis(10);

/// The subscriptions actor of one stream.
pub struct Subscriptions {
    ctx: StreamCtx,
    /// Tells the stream supervisor when this actor is dropped.
    _lifeline: super::Lifeline,
    book: Book,
    last_counts: Option<SubscriptionCounts>,
    /// The one timer that feeds [`SubsEvent::Tick`], armed only while the machine has something
    /// due ([`SubsMachine::next_due`]).
    tick: DueTimer,
}

impl Subscriptions {
    /// A Subscriptions actor working on `book`.
    pub fn new(ctx: StreamCtx, book: Book) -> Self {
        Self {
            _lifeline: super::Lifeline::new(ActorKind::Subscriptions, &ctx),
            ctx,
            book,
            last_counts: None,
            tick: DueTimer::default(),
        }
    }

    /// Feeds `event` to the machine and performs what it decides.
    fn feed(&mut self, event: SubsEvent, ctx: &mut Context<Self>) {
        let now = self.ctx.now();
        self.feed_at(event, now, ctx);
    }

    /// Feeds `event` to the machine as of `now` and performs what it decides.
    fn feed_at(&mut self, event: SubsEvent, now: Now, ctx: &mut Context<Self>) {
        let fx = self.book.borrow_mut().machine.on(event, now);
        self.perform(fx, ctx);
    }

    /// (Re)arms the tick timer for the machine's next due time.
    fn arm_tick(&mut self, ctx: &mut Context<Self>) {
        let due = self.book.borrow().machine.next_due();
        let now = self.ctx.now();
        self.tick.arm(
            due,
            now,
            MIN_TICK_DELAY,
            ctx,
            |act| &mut act.tick,
            |act, due, ctx| {
                // Never before the due time, whatever the timer's rounding.
                let now = act.ctx.now().max(due);
                act.feed_at(SubsEvent::Tick, now, ctx);
            },
        );
    }

    fn perform(&mut self, fx: Vec<SubsEffect>, ctx: &mut Context<Self>) {
        for effect in fx {
            match effect {
                SubsEffect::Send(epoch, text) => {
                    if let Some(frames) = self.ctx.frames() {
                        frames.do_send(SendFrame { epoch, text });
                    }
                }
                SubsEffect::State(key, state) => self.tell(&key, state),
                // Data is handed over by the Deliver handler, which holds it.
                SubsEffect::Deliver(_) => {}
            }
        }
        self.publish_counts();
        self.arm_tick(ctx);
    }

    /// Tells the consumers of `key` its new state.
    fn tell(&self, key: &str, state: SubscriptionState) {
        let book = self.book.borrow();
        let Some((topic, b)) = book.bindings.get_key_value(key) else {
            return;
        };
        if let SubscriptionState::Failed { reason } = &state {
            tracing::warn!(stream = %self.ctx.name, subscription = %b.subscription, %reason, "subscription failed");
        }
        for c in &b.consumers {
            c.push(Event::State {
                topic: topic.clone(),
                state: state.clone(),
            });
        }
    }

    fn publish_counts(&mut self) {
        let c = self.book.borrow().machine.counts();
        if self.last_counts != Some(c) {
            self.last_counts = Some(c);
            self.ctx.metrics.subscriptions(&c);
            self.ctx.report(Report::Subscriptions(c));
        }
    }

    /// Forgets `key` (machine and consumers); whether it was desired.
    fn forget(&mut self, key: Arc<str>, ctx: &mut Context<Self>) -> bool {
        let removed = self.book.borrow_mut().bindings.remove(&key).is_some();
        self.feed(SubsEvent::Remove(key), ctx);
        removed
    }
}

impl Actor for Subscriptions {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The socket reader hands data over through the book directly (see `hand_over`).
        self.ctx.peers.borrow_mut().book = Some(self.book.clone());
        self.book.borrow_mut().machine.set_limits(Limits {
            confirm_timeout: self.ctx.config.confirm_timeout,
            max_attempts: self.ctx.config.max_subscribe_attempts,
        });
        self.publish_counts();
        self.arm_tick(ctx);
    }
}

impl Supervised for Subscriptions {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // The restart cancelled the timer; `started` arms a new one.
        self.tick.forget();
        self.ctx.report(Report::Restarted(ActorKind::Subscriptions));
    }
}

impl Handler<Subscribe> for Subscriptions {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) -> Self::Result {
        // All or none: every subscription is checked before any is added. The same topic twice
        // in one call is one subscription: its events arrive once.
        let mut keys = HashSet::new();
        let mut wires = Vec::with_capacity(msg.subscriptions.len());
        for subscription in msg.subscriptions {
            let wire = self.ctx.dialect.subscription(&subscription)?;
            if keys.insert(wire.key.clone()) {
                wires.push((wire, subscription));
            }
        }
        // A message routed without a parse that fails the consumer's parse is a decode error
        // like any other.
        let decode_errors = self.ctx.metrics.decode_errors();
        msg.sender.on_unusable(move || decode_errors.inc());
        // Every one is bound and fed to the machine first; what the machine decides is
        // performed once for the call (the counts published and the tick timer armed once, not
        // once per subscription: `next_due` looks at every desired subscription).
        let now = self.ctx.now();
        let mut fx = Vec::new();
        {
            let mut book = self.book.borrow_mut();
            let Ledger { machine, bindings } = &mut *book;
            for (wire, subscription) in wires {
                let key = wire.key.clone();
                let state = machine
                    .state(&key)
                    .cloned()
                    .unwrap_or(SubscriptionState::Pending);
                msg.sender.push(Event::State {
                    topic: key.clone(),
                    state,
                });
                bindings
                    .entry(key)
                    .or_insert_with(|| Binding {
                        subscription,
                        consumers: Vec::new(),
                    })
                    .consumers
                    .push(msg.sender.clone());
                fx.extend(machine.on(SubsEvent::Add(wire), now));
            }
        }
        self.perform(fx, ctx);
        Ok(())
    }
}

impl Handler<Unsubscribe> for Subscriptions {
    type Result = bool;

    fn handle(&mut self, msg: Unsubscribe, ctx: &mut Context<Self>) -> bool {
        match self.ctx.dialect.subscription(&msg.subscription) {
            Ok(wire) => self.forget(wire.key, ctx),
            Err(_) => false,
        }
    }
}

impl Handler<StreamUp> for Subscriptions {
    type Result = ();

    fn handle(&mut self, msg: StreamUp, ctx: &mut Context<Self>) {
        tracing::debug!(stream = %self.ctx.name, epoch = %msg.epoch, "replaying subscriptions");
        self.feed(SubsEvent::Up(msg.epoch), ctx);
    }
}

impl Handler<StreamDown> for Subscriptions {
    type Result = ();

    fn handle(&mut self, msg: StreamDown, ctx: &mut Context<Self>) {
        self.feed(SubsEvent::Down(msg.epoch), ctx);
    }
}

/// A data message's body on its way to the consumers.
pub(crate) enum Payload {
    /// Parsed by the socket reader: every consumer but the last gets a copy.
    Parsed(serde_json::Value),
    /// JSON text (the received frame): shared by every consumer, each parses it on its own
    /// thread.
    Text(ByteString),
}

/// What handing data over left for the Subscriptions actor to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Handed {
    /// The data confirmed its subscription (its counts changed).
    pub became_active: bool,
    /// Every consumer of the topic is gone: it must really be unsubscribed.
    pub orphaned: bool,
    /// Events dropped for slow consumers.
    pub dropped: u64,
}

/// Hands data on `topic` from socket `epoch` to its consumers if the machine says so; `None`
/// when it does not. Runs wherever the data is (the socket reader calls it on the same thread,
/// without a mailbox hop); what needs the actor afterwards is in the result.
pub(crate) fn hand_over(
    book: &Book,
    epoch: Epoch,
    topic: &Arc<str>,
    payload: Payload,
) -> Option<Handed> {
    let mut book = book.borrow_mut();
    let Verdict::Deliver { became_active } = book.machine.on_data(epoch, topic) else {
        return None;
    };
    let b = book.bindings.get_mut(topic)?;
    b.consumers.retain(|c| !c.is_closed());
    if became_active {
        for c in &b.consumers {
            c.push(Event::State {
                topic: topic.clone(),
                state: SubscriptionState::Active,
            });
        }
    }
    let mut dropped = 0u64;
    let last = b.consumers.len().saturating_sub(1);
    let mut payload = Some(payload);
    for (i, c) in b.consumers.iter().enumerate() {
        let queued = match &payload {
            Some(Payload::Text(text)) => Queued::Text {
                topic: topic.clone(),
                text: text.clone(),
            },
            // The last consumer gets the parsed message itself, the others a copy.
            Some(Payload::Parsed(data)) if i < last => Queued::Event(Event::Data {
                topic: topic.clone(),
                data: data.clone(),
            }),
            _ => match payload.take() {
                Some(Payload::Parsed(data)) => Queued::Event(Event::Data {
                    topic: topic.clone(),
                    data,
                }),
                _ => continue,
            },
        };
        if c.push(queued) == Push::DroppedOldest {
            dropped = dropped.saturating_add(1);
        }
    }
    Some(Handed {
        became_active,
        orphaned: b.consumers.is_empty(),
        dropped,
    })
}

/// Counts events dropped for slow consumers (metrics and status).
pub(crate) fn count_dropped(ctx: &StreamCtx, dropped: u64) {
    if dropped > 0 {
        ctx.metrics.events_dropped().inc_by(dropped);
        ctx.report(Report::EventsDropped(dropped));
    }
}

/// Data was handed over by the socket reader and left work for this actor ([`Handed`]).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Delivered {
    /// The topic.
    pub topic: Arc<str>,
}

impl Subscriptions {
    /// Hands data on `topic` from socket `epoch` to its consumers, if the machine says so.
    fn deliver(
        &mut self,
        epoch: Epoch,
        topic: Arc<str>,
        payload: Payload,
        ctx: &mut Context<Self>,
    ) {
        let Some(handed) = hand_over(&self.book, epoch, &topic, payload) else {
            return;
        };
        count_dropped(&self.ctx, handed.dropped);
        if handed.orphaned {
            // Every consumer is gone: really unsubscribe.
            self.forget(topic, ctx);
        } else if handed.became_active {
            self.publish_counts();
            // A confirmed subscription is no longer waiting for its timeout.
            self.arm_tick(ctx);
        }
    }
}

impl Handler<Delivered> for Subscriptions {
    type Result = ();

    fn handle(&mut self, msg: Delivered, ctx: &mut Context<Self>) {
        // Checked again: a consumer may have subscribed since the data was handed over.
        let orphaned = self
            .book
            .borrow_mut()
            .bindings
            .get_mut(&msg.topic)
            .is_some_and(|b| {
                b.consumers.retain(|c| !c.is_closed());
                b.consumers.is_empty()
            });
        if orphaned {
            self.forget(msg.topic, ctx);
        } else {
            self.publish_counts();
            // Data confirmed the subscription on the socket reader's side: what is due changed.
            self.arm_tick(ctx);
        }
    }
}

impl Handler<Deliver> for Subscriptions {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        self.deliver(msg.epoch, msg.topic, Payload::Parsed(msg.data), ctx);
    }
}

impl Handler<Acknowledged> for Subscriptions {
    type Result = ();

    fn handle(&mut self, msg: Acknowledged, ctx: &mut Context<Self>) {
        self.feed(SubsEvent::Ack(msg.epoch, msg.id, msg.refused), ctx);
    }
}

impl Handler<TopicRefused> for Subscriptions {
    type Result = ();

    fn handle(&mut self, msg: TopicRefused, ctx: &mut Context<Self>) {
        self.feed(SubsEvent::Refused(msg.epoch, msg.topic, msg.message), ctx);
    }
}

impl Handler<Halt> for Subscriptions {
    type Result = ();

    fn handle(&mut self, _: Halt, ctx: &mut Context<Self>) {
        self.feed(SubsEvent::Halt, ctx);
    }
}

impl Handler<Resume> for Subscriptions {
    type Result = ();

    fn handle(&mut self, _: Resume, ctx: &mut Context<Self>) {
        self.feed(SubsEvent::Resume, ctx);
    }
}

impl Handler<InjectPanic> for Subscriptions {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, _ctx: &mut Context<Self>) {
        panic!("chaos: panic injected into Subscriptions");
    }
}
