//! Reconnect delays: the `backoff` crate's exponential policy behind one small type.
//!
//! Rules keepwire adds on top of the crate:
//! * the crate computes the exponential schedule (initial, multiplier, max); keepwire draws the
//!   jitter itself from a seeded generator, so the same seed gives the same delays (the
//!   deterministic simulator of [`crate::sim`] depends on it);
//! * every delay is clamped to `[initial·(1−r), max]` *after* jitter, so the first retry after a
//!   mass disconnect is never 0 ms for everyone;
//! * the attempt counter resets only after the connection stayed healthy for `reset_after`
//!   (a server that accepts and immediately drops must not cause a hot loop);
//! * a server-requested delay (`Retry-After`, a 429 penalty) wins over a shorter backoff.
//!
//! Time is a [`Now`]: the time elapsed since an origin the caller fixes (the stream's start for
//! the actors, the virtual clock for the simulator).

use std::time::Duration;

use backoff::backoff::Backoff as _;
use backoff::ExponentialBackoff;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Exponential backoff with jitter (see [`Backoff`]).
#[derive(Clone, Debug, PartialEq)]
pub struct BackoffConfig {
    /// First delay (before jitter).
    pub initial: Duration,
    /// Upper bound of any delay, jitter included.
    pub max: Duration,
    /// Growth factor per attempt.
    pub multiplier: f64,
    /// Jitter: each delay is drawn from `[d·(1−r), d·(1+r)]`, then clamped.
    pub randomization: f64,
    /// How long a connection must stay healthy before the attempt counter resets.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            randomization: 0.5,
            reset_after: Duration::from_secs(30),
        }
    }
}

/// The longest a server-requested delay (`Retry-After`) is honoured, unless `backoff.max` is
/// longer: a gateway must not park a stream for years without it being reported.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(300);

/// A moment, as the time elapsed since an origin fixed per stream.
pub type Now = Duration;

/// Reconnect delay policy for one actor.
#[derive(Debug)]
pub struct Backoff {
    config: BackoffConfig,
    inner: ExponentialBackoff,
    rng: StdRng,
    attempt: u32,
    healthy_since: Option<Now>,
}

impl Backoff {
    /// A fresh policy with jitter drawn from the thread's random generator.
    pub fn new(config: BackoffConfig) -> Self {
        Self::seeded(config, rand::thread_rng().gen())
    }

    /// A fresh policy whose jitter is a function of `seed`.
    pub fn seeded(config: BackoffConfig, seed: u64) -> Self {
        let inner = Self::build(&config);
        Self {
            config,
            inner,
            rng: StdRng::seed_from_u64(seed),
            attempt: 0,
            healthy_since: None,
        }
    }

    fn build(config: &BackoffConfig) -> ExponentialBackoff {
        backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(config.initial)
            .with_max_interval(config.max)
            .with_multiplier(if config.multiplier.is_finite() {
                config.multiplier.max(1.0)
            } else {
                1.0
            })
            .with_randomization_factor(0.0)
            .with_max_elapsed_time(None)
            .build()
    }

    fn randomization(&self) -> f64 {
        let r = self.config.randomization;
        if r.is_finite() {
            r.clamp(0.0, 0.99)
        } else {
            0.0
        }
    }

    /// The smallest delay ever returned.
    pub fn floor(&self) -> Duration {
        self.config
            .initial
            .mul_f64(1.0 - self.randomization())
            .max(Duration::from_millis(1))
            .min(self.config.max.max(Duration::from_millis(1)))
    }

    /// The delay before the next attempt; counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.healthy_since = None;
        self.attempt = self.attempt.saturating_add(1);
        let base = self.inner.next_backoff().unwrap_or(self.config.max);
        let r = self.randomization();
        let u: f64 = self.rng.gen();
        let jittered = base.mul_f64(1.0 - r + 2.0 * r * u);
        jittered.clamp(self.floor(), self.config.max.max(self.floor()))
    }

    /// Like [`Backoff::next_delay`], but at least `server_delay` when the server asked for one,
    /// capped at `max(backoff.max, RETRY_AFTER_CAP)`, plus a random spread of up to another
    /// `server_delay` (at most `backoff.max`): clients told the same `Retry-After` (a herd after
    /// a gateway restart) come back spread over that window, not in the same 100 ms.
    pub fn next_delay_at_least(&mut self, server_delay: Option<Duration>) -> Duration {
        let d = self.next_delay();
        let cap = self.config.max.max(RETRY_AFTER_CAP);
        match server_delay {
            Some(s) if s > d => {
                let base = s.min(cap);
                let spread = base.min(self.config.max);
                let u: f64 = self.rng.gen();
                base.saturating_add(spread.mul_f64(u)).max(d)
            }
            _ => d,
        }
    }

    /// Attempts since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The connection became healthy at `now`; the counter resets once it stays so for `reset_after`.
    pub fn healthy(&mut self, now: Now) {
        self.healthy_since.get_or_insert(now);
    }

    /// Resets the counter if the connection has been healthy long enough. Returns whether it did.
    pub fn maybe_reset(&mut self, now: Now) -> bool {
        match self.healthy_since {
            Some(since) if now.saturating_sub(since) >= self.config.reset_after => {
                self.reset();
                true
            }
            _ => false,
        }
    }

    /// When [`Backoff::maybe_reset`] will reset the counter if the connection stays healthy;
    /// `None` while it is not healthy (or already reset).
    pub fn reset_due(&self) -> Option<Now> {
        self.healthy_since?.checked_add(self.config.reset_after)
    }

    /// Forgets every attempt.
    pub fn reset(&mut self) {
        self.inner = Self::build(&self.config);
        self.attempt = 0;
        self.healthy_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg(initial_ms: u64, max_ms: u64, r: f64) -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(initial_ms),
            max: Duration::from_millis(max_ms),
            multiplier: 2.0,
            randomization: r,
            reset_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn without_jitter_follows_the_ticket_reference_sequence() {
        let mut b = Backoff::new(cfg(250, 5000, 0.0));
        let got: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, vec![250, 500, 1000, 2000, 4000, 5000, 5000]);
    }

    #[test]
    fn counter_resets_only_after_a_healthy_period() {
        let mut b = Backoff::new(cfg(100, 10_000, 0.0));
        b.next_delay();
        b.next_delay();
        let t0 = Duration::from_secs(5);
        b.healthy(t0);
        assert!(
            !b.maybe_reset(t0 + Duration::from_secs(29)),
            "29 s healthy is not enough"
        );
        b.healthy(t0 + Duration::from_secs(29)); // a second report does not move the start
        assert!(b.maybe_reset(t0 + Duration::from_secs(30)));
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn the_reset_is_due_reset_after_the_start_of_the_healthy_period() {
        let mut b = Backoff::new(cfg(100, 10_000, 0.0));
        b.next_delay();
        assert_eq!(b.reset_due(), None, "not healthy: nothing to wait for");
        let t0 = Duration::from_secs(5);
        b.healthy(t0);
        let due = b.reset_due();
        assert_eq!(due, Some(t0 + Duration::from_secs(30)));
        assert!(
            !b.maybe_reset(t0 + Duration::from_millis(29_999)),
            "a moment before"
        );
        assert!(
            b.maybe_reset(t0 + Duration::from_secs(30)),
            "at the due time"
        );
        assert_eq!(b.reset_due(), None, "reset: nothing more is due");
    }

    #[test]
    fn accept_then_drop_does_not_reset() {
        let mut b = Backoff::new(cfg(100, 10_000, 0.0));
        b.next_delay();
        b.healthy(Duration::ZERO);
        // dropped at once: the next delay keeps growing
        assert_eq!(b.next_delay(), Duration::from_millis(200));
    }

    #[test]
    fn server_delay_wins_when_longer() {
        let mut b = Backoff::new(cfg(100, 1000, 0.0));
        let d = b.next_delay_at_least(Some(Duration::from_secs(7)));
        assert!(
            d >= Duration::from_secs(7) && d <= Duration::from_secs(8),
            "{d:?}"
        );
        assert_eq!(
            b.next_delay_at_least(Some(Duration::from_millis(1))),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn a_herd_told_the_same_retry_after_comes_back_spread_over_a_second() {
        // 1 000 clients, each with its own seed, all told `Retry-After: 1`.
        let mut buckets = [0u32; 20];
        for seed in 0..1_000u64 {
            let mut b = Backoff::seeded(cfg(100, 1000, 0.5), seed);
            let d = b.next_delay_at_least(Some(Duration::from_secs(1)));
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(2),
                "{d:?}"
            );
            let i = ((d.as_millis() - 1000) / 100) as usize;
            buckets[i.min(19)] += 1;
        }
        // Ten 100 ms windows share the herd: none holds more than a sixth of it.
        let peak = buckets.iter().copied().max().unwrap_or(0);
        assert!(peak < 170, "{buckets:?}");
    }

    #[test]
    fn an_absurd_retry_after_is_capped() {
        let mut b = Backoff::new(cfg(100, 1000, 0.5));
        let d = b.next_delay_at_least(Some(Duration::from_secs(99_999_999)));
        // The cap, spread by at most backoff.max.
        assert!(
            d >= RETRY_AFTER_CAP && d <= RETRY_AFTER_CAP + Duration::from_secs(1),
            "{d:?}"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let run = |seed| {
            let mut b = Backoff::seeded(cfg(250, 5000, 0.5), seed);
            (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn non_finite_numbers_do_not_panic() {
        let mut c = cfg(250, 5000, f64::NAN);
        c.multiplier = f64::INFINITY;
        let mut b = Backoff::new(c);
        for _ in 0..5 {
            assert!(b.next_delay() >= Duration::from_millis(1));
        }
    }

    #[test]
    fn first_retries_of_many_clients_are_spread_and_never_zero() {
        let firsts: Vec<Duration> = (0..200)
            .map(|_| Backoff::new(cfg(250, 5000, 0.5)).next_delay())
            .collect();
        assert!(firsts.iter().all(|d| *d >= Duration::from_millis(125)));
        let distinct: std::collections::BTreeSet<_> =
            firsts.iter().map(|d| d.as_micros()).collect();
        assert!(
            distinct.len() > 100,
            "jitter spreads a mass reconnect: {} distinct",
            distinct.len()
        );
    }

    proptest! {
        #[test]
        fn every_delay_is_within_floor_and_max(
            initial in 1u64..2_000, max in 1u64..60_000, r in 0.0f64..1.0, n in 1usize..40
        ) {
            let mut b = Backoff::new(cfg(initial, max, r));
            let floor = b.floor();
            for _ in 0..n {
                let d = b.next_delay();
                prop_assert!(d <= Duration::from_millis(max).max(floor), "{d:?} > max");
                prop_assert!(d >= floor, "{d:?} < floor {floor:?}");
                prop_assert!(d > Duration::ZERO);
            }
            prop_assert_eq!(b.attempt() as usize, n);
        }
    }
}
