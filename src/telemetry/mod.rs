//! Telemetry: counters the actors and the driver keep about themselves (mailbox depth,
//! high-water mark, messages handled, handling time; jobs by action and result with
//! end-to-end latency; connection states; HAProxy reloads and health), rendered as
//! Prometheus text and served on `[metrics] listen` with `/metrics` and `/healthz`.

pub(crate) mod connection;
pub(crate) mod histogram;
pub(crate) mod http;
pub(crate) mod mailbox;
pub(crate) mod prometheus;

pub(crate) use crate::drivers::DriverStats;
pub(crate) use mailbox::Ticket;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use connection::ConnectionStatus;
use histogram::Histogram;
use mailbox::MailboxStats;

use crate::jobs::Action;

/// Jobs by action (plus one slot for bodies refused before an action was known) and
/// result, with end-to-end latency per action.
#[derive(Debug, Default)]
pub struct JobStats {
    counts: [[AtomicU64; 2]; 10],
    latency: [Histogram; 10],
}

impl JobStats {
    fn slot(action: Option<Action>) -> usize {
        action
            .and_then(|a| Action::ALL.iter().position(|x| *x == a))
            .map(|i| i + 1)
            .unwrap_or(0)
    }

    pub fn record(&self, action: Option<Action>, passed: bool, took: Duration) {
        let i = Self::slot(action);
        self.counts[i][usize::from(!passed)].fetch_add(1, Ordering::Relaxed);
        self.latency[i].observe(took);
    }

    pub fn count(&self, action: Option<Action>, passed: bool) -> u64 {
        self.counts[Self::slot(action)][usize::from(!passed)].load(Ordering::Relaxed)
    }

    pub fn latency(&self, action: Option<Action>) -> &Histogram {
        &self.latency[Self::slot(action)]
    }

    pub fn total(&self) -> (u64, u64) {
        let mut pass = 0;
        let mut fail = 0;
        for c in &self.counts {
            pass += c[0].load(Ordering::Relaxed);
            fail += c[1].load(Ordering::Relaxed);
        }
        (pass, fail)
    }
}

/// All of the worker's counters; one shared instance.
#[derive(Debug)]
pub struct Telemetry {
    pub started: Instant,
    pub controller: MailboxStats,
    pub driver_mailbox: MailboxStats,
    pub jobs: JobStats,
    pub driver: Arc<DriverStats>,
    /// Upkeep turns the driver finished (each one restarts a HAProxy that died, unless
    /// the load balancer is suspended or deleted).
    pub housekeeping: AtomicU64,
    connections: RwLock<Vec<Arc<ConnectionStatus>>>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            started: Instant::now(),
            controller: MailboxStats::default(),
            driver_mailbox: MailboxStats::default(),
            jobs: JobStats::default(),
            driver: Arc::new(DriverStats::default()),
            housekeeping: AtomicU64::new(0),
            connections: RwLock::new(Vec::new()),
        }
    }
}

impl Telemetry {
    pub fn set_connections(&self, list: Vec<Arc<ConnectionStatus>>) {
        if let Ok(mut slot) = self.connections.write() {
            *slot = list;
        }
    }

    pub fn connections(&self) -> Vec<Arc<ConnectionStatus>> {
        self.connections
            .read()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Healthy when at least one job server is connected and HAProxy is in the state
    /// the last job left it. The reason says what is wrong.
    pub fn health(&self) -> Result<(), Unhealthy> {
        let conns = self.connections();
        if !conns.iter().any(|c| c.state().is_connected()) {
            return Err(Unhealthy::NoJobServer);
        }
        let expected = self.driver.haproxy_expected_up.load(Ordering::Relaxed);
        let actual = self.driver.haproxy_up.load(Ordering::Relaxed);
        if expected >= 0 && actual >= 0 && expected != actual {
            return Err(if expected == 1 {
                Unhealthy::HaproxyDown
            } else {
                Unhealthy::HaproxyUp
            });
        }
        Ok(())
    }
}

/// Why `/healthz` answers 503; the text is the page's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unhealthy {
    #[error("no job server connected")]
    NoJobServer,
    #[error("HAProxy should be running but is not")]
    HaproxyDown,
    #[error("HAProxy should be stopped but is running")]
    HaproxyUp,
}
