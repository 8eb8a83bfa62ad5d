//! The emulator's ASP.NET Core SignalR market hub (JSON hub protocol over WebSockets) and its
//! login/validate token service. (Scaffold: filled in by the SignalR work.)

use actix_web::web;
use serde::{Deserialize, Serialize};

/// Settings of the hub.
#[derive(Clone, Debug, Default)]
pub struct HubConfig {}

/// Faults of the hub, injected as `Fault::Hub(..)` (admin API: `{"fault":"hub","hub_fault":…}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "hub_fault", rename_all = "snake_case")]
pub enum HubFault {}

/// What the hub counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubCounters {}

/// The hub's state, shared by its handlers.
#[derive(Debug)]
pub(crate) struct Hub {}

impl Hub {
    /// A hub for `config`.
    pub(crate) fn new(_config: &HubConfig) -> Self {
        Self {}
    }

    /// Applies a fault now.
    pub(crate) fn inject(&self, fault: HubFault) {
        match fault {}
    }

    /// A snapshot of the counters.
    pub(crate) fn counters(&self) -> HubCounters {
        HubCounters {}
    }
}

/// Routes of the hub and token service, mounted at the gateway root.
pub(crate) fn routes(_cfg: &mut web::ServiceConfig) {}
