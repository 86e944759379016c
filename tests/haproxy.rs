//! The HAProxy driver end to end, one job at a time: a real gearmand, the real worker
//! binary running a real HAProxy (managed mode, loopback), real HTTP and TCP backends, jobs
//! sent as the API server sends them. What an UPDATE accepts, refuses and serves
//! (validation, algorithms, weights and backups, TCP and GALERA, injection, a
//! configuration HAProxy rejects), and the other actions (STATS, SUSPEND, ENABLE, DELETE,
//! ARCHIVE). What carries across reloads and worker restarts is in `haproxy_reload.rs`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::appliance::{http_lb, node, Appliance};
use common::backends::{bodies, http_get, Backend};
use common::*;
use serde_json::{json, Value};

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
