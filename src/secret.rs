//! Where secrets come from: an environment variable, a file, or the embedding program — never
//! configuration text. A secret is read at the moment it is needed, so a rotated one is picked up.

use std::path::PathBuf;

use crate::failure::Failure;

/// What `Debug` shows in place of a secret.
pub const REDACTED: &str = "<redacted>";

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

/// Text with the `user:password@` of every URL in it replaced by `***@`.
pub fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '?' | '#' | '"' | '\''))
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(i) => {
                out.push_str("***@");
                out.push_str(&authority[i + 1..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}
