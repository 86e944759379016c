//! The real backends of the zero-drop check: small HTTP/1.1 servers inside the bench
//! process, on free loopback ports, that keep connections alive (HAProxy reuses its server
//! connections) and close only when asked (`Connection: close`) or when stopped. A thread
//! per connection: HAProxy opens a few dozen at most, and blocking I/O keeps the server
//! obviously correct, which matters more here than its speed.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// How often a blocked accept or read looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(200);
/// Largest request head accepted (a bench client sends a few hundred bytes).
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Why a backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot listen on a loopback port for HTTP backend {name}: {source}")]
    Listen {
        name: String,
        source: std::io::Error,
    },
}

/// A running backend; stopped when dropped.
pub struct HttpBackend {
    name: String,
    port: u16,
    hits: Arc<AtomicU64>,
    /// Response bytes written (heads and bodies): what HAProxy's backend `bout` counts.
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl HttpBackend {
    /// Starts a server answering every request `200` with body `<name>`.
    pub fn start(name: &str) -> Result<HttpBackend, BackendError> {
        Self::start_sized(name, 0)
    }

    /// As `start`, with the body padded to at least `body_len` bytes (`<name>` then `.`s):
    /// large answers make the headers HAProxy adds a rounding error in byte counts.
    pub fn start_sized(name: &str, body_len: usize) -> Result<HttpBackend, BackendError> {
        let listen_err = |source| BackendError::Listen {
            name: name.to_string(),
            source,
        };
        let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(listen_err)?;
        let port = listener.local_addr().map_err(listen_err)?.port();
        listener.set_nonblocking(true).map_err(listen_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let mut body = name.to_string();
        body.extend(std::iter::repeat_n(
            '.',
            body_len.saturating_sub(name.len()),
        ));
        let counters = Counters {
            hits: hits.clone(),
            sent: sent.clone(),
            stop: stop.clone(),
        };
        thread::Builder::new()
            .name(format!("backend-{name}"))
            .spawn(move || accept_loop(listener, body, counters))
            .map_err(listen_err)?;
        Ok(HttpBackend {
            name: name.to_string(),
            port,
            hits,
            sent,
            stop,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Requests answered so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Response bytes written so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// What the connection threads share with the handle.
#[derive(Clone)]
struct Counters {
    hits: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn accept_loop(listener: TcpListener, body: String, counters: Counters) {
    let body: Arc<str> = Arc::from(body);
    while !counters.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                let (b, c) = (body.clone(), counters.clone());
                // A connection we cannot serve is dropped (closed); HAProxy retries it.
                let _ = thread::Builder::new()
                    .name("backend-conn".into())
                    .spawn(move || serve(conn, &b, &c));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(2)),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// One parsed request head: whether the client wants the connection closed, and how many
/// body bytes follow.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    close: bool,
    length: usize,
}

/// Reads one request head; `Ok(None)` at a clean end of the connection or on stop.
fn read_head(
    reader: &mut BufReader<TcpStream>,
    stop: &AtomicBool,
) -> std::io::Result<Option<Head>> {
    let mut head = Head {
        close: false,
        length: 0,
    };
    let mut seen = 0usize;
    let mut first = true;
    loop {
        let mut line = String::new();
        let n = loop {
            match reader.read_line(&mut line) {
                Ok(n) => break n,
                // The read timeout only exists to look at the stop flag; a partial line
                // read so far stays in `line`.
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return Ok(None);
        }
        seen += n;
        if seen > MAX_HEAD_BYTES {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        let l = line.trim_end().to_ascii_lowercase();
        if first {
            first = false;
            // HTTP/1.0 closes unless asked otherwise.
            head.close = l.ends_with("http/1.0");
            continue;
        }
        if l.is_empty() {
            return Ok(Some(head));
        }
        if let Some(v) = l.strip_prefix("connection:") {
            if v.contains("close") {
                head.close = true;
            } else if v.contains("keep-alive") {
                head.close = false;
            }
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            head.length = v.trim().parse().unwrap_or(0);
        }
    }
}

fn serve(conn: TcpStream, body: &str, counters: &Counters) {
    let stop = &*counters.stop;
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_nodelay(true);
    let _ = conn.set_read_timeout(Some(STOP_CHECK));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while let Ok(Some(head)) = read_head(&mut reader, stop) {
        if head.length > 0 {
            let mut sink = vec![0u8; head.length.min(1 << 20)];
            if reader.read_exact(&mut sink).is_err() {
                break;
            }
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n{}\r\n{body}",
            body.len(),
            if head.close {
                "Connection: close\r\n"
            } else {
                ""
            }
        );
        if writer.write_all(response.as_bytes()).is_err() {
            break;
        }
        counters.hits.fetch_add(1, Ordering::Relaxed);
        counters
            .sent
            .fetch_add(response.len() as u64, Ordering::Relaxed);
        if head.close {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(s: &mut TcpStream, request: &str) -> String {
        s.write_all(request.as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        // The answer is small: read until the body (after the blank line) is complete.
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((_, b)) = text.split_once("\r\n\r\n") {
                if b.len() >= 2 {
                    break;
                }
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    #[test]
    fn keeps_alive_until_asked_to_close() {
        let b = HttpBackend::start("b1").unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", b.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for _ in 0..3 {
            let a = exchange(&mut s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
            assert!(a.ends_with("\r\n\r\nb1"), "{a}");
            assert!(!a.contains("Connection: close"), "{a}");
        }
        let a = exchange(
            &mut s,
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        );
        assert!(a.contains("Connection: close\r\n"), "{a}");
        let mut rest = Vec::new();
        assert_eq!(
            s.read_to_end(&mut rest).unwrap(),
            0,
            "closed after the answer"
        );
        assert_eq!(b.hits(), 4);
    }

    #[test]
    fn sized_bodies_are_padded_and_counted() {
        let b = HttpBackend::start_sized("b3", 1000).unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", b.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        let text = String::from_utf8(got).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body.len(), 1000);
        assert!(body.starts_with("b3..."), "{body}");
        assert!(text.contains("Content-Length: 1000\r\n"), "{text}");
        assert_eq!(b.bytes_sent(), text.len() as u64);
    }

    #[test]
    fn http_1_0_closes_and_stop_frees_the_port() {
        let b = HttpBackend::start("b2").unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", b.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let a = exchange(&mut s, "GET / HTTP/1.0\r\n\r\n");
        assert!(a.contains("Connection: close"), "HTTP/1.0 closes: {a}");
        let port = b.port();
        drop(b);
        // A stopped backend refuses new connections once its accept loop has noticed.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline
            && TcpStream::connect(("127.0.0.1", port)).is_ok()
        {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
