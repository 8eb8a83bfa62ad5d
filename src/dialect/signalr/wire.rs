//! SignalR JSON hub protocol wire format, shared by the client dialect and the emulator's hub.
//! (Scaffold: filled in by the SignalR work.)
