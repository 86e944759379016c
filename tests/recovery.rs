//! HAProxy back at once after a crash: the watch on the master restarts a killed HAProxy
//! (spawned by this worker or adopted from an earlier one) from the last good
//! configuration without waiting for a housekeeping turn, never a suspended or deleted
//! load balancer's, and the restarted HAProxy starts with the node health of the last
//! snapshot (a DOWN node stays DOWN from its first moment).
//!
//! Every worker here runs with the `housekeeping-idle-off` failpoint: only the first
//! housekeeping turn (start-up) runs, so whatever restarts HAProxy is the watch; the
//! tests assert the worker's own counters, not timings.

mod common;

use std::time::Duration;

use common::appliance::{http_lb, node, Appliance};
use common::backends::{http_get, http_get_path, Backend};
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

const NO_TICKS: (&str, &str) = ("FAILPOINTS", "housekeeping-idle-off=return");

fn appliance() -> (Appliance, u16) {
    let mport = free_port();
    let a = Appliance::start_with(|cfg| {
        cfg.metrics_listen = format!("127.0.0.1:{mport}");
        cfg.env
            .push((NO_TICKS.0.to_string(), NO_TICKS.1.to_string()));
    });
    (a, mport)
}

/// A counter from the worker's `/metrics` page.
fn counter(metrics_port: u16, name: &str) -> u64 {
    let (status, page) = http_get_path(metrics_port, "/metrics").expect("/metrics");
    assert_eq!(status, 200);
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{page}"))
}

/// Waits until the watch's restart number `n` is done: counted (before the start, when
/// the gauge already says down) and then HAProxy up again, the new master watched.
fn wait_watch_restart(w: &Worker, mport: u16, n: u64) {
    wait_counter(w, mport, WATCH_RESTARTS, n);
    let up = || {
        let (_, page) = http_get_path(mport, "/metrics").expect("/metrics");
        page.lines().any(|l| l == "libra_worker_haproxy_up 1")
    };
    assert!(
        wait_until(Duration::from_secs(20), up),
        "HAProxy not up again\n{}",
        w.log()
    );
}

fn wait_counter(w: &Worker, mport: u16, name: &str, at_least: u64) {
    assert!(
        wait_until(Duration::from_secs(20), || counter(mport, name) >= at_least),
        "{name} never reached {at_least} (now {})\n{}",
        counter(mport, name),
        w.log()
    );
}

fn master_pid(state: &std::path::Path) -> i32 {
    std::fs::read_to_string(state.join("haproxy.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid")
}

fn serves(port: u16, body: &str) -> bool {
    http_get(port, None).is_ok_and(|r| r.0 == 200 && r.1 == body)
}

const WATCH_RESTARTS: &str = "libra_worker_haproxy_watch_restarts_total";
const RESTARTS: &str = "libra_worker_haproxy_restarts_total";
const EXITS: &str = "libra_worker_haproxy_watch_exits_total";
const TURNS: &str = "libra_worker_driver_housekeeping_total";

#[test]
fn a_killed_master_is_restarted_by_the_watch_without_a_housekeeping_turn() {
    let (a, mport) = appliance();
    let b = Backend::http("b");
    let port = free_port();
    assert!(passed(&a.update(json!([http_lb(port, vec![node(1, &b)])]))));
    assert!(serves(port, "b"));
    for round in 1..=3 {
        let master = master_pid(&a.state_dir());
        // The master alone: its workers exit on their own when it is gone.
        kill(Pid::from_raw(master), Signal::SIGKILL).unwrap();
        wait_watch_restart(&a.w, mport, round);
        assert!(
            wait_until(Duration::from_secs(20), || serves(port, "b")),
            "{}",
            a.w.log()
        );
        assert_ne!(master_pid(&a.state_dir()), master, "a new master");
    }
    assert_eq!(counter(mport, RESTARTS), 3, "every restart was the watch's");
    assert_eq!(
        counter(mport, TURNS),
        1,
        "no housekeeping turn but the first ran"
    );
    assert!(passed(&a.action("STATS")));
}

#[test]
fn a_suspended_or_deleted_load_balancer_is_not_restarted_by_the_watch() {
    let (a, mport) = appliance();
    let b = Backend::http("b");
    let port = free_port();
    assert!(passed(&a.update(json!([http_lb(port, vec![node(1, &b)])]))));
    // SUSPEND stops the master: the watch reports that exit like any other, and the
    // driver, which handles the report before any later job (one mailbox), declines.
    let exits = counter(mport, EXITS);
    assert!(passed(&a.action("SUSPEND")));
    wait_counter(&a.w, mport, EXITS, exits + 1);
    let stats = a.action("STATS");
    assert!(!passed(&stats), "{stats}");
    assert!(
        !port_open(port),
        "a suspended load balancer is not restarted"
    );
    assert!(
        a.w.log()
            .contains("not restarted: the load balancer is suspended or deleted"),
        "{}",
        a.w.log()
    );

    // Back, then killed: restarted.
    assert!(passed(&a.action("ENABLE")));
    assert!(serves(port, "b"));
    let master = master_pid(&a.state_dir());
    kill(Pid::from_raw(master), Signal::SIGKILL).unwrap();
    wait_watch_restart(&a.w, mport, 1);
    assert!(wait_until(Duration::from_secs(20), || serves(port, "b")));

    // DELETE stops it too; nothing comes back.
    let exits = counter(mport, EXITS);
    assert!(passed(&a.action("DELETE")));
    wait_counter(&a.w, mport, EXITS, exits + 1);
    let stats = a.action("STATS");
    assert!(!passed(&stats), "{stats}");
    assert!(!port_open(port), "a deleted load balancer is not restarted");
    assert_eq!(counter(mport, WATCH_RESTARTS), 1);
    assert_eq!(counter(mport, RESTARTS), 1);
}

#[test]
fn a_master_adopted_from_an_earlier_worker_is_watched_too() {
    let (a, mport) = appliance();
    let b = Backend::http("b");
    let port = free_port();
    assert!(passed(&a.update(json!([http_lb(port, vec![node(1, &b)])]))));
    let Appliance { g, w } = a;
    let config = w.config.clone();
    let master = master_pid(&w.dir.path().join("state"));
    // HAProxy outlives the worker by design; the next worker adopts it.
    let dir = w.stop();
    let w = Worker::start_in(config, dir);
    assert!(w.wait_for_log("adopted the running HAProxy", 1, Duration::from_secs(20)));
    // The first turn, which adopts the master and arms the watch on it, is done.
    wait_counter(&w, mport, TURNS, 1);
    assert_eq!(master_pid(&w.dir.path().join("state")), master, "adopted");
    kill(Pid::from_raw(master), Signal::SIGKILL).unwrap();
    wait_watch_restart(&w, mport, 1);
    assert!(
        wait_until(Duration::from_secs(20), || serves(port, "b")),
        "{}",
        w.log()
    );
    assert_ne!(master_pid(&w.dir.path().join("state")), master);
    assert_eq!(counter(mport, TURNS), 1);
    drop(g);
}

/// The `status` of server `id-<id>` in `show stat`, if the stats socket answers.
fn server_status(a: &Appliance, id: u32) -> Option<String> {
    let path = a.state_dir().join("stats.sock");
    let mut s = std::os::unix::net::UnixStream::connect(path).ok()?;
    use std::io::{Read, Write};
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"show stat\n").ok()?;
    let mut csv = String::new();
    s.read_to_string(&mut csv).ok()?;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (sv, status) = (col("svname")?, col("status")?);
    let name = format!("id-{id}");
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.len() > status && f[sv] == name)
        .map(|f| f[status].to_string())
}

/// The `srv_op_state` of server `id-<id>` in the saved server-state file.
fn saved_op_state(a: &Appliance, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(a.state_dir().join("server-state")).ok()?;
    let mut columns: Vec<String> = Vec::new();
    let name = format!("id-{id}");
    for line in text.lines() {
        if let Some(names) = line.strip_prefix('#') {
            columns = names.split_whitespace().map(str::to_string).collect();
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let at = |c: &str| columns.iter().position(|x| x == c).and_then(|i| f.get(i));
        if at("srv_name") == Some(&name.as_str()) {
            return at("srv_op_state").map(|s| s.to_string());
        }
    }
    None
}

#[test]
fn after_a_crash_a_down_node_is_down_from_the_first_moment() {
    let (a, mport) = appliance();
    let up = Backend::http("up");
    // Nothing listens there: its health check fails.
    let down_port = free_port();
    let port = free_port();
    let mut lb = http_lb(
        port,
        vec![
            node(1, &up),
            json!({"id": 2, "address": "127.0.0.1", "port": down_port}),
        ],
    );
    // A fresh server counts as UP until its first check, up to `delay` later: long
    // enough that only the snapshot can make it DOWN at once.
    lb["monitor"] = json!({"type": "CONNECT", "delay": 5, "timeout": 1, "attempts": 1});
    assert!(passed(&a.update(json!([lb]))));
    assert!(
        wait_until(Duration::from_secs(30), || server_status(&a, 2)
            .is_some_and(|s| s.starts_with("DOWN"))),
        "node 2 never went DOWN: {:?}",
        server_status(&a, 2)
    );
    // The periodic snapshot (not a reload: none happened) saved it DOWN (op state 0).
    assert!(
        wait_until(Duration::from_secs(20), || saved_op_state(&a, 2).as_deref()
            == Some("0")),
        "no snapshot with node 2 DOWN: {:?}\n{}",
        saved_op_state(&a, 2),
        a.w.log()
    );
    assert!(counter(mport, "libra_worker_haproxy_state_snapshots_total") >= 1);
    assert_eq!(
        saved_op_state(&a, 1).as_deref(),
        Some("2"),
        "node 1 saved UP"
    );
    // Master and workers at once: whatever answers on the stats socket next is the new
    // HAProxy.
    let master = master_pid(&a.state_dir());
    kill(Pid::from_raw(-master), Signal::SIGKILL).unwrap();
    let _ = kill(Pid::from_raw(master), Signal::SIGKILL);
    let mut first = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            first = server_status(&a, 2);
            first.is_some()
        }),
        "{}",
        a.w.log()
    );
    let first = first.unwrap();
    assert!(
        first.starts_with("DOWN"),
        "node 2 is {first} at the restarted HAProxy's first answer"
    );
    wait_watch_restart(&a.w, mport, 1);
    // And traffic goes to the node that is up.
    for _ in 0..10 {
        assert!(serves(port, "up"));
    }
}
