//! Where secrets come from: an environment variable, a file, or the embedding program — never
//! configuration text. A secret is read at the moment it is needed, so a rotated one is picked up.

use std::io::Read;
use std::path::{Path, PathBuf};

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
    /// Reads the secret now (each fetch reads it again, so a rotated secret is picked up). A file
    /// that group or others may access is refused: the error names `chmod 600 <path>`.
    pub fn read(&self) -> Result<secrecy::SecretString, Failure> {
        match self {
            SecretSource::Env(var) => std::env::var(var).map(secrecy::SecretString::from).map_err(|_| Failure::Config {
                detail: format!("environment variable {var} (token secret) is not set: export it before starting keepwire"),
            }),
            SecretSource::File(path) => read_private(path, "secret file")
                .map(|s| secrecy::SecretString::from(s.trim_end().to_string()))
                .map_err(|detail| Failure::Config { detail }),
            SecretSource::Value(v) => Ok(v.clone()),
        }
    }
}

/// Reads a file that holds a secret, refusing it when group or others may access it.
fn read_private(path: &Path, what: &str) -> Result<String, String> {
    let io = |e: std::io::Error| format!("{what} {}: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(io)?;
    ensure_private(path, &file.metadata().map_err(io)?, what)?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io)?;
    Ok(text)
}

/// Refuses a file holding a secret (`what`, e.g. "secret file") when group or others have any
/// access to it (`meta` is the file's, symlinks followed); the error names the fix,
/// `chmod 600 <path>`. Without Unix permissions (Windows) every file passes.
pub fn ensure_private(path: &Path, meta: &std::fs::Metadata, what: &str) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{what} {} is readable or writable by group or others (mode {mode:03o}), refused: run `chmod 600 {}`",
                path.display(),
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (path, meta, what);
    Ok(())
}

/// Checks, without reading it, that an existing file holding a secret is private (see
/// [`ensure_private`]); a missing file passes (it is reported when it is read).
pub fn check_private_file(path: &Path, what: &str) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) => ensure_private(path, &meta, what),
        Err(_) => Ok(()),
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::os::unix::fs::PermissionsExt;

    fn file_with_mode(name: &str, mode: u32) -> PathBuf {
        let path = std::env::temp_dir().join(format!("kw-secret-{name}-{}", std::process::id()));
        std::fs::write(&path, "s3cr3t\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_secret_file_readable_by_group_or_others_is_refused_naming_chmod_600() {
        for mode in [0o644, 0o640, 0o604, 0o660] {
            let path = file_with_mode(&format!("{mode:o}"), mode);
            let err = SecretSource::File(path.clone()).read().unwrap_err();
            let _ = std::fs::remove_file(&path);
            assert!(matches!(err, Failure::Config { .. }), "{err}");
            let text = err.to_string();
            assert!(
                text.contains(&format!("chmod 600 {}", path.display())),
                "{text}"
            );
            assert!(!text.contains("s3cr3t"), "{text}");
            assert!(
                check_private_file(&path, "x").is_ok(),
                "a removed file is reported when read, not here"
            );
        }
    }

    #[test]
    fn a_private_secret_file_is_read() {
        for mode in [0o600, 0o400] {
            let path = file_with_mode(&format!("ok{mode:o}"), mode);
            let got = SecretSource::File(path.clone()).read();
            let checked = check_private_file(&path, "x");
            let _ = std::fs::remove_file(&path);
            assert_eq!(got.unwrap().expose_secret(), "s3cr3t");
            assert_eq!(checked, Ok(()));
        }
    }
}
