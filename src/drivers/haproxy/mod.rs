//! The HAProxy driver: the `LoadBalancerDriver` that runs the appliance. Its rooms:
//! `model` (the typed desired state) and `render` (the only producer of haproxy.cfg);
//! `apply` (runtime API or check-swap-reload), `actions` (SUSPEND, ENABLE, DELETE, STATS,
//! METRICS, ARCHIVE), `upkeep` (start-up, restarts); `process` (running HAProxy),
//! `runtime_api` (the stats-socket client, its commands and answers) and `runtime` (node
//! changes through it); `capabilities` (what the HAProxy binary can do); `files`,
//! `live_files`, `paths` (where everything lives); `billing` and `ledger` (METRICS);
//! `snapshot` (node health saved between reloads, for a restart after a crash);
//! `archive`; `error`.

/// A named step of the apply path where a crash test can make the worker die, exactly
/// there and as a SIGKILL would (`FAILPOINTS=<name>=return` in a `failpoints` build).
/// Without that feature it compiles to nothing.
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| -> _ { std::process::abort() })
    };
}

mod actions;
pub(crate) mod alerts;
mod apply;
pub(crate) mod archive;
mod billing;
pub(crate) mod capabilities;
pub(crate) mod command;
mod error;
pub(crate) mod files;
pub(crate) mod ledger;
pub(crate) mod live_files;
pub(crate) mod model;
mod paths;
pub(crate) mod process;
pub(crate) mod render;
pub(crate) mod runtime;
pub(crate) mod runtime_api;
mod snapshot;
pub(crate) mod sudoers;
#[cfg(test)]
pub(crate) mod test_support;
mod upkeep;

use std::sync::Arc;
use std::time::Duration;

use slog::{info, warn, Logger};

use self::capabilities::{BinaryStamp, Capabilities};
use self::error::{HaproxyError, Result};
use self::ledger::Ledger;
use self::live_files::LiveFiles;
use self::model::Model;
use self::paths::Paths;
use self::process::{Process, StepTimeouts, Watch};
use self::render::{LogTarget, RenderEnv};
use self::runtime_api::StatsSocket;
use crate::config::{HaproxyMode, HaproxySettings};
use crate::drivers::{
    Algorithm, ArchiveTarget, DriverEvent, DriverResult, DriverStats, EventSink,
    LoadBalancerDriver, Monitor, Node, NodeStatus, Protocol, Statistics, Timeouts as LbTimeouts,
};

pub(crate) struct HaproxyDriver {
    settings: HaproxySettings,
    paths: Paths,
    timeouts: StepTimeouts,
    stats: Arc<DriverStats>,
    log: Logger,
    /// The UPDATE being assembled by the incremental trait calls.
    pending: Model,
    /// What HAProxy is serving, as far as the worker knows (persisted in `model.json`).
    applied: Option<Model>,
    process: Box<dyn Process>,
    /// The live configuration, its backup and the log: privileged in service mode.
    live: LiveFiles,
    socket: StatsSocket,
    ledger: Option<Ledger>,
    started_up: bool,
    /// Servers removed at run time that still had connections: in maintenance, to be
    /// deleted by housekeeping.
    lingering: runtime::ParkedServers,
    cookie_key: Option<String>,
    /// What the HAProxy binary can do, with the stamp of the binary it was asked of.
    capabilities: Option<(Option<BinaryStamp>, Capabilities)>,
    /// The thread that reports the master's exit and the snapshot clock (`process::watch`);
    /// `None` without an `EventSink` (then only housekeeping restarts HAProxy).
    watch: Option<Watch>,
    /// Where the UPDATE under way spends its time (`apply::StepClock`), logged at debug.
    clock: apply::StepClock,
}

impl HaproxyDriver {
    /// `events`: where the watch on HAProxy reports (see `on_event`); the actor layer
    /// provides it.
    pub fn new(
        settings: HaproxySettings,
        job_timeout: Duration,
        stats: Arc<DriverStats>,
        events: Option<EventSink>,
        log: Logger,
    ) -> Self {
        let timeouts = timeouts_for(job_timeout);
        let watch = events.and_then(|sink| match Watch::start(sink, stats.clone(), true) {
            Ok(watch) => Some(watch),
            Err(e) => {
                warn!(log, "cannot start the watch on HAProxy; only housekeeping restarts it"; "error" => %e);
                None
            }
        });
        let process = process::from_settings(&settings, timeouts, watch.clone());
        let socket = StatsSocket::new(&settings.stats_socket, timeouts.cli);
        let live = live_files_for(&settings, timeouts.command);
        HaproxyDriver {
            live,
            paths: Paths::new(&settings),
            settings,
            timeouts,
            stats,
            log,
            pending: Model::new(),
            applied: None,
            process,
            socket,
            ledger: None,
            started_up: false,
            lingering: runtime::ParkedServers::new(),
            cookie_key: None,
            capabilities: None,
            watch,
            clock: apply::StepClock::default(),
        }
    }

    /// What the HAProxy binary can do: asked once, and again whenever the binary changed
    /// on disk (a package upgrade), so the renderer never writes what it does not read.
    pub(super) fn capabilities(&mut self) -> Result<Capabilities> {
        let stamp = BinaryStamp::of(&self.settings.binary);
        if let Some((known, caps)) = &self.capabilities {
            if *known == stamp {
                return Ok(caps.clone());
            }
        }
        let caps = Capabilities::ask(&self.settings.binary)?;
        let missing: Vec<&str> = caps
            .describe()
            .into_iter()
            .filter(|(_, has)| !has)
            .map(|(what, _)| what)
            .collect();
        info!(self.log, "HAProxy found";
            "version" => &caps.release, "binary" => %self.settings.binary.display(),
            "without" => missing.join("; "));
        self.capabilities = Some((stamp, caps.clone()));
        Ok(caps)
    }

    /// The secret behind HTTP dynamic cookies, made once and kept in the state directory
    /// so that those cookies keep their value across reloads and worker restarts.
    pub(super) fn cookie_key(&mut self) -> Result<String> {
        if let Some(k) = &self.cookie_key {
            return Ok(k.clone());
        }
        let stored = std::fs::read_to_string(&self.paths.cookie_key).unwrap_or_default();
        let stored = stored.trim();
        let key = if !stored.is_empty()
            && stored.len() <= 64
            && stored.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            stored.to_string()
        } else {
            use rand::Rng;
            let key: String = rand::thread_rng()
                .sample_iter(&rand::distributions::Alphanumeric)
                .take(24)
                .map(char::from)
                .collect();
            files::write_atomic(&self.paths.cookie_key, key.as_bytes(), files::PRIVATE_MODE)?;
            key
        };
        self.cookie_key = Some(key.clone());
        Ok(key)
    }

    pub(super) fn render_env(&mut self) -> Result<RenderEnv> {
        let cookie_key = self.cookie_key()?;
        let bind_address = self
            .settings
            .bind_address
            .parse()
            .map_err(|_| HaproxyError::BindAddress(self.settings.bind_address.clone()))?;
        let capabilities = self.capabilities()?;
        let limits = render::ProcessLimits {
            maxconn: self.settings.maxconn,
            hard_stop_after: self.settings.hard_stop_after,
            max_old_workers: self.settings.max_old_workers,
        };
        Ok(match self.settings.mode {
            HaproxyMode::Managed => RenderEnv {
                bind_address,
                stats_socket: self.settings.stats_socket.clone(),
                server_state_file: self.paths.server_state.clone(),
                log: LogTarget::Stdout,
                pid_file: None,
                socket_owner: None,
                cookie_key,
                limits,
                capabilities: capabilities.clone(),
            },
            HaproxyMode::Service => RenderEnv {
                bind_address,
                stats_socket: self.settings.stats_socket.clone(),
                server_state_file: self.paths.server_state.clone(),
                log: LogTarget::Syslog("/dev/log".to_string()),
                pid_file: Some(self.settings.pid_file.clone()),
                socket_owner: Some((
                    nix::unistd::getuid().as_raw(),
                    nix::unistd::getgid().as_raw(),
                )),
                cookie_key,
                limits,
                capabilities: capabilities.clone(),
            },
        })
    }

    /// Creates the state directory (0700) once.
    pub(super) fn ensure_state_dir(&self) -> Result<()> {
        let dir = &self.settings.state_dir;
        if !dir.is_dir() {
            let state_dir = |source| HaproxyError::StateDir {
                path: dir.clone(),
                source,
            };
            std::fs::create_dir_all(dir).map_err(state_dir)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(state_dir)?;
        }
        Ok(())
    }

    pub(super) fn has_config(&self) -> bool {
        self.paths.config.exists()
    }

    pub(super) fn is_suspended(&self) -> bool {
        self.paths.suspended.exists()
    }

    pub(super) fn write_server_state(&self, text: &str) -> Result<()> {
        Ok(files::write_atomic(
            &self.paths.server_state,
            text.as_bytes(),
            files::PRIVATE_MODE,
        )?)
    }

    pub(super) fn ensure_server_state(&self) -> Result<()> {
        if !self.paths.server_state.exists() {
            self.write_server_state(render::EMPTY_SERVER_STATE)?;
        }
        Ok(())
    }

    pub(super) fn persist_model(&self, model: &Model) {
        if let Some(bytes) = encode_model(model, &self.log) {
            if let Err(e) = files::write_atomic(&self.paths.model, &bytes, files::PRIVATE_MODE) {
                warn!(self.log, "cannot save the applied model"; "error" => %e);
            }
        }
    }

    pub(super) fn load_model(&self) -> Option<Model> {
        let bytes = std::fs::read(&self.paths.model).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(m) => Some(m),
            Err(e) => {
                warn!(self.log, "ignoring an unreadable model.json"; "error" => %e);
                None
            }
        }
    }
}

/// `model.json`'s bytes: compact, not pretty (the indentation only lengthened what every
/// UPDATE writes and flushes; `load_model` reads either).
fn encode_model(model: &Model, log: &Logger) -> Option<Vec<u8>> {
    match serde_json::to_vec(model) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            warn!(log, "cannot encode the applied model"; "error" => %e);
            None
        }
    }
}

/// Whether a server of `show stat` with this `status` takes traffic. STATS reads `show
/// servers state` instead (`server_states`); the tests hold that reading to this one. `UP 1/3` is UP with a
/// check transition pending (a server added at run time reads so until its first check,
/// up to the check interval later); `DOWN 1/2` is DOWN on its way up, still out of rotation.
#[cfg(test)]
fn serves(status: &str) -> bool {
    status == "UP" || status.starts_with("UP ")
}

/// How the driver of `settings` reaches the live files: directly in managed mode, through
/// the privilege prefix in service mode. `sudoers` lists the commands of the same value.
fn live_files_for(settings: &HaproxySettings, timeout: Duration) -> LiveFiles {
    match settings.mode {
        HaproxyMode::Managed => LiveFiles::new(
            Vec::new(),
            settings.state_dir.clone(),
            files::PRIVATE_MODE,
            timeout,
        ),
        HaproxyMode::Service => LiveFiles::new(
            settings.sudo.clone(),
            settings.state_dir.clone(),
            live_files::SERVICE_CONFIG_MODE,
            timeout,
        ),
    }
}

/// Bounds for each process step, inside the job deadline so the driver answers first.
fn timeouts_for(job_timeout: Duration) -> StepTimeouts {
    let inner = job_timeout
        .saturating_sub(Duration::from_secs(2))
        .max(Duration::from_secs(1));
    StepTimeouts {
        start: inner.min(Duration::from_secs(30)),
        reload: inner.min(Duration::from_secs(30)),
        stop: inner.min(Duration::from_secs(10)),
        cli: Duration::from_secs(2).min(inner),
        command: inner,
    }
}

impl LoadBalancerDriver for HaproxyDriver {
    fn name(&self) -> &'static str {
        "haproxy"
    }

    fn init(&mut self) -> DriverResult<()> {
        self.pending = Model::new();
        self.clock.start();
        Ok(())
    }

    fn add_protocol(&mut self, protocol: Protocol, port: u16) -> DriverResult<()> {
        Ok(self.pending.add_protocol(protocol, port)?)
    }

    fn set_algorithm(&mut self, protocol: Protocol, algorithm: Algorithm) -> DriverResult<()> {
        Ok(self.pending.set_algorithm(protocol, algorithm)?)
    }

    fn add_monitor(&mut self, protocol: Protocol, monitor: &Monitor) -> DriverResult<()> {
        Ok(self.pending.set_monitor(protocol, monitor)?)
    }

    fn set_timeouts(&mut self, protocol: Protocol, timeouts: &LbTimeouts) -> DriverResult<()> {
        Ok(self.pending.set_timeouts(protocol, timeouts)?)
    }

    fn add_server(&mut self, protocol: Protocol, node: &Node) -> DriverResult<()> {
        Ok(self.pending.add_server(protocol, node)?)
    }

    fn create(&mut self) -> DriverResult<()> {
        let next = std::mem::take(&mut self.pending);
        // From `init` to here: the model built and checked node by node.
        self.clock.lap("validate");
        let result = self.apply(next);
        // Info, not debug: one short line per UPDATE, so that where the time goes can be
        // read (and benchmarked) without debug's copies of whole jobs and answers.
        let us = self.clock.take();
        info!(self.log, "update steps"; "us" => us);
        Ok(result?)
    }

    fn suspend(&mut self) -> DriverResult<()> {
        Ok(self.suspend_lb()?)
    }

    fn enable(&mut self) -> DriverResult<()> {
        Ok(self.enable_lb()?)
    }

    fn delete(&mut self) -> DriverResult<()> {
        Ok(self.delete_lb()?)
    }

    fn get_status(&mut self) -> DriverResult<Vec<NodeStatus>> {
        Ok(self.node_status()?)
    }

    fn get_statistics(&mut self, job: &str) -> DriverResult<Statistics> {
        Ok(self.report_usage(job)?)
    }

    fn archive(&mut self, target: &ArchiveTarget) -> DriverResult<()> {
        Ok(self.archive_log(target)?)
    }

    fn housekeeping(&mut self) -> DriverResult<()> {
        Ok(self.upkeep()?)
    }

    fn on_event(&mut self, event: DriverEvent) -> DriverResult<()> {
        match event {
            DriverEvent::ProcessExited => self.master_exited()?,
            DriverEvent::SnapshotDue => self.snapshot_server_state()?,
        }
        Ok(())
    }
}

/// Stops the managed HAProxy of these settings (the `haproxy stop` command); says what
/// it did.
pub(crate) fn stop_managed(settings: &HaproxySettings) -> Result<String> {
    Ok(
        match process::stop_by_state_dir(settings, StepTimeouts::default())? {
            Some(pid) => format!("stopped HAProxy (master pid {pid})"),
            None => "HAProxy was not running".to_string(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_up_with_a_check_pending_serves() {
        for up in ["UP", "UP 1/3", "UP 2/3"] {
            assert!(serves(up), "{up}");
        }
        for down in [
            "DOWN",
            "DOWN 1/2",
            "MAINT",
            "MAINT (resolution)",
            "NOLB",
            "DRAIN",
            "UPPER",
            "",
        ] {
            assert!(!serves(down), "{down}");
        }
    }
}
