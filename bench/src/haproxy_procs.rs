//! HAProxy's processes as /proc shows them: the master (its pid file) and its children,
//! the current worker and the old ones still draining after reloads; their count and
//! summed RSS. And a sampler thread that polls them while a bench runs: counts every
//! 100 ms (an old worker the master stops lives for moments, a 1 s sample would miss the
//! peak), RSS with every tenth poll.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::procfs;

/// Between two polls of the process count.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// Polls per RSS sample (one a second).
const POLLS_PER_SAMPLE: u64 = 10;

/// HAProxy's processes at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HaproxyNow {
    /// Master and workers; 0 when no master runs.
    pub processes: u32,
    /// Summed VmRSS (0 unless asked for).
    pub rss_kib: u64,
}

impl HaproxyNow {
    /// Workers besides the current one (the master and one worker are the steady state).
    pub fn old_workers(&self) -> u32 {
        self.processes.saturating_sub(2)
    }
}

/// The master named in `pid_file` and its children; their RSS summed when `rss`. A
/// process that exits between the listing and the read is not counted.
pub fn haproxy_now(pid_file: &Path, rss: bool) -> HaproxyNow {
    let mut now = HaproxyNow::default();
    let Some(master) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    else {
        return now;
    };
    // Linux lists each task's children in /proc (CONFIG_PROC_CHILDREN): read every task's
    // list, the master's threads included, should it have any.
    let mut children = String::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{master}/task")) {
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                children.push_str(&list);
                children.push(' ');
            }
        }
    }
    let pids =
        std::iter::once(master).chain(children.split_whitespace().filter_map(|p| p.parse().ok()));
    for pid in pids {
        if !running(pid) {
            continue;
        }
        now.processes += 1;
        if rss {
            now.rss_kib += procfs::memory(pid).map_or(0, |m| m.rss_kib);
        }
    }
    now
}

/// Whether `pid` exists and is not a zombie: an exited worker the master has not reaped
/// yet serves nothing and holds no memory.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| {
            // The state follows the command name, which is in parentheses.
            let after = &t[t.rfind(')')? + 1..];
            after.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// One RSS sample.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcSample {
    pub seconds: f64,
    /// UPDATEs answered by then.
    pub after_updates: u64,
    pub processes: u32,
    pub old_workers: u32,
    pub rss_kib: u64,
}

/// What the sampler saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SamplerReport {
    pub samples: Vec<ProcSample>,
    pub polls: u64,
    pub max_old_workers: u32,
    /// When the maximum was first seen: seconds and UPDATEs answered.
    pub max_old_workers_at: (f64, u64),
    /// Polls that saw more old workers than `limit`.
    pub polls_over_limit: u64,
    /// Runs of consecutive polls over the limit, and the longest run (in polls): HAProxy's
    /// master stops the worker past `mworker-max-reloads` only once the new worker is
    /// forked, so one over the limit for a moment at such a reload is how HAProxy works;
    /// a long run would be workers not stopped.
    pub episodes_over_limit: u64,
    pub longest_episode_polls: u64,
    pub limit: u32,
}

/// A sampler thread; `finish` stops it and hands its report back.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<SamplerReport>>,
}

impl Sampler {
    /// Polls the HAProxy of `pid_file` until `finish`; `clock` times the samples,
    /// `progress` is the caller's count of UPDATEs answered, `limit` the configured
    /// `max_old_workers`.
    pub fn start(
        pid_file: PathBuf,
        clock: Instant,
        progress: Arc<AtomicU64>,
        limit: u32,
    ) -> Result<Sampler, std::io::Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = thread::Builder::new()
            .name("haproxy-sampler".into())
            .spawn(move || poll(&pid_file, clock, &progress, limit, &s))?;
        Ok(Sampler {
            stop,
            thread: Some(thread),
        })
    }

    pub fn finish(mut self) -> SamplerReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn poll(
    pid_file: &Path,
    clock: Instant,
    progress: &AtomicU64,
    limit: u32,
    stop: &AtomicBool,
) -> SamplerReport {
    let mut r = SamplerReport {
        limit,
        ..SamplerReport::default()
    };
    let mut next = Instant::now();
    // Consecutive polls over the limit so far.
    let mut run = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let with_rss = r.polls.is_multiple_of(POLLS_PER_SAMPLE);
        let now = haproxy_now(pid_file, with_rss);
        let (seconds, after_updates) = (
            clock.elapsed().as_secs_f64(),
            progress.load(Ordering::Relaxed),
        );
        r.polls += 1;
        let old = now.old_workers();
        if old > r.max_old_workers {
            r.max_old_workers = old;
            r.max_old_workers_at = (seconds, after_updates);
        }
        if old > limit {
            r.polls_over_limit += 1;
            run += 1;
            if run == 1 {
                r.episodes_over_limit += 1;
            }
            r.longest_episode_polls = r.longest_episode_polls.max(run);
        } else {
            run = 0;
        }
        if with_rss && now.processes > 0 {
            r.samples.push(ProcSample {
                seconds,
                after_updates,
                processes: now.processes,
                old_workers: old,
                rss_kib: now.rss_kib,
            });
        }
        next += POLL_EVERY;
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_pid_file_no_processes() {
        let now = haproxy_now(Path::new("/nonexistent/haproxy.pid"), true);
        assert_eq!(now, HaproxyNow::default());
        assert_eq!(now.old_workers(), 0);
    }

    #[test]
    fn a_process_and_its_children_are_counted() {
        // This test process as the "master", with one child: 2 processes, no old worker.
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let now = haproxy_now(&pid_file, true);
        let _ = child.kill();
        let _ = child.wait();
        // The test harness may run other tests' children at the same time.
        assert!(now.processes >= 2, "{now:?}");
        assert!(now.rss_kib > 0, "{now:?}");
    }
}
