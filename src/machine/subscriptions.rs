//! The desired-state machine of Subscriptions.
//!
//! What the user wants is kept independent of any socket: every binding becomes pending when the
//! socket goes down and is replayed on every new Ready socket; each is confirmed the dialect's way
//! (IBKR: the first message on its topic), re-sent when unconfirmed (bounded), and re-sent
//! periodically where the gateway expires streams (IBKR `smd`). Data is delivered only for a topic
//! that is desired, on the socket that is up: nothing arrives after an unsubscribe returned.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::Now;
use crate::dialect::{Confirmation, SubscriptionWire};
use crate::ids::Epoch;
use crate::status::SubscriptionCounts;
use crate::subscription::SubscriptionState;

/// The socket as Subscriptions sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// No Ready socket.
    Down,
    /// Socket `epoch` is Ready.
    Up(Epoch),
    /// Stopped for good until resumed (remembers a socket announced meanwhile).
    Halted(Option<Epoch>),
}

/// One desired subscription.
#[derive(Clone, Debug)]
pub struct Desired {
    /// Its wire form.
    pub wire: SubscriptionWire,
    /// Where it stands on the current socket.
    pub state: SubscriptionState,
    last_sent: Option<Now>,
}

/// What happens to the machine.
#[derive(Debug)]
pub enum SubsEvent {
    /// The user subscribes (a new key, or a further consumer of one).
    Add(SubscriptionWire),
    /// The user unsubscribes.
    Remove(Arc<str>),
    /// Socket `epoch` is Ready.
    Up(Epoch),
    /// Socket `epoch` is gone.
    Down(Epoch),
    /// Data arrived on `topic` on socket `epoch`.
    Data(Epoch, Arc<str>),
    /// The gateway acknowledged (or refused, with a reason) subscription id `id` on `epoch`.
    Ack(Epoch, String, Option<String>),
    /// The gateway refused a topic (or command prefix) on `epoch`.
    Refused(Epoch, String, String),
    /// The periodic check for confirmation timeouts and re-sends.
    Tick,
    /// Stop for good.
    Halt,
    /// Start again after a halt.
    Resume,
}

/// What the shell must do.
#[derive(Debug, PartialEq)]
pub enum SubsEffect {
    /// Write this frame on socket `epoch`.
    Send(Epoch, String),
    /// Tell the consumers of `key` its new state.
    State(Arc<str>, SubscriptionState),
    /// Hand the data just received on `key` to its consumers.
    Deliver(Arc<str>),
}

/// Limits on confirmation.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a subscription may stay unconfirmed before it is re-sent.
    pub confirm_timeout: Duration,
    /// How many times it is sent on one socket before it is marked failed.
    pub max_attempts: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            confirm_timeout: Duration::from_secs(10),
            max_attempts: 3,
        }
    }
}

/// The desired-state machine.
#[derive(Debug)]
pub struct SubsMachine {
    link: Link,
    desired: BTreeMap<Arc<str>, Desired>,
    limits: Limits,
}

impl Default for SubsMachine {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl SubsMachine {
    /// An empty desired set.
    pub fn new(limits: Limits) -> Self {
        Self {
            link: Link::Down,
            desired: BTreeMap::new(),
            limits,
        }
    }

    /// Sets the limits (a rebuilt actor re-applies its configuration).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The socket as this machine sees it.
    pub fn link(&self) -> Link {
        self.link
    }

    /// Whether `key` is desired.
    pub fn wants(&self, key: &str) -> bool {
        self.desired.contains_key(key)
    }

    /// The desired set.
    pub fn desired(&self) -> impl Iterator<Item = (&Arc<str>, &Desired)> {
        self.desired.iter()
    }

    /// Counts by state.
    pub fn counts(&self) -> SubscriptionCounts {
        let mut c = SubscriptionCounts {
            desired: self.desired.len(),
            ..Default::default()
        };
        for d in self.desired.values() {
            match d.state {
                SubscriptionState::Active => c.active += 1,
                SubscriptionState::Pending | SubscriptionState::Sent { .. } => c.pending += 1,
                SubscriptionState::Failed { .. } => c.failed += 1,
            }
        }
        c
    }

    /// Feeds one event; returns what to do.
    pub fn on(&mut self, event: SubsEvent, now: Now) -> Vec<SubsEffect> {
        let mut fx = Vec::new();
        match event {
            SubsEvent::Add(wire) => {
                let key = wire.key.clone();
                if !self.desired.contains_key(&key) {
                    self.desired.insert(
                        key.clone(),
                        Desired {
                            wire,
                            state: SubscriptionState::Pending,
                            last_sent: None,
                        },
                    );
                    if let Link::Up(epoch) = self.link {
                        self.subscribe_now(&key, epoch, now, &mut fx);
                    }
                }
            }
            SubsEvent::Remove(key) => {
                if let Some(d) = self.desired.remove(&key) {
                    if let (Link::Up(epoch), Some(frame)) = (self.link, d.wire.unsubscribe) {
                        fx.push(SubsEffect::Send(epoch, frame));
                    }
                }
            }
            SubsEvent::Up(epoch) => match self.link {
                Link::Up(e) if e > epoch => {}
                Link::Halted(_) => self.link = Link::Halted(Some(epoch)),
                _ => {
                    self.link = Link::Up(epoch);
                    let keys: Vec<Arc<str>> = self.desired.keys().cloned().collect();
                    for key in keys {
                        self.set(&key, SubscriptionState::Pending, &mut fx);
                        self.subscribe_now(&key, epoch, now, &mut fx);
                    }
                }
            },
            SubsEvent::Down(epoch) => {
                if matches!(self.link, Link::Up(e) if e > epoch) {
                    return fx; // about an older socket
                }
                self.link = match self.link {
                    Link::Halted(_) => Link::Halted(None),
                    _ => Link::Down,
                };
                let keys: Vec<Arc<str>> = self.desired.keys().cloned().collect();
                for key in keys {
                    self.set(&key, SubscriptionState::Pending, &mut fx);
                }
            }
            SubsEvent::Data(epoch, key) => {
                if self.up(epoch) && self.desired.contains_key(&key) {
                    self.set(&key, SubscriptionState::Active, &mut fx);
                    fx.push(SubsEffect::Deliver(key));
                }
            }
            SubsEvent::Ack(epoch, id, refused) => {
                if !self.up(epoch) {
                    return fx;
                }
                let keys: Vec<Arc<str>> = self
                    .desired
                    .iter()
                    .filter(|(_, d)| d.wire.confirmation == Confirmation::Ack(id.clone()))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in keys {
                    let state = match &refused {
                        None => SubscriptionState::Active,
                        Some(reason) => SubscriptionState::Failed {
                            reason: format!("gateway refused it: {reason}"),
                        },
                    };
                    self.set(&key, state, &mut fx);
                }
            }
            SubsEvent::Refused(epoch, topic, message) => {
                if !self.up(epoch) || topic.is_empty() {
                    return fx;
                }
                let keys: Vec<Arc<str>> = self
                    .desired
                    .iter()
                    .filter(|(k, d)| ***k == *topic || d.wire.subscribe.starts_with(&topic))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in keys {
                    let reason = format!("gateway refused it: {message}");
                    self.set(&key, SubscriptionState::Failed { reason }, &mut fx);
                }
            }
            SubsEvent::Tick => self.tick(now, &mut fx),
            SubsEvent::Halt => {
                self.link = match self.link {
                    Link::Up(e) => Link::Halted(Some(e)),
                    other => Link::Halted(match other {
                        Link::Halted(e) => e,
                        _ => None,
                    }),
                };
            }
            SubsEvent::Resume => {
                if let Link::Halted(_) = self.link {
                    // Replay waits for the next Ready socket.
                    self.link = Link::Down;
                }
            }
        }
        fx
    }

    fn up(&self, epoch: Epoch) -> bool {
        matches!(self.link, Link::Up(e) | Link::Halted(Some(e)) if e == epoch)
    }

    fn set(&mut self, key: &Arc<str>, state: SubscriptionState, fx: &mut Vec<SubsEffect>) {
        if let Some(d) = self.desired.get_mut(key) {
            if d.state != state {
                d.state = state.clone();
                fx.push(SubsEffect::State(key.clone(), state));
            }
        }
    }

    /// Sends the subscribe frame of `key` and moves it to Sent (or Active when never acknowledged).
    fn subscribe_now(&mut self, key: &Arc<str>, epoch: Epoch, now: Now, fx: &mut Vec<SubsEffect>) {
        let Some(d) = self.desired.get_mut(key) else {
            return;
        };
        let attempt = match d.state {
            SubscriptionState::Sent { attempt } => attempt.saturating_add(1),
            _ => 1,
        };
        d.last_sent = Some(now);
        let next = match d.wire.confirmation {
            Confirmation::Immediate => SubscriptionState::Active,
            Confirmation::FirstMessage | Confirmation::Ack(_) => {
                SubscriptionState::Sent { attempt }
            }
        };
        let frame = d.wire.subscribe.clone();
        self.set(key, next, fx);
        fx.push(SubsEffect::Send(epoch, frame));
    }

    fn tick(&mut self, now: Now, fx: &mut Vec<SubsEffect>) {
        let Link::Up(epoch) = self.link else {
            return;
        };
        let confirm = self.limits.confirm_timeout;
        let max_attempts = self.limits.max_attempts.max(1);
        let mut failed = Vec::new();
        let mut resend = Vec::new();
        let mut refresh = Vec::new();
        for (key, d) in &self.desired {
            let since = d.last_sent.map(|t| now.saturating_sub(t));
            match (&d.state, since) {
                (SubscriptionState::Sent { attempt }, Some(since)) if since >= confirm => {
                    if *attempt >= max_attempts {
                        failed.push((key.clone(), *attempt));
                    } else {
                        resend.push(key.clone());
                    }
                }
                (SubscriptionState::Active, Some(since))
                    if d.wire.resend_every.is_some_and(|every| since >= every) =>
                {
                    refresh.push(key.clone());
                }
                _ => {}
            }
        }
        for (key, attempt) in failed {
            let reason = format!("not confirmed after {attempt} attempts");
            self.set(&key, SubscriptionState::Failed { reason }, fx);
        }
        for key in resend {
            self.subscribe_now(&key, epoch, now, fx);
        }
        for key in refresh {
            // Re-sent before the gateway expires it; it stays Active.
            if let Some(d) = self.desired.get_mut(&key) {
                d.last_sent = Some(now);
                fx.push(SubsEffect::Send(epoch, d.wire.subscribe.clone()));
            }
        }
    }
}
