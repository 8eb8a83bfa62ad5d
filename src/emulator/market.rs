//! The one random walk behind every emulated quote stream (the IBKR socket's `smd` data and the
//! SignalR hub's `GatewayQuote`s): a seeded last price with its bid, ask and the session's open,
//! high and low, in whole price steps (cents, ticks…) that each dialect renders its own way.

use std::ops::RangeInclusive;

use rand::distributions::uniform::SampleUniform;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How far one step may move a walk, in price steps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Moves {
    /// The last price moves by at most this much either way.
    pub(crate) max_move: i64,
    /// The last price never goes below this.
    pub(crate) floor: i64,
    /// The bid is at most this far below the last price.
    pub(crate) max_bid_gap: i64,
    /// The ask is 1 to this much above the bid.
    pub(crate) max_spread: i64,
}

/// A random-walk quote: its own seeded random source and the prices it walked to.
#[derive(Debug)]
pub(crate) struct PriceWalk {
    /// Per-stream random source.
    rng: StdRng,
    /// Last price.
    pub(crate) last: i64,
    /// Bid.
    pub(crate) bid: i64,
    /// Ask.
    pub(crate) ask: i64,
    /// Session open.
    pub(crate) open: i64,
    /// Session high.
    pub(crate) high: i64,
    /// Session low.
    pub(crate) low: i64,
}

impl PriceWalk {
    /// A walk from `start` (bid one step below, ask one above), drawing from a source seeded
    /// with `seed`.
    pub(crate) fn new(seed: u64, start: i64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            last: start,
            bid: start - 1,
            ask: start + 1,
            open: start,
            high: start,
            low: start,
        }
    }

    /// Moves the last price, then the bid and ask around it; keeps the high and low.
    pub(crate) fn step(&mut self, moves: Moves) {
        let range = -moves.max_move..=moves.max_move;
        self.last = (self.last + self.rng.gen_range(range)).max(moves.floor);
        self.bid = self.last - self.rng.gen_range(0..=moves.max_bid_gap);
        self.ask = self.bid + self.rng.gen_range(1..=moves.max_spread);
        self.high = self.high.max(self.last);
        self.low = self.low.min(self.last);
    }

    /// One more draw from the walk's source (sizes, volume), in the order the dialect needs.
    pub(crate) fn draw<T: SampleUniform + PartialOrd>(&mut self, range: RangeInclusive<T>) -> T {
        self.rng.gen_range(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_within_its_moves() {
        let moves = Moves {
            max_move: 3,
            floor: 100,
            max_bid_gap: 2,
            max_spread: 3,
        };
        let mut walk = PriceWalk::new(7, 101);
        for _ in 0..1000 {
            let last = walk.last;
            walk.step(moves);
            assert!((walk.last - last).abs() <= 3 || walk.last == 100);
            assert!(walk.last >= 100);
            assert!(walk.bid <= walk.last && walk.last - walk.bid <= 2);
            assert!(walk.ask > walk.bid && walk.ask - walk.bid <= 3);
            assert!(walk.low <= walk.last && walk.last <= walk.high);
        }
    }

    #[test]
    fn same_seed_same_walk() {
        let moves = Moves {
            max_move: 2,
            floor: 4,
            max_bid_gap: 1,
            max_spread: 2,
        };
        let (mut a, mut b) = (PriceWalk::new(42, 20_000), PriceWalk::new(42, 20_000));
        for _ in 0..100 {
            a.step(moves);
            b.step(moves);
            assert_eq!((a.last, a.bid, a.ask), (b.last, b.bid, b.ask));
            assert_eq!(a.draw(1..=20u64), b.draw(1..=20u64));
        }
    }
}
