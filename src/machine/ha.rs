//! Active/standby replicas on a lease: who may talk to the brokerage, and until when.
//!
//! The replica that won the election holds a lease it keeps alive. The lease outlives a dead
//! leader by at most its TTL on the server; the leader itself stops talking to the gateway (it
//! *fences* itself) once half of the TTL has passed since the *sending* of its last keepalive
//! that succeeded, so by the time the server could give the lease to another replica this one
//! has long stopped. The election key's revision is the fencing token: it only grows from one
//! leader to the next. The etcd shell (`crate::ha`, feature `ha`) turns etcd answers and a
//! ticker into [`HaEvent`]s and performs the [`HaEffect`]s.

use std::time::Duration;

use super::Now;

/// The state of this replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaState {
    /// Not the leader (campaigning, or etcd unreachable): exclusive streams in standby.
    Standby,
    /// The leader: exclusive streams run while the lease is fresh.
    Leader {
        /// The fencing token (the election key's creation revision).
        token: u64,
        /// When the last keepalive that succeeded was sent.
        renewed_at: Now,
    },
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaEvent {
    /// The campaign was won with this token; `renewed_at` is when the last successful grant or
    /// keepalive of the lease was sent.
    Elected {
        /// The fencing token.
        token: u64,
        /// When the last successful renewal was sent.
        renewed_at: Now,
    },
    /// A keepalive sent at `sent_at` was answered with a live lease.
    Renewed {
        /// When it was sent.
        sent_at: Now,
    },
    /// The lease is gone (expired, revoked, or etcd answered it has no TTL left).
    Lost,
    /// Time passes (the shell ticks a few times per second).
    Tick,
}

/// Why this replica stopped leading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceReason {
    /// No keepalive succeeded for half the TTL.
    KeepaliveOverdue,
    /// etcd said the lease is gone.
    LeaseLost,
}

impl FenceReason {
    /// A short snake-case name (logs).
    pub fn as_str(self) -> &'static str {
        match self {
            FenceReason::KeepaliveOverdue => "keepalive_overdue",
            FenceReason::LeaseLost => "lease_lost",
        }
    }
}

/// What the shell must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaEffect {
    /// Run the exclusive streams; gateway calls carry `token` and pass until `until`.
    Lead {
        /// The fencing token.
        token: u64,
        /// The end of the self-granted right to talk.
        until: Now,
    },
    /// Still the leader: calls pass until `until` now.
    Extend {
        /// The fencing token.
        token: u64,
        /// The new end.
        until: Now,
    },
    /// Stop the exclusive streams now (standby) and close the gate.
    Fence(FenceReason),
    /// Drop this lease and campaign again with a fresh one (after [`HaEffect::Fence`]).
    Recampaign,
}

/// The decision core of one replica.
#[derive(Clone, Debug)]
pub struct HaMachine {
    state: HaState,
    fence_after: Duration,
}

impl HaMachine {
    /// A standby replica whose lease has this TTL (fences after TTL/2 without renewal).
    pub fn new(ttl: Duration) -> Self {
        Self {
            state: HaState::Standby,
            fence_after: ttl / 2,
        }
    }

    /// How often the shell should send a keepalive (TTL/6: three tries before fencing).
    pub fn renew_every(&self) -> Duration {
        self.fence_after / 3
    }

    /// The current state.
    pub fn state(&self) -> HaState {
        self.state
    }

    /// Feeds one event at `now`.
    pub fn on(&mut self, event: HaEvent, now: Now) -> Vec<HaEffect> {
        match (self.state, event) {
            (HaState::Standby, HaEvent::Elected { token, renewed_at }) => {
                let until = renewed_at.saturating_add(self.fence_after);
                if now >= until {
                    // Won with a lease that may already be expiring: start over.
                    return vec![HaEffect::Recampaign];
                }
                self.state = HaState::Leader { token, renewed_at };
                vec![HaEffect::Lead { token, until }]
            }
            (HaState::Leader { token, renewed_at }, HaEvent::Renewed { sent_at }) => {
                let renewed_at = renewed_at.max(sent_at);
                self.state = HaState::Leader { token, renewed_at };
                vec![HaEffect::Extend {
                    token,
                    until: renewed_at.saturating_add(self.fence_after),
                }]
            }
            (HaState::Leader { renewed_at, .. }, HaEvent::Tick) => {
                if now >= renewed_at.saturating_add(self.fence_after) {
                    self.state = HaState::Standby;
                    vec![
                        HaEffect::Fence(FenceReason::KeepaliveOverdue),
                        HaEffect::Recampaign,
                    ]
                } else {
                    Vec::new()
                }
            }
            (HaState::Leader { .. }, HaEvent::Lost) => {
                self.state = HaState::Standby;
                vec![
                    HaEffect::Fence(FenceReason::LeaseLost),
                    HaEffect::Recampaign,
                ]
            }
            (HaState::Leader { token, .. }, HaEvent::Elected { renewed_at, .. }) => {
                // Already leading: the same lease, nothing new but the renewal.
                self.on(
                    HaEvent::Renewed {
                        sent_at: renewed_at,
                    },
                    now,
                )
                .into_iter()
                .map(|e| match e {
                    HaEffect::Extend { until, .. } => HaEffect::Extend { token, until },
                    other => other,
                })
                .collect()
            }
            (HaState::Standby, HaEvent::Lost) => vec![HaEffect::Recampaign],
            (HaState::Standby, HaEvent::Renewed { .. } | HaEvent::Tick) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    fn s(secs: u64) -> Now {
        Duration::from_secs(secs)
    }

    #[test]
    fn a_won_election_leads_until_half_the_ttl_after_the_last_renewal_was_sent() {
        let mut m = HaMachine::new(TTL);
        let fx = m.on(
            HaEvent::Elected {
                token: 7,
                renewed_at: s(1),
            },
            s(2),
        );
        assert_eq!(
            fx,
            vec![HaEffect::Lead {
                token: 7,
                until: s(6)
            }]
        );
    }

    #[test]
    fn a_leader_without_renewal_fences_itself_at_half_the_ttl_and_campaigns_again() {
        let mut m = HaMachine::new(TTL);
        m.on(
            HaEvent::Elected {
                token: 7,
                renewed_at: s(0),
            },
            s(0),
        );
        assert!(m.on(HaEvent::Tick, Duration::from_millis(4_999)).is_empty());
        assert_eq!(
            m.on(HaEvent::Tick, s(5)),
            vec![
                HaEffect::Fence(FenceReason::KeepaliveOverdue),
                HaEffect::Recampaign
            ]
        );
        assert_eq!(m.state(), HaState::Standby);
        // A late keepalive answer does not make it leader again: only an election does.
        assert!(m.on(HaEvent::Renewed { sent_at: s(4) }, s(6)).is_empty());
        assert_eq!(m.state(), HaState::Standby);
    }

    #[test]
    fn renewals_extend_from_when_they_were_sent_never_backwards() {
        let mut m = HaMachine::new(TTL);
        m.on(
            HaEvent::Elected {
                token: 3,
                renewed_at: s(0),
            },
            s(0),
        );
        assert_eq!(
            m.on(HaEvent::Renewed { sent_at: s(3) }, s(4)),
            vec![HaEffect::Extend {
                token: 3,
                until: s(8)
            }]
        );
        assert_eq!(
            m.on(HaEvent::Renewed { sent_at: s(2) }, s(4)),
            vec![HaEffect::Extend {
                token: 3,
                until: s(8)
            }]
        );
        assert!(m.on(HaEvent::Tick, s(7)).is_empty());
        assert_eq!(m.on(HaEvent::Tick, s(8)).len(), 2);
    }

    #[test]
    fn a_lost_lease_fences_at_once() {
        let mut m = HaMachine::new(TTL);
        m.on(
            HaEvent::Elected {
                token: 3,
                renewed_at: s(0),
            },
            s(0),
        );
        assert_eq!(
            m.on(HaEvent::Lost, s(1)),
            vec![
                HaEffect::Fence(FenceReason::LeaseLost),
                HaEffect::Recampaign
            ]
        );
    }

    #[test]
    fn an_election_won_on_a_stale_lease_is_not_taken() {
        let mut m = HaMachine::new(TTL);
        assert_eq!(
            m.on(
                HaEvent::Elected {
                    token: 9,
                    renewed_at: s(0),
                },
                s(5),
            ),
            vec![HaEffect::Recampaign]
        );
        assert_eq!(m.state(), HaState::Standby);
    }

    #[test]
    fn keepalives_are_sent_three_times_before_the_fence() {
        assert_eq!(HaMachine::new(TTL).renew_every(), TTL / 6);
    }
}
