//! Integration tests of the IBKR gateway emulator.

mod admin;
mod faults;
mod replicas;
mod rest;
mod signalr;
mod socket;
mod support;
mod tls;
