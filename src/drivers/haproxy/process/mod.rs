//! Running HAProxy: checking a configuration (`check`: `haproxy -c`, bindable ports), and
//! starting, reloading and stopping it either ourselves (`managed`: master-worker mode under
//! the state dir, HAProxy outliving the worker) or through the init system's commands
//! (`service`). Both sit behind the `Process` trait so the driver does not care which one
//! runs; both wait through `poll` and read processes through `procfs`; a managed
//! HAProxy writes its output through `output_log`. `watch` notices a
//! managed master's exit at once and keeps the clock of the node-health snapshots.

pub(crate) mod check;
pub(crate) mod managed;
pub(crate) mod output_log;
pub(crate) mod poll;
pub(crate) mod procfs;
pub(crate) mod service;
pub(crate) mod show_proc;
pub(crate) mod watch;

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use nix::errno::Errno;

use super::alerts::summarize;
use super::command::{CommandError, Secs};
use super::runtime_api::{StatsError, StatsSocket};
use crate::config::{HaproxyMode, HaproxySettings};

pub use check::{check_bindable, validate, validate_with_timeout};
pub use managed::{stop_by_state_dir, Managed, ManagedPaths};
pub use procfs::alive;
pub use service::Service;
pub use show_proc::{show_proc, MasterProc, ProcList, ShowProcError, WorkerProc};
pub use watch::Watch;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("HAProxy rejected the configuration: {}", gist(.messages))]
    Invalid { messages: String },
    #[error("cannot check the HAProxy configuration: {0}")]
    Check(#[source] CommandError),
    #[error("path {} cannot be given to HAProxy (it contains a comma or white space)", .0.display())]
    UnusablePath(PathBuf),
    #[error("cannot open the HAProxy log file {}: {source}", path.display())]
    OpenLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("HAProxy exited while starting ({status}): {}", gist(.alerts))]
    StartExited { status: ExitStatus, alerts: String },
    #[error("HAProxy did not become ready within {} s and was killed: {}", Secs(*.timeout), gist(.alerts))]
    StartTimeout { timeout: Duration, alerts: String },
    #[error("HAProxy (pid {pid}) is running but its master socket does not answer: {source}")]
    Unresponsive { pid: u32, source: ShowProcError },
    #[error("HAProxy is not running")]
    NotRunning,
    #[error("cannot ask the HAProxy master for its processes: {0}")]
    MasterCli(#[source] ShowProcError),
    #[error("{}", reload_failed_text(.alerts, *.serving))]
    ReloadFailed { alerts: String, serving: bool },
    #[error("HAProxy did not finish reloading within {} s: {}", Secs(*.timeout), gist(.alerts))]
    ReloadTimeout { timeout: Duration, alerts: String },
    #[error("HAProxy exited during the reload: {}", gist(.alerts))]
    ExitedDuringReload { alerts: String },
    #[error("cannot signal HAProxy (pid {pid}): {source}")]
    Signal { pid: u32, source: Errno },
    #[error("HAProxy (pid {pid}) did not stop within {} s", Secs(*.timeout))]
    StopTimeout { pid: u32, timeout: Duration },
    #[error("cannot remove {}: {source}", path.display())]
    Cleanup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    PortUnavailable {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    ServiceCommand(#[source] CommandError),
    /// sudo itself refused a service command (see `command::sudo_refusal`).
    #[error("{0}")]
    SudoRefused(String),
    #[error("HAProxy does not answer on {} after `{command}`: {source}", socket.display())]
    ServiceNotAnswering {
        command: String,
        socket: PathBuf,
        source: StatsError,
    },
    #[error("HAProxy still answers on {} after `{command}`", socket.display())]
    ServiceStillRunning { command: String, socket: PathBuf },
    #[error(
        "HAProxy did not load the new configuration within {} s of `{command}`: process {pid} \
         still answers on {} (HAProxy's log says why)",
        Secs(*.timeout),
        socket.display()
    )]
    ServiceNotReloaded {
        command: String,
        socket: PathBuf,
        pid: String,
        timeout: Duration,
    },
}

fn reload_failed_text(alerts: &str, serving: bool) -> String {
    if serving {
        format!(
            "HAProxy reload failed (the previous configuration serves on): {}",
            gist(alerts)
        )
    } else {
        format!(
            "HAProxy reload failed and nothing serves now: {}",
            gist(alerts)
        )
    }
}

/// HAProxy's lines said in few words first (what `hpcs_error` can hold), then in full
/// (for the log, which gets the whole error text).
fn gist(lines: &str) -> String {
    let summary = summarize(lines);
    if summary == lines.trim() {
        summary
    } else {
        format!("{summary} [HAProxy said: {lines}]")
    }
}

/// One way of running HAProxy. Calls come one at a time from the driver thread; every
/// method returns within its configured timeouts.
pub trait Process: Send {
    /// HAProxy is up and serving (managed: the master answers and has a worker; service:
    /// the stats socket answers).
    fn is_running(&mut self) -> bool;
    /// Starts HAProxy with the current configuration file; Ok at once if it already runs
    /// (a managed HAProxy left by an earlier worker process is adopted, not duplicated).
    fn start(&mut self) -> Result<(), ProcessError>;
    /// Loads the current configuration file without dropping established connections.
    /// On failure the error carries HAProxy's alerts and the previous configuration is
    /// still serving.
    fn reload(&mut self) -> Result<(), ProcessError>;
    /// Stops HAProxy; once Ok, its ports refuse connections. Ok if it was not running.
    fn stop(&mut self) -> Result<(), ProcessError>;
    /// Makes sure the watch (if any) watches the running master, e.g. one adopted from an
    /// earlier worker process. Service mode has no master of its own to watch.
    fn watch_master(&mut self) {}
}

/// The `Process` for these settings; in managed mode `watch` (if any) is armed on every
/// master it starts or adopts.
pub fn from_settings(
    settings: &HaproxySettings,
    timeouts: StepTimeouts,
    watch: Option<Watch>,
) -> Box<dyn Process> {
    match settings.mode {
        HaproxyMode::Managed => Box::new(
            Managed::new(ManagedPaths::from_settings(settings))
                .with_timeouts(timeouts)
                .with_max_old_workers(settings.max_old_workers)
                .with_watch(watch),
        ),
        // The init system's commands need root: behind the privilege prefix.
        HaproxyMode::Service => Box::new(Service::new(
            settings.privileged(&settings.start_cmd),
            settings.privileged(&settings.stop_cmd),
            settings.privileged(&settings.reload_cmd),
            StatsSocket::new(&settings.stats_socket, timeouts.cli),
            timeouts,
        )),
    }
}

/// Bounds on each step of running HAProxy (not to be confused with `drivers::Timeouts`,
/// those of a load balancer's connections).
#[derive(Debug, Clone, Copy)]
pub struct StepTimeouts {
    /// From spawning the master to a worker running.
    pub start: Duration,
    /// From asking for a reload to the new worker running (or the failure being known).
    pub reload: Duration,
    /// From SIGTERM to the master's exit (then SIGKILL).
    pub stop: Duration,
    /// One master CLI or stats socket command.
    pub cli: Duration,
    /// One service-mode command.
    pub command: Duration,
}

impl Default for StepTimeouts {
    fn default() -> Self {
        StepTimeouts {
            start: Duration::from_secs(30),
            reload: Duration::from_secs(30),
            stop: Duration::from_secs(10),
            cli: Duration::from_secs(2),
            command: Duration::from_secs(60),
        }
    }
}
