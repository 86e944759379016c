//! The HAProxy driver across reloads and restarts, end to end (a real gearmand, the real
//! worker binary running a real HAProxy in managed mode, real backends): node-only
//! UPDATEs applied through the runtime API without a reload, stickiness and node health
//! carried across a reload, billed bytes counted once across reloads and worker restarts,
//! and a restarted worker adopting the HAProxy that kept serving. One job at a time is in
//! `haproxy.rs`.

mod common;

use std::time::Duration;

use common::appliance::{http_lb, node, Appliance};
use common::backends::{bodies, http_get, Backend};
use common::*;
use serde_json::{json, Value};

#[test]
fn metrics_count_bytes_once_across_reloads_and_restarts() {
    let a = Appliance::start();
    let b = Backend::http("b");
    let port = free_port();
    assert!(passed(&a.update(json!([http_lb(port, vec![node(1, &b)])]))));
    let first = a.action("METRICS");
    assert!(passed(&first), "{first}");
    let re = regex_like_utc(first["utc_end"].as_str().unwrap());
    assert!(re, "{first}");
    // As the billing scheduler reads it: protocol `http`, bytes a JSON integer.
    let bytes = |v: &Value| -> u64 {
        v["loadBalancers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["protocol"] == "http")
            .map(|l| l["bytes_out"].as_u64().expect("bytes_out is an integer"))
            .unwrap_or_else(|| panic!("no http entry: {v}"))
    };
    for _ in 0..20 {
        assert_eq!(http_get(port, None).unwrap().1, "b");
    }
    let m = a.action("METRICS");
    let out = bytes(&m);
    assert!(out >= 20 * 40, "20 responses of 40+ bytes each: {m}");
    assert_eq!(
        m["utc_start"].as_str().unwrap(),
        one_microsecond_after(first["utc_end"].as_str().unwrap()),
        "a period starts just after the last one"
    );
    let again = a.action("METRICS");
    assert!(bytes(&again) < 100, "right after: about zero: {again}");

    // Traffic, then a reload (a new UPDATE), more traffic: nothing lost, nothing twice.
    for _ in 0..10 {
        http_get(port, None).unwrap();
    }
    let b2 = Backend::http("b2");
    assert!(passed(&a.update(json!([http_lb(
        port,
        vec![node(1, &b), node(2, &b2)]
    )]))));
    for _ in 0..10 {
        http_get(port, None).unwrap();
    }
    // A worker restart before the report loses nothing either.
    let Appliance { g, w } = a;
    let cfg = w.config.clone();
    let w = Worker::start_in(cfg, w.stop());
    assert!(w.wait_for_log("connected to job server", 1, Duration::from_secs(15)));
    let a = Appliance { g, w };
    let m = a.action("METRICS");
    let per_response = out / 20;
    let got = bytes(&m);
    assert!(
        got >= 20 * per_response - 40 && got <= 20 * per_response + 40,
        "20 responses: {got} vs {per_response} each"
    );
}

fn one_microsecond_after(utc: &str) -> String {
    let format = "%Y-%m-%d %H:%M:%S%.6f";
    let t = chrono::NaiveDateTime::parse_from_str(utc, format).unwrap();
    (t + chrono::Duration::microseconds(1))
        .format(format)
        .to_string()
}

/// `YYYY-MM-DD HH:MM:SS.ffffff`
fn regex_like_utc(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 26
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && s.chars()
            .enumerate()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19].contains(&i) || c.is_ascii_digit())
}

#[test]
fn worker_restart_keeps_traffic_and_adopts_haproxy() {
    let a = Appliance::start();
    let b = Backend::http("b");
    let port = free_port();
    assert!(passed(&a.update(json!([http_lb(port, vec![node(1, &b)])]))));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ok = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let load = {
        let (stop, failures, ok) = (stop.clone(), failures.clone(), ok.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match http_get(port, None) {
                    Ok((200, body, _)) if body == "b" => {
                        ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    }
                    _ => failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                };
            }
        })
    };
    let served = |n: u64| ok.load(std::sync::atomic::Ordering::Relaxed) >= n;
    assert!(
        wait_until(Duration::from_secs(10), || served(20)),
        "traffic flows before the restart"
    );
    let Appliance { g, w } = a;
    let cfg = w.config.clone();
    let master_pid = |state: &std::path::Path| -> u32 {
        std::fs::read_to_string(state.join("haproxy.pid"))
            .expect("the master's pid file")
            .trim()
            .parse()
            .expect("a pid")
    };
    let pid_before = master_pid(&w.dir.path().join("state"));
    let dir = w.stop();
    std::thread::sleep(Duration::from_millis(300));
    let w = Worker::start_in(cfg, dir);
    assert!(w.wait_for_log("connected to job server", 1, Duration::from_secs(15)));
    let a = Appliance { g, w };
    let v = a.action("STATS");
    assert!(passed(&v), "{v}");
    let m = a.action("METRICS");
    assert!(passed(&m), "{m}");
    let after = ok.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        wait_until(Duration::from_secs(10), || served(after + 20)),
        "traffic flows after the restart"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    assert_eq!(
        failures.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no request failed across the restart"
    );
    assert!(ok.load(std::sync::atomic::Ordering::Relaxed) > 10);
    assert_eq!(
        master_pid(&a.state_dir()),
        pid_before,
        "the same HAProxy master, adopted, not a second one"
    );
    // Nothing was reloaded or started: that master and its one worker, no other HAProxy.
    let procs = std::process::Command::new("pgrep")
        .args([
            "-f",
            &a.state_dir().join("haproxy.cfg").display().to_string(),
        ])
        .output()
        .unwrap();
    let pids: Vec<u32> = String::from_utf8_lossy(&procs.stdout)
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "one master and its worker: {pids:?}");
    assert!(pids.contains(&pid_before), "{pids:?}");
}

#[test]
fn node_health_survives_a_reload() {
    let a = Appliance::start();
    let up = Backend::http("up");
    let dead_port = free_port();
    let port = free_port();
    // One check every 4 s: after a reload a node would read UP for up to 4 s if its
    // health were not carried over.
    let mon = json!({"type": "CONNECT", "delay": 4, "timeout": 1, "attempts": 1});
    let lb = |nodes: Vec<Value>| {
        let mut l = http_lb(port, nodes);
        l["monitor"] = mon.clone();
        json!([l])
    };
    let dead = json!({"id": 2, "address": "127.0.0.1", "port": dead_port});
    assert!(passed(&a.update(lb(vec![node(1, &up), dead.clone()]))));
    let status = |a: &Appliance, id: &str| {
        let v = a.action("STATS");
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .map(|n| n["status"].as_str().unwrap().to_string())
    };
    assert!(wait_until(Duration::from_secs(15), || status(&a, "2")
        .as_deref()
        == Some("DOWN")));
    // A reload for another reason: a third node joins and the client timeout changes.
    let other = Backend::http("other");
    let mut next = lb(vec![node(1, &up), dead, node(3, &other)]);
    next[0]["options"] = json!({"client_timeout": 20000});
    let v = a.update(next);
    assert!(passed(&v), "{v}");
    assert_eq!(
        status(&a, "2").as_deref(),
        Some("DOWN"),
        "still DOWN right after the reload"
    );
    assert_eq!(status(&a, "1").as_deref(), Some("UP"));
}

/// The pid of the HAProxy worker process serving now (changes on every reload).
fn serving_pid(a: &Appliance) -> String {
    let sock = libra_worker::tools::runtime_api::StatsSocket::new(
        a.state_dir().join("stats.sock"),
        Duration::from_secs(2),
    );
    sock.show_info().unwrap().get("Pid").cloned().unwrap()
}

/// After a node-only UPDATE: the same HAProxy process serves where it has dynamic servers
/// (`hitless`), a new one (the change was a reload) where it has not. Returns the pid
/// serving now.
fn same_process_if(hitless: bool, a: &Appliance, before: String, what: &str) -> String {
    let now = serving_pid(a);
    if hitless {
        assert_eq!(now, before, "{what}: applied at run time, no reload");
    } else {
        assert_ne!(now, before, "{what}: this HAProxy reloads for it");
    }
    now
}

#[test]
fn node_only_updates_apply_without_reload_and_keep_stickiness() {
    let a = Appliance::start();
    let (b1, b2, b3, b4) = (
        Backend::http("b1"),
        Backend::http("b2"),
        Backend::http("b3"),
        Backend::http("b4"),
    );
    let port = free_port();
    assert!(passed(&a.update(json!([http_lb(
        port,
        vec![node(1, &b1), node(2, &b2)]
    )]))));
    let pid = serving_pid(&a);
    let sticky_to = |cookie: &str| -> Vec<String> {
        (0..6)
            .map(|_| http_get(port, Some(cookie)).unwrap().1)
            .collect()
    };
    let cookie_of = |name: &str| -> String {
        for _ in 0..50 {
            let (_, body, cookie) = http_get(port, None).unwrap();
            if body == name {
                return cookie.unwrap().split(';').next().unwrap().to_string();
            }
        }
        panic!("{name} never answered");
    };
    let c1 = cookie_of("b1");
    assert_eq!(c1, "SERVERID=id-1");

    // Add node 3: applied at run time, no new HAProxy process, where HAProxy can.
    let v = a.update(json!([http_lb(
        port,
        vec![node(1, &b1), node(2, &b2), node(3, &b3)]
    )]));
    assert!(passed(&v), "{v}");
    // Without dynamic servers (HAProxy before 2.6) a node joins by a reload.
    let hitless = a.capabilities().dynamic_servers;
    let pid = same_process_if(hitless, &a, pid, "node 3 added");
    assert!(
        sticky_to(&c1).iter().all(|b| b == "b1"),
        "old cookies still stick"
    );
    let c3 = cookie_of("b3");
    assert!(
        sticky_to(&c3).iter().all(|b| b == "b3"),
        "the new node's cookie sticks: {c3}"
    );
    let cfg = String::from_utf8(a.live_config()).unwrap();
    assert!(
        cfg.contains(&format!("server id-3 127.0.0.1:{}", b3.port)),
        "the file says what runs:\n{cfg}"
    );

    // Remove node 2 and move node 3 to another backend, weight 2.
    let mut n3 = node(3, &b4);
    n3["weight"] = json!(2);
    let v = a.update(json!([http_lb(port, vec![node(1, &b1), n3])]));
    assert!(passed(&v), "{v}");
    let pid = same_process_if(hitless, &a, pid, "node 2 removed");
    let seen = bodies(port, 12);
    assert!(!seen.iter().any(|b| b == "b2" || b == "b3"), "{seen:?}");
    assert!(seen.iter().any(|b| b == "b4"), "{seen:?}");
    let stats = a.action("STATS");
    let ids: Vec<&str> = stats["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["1", "3"], "{stats}");

    // New weights alone go through the runtime API on every HAProxy.
    let (mut n1, mut n3) = (node(1, &b1), node(3, &b4));
    n1["weight"] = json!(3);
    n3["weight"] = json!(4);
    assert!(passed(&a.update(json!([http_lb(port, vec![n1, n3])]))));
    assert_eq!(
        serving_pid(&a),
        pid,
        "weights change at run time everywhere"
    );

    // A structural change reloads; cookies of file nodes and run-time nodes survive it.
    let c3 = cookie_of("b4");
    let mut lb = http_lb(port, vec![node(1, &b1), node(3, &b4)]);
    lb["algorithm"] = json!("LEAST_CONNECTIONS");
    assert!(passed(&a.update(json!([lb]))));
    assert_ne!(serving_pid(&a), pid, "a structural change reloads");
    assert!(sticky_to(&c1).iter().all(|b| b == "b1"));
    assert!(
        sticky_to(&c3).iter().all(|b| b == "b4"),
        "run-time node keeps its cookie across the reload"
    );
}

#[test]
fn a_node_removed_while_busy_comes_back_without_a_reload() {
    let a = Appliance::start();
    let (b1, b2) = (Backend::http("b1"), Backend::http("b2"));
    let port = free_port();
    let both = json!([http_lb(port, vec![node(1, &b1), node(2, &b2)])]);
    assert!(passed(&a.update(both.clone())));
    let pid = serving_pid(&a);
    // A request in flight on node 2 while node 2 is removed: HAProxy cannot delete a
    // server with a connection, so the driver parks it in maintenance.
    b2.hold();
    let hits = b2.hits();
    let in_flight = std::thread::spawn(move || http_get(port, Some("SERVERID=id-2")));
    assert!(
        wait_until(Duration::from_secs(10), || b2.hits() > hits),
        "the request reached node 2"
    );
    assert!(passed(
        &a.update(json!([http_lb(port, vec![node(1, &b1)])]))
    ));
    assert!(
        bodies(port, 6).iter().all(|b| b == "b1"),
        "node 2 is out of rotation"
    );
    // Node 2 comes back before its connection ended: brought back at run time.
    assert!(passed(&a.update(both)));
    same_process_if(a.capabilities().dynamic_servers, &a, pid, "node 2 back");
    b2.release();
    let (status, body, _) = in_flight
        .join()
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!((status, body.as_str()), (200, "b2"));
    assert!(
        wait_until(Duration::from_secs(5), || bodies(port, 6)
            .iter()
            .any(|b| b == "b2")),
        "node 2 serves again"
    );
    let stats = a.action("STATS");
    assert_eq!(stats["nodes"].as_array().unwrap().len(), 2, "{stats}");
}

/// A reload under load takes a while, and the process it replaces serves all the while.
/// Here the worker pauses 1.5 s between banking that process's counters and reloading
/// (a `failpoints` sleep at `apply-before-reload`); the requests served in that window
/// are billed, once.
#[cfg(feature = "failpoints")]
#[test]
fn bytes_served_while_a_reload_runs_are_billed() {
    let a = Appliance::start_with(|cfg| {
        cfg.env = vec![(
            "FAILPOINTS".to_string(),
            "apply-before-reload=sleep(1500)".to_string(),
        )];
    });
    let b = Backend::http("b");
    let port = free_port();
    let lb = |timeout: u32| {
        let mut l = http_lb(port, vec![node(1, &b)]);
        l["options"] = json!({"client_timeout": timeout});
        json!([l])
    };
    assert!(passed(&a.update(lb(30_000))));
    let http_bytes = |v: &Value| -> u64 {
        v["loadBalancers"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["protocol"] == "http"))
            .and_then(|l| l["bytes_out"].as_u64())
            .unwrap_or_else(|| panic!("no http bytes_out: {v}"))
    };
    // The size of one answer, as HAProxy counts it.
    assert!(passed(&a.action("METRICS")));
    for _ in 0..10 {
        assert_eq!(http_get(port, None).unwrap().0, 200);
    }
    let ten = http_bytes(&a.action("METRICS"));
    assert!(ten > 0 && ten % 10 == 0, "ten equal answers: {ten}");
    let per_answer = ten / 10;

    let update = {
        let (addr, function, body) = (
            a.g.addr(),
            a.w.function().to_string(),
            json!({"hpcs_action": "UPDATE", "loadBalancers": lb(31_000)}),
        );
        std::thread::spawn(move || submit(&addr, &function, &body))
    };
    // The new file is in place before the pause: from then on until the reload, the old
    // process serves.
    assert!(
        wait_until(Duration::from_secs(20), || String::from_utf8_lossy(
            &a.live_config()
        )
        .contains("timeout client 31000ms")),
        "the UPDATE never reached the swap"
    );
    for _ in 0..20 {
        assert_eq!(http_get(port, None).unwrap().0, 200);
    }
    let answer = update.join().unwrap();
    assert!(passed(&answer), "{answer}");
    let billed = http_bytes(&a.action("METRICS"));
    if a.capabilities().retiring_counters {
        assert_eq!(
            billed,
            20 * per_answer,
            "20 answers of {per_answer} bytes, served around a reload"
        );
    } else {
        // HAProxy 2.2 hides a stopping process's proxies: what it served during the
        // reload goes unbilled, and nothing is billed twice.
        assert!(billed < 20 * per_answer, "billed {billed}");
    }
}
