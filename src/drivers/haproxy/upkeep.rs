//! The driver's own turns between jobs: the first one adopts or starts HAProxy as the
//! state directory says (reconciling an update a dead worker left half-done), the later
//! ones restart a HAProxy that died, unless the load balancer is suspended or deleted,
//! and delete servers that have drained. A managed master's exit is noticed at once by
//! `process::watch`, whose report comes here too (`master_exited`): one restart path, one
//! rule for whether HAProxy should run (`should_run`), whoever noticed. The housekeeping
//! turn (every 5 s of driver idleness) stays as the fallback, and the only check in
//! service mode.

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
            // The watch is armed on it right after, by this same turn.
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

    /// Whether HAProxy should be serving: a load balancer is configured (DELETE removes
    /// it) and not suspended. Every restart, whoever noticed the exit, asks this, and only
    /// this.
    pub(super) fn should_run(&self) -> bool {
        self.has_config() && !self.is_suspended()
    }

    /// One upkeep turn (the trait's `housekeeping`).
    pub(super) fn upkeep(&mut self) -> Result<()> {
        if !self.started_up {
            self.started_up = true;
            self.start_up()?;
        }
        let running = self.process.is_running();
        self.stats.set_up(running);
        if running {
            // A master adopted at start-up, or started by a path that did not arm it.
            self.process.watch_master();
            if !self.lingering.is_empty() {
                self.lingering = runtime::sweep(&self.socket, &self.lingering);
            }
            return Ok(());
        }
        self.restart(Noticed::ByHousekeeping)
    }

    /// The watch saw HAProxy's master exit: restart it now unless it should not run (or
    /// runs again already: a roll-back that restarted it, an ENABLE).
    pub(super) fn master_exited(&mut self) -> Result<()> {
        if !self.started_up {
            // Start-up (the first upkeep turn) decides everything then.
            return Ok(());
        }
        let running = self.process.is_running();
        self.stats.set_up(running);
        if running {
            self.process.watch_master();
            return Ok(());
        }
        self.restart(Noticed::ByWatch)
    }

    /// Restarts a HAProxy found dead from the last good configuration, in managed mode,
    /// if it should run. Service mode: the init system owns HAProxy and restarts it (e.g.
    /// systemd's `Restart=`); the worker does not fight it, it only says so.
    fn restart(&mut self, noticed: Noticed) -> Result<()> {
        if !self.should_run() {
            if noticed == Noticed::ByWatch {
                info!(
                    self.log,
                    "HAProxy exited; not restarted: the load balancer is suspended or deleted"
                );
            }
            return Ok(());
        }
        if self.settings.mode != HaproxyMode::Managed {
            if self.stats.haproxy_expected_up.load(Ordering::Relaxed) == 1 {
                warn!(
                    self.log,
                    "HAProxy is not running; its init system restarts it, not the worker"
                );
            }
            return Ok(());
        }
        warn!(
            self.log,
            "HAProxy is not running; restarting it from the last good configuration";
            "noticed_by" => noticed.name()
        );
        // Counted before the start, as before the watch existed: a client that is served
        // again already finds the restart counted.
        self.stats.restarts.fetch_add(1, Ordering::Relaxed);
        if noticed == Noticed::ByWatch {
            self.stats.watch_restarts.fetch_add(1, Ordering::Relaxed);
        }
        self.ensure_server_state()?;
        self.process.start()?;
        self.stats.set_up(true);
        info!(self.log, "HAProxy restarted");
        Ok(())
    }
}

/// Who found HAProxy dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Noticed {
    ByHousekeeping,
    ByWatch,
}

impl Noticed {
    fn name(self) -> &'static str {
        match self {
            Noticed::ByHousekeeping => "housekeeping",
            Noticed::ByWatch => "watch",
        }
    }
}
