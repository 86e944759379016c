//! The processes a benchmark runs: gearmand, libgearman's C worker and the libra-worker
//! binary (found beside this one), each behind a guard that stops it (SIGTERM, then
//! SIGKILL) when dropped; and gearmand's text admin command `status`, to know when a
//! worker has registered.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a started process may take to listen or register.
pub const START_LIMIT: Duration = Duration::from_secs(15);
/// How long a process may take to exit after SIGTERM before it gets SIGKILL.
pub const STOP_LIMIT: Duration = Duration::from_secs(5);
/// Bound on one admin command's connect, write and read.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

/// What can go wrong running the benchmark's processes.
#[derive(Debug, thiserror::Error)]
pub enum ProcsError {
    #[error("cannot find a free loopback port: {0}")]
    FreePort(std::io::Error),
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} exited during start-up ({status}); see {log}")]
    Exited {
        what: String,
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("gearmand did not listen on {addr} within {waited:?}; see {log}")]
    NotListening {
        addr: String,
        waited: Duration,
        log: String,
    },
    #[error("{wanted} worker(s) for function {function} did not register within {waited:?} (registered: {found}); see {log}")]
    NotRegistered {
        function: String,
        wanted: usize,
        found: usize,
        waited: Duration,
        log: String,
    },
    #[error("job server admin command `status` at {addr} failed: {source}")]
    Admin {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot find this program's own path: {0}")]
    CurrentExe(std::io::Error),
    #[error("the worker binary is not at {path}: build it beside this program (cargo build --release -p libra-worker)")]
    NoWorker { path: String },
}

/// The worker binary's file name.
const WORKER_BINARY: &str = "libra-worker";

/// The `libra-worker` binary the bench starts as a separate process, so that it measures
/// the worker as it ships: the one beside this program (`target/<profile>/libra-bench`
/// next to `target/<profile>/libra-worker`); for a test binary, which lives one level
/// down in `target/<profile>/deps/`, the one beside that directory.
pub fn worker_binary() -> Result<PathBuf, ProcsError> {
    let exe = std::env::current_exe().map_err(ProcsError::CurrentExe)?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let beside = dir.join(WORKER_BINARY);
    if beside.exists() {
        return Ok(beside);
    }
    if dir.file_name().is_some_and(|n| n == "deps") {
        if let Some(up) = dir.parent().map(|p| p.join(WORKER_BINARY)) {
            if up.exists() {
                return Ok(up);
            }
        }
    }
    Err(ProcsError::NoWorker {
        path: beside.display().to_string(),
    })
}

/// A child process that is stopped when dropped.
pub struct Running {
    what: String,
    log: PathBuf,
    child: Child,
}

impl Running {
    /// Starts `cmd` with its standard error (and standard output, when `keep_stdout`)
    /// in the file `log`.
    fn spawn(
        what: &str,
        cmd: &mut Command,
        log: &Path,
        keep_stdout: bool,
    ) -> Result<Running, ProcsError> {
        let spawn_err = |source| ProcsError::Spawn {
            what: what.to_string(),
            source,
        };
        let err = std::fs::File::create(log).map_err(spawn_err)?;
        let out = if keep_stdout {
            Stdio::from(err.try_clone().map_err(spawn_err)?)
        } else {
            Stdio::null()
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(spawn_err)?;
        Ok(Running {
            what: what.to_string(),
            log: log.to_path_buf(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where the process's output goes.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// An error if the process has already exited.
    pub fn check_alive(&mut self) -> Result<(), ProcsError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(ProcsError::Exited {
                what: self.what.clone(),
                status,
                log: self.log.display().to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// SIGTERM, a bounded wait, then SIGKILL.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(raw) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
            let until = Instant::now() + STOP_LIMIT;
            while Instant::now() < until {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16, ProcsError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(ProcsError::FreePort)
}

/// A gearmand on a free loopback port.
pub struct Gearmand {
    pub port: u16,
    pub process: Running,
}

impl Gearmand {
    /// Starts `gearmand` with `threads` I/O threads, its log under `dir`.
    pub fn start(dir: &Path, threads: u32) -> Result<Gearmand, ProcsError> {
        let port = free_port()?;
        let log = dir.join("gearmand.log");
        let mut process = Running::spawn(
            "gearmand",
            Command::new("gearmand")
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg(format!("--threads={threads}"))
                .arg("--verbose=ERROR")
                .arg(format!("--log-file={}", log.display())),
            &dir.join("gearmand.out"),
            true,
        )?;
        let addr = format!("127.0.0.1:{port}");
        let until = Instant::now() + START_LIMIT;
        loop {
            process.check_alive()?;
            if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), ADMIN_TIMEOUT).is_ok() {
                return Ok(Gearmand { port, process });
            }
            if Instant::now() >= until {
                return Err(ProcsError::NotListening {
                    addr,
                    waited: START_LIMIT,
                    log: log.display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Starts libgearman's worker tool, the baseline worker: for every job of `function` it
/// writes the body to its standard output (here /dev/null, the cheapest sink) and
/// answers an empty WORK_COMPLETE, doing no other work.
pub fn start_c_worker(
    gearmand: &Gearmand,
    function: &str,
    dir: &Path,
) -> Result<Running, ProcsError> {
    Running::spawn(
        "the C worker (gearman -w)",
        Command::new("gearman")
            .args(["-w", "-h", "127.0.0.1", "-p"])
            .arg(gearmand.port.to_string())
            .args(["-f", function]),
        &dir.join(format!("{function}.out")),
        false,
    )
}

/// Starts `libra-worker run --config CONFIG` from `binary` with extra environment
/// (configuration overrides).
pub fn start_worker(
    binary: &Path,
    config: &Path,
    env: &[(String, String)],
    output: &Path,
) -> Result<Running, ProcsError> {
    Running::spawn(
        "libra-worker",
        Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(config)
            .envs(env.iter().map(|(k, v)| (k, v))),
        output,
        true,
    )
}

/// One line of gearmand's `status`: a function and its queue and workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionStatus {
    pub function: String,
    pub queued: u64,
    pub running: u64,
    pub workers: usize,
}

/// Parses the answer to `status` (tab-separated lines, a `.` line at the end).
pub fn parse_status(text: &str) -> Vec<FunctionStatus> {
    text.lines()
        .take_while(|l| *l != ".")
        .filter_map(|line| {
            let mut f = line.split('\t');
            Some(FunctionStatus {
                function: f.next()?.to_string(),
                queued: f.next()?.parse().ok()?,
                running: f.next()?.parse().ok()?,
                workers: f.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// Runs gearmand's admin `status` command.
pub fn admin_status(addr: &str) -> Result<Vec<FunctionStatus>, ProcsError> {
    let fail = |source| ProcsError::Admin {
        addr: addr.to_string(),
        source,
    };
    let sock: std::net::SocketAddr = addr.parse().map_err(|_| {
        fail(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not an ip:port address",
        ))
    })?;
    let mut stream = TcpStream::connect_timeout(&sock, ADMIN_TIMEOUT).map_err(fail)?;
    stream
        .set_read_timeout(Some(ADMIN_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(ADMIN_TIMEOUT)))
        .and_then(|()| stream.write_all(b"status\n"))
        .map_err(fail)?;
    let mut text = String::new();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(fail)? == 0 || line.trim_end() == "." {
            break;
        }
        text.push_str(&line);
    }
    Ok(parse_status(&text))
}

/// Waits until at least `wanted` workers have registered `function`, or the process
/// that should register has exited, or [`START_LIMIT`] has passed.
pub fn wait_registered(
    addr: &str,
    function: &str,
    wanted: usize,
    process: &mut Running,
) -> Result<(), ProcsError> {
    let until = Instant::now() + START_LIMIT;
    loop {
        process.check_alive()?;
        let found = admin_status(addr)?
            .into_iter()
            .find(|s| s.function == function)
            .map(|s| s.workers)
            .unwrap_or(0);
        if found >= wanted {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(ProcsError::NotRegistered {
                function: function.to_string(),
                wanted,
                found,
                waited: START_LIMIT,
                log: process.log().display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        let s = parse_status("cworker\t0\t0\t2\nlb\t3\t1\t1\n.\n");
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[1],
            FunctionStatus {
                function: "lb".to_string(),
                queued: 3,
                running: 1,
                workers: 1
            }
        );
        assert!(parse_status(".\n").is_empty());
    }

    #[test]
    fn gearmand_and_the_c_worker_run_and_register() {
        let dir = tempfile::tempdir().unwrap();
        let g = Gearmand::start(dir.path(), 1).unwrap();
        let mut w = start_c_worker(&g, "echo-test", dir.path()).unwrap();
        wait_registered(&g.addr(), "echo-test", 1, &mut w).unwrap();
        let pid = w.pid();
        assert!(libra_worker::tools::process::alive(pid));
        drop(w);
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            let n = admin_status(&g.addr())
                .unwrap()
                .into_iter()
                .find(|s| s.function == "echo-test")
                .map(|s| s.workers);
            if n.unwrap_or(0) == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            admin_status(&g.addr())
                .unwrap()
                .into_iter()
                .find(|s| s.function == "echo-test")
                .map(|s| s.workers)
                .unwrap_or(0),
            0,
            "a stopped worker unregisters"
        );
        let gearmand = g.process.pid();
        drop(g);
        assert!(
            !libra_worker::tools::process::alive(gearmand),
            "gearmand is stopped on drop"
        );
    }
}
