//! The worker dies at each named step of an apply (a `failpoints` build aborts exactly
//! there, as a SIGKILL would) while traffic flows: the next worker adopts the same HAProxy
//! master, reconciles the interrupted update, the live file passes `haproxy -c`, no request
//! fails, the job the dead worker held is answered by its successor, and METRICS summed over
//! the whole run bills exactly the bytes the backend sent, none twice, none lost.

// Without the `failpoints` feature only the stand-in test below is built.
#![cfg_attr(not(feature = "failpoints"), allow(unused_imports, dead_code))]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::backends::{http_get, Backend};
use common::*;
use libra_worker::config::haproxy_binary_from_env;
use libra_worker::tools::process::validate;
use serde_json::{json, Value};

/// What makes the worker reach a crash point.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Trigger {
    /// A change that needs a reload (a new client timeout).
    Structural,
    /// New weights for two nodes: two runtime API commands on every HAProxy (node adds
    /// and removals reload where HAProxy has no dynamic servers).
    NodesOnly,
    Metrics,
}

/// Every crash point of the apply path, with the job that reaches it.
const POINTS: &[(&str, Trigger)] = &[
    ("apply-candidate-checked", Trigger::Structural),
    ("ledger-saved-before-reload", Trigger::Structural),
    ("apply-backup-taken", Trigger::Structural),
    ("apply-file-replaced", Trigger::Structural),
    ("apply-before-reload", Trigger::Structural),
    ("apply-after-reload", Trigger::Structural),
    ("runtime-between-commands", Trigger::NodesOnly),
    ("metrics-ledger-written", Trigger::Metrics),
];

const INTERRUPTED: &str =
    "an update was interrupted; reloading HAProxy from the configuration file";

/// Every web node but the first has weight `weight`.
fn update(
    http_port: u16,
    tcp_port: u16,
    web: &[Backend],
    db: &Backend,
    timeout: u32,
    weight: u16,
) -> Value {
    let nodes: Vec<Value> = web
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let weight = if i == 0 { 1 } else { weight };
            json!({"id": i + 1, "address": "127.0.0.1", "port": b.port, "weight": weight})
        })
        .collect();
    json!({"hpcs_action": "UPDATE", "loadBalancers": [
        {"protocol": "HTTP", "port": http_port, "nodes": nodes,
         "options": {"client_timeout": timeout}},
        {"protocol": "TCP", "port": tcp_port,
         "nodes": [{"id": 100, "address": "127.0.0.1", "port": db.port}]}]})
}

fn tcp_bytes_billed(metrics: &Value) -> u64 {
    assert!(passed(metrics), "{metrics}");
    metrics["loadBalancers"]
        .as_array()
        .expect("loadBalancers")
        .iter()
        .find(|l| l["protocol"] == "tcp")
        .map(|l| l["bytes_out"].as_u64().expect("an integer"))
        .unwrap_or_else(|| panic!("no tcp entry: {metrics}"))
}

/// A few round trips through the TCP load balancer, each on its own connection, all of
/// them closed before returning (so no byte is in flight at the next reload).
fn tcp_burst(port: u16, round: usize) {
    for i in 0..5 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let payload = vec![b'a' + (i as u8); 500 + round * 10 + i];
        s.write_all(&payload).unwrap();
        let want = "db:".len() + payload.len();
        let mut got = 0;
        let mut buf = [0u8; 4096];
        while got < want {
            let n = s.read(&mut buf).expect("echo");
            assert!(n > 0, "closed early");
            got += n;
        }
    }
}

/// The master's pid from its pid file. A reloading master re-executes and rewrites the
/// file (HAProxy 2.2 truncates it first), so an empty read is waited out.
fn master_pid(state: &std::path::Path) -> String {
    let mut pid = String::new();
    wait_until(Duration::from_secs(10), || {
        pid = std::fs::read_to_string(state.join("haproxy.pid"))
            .expect("pid file")
            .trim()
            .to_string();
        !pid.is_empty()
    });
    pid
}

#[cfg(feature = "failpoints")]
#[test]
fn the_worker_dies_at_each_step_of_an_apply_and_its_successor_reconciles() {
    let g = Gearmand::start();
    let web: Vec<Backend> = (1..=3).map(|i| Backend::http(&format!("web{i}"))).collect();
    let db = Backend::echo("db");
    let (http_port, tcp_port) = (free_port(), free_port());
    let mut cfg = WorkerConfig::new(&[g.addr()]);
    cfg.driver = "haproxy".to_string();
    // Each worker appends to the same log: wait for one more connection than before.
    let start = |cfg: &WorkerConfig, dir: tempfile::TempDir| {
        let before = std::fs::read_to_string(dir.path().join("worker.log"))
            .unwrap_or_default()
            .matches("connected to job server")
            .count();
        let w = Worker::start_in(cfg.clone(), dir);
        assert!(
            w.wait_for_log(
                "connected to job server",
                before + 1,
                Duration::from_secs(15)
            ),
            "{}",
            w.log()
        );
        w
    };
    let mut w = start(&cfg, tempfile::tempdir().unwrap());
    let job = |w: &Worker, body: &Value| submit(&g.addr(), w.function(), body);
    let base = update(http_port, tcp_port, &web, &db, 30_000, 1);
    assert!(passed(&job(&w, &base)));
    let mut billed = tcp_bytes_billed(&job(&w, &json!({"hpcs_action": "METRICS"})));

    // Requests through the HTTP load balancer the whole time: none may fail.
    let (served, failed, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let load = {
        let (served, failed, stop) = (served.clone(), failed.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match http_get(http_port, None) {
                    Ok((200, _, _)) => served.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };

    let mut interrupted_seen = 0;
    for (round, (point, trigger)) in POINTS.iter().enumerate() {
        let served_before = served.load(Ordering::Relaxed);
        tcp_burst(tcp_port, round);
        // A worker armed to die at `point`.
        let dir = w.stop();
        let state = dir.path().join("state");
        let master = master_pid(&state);
        let mut armed = cfg.clone();
        armed.env = vec![("FAILPOINTS".to_string(), format!("{point}=return"))];
        w = start(&armed, dir);
        let body = match trigger {
            Trigger::Structural => update(http_port, tcp_port, &web, &db, 31_000 + round as u32, 1),
            Trigger::NodesOnly => update(http_port, tcp_port, &web, &db, 30_000, 2 + round as u16),
            Trigger::Metrics => json!({"hpcs_action": "METRICS"}),
        };
        let unique = format!("crash-{round}-{}", free_port());
        let held = {
            let (addr, function, unique, body) = (
                g.addr(),
                w.function().to_string(),
                unique.clone(),
                body.clone(),
            );
            std::thread::spawn(move || submit_unique(&addr, &function, &unique, &body))
        };
        assert!(
            wait_until(Duration::from_secs(20), || !w.is_running()),
            "{point}: the worker did not die there\n{}",
            w.log()
        );
        // HAProxy carries on without its worker.
        assert_eq!(master_pid(&state), master, "{point}");
        assert_eq!(
            http_get(http_port, None).map(|r| r.0).ok(),
            Some(200),
            "{point}"
        );

        // Its successor adopts the same master and reconciles the interrupted update.
        let dir = w.stop();
        w = start(&cfg, dir);
        if *trigger != Trigger::Metrics {
            interrupted_seen += 1;
            assert!(
                w.wait_for_log(INTERRUPTED, interrupted_seen, Duration::from_secs(15)),
                "{point}: the successor did not reconcile\n{}",
                w.log()
            );
        }
        assert_eq!(
            master_pid(&state),
            master,
            "{point}: the same HAProxy master"
        );
        let check = validate(&haproxy_binary_from_env(), &state.join("haproxy.cfg"));
        assert!(
            check.is_ok(),
            "{point}: the live file passes haproxy -c: {check:?}"
        );
        // The job the dead worker held comes back from the job server and is answered.
        let answer = held.join().unwrap();
        assert!(passed(&answer), "{point}: {answer}");
        if *trigger == Trigger::Metrics {
            billed += tcp_bytes_billed(&answer);
        }
        // The next UPDATE and METRICS are right.
        assert!(passed(&job(&w, &base)), "{point}");
        billed += tcp_bytes_billed(&job(&w, &json!({"hpcs_action": "METRICS"})));
        assert_eq!(
            billed,
            db.bytes_sent(),
            "{point}: every byte billed once, so far"
        );
        assert!(
            served.load(Ordering::Relaxed) > served_before,
            "{point}: requests went through the load balancer meanwhile"
        );
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let (served, failed) = (
        served.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    assert_eq!(failed, 0, "{failed} of {} requests failed", served + failed);

    billed += tcp_bytes_billed(&job(&w, &json!({"hpcs_action": "METRICS"})));
    assert_eq!(
        billed,
        db.bytes_sent(),
        "METRICS over the run equals the bytes sent"
    );
}

#[cfg(not(feature = "failpoints"))]
#[test]
fn the_worker_dies_at_each_step_of_an_apply_and_its_successor_reconciles() {
    skip_or_fail("the crash points need `cargo test --features failpoints`");
}
