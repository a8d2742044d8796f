//! The change feed: every tenant change this replica learns of (its own commits and other
//! replicas' notifications) and every lifecycle notice (from the outbox), numbered, kept in a bounded ring so that a `Watch` can resume
//! from a cursor, and broadcast live. Cursors are `<epoch>-<seq>`: the epoch changes with
//! every process start, so a cursor from before a restart asks for a reset, never a gap.
//!
//! Lifecycle notices are durable (the outbox), so `Watch` cursors also carry the id of the
//! last notice sent, `<epoch>-<seq>~<notice id>` ([`split_cursor`], [`join_cursor`]): a watcher
//! that comes back after a restart (RESET) is first sent the notices it has not seen, from the
//! store, so a restart neither loses nor repeats one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::store::NoticeEvent;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    Change {
        seq: u64,
        tenant: Arc<str>,
        revision: u64,
    },
    /// Changes may have been missed upstream of this feed: forget everything.
    Reset {
        seq: u64,
    },
    /// A tenant crossed a lifecycle threshold (committed to the outbox exactly once).
    Notice {
        seq: u64,
        notice: Arc<NoticeEvent>,
    },
}

impl FeedEvent {
    pub fn seq(&self) -> u64 {
        match self {
            FeedEvent::Change { seq, .. } | FeedEvent::Reset { seq } | FeedEvent::Notice { seq, .. } => *seq,
        }
    }
}

struct Ring {
    next: u64,
    events: VecDeque<FeedEvent>,
}

pub struct ChangeFeed {
    epoch: u64,
    capacity: usize,
    ring: Mutex<Ring>,
    tx: broadcast::Sender<FeedEvent>,
}

/// Where a subscriber starts.
pub struct Subscription {
    /// The cursor was recognised and everything after it is in `backlog`.
    pub resumed: bool,
    pub backlog: Vec<FeedEvent>,
    pub live: broadcast::Receiver<FeedEvent>,
    /// The sequence number of the last event published so far.
    pub last_seq: u64,
}

impl ChangeFeed {
    pub fn new(epoch: u64, capacity: usize) -> ChangeFeed {
        let (tx, _) = broadcast::channel(capacity.max(16));
        ChangeFeed {
            epoch,
            capacity: capacity.max(16),
            ring: Mutex::new(Ring { next: 1, events: VecDeque::new() }),
            tx,
        }
    }

    pub fn cursor(&self, seq: u64) -> String {
        format!("{:x}-{seq}", self.epoch)
    }

    fn publish(&self, make: impl FnOnce(u64) -> FeedEvent) {
        // Publishing under the lock keeps ring order, broadcast order and subscriptions consistent.
        let Ok(mut ring) = self.ring.lock() else { return };
        let event = make(ring.next);
        ring.next += 1;
        if ring.events.len() == self.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(event.clone());
        let _ = self.tx.send(event);
    }

    pub fn change(&self, tenant: &str, revision: u64) {
        self.publish(|seq| FeedEvent::Change { seq, tenant: Arc::from(tenant), revision });
    }

    pub fn notice(&self, notice: NoticeEvent) {
        let notice = Arc::new(notice);
        self.publish(|seq| FeedEvent::Notice { seq, notice });
    }

    pub fn reset(&self) {
        self.publish(|seq| FeedEvent::Reset { seq });
    }

    /// Subscribe after `cursor` (empty: from now, not resumed).
    pub fn subscribe(&self, cursor: &str) -> Subscription {
        let ring = match self.ring.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        let live = self.tx.subscribe();
        let last_seq = ring.next - 1;
        let after = cursor
            .split_once('-')
            .filter(|(epoch, _)| u64::from_str_radix(epoch, 16).ok() == Some(self.epoch))
            .and_then(|(_, seq)| seq.parse::<u64>().ok());
        let oldest = ring.events.front().map_or(ring.next, FeedEvent::seq);
        match after {
            // Resumable: nothing after the cursor has left the ring.
            Some(after) if after <= last_seq && after + 1 >= oldest => Subscription {
                resumed: true,
                backlog: ring.events.iter().filter(|e| e.seq() > after).cloned().collect(),
                live,
                last_seq,
            },
            _ => Subscription { resumed: false, backlog: Vec::new(), live, last_seq },
        }
    }
}

/// A `Watch` cursor's feed part and its notice watermark (when it carries one).
pub fn split_cursor(cursor: &str) -> (&str, Option<i64>) {
    match cursor.rsplit_once('~') {
        Some((feed, notice)) => (feed, notice.parse().ok()),
        None => (cursor, None),
    }
}

/// A `Watch` cursor from its feed part and notice watermark.
pub fn join_cursor(feed: String, notice: Option<i64>) -> String {
    match notice {
        Some(n) => format!("{feed}~{n}"),
        None => feed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_carry_the_notice_watermark() {
        let f = ChangeFeed::new(7, 16);
        let c = join_cursor(f.cursor(3), Some(42));
        assert_eq!(split_cursor(&c), (f.cursor(3).as_str(), Some(42)));
        assert_eq!(split_cursor(&f.cursor(3)), (f.cursor(3).as_str(), None));
        assert_eq!(join_cursor(f.cursor(3), None), f.cursor(3));
    }

    #[test]
    fn resume_and_reset() {
        let f = ChangeFeed::new(7, 16);
        f.change("a", 1);
        let c1 = f.cursor(1);
        f.change("b", 2);
        f.change("a", 3);
        let s = f.subscribe(&c1);
        assert!(s.resumed);
        assert_eq!(s.backlog.iter().map(FeedEvent::seq).collect::<Vec<_>>(), vec![2, 3]);
        assert!(!f.subscribe("").resumed);
        assert!(!f.subscribe("8-1").resumed, "another process's cursor");
        assert!(!f.subscribe(&f.cursor(99)).resumed, "a cursor from the future");
        for i in 0..40 {
            f.change("x", i);
        }
        assert!(!f.subscribe(&c1).resumed, "fell out of the ring");
        let now = f.subscribe(&f.cursor(s.last_seq + 40));
        assert!(now.resumed && now.backlog.is_empty());
    }

    #[tokio::test]
    async fn live_events_follow_the_backlog_without_gaps() {
        let f = ChangeFeed::new(1, 64);
        f.change("a", 1);
        let mut s = f.subscribe(&f.cursor(0));
        f.change("b", 2);
        assert_eq!(s.backlog.len(), 1);
        assert_eq!(s.live.recv().await.map(|e| e.seq()).ok(), Some(2));
    }
}
