//! Synthetic `GatewayQuote` payloads: a random-walk quote per contract id.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::emulator::state::epoch_ms;

/// Price increment of the emulated contracts.
const TICK: f64 = 0.25;

/// A random-walk quote for one contract, prices in ticks.
#[derive(Debug)]
pub(crate) struct QuoteWalk {
    /// Per-contract random source.
    rng: StdRng,
    /// Symbol (`F.US.EP` for `CON.F.US.EP.U25`).
    symbol: String,
    /// Last price.
    last: i64,
    /// Bid.
    bid: i64,
    /// Ask.
    ask: i64,
    /// Session open.
    open: i64,
    /// Session high.
    high: i64,
    /// Session low.
    low: i64,
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
            rng: StdRng::seed_from_u64(seed),
            symbol: symbol_of(contract_id),
            last,
            bid: last - 1,
            ask: last + 1,
            open: last,
            high: last,
            low: last,
            volume: 0,
        }
    }

    /// Moves one step and renders the quote.
    pub(crate) fn next_quote(&mut self) -> Value {
        self.last = (self.last + self.rng.gen_range(-2..=2)).max(4);
        self.bid = self.last - self.rng.gen_range(0..=1);
        self.ask = self.bid + self.rng.gen_range(1..=2);
        self.high = self.high.max(self.last);
        self.low = self.low.min(self.last);
        self.volume += self.rng.gen_range(1..=20);
        let price = |ticks: i64| ticks as f64 * TICK;
        let change = price(self.last - self.open);
        let now = iso8601(epoch_ms());
        json!({
            "symbol": self.symbol,
            "symbolName": format!("/{}", self.symbol.rsplit('.').next().unwrap_or_default()),
            "lastPrice": price(self.last),
            "bestBid": price(self.bid),
            "bestAsk": price(self.ask),
            "change": change,
            "changePercent": change / price(self.open),
            "open": price(self.open),
            "high": price(self.high),
            "low": price(self.low),
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
