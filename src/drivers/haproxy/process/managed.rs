//! HAProxy run by the worker itself (`Managed`): master-worker mode, its files under the
//! state dir (`ManagedPaths`), in a session of its own so that it outlives the worker;
//! started, adopted, reloaded and stopped through its pid file, its master CLI and signals.
//! When a start or reload fails, HAProxy's own alerts are read back from its log
//! (`output_log`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{getpgid, Pid};

use super::super::runtime_api::StatsSocket;
use super::output_log;
use super::poll::{poll_until, POLL_INTERVAL};
use super::procfs::{alive, cmdline_has, read_pid_file};
use super::show_proc::{show_proc, ProcList, ShowProcError, WorkerProc};
use super::watch::Watch;
use super::{Process, ProcessError, StepTimeouts};
use crate::config::{resolve_program, HaproxySettings};

/// How long a reload may look done but without a new worker before it counts as failed.
const NEW_WORKER_GRACE: Duration = Duration::from_secs(1);

/// How long an old worker that the next reload would stop (`mworker-max-reloads`) may
/// take to finish on its own first: a keep-alive client between two requests, or one
/// waiting for its answer, finishes within it; a database session of hours does not, and
/// is stopped as the limit says.
const OLD_WORKER_GRACE: Duration = Duration::from_secs(1);

/// How long a SIGKILLed HAProxy may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// Where util-linux's `setsid` may be.
const SETSID_PROGRAMS: [&str; 2] = ["/usr/bin/setsid", "/bin/setsid"];

/// Name of the master CLI socket inside the state dir.
pub const MASTER_SOCKET_NAME: &str = crate::config::state_files::MASTER_SOCKET;

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
    timeouts: StepTimeouts,
    /// The master, when this process spawned it: kept to reap it (no zombie).
    child: Option<Child>,
    /// The `cat` that writes HAProxy's output to the log (see `spawn_logger`): kept to reap.
    logger: Option<Child>,
    /// The configuration's `mworker-max-reloads` (0: none): reloads an old worker lives
    /// through before the master stops it.
    max_old_workers: u32,
    /// Told of every master started or adopted, to report its exit at once.
    watch: Option<Watch>,
}

impl Managed {
    pub fn new(paths: ManagedPaths) -> Self {
        Managed {
            paths,
            timeouts: StepTimeouts::default(),
            child: None,
            logger: None,
            max_old_workers: 0,
            watch: None,
        }
    }

    /// The watch to arm on every master this starts or adopts.
    pub fn with_watch(mut self, watch: Option<Watch>) -> Self {
        self.watch = watch;
        self
    }

    /// Has the watch follow master `pid`, known to be alive and ours just now. Stops are
    /// not hidden from it: the driver decides what an exit means.
    fn arm(&self, pid: u32) {
        if let Some(watch) = &self.watch {
            if watch.watching() != Some(pid) {
                watch.arm(pid);
            }
        }
    }

    /// The `mworker-max-reloads` the configuration sets (0: none).
    pub fn with_max_old_workers(mut self, max_old_workers: u32) -> Self {
        self.max_old_workers = max_old_workers;
        self
    }

    /// In a storm of reloads, the master would stop an old worker at the reload that takes
    /// it past `mworker-max-reloads`, cutting requests it is still answering. Give such
    /// workers `OLD_WORKER_GRACE` to finish first (with `idle-close-on-response` each
    /// keep-alive connection closes after its next answer); returns the process list to
    /// reload from.
    fn let_doomed_workers_finish(&self, now: ProcList) -> Result<ProcList, ProcessError> {
        let limit = self.max_old_workers;
        let doomed =
            |list: &ProcList| limit > 0 && list.old_workers.iter().any(|w| w.reloads >= limit);
        if !doomed(&now) {
            return Ok(now);
        }
        let finished = poll_until(OLD_WORKER_GRACE, POLL_INTERVAL, || {
            self.show_proc().ok().filter(|list| !doomed(list))
        });
        match finished {
            Some(list) => Ok(list),
            None => self.show_proc().map_err(ProcessError::MasterCli),
        }
    }

    pub fn with_timeouts(mut self, timeouts: StepTimeouts) -> Self {
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
    pub fn show_proc(&self) -> Result<ProcList, ShowProcError> {
        show_proc(&self.master_cli())
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
        // A logger whose HAProxy is gone has exited too: reap it (no zombie).
        if let Some(logger) = &mut self.logger {
            if !matches!(logger.try_wait(), Ok(None)) {
                self.logger = None;
            }
        }
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
        // Resolved and checked here: through setsid(1) a missing binary would only show as
        // an exit.
        let binary = resolve_program(&p.binary);
        if !binary.is_file() {
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
        let (log, offset) = output_log::open(&p.log_file)?;
        let (logger, log, stderr) = output_log::spawn_logger(log, &p.log_file)?;
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
        let child = own_session(&binary)
            .arg("-W")
            .arg("-db")
            .arg("-f")
            .arg(&p.config_file)
            .arg("-p")
            .arg(&p.pid_file)
            .arg("-S")
            .arg(cli)
            // The service manager's channel is the worker's: HAProxy must not report READY or
            // feed the watchdog on its behalf (it outlives the worker, too).
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
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
        if let Some(mut old) = self.logger.replace(logger) {
            // The previous HAProxy's logger: gone with it, or going (reap it if it is).
            let _ = old.try_wait();
        }
        Ok((pid, offset))
    }

    /// Waits until the master `pid` answers with a worker running.
    fn wait_ready(&mut self, pid: u32, offset: u64) -> Result<(), ProcessError> {
        let outcome = poll_until(self.timeouts.start, POLL_INTERVAL, || {
            if let Some(status) = self.has_exited(pid) {
                return Some(Err(ProcessError::StartExited {
                    status,
                    alerts: self.alerts_since(offset, None),
                }));
            }
            let ready = self.show_proc().is_ok_and(|p| {
                p.master.pid == pid && p.workers.iter().any(|w| self.worker_answers(w.pid))
            });
            ready.then_some(Ok(()))
        });
        outcome.unwrap_or_else(|| {
            let alerts = self.alerts_since(offset, None);
            self.kill_group(pid);
            Err(ProcessError::StartTimeout {
                timeout: self.timeouts.start,
                alerts,
            })
        })
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
        let mut workerless_since: Option<Instant> = None;
        let mut last_error = ShowProcError::NoWorker;
        let outcome = poll_until(self.timeouts.start, POLL_INTERVAL, || {
            if self.has_exited(pid).is_some() {
                return Some(Ok(false));
            }
            match self.show_proc() {
                Ok(p) if p.master.pid == pid && !p.workers.is_empty() => return Some(Ok(true)),
                Ok(_) => {
                    // A master answering without a current worker serves nothing new: it is
                    // going down (`exit-on-failure`), possibly waiting forever on a stopped
                    // old worker (see `spawn`). Replace it.
                    let since = *workerless_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= NEW_WORKER_GRACE {
                        self.kill_group(pid);
                        if self.has_exited(pid).is_none() {
                            return Some(Err(ProcessError::StopTimeout {
                                pid,
                                timeout: KILL_WAIT,
                            }));
                        }
                        return Some(Ok(false));
                    }
                    last_error = ShowProcError::NoWorker;
                }
                Err(e) => last_error = e,
            }
            None
        });
        outcome.unwrap_or(Err(ProcessError::Unresponsive {
            pid,
            source: last_error,
        }))
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
        // Whether it went is for the caller to ask (`has_exited`).
        let _ = poll_until(KILL_WAIT, POLL_INTERVAL, || self.has_exited(pid));
    }

    /// HAProxy's alerts in the log since `offset`: the `[ALERT]` lines of `pid` (the
    /// master; all pids if `None`), else any `[ALERT]`, else the master's `[WARNING]`s,
    /// else the last lines written.
    fn alerts_since(&self, offset: u64, pid: Option<u32>) -> String {
        output_log::alerts_since(&self.paths.log_file, offset, pid)
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
                if poll_until(self.timeouts.stop, POLL_INTERVAL, || self.has_exited(pid)).is_none()
                {
                    self.kill_group(pid);
                    if self.has_exited(pid).is_none() {
                        return Err(ProcessError::StopTimeout {
                            pid,
                            timeout: self.timeouts.stop,
                        });
                    }
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
                self.arm(pid);
                return Ok(());
            }
        }
        let (pid, offset) = self.spawn()?;
        self.wait_ready(pid, offset)?;
        self.arm(pid);
        Ok(())
    }

    fn reload(&mut self) -> Result<(), ProcessError> {
        let pid = self.master_pid().ok_or(ProcessError::NotRunning)?;
        let before = self.show_proc().map_err(ProcessError::MasterCli)?;
        let before = self.let_doomed_workers_finish(before)?;
        let offset = output_log::len(&self.paths.log_file);
        if self.master_cli().send_only("reload").is_err() {
            kill(Pid::from_raw(pid as i32), Signal::SIGUSR2)
                .map_err(|source| ProcessError::Signal { pid, source })?;
        }
        let mut reloaded_without_worker: Option<Instant> = None;
        let is_new = |w: &&WorkerProc| !before.workers.iter().any(|b| b.pid == w.pid);
        let outcome = poll_until(self.timeouts.reload, POLL_INTERVAL, || {
            // A worker failing its own start-up (chroot, setuid) makes the master kill
            // everything and exit (`exit-on-failure`).
            if self.has_exited(pid).is_some() {
                return Some(Err(ProcessError::ExitedDuringReload {
                    alerts: self.alerts_since(offset, None),
                }));
            }
            // Until the re-executed master runs, its socket refuses connections.
            let now = self.show_proc().ok()?;
            if now.master.reloads <= before.master.reloads {
                return None;
            }
            match now.workers.iter().find(is_new) {
                Some(worker) if self.worker_answers(worker.pid) => Some(Ok(())),
                Some(_) => None,
                None => {
                    // The master lists its new worker from its first answer on, so a reload
                    // counted as good without one means it died at once.
                    let since = *reloaded_without_worker.get_or_insert_with(Instant::now);
                    let refused = now.last_load_refused();
                    // A refused load is explained by the master's lines, a dead new worker
                    // by its own.
                    (refused || since.elapsed() >= NEW_WORKER_GRACE).then(|| {
                        Err(ProcessError::ReloadFailed {
                            alerts: self.alerts_since(offset, refused.then_some(pid)),
                            serving: now.serving(),
                        })
                    })
                }
            }
        });
        outcome.unwrap_or_else(|| {
            Err(ProcessError::ReloadTimeout {
                timeout: self.timeouts.reload,
                alerts: self.alerts_since(offset, None),
            })
        })
    }

    fn stop(&mut self) -> Result<(), ProcessError> {
        self.stop_master().map(|_| ())
    }

    fn watch_master(&mut self) {
        if self.watch.is_some() {
            if let Some(pid) = self.master_pid() {
                self.arm(pid);
            }
        }
    }
}

/// Stops the managed HAProxy recorded in the state dir of `settings`, whoever started it
/// (for `libra-worker haproxy stop`). Returns the master's pid, or `None` if none ran.
pub fn stop_by_state_dir(
    settings: &HaproxySettings,
    timeouts: StepTimeouts,
) -> Result<Option<u32>, ProcessError> {
    Managed::new(ManagedPaths::from_settings(settings))
        .with_timeouts(timeouts)
        .stop_master()
}

/// util-linux `setsid` (Essential on Debian), if installed.
fn setsid_program() -> Option<&'static Path> {
    SETSID_PROGRAMS.iter().map(Path::new).find(|p| p.is_file())
}

/// A command that runs `program` in a session of its own (see `spawn` for why), through
/// setsid(1), which execs in place so the pid is `program`'s; a process group of its own
/// where setsid(1) is missing.
pub(super) fn own_session(program: &Path) -> Command {
    match setsid_program() {
        Some(setsid) => {
            let mut cmd = Command::new(setsid);
            cmd.arg(program);
            cmd
        }
        None => {
            let mut cmd = Command::new(program);
            cmd.process_group(0);
            cmd
        }
    }
}

#[cfg(test)]
mod tests;
