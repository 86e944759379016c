//! The reconnect back-off of one job-server connection: exponential from 1 s up to
//! `reconnect_sleep`, plus up to a fifth of jitter so many workers do not reconnect in
//! step, reset once the connection has proved healthy.

use std::time::Duration;

use rand::Rng;

/// First delay after a failure.
pub const BACKOFF_START: Duration = Duration::from_secs(1);

/// Exponential back-off with jitter: 1 s, 2 s, 4 s ... up to `max`, each plus up to a
/// fifth of itself at random so that many workers do not reconnect in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    max: Duration,
    current: Option<Duration>,
    attempts: u32,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Backoff {
            max: max.max(BACKOFF_START),
            current: None,
            attempts: 0,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = match self.current {
            None => BACKOFF_START,
            Some(c) => (c * 2).min(self.max),
        };
        self.current = Some(base);
        self.attempts += 1;
        let jitter = rand::thread_rng().gen_range(0.0..=0.2);
        base + base.mul_f64(jitter)
    }

    /// The longest delay this policy can produce (the test checks `next_delay` against it).
    #[cfg(test)]
    pub fn bound(&self) -> Duration {
        self.max + self.max.mul_f64(0.2)
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Called once a connection has proved healthy.
    pub fn reset(&mut self) {
        self.current = None;
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_bound_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(8));
        for base in [1.0, 2.0, 4.0, 8.0, 8.0, 8.0] {
            let d = b.next_delay().as_secs_f64();
            // Each delay is its base plus at most 20 % jitter.
            assert!(d >= base && d <= base * 1.2 + 1e-9, "{d} for base {base}");
        }
        assert!(b.next_delay() <= b.bound());
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(1200));
    }
}
