//! The `api` cookie that authenticates the IBKR socket: `api={"session":"<id>"}`, possibly
//! percent-encoded, or (OAuth style) `api=<id>`.

use actix_web::http::header::{HeaderMap, COOKIE};
use serde_json::Value;

/// The session id carried by the `api` cookie: `None` without such a cookie, `Some("")` when the
/// cookie is present but unreadable (which never matches a session).
pub(crate) fn api_session(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .flat_map(|value| {
            String::from_utf8_lossy(value.as_bytes())
                .split(';')
                .filter_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    (name.trim() == "api").then(|| session_of(value.trim()))
                })
                .collect::<Vec<_>>()
        })
        .next()
}

/// Extracts the session id from one `api` cookie value.
fn session_of(raw: &str) -> String {
    let decoded = percent_decode(raw);
    let unquoted = decoded
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(&decoded);
    if unquoted.starts_with('{') {
        return serde_json::from_str::<Value>(unquoted)
            .ok()
            .and_then(|v| v.get("session")?.as_str().map(str::to_owned))
            .unwrap_or_default();
    }
    unquoted.to_owned()
}

/// Decodes `%XX` escapes (invalid escapes are kept as they are; invalid UTF-8 is replaced).
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(hi), Some(lo)) => hex(*hi).zip(hex(*lo)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of one hex digit.
fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn headers(cookie: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
        map
    }

    #[test]
    fn reads_raw_encoded_and_bare_forms() {
        assert_eq!(
            api_session(&headers(r#"x=1; api={"session":"abc"}"#)).as_deref(),
            Some("abc")
        );
        assert_eq!(
            api_session(&headers("api=%7B%22session%22%3A%22abc%22%7D")).as_deref(),
            Some("abc")
        );
        assert_eq!(api_session(&headers("api=abc")).as_deref(), Some("abc"));
        assert_eq!(api_session(&headers("api={broken")).as_deref(), Some(""));
        assert_eq!(api_session(&headers("other=1")), None);
        assert_eq!(api_session(&HeaderMap::new()), None);
    }

    #[test]
    fn percent_decode_keeps_invalid_escapes() {
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("a%20b"), "a b");
    }
}
