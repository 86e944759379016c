//! UPDATE parsing: every refusal's exact text, and that what the API server sends is never refused.

use super::*;
use serde_json::json;

fn run(v: Value) -> Result<Vec<LoadBalancer>, String> {
    let Value::Object(mut m) = v else { panic!() };
    parse(&mut m, &Limits::default()).map_err(|e| e.to_string())
}

fn http(nodes: Value) -> Value {
    json!({"hpcs_action": "UPDATE", "loadBalancers": [{"protocol": "HTTP", "nodes": nodes}]})
}

#[test]
fn a_full_update_parses_with_string_numbers() {
    let lbs = run(json!({"loadBalancers": [{
        "name": "lb-1", "protocol": "http", "port": "8080", "algorithm": "least_connections",
        "nodes": [{"id": 11, "address": "10.0.0.1", "port": "80", "weight": "3", "backup": "FALSE"},
                  {"id": "12", "address": "web.example", "port": 81, "backup": true}],
        "monitor": {"type": "http", "delay": "30", "timeout": 30, "attempts": 2, "path": "health"},
        "options": {"client_timeout": 1000, "connect_retries": "0"}}]}))
    .unwrap();
    let lb = &lbs[0];
    assert_eq!(
        (lb.protocol, lb.port, lb.algorithm),
        (Protocol::Http, 8080, Algorithm::LeastConnections)
    );
    assert_eq!(lb.nodes[0].weight, 3);
    assert!(lb.nodes[1].backup);
    assert_eq!(lb.nodes[0].id.as_str(), "11");
    assert_eq!(lb.monitor.as_ref().unwrap().path.as_str(), "/health");
    assert_eq!(
        lb.timeouts,
        Timeouts {
            client_ms: 1000,
            retries: 0,
            ..Timeouts::default()
        }
    );
}

#[test]
fn reference_messages_for_missing_fields() {
    let node = json!({"id": 1, "address": "10.0.0.1", "port": 80});
    let cases = vec![
        (json!({}), "Missing 'loadBalancers' element"),
        (
            json!({"loadbalancers": []}),
            "Missing 'loadBalancers' element",
        ),
        (
            json!({"loadBalancers": [{"protocol": "HTTP"}]}),
            "Missing 'nodes' element",
        ),
        (
            json!({"loadBalancers": [{"nodes": []}]}),
            "Missing required 'protocol' value.",
        ),
        (
            http(json!([{"id": 1, "address": "10.0.0.1"}])),
            "Missing node 'port'",
        ),
        (
            http(json!([{"id": 1, "port": 80}])),
            "Missing node 'address'",
        ),
        (
            http(json!([{"address": "10.0.0.1", "port": 80}])),
            "Missing node 'id'",
        ),
        (
            http(json!([{"id": "", "address": "10.0.0.1", "port": 80}])),
            "Missing node 'id'",
        ),
    ];
    for (v, want) in cases {
        assert_eq!(run(v.clone()).unwrap_err(), want, "{v}");
    }
    for field in ["type", "delay", "timeout", "attempts"] {
        let mut mon = json!({"type": "CONNECT", "delay": 5, "timeout": 5, "attempts": 2});
        mon.as_object_mut().unwrap().remove(field);
        let v = json!({"loadBalancers": [{"protocol": "HTTP", "nodes": [node.clone()], "monitor": mon}]});
        assert_eq!(
            run(v).unwrap_err(),
            format!("Missing monitor value '{field}'")
        );
    }
}

#[test]
fn monitor_without_path_defaults_and_is_echoed() {
    let mut v = json!({"loadBalancers": [{"protocol": "HTTP", "nodes": [],
        "monitor": {"type": "HTTP", "delay": 5, "timeout": 5, "attempts": 2}}]});
    let m = v.as_object_mut().unwrap();
    let lbs = parse(m, &Limits::default()).unwrap();
    assert_eq!(lbs[0].monitor.as_ref().unwrap().path.as_str(), "/");
    assert_eq!(v["loadBalancers"][0]["monitor"]["path"], "/");
}

#[test]
fn refused_values() {
    let lb = |extra: Value| {
        let mut base = json!({"protocol": "HTTP", "nodes": []});
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"loadBalancers": [base]})
    };
    let n = |extra: Value| {
        let mut base = json!({"id": 1, "address": "10.0.0.1", "port": 80});
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        http(json!([base]))
    };
    let cases = vec![
        (
            lb(json!({"algorithm": "RANDOM"})),
            "Invalid algorithm: 'RANDOM'",
        ),
        (
            lb(json!({"protocol": "UDP"})),
            "Unsupported protocol: 'UDP'",
        ),
        (
            lb(json!({"protocol": "TCP"})),
            "Port is required for this protocol.",
        ),
        (lb(json!({"port": 0})), "Invalid port 0: must be 1..65535"),
        (
            lb(json!({"port": 70000})),
            "Invalid port 70000: must be 1..65535",
        ),
        (
            lb(json!({"monitor": {"type": "CONNECT", "delay": 5, "timeout": 6, "attempts": 2}})),
            "Timeout cannot be greater than delay",
        ),
        (
            lb(json!({"monitor": {"type": "PING", "delay": 5, "timeout": 5, "attempts": 2}})),
            "Invalid monitor type: 'PING'",
        ),
        (
            n(json!({"weight": 300})),
            "Server 'weight' 300 exceeds max of 256",
        ),
        (
            n(json!({"weight": 0})),
            "Server 'weight' 0 is below the minimum of 1",
        ),
        (n(json!({"weight": "x"})), "Non-integer 'weight' value: 'x'"),
        (
            n(json!({"port": "eighty"})),
            "Non-integer 'node port' value: 'eighty'",
        ),
    ];
    for (v, want) in cases {
        assert_eq!(run(v.clone()).unwrap_err(), want, "{v}");
    }
}

#[test]
fn injection_is_refused_everywhere() {
    let evil = "10.0.0.1:80\n    stats enable";
    assert!(run(http(json!([{"id": 1, "address": evil, "port": 80}])))
        .unwrap_err()
        .starts_with("Invalid node address"));
    assert!(run(http(
        json!([{"id": "1\n    stats enable", "address": "10.0.0.1", "port": 80}])
    ))
    .unwrap_err()
    .starts_with("Invalid node id"));
    let v = json!({"loadBalancers": [{"protocol": "HTTP", "nodes": [],
        "monitor": {"type": "HTTP", "delay": 5, "timeout": 5, "attempts": 2, "path": "/x\n    stats enable"}}]});
    assert!(run(v).unwrap_err().starts_with("Invalid monitor path"));
}

#[test]
fn one_lb_per_protocol_and_port() {
    let two = |a: Value, b: Value| json!({"loadBalancers": [a, b]});
    let e = run(two(
        json!({"protocol": "HTTP", "nodes": []}),
        json!({"protocol": "http", "port": 81, "nodes": []}),
    ));
    assert_eq!(e.unwrap_err(), "Protocol 'HTTP' is already defined.");
    let e = run(two(
        json!({"protocol": "TCP", "port": 1, "nodes": []}),
        json!({"protocol": "GALERA", "port": 2, "nodes": []}),
    ));
    assert!(e.unwrap_err().contains("share the tcp load balancer"));
    let e = run(two(
        json!({"protocol": "HTTP", "port": 80, "nodes": []}),
        json!({"protocol": "TCP", "port": 80, "nodes": []}),
    ));
    assert_eq!(
        e.unwrap_err(),
        "Port 80 is used by more than one load balancer"
    );
    assert!(run(two(
        json!({"protocol": "HTTP", "nodes": []}),
        json!({"protocol": "TCP", "port": 3306, "nodes": []})
    ))
    .is_ok());
}

#[test]
fn galera_takes_one_primary() {
    let v = |backup2: &str| {
        json!({"loadBalancers": [{"protocol": "GALERA", "port": 3306, "nodes": [
        {"id": 1, "address": "10.0.0.1", "port": 3306},
        {"id": 2, "address": "10.0.0.2", "port": 3306, "backup": backup2}]}]})
    };
    assert!(run(v("TRUE")).is_ok());
    assert_eq!(
        run(v("FALSE")).unwrap_err(),
        "Galera protocol does not accept more than one non-backup node"
    );
}

#[test]
fn limits_apply() {
    let limits = Limits {
        max_nodes: 1,
        ..Limits::default()
    };
    let Value::Object(mut m) = http(
        json!([{"id": 1, "address": "10.0.0.1", "port": 80}, {"id": 2, "address": "10.0.0.1", "port": 81}]),
    ) else {
        panic!()
    };
    assert!(parse(&mut m, &limits)
        .unwrap_err()
        .to_string()
        .contains("limits.max_nodes"));
}

#[test]
fn what_the_api_server_sends_is_never_refused() {
    // Free-text names, the whole option ranges, paths as the API server encodes them.
    let name = "my lb — ünïcode \"quoted\" #not a comment\n${HOME}";
    let v = json!({"loadBalancers": [{
        "name": name, "protocol": "HTTP", "port": 80,
        "nodes": [{"id": 1, "address": "10.0.0.1", "port": 80}],
        "monitor": {"type": "HTTP", "delay": 3600, "timeout": 3600, "attempts": 10,
                    "path": "/~+*,;:!$'[]()?&=#%41"},
        "options": {"client_timeout": 0, "server_timeout": 1_000_000,
                    "connect_timeout": 0, "connect_retries": 256}}]});
    let lbs = run(v).unwrap();
    assert_eq!(lbs[0].name.as_deref(), Some(name));
    assert_eq!(
        lbs[0].timeouts,
        Timeouts {
            client_ms: 0,
            server_ms: 1_000_000,
            connect_ms: 0,
            retries: 256
        }
    );
    assert_eq!(
        lbs[0].monitor.as_ref().unwrap().path.as_str(),
        "/~+*,;:!$'[]()?&=#%41"
    );
    // A name of another JSON type is echoed and ignored, as the reference did.
    let v = json!({"loadBalancers": [{"name": 7, "protocol": "TCP", "port": 9, "nodes": []}]});
    assert_eq!(run(v).unwrap()[0].name, None);
    let long = format!("/{}", "a".repeat(1999));
    let v = json!({"loadBalancers": [{"protocol": "HTTP", "nodes": [],
        "monitor": {"type": "HTTP", "delay": 5, "timeout": 5, "attempts": 2, "path": long}}]});
    assert!(run(v).is_ok());
    let v = json!({"loadBalancers": [{"protocol": "HTTP", "nodes": [],
        "options": {"connect_retries": 257}}]});
    assert!(run(v).unwrap_err().contains("connect_retries"));
}
