//! The figures a driver keeps about the appliance for the operator (reloads, fallbacks,
//! HAProxy up or down): plain atomic counters the driver owns and updates as it works,
//! shared with whoever shows them (the metrics page reads them; the driver knows nothing
//! of it).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// What the driver reports about the appliance.
#[derive(Debug)]
pub struct DriverStats {
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    pub runtime_applies: AtomicU64,
    pub runtime_fallbacks: AtomicU64,
    pub validation_failures: AtomicU64,
    /// Restarts of a HAProxy that had died, by either trigger.
    pub restarts: AtomicU64,
    /// Of those, the restarts the watch on HAProxy's master triggered.
    pub watch_restarts: AtomicU64,
    /// Exits of HAProxy's master the watch reported (stops the driver made included).
    pub watch_exits: AtomicU64,
    /// Node-health snapshots written to the server-state file between reloads.
    pub state_snapshots: AtomicU64,
    /// 1 running, 0 stopped, -1 unknown (no check yet, or no HAProxy driver).
    pub haproxy_up: AtomicI64,
    /// What the last job left: 1 should be running, 0 should be stopped, -1 no opinion.
    pub haproxy_expected_up: AtomicI64,
}

impl Default for DriverStats {
    fn default() -> Self {
        DriverStats {
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            runtime_applies: AtomicU64::new(0),
            runtime_fallbacks: AtomicU64::new(0),
            validation_failures: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            watch_restarts: AtomicU64::new(0),
            watch_exits: AtomicU64::new(0),
            state_snapshots: AtomicU64::new(0),
            haproxy_up: AtomicI64::new(-1),
            haproxy_expected_up: AtomicI64::new(-1),
        }
    }
}

impl DriverStats {
    pub fn set_up(&self, up: bool) {
        self.haproxy_up.store(i64::from(up), Ordering::Relaxed);
    }

    pub fn expect_up(&self, up: bool) {
        self.haproxy_expected_up
            .store(i64::from(up), Ordering::Relaxed);
    }
}
