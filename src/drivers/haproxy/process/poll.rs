//! The one wait loop: ask again every interval until there is an answer or the time is up.
//! Every wait for HAProxy (start, reload, stop, its sockets) and the tests' waits use it, so
//! each of them is bounded the same way.

use std::thread;
use std::time::{Duration, Instant};

/// How often HAProxy is polled while waiting for it to start, reload or stop: short,
/// because UPDATE latency is mostly reload latency.
pub const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// Calls `attempt` until it returns `Some`, sleeping `interval` between calls, and returns
/// that; `None` once `timeout` has passed without one. `attempt` runs at least once, and
/// once more at or after the deadline, so a wait never fails on a stale answer.
pub fn poll_until<T>(
    timeout: Duration,
    interval: Duration,
    mut attempt: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(done) = attempt() {
            return Some(done);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_answer_or_none_at_the_deadline() {
        let mut calls = 0;
        let got = poll_until(Duration::from_secs(5), Duration::ZERO, || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(got, Some(3));

        let started = Instant::now();
        let mut calls = 0;
        let got: Option<()> =
            poll_until(Duration::from_millis(50), Duration::from_millis(5), || {
                calls += 1;
                None
            });
        assert_eq!(got, None);
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(calls >= 2, "{calls}");

        // An attempt is made even with no time at all.
        let mut calls = 0;
        let got: Option<()> = poll_until(Duration::ZERO, Duration::from_secs(60), || {
            calls += 1;
            None
        });
        assert_eq!((got, calls), (None, 1));
    }
}
