//! ARCHIVE: ships one load balancer's HAProxy log lines, gzipped, to a Swift container.
//! The log is streamed into an unlinked spool file (it can be large), hashed on the way so
//! the upload carries an `ETag` the store checks; the two Swift calls (container, object)
//! are plain authenticated PUTs, which a blocking reqwest client does without a Swift SDK.

use std::error::Error as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use md5::{Digest, Md5};
use reqwest::blocking::{Body, Client};
use reqwest::header::{HeaderValue, CONTENT_TYPE, ETAG};

use super::render;
use crate::drivers::types::{ArchiveTarget, Protocol};

/// Characters around a log word that are not part of a proxy name (`(tcp-in/TCP)`,
/// `http-in~` for TLS frontends, `Proxy http-in started.`).
const WORD_TRIM: &[u8] = b"'\"()[]{}<>,.:;!~";

/// Why a log was not archived. None of these texts ever carries the token.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("No HAProxy logs found")]
    NoLogs,
    #[error("Failure reading the HAProxy log {}: {source}", path.display())]
    ReadLog { path: PathBuf, source: io::Error },
    #[error("Failure compressing the HAProxy log into {}: {source}", dir.display())]
    Compress { dir: PathBuf, source: io::Error },
    #[error("Failure during Swift operations: {0}")]
    InvalidTarget(String),
    #[error("Failure during Swift operations: cannot set up the HTTP client: {0}")]
    Client(String),
    #[error("Failure during Swift operations: {step} failed: {reason}")]
    Request { step: String, reason: String },
    #[error("Failure during Swift operations: {step} was answered HTTP {status}{}", status_hint(*status))]
    Status { step: String, status: u16 },
}

/// Archives the lines of `target`'s load balancer found in `logfile` as
/// `<endpoint>/<container>/<lb id>/haproxy-<UTC yyyymmdd-HHMMSS>.log.gz`. Each HTTP request
/// is bounded by `timeout`.
pub fn archive(
    logfile: &Path,
    target: &ArchiveTarget,
    timeout: Duration,
) -> Result<(), ArchiveError> {
    let log = File::open(logfile).map_err(|_| ArchiveError::NoLogs)?;
    archive_log(log, logfile, target, timeout)
}

/// As [`archive`], from a log already opened (by a privileged reader, in service mode).
pub fn archive_log(
    log: File,
    logfile: &Path,
    target: &ArchiveTarget,
    timeout: Duration,
) -> Result<(), ArchiveError> {
    if !log.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(ArchiveError::NoLogs);
    }
    let object = format!(
        "haproxy-{}.log.gz",
        chrono::Utc::now().format("%Y%m%d-%H%M%S")
    );
    let container_url = container_url(&target.endpoint, &target.container)?;
    let object_url = format!(
        "{container_url}/{}/{}",
        segment(&target.lb_id)?,
        segment(&object)?
    );
    let mut token = HeaderValue::from_str(&target.token).map_err(|_| {
        ArchiveError::InvalidTarget(
            "the token has characters an HTTP header cannot carry".to_string(),
        )
    })?;
    token.set_sensitive(true);

    let spool = compress_lines(log, logfile, target.protocol)?;

    let client = Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        // A redirect could carry the token elsewhere; Swift does not redirect PUTs.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ArchiveError::Client(causes(&e)))?;

    let step = format!("creating container '{}'", target.container);
    let response = client
        .put(&container_url)
        .header("X-Auth-Token", token.clone())
        .header(reqwest::header::CONTENT_LENGTH, "0")
        .send()
        .map_err(|e| ArchiveError::Request {
            step: step.clone(),
            reason: causes(&e),
        })?;
    check_status(step, response.status())?;

    let step = format!("uploading '{}/{}/{object}'", target.container, target.lb_id);
    let response = client
        .put(&object_url)
        .header("X-Auth-Token", token)
        .header(ETAG, spool.md5_hex.as_str())
        .header(CONTENT_TYPE, "application/gzip")
        .body(Body::sized(spool.file, spool.len))
        .send()
        .map_err(|e| ArchiveError::Request {
            step: step.clone(),
            reason: causes(&e),
        })?;
    check_status(step, response.status())
}

/// The gzip of one load balancer's lines, ready to send.
struct Spool {
    file: File,
    len: u64,
    md5_hex: String,
}

/// Streams the lines of `protocol`'s frontend and backend (`http-in`, `http-servers`) through gzip
/// into a spool file, hashing the compressed bytes as they are written.
fn compress_lines(log: File, logfile: &Path, protocol: Protocol) -> Result<Spool, ArchiveError> {
    let dir = std::env::temp_dir();
    let compress_error = |source| ArchiveError::Compress {
        dir: dir.clone(),
        source,
    };
    let file = spool_file(&dir).map_err(compress_error)?;
    let hashing = HashingWriter {
        inner: BufWriter::new(file),
        md5: Md5::new(),
        len: 0,
    };
    let mut gz = GzEncoder::new(hashing, Compression::default());
    let names = ProxyNames::new(protocol);
    let mut reader = BufReader::new(log);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| ArchiveError::ReadLog {
                path: logfile.to_path_buf(),
                source,
            })?;
        if n == 0 {
            break;
        }
        if names.matches(&line) {
            gz.write_all(&line).map_err(compress_error)?;
        }
    }
    let hashing = gz.finish().map_err(compress_error)?;
    let HashingWriter { inner, md5, len } = hashing;
    let mut file = inner
        .into_inner()
        .map_err(|e| compress_error(e.into_error()))?;
    file.rewind().map_err(compress_error)?;
    let md5_hex = md5.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Spool { file, len, md5_hex })
}

/// A private file in `dir` that disappears when closed, whatever happens to this process
/// in between: it is unlinked as soon as it is open.
fn spool_file(dir: &Path) -> io::Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut last_error = io::Error::new(io::ErrorKind::AlreadyExists, "no free spool file name");
    for _ in 0..16 {
        let name = format!(
            "libra-archive-{}-{}.gz",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => {
                fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = e,
            Err(e) => return Err(e),
        }
    }
    Err(last_error)
}

/// Counts and hashes what goes through it.
struct HashingWriter<W> {
    inner: W,
    md5: Md5,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.md5.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The frontend and backend names of one load balancer. A line belongs to it when one of
/// its words names one of them (`http-in`, `http-in~`, `http-servers/id-11`), so that a
/// request path such as `/tcp-in` in an HTTP line does not put it in the TCP archive.
struct ProxyNames {
    frontend: Vec<u8>,
    backend: Vec<u8>,
}

impl ProxyNames {
    fn new(protocol: Protocol) -> ProxyNames {
        ProxyNames {
            frontend: render::frontend_name(protocol).into_bytes(),
            backend: render::backend_name(protocol).into_bytes(),
        }
    }

    fn matches(&self, line: &[u8]) -> bool {
        line.split(|b| b.is_ascii_whitespace()).any(|word| {
            let word = trim(word);
            let proxy = word
                .split(|&b| b == b'/')
                .next()
                .map(trim)
                .unwrap_or_default();
            proxy == self.frontend.as_slice() || proxy == self.backend.as_slice()
        })
    }
}

fn trim(word: &[u8]) -> &[u8] {
    let start = word
        .iter()
        .position(|b| !WORD_TRIM.contains(b))
        .unwrap_or(word.len());
    let end = word
        .iter()
        .rposition(|b| !WORD_TRIM.contains(b))
        .map_or(start, |i| i + 1);
    &word[start..end.max(start)]
}

/// `<endpoint>/<container>`, the endpoint being a Swift account URL.
fn container_url(endpoint: &str, container: &str) -> Result<String, ArchiveError> {
    let url = reqwest::Url::parse(endpoint)
        .map_err(|e| ArchiveError::InvalidTarget(format!("the endpoint is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(ArchiveError::InvalidTarget(
            "the endpoint must be an http(s) account URL without query or fragment".to_string(),
        ));
    }
    Ok(format!(
        "{}/{}",
        url.as_str().trim_end_matches('/'),
        segment(container)?
    ))
}

/// One percent-encoded path segment. `.` and `..` would be resolved away by URL parsing,
/// so they are refused rather than sent somewhere else.
fn segment(s: &str) -> Result<String, ArchiveError> {
    if s.is_empty() || s == "." || s == ".." {
        return Err(ArchiveError::InvalidTarget(format!(
            "'{}' cannot be a Swift name",
            s.escape_debug()
        )));
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

fn check_status(step: String, status: reqwest::StatusCode) -> Result<(), ArchiveError> {
    if status.is_success() {
        Ok(())
    } else {
        Err(ArchiveError::Status {
            step,
            status: status.as_u16(),
        })
    }
}

/// What a Swift status means for the person reading the error.
fn status_hint(status: u16) -> String {
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason());
    let mut text = reason.map(|r| format!(" {r}")).unwrap_or_default();
    match status {
        401 | 403 => text.push_str(": the object store refused the token"),
        404 => text.push_str(": the account or container does not exist"),
        422 => text.push_str(": the object store rejected the checksum (the upload was damaged)"),
        _ => {}
    }
    text
}

/// The error and its causes (reqwest's own text leaves out why the request failed).
fn causes(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::types::Protocol;
    use flate2::read::GzDecoder;
    use std::io::Read;

    fn gunzip(mut file: File) -> Vec<u8> {
        let mut out = Vec::new();
        GzDecoder::new(&mut file).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn lines_are_matched_by_proxy_name() {
        let http = ProxyNames::new(Protocol::Http);
        let tcp = ProxyNames::new(Protocol::Tcp);
        let line = b"Jan  9 15:11:45 lb haproxy[7]: 10.0.0.9:5 [09/Jan/2014:15:11:45.123] http-in http-servers/id-11 0/0/1/2/3 200 512 - - ---- 1/1/0/0/0 0/0 \"GET /tcp-in HTTP/1.1\"\n";
        assert!(http.matches(line));
        assert!(!tcp.matches(line), "a request path is not a proxy name");
        assert!(tcp.matches(
            b"haproxy[7]: 1.2.3.4:5 [x] tcp-in tcp-servers/id-1 1/0/2 77 -- 0/0/0/0/0 0/0"
        ));
        assert!(
            http.matches(b"haproxy[7]: Server http-servers/id-11 is DOWN, reason: Layer4 timeout")
        );
        assert!(http.matches(b"haproxy[7]: Proxy http-in started."));
        assert!(http.matches(b"haproxy[7]: 1.2.3.4:5 [x] http-in~ http-servers/id-2 0/0 200"));
        assert!(tcp.matches(b"haproxy[7]: Connect from 1.2.3.4:5 to 5.6.7.8:3306 (tcp-in/TCP)"));
        assert!(tcp.matches(b"haproxy[7]: backend 'tcp-servers' has no server available!"));
        assert!(!http.matches(b"haproxy[7]: Proxy http-inventory started."));
        assert!(!http.matches(b"haproxy[7]: Proxy stats started."));
        assert!(!http.matches(b""));
    }

    #[test]
    fn compression_keeps_only_matching_lines_and_hashes_the_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haproxy.log");
        let mut text = Vec::new();
        for i in 0..2000 {
            writeln!(
                text,
                "haproxy[1]: 1.2.3.4:{i} [x] http-in http-servers/id-1 0/0 200 {i}"
            )
            .unwrap();
            writeln!(
                text,
                "haproxy[1]: 1.2.3.4:{i} [x] tcp-in tcp-servers/id-1 0/0 {i}"
            )
            .unwrap();
        }
        text.extend_from_slice(b"haproxy[1]: last http-in line without newline \xff");
        fs::write(&path, &text).unwrap();
        let spool = compress_lines(File::open(&path).unwrap(), &path, Protocol::Http).unwrap();
        let mut gz = Vec::new();
        let mut file = spool.file;
        file.read_to_end(&mut gz).unwrap();
        assert_eq!(gz.len() as u64, spool.len);
        let expected: String = Md5::digest(&gz)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(spool.md5_hex, expected);
        file.rewind().unwrap();
        let lines = gunzip(file);
        let kept: Vec<&[u8]> = lines.split_inclusive(|&b| b == b'\n').collect();
        assert_eq!(kept.len(), 2001);
        assert!(kept[..2000].iter().all(
            |l| l.windows(7).any(|w| w == b"http-in") && !l.windows(6).any(|w| w == b"tcp-in")
        ));
        assert!(kept[2000].ends_with(b"\xff"));
    }

    #[test]
    fn urls_are_percent_encoded_and_dot_segments_refused() {
        assert_eq!(segment("a b/c?d#e%f").unwrap(), "a%20b%2Fc%3Fd%23e%25f");
        assert_eq!(
            segment("haproxy-20140109-151145.log.gz").unwrap(),
            "haproxy-20140109-151145.log.gz"
        );
        assert_eq!(segment("é").unwrap(), "%C3%A9");
        for bad in ["", ".", ".."] {
            assert!(segment(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            container_url("https://swift.example.com/v1/AUTH_x/", "logs 1").unwrap(),
            "https://swift.example.com/v1/AUTH_x/logs%201"
        );
        assert!(container_url("ftp://x/v1", "c").is_err());
        assert!(container_url("http://x/v1?a=b", "c").is_err());
        assert!(container_url("not a url", "c").is_err());
    }

    #[test]
    fn missing_or_unreadable_log_is_no_logs_found() {
        let dir = tempfile::tempdir().unwrap();
        let target = ArchiveTarget {
            container: "c".into(),
            endpoint: "http://127.0.0.1:9/v1/AUTH_x".into(),
            token: "tok".into(),
            protocol: Protocol::Http,
            lb_id: "1".into(),
        };
        let missing = archive(
            &dir.path().join("nope.log"),
            &target,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert_eq!(missing.to_string(), "No HAProxy logs found");
        let directory = archive(dir.path(), &target, Duration::from_secs(1)).unwrap_err();
        assert_eq!(directory.to_string(), "No HAProxy logs found");
    }

    #[test]
    fn status_errors_say_what_the_store_meant() {
        let e = ArchiveError::Status {
            step: "creating container 'c'".into(),
            status: 401,
        };
        assert_eq!(
            e.to_string(),
            "Failure during Swift operations: creating container 'c' was answered HTTP 401 Unauthorized: the object store refused the token"
        );
        let e = ArchiveError::Status {
            step: "uploading 'c/1/x'".into(),
            status: 422,
        };
        assert!(
            e.to_string()
                .contains("422 Unprocessable Entity: the object store rejected the checksum"),
            "{e}"
        );
        let e = ArchiveError::Status {
            step: "x".into(),
            status: 599,
        };
        assert!(e.to_string().ends_with("HTTP 599"), "{e}");
    }
}
