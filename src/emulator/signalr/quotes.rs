//! Synthetic `GatewayQuote` payloads: a random-walk quote per contract id (the shared
//! [`PriceWalk`] in ticks, with volume).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use serde_json::{json, Value};

use crate::emulator::market::{Moves, PriceWalk};
use crate::emulator::state::epoch_ms;

/// Price increment of the emulated contracts.
const TICK: f64 = 0.25;

/// How a contract's quote moves, in ticks.
const MOVES: Moves = Moves {
    max_move: 2,
    floor: 4,
    max_bid_gap: 1,
    max_spread: 2,
};

/// A random-walk quote for one contract, prices in ticks.
#[derive(Debug)]
pub(crate) struct QuoteWalk {
    /// Prices.
    walk: PriceWalk,
    /// Symbol (`F.US.EP` for `CON.F.US.EP.U25`).
    symbol: String,
    /// Volume.
    volume: u64,
}

impl QuoteWalk {
    /// A quote starting at a contract-dependent price.
    pub(crate) fn new(contract_id: &str) -> Self {
        let mut hasher = DefaultHasher::new();
        contract_id.hash(&mut hasher);
        let seed = hasher.finish();
        let last = 20_000 + i64::try_from(seed % 4_000).unwrap_or(0);
        Self {
            walk: PriceWalk::new(seed, last),
            symbol: symbol_of(contract_id),
            volume: 0,
        }
    }

    /// Moves one step and renders the quote.
    pub(crate) fn next_quote(&mut self) -> Value {
        self.walk.step(MOVES);
        self.volume += self.walk.draw(1..=20);
        let walk = &self.walk;
        let price = |ticks: i64| ticks as f64 * TICK;
        let change = price(walk.last - walk.open);
        let now = iso8601(epoch_ms());
        json!({
            "symbol": self.symbol,
            "symbolName": format!("/{}", self.symbol.rsplit('.').next().unwrap_or_default()),
            "lastPrice": price(walk.last),
            "bestBid": price(walk.bid),
            "bestAsk": price(walk.ask),
            "change": change,
            "changePercent": change / price(walk.open),
            "open": price(walk.open),
            "high": price(walk.high),
            "low": price(walk.low),
            "volume": self.volume,
            "lastUpdated": now,
            "timestamp": now,
        })
    }
}

/// `F.US.EP` for `CON.F.US.EP.U25`; other ids are their own symbol.
fn symbol_of(contract_id: &str) -> String {
    let parts: Vec<&str> = contract_id.split('.').collect();
    if parts.len() >= 3 && parts[0] == "CON" {
        parts[1..parts.len() - 1].join(".")
    } else {
        contract_id.to_owned()
    }
}

/// `2025-01-02T03:04:05.678Z` for milliseconds since the Unix epoch.
pub(crate) fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601(1_735_787_045_678), "2025-01-02T03:04:05.678Z");
    }

    #[test]
    fn quotes_walk() {
        assert_eq!(symbol_of("CON.F.US.EP.U25"), "F.US.EP");
        assert_eq!(symbol_of("ESU5"), "ESU5");
        let mut walk = QuoteWalk::new("CON.F.US.EP.U25");
        for _ in 0..100 {
            let q = walk.next_quote();
            assert!(q["bestBid"].as_f64().unwrap() < q["bestAsk"].as_f64().unwrap());
            assert_eq!(q["symbol"], "F.US.EP");
        }
    }
}
