//! The emulated gateway as a whole: the IBKR state, the SignalR hub and the ticket API that
//! share its listener, and what spans them (fault dispatch, counters, the admin view).

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use super::config::EmulatorConfig;
use super::counters::Counters;
use super::faults::Fault;
use super::signalr::Hub;
use super::state::{ControlCmd, EmulatorState, Shared};
use super::ticket::TicketApi;

/// The three dialect halves' state, held by the controller, the admin API and the handle.
#[derive(Debug)]
pub(crate) struct Gateway {
    /// The IBKR gateway's state and the controller channel.
    pub(crate) ibkr: Arc<Shared>,
    /// The SignalR hub and its token service.
    pub(crate) hub: Arc<Hub>,
    /// The ticket API.
    pub(crate) ticket: Arc<TicketApi>,
}

impl Gateway {
    /// Builds the state of every half for a config.
    pub(crate) fn new(config: &EmulatorConfig, control: UnboundedSender<ControlCmd>) -> Self {
        Self {
            ibkr: Arc::new(Shared::new(config, control)),
            hub: Arc::new(Hub::new(&config.hub)),
            ticket: Arc::new(TicketApi::new(&config.ticket)),
        }
    }

    /// Applies a fault now, in the half it belongs to.
    pub(crate) fn inject(&self, fault: Fault) {
        tracing::info!(?fault, "emulator: injecting fault");
        match fault {
            Fault::Hub(f) => {
                self.ibkr.count_fault();
                self.hub.inject(f);
            }
            Fault::Ticket(f) => {
                self.ibkr.count_fault();
                self.ticket.inject(f);
            }
            gateway => self.ibkr.inject(gateway),
        }
    }

    /// When every ticket socket upgrade was attempted.
    pub(crate) fn ticket_upgrade_attempts(&self) -> Vec<tokio::time::Instant> {
        self.ticket.upgrade_attempts()
    }

    /// A snapshot of every half's counters.
    pub(crate) fn counters(&self) -> Counters {
        Counters {
            hub: self.hub.counters(),
            ticket: self.ticket.counters(),
            ..self.ibkr.counters()
        }
    }

    /// A snapshot of the session and auth state.
    pub(crate) fn snapshot(&self) -> EmulatorState {
        self.ibkr.snapshot()
    }

    /// Sends a command to the controller (ignored once it has stopped).
    pub(crate) fn control(&self, cmd: ControlCmd) {
        self.ibkr.control(cmd);
    }
}
