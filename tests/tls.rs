//! TLS to job servers as sites deploy it: a real gearmand behind a real TLS terminator
//! (HAProxy in TCP mode, `verify required`), certificates made by the test, the real
//! worker binary with `tls://` servers and `ssl_ca` / `ssl_cert` / `ssl_key`, from the
//! native TOML or the reference INI. Certificates as operators have them too: X.509 v1,
//! CN only, as `openssl x509 -req` signs without an extension file.

mod common;

use std::path::Path;
use std::time::Duration;

use common::fake_server::FakeServer;
use common::gearman_admin::registered;
use common::tls::{Pki, TlsTerminator, V1_SERVER_CN};
use common::worker_toml::{quoted_path, set_key};
use common::*;
use serde_json::json;

/// The start-up line of a worker that does not check the job servers' names.
const NAME_NOT_CHECKED: &str = "their host names are not checked";

/// Which configuration file a TLS worker reads, and so whether it checks server names.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    /// Native TOML, `ssl_verify_hostname` at its default: names are checked.
    Toml,
    /// Native TOML with `ssl_verify_hostname = false`.
    TomlNamesUnchecked,
    /// The reference INI (`worker.cfg`), where names are not checked by default.
    Ini,
}

/// A worker trusting `ca`, presenting `client` (certificate, key) when given.
fn start_tls_worker(
    format: Format,
    servers: &[String],
    ca: &Path,
    client: Option<(&Path, &Path)>,
    reconnect_sleep: u64,
) -> Worker {
    let mut cfg = WorkerConfig::new(servers);
    cfg.reconnect_sleep = reconnect_sleep;
    if format == Format::Ini {
        let mut lines = format!("ssl_ca = {}\n", ca.display());
        if let Some((cert, key)) = client {
            lines += &format!(
                "ssl_cert = {}\nssl_key = {}\n",
                cert.display(),
                key.display()
            );
        }
        return Worker::start_ini(cfg, &lines);
    }
    Worker::start_edited(cfg, |t, _| {
        let mut t = set_key(&t, "gearman", "ssl_ca", &quoted_path(ca));
        if let Some((cert, key)) = client {
            t = set_key(&t, "gearman", "ssl_cert", &quoted_path(cert));
            t = set_key(&t, "gearman", "ssl_key", &quoted_path(key));
        }
        if format == Format::TomlNamesUnchecked {
            t = set_key(&t, "gearman", "ssl_verify_hostname", "false");
        }
        t
    })
}

/// A TOML worker trusting `pki.ca`, presenting the client certificate when `client_cert`.
fn tls_worker(servers: &[String], pki: &Pki, client_cert: bool, reconnect_sleep: u64) -> Worker {
    let client = client_cert.then_some((pki.client_cert.as_path(), pki.client_key.as_path()));
    start_tls_worker(Format::Toml, servers, &pki.ca, client, reconnect_sleep)
}

/// Waits until `w` says it is connected to `server`.
fn wait_connected(w: &Worker, server: &str) {
    assert!(
        wait_until(Duration::from_secs(15), || !log_lines(
            w,
            server,
            "connected to job server"
        )
        .is_empty()),
        "{}",
        w.log()
    );
}

/// Waits until `w` logs a failure to reach `server` whose reason holds `reason`.
fn wait_refused(w: &Worker, server: &str, reason: &str) -> String {
    let found = wait_until(Duration::from_secs(15), || {
        log_lines(w, server, "TLS handshake failed")
            .iter()
            .any(|l| l.contains(reason))
    });
    assert!(
        found,
        "no refusal for '{reason}' from {server}:\n{}",
        w.log()
    );
    log_lines(w, server, "TLS handshake failed")
        .into_iter()
        .find(|l| l.contains(reason))
        .unwrap_or_default()
}

/// Every connection through `wire` opened with a ClientHello, and none carried Gearman
/// or any of `functions` in clear.
fn assert_only_tls_on_the_wire(wire: &FakeServer, functions: &[&str]) {
    let conns = wire.connections();
    assert!(!conns.is_empty(), "no connection went through the wire");
    for (i, c) in conns.iter().enumerate() {
        let b = &c.received;
        if c.closed.is_none() && b.is_empty() {
            continue; // Just accepted; nothing sent yet.
        }
        assert!(
            b.len() > 5 && b[0] == 0x16 && b[1] == 0x03 && b[5] == 0x01,
            "connection {i} did not open with a ClientHello: {:02x?}",
            &b[..b.len().min(16)]
        );
        assert!(
            !contains(b, b"\0REQ"),
            "connection {i} carried Gearman in clear"
        );
        for f in functions {
            assert!(
                !contains(b, f.as_bytes()),
                "connection {i} carried {f} in clear"
            );
        }
    }
}

fn discover(server: &str, function: &str, n: usize) {
    for i in 0..n {
        let a = submit(
            server,
            function,
            &json!({"hpcs_action": "DISCOVER", "n": i}),
        );
        assert!(passed(&a), "{a}");
        assert_eq!(a["n"], i, "{a}");
    }
}

/// Log lines about `server` that contain `needle`.
fn log_lines(w: &Worker, server: &str, needle: &str) -> Vec<String> {
    let tag = format!("server: {server}");
    w.log()
        .lines()
        .filter(|l| l.contains(needle) && l.contains(&tag))
        .map(String::from)
        .collect()
}

#[test]
fn jobs_flow_through_a_terminator_that_demands_a_client_certificate() {
    let pki = Pki::generate();
    let g = Gearmand::start();
    let term = TlsTerminator::haproxy(&pki.server_pem, &pki.ca, g.port);
    let wire = FakeServer::relay(term.port);
    let w = tls_worker(&[format!("tls://{}", wire.addr())], &pki, true, 2);
    let via = wire.addr();
    assert!(
        wait_until(Duration::from_secs(15), || !log_lines(
            &w,
            &via,
            "connected to job server"
        )
        .is_empty()),
        "{}",
        w.log()
    );
    // The worker's only job server is the terminator: a job answered came through it.
    discover(&g.addr(), w.function(), 3);
    assert!(registered(g.port, w.function()));
    let conns = wire.connections();
    assert_eq!(conns.len(), 1, "one connection carried every job");
    let b = &conns[0].received;
    assert!(
        b.len() > 5 && b[0] == 0x16 && b[5] == 0x01,
        "opens with a ClientHello"
    );
    for clear in [
        &b"\0REQ"[..],
        b"hpcs_action",
        b"DISCOVER",
        w.function().as_bytes(),
    ] {
        assert!(
            !contains(b, clear),
            "{:?} went over the wire in clear",
            String::from_utf8_lossy(clear)
        );
    }
}

#[test]
fn a_server_certificate_from_another_ca_is_refused_and_never_spoken_to_in_clear() {
    let pki = Pki::generate();
    let g = Gearmand::start();
    let rogue = TlsTerminator::haproxy(&pki.rogue_server_pem, &pki.ca, g.port);
    let wire = FakeServer::relay(rogue.port);
    let w = tls_worker(&[format!("tls://{}", wire.addr())], &pki, true, 4);

    // Back-off: 1 s, 2 s, 4 s (+ up to 20 % jitter) between attempts.
    assert!(
        wait_until(Duration::from_secs(20), || wire.closed() >= 4),
        "attempts: {}\n{}",
        wire.accepted(),
        w.log()
    );
    let conns: Vec<_> = wire
        .connections()
        .into_iter()
        .filter(|c| c.closed.is_some())
        .collect();
    let gaps: Vec<f64> = conns
        .windows(2)
        .map(|p| (p[1].accepted - p[0].accepted).as_secs_f64())
        .collect();
    for (gap, least) in gaps.iter().zip([0.95, 1.9, 3.8]) {
        assert!(*gap >= least, "retry gaps {gaps:?} do not back off");
    }

    for (i, c) in conns.iter().enumerate() {
        let b = &c.received;
        // A TLS handshake record holding a ClientHello: nothing else came first.
        assert!(
            b.len() > 5 && b[0] == 0x16 && b[1] == 0x03 && b[5] == 0x01,
            "connection {i} did not open with a ClientHello: {:02x?}",
            &b[..b.len().min(16)]
        );
        assert!(
            !contains(b, b"\0REQ") && !contains(b, w.function().as_bytes()),
            "connection {i} carried Gearman in clear"
        );
    }

    let refused = log_lines(&w, &wire.addr(), "TLS handshake failed");
    assert!(!refused.is_empty(), "{}", w.log());
    assert!(
        refused[0].contains("cannot reach job server; retrying with back-off")
            && refused[0]
                .contains("certificate verify failed: unable to get local issuer certificate"),
        "{}",
        refused[0]
    );
    assert!(
        log_lines(&w, &wire.addr(), "job server still unreachable").len() >= 2,
        "{}",
        w.log()
    );
    assert!(!registered(g.port, w.function()));
}

#[test]
fn a_worker_without_a_client_certificate_is_refused_by_the_terminator() {
    let pki = Pki::generate();
    let g = Gearmand::start();
    let term = TlsTerminator::haproxy(&pki.server_pem, &pki.ca, g.port);
    let wire = FakeServer::relay(term.port);
    let w = tls_worker(&[format!("tls://{}", wire.addr())], &pki, false, 1);

    assert!(
        wait_until(Duration::from_secs(15), || wire.closed() >= 4),
        "attempts: {}\n{}",
        wire.accepted(),
        w.log()
    );
    for c in wire.connections().iter().filter(|c| c.closed.is_some()) {
        assert!(c.received.first() == Some(&0x16), "a TLS record first");
        assert!(!contains(&c.received, b"\0REQ"), "Gearman in clear");
    }
    let failures = log_lines(&w, &wire.addr(), "retrying with back-off");
    assert_eq!(
        failures.len(),
        1,
        "one warning per failure series: {failures:?}"
    );
    assert!(
        failures[0].contains("certificate required"),
        "the reason names the refusal: {}",
        failures[0]
    );
    assert!(
        log_lines(&w, &wire.addr(), "job server still unreachable").len() >= 2,
        "{}",
        w.log()
    );
    assert!(!w.log().contains("connected to job server"), "{}", w.log());
    assert!(!registered(g.port, w.function()), "no job can flow");
}

#[test]
fn plain_and_tls_servers_in_one_list_both_deliver_jobs() {
    let pki = Pki::generate();
    let plain = Gearmand::start();
    let behind = Gearmand::start();
    let term = TlsTerminator::haproxy(&pki.server_pem, &pki.ca, behind.port);
    // With ssl_ca set a bare entry would mean TLS; tcp:// keeps this one plain.
    let servers = [format!("tcp://{}", plain.addr()), term.server_entry()];
    let w = tls_worker(&servers, &pki, true, 2);
    assert!(
        w.wait_for_log("connected to job server", 2, Duration::from_secs(15)),
        "{}",
        w.log()
    );
    for _ in 0..2 {
        discover(&plain.addr(), w.function(), 1);
        discover(&behind.addr(), w.function(), 1);
    }
    assert!(registered(plain.port, w.function()));
    assert!(registered(behind.port, w.function()));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn v1_certificates_as_openssl_signs_them_carry_jobs_with_the_reference_ini() {
    let pki = Pki::generate();
    let g = Gearmand::start();
    // v1, CN "localhost", no subjectAltName: signed by `openssl x509 -req` alone.
    let term = TlsTerminator::haproxy(&pki.v1_server_pem, &pki.ca, g.port);
    let wire = FakeServer::relay(term.port);
    let client = (pki.v1_client_cert.as_path(), pki.v1_client_key.as_path());
    // Dialled by IP while the certificate names "localhost": the reference never
    // checked the name, so its INI does not either; the chain is still verified.
    let w = start_tls_worker(Format::Ini, &[wire.addr()], &pki.ca, Some(client), 2);
    wait_connected(&w, &wire.addr());
    discover(&g.addr(), w.function(), 3);
    assert!(registered(g.port, w.function()));
    assert_only_tls_on_the_wire(&wire, &[w.function(), "DISCOVER"]);
    assert_eq!(
        w.log().matches(NAME_NOT_CHECKED).count(),
        1,
        "said once at start: {}",
        w.log()
    );
}

#[test]
fn a_v1_cn_only_server_certificate_passes_the_toml_name_check_by_its_cn() {
    let pki = Pki::generate();
    let g = Gearmand::start();
    let term = TlsTerminator::haproxy(&pki.v1_server_pem, &pki.ca, g.port);
    let server = format!("{V1_SERVER_CN}:{}", term.port);
    let client = (pki.v1_client_cert.as_path(), pki.v1_client_key.as_path());
    let w = start_tls_worker(
        Format::Toml,
        &[format!("tls://{server}")],
        &pki.ca,
        Some(client),
        2,
    );
    wait_connected(&w, &server);
    discover(&g.addr(), w.function(), 2);
    assert!(registered(g.port, w.function()));
    assert!(!w.log().contains(NAME_NOT_CHECKED), "{}", w.log());
}

#[test]
fn a_certificate_for_another_name_is_refused_by_toml_defaults_and_taken_by_the_ini_or_with_the_check_off(
) {
    let pki = Pki::generate();
    let g = Gearmand::start();
    // A valid v3 certificate from the trusted CA, for gearman.example only.
    let term = TlsTerminator::haproxy(&pki.other_name_server_pem, &pki.ca, g.port);
    let wire = FakeServer::relay(term.port);
    let by_ip = wire.addr();
    let by_name = format!("localhost:{}", wire.port);
    let client = Some((pki.client_cert.as_path(), pki.client_key.as_path()));
    let strict = start_tls_worker(
        Format::Toml,
        &[format!("tls://{by_ip}"), format!("tls://{by_name}")],
        &pki.ca,
        client,
        1,
    );
    let ini = start_tls_worker(Format::Ini, &[term.server_entry()], &pki.ca, client, 1);
    let unchecked = start_tls_worker(
        Format::TomlNamesUnchecked,
        &[term.server_entry()],
        &pki.ca,
        client,
        1,
    );

    let direct = format!("127.0.0.1:{}", term.port);
    for w in [&ini, &unchecked] {
        wait_connected(w, &direct);
        discover(&g.addr(), w.function(), 2);
        assert!(registered(g.port, w.function()));
        assert_eq!(w.log().matches(NAME_NOT_CHECKED).count(), 1, "{}", w.log());
    }

    let ip = wait_refused(
        &strict,
        &by_ip,
        "certificate verify failed: IP address mismatch",
    );
    assert!(ip.contains("cannot reach job server"), "{ip}");
    let name = wait_refused(
        &strict,
        &by_name,
        "certificate verify failed: hostname mismatch",
    );
    assert!(name.contains("cannot reach job server"), "{name}");
    // Retried, and refused again every time.
    assert!(
        wait_until(Duration::from_secs(10), || wire.closed() >= 4),
        "{}",
        strict.log()
    );
    assert!(
        !strict.log().contains("connected to job server"),
        "{}",
        strict.log()
    );
    assert!(!strict.log().contains(NAME_NOT_CHECKED), "{}", strict.log());
    assert!(!registered(g.port, strict.function()));
    assert_only_tls_on_the_wire(&wire, &[strict.function()]);
}

#[test]
fn a_server_certificate_from_another_ca_is_refused_even_when_names_are_not_checked() {
    let pki = Pki::generate();
    let g = Gearmand::start();
    let rogue = TlsTerminator::haproxy(&pki.rogue_server_pem, &pki.ca, g.port);
    let wire = FakeServer::relay(rogue.port);
    let client = Some((pki.v1_client_cert.as_path(), pki.v1_client_key.as_path()));
    let servers = [format!("tls://{}", wire.addr())];
    let ini = start_tls_worker(Format::Ini, &servers, &pki.ca, client, 1);
    let unchecked = start_tls_worker(Format::TomlNamesUnchecked, &servers, &pki.ca, client, 1);
    for w in [&ini, &unchecked] {
        let line = wait_refused(
            w,
            &wire.addr(),
            "certificate verify failed: unable to get local issuer certificate",
        );
        assert!(line.contains("retrying with back-off"), "{line}");
    }
    assert!(
        wait_until(Duration::from_secs(10), || wire.closed() >= 4),
        "{}\n{}",
        ini.log(),
        unchecked.log()
    );
    for w in [&ini, &unchecked] {
        assert!(!w.log().contains("connected to job server"), "{}", w.log());
        assert!(!registered(g.port, w.function()));
    }
    assert_only_tls_on_the_wire(&wire, &[ini.function(), unchecked.function()]);
}

#[test]
fn tls_files_are_checked_at_start_and_v1_client_certificates_accepted() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        cli(&["check-config", "--config", p.to_str().unwrap()])
    };
    let files = |cert: &Path, key: &Path, quote: &str| {
        format!(
            "ssl_ca = {q}{}{q}\nssl_cert = {q}{}{q}\nssl_key = {q}{}{q}\n",
            pki.ca.display(),
            cert.display(),
            key.display(),
            q = quote
        )
    };
    let v1 = files(&pki.v1_client_cert, &pki.v1_client_key, "\"");
    let out = check("v1.toml", format!("[gearman]\n{v1}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ssl_verify_hostname = true"), "{stdout}");

    let v1 = files(&pki.v1_client_cert, &pki.v1_client_key, "");
    let out = check("v1.cfg", format!("[gearman]\n{v1}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("ssl_verify_hostname = false"), "{stdout}");
    assert!(stderr.contains(NAME_NOT_CHECKED), "{stderr}");

    let out = check(
        "explicit.cfg",
        format!("[gearman]\n{v1}ssl_verify_hostname = true\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ssl_verify_hostname = true"), "{stdout}");

    // The server's key with the client's certificate.
    let server_key = pki.dir.path().join("server.key");
    let wrong = files(&pki.client_cert, &server_key, "\"");
    let out = check("wrong-key.toml", format!("[gearman]\n{wrong}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("gearman.ssl_key") && stderr.contains("does not match the certificate"),
        "{stderr}"
    );

    // A key where the CA certificate should be.
    let out = check(
        "key-as-ca.toml",
        format!("[gearman]\nssl_ca = \"{}\"\n", server_key.display()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("gearman.ssl_ca") && stderr.contains("no PEM certificate"),
        "{stderr}"
    );
}
