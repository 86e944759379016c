//! Running HAProxy: checking a configuration (`haproxy -c`), and starting, reloading and
//! stopping it either ourselves (`Managed`: master-worker mode under the state dir, HAProxy
//! outliving the worker) or through the init system's commands (`Service`). Both sit behind
//! the `Process` trait so the driver does not care which one runs.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{getpgid, Pid};

use super::alerts::{messages, summarize};
use super::command::{self, CommandError, Secs};
use super::runtime_api::{StatsError, StatsSocket};
use crate::config::{HaproxyMode, HaproxySettings};

/// How often HAProxy is polled while waiting for it to start, reload or stop: short,
/// because UPDATE latency is mostly reload latency.
pub const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// Bound on `haproxy -c` (it resolves server host names, which can be slow).
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a reload may look done but without a new worker before it counts as failed.
const NEW_WORKER_GRACE: Duration = Duration::from_secs(1);

/// How long a SIGKILLed HAProxy may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// Where util-linux's `setsid` may be.
const SETSID_PROGRAMS: [&str; 2] = ["/usr/bin/setsid", "/bin/setsid"];

/// Name of the master CLI socket inside the state dir.
pub const MASTER_SOCKET_NAME: &str = "master.sock";

/// Most of the log read back to find HAProxy's alerts after a failed start or reload.
const MAX_LOG_READ: u64 = 1024 * 1024;

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
    Unresponsive { pid: u32, source: StatsError },
    #[error("HAProxy is not running")]
    NotRunning,
    #[error("cannot ask the HAProxy master for its processes: {0}")]
    MasterCli(#[source] StatsError),
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

/// Checks `config` with `haproxy -c -f`. On failure the error carries HAProxy's own
/// `[ALERT]` and `[WARNING]` lines, trimmed and joined with `; `.
pub fn validate(binary: &Path, config: &Path) -> Result<(), ProcessError> {
    validate_with_timeout(binary, config, DEFAULT_CHECK_TIMEOUT)
}

pub fn validate_with_timeout(
    binary: &Path,
    config: &Path,
    timeout: Duration,
) -> Result<(), ProcessError> {
    let argv = [
        binary.as_os_str(),
        "-c".as_ref(),
        "-f".as_ref(),
        config.as_os_str(),
    ]
    .iter()
    .map(|a| a.to_string_lossy().into_owned())
    .collect::<Vec<_>>();
    let out = command::run_unchecked(&argv, timeout).map_err(ProcessError::Check)?;
    if out.status.success() {
        return Ok(());
    }
    // The alerts say why; warnings (a timeout of 0, say) come after them.
    let mut lines = messages(&out.output, None, &["[ALERT]"]);
    lines.extend(messages(&out.output, None, &["[WARNING]"]));
    let messages = if lines.is_empty() {
        format!(
            "`{}` failed ({}): {}",
            command::display(&argv),
            out.status,
            out.output
        )
    } else {
        lines.join("; ")
    };
    Err(ProcessError::Invalid { messages })
}

/// Checks that HAProxy could bind each of `addrs`, binding them the way it does
/// (SO_REUSEADDR and SO_REUSEPORT). Ports the running HAProxy holds pass (it listens with
/// SO_REUSEPORT as the same user), so every listen address of a new configuration can be
/// given. A reload that fails to bind leaves the old frontends refusing connections for
/// ~2 s, so a port taken by another process is better refused before reloading.
pub fn check_bindable(addrs: &[std::net::SocketAddr]) -> Result<(), ProcessError> {
    use socket2::{Domain, Socket, Type};
    for &addr in addrs {
        let bind = || -> std::io::Result<()> {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            socket.bind(&addr.into())
        };
        bind().map_err(|source| ProcessError::PortUnavailable { addr, source })?;
    }
    Ok(())
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
}

/// The `Process` for these settings.
pub fn from_settings(settings: &HaproxySettings, timeouts: Timeouts) -> Box<dyn Process> {
    match settings.mode {
        HaproxyMode::Managed => {
            Box::new(Managed::new(ManagedPaths::from_settings(settings)).with_timeouts(timeouts))
        }
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

/// Bounds on each step of running HAProxy.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
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

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            start: Duration::from_secs(30),
            reload: Duration::from_secs(30),
            stop: Duration::from_secs(10),
            cli: Duration::from_secs(2),
            command: Duration::from_secs(60),
        }
    }
}

/// Where a managed HAProxy keeps its files.
#[derive(Debug, Clone)]
pub struct ManagedPaths {
    pub binary: PathBuf,
    pub config_file: PathBuf,
    pub pid_file: PathBuf,
    pub master_socket: PathBuf,
    /// HAProxy's stdout and stderr: traffic logs (`log stdout`) and its own alerts.
    pub log_file: PathBuf,
    /// The configuration's `stats socket`: after a (re)load, the new worker must answer on
    /// it before the (re)load counts as done, so the rendered configuration must declare
    /// exactly this path. `None` skips that check.
    pub stats_socket: Option<PathBuf>,
}

impl ManagedPaths {
    pub fn from_settings(settings: &HaproxySettings) -> Self {
        ManagedPaths {
            binary: settings.binary.clone(),
            config_file: settings.config_file.clone(),
            pid_file: settings.pid_file.clone(),
            master_socket: settings.state_dir.join(MASTER_SOCKET_NAME),
            log_file: settings.logfile.clone(),
            stats_socket: Some(settings.stats_socket.clone()),
        }
    }
}

/// One line of `show proc` for the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterProc {
    pub(crate) pid: u32,
    /// Reloads since the master started, failed ones included.
    pub reloads: u32,
    /// Consecutive failed reloads (0 after a successful one).
    pub failed_reloads: u32,
}

/// One line of `show proc` for a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerProc {
    pub pid: u32,
    /// Reloads this worker has lived through.
    pub(crate) reloads: u32,
}

/// The master CLI's `show proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcList {
    pub master: MasterProc,
    /// Workers running the current configuration.
    pub workers: Vec<WorkerProc>,
    /// Workers of earlier configurations, finishing their connections.
    pub(crate) old_workers: Vec<WorkerProc>,
}

/// Parses `show proc` of HAProxy 2.6.
pub fn parse_show_proc(text: &str) -> Result<ProcList, String> {
    #[derive(PartialEq)]
    enum Section {
        Current,
        Old,
        Other,
    }
    let mut section = Section::Current;
    let mut master = None;
    let (mut workers, mut old_workers) = (Vec::new(), Vec::new());
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            section = match comment.trim() {
                "workers" => Section::Current,
                "old workers" => Section::Old,
                c if c.starts_with("<PID>") => Section::Current,
                _ => Section::Other,
            };
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(pid), Some(kind), Some(reloads)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let (Ok(pid), Ok(reloads)) = (pid.parse::<u32>(), reloads.parse::<u32>()) else {
            continue;
        };
        match kind {
            "master" => {
                let failed_reloads = line
                    .split_once("[failed:")
                    .and_then(|(_, rest)| rest.split(']').next())
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0);
                master = Some(MasterProc {
                    pid,
                    reloads,
                    failed_reloads,
                });
            }
            "worker" if section == Section::Current => workers.push(WorkerProc { pid, reloads }),
            "worker" if section == Section::Old => old_workers.push(WorkerProc { pid, reloads }),
            _ => {}
        }
    }
    let master = master.ok_or_else(|| format!("no master in `show proc`: {}", text.trim()))?;
    Ok(ProcList {
        master,
        workers,
        old_workers,
    })
}

/// HAProxy run by the worker itself, in master-worker mode, in a session of its own so
/// that it outlives the worker: stopping, crashing or upgrading the worker never stops
/// traffic, and the next worker process adopts it through the pid file and master socket.
///
/// HAProxy 2.6.12 behaviours this relies on (all checked against the real binary):
/// - `haproxy -W -db -f <cfg> -p <pidfile> -S <sock>,mode,600` stays in the foreground as the
///   master; the pid file holds the master's pid; it forks one worker per (re)load.
/// - The master CLI (`-S`) answers one command per connection only once the client shuts its
///   write side. `show proc` lists the master (`<pid> master <reloads> [failed: <n>] ...`),
///   then `# workers`, `# old workers` (still draining connections) and `# programs`.
/// - Master CLI `reload` re-executes the master (same pid): the connection just closes, and
///   the master socket refuses connections (~50 ms here) until the re-executed master runs.
/// - A successful reload shows a new pid under `# workers` and `[failed: 0]`; the old worker
///   moves to `# old workers` until its connections end. `failed` counts consecutive failed
///   reloads and goes back to 0 on the next success.
/// - After every load, good or bad, the master re-executes itself once more into "wait mode"
///   (`HAPROXY_MWORKER_WAIT_ONLY=1`, no configuration in memory): that is its steady state.
/// - A failed reload (a port taken by another process: `haproxy -c` cannot see that) logs
///   `[ALERT] (<master pid>) : Binding [...]: cannot bind socket (Address already in use)`
///   and `Loading failure!`, increments `failed`, and the master goes back to wait mode
///   supervising the old worker, which keeps serving (its listeners are paused and resumed).
///   Nothing is pending: the next `reload` reads the configuration file again, so restore
///   the previous file (reloading it then succeeds) or the same failure repeats.
///   Such a reload takes ~2 s (the new master keeps retrying to bind) and meanwhile the old
///   worker's listeners are paused: new connections are REFUSED for those ~2 s (established
///   ones go on). Hence `check_bindable` before reloading.
/// - A successful reload refuses nothing (listening sockets pass over `-x sockpair@`).
/// - A new worker failing its own start-up after a good load (e.g. `chroot` to a missing
///   dir: `haproxy -c` passes) makes the master SIGTERM every process and exit
///   (`exit-on-failure`, the default): everything is down, old worker included.
/// - SIGTERM to the master is a hard stop: it kills the workers, logs `All workers exited.
///   Exiting...` and exits. It leaves its pid file and socket files behind. Workers exit by
///   themselves when the master dies (even by SIGKILL).
#[derive(Debug)]
pub struct Managed {
    paths: ManagedPaths,
    timeouts: Timeouts,
    /// The master, when this process spawned it: kept to reap it (no zombie).
    child: Option<Child>,
}

impl Managed {
    pub fn new(paths: ManagedPaths) -> Self {
        Managed {
            paths,
            timeouts: Timeouts::default(),
            child: None,
        }
    }

    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    pub fn paths(&self) -> &ManagedPaths {
        &self.paths
    }

    fn master_cli(&self) -> StatsSocket {
        StatsSocket::new(&self.paths.master_socket, self.timeouts.cli)
    }

    /// The master CLI's `show proc`.
    pub fn show_proc(&self) -> Result<ProcList, StatsError> {
        let answer = self.master_cli().command("show proc")?;
        parse_show_proc(&answer).map_err(|reason| StatsError::Unexpected {
            command: "show proc".into(),
            reason,
        })
    }

    /// Pid of the running master of this state dir (ours or adopted), if any.
    pub(crate) fn master_pid(&mut self) -> Option<u32> {
        self.reap();
        let Some(pid) = read_pid_file(&self.paths.pid_file) else {
            // Pid file lost: the master socket of this state dir still names its master.
            return self
                .show_proc()
                .ok()
                .map(|p| p.master.pid)
                .filter(|&pid| alive(pid));
        };
        if !alive(pid) {
            return None;
        }
        // A pid file can outlive its process and the pid be reused: only a process started
        // with this pid file, or answering on our master socket as that pid, is ours.
        let ours = cmdline_has(pid, &self.paths.pid_file)
            || self.show_proc().is_ok_and(|p| p.master.pid == pid);
        ours.then_some(pid)
    }

    /// Reaps our child if it exited, so it never lingers as a zombie.
    fn reap(&mut self) {
        if let Some(child) = &mut self.child {
            if !matches!(child.try_wait(), Ok(None)) {
                self.child = None;
            }
        }
    }

    fn has_exited(&mut self, pid: u32) -> Option<ExitStatus> {
        match &mut self.child {
            Some(child) if child.id() == pid => match child.try_wait() {
                Ok(None) => None,
                Ok(Some(status)) => {
                    self.child = None;
                    Some(status)
                }
                Err(_) => {
                    self.child = None;
                    Some(ExitStatus::default())
                }
            },
            _ => (!alive(pid)).then(ExitStatus::default),
        }
    }

    fn spawn(&mut self) -> Result<(u32, u64), ProcessError> {
        let p = &self.paths;
        // Checked here: through setsid(1) a missing binary would only show as an exit.
        if !program_exists(&p.binary) {
            return Err(ProcessError::Spawn {
                binary: p.binary.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such program"),
            });
        }
        for path in [&p.master_socket, &p.pid_file, &p.config_file] {
            if path
                .to_string_lossy()
                .contains(|c: char| c == ',' || c.is_whitespace())
            {
                return Err(ProcessError::UnusablePath(path.clone()));
            }
        }
        let log_err = |source| ProcessError::OpenLog {
            path: p.log_file.clone(),
            source,
        };
        if let Some(dir) = p.log_file.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(log_err)?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&p.log_file)
            .map_err(log_err)?;
        let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let stderr = log.try_clone().map_err(log_err)?;
        let mut cli = p.master_socket.clone().into_os_string();
        cli.push(",mode,600");
        // HAProxy gets a session (and process group) of its own: a Ctrl-C or a service
        // manager's SIGTERM to the worker's group does not reach it, and its group is
        // orphaned, so the kernel drops job-control stops. That matters: a new worker that
        // fails its start-up sends SIGTTIN to the old worker (resume your listeners), and an
        // old worker already tearing down (default handlers) would otherwise stop for good,
        // the master waiting on it forever (seen with 2.6.12). setsid(1) execs in place when
        // not a group leader, so the pid we hold is the master's; setsid(2) itself would
        // need `unsafe` pre_exec.
        let mut cmd = match setsid_program() {
            Some(setsid) => {
                let mut cmd = Command::new(setsid);
                cmd.arg(&p.binary);
                cmd
            }
            None => {
                let mut cmd = Command::new(&p.binary);
                cmd.process_group(0);
                cmd
            }
        };
        let child = cmd
            .arg("-W")
            .arg("-db")
            .arg("-f")
            .arg(&p.config_file)
            .arg("-p")
            .arg(&p.pid_file)
            .arg("-S")
            .arg(cli)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                binary: p.binary.clone(),
                source,
            })?;
        let pid = child.id();
        self.child = Some(child);
        Ok((pid, offset))
    }

    /// Waits until the master `pid` answers with a worker running.
    fn wait_ready(&mut self, pid: u32, offset: u64) -> Result<(), ProcessError> {
        let deadline = Instant::now() + self.timeouts.start;
        loop {
            if let Some(status) = self.has_exited(pid) {
                return Err(ProcessError::StartExited {
                    status,
                    alerts: self.alerts_since(offset, None),
                });
            }
            let ready = self.show_proc().is_ok_and(|p| {
                p.master.pid == pid && p.workers.iter().any(|w| self.worker_answers(w.pid))
            });
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let alerts = self.alerts_since(offset, None);
                self.kill_group(pid);
                return Err(ProcessError::StartTimeout {
                    timeout: self.timeouts.start,
                    alerts,
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// True when the stats socket answers from worker `pid`: it got past its own start-up
    /// (chroot, privileges) and serves. Without a known stats socket, assumed.
    fn worker_answers(&self, pid: u32) -> bool {
        let Some(path) = &self.paths.stats_socket else {
            return true;
        };
        StatsSocket::new(path, self.timeouts.cli)
            .show_info()
            .is_ok_and(|info| info.get("Pid").is_some_and(|p| *p == pid.to_string()))
    }

    /// Waits until an already running master (`pid`, left by an earlier worker process)
    /// answers with a worker. False if it exited meanwhile (then a new one is started).
    fn wait_adopted(&mut self, pid: u32) -> Result<bool, ProcessError> {
        let deadline = Instant::now() + self.timeouts.start;
        let mut workerless_since: Option<Instant> = None;
        loop {
            if self.has_exited(pid).is_some() {
                return Ok(false);
            }
            let source = match self.show_proc() {
                Ok(p) if p.master.pid == pid && !p.workers.is_empty() => return Ok(true),
                Ok(_) => {
                    // A master answering without a current worker serves nothing new: it is
                    // going down (`exit-on-failure`), possibly waiting forever on a stopped
                    // old worker (see `spawn`). Replace it.
                    let since = *workerless_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= NEW_WORKER_GRACE {
                        self.kill_group(pid);
                        if self.has_exited(pid).is_none() {
                            return Err(ProcessError::StopTimeout {
                                pid,
                                timeout: KILL_WAIT,
                            });
                        }
                        return Ok(false);
                    }
                    StatsError::Unexpected {
                        command: "show proc".into(),
                        reason: "the master has no worker".into(),
                    }
                }
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(ProcessError::Unresponsive { pid, source });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// SIGKILL to the master's process group (its workers with it), then reap.
    fn kill_group(&mut self, pid: u32) {
        let pid_t = Pid::from_raw(pid as i32);
        // Only a master in its own group is killed by group: never the worker's own group.
        if getpgid(Some(pid_t)) == Ok(pid_t) {
            let _ = killpg(pid_t, Signal::SIGKILL);
        } else {
            let _ = kill(pid_t, Signal::SIGKILL);
        }
        let deadline = Instant::now() + KILL_WAIT;
        while self.has_exited(pid).is_none() && Instant::now() < deadline {
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// HAProxy's alerts in the log since `offset`: the `[ALERT]` lines of `pid` (the
    /// master; all pids if `None`), else any `[ALERT]`, else the master's `[WARNING]`s,
    /// else the last lines written.
    fn alerts_since(&self, offset: u64, pid: Option<u32>) -> String {
        let text = read_log_from(&self.paths.log_file, offset);
        let mut lines = messages(&text, pid, &["[ALERT]"]);
        if lines.is_empty() {
            lines = messages(&text, None, &["[ALERT]"]);
        }
        if lines.is_empty() {
            lines = messages(&text, pid, &["[WARNING]"]);
        }
        if lines.is_empty() {
            let all: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            lines = all[all.len().saturating_sub(5)..]
                .iter()
                .map(|l| l.to_string())
                .collect();
        }
        if lines.is_empty() {
            format!("nothing in {}", self.paths.log_file.display())
        } else {
            lines.join("; ")
        }
    }

    /// Stops the master of this state dir; returns its pid, or `None` if none was running.
    pub fn stop_master(&mut self) -> Result<Option<u32>, ProcessError> {
        let stopped = match self.master_pid() {
            None => None,
            Some(pid) => {
                match kill(Pid::from_raw(pid as i32), Signal::SIGTERM) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(source) => return Err(ProcessError::Signal { pid, source }),
                }
                let deadline = Instant::now() + self.timeouts.stop;
                while self.has_exited(pid).is_none() {
                    if Instant::now() >= deadline {
                        self.kill_group(pid);
                        if self.has_exited(pid).is_none() {
                            return Err(ProcessError::StopTimeout {
                                pid,
                                timeout: self.timeouts.stop,
                            });
                        }
                        break;
                    }
                    thread::sleep(POLL_INTERVAL);
                }
                Some(pid)
            }
        };
        self.reap();
        // HAProxy leaves both behind; a stale pid file must not name a reused pid later.
        for path in [&self.paths.pid_file, &self.paths.master_socket] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ProcessError::Cleanup {
                        path: path.clone(),
                        source,
                    })
                }
            }
        }
        Ok(stopped)
    }
}

impl Process for Managed {
    fn is_running(&mut self) -> bool {
        self.master_pid().is_some() && self.show_proc().is_ok_and(|p| !p.workers.is_empty())
    }

    fn start(&mut self) -> Result<(), ProcessError> {
        if let Some(pid) = self.master_pid() {
            if self.wait_adopted(pid)? {
                return Ok(());
            }
        }
        let (pid, offset) = self.spawn()?;
        self.wait_ready(pid, offset)
    }

    fn reload(&mut self) -> Result<(), ProcessError> {
        let pid = self.master_pid().ok_or(ProcessError::NotRunning)?;
        let before = self.show_proc().map_err(ProcessError::MasterCli)?;
        let offset = log_len(&self.paths.log_file);
        if self.master_cli().send_only("reload").is_err() {
            kill(Pid::from_raw(pid as i32), Signal::SIGUSR2)
                .map_err(|source| ProcessError::Signal { pid, source })?;
        }
        let deadline = Instant::now() + self.timeouts.reload;
        let mut reloaded_without_worker: Option<Instant> = None;
        let is_new = |w: &&WorkerProc| !before.workers.iter().any(|b| b.pid == w.pid);
        loop {
            // A worker failing its own start-up (chroot, setuid) makes the master kill
            // everything and exit (`exit-on-failure`).
            if self.has_exited(pid).is_some() {
                return Err(ProcessError::ExitedDuringReload {
                    alerts: self.alerts_since(offset, None),
                });
            }
            // Until the re-executed master runs, its socket refuses connections.
            if let Ok(now) = self.show_proc() {
                if now.master.reloads > before.master.reloads {
                    match now.workers.iter().find(is_new) {
                        Some(worker) if self.worker_answers(worker.pid) => return Ok(()),
                        Some(_) => {}
                        None => {
                            // The master lists its new worker from its first answer on, so
                            // a reload counted as good without one means it died at once.
                            let since = *reloaded_without_worker.get_or_insert_with(Instant::now);
                            let refused = now.master.failed_reloads > 0;
                            if refused || since.elapsed() >= NEW_WORKER_GRACE {
                                // A refused load is explained by the master's lines, a dead
                                // new worker by its own.
                                return Err(ProcessError::ReloadFailed {
                                    alerts: self.alerts_since(offset, refused.then_some(pid)),
                                    serving: !now.workers.is_empty(),
                                });
                            }
                        }
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(ProcessError::ReloadTimeout {
                    timeout: self.timeouts.reload,
                    alerts: self.alerts_since(offset, None),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn stop(&mut self) -> Result<(), ProcessError> {
        self.stop_master().map(|_| ())
    }
}

/// Stops the managed HAProxy recorded in the state dir of `settings`, whoever started it
/// (for `libra-worker haproxy stop`). Returns the master's pid, or `None` if none ran.
pub fn stop_by_state_dir(
    settings: &HaproxySettings,
    timeouts: Timeouts,
) -> Result<Option<u32>, ProcessError> {
    Managed::new(ManagedPaths::from_settings(settings))
        .with_timeouts(timeouts)
        .stop_master()
}

/// HAProxy owned by the init system (the reference worker's style): configured commands,
/// run without a shell and bounded; "running" means the stats socket answers.
#[derive(Debug)]
pub struct Service {
    start_cmd: Vec<String>,
    stop_cmd: Vec<String>,
    reload_cmd: Vec<String>,
    stats: StatsSocket,
    timeouts: Timeouts,
}

impl Service {
    /// Each command is bounded by `timeouts.command`; the wait for the stats socket to
    /// answer afterwards by `timeouts.start` / `timeouts.reload`, to go quiet by `timeouts.stop`.
    pub fn new(
        start_cmd: Vec<String>,
        stop_cmd: Vec<String>,
        reload_cmd: Vec<String>,
        stats: StatsSocket,
        timeouts: Timeouts,
    ) -> Self {
        Service {
            start_cmd,
            stop_cmd,
            reload_cmd,
            stats,
            timeouts,
        }
    }

    fn run(&self, argv: &[String]) -> Result<(), ProcessError> {
        command::run(argv, self.timeouts.command)
            .map(|_| ())
            .map_err(|e| match command::sudo_refusal(&e) {
                Some(text) => ProcessError::SudoRefused(text),
                None => ProcessError::ServiceCommand(e),
            })
    }

    /// The process answering on the stats socket now, if any.
    fn serving_pid(&self) -> Option<String> {
        self.stats.show_info().ok()?.remove("Pid")
    }

    /// Waits until a process other than `previous` answers on the stats socket.
    fn wait_answering(
        &self,
        argv: &[String],
        timeout: Duration,
        previous: Option<&str>,
    ) -> Result<(), ProcessError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.stats.show_info() {
                Ok(info) => match (previous, info.get("Pid")) {
                    (Some(old), Some(pid)) if pid == old => {
                        if Instant::now() >= deadline {
                            return Err(ProcessError::ServiceNotReloaded {
                                command: command::display(argv),
                                socket: self.stats.path().to_path_buf(),
                                pid: old.to_string(),
                                timeout,
                            });
                        }
                        thread::sleep(POLL_INTERVAL);
                    }
                    _ => return Ok(()),
                },
                Err(source) if Instant::now() >= deadline => {
                    return Err(ProcessError::ServiceNotAnswering {
                        command: command::display(argv),
                        socket: self.stats.path().to_path_buf(),
                        source,
                    })
                }
                Err(_) => thread::sleep(POLL_INTERVAL),
            }
        }
    }
}

impl Process for Service {
    fn is_running(&mut self) -> bool {
        self.stats.show_info().is_ok()
    }

    fn start(&mut self) -> Result<(), ProcessError> {
        if self.is_running() {
            return Ok(());
        }
        self.run(&self.start_cmd)?;
        self.wait_answering(&self.start_cmd, self.timeouts.start, None)
    }

    /// Done when a new process answers: every init system's reload (a new master-worker
    /// worker, `-sf`, a restart) replaces the serving process, and the old one goes on
    /// answering on the socket until then, so "it answers" alone would say PASS before the
    /// new configuration serves, or when HAProxy refused it.
    fn reload(&mut self) -> Result<(), ProcessError> {
        let previous = self.serving_pid();
        self.run(&self.reload_cmd)?;
        self.wait_answering(&self.reload_cmd, self.timeouts.reload, previous.as_deref())
    }

    fn stop(&mut self) -> Result<(), ProcessError> {
        self.run(&self.stop_cmd)?;
        let deadline = Instant::now() + self.timeouts.stop;
        while self.is_running() {
            if Instant::now() >= deadline {
                return Err(ProcessError::ServiceStillRunning {
                    command: command::display(&self.stop_cmd),
                    socket: self.stats.path().to_path_buf(),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
        Ok(())
    }
}

/// True if `program` names an existing file, directly or through `PATH`.
fn program_exists(program: &Path) -> bool {
    if program.components().count() > 1 {
        return program.is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// util-linux `setsid` (Essential on Debian), if installed.
fn setsid_program() -> Option<&'static Path> {
    SETSID_PROGRAMS.iter().map(Path::new).find(|p| p.is_file())
}

fn read_pid_file(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim()
        .parse()
        .ok()
        .filter(|&pid| pid > 1 && pid <= i32::MAX as u32)
}

/// True while `pid` exists and is not a zombie (an exited process nobody reaped yet).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the command name, which ends at the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => kill(Pid::from_raw(pid as i32), None).is_ok(),
    }
}

/// True if process `pid` was started with `arg` among its arguments.
fn cmdline_has(pid: u32, arg: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let arg = arg.as_os_str().as_encoded_bytes();
    cmdline.split(|&b| b == 0).any(|a| a == arg)
}

fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The log from `offset` (from the start if it was truncated since), at most `MAX_LOG_READ`.
fn read_log_from(path: &Path, offset: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = if offset > len {
        0
    } else {
        offset.max(len.saturating_sub(MAX_LOG_READ))
    };
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err()
        || file.take(MAX_LOG_READ).read_to_end(&mut bytes).is_err()
    {
        return String::new();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A real HAProxy in a temp dir for tests, killed on drop even when the test fails.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    pub const HAPROXY: &str = "/usr/sbin/haproxy";

    pub fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// A TCP echo server on a free port, the backend of the test configurations.
    pub fn echo_server() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    /// Sends `text` on `conn` and reads the echo back.
    pub fn echo(conn: &mut TcpStream, text: &str) -> String {
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.write_all(text.as_bytes()).unwrap();
        let mut buf = vec![0u8; text.len()];
        conn.read_exact(&mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    /// A new connection to `port` echoes through HAProxy.
    pub fn serves(port: u16) -> bool {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut conn) => {
                conn.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                conn.write_all(b"ping").is_ok() && {
                    let mut buf = [0u8; 4];
                    conn.read_exact(&mut buf).is_ok() && &buf == b"ping"
                }
            }
            Err(_) => false,
        }
    }

    pub fn config_text(dir: &Path, binds: &[u16], backend: u16) -> String {
        let d = dir.display();
        let binds: String = binds
            .iter()
            .map(|p| format!("    bind 127.0.0.1:{p}\n"))
            .collect();
        format!(
            "global\n    stats socket {d}/stats.sock mode 600 level admin expose-fd listeners\n    \
             log stdout format raw local0\n    server-state-file {d}/server-state\n\n\
             defaults\n    log global\n    mode tcp\n    option tcplog\n    timeout connect 5s\n    \
             timeout client 30s\n    timeout server 30s\n    load-server-state-from-file global\n\n\
             frontend x-in\n{binds}    default_backend x-servers\n\n\
             backend x-servers\n    balance roundrobin\n    server id-1 127.0.0.1:{backend} check inter 1s\n"
        )
    }

    pub fn paths(dir: &Path) -> ManagedPaths {
        ManagedPaths {
            binary: PathBuf::from(HAPROXY),
            config_file: dir.join("haproxy.cfg"),
            pid_file: dir.join("haproxy.pid"),
            master_socket: dir.join(MASTER_SOCKET_NAME),
            log_file: dir.join("haproxy.log"),
            stats_socket: Some(dir.join("stats.sock")),
        }
    }

    pub fn fast_timeouts() -> Timeouts {
        Timeouts {
            start: Duration::from_secs(20),
            reload: Duration::from_secs(20),
            stop: Duration::from_secs(10),
            cli: Duration::from_secs(2),
            command: Duration::from_secs(20),
        }
    }

    pub struct TestHaproxy {
        pub dir: tempfile::TempDir,
        pub managed: Managed,
        /// The frontend port of the first configuration.
        pub port: u16,
        pub backend: u16,
        masters: Vec<u32>,
    }

    impl TestHaproxy {
        /// Writes a configuration with one frontend on a free port; does not start it.
        pub fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let backend = echo_server();
            let port = free_port();
            std::fs::write(
                dir.path().join("haproxy.cfg"),
                config_text(dir.path(), &[port], backend),
            )
            .unwrap();
            let managed = Managed::new(paths(dir.path())).with_timeouts(fast_timeouts());
            TestHaproxy {
                dir,
                managed,
                port,
                backend,
                masters: Vec::new(),
            }
        }

        pub fn started() -> Self {
            let mut h = TestHaproxy::new();
            h.managed.start().unwrap();
            h.track();
            h
        }

        /// Remembers the current master so that drop kills it whatever happened.
        pub fn track(&mut self) {
            if let Some(pid) = self.managed.master_pid() {
                self.masters.push(pid);
            }
        }

        pub fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        pub fn write_config(&self, binds: &[u16]) {
            std::fs::write(
                self.path("haproxy.cfg"),
                config_text(self.dir.path(), binds, self.backend),
            )
            .unwrap();
        }

        pub fn stats(&self) -> StatsSocket {
            StatsSocket::new(self.path("stats.sock"), Duration::from_secs(2))
        }

        pub fn master_env(&self, pid: u32) -> String {
            String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
                .replace('\0', "\n")
        }
    }

    impl Drop for TestHaproxy {
        fn drop(&mut self) {
            let _ = self.managed.stop();
            let pid_file = self.path("haproxy.pid");
            for &pid in &self.masters {
                if alive(pid) && cmdline_has(pid, &pid_file) {
                    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use proptest::prelude::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::fs::PermissionsExt;

    /// `show proc` of HAProxy 2.6.12 while an old worker still holds a connection.
    const SHOW_PROC_RELOADED: &str =
        "#<PID>          <type>          <reloads>       <uptime>        <version>      \n\
        1405            master          2 [failed: 0]   0d00h05m09s     2.6.12-1+deb12u4\n\
        # workers\n\
        8790            worker          0               0d00h00m00s     2.6.12-1+deb12u4\n\
        # old workers\n\
        8704            worker          1               0d00h00m08s     2.6.12-1+deb12u4\n\
        # programs\n\n";

    /// `show proc` of HAProxy 2.6.12 after a failed reload (master in wait mode).
    const SHOW_PROC_FAILED: &str =
        "#<PID>          <type>          <reloads>       <uptime>        <version>      \n\
        14050           master          2 [failed: 1]   0d00h10m44s     2.6.12-1+deb12u4\n\
        # workers\n\
        32097           worker          1               0d00h00m10s     2.6.12-1+deb12u4\n\
        # programs\n\n";

    #[test]
    fn show_proc_parses() {
        let p = parse_show_proc(SHOW_PROC_RELOADED).unwrap();
        assert_eq!(
            p.master,
            MasterProc {
                pid: 1405,
                reloads: 2,
                failed_reloads: 0
            }
        );
        assert_eq!(
            p.workers,
            vec![WorkerProc {
                pid: 8790,
                reloads: 0
            }]
        );
        assert_eq!(
            p.old_workers,
            vec![WorkerProc {
                pid: 8704,
                reloads: 1
            }]
        );
        let p = parse_show_proc(SHOW_PROC_FAILED).unwrap();
        assert_eq!(
            p.master,
            MasterProc {
                pid: 14050,
                reloads: 2,
                failed_reloads: 1
            }
        );
        assert_eq!(
            p.workers,
            vec![WorkerProc {
                pid: 32097,
                reloads: 1
            }]
        );
        assert!(p.old_workers.is_empty());
        assert!(parse_show_proc("").is_err());
        assert!(parse_show_proc("Unknown command.\n").is_err());
    }

    proptest! {
        #[test]
        fn show_proc_parser_never_panics(text in "\\PC*(\n\\PC*){0,6}") {
            let _ = parse_show_proc(&text);
            let _ = parse_show_proc(&format!("1 master {text}"));
        }
    }

    #[test]
    fn validate_passes_haproxy_alerts_through() {
        let h = TestHaproxy::new();
        validate(Path::new(HAPROXY), &h.path("haproxy.cfg")).unwrap();
        let bad = h.path("bad.cfg");
        std::fs::write(
            &bad,
            config_text(h.dir.path(), &[h.port], h.backend)
                .replace("balance roundrobin", "balance bogus")
                + "    bogusline here\n",
        )
        .unwrap();
        let err = validate(Path::new(HAPROXY), &bad).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ProcessError::Invalid { .. }), "{err:?}");
        assert!(
            text.starts_with("HAProxy rejected the configuration: balance only supports"),
            "{text}"
        );
        assert!(text.contains("[HAProxy said: [ALERT]"), "{text}");
        assert!(
            text.contains("balance only supports 'roundrobin'"),
            "{text}"
        );
        assert!(
            text.contains("unknown keyword 'bogusline' in 'backend' section"),
            "{text}"
        );
        assert!(!text.contains("[NOTICE]"), "{text}");
        let err = validate(Path::new("/nonexistent/haproxy"), &bad).unwrap_err();
        assert!(
            matches!(err, ProcessError::Check(CommandError::Spawn { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn start_serve_stop() {
        let mut h = TestHaproxy::started();
        assert!(h.managed.is_running());
        let pid = h.managed.master_pid().unwrap();
        assert_eq!(read_pid_file(&h.path("haproxy.pid")), Some(pid));
        // Its own process group: signals to the worker's group do not reach it.
        let group = getpgid(Some(Pid::from_raw(pid as i32))).unwrap();
        assert_eq!(group.as_raw() as u32, pid);
        assert_ne!(group, getpgid(None).unwrap());
        let session = nix::unistd::getsid(Some(Pid::from_raw(pid as i32))).unwrap();
        assert_eq!(session.as_raw() as u32, pid);
        let mode = std::fs::metadata(h.path("haproxy.log"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut conn = TcpStream::connect(("127.0.0.1", h.port)).unwrap();
        assert_eq!(echo(&mut conn, "hello"), "hello");
        drop(conn);
        // `log stdout format raw` traffic logs land in the log file.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(h.path("haproxy.log"))
            .unwrap()
            .contains("x-in x-servers/id-1")
        {
            assert!(
                Instant::now() < deadline,
                "no traffic log line in {}",
                std::fs::read_to_string(h.path("haproxy.log")).unwrap()
            );
            thread::sleep(POLL_INTERVAL);
        }
        // Starting again adopts, it does not start a second HAProxy.
        h.managed.start().unwrap();
        assert_eq!(h.managed.master_pid(), Some(pid));

        assert_eq!(h.managed.stop_master().unwrap(), Some(pid));
        assert!(!h.managed.is_running());
        assert!(!h.path("haproxy.pid").exists());
        assert!(
            TcpStream::connect(("127.0.0.1", h.port)).is_err(),
            "port still accepts after stop"
        );
        assert!(!alive(pid));
        // Idempotent.
        assert_eq!(h.managed.stop_master().unwrap(), None);
        h.managed.stop().unwrap();
        // And it starts again in the same state dir (stale socket files are no problem).
        h.managed.start().unwrap();
        h.track();
        assert!(serves(h.port));
    }

    #[test]
    fn start_failure_reports_haproxy_alerts() {
        let mut h = TestHaproxy::new();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        h.write_config(&[taken_port]);
        let err = h.managed.start().unwrap_err();
        h.track();
        let text = err.to_string();
        assert!(matches!(err, ProcessError::StartExited { .. }), "{err:?}");
        assert!(
            text.contains("cannot bind socket (Address already in use)"),
            "{text}"
        );
        assert!(text.contains(&format!("127.0.0.1:{taken_port}")), "{text}");
        assert!(!h.managed.is_running());
        assert!(h.managed.child.is_none(), "exited child not reaped");
    }

    #[test]
    fn missing_binary_is_a_spawn_error() {
        let h = TestHaproxy::new();
        let mut p = paths(h.dir.path());
        p.binary = PathBuf::from("/nonexistent/haproxy");
        let err = Managed::new(p.clone()).start().unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot start /nonexistent/haproxy: no such program"
        );
        p.binary = PathBuf::from("no-such-haproxy-in-path");
        assert!(matches!(
            Managed::new(p).start(),
            Err(ProcessError::Spawn { .. })
        ));
    }

    #[test]
    fn reload_keeps_established_connections() {
        let mut h = TestHaproxy::started();
        let mut conn = TcpStream::connect(("127.0.0.1", h.port)).unwrap();
        assert_eq!(echo(&mut conn, "before"), "before");
        let before = h.managed.show_proc().unwrap();
        let second = free_port();
        h.write_config(&[h.port, second]);
        h.managed.reload().unwrap();
        let after = h.managed.show_proc().unwrap();
        assert_eq!(after.master.pid, before.master.pid);
        assert_eq!(after.master.reloads, before.master.reloads + 1);
        assert_ne!(after.workers[0].pid, before.workers[0].pid);
        // The old worker drains the open connection, which keeps working.
        assert!(
            after
                .old_workers
                .iter()
                .any(|w| w.pid == before.workers[0].pid),
            "{after:?}"
        );
        assert_eq!(echo(&mut conn, "after reload"), "after reload");
        assert!(h
            .master_env(after.master.pid)
            .contains("HAPROXY_MWORKER_WAIT_ONLY=1"));
        assert!(serves(h.port));
        assert!(serves(second));
        drop(conn);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !h.managed.show_proc().unwrap().old_workers.is_empty() {
            assert!(
                Instant::now() < deadline,
                "old worker did not exit after its connection closed"
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    #[test]
    fn failed_reload_reports_cannot_bind_and_old_worker_keeps_serving() {
        let mut h = TestHaproxy::started();
        let good = std::fs::read_to_string(h.path("haproxy.cfg")).unwrap();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let mut conn = TcpStream::connect(("127.0.0.1", h.port)).unwrap();
        let before = h.managed.show_proc().unwrap();
        h.write_config(&[h.port, taken_port]);
        // `haproxy -c` does not see a port taken by another process.
        validate(Path::new(HAPROXY), &h.path("haproxy.cfg")).unwrap();

        let err = h.managed.reload().unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, ProcessError::ReloadFailed { serving: true, .. }),
            "{err:?}"
        );
        assert!(
            text.starts_with(
                "HAProxy reload failed (the previous configuration serves on): Binding ["
            ),
            "{text}"
        );
        assert!(
            text.contains("cannot bind socket (Address already in use)"),
            "{text}"
        );
        assert!(
            text.contains(&format!("[127.0.0.1:{taken_port}]")),
            "{text}"
        );
        // Only the master's alerts: not the old worker's messages.
        assert!(
            !text.contains("Paused") && !text.contains("Resumed"),
            "{text}"
        );

        // The old worker still serves, old and new connections alike.
        assert_eq!(echo(&mut conn, "still here"), "still here");
        assert!(serves(h.port));
        let failed = h.managed.show_proc().unwrap();
        assert_eq!(failed.master.pid, before.master.pid);
        assert_eq!(failed.master.failed_reloads, 1);
        assert_eq!(
            failed.workers.iter().map(|w| w.pid).collect::<Vec<_>>(),
            before.workers.iter().map(|w| w.pid).collect::<Vec<_>>()
        );
        assert!(h.managed.is_running());
        // The master is in wait mode, as after every load.
        assert!(h
            .master_env(failed.master.pid)
            .contains("HAPROXY_MWORKER_WAIT_ONLY=1"));

        // Reloading the same file fails again: wait mode re-reads the file.
        let err = h.managed.reload().unwrap_err();
        assert!(err.to_string().contains("cannot bind socket"), "{err}");
        assert_eq!(h.managed.show_proc().unwrap().master.failed_reloads, 2);

        // Restoring the previous file and reloading works and leaves wait mode.
        std::fs::write(h.path("haproxy.cfg"), good).unwrap();
        h.managed.reload().unwrap();
        let restored = h.managed.show_proc().unwrap();
        assert_eq!(restored.master.failed_reloads, 0);
        assert_ne!(restored.workers[0].pid, before.workers[0].pid);
        assert_eq!(echo(&mut conn, "after restore"), "after restore");
        assert!(serves(h.port));
        drop(taken);
    }

    #[test]
    fn check_bindable_sees_ports_of_other_processes() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_addr = taken.local_addr().unwrap();
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        check_bindable(&[free]).unwrap();
        let err = check_bindable(&[free, taken_addr]).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "cannot listen on {taken_addr}: Address already in use"
            )),
            "{err}"
        );
        // A port our own HAProxy listens on passes: HAProxy shares it (SO_REUSEPORT).
        let mut h = TestHaproxy::started();
        let ours = ([127, 0, 0, 1], h.port).into();
        check_bindable(&[ours]).unwrap();
        h.write_config(&[h.port, free.port()]);
        h.managed.reload().unwrap();
        assert!(serves(free.port()));
    }

    #[test]
    fn reloads_under_traffic_refuse_nothing() {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        use std::sync::Arc;
        let mut h = TestHaproxy::started();
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let clients: Vec<_> = (0..2)
            .map(|_| {
                let (stop, ok, failed, port) = (stop.clone(), ok.clone(), failed.clone(), h.port);
                thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let counter = if serves(port) { &ok } else { &failed };
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for _ in 0..10 {
            h.managed.reload().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for client in clients {
            client.join().unwrap();
        }
        assert_eq!(failed.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert!(ok.load(std::sync::atomic::Ordering::Relaxed) > 10);
    }

    #[test]
    fn haproxy_outlives_the_worker_and_is_adopted() {
        let mut h = TestHaproxy::started();
        let pid = h.managed.master_pid().unwrap();
        // The worker goes away (crash, upgrade) without stopping HAProxy.
        let crashed = std::mem::replace(
            &mut h.managed,
            Managed::new(paths(h.dir.path())).with_timeouts(fast_timeouts()),
        );
        drop(crashed);
        assert!(serves(h.port));
        // A new worker process finds it through the state dir and uses it.
        assert!(h.managed.is_running());
        h.managed.start().unwrap();
        assert_eq!(h.managed.master_pid(), Some(pid));
        assert_eq!(h.managed.show_proc().unwrap().master.pid, pid);
        h.managed.reload().unwrap();
        assert!(serves(h.port));

        // `libra-worker haproxy stop` stops it, whoever started it.
        let settings = HaproxySettings {
            mode: HaproxyMode::Managed,
            binary: PathBuf::from(HAPROXY),
            state_dir: h.dir.path().to_path_buf(),
            bind_address: "127.0.0.1".into(),
            config_file: h.path("haproxy.cfg"),
            logfile: h.path("haproxy.log"),
            statsfile: h.path("metrics.json"),
            stats_socket: h.path("stats.sock"),
            pid_file: h.path("haproxy.pid"),
            start_cmd: vec![],
            stop_cmd: vec![],
            reload_cmd: vec![],
            runtime_api: true,
            sudo: vec![],
            sudo_setting: None,
            reference_statsfile: None,
            maxconn: 50_000,
            hard_stop_after: None,
            max_old_workers: 10,
        };
        assert_eq!(
            stop_by_state_dir(&settings, fast_timeouts()).unwrap(),
            Some(pid)
        );
        assert!(!h.managed.is_running());
        assert!(TcpStream::connect(("127.0.0.1", h.port)).is_err());
        assert_eq!(stop_by_state_dir(&settings, fast_timeouts()).unwrap(), None);
    }

    #[test]
    fn worker_start_failure_during_reload_stops_haproxy() {
        let mut h = TestHaproxy::started();
        let good = std::fs::read_to_string(h.path("haproxy.cfg")).unwrap();
        // Valid for `haproxy -c`; only the new worker finds out, after the fork.
        let bad = good.replacen("global\n", "global\n    chroot /nonexistent-dir\n", 1);
        std::fs::write(h.path("haproxy.cfg"), &bad).unwrap();
        validate(Path::new(HAPROXY), &h.path("haproxy.cfg")).unwrap();
        let err = h.managed.reload().unwrap_err();
        let text = err.to_string();
        // The master kills everything (`exit-on-failure`) and exits.
        assert!(
            matches!(err, ProcessError::ExitedDuringReload { .. }),
            "{err:?}"
        );
        assert!(text.contains("Cannot chroot(/nonexistent-dir)"), "{text}");
        assert!(text.contains("exit-on-failure"), "{text}");
        // HAProxy is down: restore the previous file and start again.
        assert!(!h.managed.is_running());
        assert!(TcpStream::connect(("127.0.0.1", h.port)).is_err());
        std::fs::write(h.path("haproxy.cfg"), good).unwrap();
        h.managed.start().unwrap();
        h.track();
        assert!(serves(h.port));
    }

    #[test]
    fn lost_pid_file_master_found_through_its_socket() {
        let mut h = TestHaproxy::started();
        let pid = h.managed.master_pid().unwrap();
        std::fs::remove_file(h.path("haproxy.pid")).unwrap();
        let mut other = Managed::new(paths(h.dir.path())).with_timeouts(fast_timeouts());
        assert_eq!(other.master_pid(), Some(pid));
        assert!(other.is_running());
        assert_eq!(other.stop_master().unwrap(), Some(pid));
        assert!(!h.managed.is_running());
    }

    #[test]
    fn stale_pid_file_is_not_trusted() {
        let mut h = TestHaproxy::new();
        // Our own pid: alive, but not a HAProxy of this state dir.
        std::fs::write(h.path("haproxy.pid"), format!("{}\n", std::process::id())).unwrap();
        assert_eq!(h.managed.master_pid(), None);
        assert!(!h.managed.is_running());
        assert!(matches!(h.managed.reload(), Err(ProcessError::NotRunning)));
        assert_eq!(h.managed.stop_master().unwrap(), None);
        assert!(!h.path("haproxy.pid").exists());
        h.managed.start().unwrap();
        h.track();
        assert!(serves(h.port));
    }

    mod service {
        use super::*;

        fn script(dir: &Path, name: &str, body: &str) -> Vec<String> {
            let path = dir.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            vec!["sh".into(), path.display().to_string()]
        }

        fn service(
            dir: &Path,
            start: &str,
            stop: &str,
            reload: &str,
            timeout: Duration,
        ) -> Service {
            Service::new(
                script(dir, "start.sh", start),
                script(dir, "stop.sh", stop),
                script(dir, "reload.sh", reload),
                StatsSocket::new(dir.join("stats.sock"), Duration::from_secs(1)),
                Timeouts {
                    start: timeout,
                    reload: timeout,
                    stop: timeout,
                    cli: Duration::from_secs(1),
                    command: timeout,
                },
            )
        }

        #[test]
        fn command_that_hangs_times_out() {
            let dir = tempfile::tempdir().unwrap();
            let mut s = service(
                dir.path(),
                "sleep 60",
                "true",
                "true",
                Duration::from_millis(500),
            );
            let started = Instant::now();
            let err = s.start().unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(5));
            assert_eq!(
                err.to_string(),
                format!(
                    "`sh {}/start.sh` timed out after 0.5 s",
                    dir.path().display()
                )
            );
        }

        #[test]
        fn failing_command_reports_status_and_output() {
            let dir = tempfile::tempdir().unwrap();
            let mut s = service(
                dir.path(),
                "true",
                "true",
                "echo 'Job for haproxy.service failed.' >&2; exit 1",
                Duration::from_secs(5),
            );
            let text = s.reload().unwrap_err().to_string();
            assert!(
                text.contains(
                    "reload.sh` failed (exit status: 1): Job for haproxy.service failed."
                ),
                "{text}"
            );
        }

        #[test]
        fn start_that_does_not_bring_haproxy_up_fails() {
            let dir = tempfile::tempdir().unwrap();
            let mut s = service(
                dir.path(),
                "true",
                "true",
                "true",
                Duration::from_millis(300),
            );
            assert!(!s.is_running());
            let err = s.start().unwrap_err();
            assert!(
                matches!(err, ProcessError::ServiceNotAnswering { .. }),
                "{err:?}"
            );
            assert!(err.to_string().contains("HAProxy is not running"), "{err}");
        }

        /// A daemonised HAProxy run by init-script-like commands.
        #[test]
        fn real_haproxy_through_commands() {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let (port, backend) = (free_port(), echo_server());
            std::fs::write(d.join("haproxy.cfg"), config_text(d, &[port], backend)).unwrap();
            let pid_file = d.join("haproxy.pid");
            let base = format!(
                "{HAPROXY} -D -f {d}/haproxy.cfg -p {d}/haproxy.pid",
                d = d.display()
            );
            let mut s = service(
                d,
                &base,
                &format!(
                    "kill $(cat {}) && rm -f {}",
                    pid_file.display(),
                    pid_file.display()
                ),
                &format!(
                    "{base} -x {}/stats.sock -sf $(cat {})",
                    d.display(),
                    pid_file.display()
                ),
                Duration::from_secs(20),
            );
            struct Kill(PathBuf);
            impl Drop for Kill {
                fn drop(&mut self) {
                    if let Some(pid) = read_pid_file(&self.0) {
                        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    }
                }
            }
            let _guard = Kill(pid_file.clone());
            s.start().unwrap();
            assert!(s.is_running());
            assert!(serves(port));
            s.start().unwrap(); // already running: nothing to do
            let second = free_port();
            std::fs::write(
                d.join("haproxy.cfg"),
                config_text(d, &[port, second], backend),
            )
            .unwrap();
            s.reload().unwrap();
            // Done means the new configuration serves.
            assert!(serves(second), "reloaded configuration not serving");
            // A reload that replaces nothing is not taken for one.
            let idle_dir = d.join("idle");
            std::fs::create_dir(&idle_dir).unwrap();
            let mut idle = Service::new(
                script(&idle_dir, "start.sh", "true"),
                script(&idle_dir, "stop.sh", "true"),
                script(&idle_dir, "reload.sh", "true"),
                StatsSocket::new(d.join("stats.sock"), Duration::from_secs(1)),
                Timeouts {
                    reload: Duration::from_millis(500),
                    ..Timeouts::default()
                },
            );
            let err = idle.reload().unwrap_err();
            assert!(
                matches!(err, ProcessError::ServiceNotReloaded { .. }),
                "{err:?}"
            );
            assert!(
                err.to_string()
                    .starts_with("HAProxy did not load the new configuration within 0.5 s"),
                "{err}"
            );
            s.stop().unwrap();
            assert!(!s.is_running());
        }
    }
}
