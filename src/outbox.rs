//! The bounded queue of frames waiting to be written to a socket (pongs, subscription commands,
//! heartbeats).
//!
//! A gateway that keeps sending pings but stops reading would otherwise make keepwire queue
//! pongs without end: the socket's buffers fill, and every further pong waits in memory.
//! [`Outbox::push`] refuses a frame once [`MAX_QUEUED_FRAMES`] frames or [`MAX_QUEUED_BYTES`]
//! bytes are waiting, with [`Failure::Backpressure`] (soft: the socket is given up and dialed
//! again after a backoff). The frames are written by the future [`outbox`] returns, which the
//! socket's owner runs; dropping the [`Outbox`] lets it write what is queued, then close the sink.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;

use awc::ws::Message;
use futures_util::{Sink, SinkExt};
use tokio::sync::mpsc;

use crate::failure::Failure;

/// The most frames waiting for a socket. Far above what a healthy socket holds: a subscription
/// replay is one frame per subscription, a pong is answered within a round trip.
pub const MAX_QUEUED_FRAMES: usize = 16_384;
/// The most bytes (payload plus frame header) waiting for a socket.
pub const MAX_QUEUED_BYTES: usize = 4 << 20;
/// The largest header of a masked client frame, counted with every frame.
const FRAME_OVERHEAD: usize = 14;

/// The size a frame is counted with: its payload and the largest header.
fn size(msg: &Message) -> usize {
    let payload = match msg {
        Message::Text(t) => t.len(),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
        Message::Continuation(item) => match item {
            actix_http::ws::Item::FirstText(b)
            | actix_http::ws::Item::FirstBinary(b)
            | actix_http::ws::Item::Continue(b)
            | actix_http::ws::Item::Last(b) => b.len(),
        },
        Message::Close(reason) => reason
            .as_ref()
            .and_then(|r| r.description.as_ref())
            .map_or(0, String::len),
        Message::Nop => 0,
    };
    payload.saturating_add(FRAME_OVERHEAD)
}

/// The sending half: frames go in here, bounded.
pub struct Outbox {
    tx: mpsc::Sender<Message>,
    bytes: Rc<Cell<usize>>,
    max_bytes: usize,
}

impl Outbox {
    /// Queues a frame, or refuses it when the queue is at its bound (the gateway has stopped
    /// reading). A frame for a writer that already ended (its error is reported by the writer)
    /// is dropped.
    pub fn push(&self, msg: Message) -> Result<(), Failure> {
        let n = size(&msg);
        let queued = self.bytes.get();
        let full = || Failure::Backpressure {
            frames: self.queued_frames(),
            bytes: queued,
        };
        if queued.saturating_add(n) > self.max_bytes {
            return Err(full());
        }
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.bytes.set(queued.saturating_add(n));
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(full()),
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    /// Frames waiting to be written.
    pub fn queued_frames(&self) -> usize {
        self.tx.max_capacity().saturating_sub(self.tx.capacity())
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.get()
    }
}

/// A bounded outbox for `sink` with the default bounds ([`MAX_QUEUED_FRAMES`],
/// [`MAX_QUEUED_BYTES`]), and the future that writes its frames (run it on the socket owner's
/// thread; it ends with the sink's error, or after the [`Outbox`] is dropped and the sink closed).
pub fn outbox<S>(sink: S) -> (Outbox, impl Future<Output = Result<(), S::Error>>)
where
    S: Sink<Message> + Unpin,
{
    outbox_with(sink, MAX_QUEUED_FRAMES, MAX_QUEUED_BYTES)
}

/// [`outbox`] with explicit bounds (both at least 1).
pub fn outbox_with<S>(
    mut sink: S,
    max_frames: usize,
    max_bytes: usize,
) -> (Outbox, impl Future<Output = Result<(), S::Error>>)
where
    S: Sink<Message> + Unpin,
{
    let (tx, mut rx) = mpsc::channel(max_frames.max(1));
    let bytes = Rc::new(Cell::new(0usize));
    let taken = bytes.clone();
    let take = move |msg: &Message| taken.set(taken.get().saturating_sub(size(msg)));
    let writer = async move {
        while let Some(msg) = rx.recv().await {
            take(&msg);
            sink.feed(msg).await?;
            while let Ok(msg) = rx.try_recv() {
                take(&msg);
                sink.feed(msg).await?;
            }
            sink.flush().await?;
        }
        sink.close().await
    };
    (
        Outbox {
            tx,
            bytes,
            max_bytes: max_bytes.max(1),
        },
        writer,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A sink that accepts nothing: a peer that stopped reading.
    struct Stalled;

    impl Sink<Message> for Stalled {
        type Error = ();
        fn poll_ready(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), ()>> {
            std::task::Poll::Pending
        }
        fn start_send(self: std::pin::Pin<&mut Self>, _: Message) -> Result<(), ()> {
            Err(())
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), ()>> {
            std::task::Poll::Pending
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), ()>> {
            std::task::Poll::Pending
        }
    }

    fn pong() -> Message {
        Message::Pong(Bytes::from_static(&[7; 125]))
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_fills_the_outbox_to_its_frame_bound_then_refuses() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let (out, writer) = outbox_with(Stalled, 100, usize::MAX);
                let writer = tokio::task::spawn_local(writer);
                let mut accepted = 0;
                let refused = loop {
                    match out.push(pong()) {
                        Ok(()) => accepted += 1,
                        Err(f) => break f,
                    }
                    assert!(accepted <= 101, "the outbox grows without bound");
                    // Let the writer take what it can (one frame, stuck in the stalled sink).
                    tokio::task::yield_now().await;
                };
                assert_eq!(accepted, 101, "100 queued and one in the writer's hands");
                assert!(
                    matches!(refused, Failure::Backpressure { frames: 100, .. }),
                    "{refused:?}"
                );
                writer.abort();
            })
            .await;
    }

    #[test]
    fn the_byte_bound_refuses_before_the_frame_bound() {
        let (out, _writer) = outbox_with(Stalled, 1000, 10 * (125 + FRAME_OVERHEAD));
        for _ in 0..10 {
            out.push(pong()).unwrap();
        }
        let refused = out.push(pong()).unwrap_err();
        assert_eq!(
            refused,
            Failure::Backpressure {
                frames: 10,
                bytes: 10 * (125 + FRAME_OVERHEAD)
            }
        );
        assert_eq!(out.queued_bytes(), 1390);
    }

    #[tokio::test]
    async fn queued_frames_are_written_in_order_and_the_sink_closed_when_the_outbox_is_dropped() {
        let got = Rc::new(std::cell::RefCell::new(Vec::new()));
        let into = got.clone();
        let sink = Box::pin(futures_util::sink::unfold((), move |(), msg: Message| {
            into.borrow_mut().push(msg);
            async { Ok::<_, ()>(()) }
        }));
        let (out, writer) = outbox_with(sink, 10, 10_000);
        for i in 0..5 {
            out.push(Message::Text(format!("m{i}").into())).unwrap();
        }
        drop(out);
        writer.await.unwrap();
        let texts: Vec<String> = got
            .borrow()
            .iter()
            .map(|m| match m {
                Message::Text(t) => t.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4"]);
    }
}
