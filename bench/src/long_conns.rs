//! The long-lived TCP connections of the reload storm: N client threads, each holding one
//! connection through the TCP load balancer to the echo backend, sending a short line and
//! reading its echo about once a second. Between two exchanges each thread sits in a
//! read, so a connection HAProxy closes or resets is noticed at once (and the reload that
//! cut it is known), not at the next exchange. Every cut is recorded with its time, the
//! UPDATEs done by then and how it showed (reset, closed, timeout, wrong echo); a pool
//! told to reconnect opens a new connection at once and goes on.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Bound on connecting and on one exchange's echo.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two failed reconnection attempts.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CutKind {
    /// ECONNRESET, ECONNABORTED or EPIPE.
    Reset,
    /// The peer closed (end of stream).
    Closed,
    /// No echo within `IO_TIMEOUT`.
    Timeout,
    /// Bytes that are not the echo of what was sent.
    WrongEcho,
    /// Any other I/O error.
    Other,
    /// A new connection could not be opened (refused or timed out): a reconnecting pool
    /// retries.
    ConnectFailed,
}

/// One cut (or failed reconnection).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Cut {
    pub conn: usize,
    /// Since the pool's clock started.
    pub seconds: f64,
    /// UPDATEs answered when it was seen (the shared progress counter).
    pub after_updates: u64,
    pub kind: CutKind,
    /// Exchanges this connection (the cut one, not the thread) had completed.
    pub exchanges: u64,
}

/// How the pool runs.
#[derive(Debug, Clone, Copy)]
pub struct PoolOpts {
    pub count: usize,
    pub addr: SocketAddr,
    /// Between two exchanges of one connection.
    pub every: Duration,
    /// Open a new connection after a cut (the storm); or stay down (the limit check).
    pub reconnect: bool,
    /// Connection `i` opens `i * stagger` after the start: opened while reloads run, the
    /// connections spread over several HAProxy processes instead of sitting on one.
    pub stagger: Duration,
}

/// What the pool saw, at its end.
#[derive(Debug, Clone, Serialize)]
pub struct PoolReport {
    pub connections: usize,
    pub exchanges: u64,
    pub cuts: Vec<Cut>,
    /// Connections that answered one last exchange at the end.
    pub alive_at_end: usize,
    /// Connections never cut from start to end.
    pub never_cut: usize,
}

impl PoolReport {
    /// Cuts that were connections lost (not failed reconnections).
    pub fn lost(&self) -> impl Iterator<Item = &Cut> {
        self.cuts
            .iter()
            .filter(|c| c.kind != CutKind::ConnectFailed)
    }

    pub fn count(&self, kind: CutKind) -> usize {
        self.cuts.iter().filter(|c| c.kind == kind).count()
    }
}

/// What the threads share with the pool handle.
struct Shared {
    clock: Instant,
    progress: Arc<AtomicU64>,
    stop: AtomicBool,
    /// Per connection: milliseconds since `clock` of its last good exchange, plus 1 (0:
    /// none yet).
    last_ok_ms: Vec<AtomicU64>,
    cuts: Mutex<Vec<Cut>>,
}

/// A running pool; its threads stop on `finish` (or when dropped).
pub struct LongConns {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<ThreadEnd>>,
}

/// What one thread hands back.
#[derive(Debug, Default)]
struct ThreadEnd {
    exchanges: u64,
    alive: bool,
    cut: bool,
}

impl LongConns {
    /// Opens `opts.count` connections (each thread its own, spread over one `every` so
    /// that exchanges do not come in bursts). `clock` times the cuts and `progress` is the
    /// caller's count of UPDATEs answered.
    pub fn start(
        opts: PoolOpts,
        clock: Instant,
        progress: Arc<AtomicU64>,
    ) -> Result<LongConns, std::io::Error> {
        let shared = Arc::new(Shared {
            clock,
            progress,
            stop: AtomicBool::new(false),
            last_ok_ms: (0..opts.count).map(|_| AtomicU64::new(0)).collect(),
            cuts: Mutex::new(Vec::new()),
        });
        let mut threads = Vec::with_capacity(opts.count);
        for id in 0..opts.count {
            let shared = shared.clone();
            let offset = opts.every.mul_f64(id as f64 / opts.count.max(1) as f64);
            let t = thread::Builder::new()
                .name(format!("long-{id}"))
                .spawn(move || client(id, opts, offset, &shared))?;
            threads.push(t);
        }
        Ok(LongConns { shared, threads })
    }

    /// Connections whose last good exchange came after `since` (on the pool's clock).
    pub fn ok_since(&self, since: Instant) -> usize {
        let since_ms = since
            .saturating_duration_since(self.shared.clock)
            .as_millis() as u64;
        self.shared
            .last_ok_ms
            .iter()
            .filter(|t| t.load(Ordering::Relaxed) > since_ms + 1)
            .count()
    }

    /// Connections lost so far (failed reconnections not counted).
    pub fn lost_so_far(&self) -> usize {
        self.shared
            .cuts
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|c| c.kind != CutKind::ConnectFailed)
                    .count()
            })
            .unwrap_or(0)
    }

    /// Stops the threads (each does one last exchange) and reports.
    pub fn finish(mut self) -> PoolReport {
        self.shared.stop.store(true, Ordering::Relaxed);
        let ends: Vec<ThreadEnd> = self
            .threads
            .drain(..)
            // A panicked thread (a bug here) reports its connection dead.
            .map(|t| t.join().unwrap_or_default())
            .collect();
        let mut cuts = self
            .shared
            .cuts
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        cuts.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        PoolReport {
            connections: ends.len(),
            exchanges: ends.iter().map(|e| e.exchanges).sum(),
            alive_at_end: ends.iter().filter(|e| e.alive).count(),
            never_cut: ends.iter().filter(|e| !e.cut).count(),
            cuts,
        }
    }
}

impl Drop for LongConns {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

impl Shared {
    fn record(&self, conn: usize, kind: CutKind, exchanges: u64) {
        let cut = Cut {
            conn,
            seconds: self.clock.elapsed().as_secs_f64(),
            after_updates: self.progress.load(Ordering::Relaxed),
            kind,
            exchanges,
        };
        if let Ok(mut cuts) = self.cuts.lock() {
            cuts.push(cut);
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

fn kind_of(e: &std::io::Error) -> CutKind {
    match e.kind() {
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            CutKind::Reset
        }
        ErrorKind::UnexpectedEof => CutKind::Closed,
        ErrorKind::WouldBlock | ErrorKind::TimedOut => CutKind::Timeout,
        _ => CutKind::Other,
    }
}

/// One connection and how many exchanges it has completed.
struct Conn {
    stream: TcpStream,
    exchanges: u64,
}

fn connect(addr: SocketAddr) -> Result<Conn, std::io::Error> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(Conn {
        stream,
        exchanges: 0,
    })
}

/// Sends one line and reads its echo.
fn exchange(conn: &mut Conn, id: usize, seq: u64) -> Result<(), CutKind> {
    let line = format!("conn {id} seq {seq}\n");
    conn.stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| kind_of(&e))?;
    conn.stream
        .write_all(line.as_bytes())
        .map_err(|e| kind_of(&e))?;
    let mut back = vec![0u8; line.len()];
    conn.stream.read_exact(&mut back).map_err(|e| kind_of(&e))?;
    if back != line.as_bytes() {
        return Err(CutKind::WrongEcho);
    }
    conn.exchanges += 1;
    Ok(())
}

/// Waits up to `wait` on the idle connection: nothing should arrive, so anything that
/// does (an end of stream, a reset, stray bytes) is a cut, seen the moment it happens.
fn idle(conn: &mut Conn, wait: Duration) -> Result<(), CutKind> {
    if wait.is_zero() {
        return Ok(());
    }
    conn.stream
        .set_read_timeout(Some(wait))
        .map_err(|e| kind_of(&e))?;
    let mut byte = [0u8; 1];
    match conn.stream.read(&mut byte) {
        Ok(0) => Err(CutKind::Closed),
        Ok(_) => Err(CutKind::WrongEcho),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(()),
        Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
        Err(e) => Err(kind_of(&e)),
    }
}

/// One client thread: connect, then exchange every `opts.every` until told to stop; one
/// last exchange says whether the connection is alive at the end.
fn client(id: usize, opts: PoolOpts, offset: Duration, shared: &Shared) -> ThreadEnd {
    let mut end = ThreadEnd::default();
    let opens = Instant::now() + opts.stagger.mul_f64(id as f64);
    while Instant::now() < opens && !shared.stopping() {
        thread::sleep(
            opens
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50)),
        );
    }
    let mut seq = 0u64;
    let mut conn: Option<Conn> = None;
    let mut next = Instant::now() + offset;
    let mut ever_connected = false;
    loop {
        if conn.is_none() && (opts.reconnect || !ever_connected) {
            match connect(opts.addr) {
                Ok(c) => {
                    conn = Some(c);
                    ever_connected = true;
                    // A new connection proves itself with an exchange at once.
                    next = Instant::now();
                }
                Err(_) => {
                    shared.record(id, CutKind::ConnectFailed, 0);
                    end.cut = true;
                    ever_connected = true;
                    thread::sleep(RECONNECT_PAUSE);
                }
            }
        }
        let stopping = shared.stopping();
        let Some(c) = conn.as_mut() else {
            if stopping {
                break;
            }
            // Down for good (no reconnection): wait for the end.
            thread::sleep(opts.every.min(Duration::from_millis(200)));
            continue;
        };
        let result = if stopping {
            exchange(c, id, seq)
        } else {
            idle(c, next.saturating_duration_since(Instant::now())).and_then(|()| {
                if Instant::now() >= next {
                    next += opts.every;
                    exchange(c, id, seq)
                } else {
                    Ok(())
                }
            })
        };
        match result {
            Ok(()) => {
                seq += 1;
                let ms = shared.clock.elapsed().as_millis() as u64 + 1;
                if let Some(t) = shared.last_ok_ms.get(id) {
                    t.store(ms, Ordering::Relaxed);
                }
                if stopping {
                    end.alive = true;
                }
            }
            Err(kind) => {
                shared.record(id, kind, c.exchanges);
                end.cut = true;
                conn = None;
            }
        }
        end.exchanges = end.exchanges.max(seq);
        if stopping {
            break;
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo_backend::EchoBackend;

    #[test]
    fn connections_exchange_and_see_their_peer_go() {
        let echo = EchoBackend::start().unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], echo.port()).into();
        let clock = Instant::now();
        let opts = PoolOpts {
            count: 3,
            addr,
            every: Duration::from_millis(50),
            reconnect: false,
            stagger: Duration::ZERO,
        };
        let pool = LongConns::start(opts, clock, Arc::new(AtomicU64::new(7))).unwrap();
        thread::sleep(Duration::from_millis(300));
        assert_eq!(pool.ok_since(clock), 3);
        assert_eq!(pool.lost_so_far(), 0);
        let r = pool.finish();
        assert_eq!((r.alive_at_end, r.never_cut), (3, 3), "{r:?}");
        assert!(r.exchanges >= 9, "{r:?}");

        // The server stops: every connection is seen closed, after 7 UPDATEs.
        let pool = LongConns::start(opts, Instant::now(), Arc::new(AtomicU64::new(7))).unwrap();
        thread::sleep(Duration::from_millis(200));
        drop(echo);
        let until = Instant::now() + Duration::from_secs(5);
        while pool.lost_so_far() < 3 && Instant::now() < until {
            thread::sleep(Duration::from_millis(20));
        }
        let r = pool.finish();
        assert_eq!(r.alive_at_end, 0, "{r:?}");
        assert_eq!(r.lost().count(), 3, "{r:?}");
        assert!(r.cuts.iter().all(|c| c.after_updates == 7), "{r:?}");
    }
}
