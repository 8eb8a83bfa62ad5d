//! WebSocket frames under the emulator's full control: encoding (including non-UTF-8 text,
//! fragments and arbitrary close codes) and decoding of client frames with reassembly.

use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser, ProtocolError};
use bytes::{Bytes, BytesMut};

/// Largest client frame accepted.
const MAX_FRAME: usize = 1 << 20;
/// Largest reassembled client message accepted.
const MAX_MESSAGE: usize = 4 << 20;
/// Largest close reason that fits a control frame (125 minus the 2-byte code).
const MAX_CLOSE_REASON: usize = 123;

/// Encodes one complete (FIN) text frame; the payload need not be valid UTF-8.
pub(crate) fn text(payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(payload.len() + 10);
    Parser::write_message(&mut buf, payload, OpCode::Text, true, false);
    buf.freeze()
}

/// Encodes a text message as `parts` fragments: a non-FIN text frame, continuation frames and a
/// FIN continuation frame (a single FIN text frame when it cannot be split).
pub(crate) fn fragmented(payload: &[u8], parts: usize) -> Bytes {
    let parts = parts.clamp(1, payload.len().max(1));
    if parts == 1 {
        return text(payload);
    }
    let chunk = payload.len().div_ceil(parts);
    let mut buf = BytesMut::with_capacity(payload.len() + 10 * parts);
    let pieces: Vec<&[u8]> = payload.chunks(chunk).collect();
    let last = pieces.len().saturating_sub(1);
    for (i, piece) in pieces.into_iter().enumerate() {
        let op = if i == 0 {
            OpCode::Text
        } else {
            OpCode::Continue
        };
        Parser::write_message(&mut buf, piece, op, i == last, false);
    }
    buf.freeze()
}

/// Encodes a pong answering a ping.
pub(crate) fn pong(payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(payload.len() + 2);
    Parser::write_message(&mut buf, payload, OpCode::Pong, true, false);
    buf.freeze()
}

/// Encodes a ping frame (server to client: unmasked).
pub(crate) fn ping(payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(payload.len() + 2);
    Parser::write_message(&mut buf, payload, OpCode::Ping, true, false);
    buf.freeze()
}

/// Encodes a close frame with any code and a reason truncated to fit a control frame.
pub(crate) fn close(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let description = (!reason.is_empty()).then(|| reason[..cut].to_owned());
    let mut buf = BytesMut::with_capacity(4 + cut);
    Parser::write_close(
        &mut buf,
        Some(CloseReason {
            code: CloseCode::from(code),
            description,
        }),
        false,
    );
    buf.freeze()
}

/// Encodes a close frame echoing the client's close (code only).
pub(crate) fn close_echo(reason: Option<&CloseReason>) -> Bytes {
    let mut buf = BytesMut::with_capacity(4);
    let echo = reason.map(|r| CloseReason {
        code: r.code,
        description: None,
    });
    Parser::write_close(&mut buf, echo, false);
    buf.freeze()
}

/// One complete message from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A (reassembled) text message; bytes as received.
    Text(Vec<u8>),
    /// A (reassembled) binary message.
    Binary(Vec<u8>),
    /// A ping with its payload.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close frame.
    Close(Option<CloseReason>),
}

/// Incrementally decodes masked client frames and reassembles fragmented messages.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    /// Bytes received but not yet decoded.
    buf: BytesMut,
    /// A fragmented message being reassembled: its opcode and bytes so far.
    partial: Option<(OpCode, Vec<u8>)>,
}

impl FrameReader {
    /// Appends bytes received from the client.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Decodes the next complete message, `Ok(None)` when more bytes are needed.
    pub(crate) fn next_message(&mut self) -> Result<Option<Incoming>, ProtocolError> {
        loop {
            let Some((fin, op, payload)) = Parser::parse(&mut self.buf, true, MAX_FRAME)? else {
                return Ok(None);
            };
            let payload = payload.map(BytesMut::freeze).unwrap_or_default();
            match op {
                OpCode::Ping => return Ok(Some(Incoming::Ping(payload))),
                OpCode::Pong => return Ok(Some(Incoming::Pong)),
                OpCode::Close => {
                    let reason = Parser::try_parse_close_payload(&payload)?;
                    return Ok(Some(Incoming::Close(reason)));
                }
                OpCode::Text | OpCode::Binary => {
                    if self.partial.is_some() {
                        return Err(ProtocolError::ContinuationStarted);
                    }
                    if fin {
                        return Ok(Some(Self::complete(op, payload.to_vec())));
                    }
                    self.partial = Some((op, payload.to_vec()));
                }
                OpCode::Continue => {
                    let Some((_, data)) = self.partial.as_mut() else {
                        return Err(ProtocolError::ContinuationNotStarted);
                    };
                    if data.len() + payload.len() > MAX_MESSAGE {
                        return Err(ProtocolError::Overflow);
                    }
                    data.extend_from_slice(&payload);
                    if fin {
                        if let Some((op, data)) = self.partial.take() {
                            return Ok(Some(Self::complete(op, data)));
                        }
                    }
                }
                OpCode::Bad => return Err(ProtocolError::BadOpCode),
            }
        }
    }

    /// Wraps a complete data message.
    fn complete(op: OpCode, data: Vec<u8>) -> Incoming {
        if op == OpCode::Binary {
            Incoming::Binary(data)
        } else {
            Incoming::Text(data)
        }
    }
}

/// Completes a WebSocket upgrade whose frames are all written by the caller: returns the 101
/// response and the sender of encoded frames (the response body).
pub(crate) fn accept(
    req: &actix_web::HttpRequest,
) -> Result<
    (
        actix_web::HttpResponse,
        tokio::sync::mpsc::UnboundedSender<Bytes>,
    ),
    actix_web::Error,
> {
    use actix_http::body::{BodyStream, MessageBody};
    let mut builder = actix_http::ws::handshake(req.head())?;
    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let body = BodyStream::new(futures_util::stream::poll_fn(move |cx| {
        out_rx
            .poll_recv(cx)
            .map(|frame| frame.map(Ok::<_, std::convert::Infallible>))
    }));
    let response = builder.message_body(body.boxed())?;
    Ok((actix_web::HttpResponse::from(response), out_tx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(op: OpCode, fin: bool, payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        Parser::write_message(&mut buf, payload, op, fin, true);
        buf
    }

    #[test]
    fn reassembles_fragments_and_ping_between() {
        let mut r = FrameReader::default();
        r.push(&masked(OpCode::Text, false, b"ab"));
        r.push(&masked(OpCode::Ping, true, b"p"));
        r.push(&masked(OpCode::Continue, true, b"cd"));
        assert_eq!(
            r.next_message().unwrap(),
            Some(Incoming::Ping(Bytes::from_static(b"p")))
        );
        assert_eq!(
            r.next_message().unwrap(),
            Some(Incoming::Text(b"abcd".to_vec()))
        );
        assert_eq!(r.next_message().unwrap(), None);
    }

    #[test]
    fn stray_continuation_is_an_error() {
        let mut r = FrameReader::default();
        r.push(&masked(OpCode::Continue, true, b"x"));
        assert!(r.next_message().is_err());
    }

    #[test]
    fn close_reason_is_truncated_on_char_boundary() {
        let long = "é".repeat(100);
        let frame = close(1011, &long);
        assert!(frame.len() <= 2 + 125);
    }
}
