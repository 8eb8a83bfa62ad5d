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

/// What becomes of one data message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not desired, or from a socket that is not the live one: dropped.
    Drop,
    /// Handed to the consumers; `became_active` when it confirmed the subscription.
    Deliver {
        /// The message confirmed the subscription (its consumers learn it is Active).
        became_active: bool,
    },
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

    /// Where `key` stands, when it is desired.
    pub fn state(&self, key: &str) -> Option<&SubscriptionState> {
        self.desired.get(key).map(|d| &d.state)
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

    /// The earliest time at which [`SubsEvent::Tick`] would do something (re-send an
    /// unconfirmed subscription, mark it failed, or refresh one the gateway expires); `None`
    /// when no tick can have an effect until another event arrives. A shell arms one timer for
    /// it instead of ticking periodically; ticking earlier is harmless (nothing happens).
    pub fn next_due(&self) -> Option<Now> {
        let Link::Up(_) = self.link else {
            return None;
        };
        let confirm = self.limits.confirm_timeout;
        self.desired
            .values()
            .filter_map(|d| {
                let sent = d.last_sent?;
                match d.state {
                    SubscriptionState::Sent { .. } => sent.checked_add(confirm),
                    SubscriptionState::Active => sent.checked_add(d.wire.resend_every?),
                    SubscriptionState::Pending | SubscriptionState::Failed { .. } => None,
                }
            })
            .min()
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
            SubsEvent::Data(epoch, key) => match self.on_data(epoch, &key) {
                Verdict::Drop => {}
                Verdict::Deliver { became_active } => {
                    if became_active {
                        fx.push(SubsEffect::State(key.clone(), SubscriptionState::Active));
                    }
                    fx.push(SubsEffect::Deliver(key));
                }
            },
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

    /// The data path: whether data on `key` from socket `epoch` is delivered, and whether it
    /// confirmed the subscription. The same decision as [`SubsEvent::Data`], without allocating.
    pub fn on_data(&mut self, epoch: Epoch, key: &str) -> Verdict {
        if !self.up(epoch) {
            return Verdict::Drop;
        }
        match self.desired.get_mut(key) {
            None => Verdict::Drop,
            Some(d) => {
                let became_active = d.state != SubscriptionState::Active;
                d.state = SubscriptionState::Active;
                Verdict::Deliver { became_active }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CONFIRM: Duration = Duration::from_secs(10);

    fn secs(s: u64) -> Now {
        Duration::from_secs(s)
    }

    fn wire(
        topic: &str,
        confirmation: Confirmation,
        resend_every: Option<u64>,
    ) -> SubscriptionWire {
        SubscriptionWire {
            key: topic.into(),
            subscribe: format!("sub:{topic}"),
            unsubscribe: Some(format!("unsub:{topic}")),
            resend_every: resend_every.map(Duration::from_secs),
            confirmation,
        }
    }

    fn machine() -> SubsMachine {
        SubsMachine::new(Limits {
            confirm_timeout: CONFIRM,
            max_attempts: 3,
        })
    }

    fn up() -> Epoch {
        Epoch::NONE.next()
    }

    #[test]
    fn nothing_is_due_while_no_socket_is_up() {
        let mut m = machine();
        assert_eq!(m.next_due(), None, "an empty machine");
        m.on(
            SubsEvent::Add(wire("a", Confirmation::FirstMessage, None)),
            secs(1),
        );
        assert_eq!(
            m.next_due(),
            None,
            "desired but never sent: waits for a socket"
        );
        m.on(SubsEvent::Up(up()), secs(2));
        assert!(m.next_due().is_some());
        m.on(SubsEvent::Down(up()), secs(3));
        assert_eq!(m.next_due(), None, "the socket went down");
        m.on(SubsEvent::Up(up().next()), secs(4));
        m.on(SubsEvent::Halt, secs(5));
        assert_eq!(m.next_due(), None, "halted");
    }

    #[test]
    fn nothing_is_due_when_every_subscription_is_active_without_a_resend_interval() {
        let mut m = machine();
        m.on(SubsEvent::Up(up()), secs(1));
        m.on(
            SubsEvent::Add(wire("a", Confirmation::Immediate, None)),
            secs(2),
        );
        m.on(
            SubsEvent::Add(wire("b", Confirmation::FirstMessage, None)),
            secs(3),
        );
        m.on_data(up(), "b");
        assert_eq!(m.next_due(), None);
        assert!(m.on(SubsEvent::Tick, secs(1_000_000)).is_empty());
    }

    #[test]
    fn a_sent_subscription_is_due_when_its_confirmation_times_out() {
        let mut m = machine();
        m.on(SubsEvent::Up(up()), secs(1));
        m.on(
            SubsEvent::Add(wire("a", Confirmation::FirstMessage, None)),
            secs(7),
        );
        assert_eq!(m.next_due(), Some(secs(7) + CONFIRM));
        m.on(
            SubsEvent::Add(wire("b", Confirmation::Ack("1".into()), None)),
            secs(9),
        );
        assert_eq!(m.next_due(), Some(secs(7) + CONFIRM), "the earliest one");
        // The re-send restarts its clock.
        m.on(SubsEvent::Tick, secs(7) + CONFIRM);
        assert_eq!(m.next_due(), Some(secs(9) + CONFIRM));
    }

    #[test]
    fn an_active_subscription_with_a_resend_interval_is_due_at_its_refresh() {
        let mut m = machine();
        m.on(SubsEvent::Up(up()), secs(1));
        m.on(
            SubsEvent::Add(wire("a", Confirmation::Immediate, Some(540))),
            secs(2),
        );
        assert_eq!(m.next_due(), Some(secs(2 + 540)));
        let fx = m.on(SubsEvent::Tick, secs(2 + 540));
        assert_eq!(fx, vec![SubsEffect::Send(up(), "sub:a".into())]);
        assert_eq!(m.next_due(), Some(secs(2 + 540 + 540)));
    }

    #[test]
    fn a_failed_subscription_is_never_due() {
        let mut m = machine();
        m.on(SubsEvent::Up(up()), secs(0));
        m.on(
            SubsEvent::Add(wire("a", Confirmation::FirstMessage, None)),
            secs(0),
        );
        let mut ticks = 0;
        while let Some(due) = m.next_due() {
            m.on(SubsEvent::Tick, due);
            ticks += 1;
            assert!(ticks <= 3, "bounded by max_attempts");
        }
        assert!(matches!(
            m.state("a"),
            Some(SubscriptionState::Failed { .. })
        ));
    }

    #[test]
    fn a_due_time_past_the_end_of_time_is_never_due() {
        let mut m = SubsMachine::new(Limits {
            confirm_timeout: Duration::MAX,
            max_attempts: 3,
        });
        m.on(SubsEvent::Up(up()), secs(1));
        m.on(
            SubsEvent::Add(wire("a", Confirmation::FirstMessage, None)),
            secs(1),
        );
        assert_eq!(m.next_due(), None);
    }

    /// Subscriptions in every state a tick looks at, built from a script of small steps.
    fn scripted(steps: &[(u8, u8, u16)]) -> (SubsMachine, Now) {
        let mut m = machine();
        let mut now = Now::ZERO;
        let mut epoch = Epoch::NONE;
        for &(what, topic, dt) in steps {
            now += Duration::from_millis(u64::from(dt) * 10);
            let key = format!("t{}", topic % 4);
            let confirmation = match topic % 3 {
                0 => Confirmation::Immediate,
                1 => Confirmation::FirstMessage,
                _ => Confirmation::Ack(key.clone()),
            };
            let resend = (topic % 2 == 0).then_some(u64::from(topic % 7) + 1);
            match what % 7 {
                0 => {
                    epoch = epoch.next();
                    m.on(SubsEvent::Up(epoch), now);
                }
                1 => {
                    m.on(SubsEvent::Down(epoch), now);
                }
                2 | 3 => {
                    m.on(SubsEvent::Add(wire(&key, confirmation, resend)), now);
                }
                4 => {
                    m.on_data(epoch, &key);
                }
                5 => {
                    m.on(SubsEvent::Tick, now);
                }
                _ => {
                    m.on(SubsEvent::Remove(key.as_str().into()), now);
                }
            }
        }
        (m, now)
    }

    proptest! {
        /// A tick before `next_due` does nothing; a tick at it does something. So one timer at
        /// `next_due` is exactly as good as ticking every second, and `None` means no timer.
        #[test]
        fn ticking_before_next_due_does_nothing_and_at_it_does_something(
            steps in proptest::collection::vec((any::<u8>(), any::<u8>(), 0u16..200), 0..40),
            early in 0u64..30_000,
        ) {
            let (m, now) = scripted(&steps);
            let due = m.next_due();
            // Any time before the due time (or any time at all when nothing is due).
            let before = match due {
                Some(due) => due.saturating_sub(Duration::from_millis(early + 1)),
                None => now + Duration::from_millis(early * 1000),
            };
            if due.map_or(true, |due| before < due) {
                let mut m2 = clone(&m);
                let fx = m2.on(SubsEvent::Tick, before);
                prop_assert!(fx.is_empty(), "tick at {before:?} before due {due:?}: {fx:?}");
                prop_assert_eq!(m2.next_due(), due, "an idle tick changes nothing");
            }
            if let Some(due) = due {
                let mut m3 = clone(&m);
                let fx = m3.on(SubsEvent::Tick, due);
                prop_assert!(!fx.is_empty(), "tick at due {due:?} did nothing");
            }
        }
    }

    fn clone(m: &SubsMachine) -> SubsMachine {
        SubsMachine {
            link: m.link,
            desired: m.desired.clone(),
            limits: m.limits,
        }
    }
}
