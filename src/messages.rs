//! The protocol of the system: every message exchanged between the actors of one stream.
//!
//! Messages that could arrive late carry the socket **epoch** or the credential **generation**
//! they are about, so a message from a dead socket or about a stale token never undoes newer
//! state.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix::Message;
use bytestring::ByteString;
use secrecy::SecretString;

use crate::backoff::Now;
use crate::channel;
use crate::dialect::DialPlan;
use crate::failure::Failure;
use crate::ids::{Epoch, Generation};
use crate::status::{ActorKind, SubscriptionCounts};
use crate::subscription::{Event, Subscription};

/// One generation of credentials. `Debug` never shows the secret.
#[derive(Clone)]
pub struct Credentials {
    /// Monotonic per stream; a rejection names the generation it rejected.
    pub generation: Generation,
    /// The secret itself.
    pub secret: SecretString,
    /// When it was issued (or taken from a cache), on the stream's machine clock.
    pub issued_at: Now,
    /// When it stops being valid, if known.
    pub expires_at: Option<Now>,
    /// This generation replaced one that the gateway rejected.
    pub replaced_rejected: bool,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("generation", &self.generation)
            .field("secret", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .field("replaced_rejected", &self.replaced_rejected)
            .finish()
    }
}

// ---------------------------------------------------------------- to TokenManager

/// Asks for the current credentials, fetching them first if there are none or they expire soon.
#[derive(Message)]
#[rtype(result = "Result<Credentials, Failure>")]
pub struct GetCredentials;

/// The gateway rejected `generation`. Only a report about the current generation refreshes.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct CredentialsRejected {
    /// The generation that was rejected.
    pub generation: Generation,
}

/// The session `generation` belonged to is gone: fetch a fresh one (not a rejection of it).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct CredentialsStale {
    /// The generation whose session is gone.
    pub generation: Generation,
}

/// The gateway rejected `generation` for good (the stream stops): forget it without refreshing,
/// so that a resumed stream never presents it again.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct CredentialsDiscarded {
    /// The generation that was rejected.
    pub generation: Generation,
}

/// The gateway session now uses this credential (IBKR: tickle's session id). A different value
/// from the current one starts a new generation.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CredentialsObserved {
    /// What the gateway reported.
    pub secret: SecretString,
}

// ---------------------------------------------------------------- to GatewaySession

/// Resolves once the gateway session is established.
#[derive(Message)]
#[rtype(result = "Result<(), Failure>")]
pub struct AwaitSession;

/// Builds the dial plan for one attempt (buys a ticket, negotiates…) from the given credentials.
#[derive(Message)]
#[rtype(result = "Result<DialPlan, Failure>")]
pub struct PrepareDial {
    /// The credentials to use, as TokenManager handed them out just now.
    pub credentials: Credentials,
}

/// The socket learned that the gateway session is gone: re-establish it.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SessionLost {
    /// What was seen.
    pub failure: Failure,
}

/// The socket stayed healthy long enough: the session's retries and repairs start over.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SocketHealthy;

/// Ends the gateway session if the dialect and configuration say so.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Logout;

// ---------------------------------------------------------------- to StreamConnection

/// The gateway session went down: drop the socket and wait for it to come back.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SessionDown;

/// A new credential generation exists; a socket opened with an older one must be rebuilt.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CredentialsChanged {
    /// The new generation.
    pub generation: Generation,
}

/// Writes a text frame on the socket of `epoch` (dropped if that socket is gone).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SendFrame {
    /// The socket it is meant for.
    pub epoch: Epoch,
    /// The frame.
    pub text: String,
}

/// Re-announces the current socket state (sent after a peer was rebuilt).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Resync;

// ---------------------------------------------------------------- to Subscriptions

/// A socket is Ready: replay every subscription on it.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StreamUp {
    /// The socket.
    pub epoch: Epoch,
}

/// The socket of `epoch` is gone: every binding becomes pending.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StreamDown {
    /// The socket.
    pub epoch: Epoch,
}

/// A data message from the socket of `epoch`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Deliver {
    /// The socket.
    pub epoch: Epoch,
    /// The routing topic.
    pub topic: Arc<str>,
    /// The message, parsed once.
    pub data: serde_json::Value,
}

/// An [`Event`] as it waits in a consumer's queue: data may still be JSON text, shared by every
/// consumer of the topic and parsed by [`crate::channel::Receiver::recv`] on the consumer's thread.
#[derive(Debug)]
pub enum Queued {
    /// Handed out as it is.
    Event(Event),
    /// [`Event::Data`] once `text` is parsed.
    Text {
        /// The wire topic.
        topic: Arc<str>,
        /// The message, sharing the received frame: routed by its type and channel, parsed (and
        /// so validated) by the consumer.
        text: ByteString,
    },
}

impl From<Event> for Queued {
    fn from(event: Event) -> Self {
        Queued::Event(event)
    }
}

impl channel::Item for Event {
    type Queued = Queued;

    fn finish(queued: Queued) -> Option<Event> {
        match queued {
            Queued::Event(event) => Some(event),
            // Routed without a parse: this parse is its validation.
            Queued::Text { topic, text } => serde_json::from_str(&text)
                .ok()
                .map(|data| Event::Data { topic, data }),
        }
    }
}

/// The gateway acknowledged (or refused) a subscription by id on the socket of `epoch`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Acknowledged {
    /// The socket.
    pub epoch: Epoch,
    /// The acknowledgement id.
    pub id: String,
    /// `Some(reason)` when the gateway refused it.
    pub refused: Option<String>,
}

/// The gateway refused a topic on the socket of `epoch`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct TopicRefused {
    /// The socket.
    pub epoch: Epoch,
    /// The topic or command prefix the gateway named.
    pub topic: String,
    /// What it said.
    pub message: String,
}

/// A user subscribes to one or more subscriptions (all or none); the events of every one go to
/// `sender`.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Subscribe {
    /// What to subscribe to.
    pub subscriptions: Vec<Subscription>,
    /// Where events go.
    pub sender: channel::Sender<Event>,
}

/// A user unsubscribes. Returns whether it was subscribed.
#[derive(Message, Debug)]
#[rtype(result = "bool")]
pub struct Unsubscribe {
    /// What to unsubscribe from.
    pub subscription: Subscription,
}

// ---------------------------------------------------------------- to every actor

/// Stop working for good (shutdown or hard failure): no more dialing, polling or refreshing.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Halt;

/// Start working again after a [`Halt`] (used by `resume`).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Resume;

/// Chaos: panic inside this actor's handler. Used by tests and `keepwire chaos` to prove that a
/// panic rebuilds only the actor it happened in.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct InjectPanic;

// ---------------------------------------------------------------- to the stream supervisor

/// Where the gateway session stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionPhase {
    /// REST handshake in progress.
    Establishing,
    /// A person must log in; polling slowly.
    AwaitingLogin {
        /// Plain-words remedy.
        remedy: String,
    },
    /// Waiting before the next attempt.
    Backoff {
        /// The delay.
        delay: Duration,
    },
    /// Established.
    Established,
}

/// Where the socket stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnPhase {
    /// Waiting for the gateway session.
    Waiting,
    /// Waiting before the next attempt.
    Backoff {
        /// The delay.
        delay: Duration,
    },
    /// Dialing or waiting for the opening exchange.
    Connecting,
    /// Authenticated and usable.
    Ready,
}

/// What actors tell their stream supervisor; it turns these into [`crate::Status`] and metrics.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum Report {
    /// GatewaySession phase.
    Session(SessionPhase),
    /// StreamConnection phase.
    Connection {
        /// The phase.
        phase: ConnPhase,
        /// Attempts since the last healthy period.
        attempt: u32,
        /// Current socket epoch.
        epoch: Epoch,
    },
    /// Subscription counts changed.
    Subscriptions(SubscriptionCounts),
    /// An actor met a failure.
    Failure {
        /// Which actor.
        actor: ActorKind,
        /// What happened.
        failure: Failure,
    },
    /// An actor was restarted (stop → restart by its Supervisor, or rebuilt after a panic).
    Restarted(ActorKind),
    /// A credential fetch finished.
    CredentialsRefreshed {
        /// The new generation (on success).
        generation: Option<Generation>,
    },
    /// Consumer events were dropped.
    EventsDropped(u64),
    /// An actor was dropped: a panic inside a handler (actix drops such an actor instead of
    /// restarting it), or the system stopping. Sent by its [`crate::actors::Lifeline`].
    Died(ActorKind),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Item;

    #[test]
    fn routed_text_becomes_data_when_it_parses_and_is_unusable_when_it_does_not() {
        let topic: Arc<str> = "a".into();
        let good = Queued::Text {
            topic: topic.clone(),
            text: r#"{"type":"data","channel":"a","p":1}"#.into(),
        };
        assert!(matches!(Event::finish(good), Some(Event::Data { data, .. }) if data["p"] == 1));
        let bad = Queued::Text {
            topic,
            text: r#"{"type":"data","channel":"a","p":01}"#.into(),
        };
        assert!(Event::finish(bad).is_none());
    }
}
