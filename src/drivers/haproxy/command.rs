//! Runs an external command (argv, no shell) with a deadline: `haproxy -c` and the
//! service-mode start/stop/reload commands. Output goes to an unlinked temporary file, not a
//! pipe, so a daemon the command leaves behind (an init script starting HAProxy) cannot keep
//! us waiting for EOF; on timeout the command's whole process group is killed.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Most output kept for an error text (the tail is what explains a failure).
pub const MAX_OUTPUT_BYTES: u64 = 16 * 1024;

/// How long to wait for a killed command to be reaped.
const KILL_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("`{command}` is empty: no program to run")]
    Empty { command: String },
    #[error("cannot capture the output of `{command}`: {source}")]
    Capture {
        command: String,
        source: std::io::Error,
    },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("waiting for `{command}` failed: {source}")]
    Wait {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` timed out after {} s{}", Secs(*.timeout), with_output(.output))]
    TimedOut {
        command: String,
        timeout: Duration,
        output: String,
    },
    #[error("`{command}` failed ({status}){}", with_output(.output))]
    Failed {
        command: String,
        status: ExitStatus,
        output: String,
    },
}

/// What a finished command printed (stdout and stderr interleaved, trimmed, at most the
/// last `MAX_OUTPUT_BYTES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    pub(crate) status: ExitStatus,
    pub output: String,
}

/// Runs `argv` and waits at most `timeout`. A non-zero exit is `CommandError::Failed`.
pub fn run(argv: &[String], timeout: Duration) -> Result<CommandOutput, CommandError> {
    let out = run_unchecked(argv, timeout)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(CommandError::Failed {
            command: display(argv),
            status: out.status,
            output: out.output,
        })
    }
}

/// Runs `argv` and waits at most `timeout`; any exit status is returned, for callers that
/// read the output of a failing command themselves (`haproxy -c`).
pub fn run_unchecked(argv: &[String], timeout: Duration) -> Result<CommandOutput, CommandError> {
    run_with_stdout(argv, timeout, None)
}

/// Runs `argv` with its standard output written to `stdout` (a file of the caller's, for
/// output too big for an error text, such as a log read through `sudo cat`); the returned
/// output is then its standard error only. A non-zero exit is `CommandError::Failed`.
pub fn run_into(
    argv: &[String],
    timeout: Duration,
    stdout: File,
) -> Result<CommandOutput, CommandError> {
    let out = run_with_stdout(argv, timeout, Some(stdout))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(CommandError::Failed {
            command: display(argv),
            status: out.status,
            output: out.output,
        })
    }
}

fn run_with_stdout(
    argv: &[String],
    timeout: Duration,
    stdout: Option<File>,
) -> Result<CommandOutput, CommandError> {
    let command = display(argv);
    let Some((program, args)) = argv.split_first() else {
        return Err(CommandError::Empty { command });
    };
    let mut capture = capture_file().map_err(|source| CommandError::Capture {
        command: command.clone(),
        source,
    })?;
    let (stdout, stderr) = match (
        stdout.map_or_else(|| capture.try_clone(), Ok),
        capture.try_clone(),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(source), _) | (_, Err(source)) => {
            return Err(CommandError::Capture { command, source })
        }
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Its own group: a timeout kills everything it started, and a Ctrl-C aimed at the
        // worker does not interrupt a reload half-way.
        .process_group(0)
        .spawn()
        .map_err(|source| CommandError::Spawn {
            command: command.clone(),
            source,
        })?;
    let group = Pid::from_raw(child.id() as i32);
    // A waiting thread wakes us the moment the command exits (`haproxy -c` takes ~50 ms,
    // and polling would add up to a poll interval to every UPDATE).
    let (tx, rx) = mpsc::channel();
    let waiter = thread::Builder::new()
        .name("command-wait".into())
        .spawn(move || {
            let _ = tx.send(child.wait());
        });
    if let Err(source) = waiter {
        let _ = killpg(group, Signal::SIGKILL);
        return Err(CommandError::Wait { command, source });
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(status)) => Ok(CommandOutput {
            status,
            output: read_tail(&mut capture),
        }),
        Ok(Err(source)) => Err(CommandError::Wait { command, source }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(CommandError::Wait {
            command,
            source: std::io::Error::other("the waiting thread ended"),
        }),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            // ESRCH only means the group is already gone.
            let _ = killpg(group, Signal::SIGKILL);
            let _ = rx.recv_timeout(KILL_GRACE);
            Err(CommandError::TimedOut {
                command,
                timeout,
                output: read_tail(&mut capture),
            })
        }
    }
}

/// When sudo itself refused the command, rather than the command failing (`sudo -n`
/// without a matching rule prints `sudo: a password is required`): a text whose first
/// words say it all (`hpcs_error` keeps 128 characters) — sudo's line, the command named
/// briefly (program, last argument), what to do — then the whole command, for the log.
pub fn sudo_refusal(e: &CommandError) -> Option<String> {
    let CommandError::Failed {
        command,
        status,
        output,
    } = e
    else {
        return None;
    };
    let mut words = command.split(' ');
    let sudo = words.next()?;
    if Path::new(sudo).file_name()? != "sudo" {
        return None;
    }
    let said = output
        .lines()
        .map(str::trim)
        .rfind(|l| l.starts_with("sudo: ") && !l.contains("unable to resolve host"))?;
    // sudo's own options, then the command it was asked to run.
    let run: Vec<&str> = words.skip_while(|w| w.starts_with('-')).collect();
    let (program, args) = run.split_first()?;
    let name = Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(program);
    let brief = match args.last() {
        Some(last) if last.starts_with('/') => format!("{name} … {last}"),
        _ => std::iter::once(name)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" "),
    };
    Some(format!(
        "{said} for `{brief}`: add the worker's sudoers rule (`libra-worker sudoers --config \
         <its configuration>` prints it); `{command}` failed ({status})"
    ))
}

/// The command as a person would type it, for error texts.
pub fn display(argv: &[String]) -> String {
    argv.join(" ")
}

/// A read-write file nobody else can open: created in the temp dir and unlinked at once.
fn capture_file() -> std::io::Result<File> {
    unlinked_file(&std::env::temp_dir())
}

/// A read-write file in `dir` that nobody else can open: created 0600 and unlinked at once.
pub fn unlinked_file(dir: &std::path::Path) -> std::io::Result<File> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for _ in 0..16 {
        let name = format!(
            ".libra-worker-cmd-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        let path: PathBuf = dir.join(name);
        match open_private(&path) {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "no free temporary file name",
    ))
}

fn open_private(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

fn read_tail(file: &mut File) -> String {
    let len = match file.seek(SeekFrom::End(0)) {
        Ok(len) => len,
        Err(_) => return String::new(),
    };
    let start = len.saturating_sub(MAX_OUTPUT_BYTES);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err()
        || file.take(MAX_OUTPUT_BYTES).read_to_end(&mut bytes).is_err()
    {
        return String::new();
    }
    String::from_utf8_lossy(&bytes).trim().to_string()
}

fn with_output(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    }
}

/// A duration in seconds as people write it: `5`, `0.3`.
pub struct Secs(pub Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_millis() == 0 {
            write!(f, "{}", self.0.as_secs())
        } else {
            write!(f, "{:.1}", self.0.as_secs_f64())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn success_returns_interleaved_output() {
        let out = run(&sh("echo out; echo err >&2"), Duration::from_secs(10)).unwrap();
        assert!(out.status.success());
        assert_eq!(out.output, "out\nerr");
    }

    #[test]
    fn non_zero_exit_carries_status_and_output() {
        let err = run(
            &sh("echo 'service failed: no such unit' >&2; exit 3"),
            Duration::from_secs(10),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, CommandError::Failed { .. }), "{err:?}");
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.contains("service failed: no such unit"), "{text}");
    }

    #[test]
    fn unchecked_returns_failing_status() {
        let out = run_unchecked(&sh("echo x; exit 1"), Duration::from_secs(10)).unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(out.output, "x");
    }

    #[test]
    fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild-alive");
        // The grandchild would touch the marker after the timeout unless the group is killed.
        let script = format!("(sleep 1; touch {}) & sleep 60", marker.display());
        let started = Instant::now();
        let err = run(&sh(&script), Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            err.to_string(),
            format!("`sh -c {script}` timed out after 0.3 s")
        );
        thread::sleep(Duration::from_millis(1500));
        assert!(
            !marker.exists(),
            "a process of the timed-out command survived"
        );
    }

    #[test]
    fn daemon_left_behind_does_not_block() {
        // An init script that leaves a daemon holding its stdout must not make us wait.
        let started = Instant::now();
        let out = run(&sh("sleep 3 & echo started"), Duration::from_secs(20)).unwrap();
        assert_eq!(out.output, "started");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = run(
            &["/nonexistent/haproxy".to_string()],
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, CommandError::Spawn { .. }), "{err:?}");
        assert!(err
            .to_string()
            .starts_with("cannot run `/nonexistent/haproxy`"));
        assert!(matches!(
            run(&[], Duration::from_secs(1)),
            Err(CommandError::Empty { .. })
        ));
    }

    #[test]
    fn a_sudo_refusal_says_so_first() {
        let refused = |command: &str, output: &str| {
            let status = run_unchecked(&sh("exit 1"), Duration::from_secs(10))
                .unwrap()
                .status;
            sudo_refusal(&CommandError::Failed {
                command: command.to_string(),
                status,
                output: output.to_string(),
            })
        };
        let text = refused(
            "/usr/bin/sudo -n /usr/bin/cp -- /var/lib/libra-worker/haproxy.cfg.staged /etc/haproxy/haproxy.cfg.tmp",
            "sudo: unable to resolve host lb1: Name or service not known\nsudo: a password is required",
        )
        .unwrap();
        assert!(
            text.starts_with("sudo: a password is required for `cp … /etc/haproxy/haproxy.cfg.tmp`: add the worker's sudoers rule"),
            "{text}"
        );
        assert!(
            text.contains("`/usr/bin/sudo -n /usr/bin/cp -- /var/lib/"),
            "{text}"
        );
        let text = refused(
            "/usr/bin/sudo -n /usr/sbin/service haproxy reload",
            "sudo: a password is required",
        )
        .unwrap();
        assert!(text.contains("for `service haproxy reload`"), "{text}");
        // The command's own failure, or no sudo at all, is not a refusal.
        assert!(refused(
            "/usr/bin/sudo -n /usr/bin/cp -- a b",
            "/usr/bin/cp: cannot stat 'a'"
        )
        .is_none());
        assert!(refused("/usr/bin/env cp a b", "sudo: a password is required").is_none());
    }

    #[test]
    fn long_output_keeps_the_tail() {
        let out = run(
            &sh("i=0; while [ $i -lt 5000 ]; do echo line-$i; i=$((i+1)); done"),
            Duration::from_secs(20),
        )
        .unwrap();
        assert!(out.output.len() as u64 <= MAX_OUTPUT_BYTES);
        assert!(out.output.ends_with("line-4999"));
    }
}
