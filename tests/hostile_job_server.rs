//! Hostile job servers: a fake server that registers the worker properly and then sends
//! garbage, a 4 GiB header, half a packet, an unknown packet type or an ERROR. Each time
//! the worker must drop the connection and reconnect, keep its memory flat, and keep
//! serving jobs from the healthy gearmand beside it in the same server list.

mod common;

use std::time::{Duration, Instant};

use common::fake_server::{FakeServer, Hostile, STALL_CLAIM};
use common::worker_toml::set_key;
use common::*;
use serde_json::json;

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Open file descriptors of `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("proc fd")
        .count()
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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Rounds before the memory baseline is taken (buffers and allocator pools warm up).
const WARM_ROUNDS: usize = 2;

/// Runs `rounds` hostile connections and checks the worker's behaviour throughout;
/// `reason` is what the worker must log as the cause of each drop. VmRSS may grow by
/// `rss_slack_kib` at most: what one connection in flight may legitimately hold (the
/// allocator keeps such a buffer's pages for the next one).
fn survives(how: Hostile, rounds: usize, heartbeat: u64, reason: &str, rss_slack_kib: u64) {
    let healthy = Gearmand::start();
    let fake = FakeServer::hostile(how);
    let mut cfg = WorkerConfig::new(&[healthy.addr(), fake.addr()]);
    cfg.reconnect_sleep = 1;
    let w = Worker::start_edited(cfg, |t, _| {
        set_key(&t, "gearman", "heartbeat", &heartbeat.to_string())
    });
    assert!(
        wait_until(Duration::from_secs(10), || !log_lines(
            &w,
            &healthy.addr(),
            "connected to job server"
        )
        .is_empty()),
        "{}",
        w.log()
    );

    // A bound that only a stuck worker reaches: each round takes at most two heartbeats,
    // a reconnect back-off and a connect; allow three times that on a loaded machine.
    let limit = Duration::from_secs(30 + 3 * rounds as u64 * (2 * heartbeat + 3));
    let deadline = Instant::now() + limit;
    let (mut served, mut slowest) = (0, Duration::ZERO);
    let mut baseline = None;
    while fake.closed() < rounds {
        assert!(
            Instant::now() < deadline,
            "only {} of {rounds} hostile rounds in {limit:?}\n{}",
            fake.closed(),
            w.log()
        );
        let started = Instant::now();
        let a = submit(
            &healthy.addr(),
            w.function(),
            &json!({"hpcs_action": "DISCOVER", "n": served}),
        );
        assert!(passed(&a) && a["n"] == served, "{a}");
        slowest = slowest.max(started.elapsed());
        served += 1;
        if baseline.is_none() && fake.closed() >= WARM_ROUNDS {
            baseline = Some((rss_kib(w.pid()), fds(w.pid())));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (after, fds_after) = (rss_kib(w.pid()), fds(w.pid()));
    let (baseline, fds_before) = baseline.expect("baseline taken");
    eprintln!(
        "{how:?}: {rounds} rounds, {served} DISCOVER served (slowest {slowest:?}), \
         VmRSS {baseline} KiB -> {after} KiB"
    );
    assert!(
        slowest < Duration::from_secs(5),
        "the healthy server stalled: {slowest:?}"
    );
    assert!(
        after <= baseline + rss_slack_kib,
        "VmRSS grew from {baseline} KiB to {after} KiB over {} rounds",
        rounds - WARM_ROUNDS
    );
    // At most the connection in flight is open, on either side.
    assert!(
        fds_after <= fds_before + 1,
        "fds {fds_before} -> {fds_after}"
    );
    assert!(fake.accepted() <= fake.closed() + 1);

    // Each hostile connection was registered properly, then dropped by the worker.
    let conns = fake.connections();
    for (i, c) in conns.iter().take(rounds).enumerate() {
        assert!(c.closed.is_some(), "connection {i} still open");
        assert!(
            c.packets
                .iter()
                .any(|p| matches!(p, libra_worker::gearman::Packet::PreSleep)),
            "connection {i} never got as far as PRE_SLEEP: {:?}",
            c.packets
        );
    }
    let drops = log_lines(&w, &fake.addr(), "lost job server connection; reconnecting");
    assert!(
        drops.len() >= rounds,
        "{} reconnects logged for {rounds} rounds\n{}",
        drops.len(),
        w.log()
    );
    for d in &drops {
        assert!(d.contains(reason), "expected '{reason}' in: {d}");
    }
    assert!(
        log_lines(&w, &healthy.addr(), "lost job server connection").is_empty(),
        "the healthy connection was dropped\n{}",
        w.log()
    );
    assert!(w.log().contains("job server connection restored"));
}

#[test]
fn garbage_bytes() {
    survives(Hostile::Garbage, 12, 30, "protocol error: bad magic", 1024);
}

#[test]
fn a_header_claiming_4_gib() {
    survives(
        Hostile::HugeHeader,
        12,
        30,
        "packet body of 4294967295 bytes exceeds the limit of 16777216 bytes",
        1024,
    );
}

#[test]
fn a_packet_that_stalls_half_way() {
    // Half a packet is 4 MiB: leaking it would add that much per round.
    survives(
        Hostile::Stall,
        6,
        1,
        "job server sent nothing for 2 s, not even an ECHO_RES",
        u64::from(STALL_CLAIM) / 1024,
    );
}

#[test]
fn the_stalled_worker_pings_before_it_drops() {
    let fake = FakeServer::hostile(Hostile::Stall);
    let mut cfg = WorkerConfig::new(&[fake.addr()]);
    cfg.reconnect_sleep = 1;
    let w = Worker::start_edited(cfg, |t, _| set_key(&t, "gearman", "heartbeat", "1"));
    assert!(
        wait_until(Duration::from_secs(15), || fake.closed() >= 1),
        "{}",
        w.log()
    );
    let c = &fake.connections()[0];
    let echo_req = b"\0REQ\0\0\0\x10";
    assert!(
        contains(&c.received, echo_req),
        "no ECHO_REQ before the drop"
    );
}

#[test]
fn an_unknown_packet_type() {
    survives(
        Hostile::UnknownType,
        12,
        30,
        "protocol error: unknown packet type 12245933",
        1024,
    );
}

#[test]
fn an_error_packet() {
    survives(
        Hostile::Error,
        12,
        30,
        "job server error ERR_HOSTILE: this job server is hostile",
        1024,
    );
}
