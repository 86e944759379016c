//! The queue in front of one actor, measured: messages put in (`sent`, which hands the
//! sender a `Ticket` that travels with the message), taken out by the handler (`started`,
//! which records how long the ticket waited) and done (`finished`, the handling time).
//! Waiting = sent - started - abandoned; a message dropped unhandled (its deadline passed,
//! its receiver is gone) is `abandoned`, so the depth never drifts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::histogram::Histogram;

/// When a message entered a queue; it travels with the message.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(Instant);

/// When a handler took a message out of its queue.
#[derive(Debug, Clone, Copy)]
pub struct Started(Instant);

#[derive(Debug, Default)]
pub struct MailboxStats {
    sent: AtomicU64,
    started: AtomicU64,
    abandoned: AtomicU64,
    high_water: AtomicU64,
    /// From `sent` to `started`: how long messages waited.
    pub wait: Histogram,
    /// From `started` to `finished`: how long the handler took.
    pub handling: Histogram,
}

impl MailboxStats {
    /// A message was put into the queue.
    pub fn sent(&self) -> Ticket {
        let sent = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        let out = self.started.load(Ordering::Relaxed) + self.abandoned.load(Ordering::Relaxed);
        self.high_water
            .fetch_max(sent.saturating_sub(out), Ordering::Relaxed);
        Ticket(Instant::now())
    }

    /// The handler took the message out.
    pub fn started(&self, ticket: Ticket) -> Started {
        self.started.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        self.wait.observe(now.saturating_duration_since(ticket.0));
        Started(now)
    }

    /// The handler is done with it.
    pub fn finished(&self, started: Started) {
        self.handling.observe(started.0.elapsed());
    }

    /// The message left the queue without being handled.
    pub fn abandoned(&self, _ticket: Ticket) {
        self.abandoned.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages waiting now.
    pub fn depth(&self) -> u64 {
        let out = self.started.load(Ordering::Relaxed) + self.abandoned.load(Ordering::Relaxed);
        self.sent.load(Ordering::Relaxed).saturating_sub(out)
    }

    /// The deepest the queue has been.
    pub fn high_water(&self) -> u64 {
        self.high_water.load(Ordering::Relaxed)
    }

    /// Messages taken out by the handler.
    pub fn handled_total(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn depth_wait_and_abandoned() {
        let m = MailboxStats::default();
        let a = m.sent();
        let b = m.sent();
        let c = m.sent();
        assert_eq!((m.depth(), m.high_water()), (3, 3));
        std::thread::sleep(Duration::from_millis(2));
        let s = m.started(a);
        m.finished(s);
        m.abandoned(b);
        assert_eq!((m.depth(), m.high_water(), m.handled_total()), (1, 3, 1));
        assert!(m.wait.snapshot().sum_seconds >= 0.002);
        m.finished(m.started(c));
        assert_eq!(m.depth(), 0);
        assert_eq!(m.handling.snapshot().count, 2);
        assert_eq!(m.wait.snapshot().count, 2);
    }
}
