//! ARCHIVE against a mock Swift store over real HTTP: what arrives, and what each failure says.

#[path = "common/swift.rs"]
mod swift;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flate2::read::GzDecoder;
use libra_worker::drivers::{ArchiveTarget, Protocol};
use libra_worker::tools::archive::archive;
use swift::MockSwift;

const TOKEN: &str = "AUTH_tk-0123456789abcdef-secret";
const TIMEOUT: Duration = Duration::from_secs(20);

const HTTP_LINES: &[&str] = &[
    "Jan  9 15:11:45 lb haproxy[712]: Proxy http-in started.",
    "Jan  9 15:11:46 lb haproxy[713]: 10.0.0.9:50114 [09/Jan/2014:15:11:46.101] http-in http-servers/id-11 0/0/1/2/3 200 512 - - --NI 1/1/0/0/0 0/0 \"GET /tcp-in HTTP/1.1\"",
    "Jan  9 15:11:47 lb haproxy[713]: Server http-servers/id-12 is DOWN, reason: Layer4 connection problem.",
];

const TCP_LINES: &[&str] = &[
    "Jan  9 15:11:45 lb haproxy[712]: Proxy tcp-in started.",
    "Jan  9 15:11:48 lb haproxy[713]: 10.0.0.9:50200 [09/Jan/2014:15:11:48.220] tcp-in tcp-servers/id-21 1/0/2044 1877 -- 2/1/1/1/0 0/0",
    "Jan  9 15:11:49 lb haproxy[713]: backend tcp-servers has no server available!",
];

const OTHER_LINES: &[&str] = &[
    "Jan  9 15:11:45 lb haproxy[712]: Proxy stats started.",
    "Jan  9 15:11:45 lb kernel: [1.2] eth0: link up",
];

/// A log interleaving both load balancers' lines with unrelated ones.
fn write_log(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for i in 0..3 {
        for set in [HTTP_LINES, OTHER_LINES, TCP_LINES] {
            text.push_str(set[i.min(set.len() - 1)]);
            text.push('\n');
        }
    }
    let path = dir.join("haproxy.log");
    std::fs::write(&path, text).unwrap();
    path
}

fn expected(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn target(mock: &MockSwift, protocol: Protocol, lb_id: &str, token: &str) -> ArchiveTarget {
    ArchiveTarget {
        container: "lb-logs".to_string(),
        endpoint: mock.endpoint(),
        token: token.to_string(),
        protocol,
        lb_id: lb_id.to_string(),
    }
}

fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    GzDecoder::new(bytes).read_to_string(&mut out).unwrap();
    out
}

/// The one object stored under `prefix`, with its name.
fn only_object(mock: &MockSwift, prefix: &str) -> (String, Vec<u8>) {
    let found: Vec<_> = mock
        .objects()
        .into_iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "objects under {prefix}: {:?}",
        mock.objects().keys().collect::<Vec<_>>()
    );
    found.into_iter().next().unwrap()
}

fn assert_object_name(name: &str, prefix: &str) {
    let stamp = name
        .strip_prefix(prefix)
        .and_then(|n| n.strip_prefix("haproxy-"))
        .and_then(|n| n.strip_suffix(".log.gz"))
        .unwrap_or_else(|| panic!("unexpected object name {name}"));
    assert!(
        chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d-%H%M%S").is_ok(),
        "{name}"
    );
}

fn assert_hides_token(e: &dyn std::fmt::Debug, shown: &str, tokens: &[&str]) {
    let debug = format!("{e:?}");
    for token in tokens {
        assert!(!shown.contains(token), "token in Display: {shown}");
        assert!(!debug.contains(token), "token in Debug: {debug}");
    }
}

#[test]
fn http_archive_holds_exactly_the_http_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path());
    let mock = MockSwift::start(TOKEN);
    archive(&log, &target(&mock, Protocol::Http, "1042", TOKEN), TIMEOUT).unwrap();

    let (name, bytes) = only_object(&mock, "lb-logs/1042/");
    assert_object_name(&name, "lb-logs/1042/");
    assert_eq!(gunzip(&bytes), expected(HTTP_LINES));

    let requests = mock.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(
        (requests[0].method.as_str(), requests[0].path.as_str()),
        ("PUT", "/v1/AUTH_test/lb-logs")
    );
    assert_eq!(requests[0].status, 201);
    let upload = &requests[1];
    assert_eq!(upload.status, 201);
    assert_eq!(upload.header("content-type"), Some("application/gzip"));
    assert_eq!(upload.header("x-auth-token"), Some(TOKEN));
    assert_eq!(upload.header("etag").map(str::len), Some(32));
    assert_eq!(upload.body_len, bytes.len());
}

#[test]
fn tcp_and_galera_archives_take_the_tcp_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path());
    let mock = MockSwift::start(TOKEN);
    archive(&log, &target(&mock, Protocol::Tcp, "7", TOKEN), TIMEOUT).unwrap();
    archive(&log, &target(&mock, Protocol::Galera, "8", TOKEN), TIMEOUT).unwrap();
    assert_eq!(
        gunzip(&only_object(&mock, "lb-logs/7/").1),
        expected(TCP_LINES)
    );
    assert_eq!(
        gunzip(&only_object(&mock, "lb-logs/8/").1),
        expected(TCP_LINES)
    );
    // The second container PUT found it there: Swift answers 202, which is success.
    let statuses: Vec<u16> = mock.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![201, 201, 202, 201]);
}

#[test]
fn names_are_percent_encoded() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path());
    let mock = MockSwift::start(TOKEN);
    let mut t = target(&mock, Protocol::Http, "lb?1#x%2F", TOKEN);
    t.container = "logs é".to_string();
    archive(&log, &t, TIMEOUT).unwrap();
    assert!(mock.containers().contains("logs é"));
    let (name, _) = only_object(&mock, "logs é/lb?1#x%2F/");
    assert_object_name(&name, "logs é/lb?1#x%2F/");
    assert!(mock.requests()[0].path.ends_with("/logs%20%C3%A9"));
}

#[test]
fn wrong_token_is_a_401_error_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path());
    let mock = MockSwift::start(TOKEN);
    let wrong = "AUTH_tk-wrong-but-still-secret";
    let e = archive(&log, &target(&mock, Protocol::Http, "1", wrong), TIMEOUT).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.starts_with("Failure during Swift operations"),
        "{shown}"
    );
    assert!(shown.contains("401"), "{shown}");
    assert!(shown.contains("refused the token"), "{shown}");
    assert_hides_token(&e, &shown, &[wrong, TOKEN]);
    assert!(mock.objects().is_empty());
    assert!(mock.containers().is_empty());
}

#[test]
fn a_store_refusing_everything_is_a_401_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path());
    let mock = MockSwift::start(TOKEN);
    mock.refuse_all(true);
    let e = archive(&log, &target(&mock, Protocol::Tcp, "1", TOKEN), TIMEOUT).unwrap_err();
    assert!(e.to_string().contains("HTTP 401"), "{e}");
    assert_hides_token(&e, &e.to_string(), &[TOKEN]);
}

#[test]
fn damaged_upload_is_a_422_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path());
    let mock = MockSwift::start(TOKEN);
    mock.corrupt_bodies(true);
    let e = archive(&log, &target(&mock, Protocol::Http, "1", TOKEN), TIMEOUT).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.starts_with("Failure during Swift operations"),
        "{shown}"
    );
    assert!(
        shown.contains("422") && shown.contains("checksum"),
        "{shown}"
    );
    assert!(shown.contains("uploading 'lb-logs/1/haproxy-"), "{shown}");
    assert_hides_token(&e, &shown, &[TOKEN]);
    assert!(mock.objects().is_empty());
}

#[test]
fn missing_log_is_no_haproxy_logs_found_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockSwift::start(TOKEN);
    let e = archive(
        &dir.path().join("haproxy.log"),
        &target(&mock, Protocol::Http, "1", TOKEN),
        TIMEOUT,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "No HAProxy logs found");
    assert!(mock.requests().is_empty());
}

#[test]
fn unreachable_store_is_an_error_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path());
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut t = target(&MockSwift::start(TOKEN), Protocol::Http, "1", TOKEN);
    t.endpoint = format!("http://127.0.0.1:{port}/v1/AUTH_test");
    let e = archive(&log, &t, TIMEOUT).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.starts_with("Failure during Swift operations: creating container 'lb-logs' failed"),
        "{shown}"
    );
    assert_hides_token(&e, &shown, &[TOKEN]);
}

#[test]
fn a_silent_store_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path());
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut t = target(&MockSwift::start(TOKEN), Protocol::Http, "1", TOKEN);
    t.endpoint = format!("http://{}/v1/AUTH_test", silent.local_addr().unwrap());
    let started = Instant::now();
    let e = archive(&log, &t, Duration::from_millis(500)).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(e.to_string().contains("timed out"), "{e}");
    drop(silent);
}
