//! systemd's watchdog (`WatchdogSec=`), fed by the controller: the controller runs on the
//! arbiter that runs the Gearman connections, so a wedged arbiter stops the feed; and each
//! turn pings the driver thread, so a driver stuck past any job's deadline stops it too.
//! systemd then restarts the worker (`Restart=always`); HAProxy is not touched
//! (`KillMode=process`) and the next worker adopts it.

use std::time::{Duration, Instant};

use super::driver::Ping;
use actix::Recipient;

/// How long the driver may take to answer a ping beyond the job timeout: a ping waits
/// behind at most one command, and a command is given up on after the job timeout.
const DRIVER_SLACK: Duration = Duration::from_secs(10);

/// The watchdog's state, kept by the controller.
pub(crate) struct Watchdog {
    pub ping: Recipient<Ping>,
    /// How often to feed: half of systemd's interval, as sd_watchdog_enabled(3) advises.
    pub every: Duration,
    /// Longest silence of the driver before the feed stops.
    grace: Duration,
    last_pong: Instant,
    pub outstanding: bool,
}

impl Watchdog {
    /// The watchdog systemd asked for (`WATCHDOG_USEC` and `WATCHDOG_PID` naming this
    /// process), or `None`.
    pub fn from_env(ping: Recipient<Ping>, job_timeout: Duration) -> Option<Self> {
        let mut usec = 0;
        if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
            return None;
        }
        Some(Watchdog::new(
            ping,
            Duration::from_micros(usec) / 2,
            job_timeout,
            Instant::now(),
        ))
    }

    fn new(ping: Recipient<Ping>, every: Duration, job_timeout: Duration, now: Instant) -> Self {
        Watchdog {
            ping,
            every: every.max(Duration::from_millis(10)),
            grace: job_timeout + DRIVER_SLACK,
            last_pong: now,
            outstanding: false,
        }
    }

    pub fn pong(&mut self, now: Instant) {
        self.last_pong = now;
        self.outstanding = false;
    }

    /// Whether the driver answered recently enough to call the worker alive.
    pub fn driver_alive(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_pong) <= self.grace
    }

    /// Tells systemd the worker is alive.
    pub fn feed() {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix::{Actor, Context, Handler};

    struct Sink;
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<Ping> for Sink {
        type Result = ();
        fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
    }

    #[actix_rt::test]
    async fn the_feed_stops_once_the_driver_is_silent_past_the_job_timeout() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(
            Sink.start().recipient(),
            Duration::from_secs(5),
            Duration::from_secs(60),
            t0,
        );
        assert!(w.driver_alive(t0 + Duration::from_secs(69)));
        assert!(!w.driver_alive(t0 + Duration::from_secs(71)));
        w.pong(t0 + Duration::from_secs(70));
        assert!(w.driver_alive(t0 + Duration::from_secs(71)));
        assert!(!w.outstanding);
    }
}
