//! Property test: any model the job parser can produce renders to text HAProxy accepts
//! and whose every line has an allow-listed shape.

use super::*;

/// Every line shape the renderer writes; anything else in the output is a bug.
const LINE_SHAPES: &[&str] = &[
    r"",
    r"# Written by libra-worker from its load balancer model: edits here are overwritten\.",
    r"global",
    r"defaults",
    r"frontend (http|tcp)-in",
    r"backend (http|tcp)-servers",
    r"    maxconn [1-9][0-9]*",
    r"    mworker-max-reloads [1-9][0-9]*",
    r"    log stdout format raw local0",
    r"    log \S+ local0",
    r"    log global",
    r"    pidfile /\S+",
    r"    stats socket /\S+ mode 600 level admin expose-fd listeners( uid [0-9]+ gid [0-9]+)?",
    r"    server-state-file /\S+",
    r"    hard-stop-after [1-9][0-9]*s",
    r"    httpclient.ssl.verify none",
    r"    option (dontlognull|redispatch|httplog|tcplog|idle-close-on-response|forwardfor)",
    r"    load-server-state-from-file global",
    r"    default-server init-addr libc",
    r"    timeout (client|connect|server) (0|[1-9][0-9]*)ms",
    r"    timeout check [1-9][0-9]*s",
    r"    mode (http|tcp)",
    r"    bind ([0-9.]+|\[[0-9a-f:.]+\]):[1-9][0-9]*",
    r"    default_backend (http|tcp)-servers",
    r"    balance (roundrobin|leastconn)",
    r"    retries [0-9]+",
    r"    cookie SERVERID insert indirect nocache dynamic",
    r"    dynamic-cookie-key [A-Za-z0-9]+",
    r"    stick-table type ip size 200k expire 30m",
    r"    stick on src",
    r"    option httpchk GET /([A-Za-z0-9._~!&()*+,;=:@/%?\[\]-]|\\x(23|24|27))*",
    r"    server id-[A-Za-z0-9_.:-]{1,64} ([0-9.]+|\[[0-9a-f:.]+\]|[a-z0-9_.-]+):[1-9][0-9]* weight [1-9][0-9]*( backup)?( cookie id-[A-Za-z0-9_.:-]{1,64})? check inter [1-9][0-9]*s( rise [1-9][0-9]* fall [1-9][0-9]*)?",
];

fn arb_address() -> impl Strategy<Value = Address> {
    prop_oneof![
        any::<Ipv4Addr>().prop_map(|ip| Address::Ip(IpAddr::V4(ip))),
        any::<Ipv6Addr>().prop_map(|ip| Address::Ip(IpAddr::V6(ip))),
        Just(Address::parse("localhost").unwrap()),
    ]
}

fn arb_node() -> impl Strategy<Value = Node> {
    (
        "[A-Za-z0-9_.:-]{1,64}",
        arb_address(),
        1u16..,
        1u16..=256,
        any::<bool>(),
    )
        .prop_map(|(id, address, port, weight, backup)| Node {
            id: NodeId::parse(&id).unwrap(),
            address,
            port,
            weight,
            backup,
        })
}

fn arb_monitor() -> impl Strategy<Value = Option<Monitor>> {
    let kind = prop_oneof![Just(MonitorType::Connect), Just(MonitorType::Http)];
    let path = "[A-Za-z0-9._~!&()*+,;=:@/%?#$'\\[\\]-]{0,40}";
    proptest::option::of(
        (kind, 1u32..=86_400, 1u32..=86_400, 1u32..=100, path).prop_map(
            |(kind, a, b, attempts, path)| Monitor {
                kind,
                delay: a.max(b),
                timeout: a.min(b),
                attempts,
                path: UrlPath::parse(&path).unwrap(),
            },
        ),
    )
}

fn arb_lb(protocol: Protocol, port: u16) -> impl Strategy<Value = LoadBalancer> {
    // 0 (no timeout) renders too, but HAProxy warns about it: tested on its own.
    let ms = 1u32..=86_400_000;
    (
        any::<bool>(),
        arb_monitor(),
        (ms.clone(), ms.clone(), ms, 0u32..=256),
        proptest::collection::vec(arb_node(), 0..6),
    )
        .prop_map(
            move |(least, monitor, (client_ms, server_ms, connect_ms, retries), mut nodes)| {
                let mut seen = std::collections::HashSet::new();
                nodes.retain(|n| seen.insert(n.id.clone()));
                if protocol == Protocol::Galera {
                    let mut primary = false;
                    for n in &mut nodes {
                        n.backup = n.backup || primary;
                        primary = primary || !n.backup;
                    }
                }
                LoadBalancer {
                    name: None,
                    protocol,
                    port,
                    algorithm: if least {
                        Algorithm::LeastConnections
                    } else {
                        Algorithm::RoundRobin
                    },
                    nodes,
                    monitor,
                    timeouts: Timeouts {
                        client_ms,
                        server_ms,
                        connect_ms,
                        retries,
                    },
                }
            },
        )
}

fn arb_model() -> impl Strategy<Value = Vec<LoadBalancer>> {
    let sets = prop_oneof![
        Just(vec![Protocol::Http]),
        Just(vec![Protocol::Tcp]),
        Just(vec![Protocol::Galera]),
        Just(vec![Protocol::Http, Protocol::Tcp]),
        Just(vec![Protocol::Galera, Protocol::Http]),
    ];
    (sets, 1u16.., 1u16..).prop_flat_map(|(protocols, p1, p2)| {
        let p2 = if p1 == p2 { p1 % u16::MAX + 1 } else { p2 };
        let lbs: Vec<_> = protocols
            .iter()
            .zip([p1, p2])
            .map(|(&proto, port)| arb_lb(proto, port))
            .collect();
        lbs
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_models_render_to_accepted_allow_listed_text(lbs in arb_model(), ipv6_bind in any::<bool>()) {
        let model = Model::from_load_balancers(&lbs);
        prop_assert!(model.is_ok(), "{:?}", model);
        let model = model.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut env = env_in(dir.path(), LogTarget::Stdout, ipv6_bind);
        if ipv6_bind {
            env.bind_address = IpAddr::V6(Ipv6Addr::LOCALHOST);
            env.log = LogTarget::Syslog("/dev/log".into());
        }
        let text = render(&model, &env).unwrap();

        let shapes: Vec<regex::Regex> =
            LINE_SHAPES.iter().map(|s| regex::Regex::new(&format!("^{s}$")).unwrap()).collect();
        for line in text.lines() {
            prop_assert!(shapes.iter().any(|r| r.is_match(line)), "line not allow-listed: {:?}", line);
        }
        let servers = text.lines().filter(|l| l.starts_with("    server id-")).count();
        let nodes: usize = lbs.iter().map(|l| l.nodes.len()).sum();
        prop_assert_eq!(servers, nodes);
        prop_assert_eq!(text.matches("\nfrontend ").count(), lbs.len());
        prop_assert_eq!(text.matches("\nbackend ").count(), lbs.len());

        let said = haproxy_check(dir.path(), &text);
        prop_assert!(said.is_ok(), "haproxy -c refused: {:?}\n---\n{}", said, text);
        let said = said.unwrap_or_default();
        prop_assert!(!has_warning(&said), "{:?}\n---\n{}", said, text);
    }
}
