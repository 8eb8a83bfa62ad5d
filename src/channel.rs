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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// What a queue hands out, and the form it waits in until then.
pub trait Item: Sized {
    /// The queued form.
    type Queued: Send;
    /// Turns a queued item into the item (runs on the consumer's thread).
    fn finish(queued: Self::Queued) -> Self;
}

struct Shared<T> {
    queue: Mutex<VecDeque<T>>,
    capacity: usize,
    notify: Notify,
    dropped: AtomicU64,
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

/// The producing side (held by the Subscriptions actor).
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

    /// Whether the receiver was dropped.
    pub fn is_closed(&self) -> bool {
        !self.shared.receiver_alive.load(Ordering::Acquire)
    }
}

impl<T: Item> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.notify.notify_one();
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
        self.taken.pop_front().map(T::finish)
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
        fn finish(queued: u8) -> u8 {
            queued
        }
    }

    impl Item for i32 {
        type Queued = i32;
        fn finish(queued: i32) -> i32 {
            queued
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
    fn push_after_receiver_drop_reports_closed() {
        let (tx, rx) = bounded::<u8>(1);
        drop(rx);
        assert_eq!(tx.push(1), Push::Closed);
        assert!(tx.is_closed());
    }
}
