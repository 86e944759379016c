//! The HAProxy driver end to end: a real gearmand, the real worker binary running a real
//! HAProxy (managed mode, loopback), real HTTP and TCP backends, jobs sent as the API
//! server sends them.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::appliance::{http_lb, node, Appliance};
use common::backends::{http_get, Backend};
use common::*;
use serde_json::{json, Value};

/// Bodies seen over `n` fresh connections through the load balancer.
fn bodies(port: u16, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| http_get(port, None).map(|(_, b, _)| b).unwrap_or_default())
        .collect()
}

#[test]
fn reference_validation_cases() {
    let a = Appliance::start();
    let bad_request = |v: &Value, msg: &str| {
        assert_eq!(v["hpcs_response"], "FAIL", "{v}");
        assert_eq!(v["badRequest"]["validationErrors"]["message"], msg, "{v}");
        assert_eq!(v["hpcs_error"], msg, "{v}");
    };
    let n = json!({"id": 1, "address": "127.0.0.1", "port": 8080});
    bad_request(
        &a.job(json!({"hpcs_action": "UPDATE"})),
        "Missing 'loadBalancers' element",
    );
    bad_request(
        &a.job(json!({"hpcs_action": "UPDATE", "loadbalancers": [http_lb(80, vec![n.clone()])]})),
        "Missing 'loadBalancers' element",
    );
    bad_request(
        &a.update(json!([{"protocol": "HTTP"}])),
        "Missing 'nodes' element",
    );
    bad_request(
        &a.update(json!([{"nodes": [n.clone()]}])),
        "Missing required 'protocol' value.",
    );
    bad_request(
        &a.update(json!([{"protocol": "HTTP", "nodes": [{"id": 1, "address": "127.0.0.1"}]}])),
        "Missing node 'port'",
    );
    bad_request(
        &a.update(json!([{"protocol": "HTTP", "nodes": [{"id": 1, "port": 80}]}])),
        "Missing node 'address'",
    );
    bad_request(
        &a.update(json!([{"protocol": "HTTP", "nodes": [{"address": "127.0.0.1", "port": 80}]}])),
        "Missing node 'id'",
    );
    bad_request(&a.update(json!([{"protocol": "HTTP", "nodes": [{"id": "", "address": "127.0.0.1", "port": 80}]}])), "Missing node 'id'");
    for field in ["type", "delay", "timeout", "attempts"] {
        let mut mon = json!({"type": "CONNECT", "delay": 5, "timeout": 5, "attempts": 2});
        mon.as_object_mut().unwrap().remove(field);
        let v = a.update(json!([{"protocol": "HTTP", "port": free_port(), "nodes": [n.clone()], "monitor": mon}]));
        bad_request(&v, &format!("Missing monitor value '{field}'"));
    }
    let v = a.update(json!([{"protocol": "HTTP", "nodes": [n.clone()], "algorithm": "FASTEST"}]));
    assert_eq!(v["hpcs_response"], "FAIL");
    assert!(answer_error(&v).contains("Invalid algorithm"), "{v}");
    let v = a.action("DANCE");
    assert_eq!(v["hpcs_response"], "FAIL");
    assert!(answer_error(&v).contains("DANCE"));
    // ARCHIVE field checks, in the reference's order.
    let full = json!({"hpcs_action": "ARCHIVE", "hpcs_object_store_type": "swift",
        "hpcs_object_store_basepath": "logs", "hpcs_object_store_endpoint": "http://127.0.0.1:1/v1/a",
        "hpcs_object_store_token": "t0k3n", "loadBalancers": [{"protocol": "HTTP", "id": 7}]});
    for field in [
        "hpcs_object_store_type",
        "hpcs_object_store_basepath",
        "hpcs_object_store_endpoint",
        "hpcs_object_store_token",
        "loadBalancers",
    ] {
        let mut v = full.clone();
        v.as_object_mut().unwrap().remove(field);
        bad_request(&a.job(v), &format!("Missing '{field}' element"));
    }
    let mut v = full.clone();
    v["hpcs_object_store_type"] = json!("ftp");
    bad_request(&a.job(v), "'ftp' is not a valid store type");
    // Nothing was ever written.
    assert!(a.live_config().is_empty());

    // A monitor without a path passes.
    let b = Backend::http("b1");
    let port = free_port();
    let v = a.update(
        json!([{"protocol": "HTTP", "port": port, "nodes": [node(1, &b)],
        "monitor": {"type": "HTTP", "delay": 5, "timeout": 5, "attempts": 2}}]),
    );
    assert!(passed(&v), "{v}");
    assert_eq!(v["loadBalancers"][0]["nodes"][0]["condition"], "ENABLED");
    assert_eq!(http_get(port, None).unwrap().1, "b1");
}

#[test]
fn http_load_balancer_spreads_and_sticks() {
    let a = Appliance::start();
    let (b1, b2) = (Backend::http("b1"), Backend::http("b2"));
    let port = free_port();
    let v = a.update(json!([http_lb(port, vec![node(11, &b1), node(12, &b2)])]));
    assert!(passed(&v), "{v}");
    let seen = bodies(port, 10);
    assert!(
        seen.iter().any(|b| b == "b1") && seen.iter().any(|b| b == "b2"),
        "{seen:?}"
    );

    // With the SERVERID cookie a client stays on one node.
    let (_, first, cookie) = http_get(port, None).unwrap();
    let cookie = cookie.expect("SERVERID cookie inserted");
    assert!(cookie.starts_with("SERVERID="), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    for _ in 0..10 {
        assert_eq!(http_get(port, Some(&pair)).unwrap().1, first);
    }

    // LEAST_CONNECTIONS renders and serves.
    let mut lb = http_lb(port, vec![node(11, &b1), node(12, &b2)]);
    lb["algorithm"] = json!("LEAST_CONNECTIONS");
    assert!(passed(&a.update(json!([lb]))));
    assert!(String::from_utf8_lossy(&a.live_config()).contains("balance leastconn"));
    let seen = bodies(port, 6);
    assert!(seen.iter().all(|b| b == "b1" || b == "b2"), "{seen:?}");
}

#[test]
fn weights_and_backup_nodes() {
    let a = Appliance::start();
    let (b1, b2, b3) = (
        Backend::http("b1"),
        Backend::http("b2"),
        Backend::http("backup"),
    );
    let port = free_port();
    let mut n1 = node(1, &b1);
    n1["weight"] = json!(3);
    let mut n3 = node(3, &b3);
    n3["backup"] = json!("TRUE");
    let mon = json!({"type": "CONNECT", "delay": 1, "timeout": 1, "attempts": 1});
    let mut lb = http_lb(port, vec![n1, node(2, &b2), n3]);
    lb["monitor"] = mon;
    assert!(passed(&a.update(json!([lb]))));
    let seen = bodies(port, 40);
    let c1 = seen.iter().filter(|b| *b == "b1").count();
    let c2 = seen.iter().filter(|b| *b == "b2").count();
    assert_eq!(
        seen.iter().filter(|b| *b == "backup").count(),
        0,
        "backup serves only when the others are down: {seen:?}"
    );
    assert!(c1 >= 2 * c2, "weight 3 vs 1: {c1} vs {c2}");
    drop(b1);
    drop(b2);
    // Health checks every second, one failure takes a node out.
    assert!(wait_until(Duration::from_secs(10), || http_get(port, None)
        .map(|r| r.1 == "backup")
        .unwrap_or(false)));
}

#[test]
fn tcp_and_http_on_one_appliance_and_galera_rules() {
    let a = Appliance::start();
    let web = Backend::http("web");
    let echo = Backend::echo("echo");
    let (hport, tport) = (free_port(), free_port());
    let v = a.update(json!([
        http_lb(hport, vec![node(1, &web)]),
        {"protocol": "TCP", "port": tport, "nodes": [node(2, &echo)]}
    ]));
    assert!(passed(&v), "{v}");
    assert_eq!(http_get(hport, None).unwrap().1, "web");
    let mut s = TcpStream::connect(("127.0.0.1", tport)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"ping").unwrap();
    let mut buf = [0u8; 9];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"echo:ping");

    let before = a.live_config();
    let galera =
        json!([{"protocol": "GALERA", "port": tport, "nodes": [node(1, &echo), node(2, &echo)]}]);
    let v = a.update(galera);
    assert_eq!(v["hpcs_response"], "FAIL");
    assert!(
        answer_error(&v).contains("Galera protocol does not accept more than one non-backup node"),
        "{v}"
    );
    assert_eq!(a.live_config(), before, "the live config is untouched");
    let mut n2 = node(2, &echo);
    n2["backup"] = json!(true);
    let v = a.update(json!([{"protocol": "GALERA", "port": tport, "nodes": [node(1, &echo), n2]}]));
    assert!(passed(&v), "{v}");
}

#[test]
fn stats_follow_a_killed_backend() {
    let a = Appliance::start();
    let b1 = Backend::http("b1");
    let b2 = Backend::http("b2");
    let b2_port = b2.port;
    let port = free_port();
    let mut lb = http_lb(port, vec![node(21, &b1), node(22, &b2)]);
    lb["monitor"] =
        json!({"type": "HTTP", "delay": 1, "timeout": 1, "attempts": 1, "path": "/health"});
    assert!(passed(&a.update(json!([lb]))));
    let status = |id: &str| {
        let v = a.action("STATS");
        assert!(passed(&v), "{v}");
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .map(|n| n["status"].as_str().unwrap().to_string())
    };
    assert!(wait_until(Duration::from_secs(10), || status("22")
        .as_deref()
        == Some("UP")));
    drop(b2);
    assert!(wait_until(Duration::from_secs(10), || status("22")
        .as_deref()
        == Some("DOWN")));
    assert_eq!(status("21").as_deref(), Some("UP"));
    let _b2 = Backend::http_on("b2", b2_port);
    assert!(wait_until(Duration::from_secs(10), || status("22")
        .as_deref()
        == Some("UP")));
}

#[test]
fn suspend_enable_delete() {
    let a = Appliance::start();
    let b = Backend::http("b");
    let port = free_port();
    assert!(passed(&a.update(json!([http_lb(port, vec![node(1, &b)])]))));
    assert_eq!(http_get(port, None).unwrap().1, "b");

    assert!(passed(&a.action("SUSPEND")));
    assert!(!port_open(port), "suspended: connections refused");
    assert!(passed(&a.action("SUSPEND")), "idempotent");
    let cfg = a.live_config();
    assert!(!cfg.is_empty(), "SUSPEND keeps the configuration");

    assert!(passed(&a.action("ENABLE")));
    assert_eq!(http_get(port, None).unwrap().1, "b");
    assert!(passed(&a.action("ENABLE")), "idempotent");
    assert_eq!(a.live_config(), cfg, "same configuration");

    assert!(passed(&a.action("DELETE")));
    assert!(!port_open(port));
    for f in ["haproxy.cfg", "haproxy.cfg.BKUP", "haproxy.log"] {
        assert!(!a.state_dir().join(f).exists(), "{f} removed");
    }
    assert!(passed(&a.action("DELETE")), "idempotent");
    let v = a.action("STATS");
    assert_eq!(v["hpcs_response"], "FAIL");
    assert_eq!(v["status"], "DELETED");
    assert!(!answer_error(&v).is_empty());
    let v = a.action("METRICS");
    assert_eq!(v["status"], "DELETED", "{v}");
}

#[test]
fn injection_is_refused_and_nothing_changes() {
    let a = Appliance::start();
    let b = Backend::http("b");
    let port = free_port();
    assert!(passed(&a.update(json!([http_lb(port, vec![node(1, &b)])]))));
    let before = a.live_config();
    let evil = "    stats enable\n    stats uri /admin";
    let cases = vec![
        json!([{"protocol": "HTTP", "port": port, "nodes": [{"id": 1, "address": format!("10.0.0.1:80\n{evil}"), "port": b.port}]}]),
        json!([{"protocol": "HTTP", "port": port, "nodes": [{"id": format!("1\n{evil}"), "address": "127.0.0.1", "port": b.port}]}]),
        json!([{"protocol": "HTTP", "port": port, "nodes": [node(1, &b)],
                "monitor": {"type": "HTTP", "delay": 5, "timeout": 5, "attempts": 2, "path": format!("/x\n{evil}")}}]),
        json!([{"protocol": "HTTP", "port": format!("{port}\n{evil}"), "nodes": [node(1, &b)]}]),
        json!([{"protocol": "HTTP", "port": port, "nodes": [{"id": "1 backup", "address": "127.0.0.1", "port": b.port}]}]),
        json!([{"protocol": "HTTP", "port": port, "nodes": [{"id": 1, "address": "127.0.0.1 check", "port": b.port}]}]),
        json!([{"protocol": "HTTP", "port": port, "nodes": [{"id": 1, "address": "127.0.0.1", "port": b.port, "weight": "1 backup"}]}]),
    ];
    for lbs in cases {
        let v = a.update(lbs.clone());
        assert_eq!(v["hpcs_response"], "FAIL", "{lbs}: {v}");
        assert!(!answer_error(&v).is_empty());
        assert_eq!(
            a.live_config(),
            before,
            "live config byte-for-byte unchanged after {lbs}"
        );
    }
    assert_eq!(http_get(port, None).unwrap().1, "b", "still serving");
    // A name is the user's free text: accepted as it is, and never written into the file.
    let name = format!("my lb \"x\" #1 ${{HOME}}\n{evil}");
    let v =
        a.update(json!([{"protocol": "HTTP", "port": port, "name": name, "nodes": [node(1, &b)]}]));
    assert!(passed(&v), "{v}");
    assert_eq!(v["loadBalancers"][0]["name"], name.as_str());
    let text = String::from_utf8(a.live_config()).unwrap();
    assert!(
        !text.contains("stats enable") && !text.contains("my lb"),
        "{text}"
    );
}

#[test]
fn a_config_haproxy_rejects_keeps_the_previous_one_serving() {
    let a = Appliance::start();
    let b = Backend::http("b");
    let port = free_port();
    assert!(passed(&a.update(json!([http_lb(port, vec![node(1, &b)])]))));
    let before = a.live_config();
    // Another process holds the port the new configuration wants.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let v = a.update(json!([http_lb(port, vec![node(1, &b)]), {"protocol": "TCP", "port": taken, "nodes": [node(2, &b)]}]));
    assert_eq!(v["hpcs_response"], "FAIL", "{v}");
    let err = answer_error(&v);
    assert!(
        err.contains("cannot bind socket") && err.contains(&format!(":{taken}]")),
        "the answer names the port that cannot be bound: {err}"
    );
    assert_eq!(v["loadBalancers"][0]["nodes"][0]["condition"], "DISABLED");
    assert_eq!(a.live_config(), before, "previous config back in place");
    assert_eq!(
        http_get(port, None).unwrap().1,
        "b",
        "previous load balancer still serving"
    );
    // And the appliance still takes the next good UPDATE.
    let port2 = free_port();
    assert!(passed(
        &a.update(json!([http_lb(port2, vec![node(1, &b)])]))
    ));
    assert_eq!(http_get(port2, None).unwrap().1, "b");
}

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
fn archive_ships_only_that_load_balancers_lines_to_swift() {
    let a = Appliance::start();
    let web = Backend::http("web");
    let echo = Backend::echo("echo");
    let (hport, tport) = (free_port(), free_port());
    assert!(passed(&a.update(json!([
        http_lb(hport, vec![node(1, &web)]),
        {"protocol": "TCP", "port": tport, "nodes": [node(2, &echo)]}
    ]))));
    for _ in 0..5 {
        assert_eq!(http_get(hport, None).unwrap().1, "web");
        let mut s = TcpStream::connect(("127.0.0.1", tport)).unwrap();
        s.write_all(b"x").unwrap();
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf).unwrap();
    }
    let log = a.state_dir().join("haproxy.log");
    assert!(
        wait_until(Duration::from_secs(5), || {
            let t = std::fs::read_to_string(&log).unwrap_or_default();
            t.matches("http-in").count() >= 5 && t.matches("tcp-in").count() >= 5
        }),
        "HAProxy logs traffic into its log file"
    );

    let token = "tk-7f3a9c2e51";
    let swift = common::swift::MockSwift::start(token);
    let job = |tok: &str| {
        json!({"hpcs_action": "ARCHIVE", "hpcs_object_store_type": "swift",
               "hpcs_object_store_basepath": "lbaaslogs", "hpcs_object_store_endpoint": swift.endpoint(),
               "hpcs_object_store_token": tok, "loadBalancers": [{"protocol": "HTTP", "id": 42}]})
    };
    let v = a.job(job(token));
    assert!(passed(&v), "{v}");
    let objects = swift.objects();
    assert_eq!(objects.len(), 1, "{objects:?}");
    let (name, gz) = objects.iter().next().unwrap();
    assert!(
        name.starts_with("lbaaslogs/42/haproxy-") && name.ends_with(".log.gz"),
        "{name}"
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.lines().count() >= 5, "{text}");
    assert!(
        text.lines()
            .all(|l| l.contains("http-in") || l.contains("http-servers")),
        "{text}"
    );
    assert!(!text.contains("tcp-in"));

    let v = a.job(job("wrong-token"));
    assert_eq!(v["hpcs_response"], "FAIL");
    let err = answer_error(&v);
    assert!(err.contains("401"), "{err}");
    assert!(
        !err.contains("wrong-token") && !err.contains(token),
        "{err}"
    );
    assert!(
        !a.w.log().contains(token),
        "the token never reaches the worker's log"
    );
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

    // Add node 3: applied at run time, no new HAProxy process.
    let v = a.update(json!([http_lb(
        port,
        vec![node(1, &b1), node(2, &b2), node(3, &b3)]
    )]));
    assert!(passed(&v), "{v}");
    assert_eq!(serving_pid(&a), pid, "no reload for a node-only change");
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

    // Remove node 2 and move node 3 to another backend, weight 2: still no reload.
    let mut n3 = node(3, &b4);
    n3["weight"] = json!(2);
    let v = a.update(json!([http_lb(port, vec![node(1, &b1), n3])]));
    assert!(passed(&v), "{v}");
    assert_eq!(serving_pid(&a), pid);
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
    assert_eq!(serving_pid(&a), pid, "no reload");
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
