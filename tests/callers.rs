//! The reference callers as oracles: functions that read the worker's answers exactly as
//! the unchanged Libra servers did (stackforge/libra, the commit before it was retired),
//! each run against answers the real worker gave through a real gearmand, with a real
//! HAProxy and real backends. A field they read that is missing, of another type or of
//! another spelling fails here the way it would fail there.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::appliance::Appliance;
use common::backends::{http_get, Backend};
use common::swift::MockSwift;
use common::*;
use serde_json::{json, Value};

/// `libra/common/api/gearman_client.py` `GearmanClientThread._send_message`: what the API
/// server makes of an answer, `(status, error or result)`. On failure the text goes to
/// `LoadBalancer.errmsg`, a `VARCHAR(128)` column (`_set_error`).
fn api_send_message(result: &Value, response_name: &str) -> Result<Value, String> {
    if let Some(bad) = result.get("badRequest") {
        let message = bad["validationErrors"]["message"]
            .as_str()
            .expect("badRequest.validationErrors.message is a string");
        return Err(message.to_string());
    }
    if result[response_name] == "FAIL" {
        return Err(match result.get("hpcs_error") {
            Some(e) => e.as_str().expect("hpcs_error is a string").to_string(),
            None => "Load Balancer error".to_string(),
        });
    }
    Ok(result.clone())
}

/// The API server's `errmsg` column: a longer text fails the whole status update under
/// strict SQL mode.
fn fits_errmsg_column(text: &str) -> bool {
    text.chars().count() <= 128
}

/// `libra/admin_api/stats/stats_sched.py` `UsageStats._update_stats`, for one load
/// balancer of protocol `lb_protocol` on the device that answered `result`: the
/// `(period_start, period_end, bytes_out)` row it stores in `stats`, or None when it finds
/// no entry for the load balancer ("No stats found").
fn billing_row(lb_protocol: &str, result: &Value) -> Option<(String, String, i64)> {
    let mut protocol = lb_protocol.to_lowercase();
    if protocol != "http" {
        // GALERA or TCP = TCP at the worker
        protocol = "tcp".to_string();
    }
    let mut bytes_out: Option<&Value> = None;
    for data in result["loadBalancers"]
        .as_array()
        .expect("loadBalancers is a list")
    {
        if data["protocol"] == protocol.as_str() {
            bytes_out = Some(&data["bytes_out"]);
        }
    }
    let bytes_out = bytes_out?;
    // `Stats.bytes_out` is a BIGINT column; `period_start`/`period_end` DATETIME ones.
    let bytes = bytes_out.as_i64().expect("bytes_out is an integer");
    let start = result["utc_start"].as_str().expect("utc_start").to_string();
    let end = result["utc_end"].as_str().expect("utc_end").to_string();
    for t in [&start, &end] {
        chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
            .unwrap_or_else(|e| panic!("'{t}' is not a DATETIME: {e}"));
    }
    Some((start, end, bytes))
}

/// What `libra/admin_api/stats/stats_gearman.py` `GearJobs.send_pings` makes of a STATS
/// answer, and what `ping_sched.py` `_update_nodes` reads of it.
#[derive(Debug, PartialEq)]
enum Ping {
    /// `status == "DELETED"`: skipped, not a failure.
    Deleted,
    /// A failed device: alerts go out.
    Failed,
    /// Node ids (`int(node['id'])`) and whether each is `DOWN`.
    Nodes(Vec<(i64, bool)>),
}

fn ping(result: &Value) -> Ping {
    if result["hpcs_response"] == "FAIL" {
        if result.get("status").is_some_and(|s| s == "DELETED") {
            return Ping::Deleted;
        }
        return Ping::Failed;
    }
    let Some(nodes) = result.get("nodes") else {
        return Ping::Nodes(Vec::new());
    };
    Ping::Nodes(
        nodes
            .as_array()
            .expect("nodes is a list")
            .iter()
            .map(|n| {
                let id = match &n["id"] {
                    Value::String(s) => s.parse::<i64>().expect("int(node['id'])"),
                    Value::Number(x) => x.as_i64().expect("int(node['id'])"),
                    other => panic!("int({other}) fails"),
                };
                let status = n["status"].as_str().expect("status is a string");
                assert!(
                    status == "UP" || status == "DOWN",
                    "status {status} is neither UP nor DOWN"
                );
                (id, status == "DOWN")
            })
            .collect(),
    )
}

/// `stats_gearman.py` `GearJobs.offline_check` for one device: true when it counts as
/// failed (network FAIL, or more than a third of the job servers unreachable; Python 2
/// integer division).
fn offline_check_fails(result: &Value) -> bool {
    if result["network"] == "FAIL" {
        return true;
    }
    let tests = result["gearman"].as_array().expect("gearman is a list");
    let count = tests.len();
    let failed = tests.iter().filter(|t| t["status"] == "FAIL").count();
    failed > count / 3
}

/// `libra/mgm/controllers/build.py` `BuildController._test_node`'s DIAGNOSTICS check: true
/// when the new device is accepted.
fn build_check_passes(result: &Value) -> bool {
    if result["hpcs_response"] == "FAIL" {
        // Would only happen if DIAGNOSTICS call not supported
        return true;
    }
    if result["network"] == "FAIL" {
        return false;
    }
    let tests = result["gearman"].as_array().expect("gearman is a list");
    for t in tests {
        t["host"].as_str().expect("gearman[].host is a string");
    }
    let failed = tests.iter().filter(|t| t["status"] == "FAIL").count();
    failed <= tests.len() / 3
}

/// An UPDATE as `send_update` builds it: every field, types as the database gives them.
fn api_update(lbs: Vec<Value>) -> Value {
    json!({"hpcs_action": "UPDATE", "loadBalancers": lbs})
}

fn api_lb(name: &str, protocol: &str, port: u16, nodes: Vec<Value>) -> Value {
    json!({"name": name, "protocol": protocol, "algorithm": "ROUND_ROBIN", "port": port,
           "nodes": nodes,
           // The API server adds a default monitor when the load balancer has none.
           "monitor": {"type": "CONNECT", "delay": 30, "timeout": 30, "attempts": 2}})
}

fn api_node(id: i64, b: &Backend) -> Value {
    json!({"id": id, "port": b.port, "address": "127.0.0.1", "weight": 1,
           "condition": "ENABLED", "backup": "FALSE"})
}

/// Sends `payload` through a TCP load balancer and reads until the echo of it came back;
/// returns the bytes received.
fn tcp_round_trip(port: u16, payload: &[u8], prefix_len: usize) -> usize {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect through the LB");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(payload).unwrap();
    let want = prefix_len + payload.len();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want {
        let n = s.read(&mut buf).expect("echo");
        assert!(n > 0, "connection closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    got.len()
}

/// One HTTP exchange through the load balancer; returns the bytes the client got.
fn http_bytes(port: u16) -> usize {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect through the LB");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    out.len()
}

#[test]
fn the_api_servers_job_client_reads_update_answers() {
    let a = Appliance::start();
    let b1 = Backend::http("b1");
    let b2 = Backend::http("b2");
    let port = free_port();
    // The user's name, the whole option range and an encoded path, as the API forwards them.
    let mut lb = api_lb(
        "my lb: «prod» #1",
        "HTTP",
        port,
        vec![api_node(11, &b1), api_node(12, &b2)],
    );
    lb["options"] = json!({"client_timeout": 0, "server_timeout": 1_000_000,
                           "connect_timeout": 1_000_000, "connect_retries": 256});
    lb["monitor"] = json!({"type": "HTTP", "delay": 30, "timeout": 30, "attempts": 2,
                           "path": "/health?x=$1&y='2'#frag"});
    let answer = a.job(api_update(vec![lb.clone()]));
    let result = api_send_message(&answer, "hpcs_response").expect("UPDATE accepted");
    assert_eq!(result["loadBalancers"][0]["name"], "my lb: «prod» #1");
    for n in result["loadBalancers"][0]["nodes"].as_array().unwrap() {
        assert_eq!(n["condition"], "ENABLED");
    }
    assert_eq!(http_get(port, None).unwrap().0, 200);

    // HAProxy refuses a node it cannot resolve: the API stores the reason in 128 characters.
    let long = (0..9)
        .map(|i| format!("no-such-host-{i}"))
        .collect::<Vec<_>>()
        .join(".")
        + ".invalid";
    let mut bad = lb.clone();
    bad["nodes"] = json!([{"id": 13, "port": 80, "address": long, "weight": 1,
                           "condition": "ENABLED", "backup": "FALSE"}]);
    let unique = format!("api-job-{}", free_port());
    let answer = submit_unique(&a.g.addr(), a.w.function(), &unique, &api_update(vec![bad]));
    let error = api_send_message(&answer, "hpcs_response").unwrap_err();
    assert!(
        fits_errmsg_column(&error),
        "{} chars: {error}",
        error.chars().count()
    );
    assert!(
        error.starts_with(
            "HAProxy rejected the configuration: could not resolve address 'no-such-host-"
        ),
        "the useful part first: {error}"
    );
    // The whole of HAProxy's words are in the log, on the line with the job's unique id.
    let done_line = || {
        a.w.log()
            .lines()
            .find(|l| l.contains(&unique) && l.contains("job done"))
            .map(String::from)
    };
    assert!(
        wait_until(Duration::from_secs(10), || done_line().is_some()),
        "no 'job done' line for {unique}:\n{}",
        a.w.log()
    );
    let line = done_line().unwrap();
    assert!(line.contains("[HAProxy said: [ALERT]"), "{line}");
    assert!(line.contains(&long), "{line}");
    // The previous load balancer keeps serving.
    assert_eq!(http_get(port, None).unwrap().0, 200);

    // Validation texts fit as well, even when they quote a long value.
    let mut bad = lb;
    bad["nodes"] = json!([{"id": "x".repeat(300), "port": 80, "address": "127.0.0.1"}]);
    let error = api_send_message(&a.job(api_update(vec![bad])), "hpcs_response").unwrap_err();
    assert!(fits_errmsg_column(&error), "{error}");
    assert!(error.starts_with("Invalid node id"), "{error}");
}

#[test]
fn the_billing_scheduler_records_exactly_the_bytes_sent() {
    let a = Appliance::start();
    let web = Backend::http("web-backend-answer");
    let db = Backend::echo("db");
    let (http_port, tcp_port) = (free_port(), free_port());
    let lbs = |tcp_protocol: &str| {
        api_update(vec![
            api_lb("web", "HTTP", http_port, vec![api_node(1, &web)]),
            api_lb("db", tcp_protocol, tcp_port, vec![api_node(2, &db)]),
        ])
    };
    api_send_message(&a.job(lbs("TCP")), "hpcs_response").expect("UPDATE");
    // The first report opens the books.
    let first = a.action("METRICS");
    api_send_message(&first, "hpcs_response").expect("METRICS");

    // The reference billed the backend's `bout`. For TCP that is every byte the backend
    // sent; for HTTP it is HAProxy's count of the responses (its internal form, a few bytes
    // more than the server wrote and fewer than the client got after cookie insertion).
    let (web_before, db_before) = (web.bytes_sent(), db.bytes_sent());
    let bout_before = a.backend_bytes_out("http-servers");
    for _ in 0..25 {
        http_bytes(http_port);
    }
    let mut tcp_sent = 0;
    for i in 0..10 {
        tcp_sent += tcp_round_trip(tcp_port, &vec![b'x'; 1000 + i], "db:".len());
    }
    let http_sent = (web.bytes_sent() - web_before) as usize;
    let http_counted = (a.backend_bytes_out("http-servers") - bout_before) as usize;
    assert!(http_counted >= http_sent, "{http_counted} < {http_sent}");
    assert_eq!(tcp_sent as u64, db.bytes_sent() - db_before);
    let m = a.action("METRICS");
    api_send_message(&m, "hpcs_response").expect("METRICS");
    let (_, first_end, _) = billing_row("HTTP", &first).expect("http row");
    let (start, _, http_billed) = billing_row("HTTP", &m).expect("an http row");
    assert!(start > first_end, "{start} after {first_end}");
    assert_eq!(http_billed as usize, http_counted, "HTTP bytes billed: {m}");
    let (_, _, tcp_billed) = billing_row("TCP", &m).expect("a tcp row");
    assert_eq!(tcp_billed as usize, tcp_sent, "TCP bytes billed: {m}");

    // The tcp load balancer becomes a GALERA one: the scheduler looks for `tcp` still.
    api_send_message(&a.job(lbs("GALERA")), "hpcs_response").expect("UPDATE to GALERA");
    let mut galera_sent = 0;
    for _ in 0..5 {
        galera_sent += tcp_round_trip(tcp_port, b"select 1;", "db:".len());
    }
    let m = a.action("METRICS");
    let (_, _, galera_billed) = billing_row("GALERA", &m).expect("a tcp row for GALERA");
    assert_eq!(
        galera_billed as usize, galera_sent,
        "GALERA bytes billed: {m}"
    );
    let (_, _, http_billed) = billing_row("HTTP", &m).expect("an http row");
    assert_eq!(http_billed, 0, "nothing billed twice: {m}");
}

#[test]
fn the_ping_scheduler_reads_node_status_and_deleted_devices() {
    let a = Appliance::start();
    let up = Backend::http("up");
    let port = free_port();
    let dead = json!({"id": 8, "port": free_port(), "address": "127.0.0.1", "weight": 1,
                      "condition": "ENABLED", "backup": "FALSE"});
    let mut lb = api_lb("web", "HTTP", port, vec![api_node(7, &up), dead]);
    lb["monitor"] = json!({"type": "CONNECT", "delay": 1, "timeout": 1, "attempts": 1});
    api_send_message(&a.job(api_update(vec![lb])), "hpcs_response").expect("UPDATE");
    let settled = wait_until(Duration::from_secs(15), || {
        ping(&a.action("STATS")) == Ping::Nodes(vec![(7, false), (8, true)])
    });
    assert!(settled, "{}", a.action("STATS"));

    api_send_message(&a.action("DELETE"), "hpcs_response").expect("DELETE");
    let after = a.action("STATS");
    assert_eq!(ping(&after), Ping::Deleted, "{after}");
    assert!(fits_errmsg_column(answer_error(&after)));
    // METRICS of a deleted device is a failure the stats scheduler skips.
    let m = a.action("METRICS");
    assert!(api_send_message(&m, "hpcs_response").is_err());
    assert_eq!(m["status"], "DELETED", "{m}");
}

#[test]
fn the_offline_and_build_checks_read_diagnostics() {
    let g = Gearmand::start();
    // One live job server and two that are not: two thirds unreachable is a failed device.
    let dead1 = format!("127.0.0.1:{}", free_port());
    let dead2 = format!("127.0.0.1:{}", free_port());
    let w = Worker::start(WorkerConfig::new(&[g.addr()]));
    assert!(w.wait_for_log("connected to job server", 1, Duration::from_secs(15)));
    let answer = submit(
        &g.addr(),
        w.function(),
        &json!({"hpcs_action": "DIAGNOSTICS"}),
    );
    assert!(!offline_check_fails(&answer), "{answer}");
    assert!(build_check_passes(&answer), "{answer}");
    drop(w);

    let w = Worker::start(WorkerConfig::new(&[g.addr(), dead1, dead2]));
    assert!(w.wait_for_log("connected to job server", 1, Duration::from_secs(15)));
    let answer = submit(
        &g.addr(),
        w.function(),
        &json!({"hpcs_action": "DIAGNOSTICS"}),
    );
    assert!(passed(&answer), "{answer}");
    assert!(offline_check_fails(&answer), "{answer}");
    assert!(!build_check_passes(&answer), "{answer}");
    let hosts: Vec<&str> = answer["gearman"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["127.0.0.1", "127.0.0.1", "127.0.0.1"], "{answer}");
}

#[test]
fn archive_answers_mask_the_token_as_the_reference_did() {
    let token = "s3cr3t-api-token";
    let a = Appliance::start();
    let b = Backend::http("b");
    let port = free_port();
    api_send_message(
        &a.job(api_update(vec![api_lb(
            "web",
            "HTTP",
            port,
            vec![api_node(1, &b)],
        )])),
        "hpcs_response",
    )
    .expect("UPDATE");
    for _ in 0..3 {
        http_get(port, None).unwrap();
    }
    let swift = MockSwift::start(token);
    // `send_archive`'s job, field for field.
    let job = |endpoint: String| {
        json!({"hpcs_action": "ARCHIVE", "hpcs_object_store_basepath": "lbaaslogs",
               "hpcs_object_store_endpoint": endpoint, "hpcs_object_store_token": token,
               "hpcs_object_store_type": "Swift",
               "loadBalancers": [{"id": "42", "name": "my lb", "protocol": "HTTP"}]})
    };
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::metadata(a.state_dir().join("haproxy.log")).is_ok_and(|m| m.len() > 0)
    }));
    let answer = a.job(job(swift.endpoint()));
    api_send_message(&answer, "hpcs_response").expect("ARCHIVE");
    assert_eq!(answer["hpcs_object_store_token"], "*****", "{answer}");
    assert!(!answer.to_string().contains(token), "{answer}");
    assert_eq!(swift.objects().len(), 1);

    // A failure as well: the reason fits, and neither it nor the answer carries the token.
    let unreachable = format!("http://127.0.0.1:{}/v1/AUTH_x", free_port());
    let answer = a.job(job(unreachable));
    let error = api_send_message(&answer, "hpcs_response").unwrap_err();
    assert!(fits_errmsg_column(&error), "{error}");
    assert_eq!(answer["hpcs_object_store_token"], "*****", "{answer}");
    assert!(!answer.to_string().contains(token), "{answer}");
}
