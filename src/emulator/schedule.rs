//! Seeded fault schedules: the same seed, duration and fault list always give the same times.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::faults::Fault;

/// A fault list to spread over a time window at seeded-random offsets (the admin
/// `POST /admin/schedule` body).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultSchedule {
    /// Seed of the offsets.
    pub seed: u64,
    /// Window length in milliseconds; offsets fall in `[0, duration_ms)`.
    pub duration_ms: u64,
    /// Faults to apply, one each.
    pub faults: Vec<Fault>,
}

impl FaultSchedule {
    /// Gives each fault a seeded-random offset in `[0, duration)` (millisecond resolution),
    /// sorted by offset (ties keep list order). Deterministic across runs and platforms.
    #[must_use]
    pub fn seeded(seed: u64, duration: Duration, faults: Vec<Fault>) -> Vec<(Duration, Fault)> {
        let window = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let mut rng = SplitMix64(seed);
        let mut entries: Vec<(Duration, Fault)> = faults
            .into_iter()
            .map(|fault| {
                let at = if window == 0 {
                    0
                } else {
                    rng.next_u64() % window
                };
                (Duration::from_millis(at), fault)
            })
            .collect();
        entries.sort_by_key(|(at, _)| *at);
        entries
    }

    /// This schedule's timed entries (see [`FaultSchedule::seeded`]).
    #[must_use]
    pub fn entries(&self) -> Vec<(Duration, Fault)> {
        Self::seeded(
            self.seed,
            Duration::from_millis(self.duration_ms),
            self.faults.clone(),
        )
    }
}

/// `SplitMix64`: a tiny, well-known generator whose output is fixed by its seed forever (unlike
/// `rand`'s `StdRng`, which may change between releases).
struct SplitMix64(u64);

impl SplitMix64 {
    /// The next 64 random bits.
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // First outputs for seed 1234567 from the reference implementation.
        let mut rng = SplitMix64(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn empty_window_puts_everything_at_zero() {
        let entries = FaultSchedule::seeded(1, Duration::ZERO, vec![Fault::SessionLost]);
        assert_eq!(entries, vec![(Duration::ZERO, Fault::SessionLost)]);
    }
}
