//! Where secrets come from: an environment variable, a file, or the embedding program — never
//! configuration text. A secret is read at the moment it is needed, so a rotated one is picked up.

use std::path::PathBuf;

use crate::failure::Failure;

/// Where a secret comes from. Never from configuration text.
#[derive(Clone, Debug)]
pub enum SecretSource {
    /// An environment variable, read at each fetch.
    Env(String),
    /// A file, read at each fetch (trailing whitespace trimmed).
    File(PathBuf),
    /// Given by the embedding program.
    Value(secrecy::SecretString),
}

impl SecretSource {
    /// Reads the secret now (each fetch reads it again, so a rotated secret is picked up).
    pub fn read(&self) -> Result<secrecy::SecretString, Failure> {
        match self {
            SecretSource::Env(var) => std::env::var(var).map(secrecy::SecretString::from).map_err(|_| Failure::Config {
                detail: format!("environment variable {var} (token secret) is not set: export it before starting keepwire"),
            }),
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| secrecy::SecretString::from(s.trim_end().to_string()))
                .map_err(|e| Failure::Config { detail: format!("token secret file {}: {e}", path.display()) }),
            SecretSource::Value(v) => Ok(v.clone()),
        }
    }
}
