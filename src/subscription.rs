//! What a user subscribes to, and what they receive.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// A subscription request. The dialect turns it into wire commands.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subscription {
    /// IBKR streaming market data for a contract (`smd+<conid>+{"fields":[…]}`).
    MarketData {
        /// Contract id.
        conid: u64,
        /// Field ids, e.g. `["31","84","86"]`.
        fields: Vec<String>,
    },
    /// IBKR live orders (`sor+{}`).
    Orders,
    /// IBKR profit and loss (`spl+{}`).
    Pnl,
    /// IBKR account summary (`ssd+<account>`).
    AccountSummary {
        /// Account id.
        account: String,
    },
    /// IBKR account ledger (`sld+<account>`).
    Ledger {
        /// Account id.
        account: String,
    },
    /// A named channel of a JSON socket API (ticket dialect): sent through the stream's templates.
    Channel {
        /// The channel, e.g. `trades.BTC-USD`.
        channel: String,
    },
    /// A SignalR hub invocation that starts a stream of `event` invocations (e.g.
    /// `SubscribeContractQuotes("CON.F.US.EP.M25")` → `GatewayQuote("CON.F.US.EP.M25", {…})`).
    Hub {
        /// The hub method that subscribes.
        method: String,
        /// Its arguments as a JSON array text, e.g. `["CON.F.US.EP.M25"]`.
        args: String,
        /// The hub method that unsubscribes (same arguments), if any.
        unsubscribe: Option<String>,
        /// The client method the data arrives as; routed by it and the first argument.
        event: String,
    },
}

impl Subscription {
    /// A SignalR contract-quote subscription of a typical market hub.
    pub fn hub_quotes(contract_id: &str) -> Self {
        Subscription::Hub {
            method: "SubscribeContractQuotes".into(),
            args: serde_json::json!([contract_id]).to_string(),
            unsubscribe: Some("UnsubscribeContractQuotes".into()),
            event: "GatewayQuote".into(),
        }
    }
}

impl Subscription {
    /// IBKR market data for `conid` with the given field ids.
    pub fn market_data<I, S>(conid: u64, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Subscription::MarketData {
            conid,
            fields: fields.into_iter().map(Into::into).collect(),
        }
    }
}

impl fmt::Display for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subscription::MarketData { conid, .. } => write!(f, "market data {conid}"),
            Subscription::Orders => write!(f, "orders"),
            Subscription::Pnl => write!(f, "pnl"),
            Subscription::AccountSummary { .. } => write!(f, "account summary"),
            Subscription::Ledger { .. } => write!(f, "ledger"),
            Subscription::Channel { channel } => write!(f, "channel {channel}"),
            Subscription::Hub { method, args, .. } => write!(f, "{method}({args})"),
        }
    }
}

/// The lifecycle of one subscription on the current socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SubscriptionState {
    /// Waiting for a Ready socket.
    Pending,
    /// Sent; waiting for the gateway to confirm.
    Sent {
        /// Times sent on this socket.
        attempt: u32,
    },
    /// Confirmed (IBKR: first message on the topic).
    Active,
    /// Given up on this socket.
    Failed {
        /// Why.
        reason: String,
    },
}

/// What a consumer receives.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A data message for the subscription.
    Data {
        /// The wire topic, e.g. `smd+265598`.
        topic: Arc<str>,
        /// The message, parsed once.
        data: serde_json::Value,
    },
    /// The subscription changed state (e.g. pending after a disconnect, active after replay).
    State {
        /// The wire topic of the subscription, as in [`Event::Data`] (a receiver may serve
        /// several subscriptions, see `Handle::subscribe_many`).
        topic: Arc<str>,
        /// Its new state.
        state: SubscriptionState,
    },
}
