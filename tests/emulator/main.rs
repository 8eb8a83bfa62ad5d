//! Integration tests of the IBKR gateway emulator.

mod admin;
mod faults;
mod rest;
mod signalr;
mod socket;
mod support;
mod tls;
