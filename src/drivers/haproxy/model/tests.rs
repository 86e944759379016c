//! The model's tests: every rule, and that the stored form reads back what was written.

use super::*;

fn node(id: &str, addr: &str, backup: bool) -> Node {
    Node {
        id: NodeId::parse(id).unwrap(),
        address: Address::parse(addr).unwrap(),
        port: 80,
        weight: 1,
        backup,
    }
}

fn monitor(delay: u32, timeout: u32, attempts: u32) -> Monitor {
    Monitor {
        kind: MonitorType::Http,
        delay,
        timeout,
        attempts,
        path: UrlPath::parse("/h").unwrap(),
    }
}

fn lb(protocol: Protocol, port: u16, nodes: Vec<Node>) -> LoadBalancer {
    LoadBalancer {
        name: Some("lb".into()),
        protocol,
        port,
        algorithm: Algorithm::LeastConnections,
        nodes,
        monitor: Some(monitor(10, 5, 2)),
        timeouts: Timeouts {
            client_ms: 1,
            server_ms: 2,
            connect_ms: 3,
            retries: 0,
        },
    }
}

#[test]
fn load_balancers_are_sorted_by_section() {
    let m = Model::from_load_balancers(&[
        lb(Protocol::Tcp, 3306, vec![node("1", "10.0.0.1", false)]),
        lb(Protocol::Http, 80, vec![node("2", "::1", false)]),
    ])
    .unwrap();
    let prefixes: Vec<_> = m.load_balancers().iter().map(|l| l.prefix()).collect();
    assert_eq!(prefixes, ["http", "tcp"]);
    assert_eq!(
        m.get(Protocol::Tcp).unwrap().algorithm,
        Algorithm::LeastConnections
    );
    assert_eq!(m.get(Protocol::Http).unwrap().nodes[0].id.as_str(), "2");
    assert!(m.get(Protocol::Galera).is_none());
}

#[test]
fn one_load_balancer_per_section_and_port() {
    let mut m = Model::new();
    m.add_protocol(Protocol::Tcp, 3306).unwrap();
    let e = m.add_protocol(Protocol::Tcp, 3307).unwrap_err();
    assert_eq!(e.to_string(), "Protocol 'TCP' is already defined.");
    let e = m.add_protocol(Protocol::Galera, 3307).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Protocols 'TCP' and 'GALERA' cannot both be defined: they share the tcp load balancer"
    );
    let e = m.add_protocol(Protocol::Http, 3306).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Port 3306 is used by more than one load balancer"
    );
    assert_eq!(
        m.add_protocol(Protocol::Http, 0).unwrap_err(),
        ModelError::PortZero
    );
    m.add_protocol(Protocol::Http, 80).unwrap();
    assert_eq!(m.load_balancers().len(), 2);
}

#[test]
fn settings_need_a_declared_protocol() {
    let mut m = Model::new();
    let e = m
        .add_server(Protocol::Http, &node("1", "10.0.0.1", false))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Protocol 'HTTP' is not defined: declare the load balancer before its settings and nodes"
    );
    assert!(m
        .set_algorithm(Protocol::Http, Algorithm::RoundRobin)
        .is_err());
    assert!(m.set_monitor(Protocol::Http, &monitor(1, 1, 1)).is_err());
    assert!(m
        .set_timeouts(Protocol::Http, &Timeouts::default())
        .is_err());
    // A TCP load balancer does not take GALERA settings, even though they share a section.
    m.add_protocol(Protocol::Tcp, 3306).unwrap();
    assert!(m
        .add_server(Protocol::Galera, &node("1", "10.0.0.1", false))
        .is_err());
}

#[test]
fn nodes_are_checked() {
    let mut m = Model::new();
    m.add_protocol(Protocol::Http, 80).unwrap();
    m.add_server(Protocol::Http, &node("1", "10.0.0.1", false))
        .unwrap();
    let e = m
        .add_server(Protocol::Http, &node("1", "10.0.0.2", false))
        .unwrap_err();
    assert_eq!(e.to_string(), "Node id '1' is used more than once");
    let heavy = Node {
        weight: 257,
        ..node("2", "10.0.0.2", false)
    };
    assert_eq!(
        m.add_server(Protocol::Http, &heavy)
            .unwrap_err()
            .to_string(),
        "Server 'weight' 257 exceeds max of 256"
    );
    let light = Node {
        weight: 0,
        ..node("2", "10.0.0.2", false)
    };
    assert_eq!(
        m.add_server(Protocol::Http, &light).unwrap_err(),
        ModelError::Rule(RuleError::WeightTooLow(0))
    );
    let portless = Node {
        port: 0,
        ..node("2", "10.0.0.2", false)
    };
    assert!(matches!(
        m.add_server(Protocol::Http, &portless),
        Err(ModelError::NodePortZero(_))
    ));
    assert_eq!(m.get(Protocol::Http).unwrap().nodes.len(), 1);
}

#[test]
fn galera_takes_one_primary() {
    let mut m = Model::new();
    m.add_protocol(Protocol::Galera, 3306).unwrap();
    m.add_server(Protocol::Galera, &node("1", "10.0.0.1", true))
        .unwrap();
    m.add_server(Protocol::Galera, &node("2", "10.0.0.2", false))
        .unwrap();
    m.add_server(Protocol::Galera, &node("3", "10.0.0.3", true))
        .unwrap();
    let e = m
        .add_server(Protocol::Galera, &node("4", "10.0.0.4", false))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Galera protocol does not accept more than one non-backup node"
    );
    // TCP has no such rule.
    let mut t = Model::new();
    t.add_protocol(Protocol::Tcp, 3306).unwrap();
    t.add_server(Protocol::Tcp, &node("1", "10.0.0.1", false))
        .unwrap();
    t.add_server(Protocol::Tcp, &node("2", "10.0.0.2", false))
        .unwrap();
}

#[test]
fn monitors_and_timeouts_are_bounded() {
    let mut m = Model::new();
    m.add_protocol(Protocol::Http, 80).unwrap();
    assert_eq!(
        m.set_monitor(Protocol::Http, &monitor(5, 6, 1))
            .unwrap_err(),
        ModelError::Rule(RuleError::MonitorTimeout)
    );
    assert!(m.set_monitor(Protocol::Http, &monitor(0, 0, 1)).is_err());
    assert_eq!(
        m.set_monitor(Protocol::Http, &monitor(5, 5, 101))
            .unwrap_err()
            .to_string(),
        "'attempts' value 101 is out of range 1..100"
    );
    assert!(m.get(Protocol::Http).unwrap().monitor.is_none());
    m.set_monitor(Protocol::Http, &monitor(5, 5, 100)).unwrap();
    // Everything the API server forwards: timeouts 0 (none) .. 1,000,000 ms, 0..256 retries.
    let api_limits = Timeouts {
        client_ms: 0,
        server_ms: 1_000_000,
        connect_ms: 0,
        retries: 256,
    };
    m.set_timeouts(Protocol::Http, &api_limits).unwrap();
    let long = Timeouts {
        client_ms: MAX_TIMEOUT_MS + 1,
        ..Timeouts::default()
    };
    assert!(m.set_timeouts(Protocol::Http, &long).is_err());
    let retries = Timeouts {
        retries: 257,
        ..Timeouts::default()
    };
    assert!(m.set_timeouts(Protocol::Http, &retries).is_err());
    let ok = Timeouts {
        client_ms: MAX_TIMEOUT_MS,
        server_ms: 1,
        connect_ms: 2,
        retries: 0,
    };
    m.set_timeouts(Protocol::Http, &ok).unwrap();
    assert_eq!(m.get(Protocol::Http).unwrap().timeouts, ok);
}

#[test]
fn same_structure_ignores_nodes_only() {
    let base = || lb(Protocol::Http, 80, vec![node("1", "10.0.0.1", false)]);
    let a = Model::from_load_balancers(&[base()]).unwrap();
    let other_nodes = LoadBalancer {
        nodes: vec![node("2", "10.0.0.2", true)],
        ..base()
    };
    let b = Model::from_load_balancers(&[other_nodes]).unwrap();
    assert!(a.same_structure(&b));
    assert_ne!(a, b);
    let other_port = LoadBalancer { port: 81, ..base() };
    assert!(!a.same_structure(&Model::from_load_balancers(&[other_port]).unwrap()));
    let no_monitor = LoadBalancer {
        monitor: None,
        ..base()
    };
    assert!(!a.same_structure(&Model::from_load_balancers(&[no_monitor]).unwrap()));
    let two = Model::from_load_balancers(&[base(), lb(Protocol::Tcp, 81, vec![])]).unwrap();
    assert!(!a.same_structure(&two));
    assert!(!a.same_structure(&Model::new()));
}

#[test]
fn json_round_trip_keeps_everything() {
    let m = Model::from_load_balancers(&[
        lb(
            Protocol::Galera,
            3306,
            vec![node("a", "db.example.com", false), node("b", "::1", true)],
        ),
        LoadBalancer {
            monitor: None,
            ..lb(Protocol::Http, 80, vec![node("1", "10.0.0.1", false)])
        },
    ])
    .unwrap();
    let json = serde_json::to_string(&m).unwrap();
    assert!(json.contains("\"protocol\":\"GALERA\""), "{json}");
    assert!(json.contains("\"address\":\"::1\""), "{json}");
    let back: Model = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
}

#[test]
fn stored_json_is_checked_like_a_job() {
    let m =
        Model::from_load_balancers(&[lb(Protocol::Http, 80, vec![node("1", "10.0.0.1", false)])])
            .unwrap();
    let json = serde_json::to_string(&m).unwrap();
    for (from, to) in [
        ("\"id\":\"1\"", "\"id\":\"1 backup\""),
        (
            "\"address\":\"10.0.0.1\"",
            "\"address\":\"10.0.0.1\\n    stats enable\"",
        ),
        ("\"path\":\"/h\"", "\"path\":\"/h #x\""),
        ("\"weight\":1", "\"weight\":0"),
        ("\"protocol\":\"HTTP\"", "\"protocol\":\"UDP\""),
        ("\"version\":1", "\"version\":2"),
        ("\"backup\":false", "\"backup\":false,\"extra\":1"),
    ] {
        let bad = json.replace(from, to);
        assert_ne!(bad, json, "{from}");
        assert!(serde_json::from_str::<Model>(&bad).is_err(), "{bad}");
    }
}
