mod carried_state;
mod properties;

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::drivers::haproxy::capabilities::Version;
use crate::drivers::haproxy::process::poll::poll_until;
use crate::drivers::haproxy::process::ProcessError;
use crate::drivers::haproxy::test_support::{check, free_port, TestHaproxy};
use crate::drivers::{LoadBalancer, Monitor, Timeouts, UrlPath};

fn node(id: &str, addr: &str, port: u16, weight: u16, backup: bool) -> Node {
    Node {
        id: NodeId::parse(id).unwrap(),
        address: Address::parse(addr).unwrap(),
        port,
        weight,
        backup,
    }
}

fn monitor(kind: MonitorType, delay: u32, timeout: u32, attempts: u32, path: &str) -> Monitor {
    Monitor {
        kind,
        delay,
        timeout,
        attempts,
        path: UrlPath::parse(path).unwrap(),
    }
}

fn lb(protocol: Protocol, port: u16, nodes: Vec<Node>) -> LoadBalancer {
    LoadBalancer {
        name: None,
        protocol,
        port,
        algorithm: Algorithm::RoundRobin,
        nodes,
        monitor: None,
        timeouts: Timeouts::default(),
    }
}

/// The HAProxy the golden texts are written for (Debian 12's, the system's here).
fn tested_capabilities() -> Capabilities {
    Capabilities::of(version(2, 6), "2.6.12")
}

fn version(major: u32, minor: u32) -> Version {
    Version {
        major,
        minor,
        patch: 0,
    }
}

#[test]
fn each_haproxy_gets_only_the_keywords_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::from_load_balancers(&http_and_tcp()).unwrap();
    let text_for = |major, minor| {
        let env = RenderEnv {
            capabilities: Capabilities::of(version(major, minor), "x"),
            ..env_in(dir.path(), LogTarget::Stdout, false)
        };
        render(&model, &env).unwrap()
    };
    for (major, minor, modern) in [(2, 2, false), (2, 4, false), (2, 6, true), (3, 0, true)] {
        let text = text_for(major, minor);
        assert_eq!(
            text.contains("\n    option idle-close-on-response\n"),
            modern,
            "{major}.{minor}: {text}"
        );
        assert_eq!(
            text.contains("\n    httpclient.ssl.verify none\n"),
            modern,
            "{major}.{minor}: {text}"
        );
    }
}

/// The settings of managed mode, or with `service` those of service mode.
fn env_in(dir: &Path, log: LogTarget, service: bool) -> RenderEnv {
    RenderEnv {
        bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        stats_socket: dir.join("stats.sock"),
        server_state_file: dir.join("server-state"),
        log,
        pid_file: service.then(|| dir.join("haproxy.pid")),
        socket_owner: service.then_some((65534, 65534)),
        cookie_key: "k3yTest".to_string(),
        limits: Default::default(),
        capabilities: tested_capabilities(),
    }
}

/// `haproxy -c` of `text` (written with a valid empty state file beside it), as the
/// driver runs it: HAProxy's warnings, or why it refused the configuration.
fn haproxy_check(dir: &Path, text: &str) -> Result<Vec<String>, ProcessError> {
    fs::write(dir.join("server-state"), EMPTY_SERVER_STATE).unwrap();
    let cfg = dir.join("haproxy.cfg");
    fs::write(&cfg, text).unwrap();
    check(&cfg)
}

/// `haproxy_check` that must pass; its warnings.
fn accepted(dir: &Path, text: &str) -> Vec<String> {
    haproxy_check(dir, text).unwrap_or_else(|e| panic!("haproxy -c refused: {e}\n---\n{text}"))
}

fn has_warning(said: &[String]) -> bool {
    said.iter().any(|line| line.starts_with("[WARNING]"))
}

/// Renders `lbs` and asserts that HAProxy accepts the result without a warning.
fn assert_accepted(lbs: &[LoadBalancer], log: LogTarget, service: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::from_load_balancers(lbs).unwrap();
    let text = render(&model, &env_in(dir.path(), log, service)).unwrap();
    let said = accepted(dir.path(), &text);
    assert!(said.is_empty(), "{said:?}\n---\n{text}");
    text
}

fn http_and_tcp() -> Vec<LoadBalancer> {
    vec![
        LoadBalancer {
            monitor: Some(monitor(MonitorType::Http, 30, 10, 2, "healthcheck")),
            nodes: vec![
                node("11", "10.0.0.1", 80, 1, false),
                node("12", "2001:db8::1", 8080, 256, false),
                node("13", "localhost", 80, 5, true),
            ],
            ..lb(Protocol::Http, 80, vec![])
        },
        LoadBalancer {
            algorithm: Algorithm::LeastConnections,
            timeouts: Timeouts {
                client_ms: 1000,
                server_ms: 2000,
                connect_ms: 3000,
                retries: 0,
            },
            ..lb(
                Protocol::Tcp,
                3306,
                vec![node("db-1", "10.0.0.2", 3306, 1, false)],
            )
        },
    ]
}

#[test]
fn golden_http_and_tcp() {
    let env = RenderEnv {
        bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        stats_socket: "/var/lib/libra-worker/haproxy.sock".into(),
        server_state_file: "/var/lib/libra-worker/server-state".into(),
        log: LogTarget::Stdout,
        pid_file: None,
        socket_owner: None,
        cookie_key: "k3yTest".to_string(),
        limits: Default::default(),
        capabilities: tested_capabilities(),
    };
    // Given in TCP-first order: the model sorts, so the text does not depend on it.
    let mut lbs = http_and_tcp();
    lbs.reverse();
    let text = render(&Model::from_load_balancers(&lbs).unwrap(), &env).unwrap();
    let expected = "\
# Written by libra-worker from its load balancer model: edits here are overwritten.

global
    log stdout format raw local0
    stats socket /var/lib/libra-worker/haproxy.sock mode 600 level admin expose-fd listeners
    server-state-file /var/lib/libra-worker/server-state
    mworker-max-reloads 10
    httpclient.ssl.verify none

defaults
    log global
    option dontlognull
    option redispatch
    maxconn 50000
    load-server-state-from-file global
    default-server init-addr libc
    timeout client 30000ms
    timeout connect 30000ms
    timeout server 30000ms

frontend http-in
    mode http
    bind 0.0.0.0:80
    timeout client 30000ms
    option httplog
    option idle-close-on-response
    default_backend http-servers

backend http-servers
    mode http
    balance roundrobin
    timeout connect 30000ms
    timeout server 30000ms
    retries 3
    cookie SERVERID insert indirect nocache dynamic
    dynamic-cookie-key k3yTest
    option forwardfor
    option httpchk GET /healthcheck
    timeout check 10s
    server id-11 10.0.0.1:80 weight 1 cookie id-11 check inter 30s rise 2 fall 2
    server id-12 [2001:db8::1]:8080 weight 256 cookie id-12 check inter 30s rise 2 fall 2
    server id-13 localhost:80 weight 5 backup cookie id-13 check inter 30s rise 2 fall 2

frontend tcp-in
    mode tcp
    bind 0.0.0.0:3306
    timeout client 1000ms
    option tcplog
    default_backend tcp-servers

backend tcp-servers
    mode tcp
    balance leastconn
    timeout connect 3000ms
    timeout server 2000ms
    retries 0
    stick-table type ip size 200k expire 30m
    stick on src
    server id-db-1 10.0.0.2:3306 weight 1 check inter 30s
";
    assert_eq!(text, expected);
}

#[test]
fn service_mode_env_renders_pid_file_and_syslog() {
    let env = RenderEnv {
        bind_address: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        stats_socket: "/run/haproxy/admin.sock".into(),
        server_state_file: "/var/lib/haproxy/server-state".into(),
        log: LogTarget::Syslog("/dev/log".into()),
        pid_file: Some("/run/haproxy.pid".into()),
        socket_owner: Some((1000, 100)),
        cookie_key: "k3yTest".to_string(),
        limits: Default::default(),
        capabilities: tested_capabilities(),
    };
    let model = Model::from_load_balancers(&[lb(Protocol::Galera, 3306, vec![])]).unwrap();
    let text = render(&model, &env).unwrap();
    assert!(text.contains("\n    log /dev/log local0\n"), "{text}");
    assert!(text.contains("\n    pidfile /run/haproxy.pid\n"), "{text}");
    assert!(text.contains("\n    bind [::]:3306\n"), "{text}");
    assert!(
            text.contains(
                "\n    stats socket /run/haproxy/admin.sock mode 600 level admin expose-fd listeners uid 1000 gid 100\n"
            ),
            "{text}"
        );
    assert!(!text.contains("log stdout"), "{text}");
}

#[test]
fn unsafe_environment_values_are_refused() {
    let dir = Path::new("/var/lib/libra-worker");
    let model = Model::from_load_balancers(&http_and_tcp()).unwrap();
    let cases = [
        RenderEnv {
            stats_socket: "/tmp/a b.sock".into(),
            ..env_in(dir, LogTarget::Stdout, false)
        },
        RenderEnv {
            server_state_file: "/tmp/x\n    stats enable".into(),
            ..env_in(dir, LogTarget::Stdout, false)
        },
        RenderEnv {
            pid_file: Some("/tmp/#pid".into()),
            ..env_in(dir, LogTarget::Stdout, false)
        },
        env_in(dir, LogTarget::Syslog("\"${HOME}\"".into()), false),
        env_in(dir, LogTarget::Syslog(String::new()), false),
        RenderEnv {
            cookie_key: "a b".into(),
            ..env_in(dir, LogTarget::Stdout, false)
        },
    ];
    for env in cases {
        match render(&model, &env) {
            Err(RenderError::UnsafeValue { .. }) => {}
            other => panic!("{env:?}: {other:?}"),
        }
    }
    let e = RenderError::UnsafeValue {
        field: "stats socket",
        value: quoted("/tmp/a b"),
    };
    assert!(
        e.to_string()
            .starts_with("cannot write stats socket '/tmp/a b' into"),
        "{e}"
    );
}

#[test]
fn non_utf8_paths_are_refused() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let env = RenderEnv {
        stats_socket: PathBuf::from(OsStr::from_bytes(b"/tmp/\xff.sock")),
        ..env_in(Path::new("/tmp"), LogTarget::Stdout, false)
    };
    let e = render(&Model::new(), &env).unwrap_err();
    assert!(
        matches!(
            e,
            RenderError::NonUtf8Path {
                field: "stats socket",
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn runtime_guard_refuses_values_the_types_would_refuse() {
    // The model cannot hold such values; the guard is checked directly.
    for bad in [
        "a b", "a\nb", "a#b", "a\"b", "a'b", "a\\b", "${X}", "", "a\tb", "a\u{85}b",
    ] {
        assert!(word("node id", bad).is_err(), "{bad:?}");
    }
    assert_eq!(word("node id", "id-1.a:b_c").unwrap(), "id-1.a:b_c");
    let mut out = Out::default();
    assert!(out.line("server x\n    stats enable".to_string()).is_err());
    assert!(out.text.is_empty());
}

#[test]
fn haproxy_accepts_http_and_tcp() {
    let text = assert_accepted(&http_and_tcp(), LogTarget::Stdout, false);
    assert!(text.contains("server id-12 [2001:db8::1]:8080 "));
}

#[test]
fn haproxy_accepts_each_load_balancer_alone() {
    let nodes = || {
        vec![
            node("1", "10.0.0.1", 80, 1, false),
            node("2", "::1", 81, 3, true),
        ]
    };
    assert_accepted(&[lb(Protocol::Http, 80, nodes())], LogTarget::Stdout, false);
    assert_accepted(&[lb(Protocol::Tcp, 443, nodes())], LogTarget::Stdout, false);
    let text = assert_accepted(
        &[lb(Protocol::Galera, 3306, nodes())],
        LogTarget::Stdout,
        false,
    );
    assert!(
        text.contains("frontend tcp-in\n") && text.contains("backend tcp-servers\n"),
        "{text}"
    );
    assert!(!text.contains("stick"), "{text}");
    assert!(!text.contains("cookie"), "{text}");
}

#[test]
fn haproxy_accepts_monitors_algorithms_and_empty_backends() {
    let connect = LoadBalancer {
        algorithm: Algorithm::LeastConnections,
        monitor: Some(monitor(MonitorType::Connect, 5, 5, 1, "/")),
        ..lb(
            Protocol::Tcp,
            9000,
            vec![node("a", "localhost", 9000, 256, false)],
        )
    };
    let http_on_tcp = LoadBalancer {
        monitor: Some(monitor(
            MonitorType::Http,
            86_400,
            1,
            100,
            "/a/b?c=d&e=%20;f=(1)*+,@~!",
        )),
        ..lb(
            Protocol::Galera,
            3306,
            vec![node("p", "10.1.1.1", 3306, 1, false)],
        )
    };
    let text = assert_accepted(std::slice::from_ref(&connect), LogTarget::Stdout, false);
    assert!(
        text.contains("timeout check 5s\n") && !text.contains("httpchk"),
        "{text}"
    );
    assert!(text.contains("balance leastconn\n"), "{text}");
    let text = assert_accepted(&[http_on_tcp], LogTarget::Stdout, false);
    assert!(
        text.contains("option httpchk GET /a/b?c=d&e=%20;f=(1)*+,@~!\n"),
        "{text}"
    );
    // An UPDATE may carry no nodes at all.
    assert_accepted(&[lb(Protocol::Http, 80, vec![])], LogTarget::Stdout, false);
    let http_monitor = LoadBalancer {
        monitor: Some(monitor(MonitorType::Http, 1, 1, 1, "")),
        ..lb(
            Protocol::Http,
            8080,
            vec![node("x", "127.0.0.1", 8080, 1, false)],
        )
    };
    let text = assert_accepted(&[http_monitor, connect], LogTarget::Stdout, false);
    assert!(text.contains("option httpchk GET /\n"), "{text}");
}

#[test]
fn paths_with_haproxy_syntax_are_escaped_byte_for_byte() {
    // Everything the API server leaves unencoded, `#`, `'` and `$` included.
    let path = "/~+*,;:!$'[]()?&=#%41$HOME";
    let http = LoadBalancer {
        monitor: Some(monitor(MonitorType::Http, 5, 5, 2, path)),
        ..lb(
            Protocol::Http,
            8080,
            vec![node("1", "127.0.0.1", 80, 1, false)],
        )
    };
    let text = assert_accepted(&[http], LogTarget::Stdout, false);
    assert!(
        text.contains("option httpchk GET /~+*,;:!\\x24\\x27[]()?&=\\x23%41\\x24HOME\n"),
        "{text}"
    );
    assert_eq!(escaped_word("p", "/a\\b\"c").unwrap(), "/a\\x5cb\\x22c");
    assert!(escaped_word("p", "/a b").is_err());
    assert!(escaped_word("p", "/a\nb").is_err());
}

#[test]
fn zero_timeouts_mean_none_and_haproxy_accepts_them() {
    let dir = tempfile::tempdir().unwrap();
    let none = LoadBalancer {
        timeouts: Timeouts {
            client_ms: 0,
            server_ms: 0,
            connect_ms: 0,
            retries: 256,
        },
        ..lb(
            Protocol::Tcp,
            9000,
            vec![node("1", "127.0.0.1", 80, 1, false)],
        )
    };
    let model = Model::from_load_balancers(&[none]).unwrap();
    let text = render(&model, &env_in(dir.path(), LogTarget::Stdout, false)).unwrap();
    assert!(text.contains("    timeout client 0ms\n"), "{text}");
    assert!(text.contains("    retries 256\n"), "{text}");
    accepted(dir.path(), &text);
}

#[test]
fn operator_limits_reach_global_and_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let env = RenderEnv {
        limits: ProcessLimits {
            maxconn: 1234,
            hard_stop_after: Some(std::time::Duration::from_secs(7200)),
            max_old_workers: 0,
        },
        ..env_in(dir.path(), LogTarget::Stdout, false)
    };
    let model = Model::from_load_balancers(&http_and_tcp()).unwrap();
    let text = render(&model, &env).unwrap();
    assert!(text.contains("\n    hard-stop-after 7200s\n"), "{text}");
    assert!(!text.contains("mworker-max-reloads"), "{text}");
    assert!(text.contains("\n    maxconn 1234\n"), "{text}");
    let said = accepted(dir.path(), &text);
    assert!(!has_warning(&said), "{said:?}\n---\n{text}");
}

#[test]
fn haproxy_accepts_service_mode_settings() {
    assert_accepted(&http_and_tcp(), LogTarget::Syslog("/dev/log".into()), true);
    assert_accepted(
        &http_and_tcp(),
        LogTarget::Syslog("127.0.0.1:514".into()),
        false,
    );
}

#[test]
fn haproxy_accepts_ipv6_bind_and_odd_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = vec![
        node("v4mapped", "::ffff:10.0.0.1", 1, 1, false),
        node("any", "::", 65535, 1, true),
        node("zero", "0.0.0.0", 2, 1, true),
        node("long-name", "localhost.", 3, 1, true),
    ];
    let model = Model::from_load_balancers(&[lb(Protocol::Tcp, 65535, nodes)]).unwrap();
    let env = RenderEnv {
        bind_address: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ..env_in(dir.path(), LogTarget::Stdout, false)
    };
    let text = render(&model, &env).unwrap();
    assert!(
        text.contains("server id-v4mapped [::ffff:10.0.0.1]:1 "),
        "{text}"
    );
    assert!(text.contains("server id-long-name localhost:3 "), "{text}");
    let said = accepted(dir.path(), &text);
    assert!(!has_warning(&said), "{said:?}\n---\n{text}");
}

#[test]
fn haproxy_refuses_unresolvable_names_and_render_does_not_hide_it() {
    // The driver relies on `haproxy -c` to report a name that does not resolve.
    let dir = tempfile::tempdir().unwrap();
    let model = Model::from_load_balancers(&[lb(
        Protocol::Tcp,
        1,
        vec![node("1", "no-such-host.invalid", 1, 1, false)],
    )])
    .unwrap();
    let text = render(&model, &env_in(dir.path(), LogTarget::Stdout, false)).unwrap();
    let err = haproxy_check(dir.path(), &text).unwrap_err();
    assert!(matches!(err, ProcessError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
}

// ---- carrying server state across a restart
