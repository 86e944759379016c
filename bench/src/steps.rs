//! Where a structural UPDATE's time goes, step by step, measured from outside the worker
//! with the driver's own functions on an otherwise idle HAProxy: `haproxy -c`, the stats
//! socket reads made before a reload, an fsynced atomic write, and the reload itself split
//! by a 1 ms probe of the master CLI into "the re-executed master answers" and "the new
//! worker answers on the stats socket" (what the driver's poll waits for).

use std::path::Path;
use std::time::{Duration, Instant};

use libra_worker::tools::files;
use libra_worker::tools::process;
use libra_worker::tools::runtime_api::{StatsError, StatsSocket};
use serde::Serialize;

use super::stats;

/// Bound on one socket command.
const CLI_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on one probed reload.
const RELOAD_LIMIT: Duration = Duration::from_secs(20);
/// The probe's poll interval.
const PROBE_EVERY: Duration = Duration::from_millis(1);

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("`haproxy -c` of {config}: {problem}")]
    Check { config: String, problem: String },
    #[error("stats socket {socket}: {problem}")]
    Socket { socket: String, problem: String },
    #[error("atomic write in {dir}: {problem}")]
    Write { dir: String, problem: String },
    #[error("probing a reload through {socket}: {problem}")]
    Reload { socket: String, problem: String },
}

/// A step's samples, in milliseconds, and their summary.
#[derive(Debug, Clone, Serialize)]
pub struct StepTimes {
    pub step: String,
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl StepTimes {
    pub fn from_durations(step: &str, times: &[Duration]) -> StepTimes {
        let mut ns: Vec<u64> = times
            .iter()
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .collect();
        let l = stats::Latency::from_samples(&mut ns);
        StepTimes {
            step: step.to_string(),
            samples: l.samples,
            p50_ms: l.p50_us / 1000.0,
            p90_ms: l.p90_us / 1000.0,
            p99_ms: l.p99_us / 1000.0,
            max_ms: l.max_us / 1000.0,
        }
    }

    /// One markdown row: step | n | p50 | p90 | p99 | max.
    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            self.step, self.samples, self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
        )
    }
}

/// `n` runs of `haproxy -c -f config`, as the driver runs it.
pub fn time_check(binary: &Path, config: &Path, n: usize) -> Result<Vec<Duration>, StepError> {
    (0..n)
        .map(|_| {
            let started = Instant::now();
            process::validate(binary, config).map_err(|e| StepError::Check {
                config: config.display().to_string(),
                problem: e.to_string(),
            })?;
            Ok(started.elapsed())
        })
        .collect()
}

/// `n` rounds of what the driver reads before a reload: `show servers state` (health to
/// carry over), then `show info` and `show stat` (the counters it banks).
pub fn time_socket_reads(socket: &Path, n: usize) -> Result<Vec<Duration>, StepError> {
    let s = StatsSocket::new(socket, CLI_TIMEOUT);
    let fail = |e: StatsError| StepError::Socket {
        socket: socket.display().to_string(),
        problem: e.to_string(),
    };
    (0..n)
        .map(|_| {
            let started = Instant::now();
            s.show_servers_state().map_err(fail)?;
            s.show_info().map_err(fail)?;
            s.show_stat().map_err(fail)?;
            Ok(started.elapsed())
        })
        .collect()
}

/// `n` fsynced atomic writes of `bytes` to a scratch file in `dir` (the driver makes
/// several per UPDATE: candidate, server state, ledger, configuration, model).
pub fn time_atomic_write(dir: &Path, bytes: &[u8], n: usize) -> Result<Vec<Duration>, StepError> {
    let path = dir.join("bench-scratch.cfg");
    let fail = |e: files::FileError| StepError::Write {
        dir: dir.display().to_string(),
        problem: e.to_string(),
    };
    let times = (0..n)
        .map(|_| {
            let started = Instant::now();
            files::write_atomic(&path, bytes, files::PRIVATE_MODE).map_err(fail)?;
            Ok(started.elapsed())
        })
        .collect();
    let _ = std::fs::remove_file(&path);
    times
}

/// The moments of one reload, from the `reload` command on the master CLI.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ReloadPhases {
    /// The re-executed master answers `show proc` with its reload count one higher: it has
    /// parsed the configuration again and forked the new worker.
    pub master_back: Duration,
    /// `show proc` lists a worker that was not there before.
    pub worker_listed: Duration,
    /// That worker answers `show info` on the stats socket with its pid: it serves.
    pub worker_answers: Duration,
}

/// Reloads through `master_socket` and times the phases at a 1 ms poll.
pub fn probe_reload(master_socket: &Path, stats_socket: &Path) -> Result<ReloadPhases, StepError> {
    let master = StatsSocket::new(master_socket, CLI_TIMEOUT);
    let stats = StatsSocket::new(stats_socket, CLI_TIMEOUT);
    let fail = |problem: String| StepError::Reload {
        socket: master_socket.display().to_string(),
        problem,
    };
    let show_proc = || process::show_proc(&master).map_err(|e| e.to_string());
    let before = show_proc().map_err(fail)?;
    let started = Instant::now();
    master
        .send_only("reload")
        .map_err(|e| fail(e.to_string()))?;
    let mut master_back = None;
    let mut listed: Option<(Duration, u32)> = None;
    loop {
        if started.elapsed() > RELOAD_LIMIT {
            return Err(fail(format!(
                "no new worker answered within {RELOAD_LIMIT:?}"
            )));
        }
        match listed {
            None => {
                if let Ok(now) = show_proc() {
                    if now.master.reloads > before.master.reloads {
                        master_back.get_or_insert_with(|| started.elapsed());
                        if now.last_load_refused() {
                            return Err(fail("HAProxy refused the reload".to_string()));
                        }
                        if let Some(w) = now
                            .workers
                            .iter()
                            .find(|w| !before.workers.iter().any(|b| b.pid == w.pid))
                        {
                            listed = Some((started.elapsed(), w.pid));
                        }
                    }
                }
            }
            Some((at, pid)) => {
                let answers = stats
                    .show_info()
                    .is_ok_and(|i| i.get("Pid").is_some_and(|p| *p == pid.to_string()));
                if answers {
                    let worker_answers = started.elapsed();
                    return Ok(ReloadPhases {
                        master_back: master_back.unwrap_or(at),
                        worker_listed: at,
                        worker_answers,
                    });
                }
            }
        }
        std::thread::sleep(PROBE_EVERY);
    }
}

/// `n` probed reloads with a pause between them (old workers leave).
pub fn probe_reloads(
    master_socket: &Path,
    stats_socket: &Path,
    n: usize,
    pause: Duration,
) -> Result<Vec<ReloadPhases>, StepError> {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        all.push(probe_reload(master_socket, stats_socket)?);
        std::thread::sleep(pause);
    }
    Ok(all)
}

/// The phase summaries of probed reloads, labelled with `what`. The master lists its new
/// worker in the same answer it first gives after the re-exec, so "listed" is left out.
pub fn phase_times(what: &str, phases: &[ReloadPhases]) -> Vec<StepTimes> {
    let pick = |f: fn(&ReloadPhases) -> Duration| phases.iter().map(f).collect::<Vec<_>>();
    vec![
        StepTimes::from_durations(
            &format!("{what}: `reload` → the re-executed master answers (re-exec, parse, fork)"),
            &pick(|p| p.master_back),
        ),
        StepTimes::from_durations(
            &format!("{what}: `reload` → the new worker answers on the stats socket (serves)"),
            &pick(|p| p.worker_answers),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standalone::{Edits, StandaloneHaproxy};

    #[test]
    fn summaries_are_in_milliseconds() {
        let t = StepTimes::from_durations(
            "x",
            &[
                Duration::from_millis(3),
                Duration::from_millis(1),
                Duration::from_millis(2),
            ],
        );
        assert_eq!(
            (t.samples, t.p50_ms, t.p99_ms, t.max_ms),
            (3, 2.0, 3.0, 3.0)
        );
        assert_eq!(t.row(), "| x | 3 | 2.0 | 3.0 | 3.0 | 3.0 |");
    }

    #[test]
    fn probes_real_reloads_and_reads() {
        // HAProxy is a prerequisite of the test suite (scripts/install-deps.sh): no probe,
        // a missing one fails here.
        let binary = libra_worker::config::haproxy_binary_from_env();
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("state");
        let rendered = format!(
            "\nglobal\n    stats socket {0}/stats.sock mode 600 level admin expose-fd listeners\n    server-state-file {0}/server-state\n\ndefaults\n    mode http\n    timeout client 5s\n    timeout server 5s\n    timeout connect 5s\n\nfrontend f\n    bind 127.0.0.1:1\n    default_backend b\n\nbackend b\n    server s 127.0.0.1:1\n",
            from.display()
        );
        let port = crate::procs::free_port().unwrap();
        let copy = dir.path().join("copy");
        let h = StandaloneHaproxy::start(
            &binary,
            &rendered,
            &from,
            &copy,
            &[(1, port)],
            Edits::default(),
        )
        .unwrap();
        let phases = probe_reloads(h.master_socket(), h.stats_socket(), 2, Duration::ZERO).unwrap();
        for p in &phases {
            assert!(p.master_back <= p.worker_listed && p.worker_listed <= p.worker_answers);
        }
        assert_eq!(h.reloads(), Some(2));
        assert_eq!(phase_times("r", &phases).len(), 2);
        assert_eq!(time_socket_reads(h.stats_socket(), 2).unwrap().len(), 2);
        assert_eq!(time_check(&binary, h.config(), 1).unwrap().len(), 1);
        assert_eq!(time_atomic_write(dir.path(), b"x", 2).unwrap().len(), 2);
        assert!(!dir.path().join("bench-scratch.cfg").exists());
    }
}
