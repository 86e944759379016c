//! HAProxy owned by the init system (`Service`, the reference worker's style): configured
//! start, stop and reload commands, run without a shell, bounded, behind the privilege
//! prefix; "running" means the stats socket answers, and a reload is done once another
//! process answers there.

use std::time::Duration;

use super::super::command;
use super::super::runtime_api::StatsSocket;
use super::poll::{poll_until, POLL_INTERVAL};
use super::{Process, ProcessError, StepTimeouts};

/// HAProxy owned by the init system (the reference worker's style): configured commands,
/// run without a shell and bounded; "running" means the stats socket answers.
#[derive(Debug)]
pub struct Service {
    start_cmd: Vec<String>,
    stop_cmd: Vec<String>,
    reload_cmd: Vec<String>,
    stats: StatsSocket,
    timeouts: StepTimeouts,
}

impl Service {
    /// Each command is bounded by `timeouts.command`; the wait for the stats socket to
    /// answer afterwards by `timeouts.start` / `timeouts.reload`, to go quiet by `timeouts.stop`.
    pub fn new(
        start_cmd: Vec<String>,
        stop_cmd: Vec<String>,
        reload_cmd: Vec<String>,
        stats: StatsSocket,
        timeouts: StepTimeouts,
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
        // Why the last attempt did not count: the socket's error, or `None` when the
        // previous process still answered.
        let mut last_error = None;
        let answered = poll_until(timeout, POLL_INTERVAL, || match self.stats.show_info() {
            Ok(info) => match (previous, info.get("Pid")) {
                (Some(old), Some(pid)) if pid == old => {
                    last_error = None;
                    None
                }
                _ => Some(()),
            },
            Err(source) => {
                last_error = Some(source);
                None
            }
        });
        match (answered, last_error, previous) {
            (Some(()), _, _) => Ok(()),
            (None, Some(source), _) => Err(ProcessError::ServiceNotAnswering {
                command: command::display(argv),
                socket: self.stats.path().to_path_buf(),
                source,
            }),
            (None, None, old) => Err(ProcessError::ServiceNotReloaded {
                command: command::display(argv),
                socket: self.stats.path().to_path_buf(),
                pid: old.unwrap_or_default().to_string(),
                timeout,
            }),
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
        match poll_until(self.timeouts.stop, POLL_INTERVAL, || {
            (!self.is_running()).then_some(())
        }) {
            Some(()) => Ok(()),
            None => Err(ProcessError::ServiceStillRunning {
                command: command::display(&self.stop_cmd),
                socket: self.stats.path().to_path_buf(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::haproxy::process::procfs::read_pid_file;
    use crate::drivers::haproxy::test_support::*;
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    fn script(dir: &Path, name: &str, body: &str) -> Vec<String> {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        vec!["sh".into(), path.display().to_string()]
    }

    fn service(dir: &Path, start: &str, stop: &str, reload: &str, timeout: Duration) -> Service {
        Service::new(
            script(dir, "start.sh", start),
            script(dir, "stop.sh", stop),
            script(dir, "reload.sh", reload),
            StatsSocket::new(dir.join("stats.sock"), Duration::from_secs(1)),
            StepTimeouts {
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
            text.contains("reload.sh` failed (exit status: 1): Job for haproxy.service failed."),
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
            "{} -D -f {d}/haproxy.cfg -p {d}/haproxy.pid",
            haproxy().display(),
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
            StepTimeouts {
                reload: Duration::from_millis(500),
                ..StepTimeouts::default()
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
