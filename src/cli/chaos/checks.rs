//! The invariants of a live chaos run, as functions of what was observed, so that each can be
//! shown to fire on a planted defect.

use std::collections::HashSet;
use std::time::Duration;

use keepwire::channel::Receiver;
use keepwire::emulator::Counters;
use keepwire::Event;

use crate::cli::scenario::Dialect;

/// Finds secrets the emulator issued in text keepwire produced (logs, metrics, status).
#[derive(Default)]
pub struct SecretScanner {
    secrets: HashSet<String>,
}

impl SecretScanner {
    /// Learns the secrets issued so far.
    pub fn learn(&mut self, issued: impl IntoIterator<Item = String>) {
        self.secrets.extend(issued);
    }

    /// How many secrets are known.
    pub fn known(&self) -> usize {
        self.secrets.len()
    }

    /// The secrets found in `text`, each shown only by a short prefix (never whole).
    pub fn leaks(&self, text: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut note = |word: &str| {
            if self.secrets.contains(word) {
                let shown: String = word.chars().take(6).collect();
                found.push(format!("{shown}…"));
            }
        };
        // Whole words of the characters secrets are made of ("eyJ.kw.…", "tk/…", hex) …
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || "./_-+".contains(c))) {
            note(word);
        }
        // … and every run of hex digits, wherever it sits (e.g. "sid=0123…").
        for run in text.split(|c: char| !c.is_ascii_hexdigit()) {
            if run.len() >= 16 {
                note(run);
            }
        }
        found.sort();
        found.dedup();
        found
    }
}

/// The requests a half of the emulator counts for `dialect`: token, session, ticket and
/// negotiate calls, and upgrades.
pub fn requests(c: &Counters, dialect: Dialect) -> u64 {
    let sum = |v: &[u64]| v.iter().fold(0u64, |a, b| a.saturating_add(*b));
    match dialect {
        Dialect::Ibkr => sum(&[
            c.auth_status_get,
            c.auth_status_post,
            c.ssodh_init,
            c.reauthenticate,
            c.tickle,
            c.sso_validate,
            c.ws_upgrades_accepted,
            c.ws_upgrades_rejected,
        ]),
        Dialect::Ticket => sum(&[
            c.ticket.token_requests,
            c.ticket.ticket_requests,
            c.ticket.upgrades_accepted,
            c.ticket.upgrades_rejected,
        ]),
        Dialect::Signalr => sum(&[
            c.hub.logins,
            c.hub.validates,
            c.hub.negotiates,
            c.hub.upgrades_accepted,
            c.hub.upgrades_rejected,
        ]),
    }
}

/// After a hard failure, not one further request or dial: `before` and `after` are the
/// emulator's counters when every stream of `dialect` had stopped and a while later.
pub fn quiet_after_hard(before: &Counters, after: &Counters, dialect: Dialect) -> Option<String> {
    let (b, a) = (requests(before, dialect), requests(after, dialect));
    (a != b).then(|| {
        format!(
            "{} request(s) or dial(s) to the {dialect:?} gateway after every {dialect:?} stream stopped on a hard failure",
            a.saturating_sub(b)
        )
    })
}

/// No data for a topic after its unsubscribe returned: `rx` is the subscription's receiver,
/// taken right after `unsubscribe` returned. What was queued before is drained; then the
/// channel must end (its sender went with the subscription) without one more message.
pub async fn silent_after_unsubscribe(mut rx: Receiver<Event>, wait: Duration) -> Option<String> {
    while rx.try_recv().is_some() {}
    match tokio::time::timeout(wait, rx.recv()).await {
        Ok(None) => None,
        Ok(Some(Event::Data { topic, .. })) => Some(format!(
            "data on {topic} delivered after its unsubscribe returned"
        )),
        Ok(Some(Event::State { state, .. })) => Some(format!(
            "the subscription still gets events after its unsubscribe returned ({state:?})"
        )),
        Err(_) => Some(format!(
            "the subscription's channel is still open {} ms after its unsubscribe returned",
            wait.as_millis()
        )),
    }
}

/// What a process holds, read at the start and at the end of a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Holdings {
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
}

/// Resident memory may grow by this much over a run (allocator arenas, caches warming up).
pub const RSS_SLACK_KIB: u64 = 64 << 10;

/// Leaks across thousands of reconnects: file descriptors grown by more than `fd_slack`, or
/// resident memory by more than [`RSS_SLACK_KIB`], between `start` and `end`.
pub fn growth(start: Holdings, end: Holdings, fd_slack: u64) -> Vec<String> {
    let mut found = Vec::new();
    if end.fds > start.fds.saturating_add(fd_slack) {
        found.push(format!(
            "file descriptors grew from {} to {} (sockets leaked?)",
            start.fds, end.fds
        ));
    }
    if end.rss_kib > start.rss_kib.saturating_add(RSS_SLACK_KIB) {
        found.push(format!(
            "resident memory grew from {} KiB to {} KiB",
            start.rss_kib, end.rss_kib
        ));
    }
    found
}

/// Credentials used again after the gateway refused them, and tickets presented twice, as the
/// emulator counted them: each a violation when it grew between `before` and `after`.
pub fn reused_credentials(before: &Counters, after: &Counters) -> Vec<String> {
    let grew = |a: u64, b: u64| a.saturating_sub(b);
    let mut found = Vec::new();
    let n = grew(
        after.ticket.ticket_presented_twice,
        before.ticket.ticket_presented_twice,
    );
    if n > 0 {
        found.push(format!("{n} ticket(s) presented twice"));
    }
    let n = grew(
        after.hub.refused_token_presented_again,
        before.hub.refused_token_presented_again,
    );
    if n > 0 {
        found.push(format!(
            "{n} hub access token(s) presented again after negotiate refused them"
        ));
    }
    let n = grew(
        after.ticket.refused_jwt_presented_again,
        before.ticket.refused_jwt_presented_again,
    );
    if n > 0 {
        found.push(format!(
            "{n} JWT(s) presented again after the ticket endpoint refused them"
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_scanner_finds_a_planted_secret_and_never_prints_it_whole() {
        let mut s = SecretScanner::default();
        let jwt = "eyJ.kw.0123456789abcdef0123";
        let sid = "0123456789abcdef0123456789abcdef";
        s.learn([jwt.to_string(), sid.to_string()]);
        assert!(s
            .leaks("dialing with a fresh ticket, generation 3")
            .is_empty());
        let found = s.leaks(&format!("authorization: Bearer {jwt}, cookie sid={sid};"));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|f| !f.contains(jwt) && !f.contains(sid)));
    }

    #[test]
    fn a_request_after_a_hard_failure_is_caught() {
        let before = Counters::default();
        let mut after = before.clone();
        assert!(quiet_after_hard(&before, &after, Dialect::Ticket).is_none());
        after.ticket.ticket_requests += 1;
        assert!(quiet_after_hard(&before, &after, Dialect::Ticket).is_some());
        // Another half's traffic is not this dialect's.
        assert!(quiet_after_hard(&before, &after, Dialect::Signalr).is_none());
    }

    #[test]
    fn a_credential_used_after_it_was_refused_or_a_ticket_presented_twice_is_caught() {
        let before = Counters::default();
        assert!(reused_credentials(&before, &before).is_empty());
        let mut after = before.clone();
        after.hub.refused_token_presented_again = 1;
        after.ticket.ticket_presented_twice = 2;
        let found = reused_credentials(&before, &after);
        assert_eq!(found.len(), 2, "{found:?}");
    }

    #[test]
    fn growth_of_file_descriptors_or_memory_is_caught() {
        let start = Holdings {
            rss_kib: 14_000,
            fds: 120,
        };
        let flat = Holdings {
            rss_kib: 26_000,
            fds: 114,
        };
        assert!(growth(start, flat, 56).is_empty());
        let leaking = Holdings {
            rss_kib: 14_000 + RSS_SLACK_KIB + 1,
            fds: 120 + 57,
        };
        let found = growth(start, leaking, 56);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("120 to 177") && found[1].contains("resident memory"));
    }

    #[actix_rt::test]
    async fn data_after_an_unsubscribe_returned_is_caught() {
        // Planted defect: the sender outlives the unsubscribe and pushes once more.
        let (tx, rx) = keepwire::channel::bounded(8);
        tx.push(Event::Data {
            topic: "queued-before".into(),
            data: serde_json::Value::Null,
        });
        let late = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.push(Event::Data {
                topic: "smd+265598".into(),
                data: serde_json::Value::Null,
            });
            tx
        });
        let found = silent_after_unsubscribe(rx, Duration::from_secs(5)).await;
        assert!(found.is_some_and(|v| v.contains("smd+265598")));
        drop(late);
        // The sound case: the sender is gone, what was queued is drained.
        let (tx, rx) = keepwire::channel::bounded(8);
        tx.push(Event::Data {
            topic: "queued-before".into(),
            data: serde_json::Value::Null,
        });
        drop(tx);
        assert!(silent_after_unsubscribe(rx, Duration::from_secs(5))
            .await
            .is_none());
    }
}
