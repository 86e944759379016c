//! Fixtures shared by the criterion benches: a realistic UPDATE job (the reference
//! deployment's shape: one HTTP and one TCP load balancer) and the worker's answer to it.

use serde_json::{json, Value};

/// An UPDATE with `lbs` load balancers (HTTP on 80, TCP on 443) of `nodes` nodes each.
pub fn update_job(lbs: usize, nodes: usize) -> Value {
    let protocols = [("HTTP", 80), ("TCP", 443)];
    let list: Vec<Value> = (0..lbs)
        .map(|i| {
            let (protocol, port) = protocols[i % protocols.len()];
            let nodes: Vec<Value> = (0..nodes)
                .map(|n| {
                    json!({"id": 1000 + i * 100 + n, "address": format!("10.0.{i}.{}", n + 10),
                           "port": 8080, "weight": 1 + n % 3, "condition": "ENABLED",
                           "backup": if n == nodes - 1 { "TRUE" } else { "FALSE" }})
                })
                .collect();
            json!({"name": format!("lb-{i}"), "protocol": protocol, "port": port,
                   "algorithm": "ROUND_ROBIN", "nodes": nodes,
                   "monitor": {"type": "HTTP", "delay": 30, "timeout": 30, "attempts": 2,
                               "path": "/healthcheck"},
                   "options": {"client_timeout": 30000, "server_timeout": 30000,
                               "connect_timeout": 30000, "connect_retries": 3}})
        })
        .collect();
    json!({"hpcs_action": "UPDATE", "loadBalancers": list})
}

/// The answer the worker sends for that job: the request, every node marked, PASS.
pub fn update_answer(lbs: usize, nodes: usize) -> Value {
    let mut answer = update_job(lbs, nodes);
    answer["hpcs_response"] = json!("PASS");
    answer
}
