//! What a benchmark reads about a process from Linux's /proc: CPU time (nanoseconds,
//! from every thread's `schedstat`, finer than the 10 ms ticks of `stat`) and resident
//! memory (`VmRSS`, and its peak `VmHWM`, from `status`).

use std::time::Duration;

/// What could not be read from /proc.
#[derive(Debug, thiserror::Error)]
pub enum ProcfsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} has no {field} line (not Linux, or the process is gone)")]
    Field { path: String, field: &'static str },
}

fn read(path: &str) -> Result<String, ProcfsError> {
    std::fs::read_to_string(path).map_err(|source| ProcfsError::Read {
        path: path.to_string(),
        source,
    })
}

/// The time on CPU in the first field of a `schedstat` file.
fn schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// CPU time used so far by every live thread of process `pid`. Threads that already
/// exited are not counted; the processes benchmarked keep theirs for their whole life.
pub fn process_cpu(pid: u32) -> Result<Duration, ProcfsError> {
    let dir = format!("/proc/{pid}/task");
    let entries = std::fs::read_dir(&dir).map_err(|source| ProcfsError::Read {
        path: dir.clone(),
        source,
    })?;
    let mut total = 0u64;
    for entry in entries.flatten() {
        // A thread may exit between the listing and the read: skip it.
        if let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) {
            total += schedstat_ns(&text).unwrap_or(0);
        }
    }
    Ok(Duration::from_nanos(total))
}

/// CPU time used so far by the calling thread.
pub fn thread_cpu() -> Result<Duration, ProcfsError> {
    let path = "/proc/thread-self/schedstat";
    let text = read(path)?;
    schedstat_ns(&text)
        .map(Duration::from_nanos)
        .ok_or(ProcfsError::Field {
            path: path.to_string(),
            field: "run time",
        })
}

/// Resident memory of a process now and at its peak, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

/// `VmRSS` and `VmHWM` of process `pid`.
pub fn memory(pid: u32) -> Result<Memory, ProcfsError> {
    let path = format!("/proc/{pid}/status");
    let text = read(&path)?;
    let field = |name: &'static str| {
        status_kib(&text, name).ok_or(ProcfsError::Field {
            path: path.clone(),
            field: name,
        })
    };
    Ok(Memory {
        rss_kib: field("VmRSS")?,
        peak_kib: field("VmHWM")?,
    })
}

/// The value of a `Name:   1234 kB` line of a `status` file.
fn status_kib(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_schedstat_lines() {
        let status = "Name:\tx\nVmHWM:\t    9000 kB\nVmRSS:\t    8123 kB\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(8123));
        assert_eq!(status_kib(status, "VmHWM"), Some(9000));
        assert_eq!(status_kib(status, "VmSwap"), None);
        assert_eq!(schedstat_ns("332383729 42341703 57\n"), Some(332_383_729));
        assert_eq!(schedstat_ns(""), None);
    }

    #[test]
    fn reads_this_process() {
        let start = thread_cpu().unwrap();
        let mut x = 0u64;
        let until = std::time::Instant::now() + Duration::from_millis(30);
        while std::time::Instant::now() < until {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        assert!(thread_cpu().unwrap() > start, "the busy loop used CPU");
        let me = std::process::id();
        let mine = thread_cpu().unwrap();
        assert!(
            process_cpu(me).unwrap() >= mine,
            "the process includes this thread"
        );
        let m = memory(me).unwrap();
        assert!(m.rss_kib > 0 && m.peak_kib >= m.rss_kib);
    }
}
