//! The deterministic simulator, as a specification: the same seed gives the same trace, every
//! schedule that once broke an invariant stays fixed, and a short exploration finds nothing.

use keepwire::sim::{self, Schedule, REGRESSIONS};

#[test]
fn the_same_seed_gives_the_same_trace() {
    let schedule = Schedule::draw(42, 20);
    let a = sim::run(&schedule, true);
    let b = sim::run(&schedule, true);
    assert!(
        a.steps > 100,
        "a schedule of 20 faults takes more than 100 steps"
    );
    assert_eq!(a.trace, b.trace);
    let other = sim::run(&Schedule::draw(43, 20), true);
    assert_ne!(a.trace, other.trace);
}

#[test]
fn every_schedule_that_once_broke_an_invariant_holds_now() {
    for (seed, what) in REGRESSIONS {
        let outcome = sim::run(&Schedule::draw(*seed, 20), false);
        assert_eq!(
            outcome.violation, None,
            "regression seed {seed} ({what}) breaks an invariant again; replay it with \
             `keepwire chaos --sim --replay {seed}`"
        );
    }
}

#[test]
fn two_thousand_schedules_of_twenty_faults_break_no_invariant() {
    let report = sim::explore(7, 2_000, 20, |_, _| {});
    assert_eq!(report.schedules, 2_000);
    // The race "data in flight while the user unsubscribes" did happen, and was survived.
    assert!(report.raced_unsubscribe > 0, "{report:?}");
    assert!(
        report.violations.is_empty(),
        "{:#?}",
        report.violations.first()
    );
    assert_eq!(report.violating_schedules, 0);
}

#[test]
fn the_detectors_fire_on_planted_defects() {
    use keepwire::sim::monitor::{Monitor, Request};
    use std::time::Duration;
    let schedule = Schedule::draw(1, 0);
    // A hot loop: a request every millisecond.
    let mut m = Monitor::new(&schedule);
    let hot = (0..200u64).find_map(|i| m.request(Request::Upgrade, Duration::from_millis(i)));
    assert!(hot.is_some_and(|v| v.contains("without a healthy period")));
    // A soft condition escalated by restart intensity.
    let mut m = Monitor::new(&schedule);
    let failure = keepwire::Failure::RestartIntensity {
        actor: "stream_connection",
        restarts: 21,
        window: Duration::from_secs(10),
    };
    assert!(m.stopped(&failure, Duration::from_secs(5)).is_some());
    // Talking after a hard failure.
    let mut m = Monitor::new(&schedule);
    m.quiet_from = Some(Duration::from_secs(1));
    assert!(m
        .request(Request::Token, Duration::from_secs(2))
        .is_some_and(|v| v.contains("after the stream stopped")));
}
