//! Restart intensity, OTP style: more than N restarts of one actor within T escalate to a hard
//! failure of the stream instead of looping.

use std::collections::VecDeque;

use super::Now;
use crate::config::RestartIntensity;
use crate::failure::Failure;
use crate::status::ActorKind;

/// Why an actor restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The actor restarted itself to start over (a reconnect, a lost session).
    Planned,
    /// The actor died (a panic) and was rebuilt.
    Died,
}

/// The restart log of one stream.
#[derive(Debug)]
pub struct Intensity {
    limit: RestartIntensity,
    log: [VecDeque<Now>; 4],
}

impl Intensity {
    /// A log with this limit.
    pub fn new(limit: RestartIntensity) -> Self {
        Self {
            limit,
            log: Default::default(),
        }
    }

    /// Records a restart; returns the hard failure when the limit is exceeded. Only deaths
    /// count: a planned restart answers a remote failure and is paced by backoff, and a soft
    /// failure must never end a stream.
    pub fn restarted(&mut self, actor: ActorKind, cause: Cause, now: Now) -> Option<Failure> {
        if cause == Cause::Planned {
            return None;
        }
        let index = ActorKind::ALL.iter().position(|k| *k == actor).unwrap_or(0);
        let log = &mut self.log[index];
        log.push_back(now);
        while log
            .front()
            .is_some_and(|t| now.saturating_sub(*t) > self.limit.window)
        {
            log.pop_front();
        }
        let restarts = u32::try_from(log.len()).unwrap_or(u32::MAX);
        (restarts > self.limit.max_restarts).then(|| Failure::RestartIntensity {
            actor: actor.as_str(),
            restarts,
            window: self.limit.window,
        })
    }

    /// Forgets every restart (after a resume).
    pub fn clear(&mut self) {
        self.log.iter_mut().for_each(VecDeque::clear);
    }
}
