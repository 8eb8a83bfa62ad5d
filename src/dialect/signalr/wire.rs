//! SignalR JSON hub protocol wire format, shared by the client dialect and the emulator's hub.
//!
//! Covers what crosses the wire between an ASP.NET Core SignalR client and server when the JSON
//! hub protocol runs over WebSockets:
//!
//! * record framing: every message is a JSON object followed by [`RECORD_SEPARATOR`] (`0x1E`);
//!   a WebSocket message may carry several records, and a record may be split across several
//!   WebSocket messages: [`Framer`] buffers chunks and yields complete records, with a size cap;
//! * the handshake: [`HandshakeRequest`] (`{"protocol":"json","version":1}`) and
//!   [`HandshakeResponse`] (`{}` or `{"error":"…"}`);
//! * hub messages of types 1–7 ([`HubMessage`]), parsed tolerantly (unknown fields are ignored,
//!   an unknown `type` is an error value, never a panic) and encoded with their separator;
//! * the negotiate response ([`Negotiation`]): version 1 with `connectionToken`, version 0 with
//!   `connectionId` only, the redirect form and the error form;
//! * URL helpers for the negotiate and connect URLs.
//!
//! Everything here is pure (no I/O), so both sides of a connection can use it. Types that carry
//! secrets (connection tokens, access tokens) redact them in their `Debug` output.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// The byte that ends every record (handshake and hub messages): ASCII Record Separator.
pub const RECORD_SEPARATOR: u8 = 0x1E;

/// [`RECORD_SEPARATOR`] as a `char`, for building text frames.
pub const RECORD_SEPARATOR_CHAR: char = '\u{1e}';

/// Name of the JSON hub protocol in the handshake.
pub const PROTOCOL_NAME: &str = "json";

/// The JSON hub protocol version a client asks for without stateful reconnect.
pub const PROTOCOL_VERSION: u32 = 1;

/// The highest JSON hub protocol version a server accepts (version 2 adds stateful reconnect,
/// whose messages a server only sends when negotiate enabled it).
pub const MAX_PROTOCOL_VERSION: u32 = 2;

/// Default cap on one record (and on the bytes buffered while waiting for its end): 1 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;

/// Why bytes could not be framed or parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A record (complete or still incomplete) grew beyond the framer's cap; the framer dropped
    /// its buffer.
    #[error("a SignalR message exceeds {limit} bytes")]
    TooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// The record is not valid JSON (or not UTF-8).
    #[error("invalid JSON in a SignalR message: {0}")]
    Json(String),
    /// The record is JSON but not an object.
    #[error("a SignalR message is not a JSON object")]
    NotAnObject,
    /// The `type` field is missing or not an integer.
    #[error("a SignalR message has no integer `type`")]
    MissingType,
    /// The `type` is an integer this codec does not know (8 Ack and 9 Sequence included: they
    /// exist only with stateful reconnect).
    #[error("unknown SignalR message type {0}")]
    UnknownType(i64),
    /// A required field is missing or has the wrong JSON type.
    #[error("SignalR {message} message: field `{field}` is missing or invalid")]
    InvalidField {
        /// The message kind (`Invocation`, `handshake response`, …).
        message: &'static str,
        /// The field's wire name.
        field: &'static str,
    },
    /// A Completion carries both `result` and `error`.
    #[error("SignalR Completion carries both a result and an error")]
    ResultAndError,
    /// A reply to the handshake carries a `type`: it is a hub message, not a handshake reply.
    #[error("expected a SignalR handshake reply, got a hub message")]
    NotAHandshakeReply,
    /// The data does not contain a complete record (no separator yet).
    #[error("incomplete SignalR record (no 0x1E separator)")]
    Incomplete,
    /// The negotiate answer comes from a legacy ASP.NET (not Core) SignalR server.
    #[error("the server speaks legacy ASP.NET SignalR, not ASP.NET Core SignalR")]
    LegacyServer,
}

// ---------------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------------

/// Reassembles records from chunks (WebSocket messages) and yields each complete record,
/// without its separator. Several records may share a chunk and one record may span several.
///
/// ```
/// use keepwire::dialect::signalr::wire::Framer;
/// let mut framer = Framer::new(1024);
/// framer.push("{\"type\":6}\u{1e}{\"ty").unwrap();
/// assert_eq!(framer.next_record().as_deref(), Some(&b"{\"type\":6}"[..]));
/// assert_eq!(framer.next_record(), None);
/// framer.push("pe\":6}\u{1e}").unwrap();
/// assert_eq!(framer.next_record().as_deref(), Some(&b"{\"type\":6}"[..]));
/// ```
#[derive(Clone, Debug)]
pub struct Framer {
    /// Bytes received and not yet yielded.
    buf: Vec<u8>,
    /// Start of the first record not yet yielded.
    head: usize,
    /// How far `buf` has been searched for a separator (from `head`).
    scanned: usize,
    /// Separators found at or after `head` and not yet yielded, in order.
    ends: std::collections::VecDeque<usize>,
    /// Cap on one record.
    max: usize,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE_SIZE)
    }
}

impl Framer {
    /// A framer that refuses records longer than `max_message_size` bytes (at least 1).
    pub fn new(max_message_size: usize) -> Self {
        Self {
            buf: Vec::new(),
            head: 0,
            scanned: 0,
            ends: std::collections::VecDeque::new(),
            max: max_message_size.max(1),
        }
    }

    /// The cap on one record, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.max
    }

    /// Appends a chunk (a text or binary WebSocket message).
    ///
    /// # Errors
    ///
    /// [`WireError::TooLarge`] when a record in the buffer (complete or not) exceeds the cap; the
    /// whole buffer is then dropped (the connection should be closed: framing is lost).
    pub fn push(&mut self, chunk: impl AsRef<[u8]>) -> Result<(), WireError> {
        let chunk = chunk.as_ref();
        if self.head > 0 && self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
            self.scanned = 0;
        }
        self.buf.extend_from_slice(chunk);
        let mut start = self.ends.back().map_or(self.head, |end| end + 1);
        let from = self.scanned;
        for (offset, byte) in self.buf[from..].iter().enumerate() {
            if *byte == RECORD_SEPARATOR {
                let end = from + offset;
                if end - start > self.max {
                    return Err(self.overflow());
                }
                self.ends.push_back(end);
                start = end + 1;
            }
        }
        self.scanned = self.buf.len();
        if self.buf.len() - start > self.max {
            return Err(self.overflow());
        }
        Ok(())
    }

    /// The next complete record (without its separator), `None` until one is complete.
    pub fn next_record(&mut self) -> Option<Vec<u8>> {
        let end = self.ends.pop_front()?;
        let record = self.buf[self.head..end].to_vec();
        self.head = end + 1;
        if self.ends.is_empty() && self.head > self.buf.len() / 2 {
            self.buf.drain(..self.head);
            self.scanned -= self.head;
            self.head = 0;
        }
        Some(record)
    }

    /// Every complete record now buffered, in order.
    pub fn drain_records(&mut self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.next_record()).collect()
    }

    /// Bytes buffered that belong to no yielded record yet.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.head
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.buffered() == 0
    }

    /// Drops everything buffered.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.head = 0;
        self.scanned = 0;
        self.ends.clear();
    }

    /// Drops the buffer and reports the cap.
    fn overflow(&mut self) -> WireError {
        self.clear();
        WireError::TooLarge { limit: self.max }
    }
}

/// Splits off the first record: `(record without separator, the bytes after the separator)`,
/// or `None` when `data` holds no separator. Useful for the handshake reply, after which the
/// same frame may carry ordinary messages.
pub fn split_first_record(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = data.iter().position(|b| *b == RECORD_SEPARATOR)?;
    Some((&data[..at], &data[at + 1..]))
}

/// Appends the separator to a JSON text.
fn terminated(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + 1);
    out.push_str(json);
    out.push(RECORD_SEPARATOR_CHAR);
    out
}

/// Parses a record into a JSON object.
fn parse_object(record: &[u8]) -> Result<Map<String, Value>, WireError> {
    match serde_json::from_slice::<Value>(record) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(WireError::NotAnObject),
        Err(err) => Err(WireError::Json(err.to_string())),
    }
}

// ---------------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------------

/// The client's first record: which hub protocol and version it speaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// Protocol name (`json`).
    pub protocol: String,
    /// Protocol version (1; 2 with stateful reconnect).
    pub version: u32,
}

impl Default for HandshakeRequest {
    fn default() -> Self {
        Self::json()
    }
}

impl HandshakeRequest {
    /// `{"protocol":"json","version":1}`.
    pub fn json() -> Self {
        Self {
            protocol: PROTOCOL_NAME.to_owned(),
            version: PROTOCOL_VERSION,
        }
    }

    /// The record with its separator.
    pub fn encode(&self) -> String {
        let value = serde_json::json!({ "protocol": self.protocol, "version": self.version });
        terminated(&value.to_string())
    }

    /// Parses one record (without separator). Unknown fields are ignored.
    ///
    /// # Errors
    ///
    /// Invalid JSON, not an object, or a missing/invalid `protocol` or `version`.
    pub fn parse(record: &[u8]) -> Result<Self, WireError> {
        let map = parse_object(record)?;
        let invalid = |field| WireError::InvalidField {
            message: "handshake request",
            field,
        };
        let protocol = map
            .get("protocol")
            .and_then(Value::as_str)
            .ok_or(invalid("protocol"))?
            .to_owned();
        let version = map
            .get("version")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or(invalid("version"))?;
        Ok(Self { protocol, version })
    }

    /// What a server that speaks only the JSON protocol (versions 1 to
    /// [`MAX_PROTOCOL_VERSION`]) answers: `Ok` or an error reply in ASP.NET Core's words.
    pub fn check_json(&self) -> HandshakeResponse {
        if self.protocol != PROTOCOL_NAME {
            HandshakeResponse::Error(format!(
                "The protocol '{}' is not supported.",
                self.protocol
            ))
        } else if self.version == 0 || self.version > MAX_PROTOCOL_VERSION {
            HandshakeResponse::Error(format!(
                "The server does not support version {} of the '{}' protocol.",
                self.version, self.protocol
            ))
        } else {
            HandshakeResponse::Ok
        }
    }
}

/// The server's reply to the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeResponse {
    /// `{}`: the connection is ready for hub messages.
    Ok,
    /// `{"error":"…"}`: the server refuses; it closes the connection next.
    Error(String),
}

impl HandshakeResponse {
    /// The record with its separator.
    pub fn encode(&self) -> String {
        match self {
            Self::Ok => terminated("{}"),
            Self::Error(error) => terminated(&serde_json::json!({ "error": error }).to_string()),
        }
    }

    /// Parses one record (without separator). Unknown fields are ignored; a reply with a
    /// `type` field is a hub message, not a handshake reply.
    ///
    /// # Errors
    ///
    /// Invalid JSON, not an object, [`WireError::NotAHandshakeReply`], or an `error` that is not
    /// a string.
    pub fn parse(record: &[u8]) -> Result<Self, WireError> {
        let map = parse_object(record)?;
        if map.contains_key("type") {
            return Err(WireError::NotAHandshakeReply);
        }
        match map.get("error") {
            None | Some(Value::Null) => Ok(Self::Ok),
            Some(Value::String(error)) => Ok(Self::Error(error.clone())),
            Some(_) => Err(WireError::InvalidField {
                message: "handshake response",
                field: "error",
            }),
        }
    }

    /// Parses the reply at the start of a frame and returns it with the bytes after its
    /// separator (ordinary hub messages that shared the frame).
    ///
    /// # Errors
    ///
    /// [`WireError::Incomplete`] without a separator, else as [`HandshakeResponse::parse`].
    pub fn parse_frame(frame: &[u8]) -> Result<(Self, &[u8]), WireError> {
        let (record, rest) = split_first_record(frame).ok_or(WireError::Incomplete)?;
        Ok((Self::parse(record)?, rest))
    }
}

// ---------------------------------------------------------------------------------------------
// Hub messages
// ---------------------------------------------------------------------------------------------

/// Message type numbers of the JSON hub protocol.
pub mod message_type {
    /// Invocation.
    pub const INVOCATION: i64 = 1;
    /// StreamItem.
    pub const STREAM_ITEM: i64 = 2;
    /// Completion.
    pub const COMPLETION: i64 = 3;
    /// StreamInvocation.
    pub const STREAM_INVOCATION: i64 = 4;
    /// CancelInvocation.
    pub const CANCEL_INVOCATION: i64 = 5;
    /// Ping.
    pub const PING: i64 = 6;
    /// Close.
    pub const CLOSE: i64 = 7;
}

/// Message headers (`headers`), string to string.
pub type Headers = BTreeMap<String, String>;

/// A call of a hub (or client) method: type 1.
#[derive(Clone, Debug, PartialEq)]
pub struct Invocation {
    /// Present when the caller wants a Completion; absent: fire and forget.
    pub invocation_id: Option<String>,
    /// Method name.
    pub target: String,
    /// Positional arguments.
    pub arguments: Vec<Value>,
    /// Ids of client-to-server streams passed as arguments (`streamIds`).
    pub stream_ids: Option<Vec<String>>,
    /// Headers.
    pub headers: Option<Headers>,
}

impl Invocation {
    /// A call without an invocation id (no reply expected).
    pub fn send(target: impl Into<String>, arguments: Vec<Value>) -> Self {
        Self {
            invocation_id: None,
            target: target.into(),
            arguments,
            stream_ids: None,
            headers: None,
        }
    }

    /// A call that expects a Completion for `invocation_id`.
    pub fn invoke(
        invocation_id: impl Into<String>,
        target: impl Into<String>,
        arguments: Vec<Value>,
    ) -> Self {
        Self {
            invocation_id: Some(invocation_id.into()),
            ..Self::send(target, arguments)
        }
    }
}

/// A call of a streaming hub method: type 4.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamInvocation {
    /// Id of the stream (its items and completion carry it).
    pub invocation_id: String,
    /// Method name.
    pub target: String,
    /// Positional arguments.
    pub arguments: Vec<Value>,
    /// Ids of client-to-server streams passed as arguments.
    pub stream_ids: Option<Vec<String>>,
    /// Headers.
    pub headers: Option<Headers>,
}

/// How an invocation ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// No `result` and no `error` (a void method, or the end of a stream).
    Void,
    /// `result` (may be JSON `null`, which is not the same as [`Outcome::Void`] on the wire).
    Result(Value),
    /// `error`.
    Error(String),
}

/// The end of an invocation: type 3.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The invocation it completes.
    pub invocation_id: String,
    /// Result, error, or neither.
    pub outcome: Outcome,
    /// Headers.
    pub headers: Option<Headers>,
}

impl Completion {
    /// A completion with a result (`null` for a void hub method, as ASP.NET Core sends it).
    pub fn result(invocation_id: impl Into<String>, result: Value) -> Self {
        Self {
            invocation_id: invocation_id.into(),
            outcome: Outcome::Result(result),
            headers: None,
        }
    }

    /// A completion with an error.
    pub fn error(invocation_id: impl Into<String>, error: impl Into<String>) -> Self {
        Self {
            invocation_id: invocation_id.into(),
            outcome: Outcome::Error(error.into()),
            headers: None,
        }
    }
}

/// The end of a connection, announced by either side: type 7.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Close {
    /// Why (absent: a normal close).
    pub error: Option<String>,
    /// Whether the client may reconnect (absent on the wire means `false`).
    pub allow_reconnect: bool,
}

/// One hub protocol message (types 1–7).
#[derive(Clone, Debug, PartialEq)]
pub enum HubMessage {
    /// Type 1.
    Invocation(Invocation),
    /// Type 2: one item of a stream.
    StreamItem {
        /// The stream's invocation id.
        invocation_id: String,
        /// The item.
        item: Value,
        /// Headers.
        headers: Option<Headers>,
    },
    /// Type 3.
    Completion(Completion),
    /// Type 4.
    StreamInvocation(StreamInvocation),
    /// Type 5: the caller cancels a stream.
    CancelInvocation {
        /// The stream's invocation id.
        invocation_id: String,
        /// Headers.
        headers: Option<Headers>,
    },
    /// Type 6: keepalive.
    Ping,
    /// Type 7.
    Close(Close),
}

/// Field accessors over a parsed message object.
struct Fields {
    /// The object.
    map: Map<String, Value>,
    /// The message kind, for errors.
    kind: &'static str,
}

impl Fields {
    /// The error for a missing or invalid field.
    fn invalid(&self, field: &'static str) -> WireError {
        WireError::InvalidField {
            message: self.kind,
            field,
        }
    }

    /// A required non-empty string.
    fn string(&mut self, field: &'static str) -> Result<String, WireError> {
        match self.map.remove(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            _ => Err(self.invalid(field)),
        }
    }

    /// An optional non-empty string (`null` counts as absent).
    fn opt_string(&mut self, field: &'static str) -> Result<Option<String>, WireError> {
        match self.map.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
            Some(_) => Err(self.invalid(field)),
        }
    }

    /// A required array (absent counts as empty, as the official clients send it).
    fn arguments(&mut self) -> Result<Vec<Value>, WireError> {
        match self.map.remove("arguments") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(self.invalid("arguments")),
        }
    }

    /// Optional `streamIds`.
    fn stream_ids(&mut self) -> Result<Option<Vec<String>>, WireError> {
        match self.map.remove("streamIds") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    _ => Err(self.invalid("streamIds")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.invalid("streamIds")),
        }
    }

    /// Optional `headers` (string values only).
    fn headers(&mut self) -> Result<Option<Headers>, WireError> {
        match self.map.remove("headers") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    _ => Err(self.invalid("headers")),
                })
                .collect::<Result<Headers, _>>()
                .map(Some),
            Some(_) => Err(self.invalid("headers")),
        }
    }
}

impl HubMessage {
    /// The wire `type` of this message.
    pub fn message_type(&self) -> i64 {
        match self {
            Self::Invocation(_) => message_type::INVOCATION,
            Self::StreamItem { .. } => message_type::STREAM_ITEM,
            Self::Completion(_) => message_type::COMPLETION,
            Self::StreamInvocation(_) => message_type::STREAM_INVOCATION,
            Self::CancelInvocation { .. } => message_type::CANCEL_INVOCATION,
            Self::Ping => message_type::PING,
            Self::Close(_) => message_type::CLOSE,
        }
    }

    /// Parses one record (without separator). Tolerant: unknown fields are ignored, absent
    /// optional fields and `null` are the same.
    ///
    /// # Errors
    ///
    /// Invalid JSON or UTF-8, not an object, no integer `type`, an unknown `type`
    /// ([`WireError::UnknownType`]; a receiver may skip such messages), or a required field
    /// missing or of the wrong JSON type.
    pub fn parse(record: &[u8]) -> Result<Self, WireError> {
        let mut map = parse_object(record)?;
        let kind = match map.remove("type") {
            Some(Value::Number(n)) => n.as_i64().ok_or(WireError::MissingType)?,
            _ => return Err(WireError::MissingType),
        };
        let name = match kind {
            message_type::INVOCATION => "Invocation",
            message_type::STREAM_ITEM => "StreamItem",
            message_type::COMPLETION => "Completion",
            message_type::STREAM_INVOCATION => "StreamInvocation",
            message_type::CANCEL_INVOCATION => "CancelInvocation",
            message_type::PING => return Ok(Self::Ping),
            message_type::CLOSE => "Close",
            other => return Err(WireError::UnknownType(other)),
        };
        let mut f = Fields { map, kind: name };
        Ok(match kind {
            message_type::INVOCATION => Self::Invocation(Invocation {
                invocation_id: f.opt_string("invocationId")?,
                target: f.string("target")?,
                arguments: f.arguments()?,
                stream_ids: f.stream_ids()?,
                headers: f.headers()?,
            }),
            message_type::STREAM_ITEM => {
                let invocation_id = f.string("invocationId")?;
                let item = f.map.remove("item").ok_or(f.invalid("item"))?;
                Self::StreamItem {
                    invocation_id,
                    item,
                    headers: f.headers()?,
                }
            }
            message_type::COMPLETION => {
                let invocation_id = f.string("invocationId")?;
                let result = f.map.remove("result");
                let error = f.opt_string("error")?;
                let outcome = match (result, error) {
                    (Some(_), Some(_)) => return Err(WireError::ResultAndError),
                    (Some(result), None) => Outcome::Result(result),
                    (None, Some(error)) => Outcome::Error(error),
                    (None, None) => Outcome::Void,
                };
                Self::Completion(Completion {
                    invocation_id,
                    outcome,
                    headers: f.headers()?,
                })
            }
            message_type::STREAM_INVOCATION => Self::StreamInvocation(StreamInvocation {
                invocation_id: f.string("invocationId")?,
                target: f.string("target")?,
                arguments: f.arguments()?,
                stream_ids: f.stream_ids()?,
                headers: f.headers()?,
            }),
            message_type::CANCEL_INVOCATION => Self::CancelInvocation {
                invocation_id: f.string("invocationId")?,
                headers: f.headers()?,
            },
            _ => {
                let error = match f.map.remove("error") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s),
                    Some(_) => return Err(f.invalid("error")),
                };
                let allow_reconnect = match f.map.remove("allowReconnect") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => b,
                    Some(_) => return Err(f.invalid("allowReconnect")),
                };
                Self::Close(Close {
                    error,
                    allow_reconnect,
                })
            }
        })
    }

    /// Parses every record of a text frame that holds whole records (each ended by the
    /// separator); a trailing incomplete record is reported as [`WireError::Incomplete`].
    /// Receivers that must cope with records split across frames use a [`Framer`] instead.
    pub fn parse_frame(frame: &[u8]) -> Vec<Result<Self, WireError>> {
        let mut out = Vec::new();
        let mut rest = frame;
        while !rest.is_empty() {
            match split_first_record(rest) {
                Some((record, after)) => {
                    out.push(Self::parse(record));
                    rest = after;
                }
                None => {
                    out.push(Err(WireError::Incomplete));
                    break;
                }
            }
        }
        out
    }

    /// The message as a JSON object (without separator). Optional fields that are absent are
    /// omitted; `allowReconnect` is written only when true.
    pub fn to_json(&self) -> Value {
        let mut map = self.fields_json();
        map.insert("type".to_owned(), Value::from(self.message_type()));
        Value::Object(map)
    }

    /// Every field but `type`.
    fn fields_json(&self) -> Map<String, Value> {
        let mut map = Map::new();
        let put_headers = |map: &mut Map<String, Value>, headers: &Option<Headers>| {
            if let Some(headers) = headers {
                let obj = headers
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                map.insert("headers".to_owned(), Value::Object(obj));
            }
        };
        let put_stream_ids = |map: &mut Map<String, Value>, ids: &Option<Vec<String>>| {
            if let Some(ids) = ids {
                map.insert("streamIds".to_owned(), Value::from(ids.clone()));
            }
        };
        match self {
            Self::Invocation(inv) => {
                put_headers(&mut map, &inv.headers);
                if let Some(id) = &inv.invocation_id {
                    map.insert("invocationId".to_owned(), Value::from(id.as_str()));
                }
                map.insert("target".to_owned(), Value::from(inv.target.as_str()));
                map.insert("arguments".to_owned(), Value::Array(inv.arguments.clone()));
                put_stream_ids(&mut map, &inv.stream_ids);
            }
            Self::StreamItem {
                invocation_id,
                item,
                headers,
            } => {
                put_headers(&mut map, headers);
                map.insert(
                    "invocationId".to_owned(),
                    Value::from(invocation_id.as_str()),
                );
                map.insert("item".to_owned(), item.clone());
            }
            Self::Completion(c) => {
                put_headers(&mut map, &c.headers);
                map.insert(
                    "invocationId".to_owned(),
                    Value::from(c.invocation_id.as_str()),
                );
                match &c.outcome {
                    Outcome::Void => {}
                    Outcome::Result(result) => {
                        map.insert("result".to_owned(), result.clone());
                    }
                    Outcome::Error(error) => {
                        map.insert("error".to_owned(), Value::from(error.as_str()));
                    }
                }
            }
            Self::StreamInvocation(inv) => {
                put_headers(&mut map, &inv.headers);
                map.insert(
                    "invocationId".to_owned(),
                    Value::from(inv.invocation_id.as_str()),
                );
                map.insert("target".to_owned(), Value::from(inv.target.as_str()));
                map.insert("arguments".to_owned(), Value::Array(inv.arguments.clone()));
                put_stream_ids(&mut map, &inv.stream_ids);
            }
            Self::CancelInvocation {
                invocation_id,
                headers,
            } => {
                put_headers(&mut map, headers);
                map.insert(
                    "invocationId".to_owned(),
                    Value::from(invocation_id.as_str()),
                );
            }
            Self::Ping => {}
            Self::Close(close) => {
                if let Some(error) = &close.error {
                    map.insert("error".to_owned(), Value::from(error.as_str()));
                }
                if close.allow_reconnect {
                    map.insert("allowReconnect".to_owned(), Value::Bool(true));
                }
            }
        }
        map
    }

    /// The record with its separator, ready to be sent (alone or concatenated with others in
    /// one text frame). `type` comes first, as ASP.NET Core writes it.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the record with its separator to `out`.
    pub fn encode_into(&self, out: &mut String) {
        out.push_str("{\"type\":");
        out.push_str(&self.message_type().to_string());
        let rest = Value::Object(self.fields_json()).to_string();
        // `rest` is `{}` or `{…}`: splice its members after the type.
        if let Some(members) = rest.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
            if !members.is_empty() {
                out.push(',');
                out.push_str(members);
            }
        }
        out.push('}');
        out.push(RECORD_SEPARATOR_CHAR);
    }
}

/// The encoded Ping record (`{"type":6}` + separator).
pub fn ping_record() -> &'static str {
    "{\"type\":6}\u{1e}"
}

// ---------------------------------------------------------------------------------------------
// Negotiate
// ---------------------------------------------------------------------------------------------

/// One transport a server offers in its negotiate answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvailableTransport {
    /// `WebSockets`, `ServerSentEvents` or `LongPolling`.
    pub transport: String,
    /// `Text` and/or `Binary`.
    pub transfer_formats: Vec<String>,
}

impl AvailableTransport {
    /// WebSockets with Text and Binary, as ASP.NET Core offers it.
    pub fn websockets() -> Self {
        Self {
            transport: "WebSockets".to_owned(),
            transfer_formats: vec!["Text".to_owned(), "Binary".to_owned()],
        }
    }
}

/// A negotiate answer that lets the client connect.
#[derive(Clone, PartialEq, Eq)]
pub struct NegotiateConnect {
    /// `negotiateVersion` (0 when absent).
    pub negotiate_version: u32,
    /// The public connection id.
    pub connection_id: String,
    /// What goes in `?id=` on the transport: `connectionToken` (version 1), or `connectionId`
    /// (version 0, which has no token). Secret: redacted in `Debug`.
    pub connection_token: String,
    /// The transports offered.
    pub available_transports: Vec<AvailableTransport>,
    /// Whether the server enables stateful reconnect (`useStatefulReconnect`).
    pub use_stateful_reconnect: bool,
}

impl fmt::Debug for NegotiateConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NegotiateConnect")
            .field("negotiate_version", &self.negotiate_version)
            .field("connection_id", &self.connection_id)
            .field("connection_token", &"<redacted>")
            .field("available_transports", &self.available_transports)
            .field("use_stateful_reconnect", &self.use_stateful_reconnect)
            .finish()
    }
}

impl NegotiateConnect {
    /// Whether WebSockets with the Text transfer format (what the JSON protocol needs) is offered.
    pub fn offers_websockets_text(&self) -> bool {
        self.available_transports
            .iter()
            .any(|t| t.transport == "WebSockets" && t.transfer_formats.iter().any(|f| f == "Text"))
    }
}

/// Every form of negotiate answer.
#[derive(Clone, PartialEq, Eq)]
pub enum Negotiation {
    /// Connect with this connection token.
    Connect(NegotiateConnect),
    /// Negotiate again at `url` (at most [`MAX_NEGOTIATE_REDIRECTS`] times), with `access_token` (if given) instead of
    /// the caller's token for this attempt only. The token is redacted in `Debug`.
    Redirect {
        /// Where to negotiate next.
        url: String,
        /// The token to use there.
        access_token: Option<String>,
    },
    /// `{"error":"…"}`: the server refuses; do not connect.
    Error(String),
}

impl fmt::Debug for Negotiation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(c) => f.debug_tuple("Connect").field(c).finish(),
            Self::Redirect { url, access_token } => f
                .debug_struct("Redirect")
                .field("url", &crate::transport::redact_url(url))
                .field("access_token", &access_token.as_ref().map(|_| "<redacted>"))
                .finish(),
            Self::Error(error) => f.debug_tuple("Error").field(error).finish(),
        }
    }
}

/// How many negotiate redirects keepwire follows. The official clients allow 100; Azure SignalR
/// Service redirects once (application server → service), so 10 leaves room for a chain while a
/// redirect loop costs at most 11 requests per dial (each carrying a token), not 101.
pub const MAX_NEGOTIATE_REDIRECTS: usize = 10;

impl Negotiation {
    /// Parses a negotiate response body. Unknown fields are ignored. The forms are tried in the
    /// official client's order: `error`, legacy server, `url` (redirect), then connect.
    ///
    /// # Errors
    ///
    /// Invalid JSON, not an object, [`WireError::LegacyServer`], or a connect answer without a
    /// `connectionId` (or, for version ≥ 1, without a `connectionToken`).
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut map = parse_object(body)?;
        let invalid = |field| WireError::InvalidField {
            message: "negotiate response",
            field,
        };
        if let Some(error) = map.get("error").filter(|v| !v.is_null()) {
            return Ok(Self::Error(match error {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }));
        }
        if map.get("ProtocolVersion").is_some_and(|v| !v.is_null()) {
            return Err(WireError::LegacyServer);
        }
        if let Some(url) = map.get("url").filter(|v| !v.is_null()) {
            let url = url.as_str().ok_or(invalid("url"))?.to_owned();
            let access_token = match map.get("accessToken") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(invalid("accessToken")),
            };
            return Ok(Self::Redirect { url, access_token });
        }
        let negotiate_version = map
            .get("negotiateVersion")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0);
        let connection_id = match map.remove("connectionId") {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => return Err(invalid("connectionId")),
        };
        let connection_token = if negotiate_version >= 1 {
            match map.remove("connectionToken") {
                Some(Value::String(s)) if !s.is_empty() => s,
                _ => return Err(invalid("connectionToken")),
            }
        } else {
            connection_id.clone()
        };
        let available_transports = match map.remove("availableTransports") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .into_iter()
                .filter_map(|item| {
                    let transport = item.get("transport")?.as_str()?.to_owned();
                    let transfer_formats = item
                        .get("transferFormats")
                        .and_then(Value::as_array)
                        .map(|formats| {
                            formats
                                .iter()
                                .filter_map(|f| f.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    Some(AvailableTransport {
                        transport,
                        transfer_formats,
                    })
                })
                .collect(),
            Some(_) => return Err(invalid("availableTransports")),
        };
        let use_stateful_reconnect = map
            .get("useStatefulReconnect")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Self::Connect(NegotiateConnect {
            negotiate_version,
            connection_id,
            connection_token,
            available_transports,
            use_stateful_reconnect,
        }))
    }

    /// The response body as JSON. A version-0 connect answer has no `connectionToken`.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Connect(c) => {
                let mut map = Map::new();
                map.insert(
                    "negotiateVersion".to_owned(),
                    Value::from(c.negotiate_version),
                );
                map.insert(
                    "connectionId".to_owned(),
                    Value::from(c.connection_id.as_str()),
                );
                if c.negotiate_version >= 1 {
                    map.insert(
                        "connectionToken".to_owned(),
                        Value::from(c.connection_token.as_str()),
                    );
                }
                if c.use_stateful_reconnect {
                    map.insert("useStatefulReconnect".to_owned(), Value::Bool(true));
                }
                let transports = c
                    .available_transports
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "transport": t.transport,
                            "transferFormats": t.transfer_formats,
                        })
                    })
                    .collect();
                map.insert("availableTransports".to_owned(), Value::Array(transports));
                Value::Object(map)
            }
            Self::Redirect { url, access_token } => match access_token {
                Some(token) => serde_json::json!({ "url": url, "accessToken": token }),
                None => serde_json::json!({ "url": url }),
            },
            Self::Error(error) => serde_json::json!({ "error": error }),
        }
    }

    /// The response body as a string.
    pub fn encode(&self) -> String {
        self.to_json().to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// URLs
// ---------------------------------------------------------------------------------------------

/// Splits `url` at its query and fragment: `(path part, query without '?')`.
fn split_query(url: &str) -> (&str, Option<&str>) {
    let url = url.split('#').next().unwrap_or(url);
    match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    }
}

/// The negotiate URL for a hub URL: `{hub}/negotiate?negotiateVersion=1`, keeping the hub's
/// query parameters (as the official clients do).
pub fn negotiate_url(hub_url: &str) -> String {
    let (base, query) = split_query(hub_url);
    let base = base.trim_end_matches('/');
    match query.filter(|q| !q.is_empty()) {
        Some(query) => format!("{base}/negotiate?{query}&negotiateVersion=1"),
        None => format!("{base}/negotiate?negotiateVersion=1"),
    }
}

/// The transport URL: the hub URL with `http`→`ws`, `https`→`wss`, plus
/// `id=<connection token>` and, when given, `access_token=<token>` (both percent-encoded).
pub fn connect_url(hub_url: &str, connection_token: &str, access_token: Option<&str>) -> String {
    let url = crate::transport::socket_url(hub_url);
    let mut url = url.split('#').next().unwrap_or_default().to_owned();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    for (name, value) in [
        ("id", Some(connection_token)),
        ("access_token", access_token),
    ] {
        if let Some(value) = value {
            url.push(sep);
            url.push_str(name);
            url.push('=');
            url.push_str(&crate::transport::encode_query_value(value));
            sep = '&';
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn parse_str(s: &str) -> Result<HubMessage, WireError> {
        HubMessage::parse(s.as_bytes())
    }

    #[test]
    fn framer_yields_records_split_and_shared() {
        let mut f = Framer::new(64);
        f.push("{\"type\":6}\u{1e}{\"type\":").unwrap();
        assert_eq!(f.next_record().unwrap(), b"{\"type\":6}");
        assert_eq!(f.next_record(), None);
        assert_eq!(f.buffered(), 8);
        f.push("7}").unwrap();
        assert_eq!(f.next_record(), None);
        f.push("\u{1e}\u{1e}").unwrap();
        assert_eq!(f.next_record().unwrap(), b"{\"type\":7}");
        assert_eq!(f.next_record().unwrap(), b"");
        assert!(f.is_empty());
    }

    #[test]
    fn framer_caps_incomplete_and_complete_records() {
        let mut f = Framer::new(8);
        assert_eq!(f.push("123456789"), Err(WireError::TooLarge { limit: 8 }));
        assert!(f.is_empty());
        f.push("12345678\u{1e}").unwrap();
        assert_eq!(f.next_record().unwrap(), b"12345678");
        assert_eq!(
            f.push("1234\u{1e}123456789\u{1e}"),
            Err(WireError::TooLarge { limit: 8 })
        );
        assert!(f.is_empty());
        // Many small records in one chunk are fine even when the chunk is larger than the cap.
        f.push("a\u{1e}b\u{1e}c\u{1e}d\u{1e}e\u{1e}").unwrap();
        assert_eq!(f.drain_records().len(), 5);
    }

    #[test]
    fn handshake_request_round_trip_and_check() {
        let req = HandshakeRequest::json();
        assert_eq!(req.encode(), "{\"protocol\":\"json\",\"version\":1}\u{1e}");
        let parsed = HandshakeRequest::parse(br#"{"protocol":"json","version":1,"x":2}"#).unwrap();
        assert_eq!(parsed, req);
        assert_eq!(parsed.check_json(), HandshakeResponse::Ok);
        let v2 = HandshakeRequest::parse(br#"{"protocol":"json","version":2}"#).unwrap();
        assert_eq!(v2.check_json(), HandshakeResponse::Ok);
        let mp = HandshakeRequest::parse(br#"{"protocol":"messagepack","version":1}"#).unwrap();
        assert!(
            matches!(mp.check_json(), HandshakeResponse::Error(e) if e.contains("messagepack"))
        );
        let v9 = HandshakeRequest::parse(br#"{"protocol":"json","version":9}"#).unwrap();
        assert!(matches!(v9.check_json(), HandshakeResponse::Error(_)));
        assert!(HandshakeRequest::parse(br#"{"protocol":"json"}"#).is_err());
        assert!(HandshakeRequest::parse(b"[]").is_err());
    }

    #[test]
    fn handshake_response_forms() {
        assert_eq!(HandshakeResponse::Ok.encode(), "{}\u{1e}");
        assert_eq!(
            HandshakeResponse::Error("no".into()).encode(),
            "{\"error\":\"no\"}\u{1e}"
        );
        assert_eq!(
            HandshakeResponse::parse(b"{}").unwrap(),
            HandshakeResponse::Ok
        );
        assert_eq!(
            HandshakeResponse::parse(br#"{"error":"Unauthorized","x":1}"#).unwrap(),
            HandshakeResponse::Error("Unauthorized".into())
        );
        assert_eq!(
            HandshakeResponse::parse(br#"{"type":6}"#),
            Err(WireError::NotAHandshakeReply)
        );
        let (reply, rest) =
            HandshakeResponse::parse_frame(b"{}\x1e{\"type\":6}\x1e{\"type\":1,").unwrap();
        assert_eq!(reply, HandshakeResponse::Ok);
        assert_eq!(rest, b"{\"type\":6}\x1e{\"type\":1,");
        assert_eq!(
            HandshakeResponse::parse_frame(b"{}"),
            Err(WireError::Incomplete)
        );
    }

    #[test]
    fn parses_every_type_tolerantly() {
        let inv = parse_str(
            r#"{"type":1,"target":"GatewayQuote","arguments":["CON.F.US.EP.U25",{"lastPrice":1.5}],"extra":true}"#,
        )
        .unwrap();
        assert_eq!(
            inv,
            HubMessage::Invocation(Invocation::send(
                "GatewayQuote",
                vec![json!("CON.F.US.EP.U25"), json!({"lastPrice":1.5})]
            ))
        );
        let inv = parse_str(
            r#"{"type":1,"invocationId":"3","target":"T","arguments":[],"streamIds":["s1"],"headers":{"a":"b"}}"#,
        )
        .unwrap();
        let HubMessage::Invocation(inv) = inv else {
            panic!("not an invocation")
        };
        assert_eq!(inv.invocation_id.as_deref(), Some("3"));
        assert_eq!(inv.stream_ids, Some(vec!["s1".to_owned()]));
        assert_eq!(inv.headers.unwrap()["a"], "b");
        assert_eq!(
            parse_str(r#"{"type":2,"invocationId":"1","item":null}"#).unwrap(),
            HubMessage::StreamItem {
                invocation_id: "1".into(),
                item: Value::Null,
                headers: None
            }
        );
        assert_eq!(
            parse_str(r#"{"type":3,"invocationId":"1","result":null}"#).unwrap(),
            HubMessage::Completion(Completion::result("1", Value::Null))
        );
        assert_eq!(
            parse_str(r#"{"type":3,"invocationId":"1"}"#).unwrap(),
            HubMessage::Completion(Completion {
                invocation_id: "1".into(),
                outcome: Outcome::Void,
                headers: None
            })
        );
        assert_eq!(
            parse_str(r#"{"type":3,"invocationId":"1","error":"boom"}"#).unwrap(),
            HubMessage::Completion(Completion::error("1", "boom"))
        );
        assert_eq!(
            parse_str(r#"{"type":3,"invocationId":"1","error":"x","result":1}"#),
            Err(WireError::ResultAndError)
        );
        assert!(matches!(
            parse_str(r#"{"type":4,"invocationId":"9","target":"S","arguments":[1]}"#).unwrap(),
            HubMessage::StreamInvocation(s) if s.invocation_id == "9" && s.arguments == vec![json!(1)]
        ));
        assert_eq!(
            parse_str(r#"{"type":5,"invocationId":"9"}"#).unwrap(),
            HubMessage::CancelInvocation {
                invocation_id: "9".into(),
                headers: None
            }
        );
        assert_eq!(parse_str(r#"{"type":6,"x":1}"#).unwrap(), HubMessage::Ping);
        assert_eq!(
            parse_str(r#"{"type":7}"#).unwrap(),
            HubMessage::Close(Close::default())
        );
        assert_eq!(
            parse_str(r#"{"type":7,"error":"Unauthorized","allowReconnect":true}"#).unwrap(),
            HubMessage::Close(Close {
                error: Some("Unauthorized".into()),
                allow_reconnect: true
            })
        );
    }

    #[test]
    fn rejects_without_panicking() {
        assert_eq!(
            parse_str(r#"{"type":8,"sequenceId":1}"#),
            Err(WireError::UnknownType(8))
        );
        assert_eq!(parse_str(r#"{"type":-1}"#), Err(WireError::UnknownType(-1)));
        assert_eq!(parse_str(r#"{"type":"1"}"#), Err(WireError::MissingType));
        assert_eq!(parse_str(r#"{"type":1.5}"#), Err(WireError::MissingType));
        assert_eq!(parse_str(r#"{}"#), Err(WireError::MissingType));
        assert_eq!(parse_str("[1]"), Err(WireError::NotAnObject));
        assert!(matches!(parse_str("{\"type\":"), Err(WireError::Json(_))));
        assert!(matches!(
            HubMessage::parse(b"{\"type\":1,\"target\":\"\xff\"}"),
            Err(WireError::Json(_))
        ));
        assert!(matches!(
            parse_str(r#"{"type":1,"arguments":[]}"#),
            Err(WireError::InvalidField {
                field: "target",
                ..
            })
        ));
        assert!(matches!(
            parse_str(r#"{"type":1,"target":"x","arguments":{}}"#),
            Err(WireError::InvalidField {
                field: "arguments",
                ..
            })
        ));
        assert!(matches!(
            parse_str(r#"{"type":2,"invocationId":"1"}"#),
            Err(WireError::InvalidField { field: "item", .. })
        ));
        assert!(matches!(
            parse_str(r#"{"type":7,"allowReconnect":"yes"}"#),
            Err(WireError::InvalidField { .. })
        ));
    }

    #[test]
    fn encodes_like_the_official_servers() {
        assert_eq!(HubMessage::Ping.encode(), ping_record());
        assert_eq!(
            HubMessage::Completion(Completion::result("0", Value::Null)).encode(),
            "{\"type\":3,\"invocationId\":\"0\",\"result\":null}\u{1e}"
        );
        assert_eq!(
            HubMessage::Close(Close {
                error: Some("Unauthorized".into()),
                allow_reconnect: true
            })
            .encode(),
            "{\"type\":7,\"allowReconnect\":true,\"error\":\"Unauthorized\"}\u{1e}"
        );
        assert_eq!(
            HubMessage::Close(Close::default()).encode(),
            "{\"type\":7}\u{1e}"
        );
        let mut out = String::new();
        HubMessage::Ping.encode_into(&mut out);
        HubMessage::Ping.encode_into(&mut out);
        let parsed: Vec<_> = HubMessage::parse_frame(out.as_bytes());
        assert_eq!(parsed, vec![Ok(HubMessage::Ping), Ok(HubMessage::Ping)]);
        assert_eq!(
            HubMessage::parse_frame(b"{\"type\":6}\x1e{\"ty"),
            vec![Ok(HubMessage::Ping), Err(WireError::Incomplete)]
        );
    }

    #[test]
    fn negotiate_forms() {
        let v1 = Negotiation::parse(
            br#"{"connectionId":"cid","connectionToken":"tok","negotiateVersion":1,"availableTransports":[{"transport":"WebSockets","transferFormats":["Text","Binary"]},{"transport":"LongPolling","transferFormats":["Text"]}],"extra":1}"#,
        )
        .unwrap();
        let Negotiation::Connect(c) = &v1 else {
            panic!("not a connect answer")
        };
        assert_eq!(c.connection_token, "tok");
        assert_eq!(c.connection_id, "cid");
        assert_eq!(c.available_transports.len(), 2);
        assert!(c.offers_websockets_text());
        assert!(!format!("{v1:?}").contains("tok\""));
        assert_eq!(Negotiation::parse(v1.encode().as_bytes()).unwrap(), v1);

        let v0 = Negotiation::parse(br#"{"connectionId":"cid","availableTransports":[]}"#).unwrap();
        let Negotiation::Connect(c0) = &v0 else {
            panic!("not a connect answer")
        };
        assert_eq!(c0.negotiate_version, 0);
        assert_eq!(c0.connection_token, "cid");
        assert!(!c0.offers_websockets_text());
        assert!(v0.to_json().get("connectionToken").is_none());
        assert!(Negotiation::parse(br#"{"negotiateVersion":1,"connectionId":"c"}"#).is_err());

        let redirect =
            Negotiation::parse(br#"{"url":"https://x/hub?a=1","accessToken":"sekret"}"#).unwrap();
        assert_eq!(
            redirect,
            Negotiation::Redirect {
                url: "https://x/hub?a=1".into(),
                access_token: Some("sekret".into())
            }
        );
        assert!(!format!("{redirect:?}").contains("sekret"));
        assert_eq!(
            Negotiation::parse(br#"{"error":"nope"}"#).unwrap(),
            Negotiation::Error("nope".into())
        );
        assert_eq!(
            Negotiation::parse(br#"{"ProtocolVersion":"1.5","Url":"/signalr"}"#),
            Err(WireError::LegacyServer)
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            negotiate_url("https://h/hubs/market"),
            "https://h/hubs/market/negotiate?negotiateVersion=1"
        );
        assert_eq!(
            negotiate_url("https://h/hubs/market/?a=b"),
            "https://h/hubs/market/negotiate?a=b&negotiateVersion=1"
        );
        assert_eq!(
            connect_url("https://h/hubs/market", "a+b/c", Some("t=1")),
            "wss://h/hubs/market?id=a%2Bb%2Fc&access_token=t%3D1"
        );
        assert_eq!(
            connect_url("http://h/hub?x=1", "id", None),
            "ws://h/hub?x=1&id=id"
        );
    }

    /// Any JSON leaf value (strings include the separator and non-ASCII characters).
    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z\u{1e}é€😀\"\\\\ ]{0,12}".prop_map(Value::from),
        ]
    }

    /// Any JSON value of small depth.
    fn json_value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-zA-Z]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn opt_headers() -> impl Strategy<Value = Option<Headers>> {
        prop::option::of(prop::collection::btree_map(
            "[a-z]{1,4}",
            "[a-z\u{1e}]{0,4}",
            0..3,
        ))
    }

    /// Any hub message.
    fn hub_message() -> impl Strategy<Value = HubMessage> {
        let id = "[0-9a-z]{1,6}";
        prop_oneof![
            (
                prop::option::of(id),
                "[A-Za-z]{1,12}",
                prop::collection::vec(json_value(), 0..4),
                prop::option::of(prop::collection::vec(id, 0..3)),
                opt_headers(),
            )
                .prop_map(|(invocation_id, target, arguments, stream_ids, headers)| {
                    HubMessage::Invocation(Invocation {
                        invocation_id,
                        target,
                        arguments,
                        stream_ids,
                        headers,
                    })
                }),
            (id, json_value(), opt_headers()).prop_map(|(invocation_id, item, headers)| {
                HubMessage::StreamItem {
                    invocation_id,
                    item,
                    headers,
                }
            }),
            (
                id,
                prop_oneof![
                    Just(Outcome::Void),
                    json_value().prop_map(Outcome::Result),
                    "[a-z ]{1,10}".prop_map(Outcome::Error),
                ],
                opt_headers()
            )
                .prop_map(|(invocation_id, outcome, headers)| {
                    HubMessage::Completion(Completion {
                        invocation_id,
                        outcome,
                        headers,
                    })
                }),
            (
                id,
                "[A-Za-z]{1,12}",
                prop::collection::vec(json_value(), 0..3)
            )
                .prop_map(|(invocation_id, target, arguments)| {
                    HubMessage::StreamInvocation(StreamInvocation {
                        invocation_id,
                        target,
                        arguments,
                        stream_ids: None,
                        headers: None,
                    })
                }),
            (id, opt_headers()).prop_map(|(invocation_id, headers)| {
                HubMessage::CancelInvocation {
                    invocation_id,
                    headers,
                }
            }),
            Just(HubMessage::Ping),
            (prop::option::of("[a-zA-Z ]{0,12}"), any::<bool>()).prop_map(
                |(error, allow_reconnect)| HubMessage::Close(Close {
                    error,
                    allow_reconnect
                })
            ),
        ]
    }

    proptest! {
        #[test]
        fn encode_split_reassemble_round_trips(
            messages in prop::collection::vec(hub_message(), 1..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let mut wire = String::new();
            for m in &messages {
                m.encode_into(&mut wire);
            }
            let bytes = wire.as_bytes();
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            points.push(0);
            points.push(bytes.len());
            points.sort_unstable();
            let mut framer = Framer::new(1 << 16);
            let mut got = Vec::new();
            for pair in points.windows(2) {
                framer.push(&bytes[pair[0]..pair[1]]).unwrap();
                while let Some(record) = framer.next_record() {
                    got.push(HubMessage::parse(&record).unwrap());
                }
            }
            prop_assert!(framer.is_empty());
            prop_assert_eq!(got, messages);
        }

        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = HubMessage::parse(&bytes);
            let _ = HandshakeRequest::parse(&bytes);
            let _ = HandshakeResponse::parse(&bytes);
            let _ = Negotiation::parse(&bytes);
            let mut framer = Framer::new(16);
            let _ = framer.push(&bytes);
            let _ = framer.drain_records();
        }

        #[test]
        fn parse_never_panics_on_typed_json(kind in -2i64..12, body in json_value()) {
            let mut obj = match body { Value::Object(m) => m, other => {
                let mut m = Map::new();
                m.insert("arguments".into(), other);
                m
            }};
            obj.insert("type".into(), Value::from(kind));
            let _ = HubMessage::parse(Value::Object(obj).to_string().as_bytes());
        }
    }
}
