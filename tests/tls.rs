//! TLS to job servers as sites deploy it: a real gearmand behind a real TLS terminator
//! (HAProxy in TCP mode, `verify required`), certificates made by the test, the real
//! worker binary with `tls://` servers and `ssl_ca` / `ssl_cert` / `ssl_key`.

mod common;

use std::time::Duration;

use common::fake_server::FakeServer;
use common::gearman_admin::registered;
use common::tls::{Pki, TlsTerminator};
use common::worker_toml::{quoted_path, set_key};
use common::*;
use serde_json::json;

/// A worker trusting `pki.ca`, presenting the client certificate when `client_cert`.
fn tls_worker(servers: &[String], pki: &Pki, client_cert: bool, reconnect_sleep: u64) -> Worker {
    let mut cfg = WorkerConfig::new(servers);
    cfg.reconnect_sleep = reconnect_sleep;
    Worker::start_edited(cfg, |t, _| {
        let t = set_key(&t, "gearman", "ssl_ca", &quoted_path(&pki.ca));
        if client_cert {
            let t = set_key(&t, "gearman", "ssl_cert", &quoted_path(&pki.client_cert));
            set_key(&t, "gearman", "ssl_key", &quoted_path(&pki.client_key))
        } else {
            t
        }
    })
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
            && refused[0].contains("UnknownIssuer"),
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
        failures[0].contains("CertificateRequired"),
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
