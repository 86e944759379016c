//! A mock OpenStack Swift account for integration tests: a real HTTP/1.1 server on
//! 127.0.0.1 (std::net, one thread per connection) that enforces what the real store does
//! for uploads: the token, containers before objects, and the `ETag` checksum. Hand-written
//! because no test crate in Cargo.toml serves Swift; it depends on nothing in this crate.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use md5::{Digest, Md5};

/// The account path every URL must start with.
pub const ACCOUNT: &str = "/v1/AUTH_test";

/// A request as the mock saw it, with the status it answered.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub method: String,
    /// The raw (still percent-encoded) path.
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    pub status: u16,
}

impl LoggedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Store {
    containers: BTreeSet<String>,
    /// `container/object` (decoded) -> bytes.
    objects: BTreeMap<String, Vec<u8>>,
    requests: Vec<LoggedRequest>,
    refuse_all: bool,
    corrupt_bodies: bool,
}

struct Shared {
    token: String,
    store: Mutex<Store>,
    stopping: AtomicBool,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        // A panicking handler thread must not hide the log from the test.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running mock; stops its accept loop when dropped.
pub struct MockSwift {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl MockSwift {
    /// Starts a store that accepts only `token`.
    pub fn start(token: &str) -> MockSwift {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            token: token.to_string(),
            store: Mutex::new(Store::default()),
            stopping: AtomicBool::new(false),
        });
        let accept_shared = Arc::clone(&shared);
        let acceptor = thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let conn_shared = Arc::clone(&accept_shared);
                thread::spawn(move || {
                    let _ = serve(stream, &conn_shared);
                });
            }
        });
        MockSwift {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The account URL, as an ARCHIVE job's `hpcs_object_store_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}{ACCOUNT}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every stored object, keyed `container/object` with names decoded.
    pub fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        self.shared.store().objects.clone()
    }

    pub fn containers(&self) -> BTreeSet<String> {
        self.shared.store().containers.clone()
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.store().requests.clone()
    }

    /// Creates a container as if someone else had.
    pub fn add_container(&self, name: &str) {
        self.shared.store().containers.insert(name.to_string());
    }

    /// When on, every request is answered 401, whatever its token.
    pub fn refuse_all(&self, on: bool) {
        self.shared.store().refuse_all = on;
    }

    /// When on, one byte of every object body is flipped on arrival, as damage in transit
    /// would, so the `ETag` check fails.
    pub fn corrupt_bodies(&self, on: bool) {
        self.shared.store().corrupt_bodies = on;
    }
}

impl Drop for MockSwift {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(handle) = self.acceptor.take() {
            let _ = handle.join();
        }
    }
}

struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Response {
    fn new(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }
}

/// Answers requests on one connection until the client closes it or asks to.
fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let Some((request_line, headers)) = read_head(&mut reader)? else {
            return Ok(());
        };
        let mut parts = request_line.split_whitespace();
        let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
        else {
            write_response(&mut writer, &Response::new(400, "Bad request line\n"), true)?;
            return Ok(());
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let mut close = version == "HTTP/1.0"
            || header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let (response, body_len) = if header("transfer-encoding").is_some() {
            // Swift needs the length up front; chunked uploads are not what we send.
            close = true;
            (Response::new(411, "Length Required\n"), 0)
        } else {
            let length = match header("content-length").map(|v| v.trim().parse::<usize>()) {
                None => Ok(0),
                Some(Ok(n)) if n <= 256 << 20 => Ok(n),
                _ => Err(()),
            };
            match length {
                Err(()) => {
                    close = true;
                    (Response::new(400, "Bad Content-Length\n"), 0)
                }
                Ok(n) => {
                    let mut body = vec![0; n];
                    reader.read_exact(&mut body)?;
                    (handle(shared, method, path, &headers, body), n)
                }
            }
        };
        shared.store().requests.push(LoggedRequest {
            method: method.to_string(),
            path: path.to_string(),
            headers: headers.clone(),
            body_len,
            status: response.status,
        });
        write_response(&mut writer, &response, close)?;
        if close {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

type Headers = Vec<(String, String)>;

/// Reads a request line and headers; `None` when the client closed between requests.
fn read_head(reader: &mut BufReader<TcpStream>) -> io::Result<Option<(String, Headers)>> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "headers cut short",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        if headers.len() > 100 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "too many headers",
            ));
        }
    }
    Ok(Some((request_line.trim_end().to_string(), headers)))
}

/// The Swift rules, in the order the real proxy applies them.
fn handle(
    shared: &Shared,
    method: &str,
    path: &str,
    headers: &Headers,
    mut body: Vec<u8>,
) -> Response {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let mut store = shared.store();
    if store.refuse_all || header("x-auth-token") != Some(shared.token.as_str()) {
        return Response::new(401, "<html><h1>Unauthorized</h1></html>");
    }
    let Some(rest) = path.strip_prefix(ACCOUNT).and_then(|r| r.strip_prefix('/')) else {
        return Response::new(404, "Not Found\n");
    };
    let (container, object) = match rest.split_once('/') {
        Some((c, o)) => (decode(c), Some(decode(o))),
        None => (decode(rest), None),
    };
    let (Some(container), Some(object)) = (container, object.unwrap_or(Some(String::new()))) else {
        return Response::new(400, "Invalid UTF8 or contains NULL\n");
    };
    if container.is_empty() {
        return Response::new(400, "Container name required\n");
    }
    match (method, object.is_empty()) {
        ("PUT", true) => {
            if store.containers.insert(container) {
                Response::new(201, "")
            } else {
                Response::new(202, "")
            }
        }
        ("PUT", false) => {
            if !store.containers.contains(&container) {
                return Response::new(404, "Not Found\n");
            }
            if store.corrupt_bodies {
                if let Some(b) = body.first_mut() {
                    *b ^= 0xff;
                }
            }
            let md5 = hex(&Md5::digest(&body));
            if let Some(etag) = header("etag") {
                if !etag.trim_matches('"').eq_ignore_ascii_case(&md5) {
                    return Response::new(422, "Unprocessable Entity\n");
                }
            }
            store.objects.insert(format!("{container}/{object}"), body);
            Response {
                status: 201,
                headers: vec![("ETag", md5)],
                body: Vec::new(),
            }
        }
        ("GET", false) => match store.objects.get(&format!("{container}/{object}")) {
            Some(bytes) => Response {
                status: 200,
                headers: Vec::new(),
                body: bytes.clone(),
            },
            None => Response::new(404, "Not Found\n"),
        },
        _ => Response::new(405, "Method Not Allowed\n"),
    }
}

fn write_response(w: &mut TcpStream, r: &Response, close: bool) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\n",
        r.status,
        reason(r.status),
        r.body.len()
    );
    for (name, value) in &r.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    w.write_all(&r.body)?;
    w.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        422 => "Unprocessable Entity",
        _ => "Unknown",
    }
}

/// Percent-decodes a path part; `None` if it is not UTF-8 (Swift refuses those names).
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex_digit = |j: usize| bytes.get(j).and_then(|&b| char::from(b).to_digit(16));
        if let (b'%', Some(hi), Some(lo)) = (bytes[i], hex_digit(i + 1), hex_digit(i + 2)) {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|s| !s.contains('\0'))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
