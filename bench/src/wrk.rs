//! The HTTP load of the zero-drop check: Debian's `wrk`, run in the background for as long
//! as an UPDATE storm lasts (started with a long `-d`, stopped with SIGINT, on which wrk
//! prints its summary as usual), with keep-alive clients or with close-mode clients
//! (`-H "Connection: close"`: wrk reconnects after every answer that says close), and its
//! summary parsed into the failure counts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

/// Longest a run may last before wrk ends it itself.
const MAX_RUN: Duration = Duration::from_secs(600);
/// How long wrk may take to print its summary after SIGINT.
const FINISH_LIMIT: Duration = Duration::from_secs(15);
/// A request slower than this counts as a timeout error; generous, because two busy cores
/// can delay an answer without anything being dropped.
const REQUEST_TIMEOUT_S: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum WrkError {
    #[error("cannot run wrk ({program}): {source}; install it with apt-get install wrk")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot create wrk's output file {path}: {source}")]
    Output {
        path: String,
        source: std::io::Error,
    },
    #[error("wrk exited before the run ended ({status}); see {log}")]
    EndedEarly { status: String, log: String },
    #[error("wrk did not finish within {0:?} of SIGINT")]
    Stuck(Duration),
    #[error("cannot read wrk's summary in {log}: {problem}")]
    Summary { log: String, problem: String },
}

/// How the clients treat connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientMode {
    /// HTTP/1.1 keep-alive: many requests per connection.
    KeepAlive,
    /// `Connection: close` on every request: one request per connection.
    Close,
}

impl ClientMode {
    pub fn label(self) -> &'static str {
        match self {
            ClientMode::KeepAlive => "keep-alive",
            ClientMode::Close => "close",
        }
    }
}

/// What wrk reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WrkReport {
    pub requests: u64,
    pub seconds: f64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    /// wrk's "Non-2xx or 3xx responses".
    pub non_2xx_3xx: u64,
    /// wrk's "N.NNMB read", in bytes (wrk prints three or four significant digits in
    /// binary units).
    pub bytes_read: u64,
}

impl WrkReport {
    /// wrk's "Socket errors" summed.
    pub fn socket_errors(&self) -> u64 {
        self.connect_errors + self.read_errors + self.write_errors + self.timeouts
    }

    /// Requests that did not get a good answer.
    pub fn failed(&self) -> u64 {
        self.socket_errors() + self.non_2xx_3xx
    }
}

/// `wrk` on PATH or in Debian's place.
pub fn program() -> Option<PathBuf> {
    let usr = Path::new("/usr/bin/wrk");
    if usr.exists() {
        return Some(usr.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("wrk"))
            .find(|p| p.exists())
    })
}

/// A wrk run in progress; killed if dropped before `finish`.
pub struct WrkRun {
    child: Option<Child>,
    log: PathBuf,
}

/// Starts wrk against `url` with `connections` clients on `threads` threads; its output
/// goes to `log`.
pub fn start(
    program: &Path,
    url: &str,
    mode: ClientMode,
    connections: u32,
    threads: u32,
    log: &Path,
) -> Result<WrkRun, WrkError> {
    start_for(program, url, mode, connections, threads, log, MAX_RUN)
}

/// As `start`, for runs that may last longer than `start`'s ten minutes: wrk ends itself
/// after `max_run` (`finish` then reports it as ended early).
pub fn start_for(
    program: &Path,
    url: &str,
    mode: ClientMode,
    connections: u32,
    threads: u32,
    log: &Path,
    max_run: Duration,
) -> Result<WrkRun, WrkError> {
    let out = std::fs::File::create(log).map_err(|source| WrkError::Output {
        path: log.display().to_string(),
        source,
    })?;
    let err = out.try_clone().map_err(|source| WrkError::Output {
        path: log.display().to_string(),
        source,
    })?;
    let mut cmd = Command::new(program);
    cmd.arg("-t")
        .arg(threads.max(1).min(connections.max(1)).to_string())
        .arg("-c")
        .arg(connections.max(1).to_string())
        .arg("-d")
        .arg(format!("{}s", max_run.as_secs().max(1)))
        .arg("--timeout")
        .arg(format!("{REQUEST_TIMEOUT_S}s"));
    if mode == ClientMode::Close {
        cmd.arg("-H").arg("Connection: close");
    }
    let child = cmd
        .arg(url)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| WrkError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    Ok(WrkRun {
        child: Some(child),
        log: log.to_path_buf(),
    })
}

impl WrkRun {
    /// An error if wrk has already exited (a bad URL, a refused connection at start).
    pub fn check_running(&mut self) -> Result<(), WrkError> {
        if let Some(child) = &mut self.child {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(WrkError::EndedEarly {
                    status: status.to_string(),
                    log: self.log.display().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Stops wrk with SIGINT and reads its summary.
    pub fn finish(mut self) -> Result<WrkReport, WrkError> {
        self.check_running()?;
        let Some(mut child) = self.child.take() else {
            return Err(WrkError::EndedEarly {
                status: "unknown".into(),
                log: self.log.display().to_string(),
            });
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        }
        let deadline = Instant::now() + FINISH_LIMIT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(WrkError::Stuck(FINISH_LIMIT));
                }
            }
        }
        let text = std::fs::read_to_string(&self.log).map_err(|e| WrkError::Summary {
            log: self.log.display().to_string(),
            problem: e.to_string(),
        })?;
        parse(&text).map_err(|problem| WrkError::Summary {
            log: self.log.display().to_string(),
            problem,
        })
    }
}

impl Drop for WrkRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Parses wrk 4's summary. The error lines only appear when a count is not zero.
pub fn parse(text: &str) -> Result<WrkReport, String> {
    let mut r = WrkReport::default();
    let mut found = false;
    for line in text.lines().map(str::trim) {
        if let Some((count, rest)) = line.split_once(" requests in ") {
            r.requests = count
                .trim()
                .parse()
                .map_err(|_| format!("bad request count in {line:?}"))?;
            let mut parts = rest.split(',');
            let span = parts.next().unwrap_or("").trim();
            r.seconds = seconds(span).ok_or_else(|| format!("bad duration in {line:?}"))?;
            let read = parts.next().unwrap_or("").trim();
            r.bytes_read = read
                .strip_suffix(" read")
                .and_then(bytes)
                .ok_or_else(|| format!("bad byte count in {line:?}"))?;
            found = true;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            for part in rest.split(',') {
                let mut words = part.split_whitespace();
                let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                    return Err(format!("bad socket error counts in {line:?}"));
                };
                let n: u64 = n
                    .parse()
                    .map_err(|_| format!("bad socket error counts in {line:?}"))?;
                match kind {
                    "connect" => r.connect_errors = n,
                    "read" => r.read_errors = n,
                    "write" => r.write_errors = n,
                    "timeout" => r.timeouts = n,
                    _ => return Err(format!("unknown socket error kind in {line:?}")),
                }
            }
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx_3xx = rest
                .trim()
                .parse()
                .map_err(|_| format!("bad non-2xx count in {line:?}"))?;
        }
    }
    if found {
        Ok(r)
    } else {
        Err("no \"N requests in T\" line".to_string())
    }
}

/// wrk's byte counts: `512.00B`, `4.56MB`, `1.02GB` (binary units).
fn bytes(text: &str) -> Option<u64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().ok()?;
    let factor: f64 = match unit {
        "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * factor).round() as u64)
}

/// wrk's run time: `20.01s`, `1.50m`, `1.00h`, `950.00ms`.
fn seconds(span: &str) -> Option<f64> {
    let split = span.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = span.split_at(split);
    let n: f64 = n.parse().ok()?;
    let factor = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    Some(n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_backend::HttpBackend;

    const CLEAN: &str = "Running 10m test @ http://127.0.0.1:8080/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.17ms  484.23us  10.23ms   83.11%
    Req/Sec    13.81k     1.25k   15.66k    70.00%
  54956 requests in 4.01s, 4.56MB read
Requests/sec:  13707.51
Transfer/sec:      1.14MB
";

    #[test]
    fn parses_a_clean_summary() {
        let r = parse(CLEAN).unwrap();
        assert_eq!(r.requests, 54956);
        assert!((r.seconds - 4.01).abs() < 1e-9);
        assert_eq!(r.bytes_read, (4.56f64 * 1024.0 * 1024.0).round() as u64);
        assert_eq!(r.failed(), 0);
    }

    #[test]
    fn parses_error_lines() {
        let text = CLEAN.replace(
            "Requests/sec:",
            "  Socket errors: connect 1, read 22, write 3, timeout 4\n  Non-2xx or 3xx responses: 5\nRequests/sec:",
        );
        let r = parse(&text.replace("4.01s", "1.50m")).unwrap();
        assert_eq!(
            (
                r.connect_errors,
                r.read_errors,
                r.write_errors,
                r.timeouts,
                r.non_2xx_3xx
            ),
            (1, 22, 3, 4, 5)
        );
        assert_eq!(r.socket_errors(), 30);
        assert_eq!(r.failed(), 35);
        assert!((r.seconds - 90.0).abs() < 1e-9);
        assert!(parse("unable to connect to 127.0.0.1:1 Connection refused").is_err());
    }

    #[test]
    fn runs_against_a_backend_in_both_modes_and_stops_on_sigint() {
        let Some(wrk) = program() else {
            crate::skip_or_fail("wrk is not installed (apt-get install wrk)");
            return;
        };
        let b = HttpBackend::start("w").unwrap();
        let dir = tempfile::tempdir().unwrap();
        for mode in [ClientMode::KeepAlive, ClientMode::Close] {
            let before = b.hits();
            let url = format!("http://127.0.0.1:{}/", b.port());
            let log = dir.path().join(format!("{}.out", mode.label()));
            let mut run = start(&wrk, &url, mode, 4, 1, &log).unwrap();
            std::thread::sleep(Duration::from_millis(700));
            run.check_running().unwrap();
            let r = run.finish().unwrap();
            assert!(r.requests > 0, "{r:?}");
            assert_eq!(r.failed(), 0, "{mode:?}: {r:?}");
            assert!(r.seconds < 60.0, "SIGINT ended the run: {r:?}");
            assert!(b.hits() - before >= r.requests);
        }
    }
}
