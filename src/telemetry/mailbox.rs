//! Mailbox statistics of one actor: messages sent and handled (their difference is the
//! current depth), the depth's high-water mark, and the handling-time histogram. Senders
//! call `sent`, the handler calls `handled`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::histogram::Histogram;

#[derive(Debug, Default)]
pub struct MailboxStats {
    sent: AtomicU64,
    handled: AtomicU64,
    high_water: AtomicU64,
    pub handling: Histogram,
}

impl MailboxStats {
    /// A message was put into the mailbox.
    pub fn sent(&self) {
        let sent = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        let depth = sent.saturating_sub(self.handled.load(Ordering::Relaxed));
        self.high_water.fetch_max(depth, Ordering::Relaxed);
    }

    /// A message was taken out and handled in `took`.
    pub fn handled(&self, took: Duration) {
        self.handled.fetch_add(1, Ordering::Relaxed);
        self.handling.observe(took);
    }

    pub fn depth(&self) -> u64 {
        self.sent
            .load(Ordering::Relaxed)
            .saturating_sub(self.handled.load(Ordering::Relaxed))
    }

    pub fn high_water(&self) -> u64 {
        self.high_water.load(Ordering::Relaxed)
    }

    pub fn handled_total(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_and_high_water() {
        let m = MailboxStats::default();
        m.sent();
        m.sent();
        m.sent();
        m.handled(Duration::from_micros(10));
        assert_eq!((m.depth(), m.high_water(), m.handled_total()), (2, 3, 1));
        m.handled(Duration::from_micros(10));
        m.handled(Duration::from_micros(10));
        m.sent();
        assert_eq!((m.depth(), m.high_water()), (1, 3));
    }
}
