//! Real backends for the load balancers under test: HTTP servers that answer with their
//! own name (keep-alive aware) and TCP echo servers, each on a free loopback port, in a
//! background thread, until dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// The delay that means "until released".
const HOLD: u64 = u64::MAX;

/// A running backend.
pub struct Backend {
    pub name: String,
    pub port: u16,
    pub hits: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Milliseconds an HTTP backend waits before each answer.
    delay_ms: Arc<AtomicU64>,
    /// The request line of every HTTP request received, health checks included.
    requests: Arc<Mutex<Vec<String>>>,
    /// Bytes written to clients (what HAProxy's backend `bout` counts).
    sent: Arc<AtomicU64>,
}

impl Backend {
    /// An HTTP/1.1 server answering every request with `200` and body `<name>`.
    pub fn http(name: &str) -> Backend {
        Self::spawn(name, 0, true)
    }

    /// An HTTP server on a given port (to bring a killed backend back).
    pub fn http_on(name: &str, port: u16) -> Backend {
        Self::spawn(name, port, true)
    }

    /// A TCP server that echoes every byte back, prefixed once by `<name>:`.
    pub fn echo(name: &str) -> Backend {
        Self::spawn(name, 0, false)
    }

    fn spawn(name: &str, port: u16, http: bool) -> Backend {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicU64::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let (s, h, n, d, r, o) = (
            stop.clone(),
            hits.clone(),
            name.to_string(),
            delay_ms.clone(),
            requests.clone(),
            sent.clone(),
        );
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (s2, h2, n2, d2, r2, o2) = (
                            s.clone(),
                            h.clone(),
                            n.clone(),
                            d.clone(),
                            r.clone(),
                            o.clone(),
                        );
                        thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            if http {
                                serve_http(conn, &n2, &h2, &s2, &d2, &r2, &o2)
                            } else {
                                serve_echo(conn, &n2, &h2, &o2)
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Backend {
            name: name.to_string(),
            port,
            hits,
            stop,
            delay_ms,
            requests,
            sent,
        }
    }

    /// Bytes this backend has written to its clients.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// The request lines received so far (`GET /path HTTP/1.0`), byte for byte.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Makes every later HTTP answer wait `ms` milliseconds.
    pub fn set_delay_ms(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Holds every HTTP answer (the request counted in `hits`) until [`Backend::release`]:
    /// a request stays in flight for as long as a test needs, not for a guessed time.
    pub fn hold(&self) {
        self.delay_ms.store(HOLD, Ordering::Relaxed);
    }

    /// Lets held answers (and later ones) go at once.
    pub fn release(&self) {
        self.delay_ms.store(0, Ordering::Relaxed);
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Give the accept loop time to notice, so the port is free for a restart.
        thread::sleep(Duration::from_millis(20));
    }
}

fn serve_http(
    conn: TcpStream,
    name: &str,
    hits: &AtomicU64,
    stop: &AtomicBool,
    delay_ms: &AtomicU64,
    requests: &Mutex<Vec<String>>,
    sent: &AtomicU64,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(conn);
    loop {
        if stop.load(Ordering::Relaxed) {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Ok(mut r) = requests.lock() {
            r.push(request_line.trim_end_matches(['\r', '\n']).to_string());
        }
        let mut close = false;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if l.starts_with("connection:") && l.contains("close") {
                close = true;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        if length > 0 {
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        }
        if stop.load(Ordering::Relaxed) {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        hits.fetch_add(1, Ordering::Relaxed);
        while delay_ms.load(Ordering::Relaxed) == HOLD && !stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(5));
        }
        let delay = delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            thread::sleep(Duration::from_millis(delay));
        }
        let body = name.as_bytes();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        // Counted before writing: a client that has read the answer must find it counted
        // (counted after, a test reading the count at once could miss the last answer).
        sent.fetch_add((head.len() + body.len()) as u64, Ordering::Relaxed);
        if writer
            .write_all(head.as_bytes())
            .and_then(|_| writer.write_all(body))
            .is_err()
        {
            return;
        }
        if close {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn serve_echo(mut conn: TcpStream, name: &str, hits: &AtomicU64, sent: &AtomicU64) {
    hits.fetch_add(1, Ordering::Relaxed);
    let hello = format!("{name}:");
    // Counted before writing, as in `serve_http`.
    sent.fetch_add(hello.len() as u64, Ordering::Relaxed);
    if conn.write_all(hello.as_bytes()).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                sent.fetch_add(n as u64, Ordering::Relaxed);
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// One HTTP GET through `port`; returns (status, body, set-cookie header).
pub fn http_get(port: u16, cookie: Option<&str>) -> std::io::Result<(u16, String, Option<String>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n{cookie}\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let set_cookie = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .map(|l| l["set-cookie:".len()..].trim().to_string());
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body, set_cookie))
}

/// Bodies seen over `n` fresh connections through the load balancer on `port` (empty for
/// a request that failed).
pub fn bodies(port: u16, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| http_get(port, None).map(|(_, b, _)| b).unwrap_or_default())
        .collect()
}

/// One HTTP GET of `path` on a loopback port; returns (status, body).
pub fn http_get_path(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
