//! The one rule for every URL a stream calls, configured or supplied by a server:
//!
//! * the scheme is `https` or `wss`, unless the host is loopback (then `http`/`ws` are allowed
//!   too, for test gateways on this machine);
//! * loopback means a loopback IP literal, or `localhost` when it resolves to loopback addresses
//!   only ([`crate::tls::is_loopback_host`]);
//! * `insecure_skip_verify` applies to a URL only when its own host is loopback
//!   ([`Checked::loopback`]): the decision is made per URL, never per stream.
//!
//! [`check`] runs when a configuration is validated (so a bad file fails at start, naming the
//! key) and again at the moment each request or dial is made (so a URL a server supplies, such as
//! a SignalR negotiate redirect, gets the same rule). The URL is parsed by the same parser the
//! HTTP client connects with (`http::Uri`), so the host checked is the host dialled. Errors show
//! a URL without its userinfo and with its query values hidden.

use std::fmt;

use awc::http::Uri;

use crate::failure::Failure;
use crate::tls::is_loopback_host;

/// A URL that passed [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The host is this machine: `http`/`ws` are allowed, and so is skipping TLS verification
    /// when the stream asks for it.
    pub loopback: bool,
    /// The scheme is `https` or `wss`.
    pub tls: bool,
}

/// Why a URL broke the rule, naming the setting it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlProblem {
    /// The setting (`token_url`) or the URL's origin (`negotiate redirect url`).
    pub key: String,
    /// The URL as shown: no userinfo, query values replaced by `***`.
    pub shown: String,
    /// What is wrong.
    pub reason: String,
    /// How to fix it.
    pub remedy: String,
}

impl fmt::Display for UrlProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = \"{}\": {}; {}",
            self.key, self.shown, self.reason, self.remedy
        )
    }
}

impl From<UrlProblem> for Failure {
    fn from(p: UrlProblem) -> Self {
        Failure::UrlRefused {
            key: p.key,
            detail: format!("\"{}\" {}", p.shown, p.reason),
        }
    }
}

/// The remedy for a cleartext or unknown scheme.
const USE_HTTPS: &str = "use https:// (wss:// for a socket); http:// and ws:// are allowed only for a loopback test gateway (127.0.0.1, ::1, or localhost resolving only to those)";

/// Checks `url`, which comes from the setting `key`, against the rule (see the module docs).
pub fn check(key: &str, url: &str) -> Result<Checked, UrlProblem> {
    let shown = show(url);
    let problem = |reason: String, remedy: &str| UrlProblem {
        key: key.to_string(),
        shown: shown.clone(),
        reason,
        remedy: remedy.to_string(),
    };
    let uri: Uri = url.trim().parse().map_err(|_| {
        problem(
            "is not a URL".into(),
            "write it like \"https://gateway.example.com:5000/path\"",
        )
    })?;
    let scheme = uri.scheme_str().map(str::to_ascii_lowercase);
    let tls = match scheme.as_deref() {
        Some("https" | "wss") => true,
        Some("http" | "ws") => false,
        Some(other) => {
            return Err(problem(
                format!("has the scheme {other}://, which keepwire does not speak"),
                USE_HTTPS,
            ))
        }
        None => return Err(problem("has no scheme".into(), USE_HTTPS)),
    };
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| {
        problem(
            "has no host".into(),
            "write it like \"https://gateway.example.com:5000/path\"",
        )
    })?;
    let loopback = is_loopback_host(host);
    if !tls && !loopback {
        return Err(problem(
            format!(
                "is unencrypted ({}://) to a host that is not this machine: credentials would travel in cleartext",
                scheme.as_deref().unwrap_or_default()
            ),
            USE_HTTPS,
        ));
    }
    Ok(Checked { loopback, tls })
}

/// A URL as it may be shown in errors and logs: `scheme://host:port/path`, without userinfo,
/// with every query value replaced by `***`, the fragment dropped, at most 200 characters.
pub fn show(url: &str) -> String {
    let url = url.trim();
    let url = url.split('#').next().unwrap_or_default();
    let (before_query, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match before_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        // Not scheme://…: keep it only up to any '@' (it may be user:password@host).
        None => before_query
            .rsplit_once('@')
            .map_or(before_query, |(_, h)| h)
            .to_string(),
    };
    if let Some(q) = query {
        let redacted: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) => format!("{k}=***"),
                None => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&redacted.join("&"));
    }
    if out.chars().count() > 200 {
        out = out.chars().take(200).collect::<String>() + "…";
    }
    out
}

/// The origin of a URL (`scheme://host[:port]`, no userinfo, path or query), as shown for the
/// target of a redirect. A relative reference is on the same origin as the request.
pub fn origin(url: &str) -> String {
    match url.trim().parse::<Uri>() {
        Ok(uri) => match (uri.scheme_str(), uri.host()) {
            (Some(scheme), Some(host)) => match uri.port_u16() {
                Some(port) => format!("{scheme}://{host}:{port}"),
                None => format!("{scheme}://{host}"),
            },
            _ => "a path on the same origin".to_string(),
        },
        Err(_) => "an unreadable location".to_string(),
    }
}

/// Whether two URLs share an origin (scheme, host and port, with default ports filled in).
pub fn same_origin(a: &str, b: &str) -> bool {
    fn key(url: &str) -> Option<(String, String, u16)> {
        let uri: Uri = url.trim().parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        // A socket and its HTTP form are the same origin.
        let (scheme, default) = match scheme.as_str() {
            "https" | "wss" => ("https".to_string(), 443),
            "http" | "ws" => ("http".to_string(), 80),
            _ => (scheme, 0),
        };
        let host = uri.host()?.to_ascii_lowercase();
        Some((scheme, host, uri.port_u16().unwrap_or(default)))
    }
    matches!((key(a), key(b)), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_urls_pass_for_any_host_cleartext_only_for_loopback() {
        for (url, loopback, tls) in [
            ("https://api.example.com/api/v1/auth/token", false, true),
            ("wss://api.example.com/ws", false, true),
            ("https://127.0.0.1:5000", true, true),
            ("http://127.0.0.1:5000/v1/api", true, false),
            ("ws://[::1]:5000/ws", true, false),
            ("http://localhost:5000", true, false),
            ("HTTPS://API.EXAMPLE.COM", false, true),
        ] {
            assert_eq!(check("url", url), Ok(Checked { loopback, tls }), "{url}");
        }
    }

    #[test]
    fn cleartext_to_a_remote_host_is_refused_naming_the_key_and_the_fix() {
        let p = check("token_url", "http://example.com/api/v1/auth/token").unwrap_err();
        assert_eq!(p.key, "token_url");
        let shown = p.to_string();
        assert!(
            shown.starts_with("token_url = \"http://example.com/"),
            "{shown}"
        );
        assert!(
            shown.contains("cleartext") && shown.contains("use https://"),
            "{shown}"
        );
        for url in ["ws://10.0.0.1/ws", "http://localhost.example.com/"] {
            assert!(check("socket_url", url).is_err(), "{url}");
        }
    }

    #[test]
    fn other_schemes_and_hostless_urls_are_refused() {
        for url in [
            "ftp://example.com/x",
            "example.com:443/x",
            "https:///x",
            "",
            "not a url",
        ] {
            assert!(check("url", url).is_err(), "{url:?}");
        }
    }

    #[test]
    fn errors_never_echo_userinfo_or_query_values() {
        let p = check(
            "login_url",
            "http://alice:hunter2@example.com/login?key=s3cret&x",
        )
        .unwrap_err();
        let shown = p.to_string();
        assert!(
            !shown.contains("hunter2") && !shown.contains("alice"),
            "{shown}"
        );
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("http://example.com/login?key=***&x"),
            "{shown}"
        );
        let f = Failure::from(p);
        assert!(!f.to_string().contains("hunter2"), "{f}");
    }

    #[test]
    fn a_userinfo_host_trick_is_judged_by_the_host_dialled() {
        // The host is what follows the last '@': example.com, not 127.0.0.1.
        assert!(check("url", "http://127.0.0.1@example.com/").is_err());
        assert!(check("url", "http://example.com@127.0.0.1/").is_ok());
    }

    #[test]
    fn origins_drop_userinfo_path_and_query() {
        assert_eq!(
            origin("https://u:p@evil.example:8443/login?token=abc"),
            "https://evil.example:8443"
        );
        assert_eq!(origin("/other/path?x=1"), "a path on the same origin");
        assert!(same_origin("https://h:443/a", "wss://H/b?x"));
        assert!(!same_origin("https://h/a", "https://h:444/a"));
        assert!(!same_origin("http://127.0.0.1:1/a", "http://127.0.0.1:2/a"));
    }
}
