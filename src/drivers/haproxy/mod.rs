//! The HAProxy driver (work in progress: only its name so far).

pub mod command;
pub mod process;
pub mod stats_socket;

use std::time::Duration;

use slog::Logger;

use crate::config::HaproxySettings;
use crate::drivers::LoadBalancerDriver;

pub struct HaproxyDriver {
    #[allow(dead_code)]
    settings: HaproxySettings,
    #[allow(dead_code)]
    log: Logger,
}

impl HaproxyDriver {
    pub fn new(settings: HaproxySettings, _job_timeout: Duration, log: Logger) -> Self {
        HaproxyDriver { settings, log }
    }
}

impl LoadBalancerDriver for HaproxyDriver {
    fn name(&self) -> &'static str {
        "haproxy"
    }
}

/// Stops the managed HAProxy of these settings (not written yet).
pub fn stop_managed(_settings: &HaproxySettings) -> Result<String, String> {
    Err("not implemented yet".to_string())
}
