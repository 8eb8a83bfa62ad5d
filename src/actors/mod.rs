//! The four actors of a stream and the context they share.
//!
//! Every actor runs under actix's `Supervisor` (a stop restarts it with the same mailbox) on the
//! stream's arbiter; the stream supervisor ([`crate::supervisor`]) rebuilds an actor that
//! panicked (actix alone drops it) and limits restart intensity.

pub mod due_timer;
pub mod gateway_session;
pub mod stream_connection;
pub mod subscriptions;
pub mod token_manager;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use actix::{Addr, Recipient};

pub use gateway_session::GatewaySession;
pub use stream_connection::StreamConnection;
pub use subscriptions::Subscriptions;
pub use token_manager::TokenManager;

use crate::config::StreamConfig;
use crate::dialect::DialectSend;
use crate::failure::{Class, Failure};
use crate::ids::{Epoch, Generation};
use crate::messages::{Report, SendFrame};
use crate::metrics::StreamMetrics;
use crate::transport::ClientFactory;

/// The current addresses of a stream's actors. Filled by the stream supervisor and updated when
/// it rebuilds one, so peers always reach the live instance.
#[derive(Default)]
pub struct Peers {
    /// Credentials.
    pub token: Option<Addr<TokenManager>>,
    /// REST session.
    pub gateway: Option<Addr<GatewaySession>>,
    /// The socket.
    pub stream: Option<Addr<StreamConnection>>,
    /// Where Subscriptions writes frames (normally the StreamConnection).
    pub frames: Option<Recipient<SendFrame>>,
    /// Desired subscriptions.
    pub subscriptions: Option<Addr<Subscriptions>>,
    /// The subscriptions ledger, once a Subscriptions actor works on it: the socket reader
    /// hands data to consumers through it on the same thread, without a mailbox hop.
    pub book: Option<subscriptions::Book>,
}

/// What the actors of one stream share. Lives on the stream's arbiter (not `Send`).
#[derive(Clone)]
pub struct StreamCtx {
    /// Stream name (logs, status, metrics).
    pub name: Arc<str>,
    /// Its configuration.
    pub config: Arc<StreamConfig>,
    /// Its dialect.
    pub dialect: Arc<dyn DialectSend>,
    /// Builds awc clients with the stream's TLS settings.
    pub clients: ClientFactory,
    /// Live peer addresses.
    pub peers: Rc<RefCell<Peers>>,
    /// Where reports go (the stream supervisor).
    pub report: Recipient<Report>,
    /// Metrics with the stream label bound.
    pub metrics: StreamMetrics,
    /// Last credential generation issued (survives a rebuilt TokenManager).
    pub generation: Rc<Cell<Generation>>,
    /// Last socket epoch used (survives a rebuilt StreamConnection).
    pub epoch: Rc<Cell<Epoch>>,
    /// The origin of this stream's machine clock ([`crate::machine::Now`]).
    pub origin: tokio::time::Instant,
}

impl StreamCtx {
    /// The machines' clock: time since the stream started.
    pub fn now(&self) -> crate::machine::Now {
        tokio::time::Instant::now().saturating_duration_since(self.origin)
    }

    /// Sends a report to the stream supervisor.
    pub fn report(&self, report: Report) {
        self.report.do_send(report);
    }

    /// The failure's class under this stream's competing policy.
    pub fn class(&self, failure: &Failure) -> Class {
        failure.class(self.dialect.competing_policy())
    }

    /// The live TokenManager.
    pub fn token(&self) -> Option<Addr<TokenManager>> {
        self.peers.borrow().token.clone()
    }

    /// The live GatewaySession.
    pub fn gateway(&self) -> Option<Addr<GatewaySession>> {
        self.peers.borrow().gateway.clone()
    }

    /// The live StreamConnection.
    pub fn stream(&self) -> Option<Addr<StreamConnection>> {
        self.peers.borrow().stream.clone()
    }

    /// Where subscription frames go.
    pub fn frames(&self) -> Option<Recipient<SendFrame>> {
        self.peers.borrow().frames.clone()
    }

    /// The subscriptions ledger (see [`Peers::book`]).
    pub fn book(&self) -> Option<subscriptions::Book> {
        self.peers.borrow().book.clone()
    }

    /// The live Subscriptions actor.
    pub fn subscriptions(&self) -> Option<Addr<Subscriptions>> {
        self.peers.borrow().subscriptions.clone()
    }
}

/// Held by each actor of a stream: when the actor is dropped (a panic inside a handler: actix
/// drops such an actor instead of restarting it), it tells the stream supervisor at once, which
/// rebuilds the actor without polling for dead ones.
pub struct Lifeline {
    kind: crate::status::ActorKind,
    report: Recipient<Report>,
}

impl Lifeline {
    /// The lifeline of the `kind` actor of the stream of `ctx`.
    pub fn new(kind: crate::status::ActorKind, ctx: &StreamCtx) -> Self {
        Self {
            kind,
            report: ctx.report.clone(),
        }
    }
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        // The supervisor may be gone too (the system stopping): then nobody needs to know.
        self.report.do_send(Report::Died(self.kind));
    }
}

/// Maps a mailbox error (the peer is restarting or gone) to a soft failure.
pub(crate) fn mailbox(peer: &str, e: actix::MailboxError) -> Failure {
    Failure::Transport {
        detail: format!("{peer} unavailable ({e}); it is being restarted"),
    }
}
