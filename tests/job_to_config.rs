//! Property: any job either fails validation or renders a configuration that `haproxy -c`
//! accepts, and the rendered file holds exactly the server lines of the job's nodes —
//! no input can add a line of its own.

use std::net::{IpAddr, Ipv4Addr};

use libra_worker::config::{haproxy_binary_from_env, Limits};
use libra_worker::jobs::{request, update};
use libra_worker::tools::capabilities::Capabilities;
use libra_worker::tools::model::Model;
use libra_worker::tools::process::validate;
use libra_worker::tools::render::{render, LogTarget, RenderEnv};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::{json, Value};

/// Values a hostile or careless API server might send (mostly plausible ones, so that
/// many jobs get all the way to `haproxy -c`).
fn text() -> impl Strategy<Value = Value> {
    prop_oneof![
        12 => "[A-Za-z0-9_.:-]{1,12}".prop_map(Value::from),
        4 => Just(json!("127.0.0.1")),
        1 => hostile(),
    ]
}

fn hostile() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("10.0.0.1")),
        Just(json!("::1")),
        Just(json!("localhost")),
        Just(json!("10.0.0.1:80\n    stats enable")),
        Just(json!("1 backup")),
        Just(json!("a#b")),
        Just(json!("${HOME}")),
        Just(json!("x\"y")),
        Just(json!("")),
        Just(json!(null)),
        Just(json!(7)),
        "\\PC{0,12}".prop_map(Value::from),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        10 => (1u32..60).prop_map(Value::from),
        4 => (1u32..65536).prop_map(Value::from),
        4 => (1u32..300).prop_map(|n| Value::from(n.to_string())),
        1 => prop_oneof![
            Just(json!("80\n    stats enable")),
            Just(json!(-1)),
            Just(json!(0)),
            Just(json!(1.5)),
            Just(json!("x")),
            Just(json!(70000)),
        ],
    ]
}

fn node() -> impl Strategy<Value = Value> {
    let address = prop_oneof![
        6 => Just(json!("127.0.0.1")),
        2 => Just(json!("::1")),
        2 => Just(json!("localhost")),
        1 => text(),
    ];
    let backup = prop_oneof![4 => Just(json!("TRUE")), 4 => Just(json!(false)), 1 => text()];
    (
        text(),
        address,
        number(),
        prop::option::of(number()),
        prop::option::of(backup),
    )
        .prop_map(|(id, address, port, weight, backup)| {
            let mut n = json!({"id": id, "address": address, "port": port});
            if let Some(w) = weight {
                n["weight"] = w;
            }
            if let Some(b) = backup {
                n["backup"] = b;
            }
            n
        })
}

/// A monitor's delay and timeout: mostly a valid pair (timeout <= delay), sometimes anything.
fn monitor_times() -> impl Strategy<Value = (Value, Value)> {
    prop_oneof![
        6 => (1u32..120, 1u32..120).prop_map(|(a, b)| (Value::from(a.max(b)), Value::from(a.min(b)))),
        1 => (number(), number()),
    ]
}

fn load_balancer() -> impl Strategy<Value = Value> {
    (
        prop_oneof![4 => Just(json!("HTTP")), 4 => Just(json!("tcp")), 2 => Just(json!("GALERA")), 1 => text()],
        // TCP and GALERA need a port: mostly given, sometimes not, sometimes hostile.
        prop_oneof![8 => (1024u32..65536).prop_map(|p| Some(Value::from(p))), 1 => Just(None), 1 => number().prop_map(Some)],
        prop::option::of(prop_oneof![4 => Just(json!("LEAST_CONNECTIONS")), 1 => text()]),
        prop::collection::vec(node(), 0..4),
        prop::option::of((
            prop_oneof![4 => Just(json!("HTTP")), 4 => Just(json!("CONNECT")), 1 => text()],
            monitor_times(),
            prop_oneof![6 => (1u32..11).prop_map(Value::from), 1 => number()],
            prop::option::of(prop_oneof![
                4 => "/[a-z0-9/?=&%._~!$'()*+,;:@#-]{0,16}".prop_map(Value::from),
                1 => text()
            ]),
        )),
        prop::option::of((number(), number(), prop_oneof![(0u32..257).prop_map(Value::from), number()])),
    )
        .prop_map(|(protocol, port, algorithm, nodes, monitor, options)| {
            let mut lb = json!({"protocol": protocol, "nodes": nodes});
            if let Some(p) = port {
                lb["port"] = p;
            }
            if let Some(a) = algorithm {
                lb["algorithm"] = a;
            }
            if let Some((kind, (delay, timeout), attempts, path)) = monitor {
                lb["monitor"] = json!({"type": kind, "delay": delay, "timeout": timeout, "attempts": attempts});
                if let Some(p) = path {
                    lb["monitor"]["path"] = p;
                }
            }
            if let Some((client, server, retries)) = options {
                lb["options"] = json!({"client_timeout": client, "server_timeout": server, "connect_retries": retries});
            }
            lb
        })
}

fn env(dir: &std::path::Path) -> RenderEnv {
    RenderEnv {
        bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        stats_socket: dir.join("stats.sock"),
        server_state_file: dir.join("server-state"),
        log: LogTarget::Stdout,
        pid_file: None,
        socket_owner: None,
        cookie_key: "propertyKey".to_string(),
        limits: Default::default(),
        capabilities: Capabilities::ask(&haproxy_binary_from_env()).unwrap(),
    }
}

/// One generated job: it fails validation (`Ok(false)`), or renders a configuration that
/// `haproxy -c` accepts with exactly its nodes' server lines (`Ok(true)`).
fn check_job(lbs: Vec<Value>) -> Result<bool, TestCaseError> {
    let body = json!({"hpcs_action": "UPDATE", "loadBalancers": lbs}).to_string();
    let Ok(req) = request::parse(body.as_bytes(), &Limits::default()) else {
        return Ok(false);
    };
    let mut msg = req.body;
    let Ok(parsed) = update::parse(&mut msg, &Limits::default()) else {
        return Ok(false);
    };
    let model = Model::from_load_balancers(&parsed);
    prop_assert!(
        model.is_ok(),
        "the job parser and the model agree: {:?}",
        model
    );
    let model = model.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server-state"), "1\n").unwrap();
    let text = render(&model, &env(dir.path()));
    prop_assert!(text.is_ok(), "{:?}", text);
    let text = text.unwrap();
    // Exactly one server line per node, each naming its node, and nothing else injected.
    let servers: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("server "))
        .collect();
    let nodes: usize = parsed.iter().map(|lb| lb.nodes.len()).sum();
    prop_assert_eq!(servers.len(), nodes);
    for lb in &parsed {
        // The backend's own lines: from its header to the next blank line.
        let header = format!("backend {}-servers", lb.protocol.section_prefix());
        let section: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != header)
            .take_while(|l| !l.is_empty())
            .collect();
        for n in &lb.nodes {
            let name = format!("server id-{} ", n.id);
            prop_assert_eq!(
                section
                    .iter()
                    .filter(|l| l.trim_start().starts_with(&name))
                    .count(),
                1
            );
        }
    }
    let injected = text.contains("stats enable") || text.contains('$');
    prop_assert!(!injected, "{}", text);
    prop_assert!(text.chars().all(|c| c == '\n' || !c.is_control()));
    // Whether a DNS name resolves depends on the machine, not on the worker: HAProxy's
    // own check reports those (tested elsewhere). Only names that resolve here go on.
    let resolvable = parsed
        .iter()
        .flat_map(|lb| &lb.nodes)
        .all(|n| match &n.address {
            libra_worker::drivers::Address::Dns(name) => name == "localhost",
            libra_worker::drivers::Address::Ip(_) => true,
        });
    if !resolvable {
        return Ok(false);
    }
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, &text).unwrap();
    let checked = validate(&haproxy_binary_from_env(), &cfg);
    prop_assert!(checked.is_ok(), "{:?}\n{}", checked, text);
    Ok(true)
}

/// Generated jobs, in one run: the property holds for each, and enough of them get all
/// the way to `haproxy -c` for it to mean something (counted in this run alone).
#[test]
fn any_job_fails_validation_or_renders_an_accepted_config() {
    const CASES: u32 = 256;
    let mut runner = TestRunner::new(ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    });
    let checked = std::cell::Cell::new(0u32);
    runner
        .run(&prop::collection::vec(load_balancer(), 1..3), |lbs| {
            if check_job(lbs)? {
                checked.set(checked.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    let n = checked.get();
    eprintln!("{n} of {CASES} generated jobs were rendered and accepted by haproxy -c");
    assert!(
        n >= CASES / 8,
        "only {n} of {CASES} generated jobs reached haproxy -c: the generator makes too few valid ones"
    );
}
