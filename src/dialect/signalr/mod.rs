//! The ASP.NET Core SignalR hub dialect (JSON hub protocol over WebSockets).

pub mod wire;
