//! Every secret the emulator hands out (gateway session ids, hub access tokens, JWTs, tickets),
//! so that a chaos run can prove none of them reached a log line, a metric or a status page.

use std::sync::Mutex;

/// At most this many are kept (the oldest half is forgotten beyond it).
const CAP: usize = 200_000;

static ISSUED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Remembers a secret just issued.
pub(crate) fn remember(secret: &str) {
    let mut issued = ISSUED.lock().unwrap_or_else(|e| e.into_inner());
    if issued.len() >= CAP {
        issued.drain(..CAP / 2);
    }
    issued.push(secret.to_owned());
}

/// Every secret issued so far by any emulator of this process.
pub fn issued_secrets() -> Vec<String> {
    ISSUED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
