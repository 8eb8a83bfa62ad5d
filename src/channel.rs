//! Bounded event queues for consumers that drop the *oldest* event when full.
//!
//! A slow consumer must never stall the socket reader or its heartbeats, and the newest market
//! data is worth more than the oldest: pushing into a full queue evicts its head and counts it.
//!
//! An item may wait in the queue in a cheaper form than the one handed out ([`Item::Queued`]):
//! the consumer finishes it in `recv`, on its own thread (keepwire queues a data message as its
//! JSON text and the consumer parses it, in parallel with the socket reader).
//!
//! Handoffs are batched both ways: a push wakes the consumer only when it finds the queue empty
//! (a consumer that has not drained the queue yet was woken already), and the consumer takes
//! everything queued under one lock. In a flood the two threads meet once per batch, not once
//! per message.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::Notify;

/// What a queue hands out, and the form it waits in until then.
pub trait Item: Sized {
    /// The queued form.
    type Queued: Send;
    /// Turns a queued item into the item (runs on the consumer's thread); `None` when it turns
    /// out unusable (keepwire: a data message routed without a parse that does not parse), which
    /// the receiver skips and counts ([`Receiver::unusable`]).
    fn finish(queued: Self::Queued) -> Option<Self>;
}

/// Called on the consumer's thread for every unusable item it skipped.
type OnUnusable = Box<dyn Fn() + Send + Sync>;

struct Shared<T> {
    queue: Mutex<VecDeque<T>>,
    capacity: usize,
    notify: Notify,
    dropped: AtomicU64,
    unusable: AtomicU64,
    on_unusable: OnceLock<OnUnusable>,
    /// Senders alive; the last one dropped closes the queue.
    senders: AtomicUsize,
    closed: AtomicBool,
    receiver_alive: AtomicBool,
}

/// Creates a queue holding at most `capacity` (at least 1) items (not counting a batch the
/// consumer already took).
pub fn bounded<T: Item>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        // Grows with use: an idle subscription holds no queue memory.
        queue: Mutex::new(VecDeque::new()),
        capacity: capacity.max(1),
        notify: Notify::new(),
        dropped: AtomicU64::new(0),
        unusable: AtomicU64::new(0),
        on_unusable: OnceLock::new(),
        senders: AtomicUsize::new(1),
        closed: AtomicBool::new(false),
        receiver_alive: AtomicBool::new(true),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver {
            shared,
            taken: VecDeque::new(),
        },
    )
}

/// The producing side (held by the Subscriptions actor). A clone feeds the same queue (one
/// receiver for several subscriptions); the queue closes when the last clone is dropped.
pub struct Sender<T: Item> {
    shared: Arc<Shared<T::Queued>>,
}

/// What happened to a pushed item.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    /// Queued.
    Queued,
    /// Queued, and the oldest item was dropped to make room.
    DroppedOldest,
    /// The receiver is gone.
    Closed,
}

impl<T: Item> Sender<T> {
    /// Queues `item`, evicting the oldest item when full. Never blocks.
    pub fn push(&self, item: impl Into<T::Queued>) -> Push {
        let item = item.into();
        if !self.shared.receiver_alive.load(Ordering::Acquire) {
            return Push::Closed;
        }
        let (was_empty, evicted) = {
            let mut q = self
                .shared
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let evicted = if q.len() >= self.shared.capacity {
                q.pop_front().is_some()
            } else {
                false
            };
            let was_empty = q.is_empty();
            q.push_back(item);
            (was_empty, evicted)
        };
        // Items already queued were announced by the push that found the queue empty, and the
        // consumer waits only once it found the queue empty.
        if was_empty {
            self.shared.notify.notify_one();
        }
        if evicted {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            Push::DroppedOldest
        } else {
            Push::Queued
        }
    }

    /// Runs `f` (on the consumer's thread) for every unusable item the receiver skips, e.g. to
    /// count it in a metric. Only the first call has an effect.
    pub fn on_unusable(&self, f: impl Fn() + Send + Sync + 'static) {
        let _ = self.shared.on_unusable.set(Box::new(f));
    }

    /// Whether the receiver was dropped.
    pub fn is_closed(&self) -> bool {
        !self.shared.receiver_alive.load(Ordering::Acquire)
    }
}

impl<T: Item> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T: Item> Drop for Sender<T> {
    fn drop(&mut self) {
        // Release pairs with the acquire below, so the last sender sees every other's pushes
        // before it closes the queue (as `Arc`'s drop does).
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.closed.store(true, Ordering::Release);
            self.shared.notify.notify_one();
        }
    }
}

/// The consuming side, handed to the user by `subscribe`.
pub struct Receiver<T: Item> {
    shared: Arc<Shared<T::Queued>>,
    /// The batch taken from the queue, handed out one by one without the lock.
    taken: VecDeque<T::Queued>,
}

impl<T: Item> Receiver<T> {
    /// The next item; `None` once the subscription ended and the queue is drained.
    ///
    /// Takes part in tokio's cooperative scheduling like tokio's own channels: a consumer that
    /// always finds an item waiting still yields now and then, so it cannot starve the timers
    /// and other tasks of its runtime.
    pub async fn recv(&mut self) -> Option<T> {
        tokio::task::coop::consume_budget().await;
        // Most calls find the batch already taken: no lock, no atomic.
        if let Some(item) = self.try_recv() {
            return Some(item);
        }
        let shared = self.shared.clone();
        loop {
            let notified = shared.notify.notified();
            if let Some(item) = self.try_recv() {
                return Some(item);
            }
            if shared.closed.load(Ordering::Acquire) {
                return self.try_recv();
            }
            notified.await;
        }
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        if self.taken.is_empty() {
            // Everything queued, in one lock; the producer gets the emptied buffer (and its
            // capacity) back.
            let mut q = self
                .shared
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            std::mem::swap(&mut *q, &mut self.taken);
        }
        // Finished outside the lock: the producer never waits for a consumer's parse.
        while let Some(queued) = self.taken.pop_front() {
            match T::finish(queued) {
                Some(item) => return Some(item),
                None => {
                    self.shared.unusable.fetch_add(1, Ordering::Relaxed);
                    if let Some(f) = self.shared.on_unusable.get() {
                        f();
                    }
                }
            }
        }
        None
    }

    /// Items skipped so far because they turned out unusable ([`Item::finish`]).
    pub fn unusable(&self) -> u64 {
        self.shared.unusable.load(Ordering::Relaxed)
    }

    /// Items dropped so far because this receiver fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl<T: Item> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.receiver_alive.store(false, Ordering::Release);
    }
}

impl<T: Item> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Item for u8 {
        type Queued = u8;
        fn finish(queued: u8) -> Option<u8> {
            Some(queued)
        }
    }

    /// Negative numbers stand for unusable items.
    impl Item for i32 {
        type Queued = i32;
        fn finish(queued: i32) -> Option<i32> {
            (queued >= 0).then_some(queued)
        }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        let (tx, mut rx) = bounded::<i32>(3);
        for i in 0..5 {
            tx.push(i);
        }
        assert_eq!(rx.dropped(), 2);
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(got, vec![2, 3, 4]);
    }

    #[tokio::test]
    async fn recv_wakes_on_push_and_ends_after_sender_drop() {
        let (tx, mut rx) = bounded::<i32>(8);
        let task = tokio::spawn(async move {
            let mut got = vec![];
            while let Some(x) = rx.recv().await {
                got.push(x);
            }
            got
        });
        tx.push(1);
        tx.push(2);
        drop(tx);
        assert_eq!(task.await.unwrap(), vec![1, 2]);
    }

    #[test]
    fn items_keep_their_order_across_the_batches_the_consumer_takes() {
        let (tx, mut rx) = bounded::<i32>(8);
        tx.push(1);
        tx.push(2);
        assert_eq!(rx.try_recv(), Some(1)); // takes [1, 2]
        tx.push(3);
        assert_eq!(rx.try_recv(), Some(2));
        tx.push(4);
        let rest: Vec<_> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(rest, vec![3, 4]);
    }

    #[tokio::test]
    async fn a_consumer_that_drained_the_queue_is_woken_by_the_next_push() {
        let (tx, mut rx) = bounded::<i32>(8);
        tx.push(1);
        assert_eq!(rx.recv().await, Some(1));
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let got = rx.recv().await;
            let _ = seen_tx.send(());
            (got, rx.recv().await)
        });
        tokio::task::yield_now().await; // the consumer now waits on an empty queue
        tx.push(2);
        seen_rx.await.unwrap();
        tx.push(3);
        assert_eq!(task.await.unwrap(), (Some(2), Some(3)));
    }

    #[test]
    fn unusable_items_are_skipped_and_counted_on_the_consumers_side() {
        let (tx, mut rx) = bounded::<i32>(8);
        let seen = Arc::new(AtomicU64::new(0));
        let hook = seen.clone();
        tx.on_unusable(move || {
            hook.fetch_add(1, Ordering::Relaxed);
        });
        for i in [1, -1, -2, 2] {
            tx.push(i);
        }
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(got, vec![1, 2]);
        assert_eq!((rx.unusable(), seen.load(Ordering::Relaxed)), (2, 2));
    }

    #[tokio::test]
    async fn clones_feed_one_receiver_which_ends_only_after_the_last_clone_is_dropped() {
        let (a, mut rx) = bounded::<u8>(8);
        let b = a.clone();
        a.push(1);
        b.push(2);
        drop(a);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.try_recv(), None);
        // Empty but open while `b` lives: `recv` waits rather than ends.
        use futures_util::FutureExt;
        assert_eq!(rx.recv().now_or_never(), None);
        b.push(3);
        drop(b);
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.recv().await, None);
    }

    #[test]
    fn push_after_receiver_drop_reports_closed() {
        let (tx, rx) = bounded::<u8>(1);
        drop(rx);
        assert_eq!(tx.push(1), Push::Closed);
        assert!(tx.is_closed());
    }
}
