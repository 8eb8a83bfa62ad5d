//! HTTP and WebSocket plumbing shared by the actors: awc clients, error mapping, URL redaction,
//! and reassembly of fragmented WebSocket messages.

use std::fmt;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use awc::error::{ConnectError, SendRequestError, WsClientError};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::failure::{server_text, Endpoint, Failure};
use crate::tls::TlsConfig;

/// Host part of a URL (`https://127.0.0.1:5000/x` → `127.0.0.1`, `[::1]` → `[::1]`).
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if authority.starts_with('[') {
        return authority.find(']').map(|i| &authority[..=i]);
    }
    Some(authority.split(':').next().unwrap_or(authority))
}

/// The WebSocket form of a URL: `https://` → `wss://`, `http://` → `ws://`; others unchanged.
pub fn socket_url(url: &str) -> String {
    swap_scheme(url, &[("https://", "wss://"), ("http://", "ws://")])
}

/// The HTTP form of a URL: `wss://` → `https://`, `ws://` → `http://`; others unchanged.
pub fn http_url(url: &str) -> String {
    swap_scheme(url, &[("wss://", "https://"), ("ws://", "http://")])
}

fn swap_scheme(url: &str, pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .find_map(|(from, to)| url.strip_prefix(from).map(|rest| format!("{to}{rest}")))
        .unwrap_or_else(|| url.to_string())
}

/// Characters escaped in a query value: everything but RFC 3986's unreserved characters.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a value for a URL query (tickets, tokens, connection ids).
pub fn encode_query_value(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// A URL with every query value replaced by `***` (tickets and tokens travel in queries) and its
/// `user:password@` by `***@`.
pub fn redact_url(url: &str) -> String {
    let url = &crate::secret::redact_userinfo(url);
    match url.split_once('?') {
        None => url.to_string(),
        Some((base, query)) => {
            let q: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) => format!("{k}=***"),
                    None => kv.to_string(),
                })
                .collect();
            format!("{base}?{}", q.join("&"))
        }
    }
}

/// Which TLS configuration a URL is called with, decided per URL by [`ClientFactory::choice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsChoice {
    /// The stream's verification (the public roots, or its `ca_file`).
    Verify,
    /// No certificate verification: only for a URL whose own host is loopback, on a stream that
    /// asked for `insecure_skip_verify`.
    SkipVerify,
}

/// The TLS configurations and timeouts of a stream, from which actors build their `!Send`
/// clients. A stream with `insecure_skip_verify` has two: the skipping one, used only for URLs
/// whose host is loopback, and a verifying one (public roots) for every other URL.
#[derive(Clone)]
pub struct ClientFactory {
    verifying: Arc<rustls::ClientConfig>,
    skip_loopback: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    fence: Option<Arc<Fence>>,
}

/// The header naming the replica on every call of an exclusive stream (HA).
pub const REPLICA_HEADER: &str = "X-Keepwire-Replica";
/// The header carrying the fencing token (the election key's revision) on every call of an
/// exclusive stream (HA).
pub const FENCING_TOKEN_HEADER: &str = "X-Keepwire-Fencing-Token";

/// The gate of an exclusive stream under HA: calls to the gateway (REST and dials) pass only
/// while this replica holds the lease *and* the last successful keepalive is recent enough
/// (`until`); afterwards every call fails at once, whatever the actors still believe. Opened and
/// closed by the HA shell; shared by every actor of every exclusive stream of the replica.
#[derive(Debug)]
pub struct Fence {
    replica: String,
    open: std::sync::Mutex<Option<(u64, std::time::Instant)>>,
}

impl Fence {
    /// A closed fence for replica `replica`.
    pub fn new(replica: impl Into<String>) -> Self {
        Self {
            replica: replica.into(),
            open: std::sync::Mutex::new(None),
        }
    }

    /// Lets calls through with fencing token `token` until `until`.
    pub fn open_until(&self, token: u64, until: std::time::Instant) {
        *self.open.lock().unwrap_or_else(PoisonError::into_inner) = Some((token, until));
    }

    /// Stops every call from now on.
    pub fn close(&self) {
        *self.open.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The fencing token, when a call may be made now.
    pub fn admits(&self) -> Option<u64> {
        let open = *self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.and_then(|(token, until)| (std::time::Instant::now() < until).then_some(token))
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }
}

impl ClientFactory {
    /// Validates a gateway's URL (the URL rule, [`crate::url_rule::check`]) and TLS settings
    /// once: `timeout` bounds TCP connect, the TLS handshake and every REST request.
    /// (`ClientFactory::new` takes them from a stream's config.)
    pub fn for_gateway(url: &str, tls: &TlsConfig, timeout: Duration) -> Result<Self, Failure> {
        crate::url_rule::check("url", url).map_err(|p| Failure::Config {
            detail: p.to_string(),
        })?;
        let host = url_host(url).unwrap_or_default();
        let (verifying, skip_loopback) = match tls {
            TlsConfig::InsecureSkipVerifyLoopbackOnly => (
                crate::tls::client_config(&TlsConfig::Verified, host)?,
                // Refused here unless `url` itself is loopback.
                Some(crate::tls::client_config(tls, host)?),
            ),
            other => (crate::tls::client_config(other, host)?, None),
        };
        Ok(Self {
            verifying,
            skip_loopback,
            timeout,
            fence: None,
        })
    }

    /// The same factory, whose calls pass only through `fence` (an exclusive stream under HA).
    pub fn with_fence(mut self, fence: Arc<Fence>) -> Self {
        self.fence = Some(fence);
        self
    }

    /// Checks `url` (from the setting `key`) against the URL rule, and decides how its TLS is
    /// verified: skipped only when the stream asked for it *and* this URL's host is loopback.
    pub fn choice(&self, key: &str, url: &str) -> Result<TlsChoice, Failure> {
        let checked = crate::url_rule::check(key, url)?;
        Ok(match (&self.skip_loopback, checked.loopback) {
            (Some(_), true) => TlsChoice::SkipVerify,
            _ => TlsChoice::Verify,
        })
    }

    fn build(&self, tls: Arc<rustls::ClientConfig>) -> awc::Client {
        let connector = awc::Connector::new()
            .rustls_0_23(tls)
            .timeout(self.timeout)
            .handshake_timeout(self.timeout);
        awc::Client::builder()
            .connector(connector)
            .timeout(self.timeout)
            // A redirect would re-send a login body or a bearer token to another origin.
            .disable_redirects()
            .finish()
    }

    /// New clients for one actor (awc clients are `!Send`).
    pub fn client(&self) -> Http {
        Http {
            factory: self.clone(),
            verifying: self.build(self.verifying.clone()),
            skip_loopback: self.skip_loopback.clone().map(|tls| self.build(tls)),
        }
    }
}

/// The HTTP and WebSocket clients of one actor. Every call names the setting its URL comes from
/// and goes through the URL rule and the per-URL TLS decision ([`ClientFactory::choice`]) at
/// the moment it is made. No client follows HTTP redirects.
#[derive(Clone)]
pub struct Http {
    factory: ClientFactory,
    verifying: awc::Client,
    skip_loopback: Option<awc::Client>,
}

impl Http {
    /// The client to call `url` (from the setting `key`) with, after the URL rule.
    pub fn client_for(&self, key: &str, url: &str) -> Result<&awc::Client, Failure> {
        self.fence_headers()?;
        Ok(
            match (self.factory.choice(key, url)?, &self.skip_loopback) {
                (TlsChoice::SkipVerify, Some(skip)) => skip,
                _ => &self.verifying,
            },
        )
    }

    /// A WebSocket request to `url` (from the setting `key`), after the URL rule.
    pub fn ws(&self, key: &str, url: &str) -> Result<awc::ws::WebsocketsRequest, Failure> {
        let mut req = self.client_for(key, url)?.ws(url);
        for (k, v) in self.fence_headers()? {
            req = req.header(k, v);
        }
        Ok(req)
    }

    /// The HA headers (replica id, fencing token) to send; a failure when the fence is closed.
    pub fn fence_headers(&self) -> Result<Vec<(&'static str, String)>, Failure> {
        let Some(fence) = &self.factory.fence else {
            return Ok(Vec::new());
        };
        match fence.admits() {
            Some(token) => Ok(vec![
                (REPLICA_HEADER, fence.replica().to_string()),
                (FENCING_TOKEN_HEADER, token.to_string()),
            ]),
            None => Err(Failure::Transport {
                detail: "this replica does not hold the HA lease (fenced): no call to the gateway"
                    .into(),
            }),
        }
    }
}

/// Maps an awc request error to a failure.
pub fn send_failure(endpoint: Endpoint, e: &SendRequestError) -> Failure {
    match e {
        SendRequestError::Connect(ConnectError::Io(io))
            if io.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            Failure::Unreachable {
                detail: format!("connection refused ({})", endpoint.as_str()),
            }
        }
        SendRequestError::Connect(ConnectError::Timeout) | SendRequestError::Timeout => {
            Failure::Timeout { endpoint }
        }
        // A refused certificate is hard; any other TLS error soft (the table in `failure`).
        SendRequestError::Connect(ConnectError::Io(io)) => crate::tls::io_failure(io)
            .unwrap_or_else(|| Failure::Transport {
                detail: format!("{}: {}", endpoint.as_str(), server_text(&e.to_string())),
            }),
        // awc's errors can quote what the server sent (headers, status lines).
        other => Failure::Transport {
            detail: format!("{}: {}", endpoint.as_str(), server_text(&other.to_string())),
        },
    }
}

/// Maps a WebSocket connect error. A non-101 status loses headers and body in awc, so only the
/// status is known; the dialect says what it means ([`crate::dialect::Dialect::upgrade_refused`]).
pub fn ws_failure(e: &WsClientError, upgrade_refused: impl Fn(u16) -> Failure) -> Failure {
    match e {
        WsClientError::InvalidResponseStatus(s) if s.is_redirection() => Failure::Redirected {
            endpoint: Endpoint::Upgrade,
            status: s.as_u16(),
            location: None,
        },
        WsClientError::InvalidResponseStatus(s) => upgrade_refused(s.as_u16()),
        WsClientError::SendRequest(e) => send_failure(Endpoint::Upgrade, e),
        other => Failure::Transport {
            detail: format!("websocket upgrade: {}", server_text(&other.to_string())),
        },
    }
}

/// A received message as text without copying it: the frame's own buffer once it is checked to be
/// UTF-8, else (a gateway that sent invalid UTF-8) a lossy copy, replacement characters included.
pub fn text_of(bytes: Bytes) -> ByteString {
    // A clone of `Bytes` shares the buffer (a reference count), so the fallback still has it.
    ByteString::try_from(bytes.clone())
        .unwrap_or_else(|_| ByteString::from(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Parses a `Retry-After` header given in seconds.
pub fn retry_after(headers: &awc::http::header::HeaderMap) -> Option<Duration> {
    headers
        .get(awc::http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// An HTTP reply with its body parsed as JSON (`Value::Null` when empty or not JSON). `Debug`
/// never shows the body (token and ticket replies carry secrets).
pub struct JsonReply {
    /// Status code.
    pub status: u16,
    /// `Retry-After`, if given.
    pub retry_after: Option<Duration>,
    /// The body.
    pub body: serde_json::Value,
}

impl fmt::Debug for JsonReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonReply")
            .field("status", &self.status)
            .field("retry_after", &self.retry_after)
            .field("body", &crate::secret::REDACTED)
            .finish()
    }
}

impl JsonReply {
    /// `body[key]` as a string, if it is one.
    pub fn str_field(&self, key: &str) -> Option<&str> {
        self.body.get(key).and_then(|v| v.as_str())
    }
}

/// Sends a JSON request to `url`, which comes from the setting `key` (`body: None` sends an
/// empty `{}` for POST, as some gateways reject a body-less POST) and reads the whole reply.
/// The URL passes the URL rule first ([`Http::client_for`]). A 3xx answer is
/// [`Failure::Redirected`] (never followed); other non-2xx statuses are returned, not mapped.
pub async fn call_json(
    http: &Http,
    method: awc::http::Method,
    key: &str,
    url: &str,
    endpoint: Endpoint,
    body: Option<serde_json::Value>,
    headers: &[(&'static str, String)],
) -> Result<JsonReply, Failure> {
    let client = http.client_for(key, url)?;
    let mut req = client.request(method.clone(), url);
    for (k, v) in http.fence_headers()? {
        req = req.insert_header((k, v));
    }
    for (k, v) in headers {
        req = req.insert_header((*k, v.as_str()));
    }
    let sent = if method == awc::http::Method::GET {
        req.send().await
    } else {
        req.send_json(&body.unwrap_or_else(|| serde_json::json!({})))
            .await
    };
    let mut resp = sent.map_err(|e| send_failure(endpoint, &e))?;
    if resp.status().is_redirection() {
        let location = resp
            .headers()
            .get(awc::http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(crate::url_rule::origin);
        return Err(Failure::Redirected {
            endpoint,
            status: resp.status().as_u16(),
            location,
        });
    }
    let status = resp.status().as_u16();
    let retry_after = retry_after(resp.headers());
    let bytes = resp
        .body()
        .limit(1 << 20)
        .await
        .map_err(|e| Failure::Transport {
            detail: format!("{}: reading body: {e}", endpoint.as_str()),
        })?;
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok(JsonReply {
        status,
        retry_after,
        body,
    })
}

/// The kind of a reassembled message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// A text message (possibly with invalid UTF-8: decode lossily).
    Text,
    /// A binary message.
    Binary,
}

/// Reassembles fragmented WebSocket messages (awc does not), with a total-size cap.
#[derive(Debug)]
pub struct Assembler {
    buf: BytesMut,
    kind: Option<MessageKind>,
    limit: usize,
}

impl Assembler {
    /// An assembler that refuses messages larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            kind: None,
            limit,
        }
    }

    /// Feeds one continuation item; returns a whole message when the last fragment arrives.
    pub fn push(
        &mut self,
        item: actix_http::ws::Item,
    ) -> Result<Option<(MessageKind, Bytes)>, Failure> {
        use actix_http::ws::Item;
        let (chunk, start, last) = match item {
            Item::FirstText(b) => (b, Some(MessageKind::Text), false),
            Item::FirstBinary(b) => (b, Some(MessageKind::Binary), false),
            Item::Continue(b) => (b, None, false),
            Item::Last(b) => (b, None, true),
        };
        if let Some(kind) = start {
            // A new first fragment discards any unfinished message (protocol violation by the peer).
            self.buf.clear();
            self.kind = Some(kind);
        } else if self.kind.is_none() {
            return Ok(None); // continuation without a start: skip
        }
        if self.buf.len() + chunk.len() > self.limit {
            self.buf.clear();
            self.kind = None;
            return Err(Failure::Oversized { limit: self.limit });
        }
        self.buf.extend_from_slice(&chunk);
        if last {
            let kind = self.kind.take().unwrap_or(MessageKind::Text);
            return Ok(Some((kind, self.buf.split().freeze())));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_http::ws::Item;

    #[test]
    fn hosts_are_extracted() {
        assert_eq!(url_host("https://127.0.0.1:5000/v1/api"), Some("127.0.0.1"));
        assert_eq!(url_host("ws://[::1]:80/ws?x=1"), Some("[::1]"));
        assert_eq!(
            url_host("https://user:pw@api.ibkr.com"),
            Some("api.ibkr.com")
        );
        assert_eq!(url_host("nonsense"), None);
    }

    #[test]
    fn skip_verify_on_a_loopback_url_still_verifies_every_other_host() {
        let f = ClientFactory::for_gateway(
            "https://127.0.0.1:5000",
            &TlsConfig::InsecureSkipVerifyLoopbackOnly,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            f.choice("url", "https://127.0.0.1:5000/v1/api/tickle"),
            Ok(TlsChoice::SkipVerify)
        );
        assert_eq!(
            f.choice("socket_url", "wss://[::1]:5000/ws"),
            Ok(TlsChoice::SkipVerify)
        );
        for url in [
            "https://auth.example.com/api/v1/auth/token",
            "wss://feed.example.com/ws",
            "https://127.0.0.1.example.com/token",
        ] {
            assert_eq!(f.choice("token_url", url), Ok(TlsChoice::Verify), "{url}");
        }
        // A stream that did not ask to skip verifies loopback hosts too.
        let verified = ClientFactory::for_gateway(
            "https://127.0.0.1:5000",
            &TlsConfig::Verified,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            verified.choice("url", "https://127.0.0.1:5000"),
            Ok(TlsChoice::Verify)
        );
    }

    #[test]
    fn every_call_goes_through_the_url_rule() {
        let f = ClientFactory::for_gateway(
            "http://127.0.0.1:5000",
            &TlsConfig::Verified,
            Duration::from_secs(1),
        )
        .unwrap();
        let err = f
            .choice("token_url", "http://auth.example.com/token")
            .unwrap_err();
        assert_eq!(
            err.class(crate::failure::CompetingPolicy::Compete),
            crate::failure::Class::Hard
        );
        assert!(err.to_string().starts_with("token_url refused"), "{err}");
    }

    #[test]
    fn a_redirected_upgrade_is_a_hard_redirect_failure() {
        let e = WsClientError::InvalidResponseStatus(awc::http::StatusCode::TEMPORARY_REDIRECT);
        let f = ws_failure(&e, |s| {
            crate::failure::http_failure(Endpoint::Upgrade, s, None)
        });
        assert!(
            matches!(f, Failure::Redirected { status: 307, .. }),
            "{f:?}"
        );
        assert_eq!(
            f.class(crate::failure::CompetingPolicy::Compete),
            crate::failure::Class::Hard
        );
    }

    #[test]
    fn schemes_are_swapped_both_ways() {
        assert_eq!(socket_url("https://h:1/x"), "wss://h:1/x");
        assert_eq!(socket_url("http://h/x"), "ws://h/x");
        assert_eq!(socket_url("wss://h/x"), "wss://h/x");
        assert_eq!(http_url("wss://h/x"), "https://h/x");
        assert_eq!(http_url("ws://h/x"), "http://h/x");
        assert_eq!(http_url("https://h/x"), "https://h/x");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode_query_value("a+b/c=d e~x_y.z-1"),
            "a%2Bb%2Fc%3Dd%20e~x_y.z-1"
        );
    }

    #[test]
    fn query_values_are_redacted() {
        assert_eq!(
            redact_url("wss://h/ws?ticket=abc%2F1&x=2&flag"),
            "wss://h/ws?ticket=***&x=***&flag"
        );
        assert_eq!(redact_url("wss://h/ws"), "wss://h/ws");
    }

    #[test]
    fn fragments_are_reassembled() {
        let mut a = Assembler::new(100);
        assert_eq!(
            a.push(Item::FirstText(Bytes::from_static(b"{\"a\"")))
                .unwrap(),
            None
        );
        assert_eq!(
            a.push(Item::Continue(Bytes::from_static(b":"))).unwrap(),
            None
        );
        let (kind, msg) = a
            .push(Item::Last(Bytes::from_static(b"1}")))
            .unwrap()
            .unwrap();
        assert_eq!(kind, MessageKind::Text);
        assert_eq!(&msg[..], b"{\"a\":1}");
    }

    #[test]
    fn reassembly_is_capped() {
        let mut a = Assembler::new(4);
        a.push(Item::FirstBinary(Bytes::from_static(b"abc")))
            .unwrap();
        assert_eq!(
            a.push(Item::Last(Bytes::from_static(b"de"))),
            Err(Failure::Oversized { limit: 4 })
        );
        // and it recovers for the next message
        a.push(Item::FirstText(Bytes::from_static(b"ok"))).unwrap();
        assert!(a.push(Item::Last(Bytes::new())).unwrap().is_some());
    }
}
