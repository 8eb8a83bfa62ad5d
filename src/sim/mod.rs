//! A deterministic simulator: the machines of [`crate::machine`] against a model gateway of each
//! dialect, in virtual time, under seeded fault schedules, with invariants checked after every
//! step.
//!
//! * [`schedule`] draws a stream's settings and ≥ 20 overlapping faults from a seed;
//! * [`gateway`] answers requests the way each dialect's server does under those faults;
//! * [`world`] runs the four machines with thin shells like the actors', a virtual clock, and
//!   one seeded generator for latencies and the interleaving of messages between actors;
//! * [`monitor`] holds the invariants: Ready again within a bound after every soft fault; after
//!   a hard failure no request and no open socket; a stream ends only on a hard cause and a hard
//!   cause is recognised; no request kind faster than the backoff schedule allows; no rejected
//!   generation presented again; no ticket presented twice.
//!
//! Same seed, same trace. A violation is replayed with tracing on and its schedule shrunk to
//! the fewest faults that still break the same invariant.

pub mod gateway;
pub mod monitor;
pub mod schedule;
pub mod world;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use schedule::{Fault, FaultKind, Schedule, SimDialect};
use world::World;

/// Schedules (of 20 faults) that once broke an invariant, with what broke; the tests replay
/// every one. Found by `keepwire chaos --sim --schedules 20000 --seed 1` on the machines as the
/// actors behaved before the sans-IO core, then by later runs.
pub const REGRESSIONS: &[(u64, &str)] = &[
    (807013244984872231, "(a) SignalR refuses the account after every handshake: ended by restart intensity, not as rejected credentials"),
    (8680832624474097475, "(a) SignalR refusal after the handshake: negotiate at the floor delay forever"),
    (14072917602864530048, "(a)+(d) expiresIn 0 while the hub refuses the account: token requests in a loop"),
    (12803034438824211395, "(b) a hung upgrade completes after a hard failure (competing, yield): socket left open"),
    (15986950797480777301, "(b) a dial in flight goes on to the upgrade after a hard failure"),
    (406134896046871403, "(c) half-dead IBKR gateway: auth/status at the floor delay, no repair"),
    (13166747327335888811, "(c) half-dead IBKR gateway: upgrades faster than the backoff allows"),
    (17911839290282890590, "(d) a huge expiresIn overflows the clock and panics"),
    (10451216379200822465, "Retry-After: 99999999 parks the stream for years"),
    (8195237237126968761, "a generation rejected for good is presented again after resume"),
    (18013154328940581666, "credentials revoked during a long Retry-After were taken for 'rejected right after a refresh'"),
    (4381987877975627405, "model: an unsubscribe and a re-subscribe overtook each other on one socket (frames now keep their order)"),
];

/// One broken invariant.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    /// The schedule's seed (replay with `keepwire chaos --sim --replay SEED`).
    pub seed: u64,
    /// What broke.
    pub what: String,
    /// The dialect of the schedule.
    pub dialect: String,
    /// The faults that still break it after shrinking.
    pub faults: Vec<String>,
    /// The last events before it broke.
    pub trace: Vec<String>,
}

/// The result of an exploration.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The exploration's seed.
    pub seed: u64,
    /// Schedules run.
    pub schedules: u64,
    /// Faults per schedule.
    pub faults: usize,
    /// Events processed in all.
    pub steps: u64,
    /// Messages that reached Subscriptions after their topic's unsubscribe returned (each one
    /// a chance to break "no data after unsubscribe").
    pub raced_unsubscribe: u64,
    /// Schedules that broke an invariant.
    pub violating_schedules: u64,
    /// The first violations (shrunk, with traces).
    pub violations: Vec<Violation>,
    /// Wall time.
    pub elapsed_s: f64,
    /// Throughput.
    pub schedules_per_s: f64,
}

/// The seed of schedule `index` of an exploration seeded with `seed` (splitmix64).
pub fn schedule_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed
        .wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs one schedule; a panic inside a machine is a violation too.
pub fn run(schedule: &Schedule, tracing: bool) -> world::Outcome {
    match catch_unwind(AssertUnwindSafe(|| World::new(schedule, tracing).run())) {
        Ok(outcome) => outcome,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            world::Outcome {
                violation: Some(format!("a machine panicked: {what}")),
                ..Default::default()
            }
        }
    }
}

/// The invariant a violation message names, without its numbers.
fn category(what: &str) -> String {
    what.chars()
        .filter(|c| !c.is_ascii_digit())
        .take(48)
        .collect()
}

/// Removes faults one at a time while the same invariant still breaks.
pub fn shrink(schedule: &Schedule, what: &str) -> Schedule {
    let want = category(what);
    let mut best = schedule.clone();
    let mut i = 0;
    while i < best.faults.len() {
        let mut candidate = best.clone();
        candidate.faults.remove(i);
        let still = run(&candidate, false)
            .violation
            .is_some_and(|v| category(&v) == want);
        if still {
            best = candidate;
        } else {
            i += 1;
        }
    }
    best
}

/// Replays schedule `seed` with tracing, shrinks it, and describes the violation.
pub fn explain(seed: u64, faults: usize) -> Option<Violation> {
    let schedule = Schedule::draw(seed, faults);
    let what = run(&schedule, false).violation?;
    let small = shrink(&schedule, &what);
    let outcome = run(&small, true);
    let what = outcome.violation.unwrap_or(what);
    let keep = outcome.trace.len().saturating_sub(40);
    Some(Violation {
        seed,
        what,
        dialect: format!("{:?}", small.dialect),
        faults: small
            .faults
            .iter()
            .map(|f| {
                format!(
                    "{:>8.3}s {:?} for {} ms",
                    f.at.as_secs_f64(),
                    f.kind,
                    f.lasts.as_millis()
                )
            })
            .collect(),
        trace: outcome.trace[keep..].to_vec(),
    })
}

/// Explores `schedules` schedules of `faults` faults each; `progress` is called now and then
/// with (schedules done, violating schedules).
pub fn explore(
    seed: u64,
    schedules: u64,
    faults: usize,
    mut progress: impl FnMut(u64, u64),
) -> Report {
    let started = Instant::now();
    let mut steps = 0;
    let mut raced = 0;
    let mut violating = 0;
    let mut violations = Vec::new();
    let mut seen = Vec::new();
    for index in 0..schedules {
        let s = schedule_seed(seed, index);
        let outcome = run(&Schedule::draw(s, faults), false);
        steps += outcome.steps;
        raced += outcome.raced_unsubscribe;
        if let Some(what) = outcome.violation {
            violating += 1;
            let cat = category(&what);
            if violations.len() < 20 && !seen.contains(&cat) {
                seen.push(cat);
                violations.extend(explain(s, faults));
            }
        }
        if index % 1024 == 0 {
            progress(index, violating);
        }
    }
    progress(schedules, violating);
    let elapsed = started.elapsed().max(Duration::from_micros(1));
    Report {
        seed,
        schedules,
        faults,
        steps,
        raced_unsubscribe: raced,
        violating_schedules: violating,
        violations,
        elapsed_s: elapsed.as_secs_f64(),
        schedules_per_s: schedules as f64 / elapsed.as_secs_f64(),
    }
}
