//! A managed HAProxy's output log: HAProxy's standard output and error (traffic logs with
//! `log stdout`, its own notices and alerts), written through a logger process so that the
//! file can be rotated in place, and read back for the alerts of a failed start or reload.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::super::alerts::messages;
use super::managed::own_session;
use super::ProcessError;

/// Most of the log read back to find HAProxy's alerts after a failed start or reload.
const MAX_LOG_READ: u64 = 1024 * 1024;

/// Opens the log for appending (its directory made if missing); returns it and its length,
/// where the lines of the process about to start begin.
pub(super) fn open(path: &Path) -> Result<(File, u64), ProcessError> {
    let log_err = |source| ProcessError::OpenLog {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
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
        .open(path)
        .map_err(log_err)?;
    let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((log, offset))
}

/// HAProxy's standard output and error: a pipe to a `cat` that appends to the log.
///
/// Not the file itself: HAProxy sets its standard output non-blocking with
/// `fcntl(F_SETFL)`, which clears `O_APPEND`, so after logrotate's `copytruncate` it would
/// go on writing at its old offset and leave a hole of NUL bytes as long as the rotated
/// content (seen with 2.6). `cat` keeps the file in append mode, so rotation in place
/// works. It runs in a session of its own, like HAProxy, so it outlives the worker, and it
/// exits when the last HAProxy process has closed the pipe.
pub(super) fn spawn_logger(log: File, path: &Path) -> Result<(Child, Stdio, Stdio), ProcessError> {
    let logger_err = |source| ProcessError::OpenLog {
        path: path.to_path_buf(),
        source,
    };
    let mut logger = own_session(Path::new("cat"))
        .stdin(Stdio::piped())
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .map_err(logger_err)?;
    let Some(pipe) = logger.stdin.take() else {
        let _ = logger.kill();
        return Err(logger_err(std::io::Error::other("no pipe to the logger")));
    };
    let pipe = std::os::fd::OwnedFd::from(pipe);
    let second = pipe.try_clone().map_err(logger_err)?;
    Ok((logger, Stdio::from(pipe), Stdio::from(second)))
}

/// HAProxy's alerts in the log since `offset`: the `[ALERT]` lines of `pid` (the master;
/// all pids if `None`), else any `[ALERT]`, else the master's `[WARNING]`s, else the last
/// lines written.
pub(super) fn alerts_since(path: &Path, offset: u64, pid: Option<u32>) -> String {
    settle(path);
    let text = read_from(path, offset);
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
        format!("nothing in {}", path.display())
    } else {
        lines.join("; ")
    }
}

/// Waits (at most half a second) until the log stops growing: HAProxy's last lines pass
/// through the logger's pipe a moment after HAProxy wrote them.
fn settle(path: &Path) {
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut last = len(path);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(30));
        let now = len(path);
        if now == last {
            return;
        }
        last = now;
    }
}

pub(super) fn len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The log from `offset` (from the start if it was truncated since), at most `MAX_LOG_READ`.
fn read_from(path: &Path, offset: u64) -> String {
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
