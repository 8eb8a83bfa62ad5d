//! Integration tests of the IBKR gateway emulator.

mod admin;
mod faults;
mod rest;
mod socket;
mod support;
mod tls;
