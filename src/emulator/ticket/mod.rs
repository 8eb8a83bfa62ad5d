//! The emulator's ticket-authenticated WebSocket API (seed 004): a JWT token endpoint, a
//! one-time ticket endpoint and a JSON data socket. (Scaffold: filled in by the ticket work.)

use actix_web::web;
use serde::{Deserialize, Serialize};

/// Settings of the ticket API.
#[derive(Clone, Debug, Default)]
pub struct TicketConfig {}

/// Faults of the ticket API, injected as `Fault::Ticket(..)` (admin API:
/// `{"fault":"ticket","ticket_fault":…}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ticket_fault", rename_all = "snake_case")]
pub enum TicketFault {}

/// What the ticket API counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketCounters {}

/// The ticket API's state, shared by its handlers.
#[derive(Debug)]
pub(crate) struct TicketApi {}

impl TicketApi {
    /// An API for `config`.
    pub(crate) fn new(_config: &TicketConfig) -> Self {
        Self {}
    }

    /// Applies a fault now.
    pub(crate) fn inject(&self, fault: TicketFault) {
        match fault {}
    }

    /// A snapshot of the counters.
    pub(crate) fn counters(&self) -> TicketCounters {
        TicketCounters {}
    }
}

/// Routes of the ticket API, mounted at the gateway root.
pub(crate) fn routes(_cfg: &mut web::ServiceConfig) {}
