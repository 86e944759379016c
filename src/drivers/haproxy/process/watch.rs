//! The watch on HAProxy: one thread of its own that notices at once when the managed
//! master exits, and keeps time for the node-health snapshots. It decides nothing: it
//! reports through the `EventSink` the actor layer gave the driver, so that the driver
//! handles each report on its own thread, in order with the jobs (a restart never races an
//! UPDATE's apply), and decides there whether HAProxy should run at all (suspended,
//! deleted: no).
//!
//! How the master is watched: a pidfd (`pidfd_open`, Linux 5.3+), readable once the
//! process has exited — the same for a master this worker spawned (our child, until we
//! reap it) and for one adopted from an earlier worker process (not our child: HAProxy
//! outlives the worker in a session of its own). Where a pidfd cannot be had, the thread
//! reads `/proc/<pid>/stat` every `POLL_PERIOD` instead. Either way the thread wakes every
//! `POLL_PERIOD` to pick up a newly armed master and the snapshot clock.
//!
//! Service mode arms nothing: the init system owns HAProxy and restarts it itself (systemd's
//! `Restart=`); the worker does not fight it: its housekeeping turn notices a HAProxy that
//! stays down, logs it and shows it (`libra_worker_haproxy_up`, `/healthz`), and starts
//! nothing. The snapshot clock runs in both modes: a HAProxy the init system restarts reads
//! the same server-state file.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, Pid, PidfdFlags};

use super::procfs::alive;
use crate::drivers::{DriverEvent, DriverStats, EventSink};

/// How often the thread looks again without a pidfd, and picks up a newly armed master.
const POLL_PERIOD: Duration = Duration::from_millis(50);

/// How often node health is saved for a HAProxy restarted after a crash: a snapshot is
/// never older than this plus one driver turn (well within 5 s when the driver is idle).
pub const SNAPSHOT_PERIOD: Duration = Duration::from_secs(2);

/// The master being watched.
struct Target {
    pid: u32,
    /// `None`: no pidfd could be opened; liveness is read from /proc.
    fd: Option<Arc<OwnedFd>>,
}

#[derive(Default)]
struct State {
    target: Option<Target>,
    /// A `SnapshotDue` was sent and the driver has not taken it yet: no second one, so a
    /// busy driver never finds a backlog of them.
    snapshot_pending: bool,
}

struct Shared {
    state: Mutex<State>,
    sink: EventSink,
    stats: Arc<DriverStats>,
    snapshots: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two plain fields, valid whatever a panicking holder left.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The driver's handle on the watch thread, which ends once every handle is dropped.
#[derive(Clone)]
pub struct Watch {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("watching", &self.watching())
            .finish()
    }
}

impl Watch {
    /// Starts the thread. `snapshots`: send `SnapshotDue` every `SNAPSHOT_PERIOD`.
    pub fn start(
        sink: EventSink,
        stats: Arc<DriverStats>,
        snapshots: bool,
    ) -> std::io::Result<Watch> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            sink,
            stats,
            snapshots,
        });
        let weak = Arc::downgrade(&shared);
        thread::Builder::new()
            .name("haproxy-watch".to_string())
            .spawn(move || run(weak))?;
        Ok(Watch { shared })
    }

    /// Watches master `pid` from now on (instead of any earlier one). Call while `pid` is
    /// known to be the live master (right after starting or adopting it), so that the
    /// pidfd names that process and not a later one reusing its pid.
    pub fn arm(&self, pid: u32) {
        let fd = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok())
            .map(Arc::new);
        self.shared.lock().target = Some(Target { pid, fd });
    }

    /// The master watched now, if any (the watch lets go of it once it reported its exit).
    pub fn watching(&self) -> Option<u32> {
        self.shared.lock().target.as_ref().map(|t| t.pid)
    }

    /// The driver took the last `SnapshotDue`: the next one may be sent.
    pub fn snapshot_taken(&self) {
        self.shared.lock().snapshot_pending = false;
    }
}

/// The thread: wait for the master's exit (or `POLL_PERIOD`), report it once, keep the
/// snapshot clock; end when the driver dropped its handles.
fn run(shared: Weak<Shared>) {
    let mut next_snapshot = Instant::now() + SNAPSHOT_PERIOD;
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let target = shared.lock().target.as_ref().map(|t| (t.pid, t.fd.clone()));
        match target {
            Some((pid, fd)) => {
                let exited = match fd {
                    Some(fd) => exited_within(&fd, POLL_PERIOD).unwrap_or_else(|| !alive(pid)),
                    None => {
                        thread::sleep(POLL_PERIOD);
                        !alive(pid)
                    }
                };
                if exited {
                    report_exit(&shared, pid);
                }
            }
            None => thread::sleep(POLL_PERIOD),
        }
        if shared.snapshots && Instant::now() >= next_snapshot {
            next_snapshot = Instant::now() + SNAPSHOT_PERIOD;
            let send = !std::mem::replace(&mut shared.lock().snapshot_pending, true);
            if send {
                (shared.sink)(DriverEvent::SnapshotDue);
            }
        }
    }
}

/// Whether the process behind `pidfd` exited within `timeout`; `None` if the pidfd
/// cannot say (then /proc is asked).
fn exited_within(pidfd: &OwnedFd, timeout: Duration) -> Option<bool> {
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let timeout = Timespec {
        tv_sec: 0,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    match poll(&mut fds, Some(&timeout)) {
        Ok(n) => Some(n > 0),
        Err(rustix::io::Errno::INTR) => Some(false),
        Err(_) => {
            thread::sleep(POLL_PERIOD);
            None
        }
    }
}

/// Lets go of master `pid` and tells the driver, once; not if the driver armed another
/// master meanwhile (that one is watched from the next turn on).
fn report_exit(shared: &Shared, pid: u32) {
    {
        let mut state = shared.lock();
        if state.target.as_ref().map(|t| t.pid) != Some(pid) {
            return;
        }
        state.target = None;
    }
    // A crash test that needs the housekeeping turn's own restart path blinds the watch.
    fail::fail_point!("haproxy-watch-blind", |_| ());
    // Queued first, counted next: whoever sees the count and then sends a job knows the
    // driver takes the report before that job.
    (shared.sink)(DriverEvent::ProcessExited);
    shared
        .stats
        .watch_exits
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn watch() -> (Watch, mpsc::Receiver<DriverEvent>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let sink: EventSink = Arc::new(move |e| {
            let _ = tx.lock().unwrap().send(e);
        });
        let w = Watch::start(sink, Arc::new(DriverStats::default()), false).unwrap();
        (w, rx)
    }

    #[test]
    fn the_exit_of_a_watched_process_is_reported_once() {
        let (w, rx) = watch();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        w.arm(child.id());
        assert_eq!(w.watching(), Some(child.id()));
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        child.kill().unwrap();
        // A zombie (not reaped yet) counts as exited.
        let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(got, DriverEvent::ProcessExited);
        assert_eq!(w.watching(), None);
        child.wait().unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    }

    #[test]
    fn a_process_that_is_already_gone_is_reported() {
        let (w, rx) = watch();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        w.arm(pid);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            DriverEvent::ProcessExited
        );
    }

    #[test]
    fn snapshots_are_due_one_at_a_time() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let sink: EventSink = Arc::new(move |e| {
            let _ = tx.lock().unwrap().send(e);
        });
        let w = Watch::start(sink, Arc::new(DriverStats::default()), true).unwrap();
        let wait = SNAPSHOT_PERIOD * 3;
        assert_eq!(rx.recv_timeout(wait).unwrap(), DriverEvent::SnapshotDue);
        // Not taken: no second one.
        assert!(rx.recv_timeout(SNAPSHOT_PERIOD * 2).is_err());
        w.snapshot_taken();
        assert_eq!(rx.recv_timeout(wait).unwrap(), DriverEvent::SnapshotDue);
    }
}
