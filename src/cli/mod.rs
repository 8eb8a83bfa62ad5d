//! Subcommands of the binary.

pub mod chaos;
pub mod demo;
pub mod doctor;
pub mod emulate;
pub mod http;
pub mod run;
pub mod scenario;
