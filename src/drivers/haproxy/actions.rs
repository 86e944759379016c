//! What each job other than UPDATE does to the appliance: SUSPEND stops HAProxy and keeps
//! the configuration, ENABLE starts it again, DELETE removes everything, STATS reads node
//! health from the stats socket, METRICS reports usage from the ledger, ARCHIVE ships the
//! log. UPDATE (`apply`) is in `apply.rs`.

use std::collections::HashSet;
use std::time::Duration;

use super::error::{HaproxyError, Result};
use super::{archive, files, live_files, render, HaproxyDriver};
use crate::config::HaproxyMode;
use crate::drivers::{ArchiveTarget, NodeStatus, Statistics};

impl HaproxyDriver {
    pub(super) fn suspend_lb(&mut self) -> Result<()> {
        self.ensure_state_dir()?;
        if !self.has_config() {
            return Ok(());
        }
        if self.process.is_running() {
            self.save_counters()?;
            self.process.stop()?;
        }
        files::write_atomic(&self.paths.suspended, b"suspended\n", files::PRIVATE_MODE)?;
        self.stats.expect_up(false);
        self.stats.set_up(false);
        Ok(())
    }

    pub(super) fn enable_lb(&mut self) -> Result<()> {
        if !self.has_config() {
            return Err(HaproxyError::NothingToEnable);
        }
        if !self.process.is_running() {
            self.ensure_server_state()?;
            self.process.start()?;
        }
        let _ = files::remove_if_exists(&self.paths.suspended);
        self.stats.expect_up(true);
        self.stats.set_up(true);
        Ok(())
    }

    pub(super) fn delete_lb(&mut self) -> Result<()> {
        if self.process.is_running() {
            self.process.stop()?;
        }
        for p in [&self.paths.config, &self.paths.backup] {
            self.live.remove(p)?;
        }
        match self.settings.mode {
            HaproxyMode::Managed => self.live.remove(&self.settings.logfile).map(drop),
            // syslog keeps the log open: empty it rather than leave it growing unseen.
            HaproxyMode::Service => self.live.truncate(&self.settings.logfile),
        }?;
        for p in [
            &self.paths.candidate,
            &self.paths.model,
            &self.paths.server_state,
            &self.paths.suspended,
        ] {
            files::remove_if_exists(p)?;
        }
        if self.settings.statsfile.exists() {
            self.ledger()?.forget_all()?;
        }
        self.applied = None;
        self.stats.expect_up(false);
        self.stats.set_up(false);
        Ok(())
    }

    pub(super) fn node_status(&mut self) -> Result<Vec<NodeStatus>> {
        if !self.has_config() {
            return Err(HaproxyError::Deleted);
        }
        // One round trip: the stats socket answers only while HAProxy runs.
        let servers = match self.socket.server_health() {
            Ok(servers) => servers,
            // No socket, or one that went away mid-answer because HAProxy died: say so,
            // not how the socket failed.
            Err(e) if e.is_not_running() || !self.process.is_running() => {
                return Err(HaproxyError::NotRunning {
                    suspended: self.is_suspended(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        // A set: STATS of 10,000 nodes looks each server up once.
        let known: Option<HashSet<&str>> = self.applied.as_ref().map(|m| {
            m.load_balancers()
                .iter()
                .flat_map(|lb| lb.nodes.iter().map(|n| n.id.as_str()))
                .collect()
        });
        let mut nodes = Vec::with_capacity(servers.len());
        for server in servers {
            if !render::is_backend_name(&server.backend) {
                continue;
            }
            let Some(id) = server.server.strip_prefix(render::SERVER_PREFIX) else {
                continue;
            };
            if known.as_ref().is_some_and(|k| !k.contains(id)) {
                continue;
            }
            nodes.push(NodeStatus {
                id: id.to_string(),
                up: server.serves,
            });
        }
        Ok(nodes)
    }

    pub(super) fn report_usage(&mut self, job: &str) -> Result<Statistics> {
        if !self.has_config() {
            return Err(HaproxyError::Deleted);
        }
        let samples = if self.process.is_running() {
            self.samples()?
        } else {
            Vec::new()
        };
        let statistics = self.ledger()?.report(chrono::Utc::now(), &samples, job)?;
        crash_point!("metrics-ledger-written");
        Ok(statistics)
    }

    pub(super) fn archive_log(&mut self, target: &ArchiveTarget) -> Result<()> {
        let timeout = self.timeouts.command.min(Duration::from_secs(30));
        let log = match self.live.open(&self.settings.logfile) {
            Ok(log) => log,
            Err(live_files::LiveFileError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err(archive::ArchiveError::NoLogs.into())
            }
            Err(e) => return Err(e.into()),
        };
        Ok(archive::archive_log(
            log,
            &self.settings.logfile,
            target,
            timeout,
        )?)
    }
}
