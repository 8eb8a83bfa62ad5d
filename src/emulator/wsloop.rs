//! The one loop every emulated socket runs (IBKR, SignalR hub, ticket API): it reads client
//! frames, takes commands from the emulator, fires a keepalive timer, a data timer and an optional
//! deadline, and hands each event to the dialect's [`Connection`]. It ends when a handler says
//! so, the client leaves, the command channel closes, or the response body is gone.

use std::time::Duration;

use actix_http::ws::ProtocolError;
use actix_web::web;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};

use super::state::sleep_until_opt;
use super::wsframe::{FrameReader, Incoming};

/// Whether a socket's task goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Keep serving.
    Continue,
    /// End the task: the body ends and the connection closes after queued frames.
    End,
}

/// One dialect's side of an open socket: what it does with each event of [`serve`].
pub(crate) trait Connection {
    /// Commands the emulator sends to the socket (faults, expiries).
    type Cmd;

    /// Encoded frames to the client (the response body).
    fn out(&self) -> &UnboundedSender<Bytes>;

    /// Queues one encoded frame.
    fn push(&self, frame: Bytes) {
        // A closed body means the connection is gone; the loop notices and ends.
        let _ = self.out().send(frame);
    }

    /// One complete client message.
    fn on_message(&mut self, message: Incoming) -> Flow;

    /// The client broke the WebSocket protocol (the loop reads no further).
    fn on_protocol_error(&mut self, err: &ProtocolError) -> Flow;

    /// A command from the emulator.
    fn on_cmd(&mut self, cmd: Self::Cmd) -> Flow;

    /// The keepalive timer fired (heartbeat, ping).
    fn on_keepalive(&mut self) -> Flow;

    /// The data timer fired (market data, quotes).
    fn on_data_tick(&mut self) -> Flow;

    /// The next deadline the socket waits for, if any (handshake, client timeout…).
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// The deadline of [`Connection::deadline`] passed.
    fn on_deadline(&mut self) -> Flow {
        Flow::Continue
    }
}

/// A timer that fires first at `first`, then every `every` (a late tick delays the next ones).
pub(crate) fn timer(first: Instant, every: Duration) -> Interval {
    let mut timer = interval_at(first, every);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    timer
}

/// Serves a socket until one of its handlers ends it or the connection is gone.
pub(crate) async fn serve<C: Connection>(
    conn: &mut C,
    mut payload: web::Payload,
    mut cmds: UnboundedReceiver<C::Cmd>,
    mut keepalive: Interval,
    mut data: Interval,
) {
    let mut reader = FrameReader::default();
    loop {
        let deadline = conn.deadline();
        let flow = tokio::select! {
            chunk = payload.next() => match chunk {
                Some(Ok(bytes)) => read(conn, &mut reader, &bytes),
                _ => Flow::End,
            },
            cmd = cmds.recv() => match cmd {
                Some(cmd) => conn.on_cmd(cmd),
                None => Flow::End,
            },
            _ = keepalive.tick() => conn.on_keepalive(),
            _ = data.tick() => conn.on_data_tick(),
            () = sleep_until_opt(deadline) => conn.on_deadline(),
        };
        if flow == Flow::End || conn.out().is_closed() {
            break;
        }
    }
}

/// Decodes received bytes and hands over every complete message.
fn read<C: Connection>(conn: &mut C, reader: &mut FrameReader, bytes: &[u8]) -> Flow {
    reader.push(bytes);
    loop {
        match reader.next_message() {
            Ok(Some(message)) => {
                if conn.on_message(message) == Flow::End {
                    return Flow::End;
                }
            }
            Ok(None) => return Flow::Continue,
            Err(err) => return conn.on_protocol_error(&err),
        }
    }
}
