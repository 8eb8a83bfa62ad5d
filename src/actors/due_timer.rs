//! One timer for a machine's next due time: the actor asks its machine when something is next
//! due after every event and keeps a single timer armed for that moment, instead of a periodic
//! check.

use std::time::Duration;

use actix::prelude::*;

use crate::machine::Now;

/// A single timer armed for a due time of the stream's machine clock.
#[derive(Debug, Default)]
pub struct DueTimer {
    armed: Option<(Now, SpawnHandle)>,
}

impl DueTimer {
    /// Arms the timer for `due`, `now` being the machine clock's time and the delay at least
    /// `floor`. Left alone when it is already armed for `due`; a timer for another time is
    /// cancelled; `None` leaves none armed. When it fires, the timer `slot` of the actor is
    /// cleared and `fire` gets the actor, the due time and the context.
    pub fn arm<A>(
        &mut self,
        due: Option<Now>,
        now: Now,
        floor: Duration,
        ctx: &mut Context<A>,
        slot: fn(&mut A) -> &mut DueTimer,
        fire: fn(&mut A, Now, &mut Context<A>),
    ) where
        A: Actor<Context = Context<A>>,
    {
        if self.armed.map(|(at, _)| at) == due {
            return;
        }
        if let Some((_, handle)) = self.armed.take() {
            ctx.cancel_future(handle);
        }
        let Some(due) = due else {
            return;
        };
        let delay = due.saturating_sub(now).max(floor);
        let handle = ctx.run_later(delay, move |act, ctx| {
            slot(act).armed = None;
            fire(act, due, ctx);
        });
        self.armed = Some((due, handle));
    }

    /// Forgets the timer without cancelling it: a restarted context has already dropped it.
    pub fn forget(&mut self) {
        self.armed = None;
    }
}
