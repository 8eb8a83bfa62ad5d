//! The decisions of the four actors, as pure machines fed events in virtual time. Each test is
//! one row of behaviour a user relies on; the cases (a)–(d) are the defects the simulator found.

use std::time::Duration;

use keepwire::config::{BackoffConfig, CompetingPolicy, RestartIntensity};
use keepwire::failure::{Class, Endpoint, Failure};
use keepwire::ids::{Epoch, Generation};
use keepwire::machine::connection::{ConnEffect, ConnEvent, ConnMachine, ConnState, Presented};
use keepwire::machine::intensity::{Cause, Intensity};
use keepwire::machine::session::{Repair, SessionEffect, SessionEvent, SessionMachine};
use keepwire::machine::subscriptions::{Link, SubsEffect, SubsEvent, SubsMachine, Verdict};
use keepwire::machine::token::{TokenEffect, TokenEvent, TokenMachine, REFRESH_FLOOR};
use keepwire::status::ActorKind;
use keepwire::subscription::SubscriptionState;

fn backoff() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
        multiplier: 2.0,
        randomization: 0.0,
        reset_after: Duration::from_secs(30),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn armed(fx: &[TokenEffect]) -> Option<Duration> {
    fx.iter().find_map(|e| match e {
        TokenEffect::ArmRefresh(d) => Some(*d),
        _ => None,
    })
}

// ---------------------------------------------------------------- TokenManager

#[test]
fn d_an_expires_in_of_zero_is_unknown_and_arms_no_timer() {
    let mut t = TokenMachine::new(Generation::NONE, 1);
    assert!(t.on(TokenEvent::Get, secs(1)).contains(&TokenEffect::Fetch));
    let fx = t.on(
        TokenEvent::Issued {
            expires_in: Some(Duration::ZERO),
            age: Duration::ZERO,
        },
        secs(1),
    );
    assert_eq!(armed(&fx), None, "no refresh on a timer of 0");
    // Handed out again without a fetch: only a rejection refreshes it.
    let fx = t.on(TokenEvent::Get, secs(2));
    assert!(matches!(fx.as_slice(), [TokenEffect::Give(_)]), "{fx:?}");
}

#[test]
fn d_a_huge_expires_in_is_clamped_and_never_overflows() {
    let mut t = TokenMachine::new(Generation::NONE, 1);
    t.on(TokenEvent::Get, secs(1));
    let fx = t.on(
        TokenEvent::Issued {
            expires_in: Some(Duration::MAX),
            age: Duration::ZERO,
        },
        secs(1),
    );
    let at = armed(&fx).expect("a refresh timer");
    assert!(at <= secs(366 * 24 * 3600), "{at:?}");
}

#[test]
fn d_proactive_refreshes_are_at_least_a_second_apart() {
    let mut t = TokenMachine::new(Generation::NONE, 1);
    t.on(TokenEvent::Get, secs(1));
    let fx = t.on(
        TokenEvent::Issued {
            expires_in: Some(Duration::from_millis(10)),
            age: Duration::ZERO,
        },
        secs(1),
    );
    assert_eq!(armed(&fx), Some(REFRESH_FLOOR));
}

#[test]
fn a_thousand_rejections_of_one_generation_cause_one_fetch() {
    let mut t = TokenMachine::new(Generation::NONE, 1);
    t.on(TokenEvent::Get, secs(1));
    t.on(
        TokenEvent::Issued {
            expires_in: None,
            age: Duration::ZERO,
        },
        secs(1),
    );
    let fetches: usize = (0..1000)
        .map(|_| {
            t.on(TokenEvent::Rejected(Generation::new(1)), secs(2))
                .iter()
                .filter(|e| **e == TokenEffect::Fetch)
                .count()
        })
        .sum();
    assert_eq!(fetches, 1);
}

// ---------------------------------------------------------------- StreamConnection

fn conn() -> ConnMachine {
    let mut c = ConnMachine::new(backoff(), CompetingPolicy::Compete, 1);
    c.on(ConnEvent::Started, Duration::ZERO);
    c
}

fn presented(g: u64, replaced_rejected: bool) -> Presented {
    Presented {
        generation: Generation::new(g),
        replaced_rejected,
        issued_at: secs(1),
    }
}

fn reported(fx: &[ConnEffect]) -> Vec<&Failure> {
    fx.iter()
        .filter_map(|e| match e {
            ConnEffect::Report(f) => Some(f),
            _ => None,
        })
        .collect()
}

#[test]
fn a_refused_handshake_on_the_open_socket_with_fresh_credentials_is_hard() {
    let mut c = conn();
    let refused = || Failure::Rejected {
        status: 401,
        after_refresh: false,
    };
    c.on(
        ConnEvent::Opened {
            epoch: Epoch::new(1),
            presented: presented(1, false),
        },
        secs(1),
    );
    let fx = c.on(ConnEvent::SocketFailed(refused()), secs(1));
    assert!(
        fx.contains(&ConnEffect::Reject(Generation::new(1))),
        "first: refresh"
    );
    c.on(ConnEvent::Started, secs(1));
    c.on(ConnEvent::BackoffElapsed, secs(2));
    c.on(
        ConnEvent::Opened {
            epoch: Epoch::new(2),
            presented: presented(2, true),
        },
        secs(2),
    );
    let fx = c.on(ConnEvent::SocketFailed(refused()), secs(2));
    let f = reported(&fx);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].class(CompetingPolicy::Compete), Class::Hard, "{f:?}");
    assert!(fx.contains(&ConnEffect::Discard(Generation::new(2))));
    assert!(!fx.contains(&ConnEffect::Restart));
}

/// Found by `keepwire chaos --streams 4 --faults 10 --seed 5`: a login needed (2FA) made the
/// session id "rejected", so the one 403 on the first upgrade after the approval was taken for
/// "rejected again right after a refresh" and stopped the stream for good.
#[test]
fn a_lost_session_is_not_a_rejected_credential_and_the_next_one_does_not_count_as_a_refresh() {
    let mut t = TokenMachine::new(Generation::NONE, 1);
    t.on(TokenEvent::Get, secs(0));
    let fx = t.on(
        TokenEvent::Issued {
            expires_in: None,
            age: Duration::ZERO,
        },
        secs(0),
    );
    assert!(fx
        .iter()
        .any(|e| matches!(e, TokenEffect::Install(h) if h.generation == Generation::new(1))));
    // The socket says the session is gone: StreamConnection marks the generation stale.
    let mut c = conn();
    c.on(
        ConnEvent::Opened {
            epoch: Epoch::new(1),
            presented: presented(1, false),
        },
        secs(1),
    );
    let fx = c.on(
        ConnEvent::SocketFailed(Failure::SessionLost {
            detail: "sts authenticated:false".into(),
        }),
        secs(1),
    );
    assert!(
        fx.contains(&ConnEffect::Stale(Generation::new(1))),
        "{fx:?}"
    );
    assert!(!fx.contains(&ConnEffect::Reject(Generation::new(1))));
    // The token machine fetches a fresh one, which did not replace a rejected credential.
    let fx = t.on(TokenEvent::Stale(Generation::new(1)), secs(1));
    assert!(fx.contains(&TokenEffect::Fetch));
    let fx = t.on(
        TokenEvent::Issued {
            expires_in: None,
            age: Duration::ZERO,
        },
        secs(2),
    );
    assert!(fx
        .iter()
        .any(|e| matches!(e, TokenEffect::Install(h) if !h.replaced_rejected)));
}

#[test]
fn b_a_halt_during_a_dial_cancels_it_and_a_late_socket_is_closed() {
    let mut c = conn();
    assert_eq!(c.state(), ConnState::Dialing);
    let fx = c.on(ConnEvent::Halt, secs(1));
    assert!(fx.contains(&ConnEffect::CancelDial));
    let fx = c.on(
        ConnEvent::Opened {
            epoch: Epoch::new(1),
            presented: presented(1, false),
        },
        secs(3),
    );
    assert_eq!(fx, vec![ConnEffect::Close(Epoch::new(1))]);
    assert_eq!(c.state(), ConnState::Halted);
}

#[test]
fn c_a_session_the_socket_keeps_finding_dead_backs_off_to_the_maximum() {
    let mut c = conn();
    let mut delays = Vec::new();
    for i in 1..=10 {
        c.on(
            ConnEvent::Opened {
                epoch: Epoch::new(i),
                presented: presented(1, false),
            },
            secs(i),
        );
        let fx = c.on(
            ConnEvent::SocketFailed(Failure::SessionLost {
                detail: "sts authenticated:false".into(),
            }),
            secs(i),
        );
        assert!(fx.iter().any(|e| matches!(e, ConnEffect::SessionLost(_))));
        let fx = c.on(ConnEvent::Started, secs(i));
        delays.extend(fx.iter().find_map(|e| match e {
            ConnEffect::ArmBackoff(d) => Some(*d),
            _ => None,
        }));
        c.on(ConnEvent::BackoffElapsed, secs(i));
    }
    assert_eq!(delays.first(), Some(&Duration::from_millis(100)));
    assert_eq!(delays.last(), Some(&secs(5)), "{delays:?}");
}

// ---------------------------------------------------------------- GatewaySession

#[test]
fn c_a_half_dead_session_is_repaired_with_reauthenticate_then_init_and_paced() {
    let mut s = SessionMachine::new(backoff(), CompetingPolicy::Compete, secs(15), 1);
    let fx = s.on(SessionEvent::Started, Duration::ZERO);
    assert!(fx.contains(&SessionEffect::Establish(Repair::None)));
    let lost = || {
        SessionEvent::Lost(Failure::SessionLost {
            detail: "sts authenticated:false".into(),
        })
    };
    let mut repairs = Vec::new();
    let mut delays = Vec::new();
    for i in 0..8 {
        s.on(SessionEvent::Established(Ok(())), secs(i));
        let fx = s.on(lost(), secs(i));
        assert!(fx.contains(&SessionEffect::SessionDown));
        let fx = s.on(SessionEvent::Started, secs(i));
        delays.extend(fx.iter().find_map(|e| match e {
            SessionEffect::ArmRetry(d) => Some(*d),
            _ => None,
        }));
        let fx = s.on(SessionEvent::RetryDue, secs(i));
        repairs.extend(fx.iter().find_map(|e| match e {
            SessionEffect::Establish(r) => Some(*r),
            _ => None,
        }));
    }
    assert_eq!(
        &repairs[..3],
        &[Repair::Reauthenticate, Repair::Init, Repair::Reauthenticate]
    );
    assert!(delays.windows(2).all(|w| w[1] >= w[0]), "{delays:?}");
    assert_eq!(delays.last(), Some(&secs(5)));
    // Healthy again: the next loss starts over with no repair and the shortest delay.
    s.on(SessionEvent::Established(Ok(())), secs(9));
    s.on(SessionEvent::Healthy, secs(40));
    assert_eq!(s.repair(), Repair::None);
}

#[test]
fn a_hard_failure_while_establishing_answers_every_waiting_dial() {
    let mut s = SessionMachine::new(backoff(), CompetingPolicy::Yield, secs(15), 1);
    s.on(SessionEvent::Started, Duration::ZERO);
    let fx = s.on(SessionEvent::Established(Err(Failure::Competing)), secs(1));
    assert!(fx.contains(&SessionEffect::Answer(Err(Failure::Competing))));
}

// ---------------------------------------------------------------- Subscriptions

fn wire(
    topic: &str,
    confirmation: keepwire::dialect::Confirmation,
) -> keepwire::dialect::SubscriptionWire {
    keepwire::dialect::SubscriptionWire {
        key: topic.into(),
        subscribe: format!("sub:{topic}"),
        unsubscribe: Some(format!("unsub:{topic}")),
        resend_every: None,
        confirmation,
    }
}

fn sent(fx: &[SubsEffect]) -> Vec<(Epoch, &str)> {
    fx.iter()
        .filter_map(|e| match e {
            SubsEffect::Send(epoch, frame) => Some((*epoch, frame.as_str())),
            _ => None,
        })
        .collect()
}

#[test]
fn data_that_arrives_after_an_unsubscribe_returned_is_never_delivered() {
    use keepwire::dialect::Confirmation;
    let mut m = SubsMachine::default();
    let e1 = Epoch::NONE.next();
    m.on(
        SubsEvent::Add(wire("a", Confirmation::FirstMessage)),
        secs(0),
    );
    m.on(SubsEvent::Up(e1), secs(0));
    assert_eq!(
        m.on_data(e1, "a"),
        Verdict::Deliver {
            became_active: true
        }
    );
    let fx = m.on(SubsEvent::Remove("a".into()), secs(1));
    assert_eq!(sent(&fx), vec![(e1, "unsub:a")]);
    // The gateway sent this before it read the unsubscribe.
    assert_eq!(m.on_data(e1, "a"), Verdict::Drop);
    assert!(m.on(SubsEvent::Data(e1, "a".into()), secs(1)).is_empty());
}

#[test]
fn every_new_ready_socket_replays_every_desired_subscription_and_old_sockets_are_ignored() {
    use keepwire::dialect::Confirmation;
    let mut m = SubsMachine::default();
    let (e1, e2) = (Epoch::NONE.next(), Epoch::NONE.next().next());
    m.on(
        SubsEvent::Add(wire("a", Confirmation::FirstMessage)),
        secs(0),
    );
    m.on(
        SubsEvent::Add(wire("b", Confirmation::Ack("id-b".into()))),
        secs(0),
    );
    let fx = m.on(SubsEvent::Up(e1), secs(0));
    assert_eq!(sent(&fx), vec![(e1, "sub:a"), (e1, "sub:b")]);
    m.on(SubsEvent::Ack(e1, "id-b".into(), None), secs(0));
    assert_eq!(m.state("b"), Some(&SubscriptionState::Active));
    m.on(SubsEvent::Down(e1), secs(1));
    assert_eq!(m.state("b"), Some(&SubscriptionState::Pending));
    let fx = m.on(SubsEvent::Up(e2), secs(2));
    assert_eq!(sent(&fx), vec![(e2, "sub:a"), (e2, "sub:b")]);
    // A late Down or data of the old socket changes nothing.
    assert!(m.on(SubsEvent::Down(e1), secs(2)).is_empty());
    assert_eq!(m.on_data(e1, "a"), Verdict::Drop);
    assert_eq!(m.link(), Link::Up(e2));
}

#[test]
fn an_unconfirmed_subscription_is_resent_then_failed_with_a_reason() {
    use keepwire::dialect::Confirmation;
    let mut m = SubsMachine::default(); // 10 s, 3 attempts
    let e1 = Epoch::NONE.next();
    m.on(
        SubsEvent::Add(wire("a", Confirmation::FirstMessage)),
        secs(0),
    );
    m.on(SubsEvent::Up(e1), secs(0));
    assert!(sent(&m.on(SubsEvent::Tick, secs(9))).is_empty());
    assert_eq!(sent(&m.on(SubsEvent::Tick, secs(10))), vec![(e1, "sub:a")]);
    assert_eq!(sent(&m.on(SubsEvent::Tick, secs(20))), vec![(e1, "sub:a")]);
    m.on(SubsEvent::Tick, secs(30));
    assert!(
        matches!(m.state("a"), Some(SubscriptionState::Failed { reason }) if reason.contains("3 attempts"))
    );
}

#[test]
fn a_halted_stream_sends_nothing_and_replays_on_the_first_socket_after_resume() {
    use keepwire::dialect::Confirmation;
    let mut m = SubsMachine::default();
    let (e1, e2) = (Epoch::NONE.next(), Epoch::NONE.next().next());
    m.on(SubsEvent::Add(wire("a", Confirmation::Immediate)), secs(0));
    m.on(SubsEvent::Up(e1), secs(0));
    m.on(SubsEvent::Halt, secs(1));
    assert!(sent(&m.on(SubsEvent::Add(wire("b", Confirmation::Immediate)), secs(1))).is_empty());
    assert!(sent(&m.on(SubsEvent::Remove("a".into()), secs(1))).is_empty());
    m.on(SubsEvent::Down(e1), secs(1));
    assert!(sent(&m.on(SubsEvent::Up(e2), secs(2))).is_empty());
    m.on(SubsEvent::Resume, secs(3));
    let fx = m.on(SubsEvent::Up(e2.next()), secs(4));
    assert_eq!(sent(&fx), vec![(e2.next(), "sub:b")]);
    assert_eq!(m.state("b"), Some(&SubscriptionState::Active));
}

// ---------------------------------------------------------------- restart intensity

#[test]
fn c_planned_restarts_never_end_a_stream_deaths_do() {
    let limit = RestartIntensity {
        max_restarts: 3,
        window: secs(10),
    };
    let mut i = Intensity::new(limit);
    for n in 0..1000 {
        let now = Duration::from_millis(n);
        assert_eq!(
            i.restarted(ActorKind::StreamConnection, Cause::Planned, now),
            None
        );
    }
    let deaths: Vec<_> = (0..4)
        .map(|n| i.restarted(ActorKind::Subscriptions, Cause::Died, secs(n)))
        .collect();
    assert!(deaths[..3].iter().all(Option::is_none));
    assert!(matches!(deaths[3], Some(Failure::RestartIntensity { .. })));
}

// ---------------------------------------------------------------- the failure table

#[test]
fn the_failure_table_row_by_row() {
    use Class::*;
    let http = |status| Failure::Http {
        endpoint: Endpoint::Upgrade,
        status,
        retry_after: None,
    };
    let closed = |code| Failure::Closed {
        code: Some(code),
        reason: String::new(),
    };
    let rows: Vec<(Failure, CompetingPolicy, Class)> = vec![
        (
            Failure::Rejected {
                status: 401,
                after_refresh: false,
            },
            CompetingPolicy::Compete,
            Auth,
        ),
        (
            Failure::Rejected {
                status: 403,
                after_refresh: false,
            },
            CompetingPolicy::Compete,
            Auth,
        ),
        (
            Failure::Rejected {
                status: 401,
                after_refresh: true,
            },
            CompetingPolicy::Compete,
            Hard,
        ),
        (
            Failure::SessionLost {
                detail: String::new(),
            },
            CompetingPolicy::Compete,
            Session,
        ),
        (
            Failure::NeedsLogin {
                detail: String::new(),
            },
            CompetingPolicy::Compete,
            NeedsLogin,
        ),
        (Failure::Competing, CompetingPolicy::Compete, Session),
        (Failure::Competing, CompetingPolicy::Yield, Hard),
        (
            Failure::Unreachable {
                detail: String::new(),
            },
            CompetingPolicy::Compete,
            Soft,
        ),
        (
            Failure::Timeout {
                endpoint: Endpoint::Upgrade,
            },
            CompetingPolicy::Compete,
            Soft,
        ),
        (http(500), CompetingPolicy::Compete, Soft),
        (http(503), CompetingPolicy::Compete, Soft),
        (http(429), CompetingPolicy::Compete, Soft),
        (http(400), CompetingPolicy::Compete, Hard),
        (closed(1000), CompetingPolicy::Compete, Soft),
        (closed(1001), CompetingPolicy::Compete, Soft),
        (closed(1006), CompetingPolicy::Compete, Soft),
        (closed(1011), CompetingPolicy::Compete, Soft),
        (closed(1012), CompetingPolicy::Compete, Soft),
        (closed(1013), CompetingPolicy::Compete, Soft),
        (closed(1008), CompetingPolicy::Compete, Hard),
        (closed(1009), CompetingPolicy::Compete, Hard),
        (
            Failure::HeartbeatSilence {
                silent_for: secs(30),
            },
            CompetingPolicy::Compete,
            Soft,
        ),
        (Failure::NoBridge, CompetingPolicy::Compete, Soft),
        (
            Failure::Refused {
                endpoint: Endpoint::Credentials,
                detail: "MISSING_SESSION".into(),
            },
            CompetingPolicy::Compete,
            Hard,
        ),
        (
            Failure::ServerClose {
                allow_reconnect: false,
                error: String::new(),
            },
            CompetingPolicy::Compete,
            Hard,
        ),
        (
            Failure::ServerClose {
                allow_reconnect: true,
                error: String::new(),
            },
            CompetingPolicy::Compete,
            Soft,
        ),
        (
            Failure::TicketRejected { status: 404 },
            CompetingPolicy::Compete,
            Soft,
        ),
        (
            Failure::Oversized { limit: 1 },
            CompetingPolicy::Compete,
            Soft,
        ),
        (
            Failure::MalformedBurst { count: 101 },
            CompetingPolicy::Compete,
            Soft,
        ),
        (
            Failure::RestartIntensity {
                actor: "x",
                restarts: 21,
                window: secs(10),
            },
            CompetingPolicy::Compete,
            Hard,
        ),
        (
            Failure::Config {
                detail: String::new(),
            },
            CompetingPolicy::Compete,
            Hard,
        ),
        (
            Failure::Redirected {
                endpoint: Endpoint::Credentials,
                status: 307,
                location: Some("http://127.0.0.1:1".into()),
            },
            CompetingPolicy::Compete,
            Hard,
        ),
        (
            Failure::UrlRefused {
                key: "negotiate redirect url".into(),
                detail: String::new(),
            },
            CompetingPolicy::Compete,
            Hard,
        ),
    ];
    for (failure, policy, class) in rows {
        assert_eq!(failure.class(policy), class, "{failure:?} under {policy:?}");
    }
}
