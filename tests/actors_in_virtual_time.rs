//! Actors driven alone, in virtual time (`tokio::time::pause`): expiry and refresh schedules,
//! single-flight refreshes and bounded retries, with no network and no waiting.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use keepwire::actors::subscriptions::Book;
use keepwire::actors::{Peers, StreamCtx, Subscriptions, TokenManager};
use keepwire::config::IbkrConfig;
use keepwire::dialect::ibkr::Ibkr;
use keepwire::dialect::{DialPlan, Dialect, Issued, SocketDecoder, SubscriptionWire};
use keepwire::ids::{Epoch, Generation};
use keepwire::messages::{
    CredentialsRejected, Deliver, GetCredentials, Report, SendFrame, StreamDown, StreamUp,
    Subscribe,
};
use keepwire::{Failure, StreamConfig, Subscription};
use secrecy::{ExposeSecret, SecretString};

/// Records what actors send out.
#[derive(Default, Clone)]
struct Tape {
    frames: Arc<Mutex<Vec<String>>>,
    reports: Arc<Mutex<Vec<String>>>,
}

struct Collector(Tape);
impl Actor for Collector {
    type Context = Context<Self>;
}
impl Handler<SendFrame> for Collector {
    type Result = ();
    fn handle(&mut self, m: SendFrame, _: &mut Context<Self>) {
        self.0.frames.lock().unwrap().push(m.text);
    }
}
impl Handler<Report> for Collector {
    type Result = ();
    fn handle(&mut self, m: Report, _: &mut Context<Self>) {
        self.0.reports.lock().unwrap().push(format!("{m:?}"));
    }
}

/// A dialect whose credential source counts fetches and issues `token-N` valid for `ttl`.
struct CountingDialect {
    inner: Ibkr,
    fetches: Arc<AtomicU64>,
    ttl: Option<Duration>,
}

impl Dialect for CountingDialect {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn fetch_credentials(
        &self,
        _: keepwire::transport::Http,
    ) -> LocalBoxFuture<'static, Result<Issued, Failure>> {
        let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
        let ttl = self.ttl;
        async move {
            // a fetch takes a little while, so concurrent requests overlap it
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(Issued {
                secret: SecretString::from(format!("token-{n}")),
                expires_in: ttl,
                age: Duration::ZERO,
            })
        }
        .boxed_local()
    }
    fn prepare_dial(
        &self,
        h: keepwire::transport::Http,
        s: &SecretString,
    ) -> LocalBoxFuture<'static, Result<DialPlan, Failure>> {
        self.inner.prepare_dial(h, s)
    }
    fn decoder(&self) -> Box<dyn SocketDecoder> {
        self.inner.decoder()
    }
    fn subscription(&self, sub: &Subscription) -> Result<SubscriptionWire, String> {
        self.inner.subscription(sub)
    }
}

fn ctx_with(dialect: Arc<dyn keepwire::dialect::DialectSend>, tape: &Tape) -> StreamCtx {
    let config = StreamConfig::ibkr("t", "http://127.0.0.1:9");
    let collector = Collector(tape.clone()).start();
    let registry = prometheus::Registry::new();
    let metrics = keepwire::metrics::Metrics::register(&registry)
        .unwrap()
        .stream("t");
    let peers = Peers {
        frames: Some(collector.clone().recipient()),
        ..Default::default()
    };
    StreamCtx {
        name: "t".into(),
        clients: keepwire::transport::ClientFactory::new(&config).unwrap(),
        config: Arc::new(config),
        dialect,
        peers: Rc::new(RefCell::new(peers)),
        report: collector.recipient(),
        metrics,
        generation: Rc::new(std::cell::Cell::new(Generation::NONE)),
        epoch: Rc::new(std::cell::Cell::new(Epoch::NONE)),
        origin: tokio::time::Instant::now(),
    }
}

fn counting(ttl: Option<Duration>) -> (Arc<CountingDialect>, Arc<AtomicU64>) {
    let fetches = Arc::new(AtomicU64::new(0));
    let d = CountingDialect {
        inner: Ibkr::new("http://127.0.0.1:9", IbkrConfig::default()),
        fetches: fetches.clone(),
        ttl,
    };
    (Arc::new(d), fetches)
}

#[actix_rt::test]
async fn a_thousand_rejections_of_one_generation_cause_exactly_one_refresh() {
    tokio::time::pause();
    let tape = Tape::default();
    let (dialect, fetches) = counting(None);
    let tm = TokenManager::new(ctx_with(dialect, &tape)).start();
    let first = tm.send(GetCredentials).await.unwrap().unwrap();
    assert_eq!(first.generation, Generation::new(1));
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    for _ in 0..1000 {
        tm.do_send(CredentialsRejected {
            generation: first.generation,
        });
    }
    // and 1000 dials asking at the same moment share the one fetch
    let waits: Vec<_> = (0..1000).map(|_| tm.send(GetCredentials)).collect();
    let got = futures_util::future::join_all(waits).await;
    assert!(got.iter().all(
        |r| matches!(r, Ok(Ok(c)) if c.generation == Generation::new(2) && c.replaced_rejected)
    ));
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "one initial fetch + exactly one refresh"
    );
    assert_eq!(
        got[0]
            .as_ref()
            .unwrap()
            .as_ref()
            .unwrap()
            .secret
            .expose_secret(),
        "token-2"
    );

    // a late rejection of the old generation changes nothing
    tm.do_send(CredentialsRejected {
        generation: Generation::new(1),
    });
    let again = tm.send(GetCredentials).await.unwrap().unwrap();
    assert_eq!(again.generation, Generation::new(2));
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

#[actix_rt::test]
async fn credentials_are_refreshed_before_they_expire_not_after_a_failure() {
    tokio::time::pause();
    let tape = Tape::default();
    let (dialect, fetches) = counting(Some(Duration::from_secs(600)));
    let tm = TokenManager::new(ctx_with(dialect, &tape)).start();
    let first = tm.send(GetCredentials).await.unwrap().unwrap();
    assert_eq!(first.generation, Generation::new(1));

    tokio::time::sleep(Duration::from_secs(560)).await;
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "not refreshed too early");
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "refreshed within the 30 s skew before expiry"
    );
    let c = tm.send(GetCredentials).await.unwrap().unwrap();
    assert_eq!(c.generation, Generation::new(2));
    assert!(c.expires_at.unwrap().saturating_sub(c.issued_at) > Duration::from_secs(500));
}

#[actix_rt::test]
async fn an_expired_credential_is_never_handed_out() {
    tokio::time::pause();
    let tape = Tape::default();
    let (dialect, fetches) = counting(Some(Duration::from_millis(200)));
    let ctx = ctx_with(dialect, &tape);
    let origin = ctx.origin;
    let tm = TokenManager::new(ctx).start();
    tm.send(GetCredentials).await.unwrap().unwrap();
    // far past expiry (and past any proactive refresh): asking fetches a fresh one first
    tokio::time::sleep(Duration::from_secs(5)).await;
    let c = tm.send(GetCredentials).await.unwrap().unwrap();
    assert!(c.expires_at.unwrap() > origin.elapsed());
    assert!(fetches.load(Ordering::SeqCst) >= 2);
}

#[actix_rt::test]
async fn a_token_endpoint_answering_expires_in_zero_is_asked_at_most_twice_in_ten_seconds() {
    tokio::time::pause();
    let tape = Tape::default();
    let (dialect, fetches) = counting(Some(Duration::ZERO));
    let tm = TokenManager::new(ctx_with(dialect, &tape)).start();
    tm.send(GetCredentials).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Asking again hands out what it has: a lifetime of 0 means "unknown", not "expired".
    let again = tm.send(GetCredentials).await.unwrap().unwrap();
    assert_eq!(again.generation, Generation::new(1));
    assert!(fetches.load(Ordering::SeqCst) <= 2, "{fetches:?}");
}

#[actix_rt::test]
async fn a_huge_expires_in_neither_panics_nor_refreshes() {
    tokio::time::pause();
    let tape = Tape::default();
    let (dialect, fetches) = counting(Some(Duration::MAX));
    let tm = TokenManager::new(ctx_with(dialect, &tape)).start();
    tm.send(GetCredentials).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let again = tm.send(GetCredentials).await.unwrap().unwrap();
    assert_eq!(
        again.generation,
        Generation::new(1),
        "the actor was not rebuilt"
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

fn subscriptions(tape: &Tape) -> Addr<Subscriptions> {
    let dialect = Arc::new(Ibkr::new("http://127.0.0.1:9", IbkrConfig::default()));
    Subscriptions::new(ctx_with(dialect, tape), Book::default()).start()
}

fn frames(tape: &Tape) -> Vec<String> {
    tape.frames.lock().unwrap().clone()
}

async fn settle() {
    // lets queued actor messages run; virtual time does not move
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[actix_rt::test]
async fn an_active_smd_subscription_is_resent_every_nine_minutes_before_ibkr_ends_it() {
    tokio::time::pause();
    let tape = Tape::default();
    let subs = subscriptions(&tape);
    let (tx, _rx) = keepwire::channel::bounded(16);
    subs.send(Subscribe {
        subscriptions: vec![Subscription::market_data(8314, ["31"])],
        sender: tx,
    })
    .await
    .unwrap()
    .unwrap();
    subs.send(StreamUp {
        epoch: Epoch::new(1),
    })
    .await
    .unwrap();
    subs.send(Deliver {
        epoch: Epoch::new(1),
        topic: "smd+8314".into(),
        data: serde_json::json!({"31":"1"}),
    })
    .await
    .unwrap();
    assert_eq!(frames(&tape), vec![r#"smd+8314+{"fields":["31"]}"#]);

    tokio::time::sleep(Duration::from_secs(8 * 60 + 50)).await;
    settle().await;
    assert_eq!(frames(&tape).len(), 1, "not before nine minutes");
    tokio::time::sleep(Duration::from_secs(12)).await;
    settle().await;
    assert_eq!(frames(&tape).len(), 2, "re-sent at nine minutes");
    tokio::time::sleep(Duration::from_secs(9 * 60)).await;
    settle().await;
    assert_eq!(frames(&tape).len(), 3, "and every nine minutes after");
}

#[actix_rt::test]
async fn an_unconfirmed_subscription_is_retried_a_bounded_number_of_times_then_failed() {
    tokio::time::pause();
    let tape = Tape::default();
    let subs = subscriptions(&tape);
    let (tx, mut rx) = keepwire::channel::bounded(16);
    subs.send(Subscribe {
        subscriptions: vec![Subscription::market_data(1, ["31"])],
        sender: tx,
    })
    .await
    .unwrap()
    .unwrap();
    subs.send(StreamUp {
        epoch: Epoch::new(7),
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
    settle().await;
    assert_eq!(frames(&tape).len(), 3, "max_subscribe_attempts = 3");
    let mut last = None;
    while let Some(e) = rx.try_recv() {
        last = Some(e);
    }
    assert!(
        matches!(
            last,
            Some(keepwire::Event::State {
                state: keepwire::SubscriptionState::Failed { .. },
                ..
            })
        ),
        "{last:?}"
    );
}

#[actix_rt::test]
async fn an_unconfirmed_subscription_is_resent_at_its_confirmation_timeout_not_a_tick_later() {
    tokio::time::pause();
    let tape = Tape::default();
    let subs = subscriptions(&tape); // confirm_timeout 10 s
    let (tx, _rx) = keepwire::channel::bounded(16);
    subs.send(Subscribe {
        subscriptions: vec![Subscription::market_data(2, ["31"])],
        sender: tx,
    })
    .await
    .unwrap()
    .unwrap();
    // Off any whole-second grid a periodic check would run on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    subs.send(StreamUp {
        epoch: Epoch::new(3),
    })
    .await
    .unwrap();
    settle().await;
    assert_eq!(frames(&tape).len(), 1, "sent when the socket is up");
    tokio::time::sleep(Duration::from_millis(9_999)).await;
    settle().await;
    assert_eq!(frames(&tape).len(), 1, "not before the timeout");
    tokio::time::sleep(Duration::from_millis(2)).await;
    settle().await;
    assert_eq!(frames(&tape).len(), 2, "re-sent at the timeout");
    // Confirmed: nothing is due any more (no re-send interval for this topic before 9 min).
    subs.send(Deliver {
        epoch: Epoch::new(3),
        topic: "smd+2".into(),
        data: serde_json::json!({"31":"1"}),
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    settle().await;
    assert_eq!(
        frames(&tape).len(),
        2,
        "a confirmed subscription is left alone"
    );
}

#[actix_rt::test]
async fn every_subscription_is_replayed_on_each_new_socket_and_stale_events_are_ignored() {
    tokio::time::pause();
    let tape = Tape::default();
    let subs = subscriptions(&tape);
    for conid in [1, 2, 3] {
        let (tx, rx) = keepwire::channel::bounded(16);
        std::mem::forget(rx);
        subs.send(Subscribe {
            subscriptions: vec![Subscription::market_data(conid, ["31"])],
            sender: tx,
        })
        .await
        .unwrap()
        .unwrap();
    }
    subs.send(StreamUp {
        epoch: Epoch::new(1),
    })
    .await
    .unwrap();
    assert_eq!(frames(&tape).len(), 3);
    subs.send(StreamDown {
        epoch: Epoch::new(1),
    })
    .await
    .unwrap();
    // a late message from the dead socket must not mark anything active
    subs.send(Deliver {
        epoch: Epoch::new(1),
        topic: "smd+1".into(),
        data: serde_json::json!({}),
    })
    .await
    .unwrap();
    subs.send(StreamUp {
        epoch: Epoch::new(2),
    })
    .await
    .unwrap();
    assert_eq!(
        frames(&tape).len(),
        6,
        "all three replayed on the new socket"
    );
    // a StreamDown about the old socket arriving late does not take the new one down
    subs.send(StreamDown {
        epoch: Epoch::new(1),
    })
    .await
    .unwrap();
    subs.send(Deliver {
        epoch: Epoch::new(2),
        topic: "smd+2".into(),
        data: serde_json::json!({}),
    })
    .await
    .unwrap();
    settle().await;
    let reports = tape.reports.lock().unwrap().clone();
    let last = reports
        .iter()
        .rev()
        .find(|r| r.starts_with("Subscriptions"))
        .unwrap();
    assert!(
        last.contains("active: 1") && last.contains("pending: 2"),
        "{last}"
    );
}
