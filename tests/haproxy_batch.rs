//! A node-only UPDATE that adds, removes and re-weights hundreds of servers of a big load
//! balancer at once, end to end (gearmand, the worker binary, a managed HAProxy): applied
//! through the runtime API without a reload where HAProxy has dynamic servers (one
//! pipelined session), by a reload where it has not (2.2), and either way what HAProxy
//! runs afterwards (`show servers state`) is exactly what the UPDATE asked for.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::appliance::Appliance;
use common::backends::Backend;
use common::*;
use serde_json::{json, Value};

/// Servers of the load balancer before the batch.
const NODES: u32 = 1_200;
/// Servers the batch removes, re-weights and adds (each).
const CHANGED: u32 = 300;

fn lb(port: u16, backend: u16, nodes: &[(u32, u16)]) -> Value {
    let nodes: Vec<Value> = nodes
        .iter()
        .map(|(id, weight)| {
            json!({"id": id, "address": "127.0.0.1", "port": backend, "weight": weight})
        })
        .collect();
    json!([{"name": "big", "protocol": "HTTP", "port": port, "nodes": nodes}])
}

/// `server name -> weight` of a backend, from `show servers state <backend>`.
fn runtime_weights(a: &Appliance, backend: &str) -> BTreeMap<String, u16> {
    let dump = a.stats_command(&format!("show servers state {backend}"));
    let mut lines = dump.lines();
    assert_eq!(lines.next().map(str::trim), Some("1"), "{dump}");
    let header: Vec<&str> = lines
        .next()
        .unwrap_or("")
        .trim_start_matches("# ")
        .split(' ')
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (name, weight) = (col("srv_name"), col("srv_uweight"));
    lines
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .filter(|f| f.len() > weight)
        .map(|f| (f[name].to_string(), f[weight].parse().unwrap()))
        .collect()
}

/// The pid serving on the stats socket.
fn serving_pid(a: &Appliance) -> String {
    let info = a.stats_command("show info");
    info.lines()
        .find_map(|l| l.strip_prefix("Pid: "))
        .unwrap_or_else(|| panic!("no Pid in {info}"))
        .trim()
        .to_string()
}

#[test]
fn a_batch_of_adds_removes_and_weights_applies_at_run_time() {
    let a = Appliance::start_with(|cfg| {
        cfg.extra = format!("[limits]\nmax_nodes = {}\n", NODES + CHANGED);
    });
    let b = Backend::http("b");
    let port = free_port();
    let before: Vec<(u32, u16)> = (1..=NODES).map(|id| (id, 1)).collect();
    let v = a.update(lb(port, b.port, &before));
    assert!(passed(&v), "{}", answer_error(&v));
    let pid = serving_pid(&a);

    // A third of it removed, a third re-weighted, as many new ones added: one UPDATE.
    let after: Vec<(u32, u16)> = (CHANGED + 1..=NODES)
        .map(|id| (id, if id <= 2 * CHANGED { 5 } else { 1 }))
        .chain((1..=CHANGED).map(|k| (10_000 + k, 2)))
        .collect();
    let v = a.update(lb(port, b.port, &after));
    assert!(passed(&v), "{}", answer_error(&v));
    let hitless = a.capabilities().dynamic_servers;
    assert_eq!(
        serving_pid(&a) == pid,
        hitless,
        "with dynamic servers the batch is applied without a reload, without them by one"
    );
    let want: BTreeMap<String, u16> = after
        .iter()
        .map(|(id, weight)| (format!("id-{id}"), *weight))
        .collect();
    // Removed servers without connections are deleted at once: none is left parked.
    assert_eq!(runtime_weights(&a, "http-servers"), want);
    if hitless {
        assert!(
            a.w.wait_for_log("update steps", 2, Duration::from_secs(5)),
            "{}",
            a.w.log()
        );
        assert!(
            !a.w.log().contains("runtime update failed half-way"),
            "no fallback to a reload: {}",
            a.w.log()
        );
    }
    let stats = a.action("STATS");
    assert_eq!(
        stats["nodes"].as_array().map(Vec::len),
        Some(after.len()),
        "{}",
        answer_error(&stats)
    );
    // And back: the batch in the other direction.
    let v = a.update(lb(port, b.port, &before));
    assert!(passed(&v), "{}", answer_error(&v));
    assert_eq!(serving_pid(&a) == pid, hitless);
    let want: BTreeMap<String, u16> = before
        .iter()
        .map(|(id, weight)| (format!("id-{id}"), *weight))
        .collect();
    assert_eq!(runtime_weights(&a, "http-servers"), want);
}
