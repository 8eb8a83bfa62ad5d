//! Subcommands of the binary.

pub mod demo;
pub mod emulate;
