//! The model gateway: what a server of each dialect answers, under the faults in force.

use std::collections::HashSet;
use std::time::Duration;

use super::schedule::{FaultKind, SimDialect};
use crate::failure::{Endpoint, Failure};
use crate::ids::{Epoch, Generation};
use crate::machine::session::Repair;

/// Conditions in force (a count each, since faults of one kind can overlap).
#[derive(Debug, Default)]
pub struct Conditions {
    down: u32,
    server_errors: u32,
    rate_limited: Vec<Option<Duration>>,
    expires_zero: u32,
    expires_huge: u32,
    needs_login: u32,
    competing: u32,
    refuse_account: u32,
    upgrade_hang: Vec<Duration>,
}

/// The model gateway of one stream.
#[derive(Debug)]
pub struct Gateway {
    dialect: SimDialect,
    lifetime: Duration,
    now_in: Conditions,
    /// IBKR: the brokerage session is authenticated.
    authenticated: bool,
    /// IBKR: REST says authenticated, sockets say not.
    half_dead: bool,
    /// Credentials below this generation are revoked.
    valid_from: Generation,
    /// Generations keepwire was told were rejected.
    pub rejected: HashSet<Generation>,
    /// Tickets issued and not yet presented.
    tickets: HashSet<u64>,
    next_ticket: u64,
    /// The socket the gateway holds open, if any.
    pub open: Option<Epoch>,
    /// Requests answered, by kind.
    pub requests: u64,
}

/// What an upgrade gets.
pub enum Upgrade {
    /// The socket opens after this long.
    Open(Duration),
    /// Refused.
    Refused(Failure),
}

impl Gateway {
    /// A healthy gateway of `dialect` issuing credentials valid for `lifetime`.
    pub fn new(dialect: SimDialect, lifetime: Duration) -> Self {
        Self {
            dialect,
            lifetime,
            now_in: Conditions::default(),
            authenticated: true,
            half_dead: false,
            valid_from: Generation::NONE,
            rejected: HashSet::new(),
            tickets: HashSet::new(),
            next_ticket: 0,
            open: None,
            requests: 0,
        }
    }

    /// A fault starts (`on`) or ends.
    pub fn apply(&mut self, kind: FaultKind, on: bool, last_issued: Generation) {
        fn count(c: &mut u32, on: bool) {
            *c = if on {
                c.saturating_add(1)
            } else {
                c.saturating_sub(1)
            };
        }
        fn list<T: PartialEq>(v: &mut Vec<T>, item: T, on: bool) {
            if on {
                v.push(item);
            } else if let Some(i) = v.iter().position(|x| *x == item) {
                v.remove(i);
            }
        }
        let c = &mut self.now_in;
        match kind {
            FaultKind::Down => count(&mut c.down, on),
            FaultKind::ServerErrors => count(&mut c.server_errors, on),
            FaultKind::RateLimited(d) => list(&mut c.rate_limited, d, on),
            FaultKind::ExpiresZero => count(&mut c.expires_zero, on),
            FaultKind::ExpiresHuge => count(&mut c.expires_huge, on),
            FaultKind::NeedsLogin => {
                count(&mut c.needs_login, on);
                if on {
                    self.authenticated = false;
                }
            }
            FaultKind::Competing => count(&mut c.competing, on),
            FaultKind::RefuseAccount => count(&mut c.refuse_account, on),
            FaultKind::UpgradeHang(d) => list(&mut c.upgrade_hang, d, on),
            FaultKind::Revoke if on => self.valid_from = last_issued.next(),
            FaultKind::SessionLost if on => self.authenticated = false,
            FaultKind::HalfDead if on => self.half_dead = true,
            // A half-dead gateway heals by repair or on its own when the fault ends.
            FaultKind::HalfDead => self.half_dead = false,
            _ => {}
        }
    }

    /// Heals every hard condition (the harness does this before it resumes a stopped stream).
    pub fn heal_hard(&mut self) {
        self.now_in.refuse_account = 0;
        self.now_in.competing = 0;
    }

    /// A hard condition is in force.
    pub fn hard_now(&self, yield_to_competing: bool) -> bool {
        self.now_in.refuse_account > 0 || (yield_to_competing && self.now_in.competing > 0)
    }

    /// Anything other than a hard condition is in force.
    pub fn faulty_besides_hard(&self, yield_to_competing: bool) -> bool {
        let c = &self.now_in;
        let competing = if yield_to_competing { 0 } else { c.competing };
        c.down + c.server_errors + c.needs_login + competing > 0
            || !c.rate_limited.is_empty()
            || !c.upgrade_hang.is_empty()
            || self.half_dead
            || !self.authenticated
    }

    /// Anything at all is in force.
    pub fn faulty(&self) -> bool {
        let c = &self.now_in;
        c.down + c.server_errors + c.needs_login + c.competing + c.refuse_account > 0
            || !c.rate_limited.is_empty()
            || !c.upgrade_hang.is_empty()
            || self.half_dead
            || !self.authenticated
    }

    fn transport(&self, endpoint: Endpoint) -> Result<(), Failure> {
        let c = &self.now_in;
        if c.down > 0 {
            return Err(Failure::Unreachable {
                detail: "connection refused".into(),
            });
        }
        if let Some(retry_after) = c.rate_limited.first() {
            return Err(Failure::Http {
                endpoint,
                status: 429,
                retry_after: *retry_after,
            });
        }
        if c.server_errors > 0 {
            return Err(Failure::Http {
                endpoint,
                status: 503,
                retry_after: None,
            });
        }
        Ok(())
    }

    /// The credential source: a lifetime, or why not.
    pub fn issue(&mut self) -> Result<Option<Duration>, Failure> {
        self.requests += 1;
        self.transport(Endpoint::Credentials)?;
        if self.dialect == SimDialect::Ibkr && !self.authenticated {
            return Err(Failure::SessionLost {
                detail: "tickle: no session".into(),
            });
        }
        let c = &self.now_in;
        Ok(if self.dialect == SimDialect::Ibkr {
            None
        } else if c.expires_huge > 0 {
            Some(Duration::MAX)
        } else if c.expires_zero > 0 {
            Some(Duration::ZERO)
        } else {
            Some(self.lifetime)
        })
    }

    /// The REST handshake (IBKR); other dialects have none.
    pub fn establish(&mut self, repair: Repair, yield_to_competing: bool) -> Result<(), Failure> {
        self.requests += 1;
        self.transport(Endpoint::AuthStatus)?;
        let c = &self.now_in;
        if c.competing > 0 && yield_to_competing {
            return Err(Failure::Competing);
        }
        if c.needs_login > 0 {
            return Err(Failure::NeedsLogin {
                detail: "2FA pending".into(),
            });
        }
        let rest_says_ok = self.authenticated && c.competing == 0;
        if !rest_says_ok || repair != Repair::None {
            // ssodh/init (compete) or reauthenticate: both rebuild the brokerage session.
            self.authenticated = true;
            self.half_dead = false;
        }
        Ok(())
    }

    /// The keepalive (IBKR tickle).
    pub fn keepalive(&mut self) -> Result<(), Failure> {
        self.requests += 1;
        self.transport(Endpoint::Keepalive)?;
        if self.now_in.competing > 0 {
            return Err(Failure::Competing);
        }
        if !self.authenticated {
            return Err(Failure::SessionLost {
                detail: "tickle: no session".into(),
            });
        }
        Ok(())
    }

    fn check_credential(&mut self, generation: Generation) -> Result<(), Failure> {
        if generation < self.valid_from || self.now_in.refuse_account > 0 {
            return Err(Failure::Rejected {
                status: 401,
                after_refresh: false,
            });
        }
        Ok(())
    }

    /// What the dial prepares with these credentials: a ticket, a negotiate (SignalR), nothing
    /// (IBKR). Returns the ticket, if one was bought.
    pub fn prepare(&mut self, generation: Generation) -> Result<Option<u64>, Failure> {
        if self.dialect == SimDialect::Ibkr {
            return Ok(None);
        }
        self.requests += 1;
        self.transport(Endpoint::Credentials)?;
        if self.dialect == SimDialect::SignalR {
            // negotiate accepts the bearer; the hub refuses the account after the handshake.
            if generation < self.valid_from {
                return Err(Failure::Rejected {
                    status: 401,
                    after_refresh: false,
                });
            }
            return Ok(None);
        }
        self.check_credential(generation)?;
        self.next_ticket += 1;
        self.tickets.insert(self.next_ticket);
        Ok(Some(self.next_ticket))
    }

    /// The WebSocket upgrade. `Err` carries a violation (a ticket presented twice).
    pub fn upgrade(
        &mut self,
        generation: Generation,
        ticket: Option<u64>,
    ) -> Result<Upgrade, String> {
        self.requests += 1;
        if let Some(t) = ticket {
            if !self.tickets.remove(&t) {
                return Err(format!("ticket {t} presented twice"));
            }
        }
        if let Err(f) = self.transport(Endpoint::Upgrade) {
            return Ok(Upgrade::Refused(f));
        }
        if self.dialect == SimDialect::Ibkr {
            if let Err(f) = self.check_credential(generation) {
                return Ok(Upgrade::Refused(f));
            }
        }
        let hang = self.now_in.upgrade_hang.iter().max().copied();
        Ok(Upgrade::Open(hang.unwrap_or_default()))
    }

    /// The opening exchange on a new socket: `Ok` confirms authentication.
    pub fn opening(&mut self) -> Result<(), Failure> {
        match self.dialect {
            SimDialect::Ibkr if !self.authenticated || self.half_dead => {
                Err(Failure::SessionLost {
                    detail: "sts authenticated:false".into(),
                })
            }
            SimDialect::Ibkr if self.now_in.competing > 0 => Err(Failure::Competing),
            SimDialect::SignalR if self.now_in.refuse_account > 0 => Err(Failure::Rejected {
                status: 401,
                after_refresh: false,
            }),
            _ => Ok(()),
        }
    }
}
