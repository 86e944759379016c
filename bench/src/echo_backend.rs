//! The TCP backend of the reload storm: an echo server inside the bench process, on a
//! free loopback port, that writes back every byte it reads until the peer closes. A
//! thread per connection, blocking I/O: the storm holds about fifty connections at once
//! (plus HAProxy's health checks, which connect and close), and an echo server this small
//! is obviously correct, which matters more here than its speed.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// How often a blocked accept or read looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// Why the echo server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on a loopback port for the TCP echo backend: {0}")]
pub struct EchoError(#[from] std::io::Error);

/// A running echo server; stopped (listener and every connection) when dropped.
pub struct EchoBackend {
    port: u16,
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl EchoBackend {
    pub fn start() -> Result<EchoBackend, EchoError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        // Non-blocking accept, so the loop sees the stop flag without a wake-up connection.
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (s, a) = (stop.clone(), accepted.clone());
        thread::Builder::new()
            .name("echo-accept".into())
            .spawn(move || accept_loop(&listener, &s, &a))?;
        Ok(EchoBackend {
            port,
            accepted,
            stop,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far (health checks included).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn accept_loop(listener: &TcpListener, stop: &Arc<AtomicBool>, accepted: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                accepted.fetch_add(1, Ordering::Relaxed);
                let stop = stop.clone();
                // A connection we cannot serve is dropped (closed): the client sees it.
                let _ = thread::Builder::new()
                    .name("echo-conn".into())
                    .spawn(move || echo(conn, &stop));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(2)),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Writes back what `conn` sends until it closes, fails or the server stops.
fn echo(mut conn: TcpStream, stop: &AtomicBool) {
    // An accepted socket inherits nothing from the non-blocking listener on Linux, but
    // say so: a read timeout is what lets this thread see the stop flag.
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_nodelay(true);
    let _ = conn.set_read_timeout(Some(STOP_CHECK));
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = conn.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_what_it_reads() {
        let e = EchoBackend::start().unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", e.port())).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for msg in [&b"ping 1\n"[..], b"ping 2\n"] {
            c.write_all(msg).unwrap();
            let mut back = vec![0u8; msg.len()];
            c.read_exact(&mut back).unwrap();
            assert_eq!(back, msg);
        }
        assert_eq!(e.accepted(), 1);
    }
}
