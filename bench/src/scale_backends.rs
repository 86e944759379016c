//! The real backends of the scale bench: one listening socket that every node of a
//! 10,000-node load balancer points at, each node through its own loopback address
//! (`127.x.y.z`, one port). Bound to the wildcard address but tied to the loopback device
//! (`SO_BINDTODEVICE lo`, which needs root), so it accepts on any `127.0.0.0/8` address
//! and nowhere else; without that right every node is `127.0.0.1` (HAProxy then warns of
//! dynamic-cookie collisions among added servers, which changes nothing measured). Each
//! connection (HAProxy's health checks, or a client through the load balancer) gets a
//! short HTTP answer and is closed: one thread serves thousands of checks a second.

use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

/// The answer to every connection.
const ANSWER: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\nok";

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for the scale bench's backends: {0}")]
pub struct BackendsError(std::io::Error);

/// The running listener; stopped when dropped.
pub struct LoopbackBackends {
    port: u16,
    /// Whether nodes may use any `127.x.y.z` (else only `127.0.0.1`).
    any_loopback: bool,
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl LoopbackBackends {
    pub fn start() -> Result<LoopbackBackends, BackendsError> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(BackendsError)?;
        let any_loopback = socket.bind_device(Some(b"lo")).is_ok();
        let ip = if any_loopback {
            Ipv4Addr::UNSPECIFIED
        } else {
            Ipv4Addr::LOCALHOST
        };
        socket.set_reuse_address(true).map_err(BackendsError)?;
        socket
            .bind(&SocketAddr::from((ip, 0)).into())
            .map_err(BackendsError)?;
        socket.listen(4096).map_err(BackendsError)?;
        let listener: TcpListener = socket.into();
        listener.set_nonblocking(true).map_err(BackendsError)?;
        let port = listener.local_addr().map_err(BackendsError)?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (s, a) = (stop.clone(), accepted.clone());
        thread::Builder::new()
            .name("scale-backends".into())
            .spawn(move || serve(listener, &a, &s))
            .map_err(BackendsError)?;
        Ok(LoopbackBackends {
            port,
            any_loopback,
            accepted,
            stop,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address of node number `n` (1, 2, ...): distinct for every n below 2^24.
    pub fn address(&self, n: u32) -> Ipv4Addr {
        if !self.any_loopback {
            return Ipv4Addr::LOCALHOST;
        }
        let [_, a, b, c] = n.to_be_bytes();
        Ipv4Addr::new(127, a, b, c)
    }

    pub fn any_loopback(&self) -> bool {
        self.any_loopback
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for LoopbackBackends {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(listener: TcpListener, accepted: &AtomicU64, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut conn, _)) => {
                accepted.fetch_add(1, Ordering::Relaxed);
                // A health check closes at once; a client reads the answer. Either way the
                // connection is done after one write, whose failure changes nothing.
                let _ = conn.set_nonblocking(true);
                let _ = conn.write_all(ANSWER);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(1)),
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpStream;

    #[test]
    fn answers_on_many_loopback_addresses() {
        let b = LoopbackBackends::start().unwrap();
        for n in [1, 2, 300, 70_000] {
            let addr = b.address(n);
            assert!(addr.is_loopback(), "{addr}");
            let mut s = TcpStream::connect((addr, b.port())).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        }
        if b.any_loopback() {
            assert_ne!(b.address(1), b.address(2));
        }
        assert!(b.accepted() >= 4);
    }
}
