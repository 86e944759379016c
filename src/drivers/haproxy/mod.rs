//! The HAProxy driver: the `LoadBalancerDriver` that runs the appliance. It builds a
//! `model` from an UPDATE, `render`s it, checks it with `haproxy -c`, swaps it in with
//! `files` (keeping `<file>.BKUP`), and has `process` reload or start HAProxy; if HAProxy
//! refuses, the previous file is put back and keeps serving. STATS and METRICS read the
//! `stats_socket`; METRICS goes through the `ledger`; ARCHIVE through `archive`.

/// A named step of the apply path where a crash test can make the worker die, exactly
/// there and as a SIGKILL would (`FAILPOINTS=<name>=return` in a `failpoints` build).
/// Without that feature it compiles to nothing.
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| -> _ { std::process::abort() })
    };
}

pub(crate) mod alerts;
pub(crate) mod archive;
pub(crate) mod command;
pub(crate) mod files;
pub(crate) mod ledger;
pub(crate) mod live_files;
pub(crate) mod model;
pub(crate) mod process;
pub(crate) mod render;
pub(crate) mod runtime;
pub(crate) mod runtime_api;
pub(crate) mod sudoers;
#[cfg(test)]
pub(crate) mod test_support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use slog::{error, info, warn, Logger};

use self::ledger::{Ledger, Sample};
use self::live_files::LiveFiles;
use self::model::Model;
// Named `Timeouts` here, where the load balancer's are `LbTimeouts`.
use self::process::{Process, StepTimeouts as Timeouts};
use self::render::{LogTarget, RenderEnv};
use self::runtime_api::StatsSocket;
use crate::config::{HaproxyMode, HaproxySettings};
use crate::drivers::DriverStats;
use crate::drivers::{
    Algorithm, ArchiveTarget, DriverError, DriverResult, LoadBalancerDriver, Monitor, Node,
    NodeStatus, Protocol, Statistics, Timeouts as LbTimeouts,
};

/// Files the driver keeps in the state directory besides HAProxy's own.
const MODEL_FILE: &str = "model.json";
const CANDIDATE_FILE: &str = "haproxy.cfg.new";
const SUSPENDED_FILE: &str = "suspended";
const SERVER_STATE_FILE: &str = "server-state";
const COOKIE_KEY_FILE: &str = "cookie.key";
/// Present while a change is being applied: a worker that finds it at start-up (it died
/// half-way) reloads HAProxy from the file, so that what runs is what the file says.
const APPLYING_FILE: &str = "applying";

/// Where everything lives.
#[derive(Debug, Clone)]
struct Paths {
    config: PathBuf,
    backup: PathBuf,
    candidate: PathBuf,
    model: PathBuf,
    suspended: PathBuf,
    server_state: PathBuf,
    cookie_key: PathBuf,
    applying: PathBuf,
}

impl Paths {
    fn new(s: &HaproxySettings) -> Paths {
        let with_suffix = |p: &Path, suffix: &str| {
            let mut os = p.as_os_str().to_owned();
            os.push(suffix);
            PathBuf::from(os)
        };
        Paths {
            backup: with_suffix(&s.config_file, ".BKUP"),
            // Checked where the worker may write, whoever owns the live file's directory.
            candidate: s.state_dir.join(CANDIDATE_FILE),
            config: s.config_file.clone(),
            model: s.state_dir.join(MODEL_FILE),
            suspended: s.state_dir.join(SUSPENDED_FILE),
            server_state: s.state_dir.join(SERVER_STATE_FILE),
            cookie_key: s.state_dir.join(COOKIE_KEY_FILE),
            applying: s.state_dir.join(APPLYING_FILE),
        }
    }
}

pub struct HaproxyDriver {
    settings: HaproxySettings,
    paths: Paths,
    timeouts: Timeouts,
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
}

fn failed(e: impl std::fmt::Display) -> DriverError {
    DriverError::Failed(e.to_string())
}

impl HaproxyDriver {
    pub fn new(
        settings: HaproxySettings,
        job_timeout: Duration,
        stats: Arc<DriverStats>,
        log: Logger,
    ) -> Self {
        let timeouts = timeouts_for(job_timeout);
        let process = process::from_settings(&settings, timeouts);
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
        }
    }

    /// The secret behind HTTP dynamic cookies, made once and kept in the state directory
    /// so that those cookies keep their value across reloads and worker restarts.
    fn cookie_key(&mut self) -> DriverResult<String> {
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
            files::write_atomic(&self.paths.cookie_key, key.as_bytes(), files::PRIVATE_MODE)
                .map_err(failed)?;
            key
        };
        self.cookie_key = Some(key.clone());
        Ok(key)
    }

    fn render_env(&mut self) -> DriverResult<RenderEnv> {
        let cookie_key = self.cookie_key()?;
        let bind_address = self.settings.bind_address.parse().map_err(|_| {
            failed(format!(
                "haproxy.bind_address '{}' is not an IP address",
                self.settings.bind_address
            ))
        })?;
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
            },
        })
    }

    /// Creates the state directory (0700) once.
    fn ensure_state_dir(&self) -> DriverResult<()> {
        let dir = &self.settings.state_dir;
        if !dir.is_dir() {
            std::fs::create_dir_all(dir).map_err(|e| {
                failed(format!(
                    "cannot create the state directory {}: {e}",
                    dir.display()
                ))
            })?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
                failed(format!(
                    "cannot restrict the state directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        Ok(())
    }

    fn ledger(&mut self) -> DriverResult<&mut Ledger> {
        if self.ledger.is_none() {
            let path = self.settings.statsfile.clone();
            let reference = self
                .settings
                .reference_statsfile
                .clone()
                .filter(|r| !path.exists() && r.exists());
            let ledger = match reference {
                Some(reference) => self.take_over_reference_ledger(&path, &reference)?,
                None => match Ledger::load(&path) {
                    Ok(l) => l,
                    Err(e @ ledger::LedgerError::Corrupt { .. }) => {
                        // Keep the evidence, start a fresh count.
                        let aside = path.with_extension("corrupt");
                        let _ = std::fs::rename(&path, &aside);
                        error!(self.log, "metrics ledger unreadable; starting afresh"; "error" => %e, "kept_as" => %aside.display());
                        Ledger::load(&path).map_err(failed)?
                    }
                    Err(e) => return Err(failed(e)),
                },
            };
            self.ledger = Some(ledger);
        }
        self.ledger
            .as_mut()
            .ok_or_else(|| failed("metrics ledger unavailable"))
    }

    /// The first start after the reference worker: its METRICS state becomes ours, so the
    /// next report bills exactly what it had not (its file is left as it was).
    fn take_over_reference_ledger(
        &mut self,
        path: &Path,
        reference: &Path,
    ) -> DriverResult<Ledger> {
        let text = self.live.read(reference).map_err(|e| {
            failed(format!(
                "Cannot take over the reference worker's METRICS state: {e}"
            ))
        })?;
        let pids: Vec<(Protocol, u32)> = if self.process.is_running() {
            self.samples()
                .unwrap_or_default()
                .iter()
                .map(|s| (s.protocol, s.pid))
                .collect()
        } else {
            Vec::new()
        };
        let ledger = Ledger::import_reference(path, reference, &text, &pids).map_err(failed)?;
        info!(self.log, "took over the reference worker's METRICS state";
            "from" => %reference.display(), "ledger" => %path.display());
        Ok(ledger)
    }

    fn has_config(&self) -> bool {
        self.paths.config.exists()
    }

    fn is_suspended(&self) -> bool {
        self.paths.suspended.exists()
    }

    /// The `bout` counters of every load balancer, tied to the worker process that holds them.
    fn samples(&self) -> DriverResult<Vec<Sample>> {
        let info = self.socket.show_info().map_err(failed)?;
        let pid: u32 = info
            .get("Pid")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| failed("HAProxy's `show info` has no Pid"))?;
        let rows = self.socket.show_stat().map_err(failed)?;
        let protocols: Vec<Protocol> = match &self.applied {
            Some(m) => m.load_balancers().iter().map(|lb| lb.protocol).collect(),
            None => vec![Protocol::Http, Protocol::Tcp],
        };
        let mut out = Vec::new();
        for protocol in protocols {
            let backend = render::backend_name(protocol);
            if let Some(row) = rows.iter().find(|r| {
                r.get("pxname") == Some(backend.as_str()) && r.get("svname") == Some("BACKEND")
            }) {
                out.push(Sample {
                    protocol,
                    pid,
                    bout: row.get_u64("bout").unwrap_or(0),
                });
            }
        }
        Ok(out)
    }

    /// Before HAProxy's current process goes away: bank its counters.
    fn save_counters(&mut self) -> DriverResult<()> {
        let samples = match self.samples() {
            Ok(s) => s,
            Err(e) => {
                warn!(self.log, "cannot read HAProxy counters before a stop or reload"; "error" => %e);
                return Ok(());
            }
        };
        self.ledger()?.save_before_stop(&samples).map_err(failed)?;
        crash_point!("ledger-saved-before-reload");
        Ok(())
    }

    fn write_server_state(&self, text: &str) -> DriverResult<()> {
        files::write_atomic(
            &self.paths.server_state,
            text.as_bytes(),
            files::PRIVATE_MODE,
        )
        .map_err(failed)
    }

    fn ensure_server_state(&self) -> DriverResult<()> {
        if !self.paths.server_state.exists() {
            self.write_server_state(render::EMPTY_SERVER_STATE)?;
        }
        Ok(())
    }

    fn persist_model(&self, model: &Model) {
        match serde_json::to_vec_pretty(model) {
            Ok(bytes) => {
                if let Err(e) = files::write_atomic(&self.paths.model, &bytes, files::PRIVATE_MODE)
                {
                    warn!(self.log, "cannot save the applied model"; "error" => %e);
                }
            }
            Err(e) => warn!(self.log, "cannot encode the applied model"; "error" => %e),
        }
    }

    fn load_model(&self) -> Option<Model> {
        let bytes = std::fs::read(&self.paths.model).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(m) => Some(m),
            Err(e) => {
                warn!(self.log, "ignoring an unreadable model.json"; "error" => %e);
                None
            }
        }
    }

    /// Applies a nodes-only change through the runtime API, then writes the same state to
    /// the file. `Ok(false)`: the change needs a reload. `Err`: HAProxy refused a step
    /// half-way; the caller reloads from the file, which makes both agree again.
    fn apply_at_runtime(&mut self, next: &mut Model) -> DriverResult<bool> {
        let Some(live) = self.applied.clone() else {
            return Ok(false);
        };
        let steps = match runtime::plan(&live, next, &self.lingering) {
            Ok(steps) => steps,
            Err(reason) => {
                slog::debug!(self.log, "update needs a reload"; "reason" => %reason);
                return Ok(false);
            }
        };
        // HTTP nodes that join at run time carry HAProxy's dynamic cookie; a parked server
        // that comes back keeps the cookie it had.
        let backend = render::backend_name(Protocol::Http);
        let added_http: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                runtime::Step::Add {
                    protocol: Protocol::Http,
                    node,
                } => Some(node.id.clone()),
                runtime::Step::Revive {
                    protocol: Protocol::Http,
                    node,
                } => self
                    .lingering
                    .get(&(backend.clone(), render::server_name(&node.id)))
                    .filter(|p| p.dynamic_cookie)
                    .map(|_| node.id.clone()),
                _ => None,
            })
            .collect();
        next.mark_dynamic_cookie(Protocol::Http, added_http.iter());
        let text = render::render(next, &self.render_env()?)
            .map_err(|e| DriverError::Invalid(e.to_string()))?;
        self.mark_applying()?;
        let done = runtime::apply(&self.socket, &live, next, &steps).map_err(failed)?;
        for key in &done.revived {
            self.lingering.remove(key);
        }
        self.lingering.extend(done.parked);
        // The file says what now runs; it was produced by the same renderer from the same
        // structure HAProxy accepted, with validated node values, so it is not re-checked
        // here (that check alone costs more than the whole runtime change).
        self.live
            .backup(&self.paths.config, &self.paths.backup)
            .map_err(failed)?;
        self.live
            .install(&self.paths.config, text.as_bytes())
            .map_err(failed)?;
        self.persist_model(next);
        self.applied_done();
        self.applied = Some(next.clone());
        self.stats.runtime_applies.fetch_add(1, Ordering::Relaxed);
        self.stats.expect_up(true);
        Ok(true)
    }

    /// Refuses a port another process holds before HAProxy tries it: a reload that fails
    /// to bind pauses the old frontends for about two seconds, which would drop clients.
    fn check_ports(&self, next: &Model) -> DriverResult<()> {
        let Ok(ip) = self.settings.bind_address.parse::<std::net::IpAddr>() else {
            return Ok(());
        };
        let ours = |port: u16| {
            self.applied
                .as_ref()
                .is_some_and(|m| m.load_balancers().iter().any(|lb| lb.port == port))
        };
        for lb in next.load_balancers() {
            // In service mode another user's HAProxy holds our current ports.
            if self.settings.mode == HaproxyMode::Service && ours(lb.port) {
                continue;
            }
            let addr = std::net::SocketAddr::new(ip, lb.port);
            if let Err(e) = process::check_bindable(&[addr]) {
                let cause = match &e {
                    // A service-mode HAProxy starts as root: a port the worker may not
                    // bind is no evidence that HAProxy cannot.
                    process::ProcessError::PortUnavailable { source, .. }
                        if self.settings.mode == HaproxyMode::Service
                            && source.kind() == std::io::ErrorKind::PermissionDenied =>
                    {
                        continue;
                    }
                    process::ProcessError::PortUnavailable { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
                return Err(failed(format!(
                    "Starting frontend {}: cannot bind socket ({cause}) [{addr}]; the previous configuration keeps serving",
                    render::frontend_name(lb.protocol)
                )));
            }
        }
        Ok(())
    }

    /// Puts the previous file back after HAProxy refused the new one.
    fn roll_back(&mut self, had_previous: bool, was_running: bool) {
        let restored = if had_previous {
            self.live
                .restore(&self.paths.backup, &self.paths.config)
                .map(|_| ())
        } else {
            self.live.remove(&self.paths.config).map(|_| ())
        };
        if let Err(e) = restored {
            error!(self.log, "cannot restore the previous configuration"; "error" => %e);
            return;
        }
        if !(was_running && had_previous) {
            return;
        }
        // A failed reload leaves the old worker serving and the master waiting; a new
        // worker that died at start-up takes everything down. Either way, load the restored
        // file so that what runs is what is on disk.
        let result = if self.process.is_running() {
            self.process.reload()
        } else {
            self.process.start()
        };
        if let Err(e) = result {
            error!(self.log, "reloading the restored configuration failed"; "error" => %e);
        }
    }

    /// First turn: adopt or start HAProxy as the state directory says, and make sure
    /// what runs is what the file says.
    fn start_up(&mut self) -> DriverResult<()> {
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
                self.process.stop().map_err(failed)?;
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
            self.process.reload().map_err(failed)?;
            let _ = files::remove_if_exists(&self.paths.applying);
        } else if running {
            info!(self.log, "adopted the running HAProxy");
        } else if self.settings.mode == HaproxyMode::Managed {
            info!(
                self.log,
                "starting HAProxy from the last good configuration"
            );
            self.process.start().map_err(failed)?;
            let _ = files::remove_if_exists(&self.paths.applying);
        }
        Ok(())
    }

    /// The full path: write and check the candidate, refuse ports held by others, carry
    /// node health and byte counters over, then swap the file in and reload.
    fn apply_with_reload(&mut self, next: Model, text: &str) -> DriverResult<()> {
        files::write_atomic(&self.paths.candidate, text.as_bytes(), files::PRIVATE_MODE)
            .map_err(failed)?;
        self.ensure_server_state()?;
        if let Err(e) = process::validate_with_timeout(
            &self.settings.binary,
            &self.paths.candidate,
            self.timeouts.command,
        ) {
            let _ = files::remove_if_exists(&self.paths.candidate);
            self.stats
                .validation_failures
                .fetch_add(1, Ordering::Relaxed);
            return Err(failed(e));
        }
        crash_point!("apply-candidate-checked");
        let running = self.process.is_running();
        self.check_ports(&next)?;
        if running {
            // Node health survives the reload: hand HAProxy the states still valid.
            match self.socket.show_servers_state() {
                Ok(dump) => {
                    let live = self.applied.clone().unwrap_or_default();
                    self.write_server_state(&render::carry_server_state(&dump, &live, &next))?;
                }
                Err(e) => {
                    warn!(self.log, "cannot save server states before the reload"; "error" => %e)
                }
            }
            self.save_counters()?;
        }
        self.swap_and_load(next, text, running)
    }

    /// Puts the checked configuration in place (with its model, so a worker that dies
    /// now restarts knowing what the file says) and has HAProxy load it; on refusal the
    /// previous file and model come back and keep serving.
    fn swap_and_load(&mut self, next: Model, text: &str, running: bool) -> DriverResult<()> {
        let had_previous = self
            .live
            .backup(&self.paths.config, &self.paths.backup)
            .map_err(failed)?;
        crash_point!("apply-backup-taken");
        self.live
            .install(&self.paths.config, text.as_bytes())
            .map_err(failed)?;
        crash_point!("apply-file-replaced");
        let _ = files::remove_if_exists(&self.paths.candidate);
        self.persist_model(&next);
        crash_point!("apply-before-reload");
        let outcome = if running {
            self.process.reload()
        } else {
            self.process.start()
        };
        match outcome {
            Ok(()) => {
                crash_point!("apply-after-reload");
                self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                // The new process was built from the file: nothing is parked any more.
                self.lingering.clear();
                let _ = files::remove_if_exists(&self.paths.suspended);
                self.applied = Some(next);
                self.stats.expect_up(true);
                self.stats.set_up(true);
                Ok(())
            }
            Err(e) => {
                self.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
                match self.applied.clone() {
                    Some(previous) => self.persist_model(&previous),
                    None => {
                        let _ = files::remove_if_exists(&self.paths.model);
                    }
                }
                // A command that hung told us nothing happened; running it again would
                // only hang again while the next jobs wait.
                let hung = matches!(
                    e,
                    process::ProcessError::ServiceCommand(command::CommandError::TimedOut { .. })
                );
                self.roll_back(had_previous, running && !hung);
                Err(failed(e))
            }
        }
    }

    fn mark_applying(&self) -> DriverResult<()> {
        files::write_atomic(&self.paths.applying, b"", files::PRIVATE_MODE).map_err(failed)
    }

    fn applied_done(&self) {
        if let Err(e) = files::remove_if_exists(&self.paths.applying) {
            warn!(self.log, "cannot clear the update marker"; "error" => %e);
        }
    }
}

/// Whether a server of `show stat` with this `status` takes traffic. `UP 1/3` is UP with a
/// check transition pending (a server added at run time reads so until its first check,
/// up to the check interval later); `DOWN 1/2` is DOWN on its way up, still out of rotation.
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
fn timeouts_for(job_timeout: Duration) -> Timeouts {
    let inner = job_timeout
        .saturating_sub(Duration::from_secs(2))
        .max(Duration::from_secs(1));
    Timeouts {
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
        Ok(())
    }

    fn add_protocol(&mut self, protocol: Protocol, port: u16) -> DriverResult<()> {
        self.pending
            .add_protocol(protocol, port)
            .map_err(|e| DriverError::Invalid(e.to_string()))
    }

    fn set_algorithm(&mut self, protocol: Protocol, algorithm: Algorithm) -> DriverResult<()> {
        self.pending
            .set_algorithm(protocol, algorithm)
            .map_err(|e| DriverError::Invalid(e.to_string()))
    }

    fn add_monitor(&mut self, protocol: Protocol, monitor: &Monitor) -> DriverResult<()> {
        self.pending
            .set_monitor(protocol, monitor)
            .map_err(|e| DriverError::Invalid(e.to_string()))
    }

    fn set_timeouts(&mut self, protocol: Protocol, timeouts: &LbTimeouts) -> DriverResult<()> {
        self.pending
            .set_timeouts(protocol, timeouts)
            .map_err(|e| DriverError::Invalid(e.to_string()))
    }

    fn add_server(&mut self, protocol: Protocol, node: &Node) -> DriverResult<()> {
        self.pending
            .add_server(protocol, node)
            .map_err(|e| DriverError::Invalid(e.to_string()))
    }

    fn create(&mut self) -> DriverResult<()> {
        let mut next = std::mem::take(&mut self.pending);
        self.ensure_state_dir()?;
        if let Some(live) = &self.applied {
            next.inherit_dynamic_cookies(live);
        }
        if self.settings.runtime_api
            && self.has_config()
            && !self.is_suspended()
            && self.process.is_running()
        {
            match self.apply_at_runtime(&mut next) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    self.stats.runtime_fallbacks.fetch_add(1, Ordering::Relaxed);
                    warn!(self.log, "runtime update failed half-way; reloading instead"; "error" => %e);
                }
            }
        }
        let text = render::render(&next, &self.render_env()?)
            .map_err(|e| DriverError::Invalid(e.to_string()))?;
        // From here a worker that dies leaves the marker: its successor reloads from the
        // file, so that what runs is what the file says.
        self.mark_applying()?;
        let result = self.apply_with_reload(next, &text);
        self.applied_done();
        result
    }

    fn suspend(&mut self) -> DriverResult<()> {
        self.ensure_state_dir()?;
        if !self.has_config() {
            return Ok(());
        }
        if self.process.is_running() {
            self.save_counters()?;
            self.process.stop().map_err(failed)?;
        }
        files::write_atomic(&self.paths.suspended, b"suspended\n", files::PRIVATE_MODE)
            .map_err(failed)?;
        self.stats.expect_up(false);
        self.stats.set_up(false);
        Ok(())
    }

    fn enable(&mut self) -> DriverResult<()> {
        if !self.has_config() {
            return Err(failed("There is no load balancer configuration to enable (it was deleted or never created)"));
        }
        if !self.process.is_running() {
            self.ensure_server_state()?;
            self.process.start().map_err(failed)?;
        }
        let _ = files::remove_if_exists(&self.paths.suspended);
        self.stats.expect_up(true);
        self.stats.set_up(true);
        Ok(())
    }

    fn delete(&mut self) -> DriverResult<()> {
        if self.process.is_running() {
            self.process.stop().map_err(failed)?;
        }
        for p in [&self.paths.config, &self.paths.backup] {
            self.live.remove(p).map_err(failed)?;
        }
        match self.settings.mode {
            HaproxyMode::Managed => self.live.remove(&self.settings.logfile).map(drop),
            // syslog keeps the log open: empty it rather than leave it growing unseen.
            HaproxyMode::Service => self.live.truncate(&self.settings.logfile),
        }
        .map_err(failed)?;
        for p in [
            &self.paths.candidate,
            &self.paths.model,
            &self.paths.server_state,
            &self.paths.suspended,
        ] {
            files::remove_if_exists(p).map_err(failed)?;
        }
        if self.settings.statsfile.exists() {
            self.ledger()?.forget_all().map_err(failed)?;
        }
        self.applied = None;
        self.stats.expect_up(false);
        self.stats.set_up(false);
        Ok(())
    }

    fn get_status(&mut self) -> DriverResult<Vec<NodeStatus>> {
        if !self.has_config() {
            return Err(DriverError::Deleted);
        }
        // One round trip: the stats socket answers only while HAProxy runs.
        let rows = match self.socket.show_stat() {
            Ok(rows) => rows,
            // No socket, or one that went away mid-answer because HAProxy died: say so,
            // not how the socket failed.
            Err(e) if e.is_not_running() || !self.process.is_running() => {
                return Err(failed(if self.is_suspended() {
                    "HAProxy is not running (the load balancer is suspended)."
                } else {
                    "HAProxy is not running."
                }))
            }
            Err(e) => return Err(failed(e)),
        };
        let known: Option<Vec<String>> = self.applied.as_ref().map(|m| {
            m.load_balancers()
                .iter()
                .flat_map(|lb| lb.nodes.iter().map(|n| n.id.as_str().to_string()))
                .collect()
        });
        let mut nodes = Vec::new();
        for row in &rows {
            let (Some(px), Some(sv)) = (row.get("pxname"), row.get("svname")) else {
                continue;
            };
            if !px.ends_with("-servers") {
                continue;
            }
            let Some(id) = sv.strip_prefix(render::SERVER_PREFIX) else {
                continue;
            };
            if known.as_ref().is_some_and(|k| !k.iter().any(|x| x == id)) {
                continue;
            }
            nodes.push(NodeStatus {
                id: id.to_string(),
                up: row.get("status").is_some_and(serves),
            });
        }
        Ok(nodes)
    }

    fn get_statistics(&mut self, job: &str) -> DriverResult<Statistics> {
        if !self.has_config() {
            return Err(DriverError::Deleted);
        }
        let samples = if self.process.is_running() {
            self.samples()?
        } else {
            Vec::new()
        };
        let statistics = self
            .ledger()?
            .report(chrono::Utc::now(), &samples, job)
            .map_err(failed)?;
        crash_point!("metrics-ledger-written");
        Ok(statistics)
    }

    fn archive(&mut self, target: &ArchiveTarget) -> DriverResult<()> {
        let timeout = self.timeouts.command.min(Duration::from_secs(30));
        let log = match self.live.open(&self.settings.logfile) {
            Ok(log) => log,
            Err(live_files::LiveFileError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err(failed(archive::ArchiveError::NoLogs))
            }
            Err(e) => return Err(failed(e)),
        };
        archive::archive_log(log, &self.settings.logfile, target, timeout).map_err(failed)
    }

    fn housekeeping(&mut self) -> DriverResult<()> {
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
            self.process.start().map_err(failed)?;
            self.stats.set_up(true);
            info!(self.log, "HAProxy restarted");
        }
        Ok(())
    }
}

/// Stops the managed HAProxy of these settings (the `haproxy stop` command).
pub fn stop_managed(settings: &HaproxySettings) -> Result<String, String> {
    match process::stop_by_state_dir(settings, Timeouts::default()) {
        Ok(Some(pid)) => Ok(format!("stopped HAProxy (master pid {pid})")),
        Ok(None) => Ok("HAProxy was not running".to_string()),
        Err(e) => Err(e.to_string()),
    }
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
