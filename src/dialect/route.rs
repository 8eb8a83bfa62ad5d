//! The cheapest look at a JSON message: two top-level string fields, read without parsing.
//!
//! A socket reader routes data by a message's type and channel, then hands the text to consumers
//! that parse it on their own threads (see [`super::SocketDecoder::decode_frame_deferred`]).
//! Routing must not cost a parse: [`top_level_fields`] walks the text once, skipping nested
//! values by their brackets and strings by their quotes, and reads nothing else.
//!
//! It does not validate: a number such as `01` or a bare word in a value is skipped like any
//! other. Whatever it cannot read with certainty (an escape in a key or in a wanted value, a
//! text that is not one object) it declines, and the caller falls back to a full parse. A
//! message it routed is validated by the consumer's parse; one that fails there is skipped and
//! counted (see [`crate::channel::Item::finish`]).

use std::collections::HashSet;
use std::sync::Arc;

/// Topics as shared strings, made once per distinct topic rather than once per message (a
/// message's topic is dropped on a consumer's thread: an allocation per message would be freed
/// across threads, the costliest kind for the allocator).
#[derive(Debug, Default)]
pub struct Topics {
    known: HashSet<Arc<str>>,
}

impl Topics {
    /// At most this many topics are kept; a gateway inventing topics only empties the set now
    /// and then.
    const LIMIT: usize = 4096;

    /// The shared string for `topic`.
    pub fn intern(&mut self, topic: &str) -> Arc<str> {
        if let Some(known) = self.known.get(topic) {
            return known.clone();
        }
        if self.known.len() >= Self::LIMIT {
            self.known.clear();
        }
        let made: Arc<str> = topic.into();
        self.known.insert(made.clone());
        made
    }
}

/// What [`top_level_fields`] found: the last string value of each wanted key (empty strings and
/// values of other types count as absent, like `Value::get(key).and_then(Value::as_str)` on the
/// parsed object keeping the last duplicate).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fields<'a> {
    /// The value of the first key asked for.
    pub first: Option<&'a str>,
    /// The value of the second key asked for.
    pub second: Option<&'a str>,
}

/// Reads the string values of `first` and `second` at the top level of the JSON object `text`;
/// `None` when it cannot tell without a full parse.
pub fn top_level_fields<'a>(text: &'a str, first: &str, second: &str) -> Option<Fields<'a>> {
    let b = text.as_bytes();
    let mut fields = Fields::default();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return end(b, i + 1).then_some(fields);
    }
    loop {
        // A key: a plain string (an escaped one is left to the full parse).
        let (key, after) = plain_string(text, i)?;
        i = skip_ws(b, after);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let wanted = (key == first, key == second);
        if wanted != (false, false) {
            let value = if b.get(i) == Some(&b'"') {
                let (value, after) = plain_string(text, i)?;
                i = after;
                Some(value).filter(|v| !v.is_empty())
            } else {
                i = skip_value(b, i)?;
                None
            };
            if wanted.0 {
                fields.first = value;
            }
            if wanted.1 {
                fields.second = value;
            }
        } else {
            i = skip_value(b, i)?;
        }
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return end(b, i + 1).then_some(fields),
            _ => return None,
        }
    }
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).copied().is_some_and(is_ws) {
        i += 1;
    }
    i
}

/// Nothing but whitespace from `i` on.
fn end(b: &[u8], i: usize) -> bool {
    skip_ws(b, i) == b.len()
}

/// The string starting with the quote at `i`, when it holds no escape; and the index after it.
fn plain_string(text: &str, i: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let len = b
        .get(start..)?
        .iter()
        .position(|&c| c == b'"' || c == b'\\')?;
    let close = start + len;
    if b[close] != b'"' {
        return None;
    }
    // Both ends are ASCII quotes, so both are char boundaries.
    Some((text.get(start..close)?, close + 1))
}

/// The index after the string starting with the quote at `i` (escapes skipped, not read).
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match b.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
}

/// The index after the value starting at `i`: a string, an object or array (by its brackets), or
/// a scalar (up to the next delimiter).
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j)? {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        b',' | b'}' | b']' | b':' => None,
        _ => {
            let len = b[i..]
                .iter()
                .position(|&c| matches!(c, b',' | b'}' | b']') || is_ws(c))
                .unwrap_or(b.len() - i);
            Some(i + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Option<(Option<&str>, Option<&str>)> {
        top_level_fields(text, "type", "channel").map(|f| (f.first, f.second))
    }

    #[test]
    fn a_topic_is_made_once_and_shared() {
        let mut topics = Topics::default();
        let a = topics.intern("md.1");
        assert!(Arc::ptr_eq(&a, &topics.intern("md.1")));
        assert_eq!(&*topics.intern("md.2"), "md.2");
        for i in 0..2 * Topics::LIMIT {
            topics.intern(&i.to_string());
        }
        assert!(topics.known.len() <= Topics::LIMIT);
    }

    #[test]
    fn reads_the_two_fields_at_the_top_level_only() {
        assert_eq!(
            fields(r#"{"type":"data","channel":"a","p":1.5e3}"#),
            Some((Some("data"), Some("a")))
        );
        assert_eq!(
            fields(
                r#" { "channel" : "a" , "nested":{"type":"x","channel":"b"},"l":[1,{"c":"]"}],"type":"t" } "#
            ),
            Some((Some("t"), Some("a")))
        );
        assert_eq!(fields(r#"{"channel":"a"}"#), Some((None, Some("a"))));
        assert_eq!(fields("{}"), Some((None, None)));
    }

    #[test]
    fn the_last_duplicate_wins_and_non_strings_or_empty_strings_are_absent() {
        assert_eq!(
            fields(r#"{"channel":"x","type":"data","channel":"a"}"#),
            Some((Some("data"), Some("a")))
        );
        assert_eq!(
            fields(r#"{"channel":"x","channel":7,"type":""}"#),
            Some((None, None))
        );
        assert_eq!(
            fields(r#"{"type":{"a":"b"},"channel":["c"]}"#),
            Some((None, None))
        );
    }

    #[test]
    fn escapes_in_skipped_strings_are_skipped_and_escapes_it_would_read_decline() {
        assert_eq!(
            fields(r#"{"s":"a\"}\\","type":"data","channel":"a"}"#),
            Some((Some("data"), Some("a")))
        );
        assert_eq!(fields(r#"{"type":"data","channel":"a\u0062"}"#), None);
        assert_eq!(fields(r#"{"chan\u006eel":"a"}"#), None);
    }

    #[test]
    fn what_is_not_one_object_is_declined() {
        for text in [
            "",
            "nope",
            "[1]",
            r#""s""#,
            r#"{"type":"data""#,
            r#"{"type":"data",}"#,
            r#"{"type" "data"}"#,
            r#"{"type":"data"} x"#,
            r#"{"a":{"b":1}"#,
            r#"{"a":]}"#,
            r#"{"a":"unterminated}"#,
        ] {
            assert_eq!(fields(text), None, "{text}");
        }
    }

    /// A JSON value as text: strings (some with escapes), numbers, literals, nested containers.
    fn value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            "[a-c]{0,2}".prop_map(|s| format!("\"{s}\"")),
            Just(r#""a\"}""#.to_string()),
            Just(r#""\u0061""#.to_string()),
            Just(r#""""#.to_string()),
            Just("-1.5e3".to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec(("(type|channel|a)", inner), 0..3).prop_map(|v| {
                    let members: Vec<_> = v.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    proptest::proptest! {
        /// On a valid object it reads, it agrees with a full parse (duplicates, nesting, escapes
        /// and whitespace included).
        #[test]
        fn agrees_with_a_full_parse(
            members in proptest::collection::vec(("(type|channel|a|t\\u0079pe)", value()), 0..6),
            space in "[ \n]{0,1}",
        ) {
            let body: Vec<_> = members.iter().map(|(k, v)| format!("{space}\"{k}\"{space}:{space}{v}")).collect();
            let text = format!("{space}{{{}{space}}}{space}", body.join(","));
            let map = match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(serde_json::Value::Object(map)) => map,
                other => panic!("{text} is an object: {other:?}"),
            };
            // It may decline only for an escape it would have to read.
            let plain = members.iter().all(|(k, v)| {
                let wanted = matches!(k.as_str(), "type" | "channel");
                !(k.contains('\\') || wanted && v.starts_with('"') && v.contains('\\'))
            });
            let read = top_level_fields(&text, "type", "channel");
            proptest::prop_assert!(read.is_some() || !plain, "declined {}", text);
            if let Some(got) = read {
                let field = |k: &str| map.get(k).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
                proptest::prop_assert_eq!(got.first, field("type"), "{}", text);
                proptest::prop_assert_eq!(got.second, field("channel"), "{}", text);
            }
        }

        /// Whatever the text, it never panics.
        #[test]
        fn never_panics(text in "[ {}\\[\\]\",:a-c0-9\\\\]{0,24}") {
            let _ = top_level_fields(&text, "type", "channel");
        }
    }
}
