//! The driver's own turns between jobs: the first one adopts or starts HAProxy as the
//! state directory says (reconciling an update a dead worker left half-done), the later
//! ones restart a HAProxy that died, unless the load balancer is suspended or deleted,
//! and delete servers that have drained.

use std::sync::atomic::Ordering;

use slog::{info, warn};

use super::error::Result;
use super::{files, runtime, HaproxyDriver};
use crate::config::HaproxyMode;

impl HaproxyDriver {
    /// First turn: adopt or start HAProxy as the state directory says, and make sure
    /// what runs is what the file says.
    fn start_up(&mut self) -> Result<()> {
        self.ensure_state_dir()?;
        self.applied = self.load_model();
        let _ = files::remove_if_exists(&self.paths.candidate);
        let running = self.process.is_running();
        if !self.has_config() {
            info!(self.log, "no load balancer configured yet"; "running" => running);
            self.stats.expect_up(false);
            return Ok(());
        }
        if self.is_suspended() {
            info!(self.log, "load balancer is suspended");
            self.stats.expect_up(false);
            if running && self.settings.mode == HaproxyMode::Managed {
                self.save_counters()?;
                self.process.stop()?;
            }
            return Ok(());
        }
        self.stats.expect_up(true);
        self.ensure_server_state()?;
        let interrupted = self.paths.applying.exists();
        if running && interrupted {
            // The previous worker died between changing HAProxy and recording it: load the
            // file (a validated, complete configuration) so both agree again.
            warn!(
                self.log,
                "an update was interrupted; reloading HAProxy from the configuration file"
            );
            self.save_counters()?;
            self.process.reload()?;
            let _ = files::remove_if_exists(&self.paths.applying);
        } else if running {
            info!(self.log, "adopted the running HAProxy");
        } else if self.settings.mode == HaproxyMode::Managed {
            info!(
                self.log,
                "starting HAProxy from the last good configuration"
            );
            self.process.start()?;
            let _ = files::remove_if_exists(&self.paths.applying);
        }
        Ok(())
    }

    /// One upkeep turn (the trait's `housekeeping`).
    pub(super) fn upkeep(&mut self) -> Result<()> {
        if !self.started_up {
            self.started_up = true;
            self.start_up()?;
        }
        let running = self.process.is_running();
        self.stats.set_up(running);
        if running && !self.lingering.is_empty() {
            self.lingering = runtime::sweep(&self.socket, &self.lingering);
        }
        let should_run = self.has_config() && !self.is_suspended();
        if should_run && !running && self.settings.mode == HaproxyMode::Managed {
            warn!(
                self.log,
                "HAProxy is not running; restarting it from the last good configuration"
            );
            self.stats.restarts.fetch_add(1, Ordering::Relaxed);
            self.ensure_server_state()?;
            self.process.start()?;
            self.stats.set_up(true);
            info!(self.log, "HAProxy restarted");
        }
        Ok(())
    }
}
