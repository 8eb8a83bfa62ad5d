//! Synthetic market data for `smd` streams: a random-walk quote per conid (the shared
//! [`PriceWalk`] in cents, with sizes and volume), rendered as IBKR field-id → string maps where
//! later messages carry only the fields that changed.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::emulator::market::{Moves, PriceWalk};
use crate::emulator::state::epoch_ms;

/// Fields sent when a subscription names none.
const DEFAULT_FIELDS: [&str; 3] = ["31", "84", "86"];

/// How an `smd` quote moves, in cents.
const MOVES: Moves = Moves {
    max_move: 3,
    floor: 100,
    max_bid_gap: 2,
    max_spread: 3,
};

/// A random-walk quote, prices in cents.
#[derive(Debug)]
struct Quote {
    /// Prices.
    walk: PriceWalk,
    /// Bid size.
    bid_size: u64,
    /// Ask size.
    ask_size: u64,
    /// Last size.
    last_size: u64,
    /// Volume.
    volume: u64,
}

impl Quote {
    /// A quote starting at a conid-dependent price.
    fn new(conid: u64) -> Self {
        let last = 5_000 + i64::try_from(conid % 20_000).unwrap_or(0);
        Self {
            walk: PriceWalk::new(conid, last),
            bid_size: 100,
            ask_size: 100,
            last_size: 100,
            volume: 0,
        }
    }

    /// Moves the quote one tick.
    fn step(&mut self) {
        self.walk.step(MOVES);
        self.bid_size = self.walk.draw(1..=20) * 100;
        self.ask_size = self.walk.draw(1..=20) * 100;
        self.last_size = self.walk.draw(1..=10) * 100;
        self.volume += self.last_size;
    }

    /// The current value of one IBKR field id.
    fn field(&self, conid: u64, id: &str) -> String {
        let price = |cents: i64| format!("{}.{:02}", cents / 100, cents % 100);
        let walk = &self.walk;
        match id {
            "31" => price(walk.last),
            "84" => price(walk.bid),
            "86" => price(walk.ask),
            "88" => self.bid_size.to_string(),
            "85" => self.ask_size.to_string(),
            "7059" => self.last_size.to_string(),
            "70" => price(walk.high),
            "71" => price(walk.low),
            "7295" => price(walk.open),
            "87" => self.volume.to_string(),
            "55" => format!("EMU{conid}"),
            "6509" => "RpB".to_owned(),
            "6119" => "q2".to_owned(),
            _ => "0".to_owned(),
        }
    }
}

/// One active `smd` stream.
#[derive(Debug)]
struct Stream {
    /// Requested field ids.
    fields: Vec<String>,
    /// Last (re)subscribe.
    subscribed_at: Instant,
    /// The quote behind the stream.
    quote: Quote,
    /// Values last sent, to send only changes.
    sent: HashMap<String, String>,
}

/// The smd streams of one socket.
#[derive(Debug, Default)]
pub(crate) struct MarketBook {
    /// Streams by conid.
    streams: BTreeMap<u64, Stream>,
}

impl MarketBook {
    /// Starts a stream, or refreshes its expiry (and fields, if given) when it exists.
    pub(crate) fn subscribe(&mut self, conid: u64, fields: Option<Vec<String>>) {
        let now = Instant::now();
        match self.streams.get_mut(&conid) {
            Some(stream) => {
                stream.subscribed_at = now;
                if let Some(fields) = fields.filter(|f| !f.is_empty()) {
                    stream.fields = fields;
                    stream.sent.clear();
                }
            }
            None => {
                let fields = fields
                    .filter(|f| !f.is_empty())
                    .unwrap_or_else(|| DEFAULT_FIELDS.iter().map(|f| (*f).to_owned()).collect());
                self.streams.insert(
                    conid,
                    Stream {
                        fields,
                        subscribed_at: now,
                        quote: Quote::new(conid),
                        sent: HashMap::new(),
                    },
                );
            }
        }
    }

    /// Stops a stream (no ack).
    pub(crate) fn unsubscribe(&mut self, conid: u64) {
        self.streams.remove(&conid);
    }

    /// Ends every stream silently.
    pub(crate) fn clear(&mut self) {
        self.streams.clear();
    }

    /// Whether no stream is active.
    pub(crate) fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Drops expired streams silently, advances the others and renders one message each.
    pub(crate) fn tick(&mut self, expiry: Option<Duration>) -> Vec<String> {
        let now = Instant::now();
        if let Some(expiry) = expiry {
            self.streams
                .retain(|_, s| now.saturating_duration_since(s.subscribed_at) < expiry);
        }
        let updated = epoch_ms();
        self.streams
            .iter_mut()
            .map(|(conid, stream)| {
                let conid = *conid;
                if !stream.sent.is_empty() {
                    stream.quote.step();
                }
                let mut msg = Map::new();
                for id in &stream.fields {
                    let value = stream.quote.field(conid, id);
                    if stream.sent.get(id) != Some(&value) {
                        stream.sent.insert(id.clone(), value.clone());
                        msg.insert(id.clone(), Value::String(value));
                    }
                }
                msg.insert("_updated".into(), updated.into());
                msg.insert("conid".into(), conid.into());
                msg.insert("conidEx".into(), conid.to_string().into());
                msg.insert("server_id".into(), "q2".into());
                msg.insert("topic".into(), format!("smd+{conid}").into());
                Value::Object(msg).to_string()
            })
            .collect()
    }
}

/// Parses the args of `smd+<conid>+{"fields":[…]}`: the field ids, if any were given.
pub(crate) fn parse_fields(args: &str) -> Option<Vec<String>> {
    let value: Value = serde_json::from_str(args).ok()?;
    let fields = value.get("fields")?.as_array()?;
    Some(
        fields
            .iter()
            .filter_map(|f| match f {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_message_has_all_fields_then_only_changes() {
        let mut book = MarketBook::default();
        book.subscribe(8314, Some(vec!["31".into(), "55".into()]));
        let first: Value = serde_json::from_str(&book.tick(None)[0]).unwrap();
        assert_eq!(first["55"], "EMU8314");
        assert_eq!(first["topic"], "smd+8314");
        assert!(first["31"].is_string());
        let second: Value = serde_json::from_str(&book.tick(None)[0]).unwrap();
        assert!(second.get("55").is_none());
    }

    #[test]
    fn expiry_ends_stream() {
        let mut book = MarketBook::default();
        book.subscribe(1, None);
        assert!(book.tick(Some(Duration::ZERO)).is_empty());
        assert!(book.is_empty());
    }

    #[test]
    fn parses_fields() {
        assert_eq!(
            parse_fields(r#"{"fields":["31",84]}"#),
            Some(vec!["31".to_owned(), "84".to_owned()])
        );
        assert_eq!(parse_fields("{}"), None);
        assert_eq!(parse_fields("not json"), None);
    }
}
