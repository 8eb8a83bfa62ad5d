//! A library user gets the same checks as a TOML user: `Handle::builder().start()` refuses a
//! stream whose settings are out of range, naming every field, its value and the fix.

use std::time::Duration;

use keepwire::{Error, Handle, StreamConfig};

#[test]
fn a_library_config_with_backoff_max_zero_is_refused_by_start() {
    let mut cfg = StreamConfig::ibkr("gw", "https://alice:hunter2@127.0.0.1:5000");
    cfg.backoff.max = Duration::ZERO;
    let err = match Handle::builder().stream(cfg).start() {
        Err(e) => e,
        Ok(_) => panic!("a backoff.max of 0 must not start"),
    };
    let Error::InvalidConfig { stream, problems } = &err else {
        panic!("not InvalidConfig: {err:?}")
    };
    assert_eq!(stream, "gw");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].field, "backoff.max");
    let shown = err.to_string();
    assert!(
        shown.contains("backoff.max = \"0s\"") && shown.contains("set backoff.max to at least"),
        "{shown}"
    );
    assert!(
        !shown.contains("hunter2") && !shown.contains("alice"),
        "{shown}"
    );
}

#[test]
fn nan_randomization_and_zero_intervals_are_refused_all_at_once() {
    let mut cfg = StreamConfig::ibkr("gw", "https://127.0.0.1:5000");
    cfg.backoff.randomization = f64::NAN;
    cfg.login_poll_interval = Duration::ZERO;
    if let Some(ibkr) = cfg.ibkr_config_mut() {
        ibkr.tic_interval = Duration::ZERO;
    }
    let good = StreamConfig::ibkr("other", "https://127.0.0.1:5001");
    let err = match Handle::builder().stream(good).stream(cfg).start() {
        Err(e) => e,
        Ok(_) => panic!("NaN randomization must not start"),
    };
    let Error::InvalidConfig { stream, problems } = &err else {
        panic!("not InvalidConfig: {err:?}")
    };
    assert_eq!(stream, "gw");
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "backoff.randomization",
            "login_poll_interval",
            "ibkr.tic_interval"
        ]
    );
    assert!(
        err.to_string().contains("backoff.randomization = NaN"),
        "{err}"
    );
}

/// `[ha]` needs the `ha` feature: a build without it refuses to start rather than run every
/// replica as a leader.
#[cfg(not(feature = "ha"))]
#[test]
fn ha_in_a_build_without_the_ha_feature_is_refused_by_start() {
    let ha = keepwire::HaConfig::new(["http://127.0.0.1:2379"], "kw", "a");
    let err = match Handle::builder()
        .stream(StreamConfig::ibkr("gw", "https://127.0.0.1:5000"))
        .ha(ha)
        .start()
    {
        Err(e) => e,
        Ok(_) => panic!("[ha] without the feature must not start"),
    };
    let Error::InvalidHa { problems } = &err else {
        panic!("not InvalidHa: {err:?}")
    };
    assert!(err.to_string().contains("--features ha"), "{err}");
    assert_eq!(problems[0].field, "ha");
}
