//! The one place HAProxy configuration text is produced: `render` turns a `Model` and the
//! appliance's paths into `haproxy.cfg`, keeping the reference layout (`<prefix>-in`,
//! `<prefix>-servers`, `server id-<id>`) that STATS, METRICS and ARCHIVE rely on. Every
//! line is a fixed keyword plus numbers or validated values, and each value is checked once
//! more as it is written, so no input can add a line or a keyword the model did not hold.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::capabilities::Capabilities;
use super::model::{LbConfig, Model};
use crate::drivers::{quoted, Address, Algorithm, MonitorType, Node, NodeId, Protocol};

/// Health-check interval when a load balancer has no monitor, in seconds (the reference's).
pub const DEFAULT_CHECK_INTER_S: u32 = 30;
/// Timeouts of the `defaults` section, in milliseconds; every section sets its own anyway.
pub const DEFAULT_TIMEOUT_MS: u32 = 30_000;
/// A server-state file holding no server. HAProxy warns when `server-state-file` names a
/// missing or empty file, so the driver writes this before the first check or start.
pub const EMPTY_SERVER_STATE: &str = "1\n";
/// First line of every rendered file.
pub const HEADER: &str =
    "# Written by libra-worker from its load balancer model: edits here are overwritten.";

/// Where HAProxy sends its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Managed mode: the log goes to HAProxy's standard output, which the worker collects.
    Stdout,
    /// Service mode: a syslog target such as `/dev/log` or `127.0.0.1:514`, facility local0.
    Syslog(String),
}

/// The parts of the configuration that come from the appliance, not from the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderEnv {
    /// Address every frontend binds to (`0.0.0.0` in the reference).
    pub bind_address: IpAddr,
    pub stats_socket: PathBuf,
    pub server_state_file: PathBuf,
    pub log: LogTarget,
    /// Only in service mode, where the init script expects HAProxy to write it.
    pub pid_file: Option<PathBuf>,
    /// Owner (uid, gid) of the stats socket. In service mode HAProxy starts as root, and
    /// the unprivileged worker could not open a root-owned socket of mode 600.
    pub socket_owner: Option<(u32, u32)>,
    /// Secret behind HTTP dynamic cookies (letters and digits); it must stay the same
    /// across reloads for those cookies to keep their value.
    pub cookie_key: String,
    pub limits: ProcessLimits,
    /// What the HAProxy that will read the file understands.
    pub capabilities: Capabilities,
}

/// The operator's bounds on connections and on old processes after reloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessLimits {
    /// `maxconn` of every frontend. The process-wide limit is left to HAProxy, which sizes
    /// it from the file descriptors it may open.
    pub(crate) maxconn: u32,
    /// `hard-stop-after`: None lets an old process finish its connections however long
    /// they last, as the reference's `-sf` reloads did.
    pub(crate) hard_stop_after: Option<std::time::Duration>,
    /// `mworker-max-reloads`: at most this many old processes; 0 = no bound.
    pub(crate) max_old_workers: u32,
}

impl Default for ProcessLimits {
    fn default() -> Self {
        ProcessLimits {
            maxconn: crate::config::DEFAULT_MAXCONN,
            hard_stop_after: None,
            max_old_workers: crate::config::DEFAULT_MAX_OLD_WORKERS,
        }
    }
}

/// Why no configuration was produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("cannot write {field} {value} into the HAProxy configuration: white space, control characters, '#', quotes, '\\' and '$' are not allowed there")]
    UnsafeValue { field: &'static str, value: String },
    #[error(
        "cannot write {field} {path} into the HAProxy configuration: the path is not valid UTF-8"
    )]
    NonUtf8Path { field: &'static str, path: String },
}

/// Renders the complete configuration for `model`.
pub fn render(model: &Model, env: &RenderEnv) -> Result<String, RenderError> {
    let mut out = Out::default();
    out.top(HEADER)?;
    global(&mut out, env)?;
    defaults(&mut out, &env.limits)?;
    for lb in model.load_balancers() {
        frontend(&mut out, lb, env)?;
        backend(&mut out, lb, &env.cookie_key)?;
    }
    Ok(out.text)
}

fn global(out: &mut Out, env: &RenderEnv) -> Result<(), RenderError> {
    out.blank();
    out.top("global")?;
    match &env.log {
        LogTarget::Stdout => out.line("log stdout format raw local0".to_string())?,
        LogTarget::Syslog(target) => {
            out.line(format!("log {} local0", word("syslog target", target)?))?
        }
    }
    if let Some(pid_file) = &env.pid_file {
        out.line(format!("pidfile {}", path_word("pid file", pid_file)?))?;
    }
    // `expose-fd listeners` lets a reloading process take over the listening sockets, so
    // a reload never refuses a connection.
    let mut socket = format!(
        "stats socket {} mode 600 level admin expose-fd listeners",
        path_word("stats socket", &env.stats_socket)?
    );
    if let Some((uid, gid)) = env.socket_owner {
        socket.push_str(&format!(" uid {uid} gid {gid}"));
    }
    out.line(socket)?;
    out.line(format!(
        "server-state-file {}",
        path_word("server state file", &env.server_state_file)?
    ))?;
    // Old processes finish their connections (database sessions last hours); memory is
    // bounded by how many of them may exist, unless the operator sets a hard stop.
    if let Some(after) = env.limits.hard_stop_after {
        out.line(format!("hard-stop-after {}s", after.as_secs().max(1)))?;
    }
    if env.limits.max_old_workers > 0 {
        out.line(format!(
            "mworker-max-reloads {}",
            env.limits.max_old_workers
        ))?;
    }
    // No `close-spread-time`: with `idle-close-on-response` an old process's keep-alive
    // connections close one by one, after the next answer each, as their clients ask;
    // spreading kept them (and the process) for seconds, long enough in a reload storm
    // for `mworker-max-reloads` to stop it under them (23 failed requests in 100 reloads,
    // measured; 0 without).
    // HAProxy 2.6 loads the whole system CA store at every start for its internal HTTP
    // client, which this configuration never uses: about 20 ms of every check and reload.
    // Older HAProxy has no such client and no such keyword.
    if env.capabilities.httpclient {
        out.line("httpclient.ssl.verify none".to_string())?;
    }
    Ok(())
}

fn defaults(out: &mut Out, limits: &ProcessLimits) -> Result<(), RenderError> {
    out.blank();
    out.top("defaults")?;
    out.line("log global".to_string())?;
    out.line("option dontlognull".to_string())?;
    out.line("option redispatch".to_string())?;
    out.line(format!("maxconn {}", limits.maxconn))?;
    // Health states survive a reload (the driver dumps them to the state file first).
    out.line("load-server-state-from-file global".to_string())?;
    // Resolve DNS names at every start, as the reference's restarts did. HAProxy's default
    // (`last,libc`) would take the address saved in the state file and keep a stale one.
    out.line("default-server init-addr libc".to_string())?;
    out.line(format!("timeout client {DEFAULT_TIMEOUT_MS}ms"))?;
    out.line(format!("timeout connect {DEFAULT_TIMEOUT_MS}ms"))?;
    out.line(format!("timeout server {DEFAULT_TIMEOUT_MS}ms"))
}

fn mode(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Http => "http",
        Protocol::Tcp | Protocol::Galera => "tcp",
    }
}

fn frontend(out: &mut Out, lb: &LbConfig, env: &RenderEnv) -> Result<(), RenderError> {
    out.blank();
    out.top(&format!("frontend {}", frontend_name(lb.protocol)))?;
    out.line(format!("mode {}", mode(lb.protocol)))?;
    out.line(format!(
        "bind {}:{}",
        host(&Address::Ip(env.bind_address))?,
        lb.port
    ))?;
    out.line(format!("timeout client {}ms", lb.timeouts.client_ms))?;
    match lb.protocol {
        Protocol::Http => {
            out.line("option httplog".to_string())?;
            // Keep-alive stays on (no `option httpclose`). When a reload retires this
            // process, an idle keep-alive connection still gets its next request answered
            // (with `Connection: close`) instead of being closed under a client that may
            // not retry; `timeout client` bounds how long it stays idle. Older HAProxy
            // closes idle connections at once (the driver then avoids reloads).
            if env.capabilities.idle_close_on_response {
                out.line("option idle-close-on-response".to_string())?;
            }
        }
        Protocol::Tcp | Protocol::Galera => out.line("option tcplog".to_string())?,
    }
    out.line(format!("default_backend {}", backend_name(lb.protocol)))
}

fn backend(out: &mut Out, lb: &LbConfig, cookie_key: &str) -> Result<(), RenderError> {
    out.blank();
    out.top(&format!("backend {}", backend_name(lb.protocol)))?;
    out.line(format!("mode {}", mode(lb.protocol)))?;
    let balance = match lb.algorithm {
        Algorithm::RoundRobin => "roundrobin",
        Algorithm::LeastConnections => "leastconn",
    };
    out.line(format!("balance {balance}"))?;
    out.line(format!("timeout connect {}ms", lb.timeouts.connect_ms))?;
    out.line(format!("timeout server {}ms", lb.timeouts.server_ms))?;
    out.line(format!("retries {}", lb.timeouts.retries))?;
    match lb.protocol {
        Protocol::Http => {
            // Nodes from the file carry `cookie id-<id>`; nodes added at run time get the
            // dynamic cookie derived from this key and their address.
            out.line("cookie SERVERID insert indirect nocache dynamic".to_string())?;
            out.line(format!(
                "dynamic-cookie-key {}",
                word("cookie key", cookie_key)?
            ))?;
            out.line("option forwardfor".to_string())?;
        }
        Protocol::Tcp => {
            out.line("stick-table type ip size 200k expire 30m".to_string())?;
            out.line("stick on src".to_string())?;
        }
        // No stickiness: clients must go back to the primary as soon as it is up again.
        Protocol::Galera => {}
    }
    if let Some(m) = &lb.monitor {
        if m.kind == MonitorType::Http {
            out.line(format!(
                "option httpchk GET {}",
                escaped_word("monitor path", m.path.as_str())?
            ))?;
        }
        out.line(format!("timeout check {}s", m.timeout))?;
    }
    for node in &lb.nodes {
        let name = server_name(&node.id);
        word("node id", &name)?;
        let mut server = format!("server {name} {}:{}", host(&node.address)?, node.port);
        for option in server_options(lb, node) {
            server.push(' ');
            server.push_str(&option);
        }
        out.line(server)?;
    }
    Ok(())
}

/// The words after `server <name> <addr>:<port>`: weight, backup, cookie, health check.
/// The runtime API's `add server` takes the same words, minus the cookie.
pub fn server_options(lb: &LbConfig, node: &Node) -> Vec<String> {
    let mut words = vec![format!("weight {}", node.weight)];
    if node.backup {
        words.push("backup".to_string());
    }
    if lb.protocol == Protocol::Http && !lb.dynamic_cookie.contains(&node.id) {
        words.push(format!("cookie {}", server_name(&node.id)));
    }
    words.push(check_options(lb));
    words
}

/// The health-check words of every server of `lb`.
pub fn check_options(lb: &LbConfig) -> String {
    match &lb.monitor {
        // The same count takes a node out of rotation and brings it back.
        Some(m) => format!(
            "check inter {}s rise {} fall {}",
            m.delay, m.attempts, m.attempts
        ),
        None => format!("check inter {DEFAULT_CHECK_INTER_S}s"),
    }
}

/// The frontend of `protocol`'s load balancer: `http-in` or `tcp-in` (GALERA is `tcp`).
pub fn frontend_name(protocol: Protocol) -> String {
    format!("{}-in", protocol.section_prefix())
}

/// The backend of `protocol`'s load balancer: `http-servers` or `tcp-servers`.
pub fn backend_name(protocol: Protocol) -> String {
    format!("{}-servers", protocol.section_prefix())
}

/// Whether `proxy` is the backend of one of the load balancers (of any protocol).
pub fn is_backend_name(proxy: &str) -> bool {
    [Protocol::Http, Protocol::Tcp]
        .into_iter()
        .any(|p| backend_name(p) == proxy)
}

/// What HAProxy calls a node's server, and the HTTP cookie value that sticks to it.
pub const SERVER_PREFIX: &str = "id-";

/// `id-<id>`: STATS strips [`SERVER_PREFIX`] to answer with the job's node id.
pub fn server_name(id: &NodeId) -> String {
    format!("{SERVER_PREFIX}{id}")
}

/// The server states a start with `next` may load, from `dump` (the stats socket's
/// `show servers state`, taken while `live` was serving). HAProxy 2.6 applies a saved port
/// even when the configuration changed it, and a health measured at another address or by
/// another check proves nothing, so only servers whose address, port and check are the
/// same in both models keep their line; the others start fresh. A dump that is not in
/// format version 1 gives the empty state.
pub fn carry_server_state(dump: &str, live: &Model, next: &Model) -> String {
    let mut lines = dump.lines();
    let mut out = EMPTY_SERVER_STATE.to_string();
    if lines.next().map(str::trim) != Some("1") {
        return out;
    }
    let mut kept = HashSet::new();
    for lb in next.load_balancers() {
        let Some(old) = live
            .load_balancers()
            .iter()
            .find(|o| o.prefix() == lb.prefix())
        else {
            continue;
        };
        if old.monitor != lb.monitor {
            continue;
        }
        for node in &lb.nodes {
            let same =
                |n: &Node| n.id == node.id && n.address == node.address && n.port == node.port;
            if old.nodes.iter().any(same) {
                kept.insert(format!(
                    "{} {}",
                    backend_name(lb.protocol),
                    server_name(&node.id)
                ));
            }
        }
    }
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let keep = match fields.as_slice() {
            [first, ..] if first.starts_with('#') => true,
            [_, backend, _, server, ..] => kept.contains(&format!("{backend} {server}")),
            _ => false,
        };
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// An address as HAProxy 2.6 reads it before `:<port>`: IPv6 in brackets, names as-is.
fn host(address: &Address) -> Result<String, RenderError> {
    Ok(match address {
        Address::Ip(IpAddr::V4(ip)) => ip.to_string(),
        Address::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        Address::Dns(name) => word("node address", name)?.to_string(),
    })
}

/// A value written as one configuration word. The model's types already refuse these
/// characters; this is the last line of defence, kept at run time on purpose.
fn word<'a>(field: &'static str, value: &'a str) -> Result<&'a str, RenderError> {
    let unsafe_char = |c: char| c.is_whitespace() || c.is_control() || "#\"'\\$".contains(c);
    if value.is_empty() || value.chars().any(unsafe_char) {
        return Err(RenderError::UnsafeValue {
            field,
            value: quoted(value),
        });
    }
    Ok(value)
}

/// A value written as one configuration word with HAProxy's syntax characters escaped:
/// `#` (comment), `'` and `"` (quoting), `\\` (escaping) and `$` (expanded in some
/// contexts) become `\xNN`, which every HAProxy since 1.x turns back into the same byte,
/// so the word reaches HAProxy byte for byte. White space and control characters cannot
/// be escaped this way and are refused.
fn escaped_word(field: &'static str, value: &str) -> Result<String, RenderError> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RenderError::UnsafeValue {
            field,
            value: quoted(value),
        });
    }
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if "#'\"\\$".contains(c) {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

fn path_word<'a>(field: &'static str, path: &'a Path) -> Result<&'a str, RenderError> {
    let text = path.to_str().ok_or_else(|| RenderError::NonUtf8Path {
        field,
        path: quoted(&path.to_string_lossy()),
    })?;
    word(field, text)
}

/// The text under construction. Each line is checked to be a single line once more.
#[derive(Default)]
struct Out {
    text: String,
}

impl Out {
    fn top(&mut self, line: &str) -> Result<(), RenderError> {
        self.push("", line)
    }

    fn line(&mut self, line: String) -> Result<(), RenderError> {
        self.push("    ", &line)
    }

    fn blank(&mut self) {
        self.text.push('\n');
    }

    fn push(&mut self, indent: &str, line: &str) -> Result<(), RenderError> {
        if line.chars().any(char::is_control) {
            return Err(RenderError::UnsafeValue {
                field: "configuration line",
                value: quoted(line),
            });
        }
        self.text.push_str(indent);
        self.text.push_str(line);
        self.text.push('\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn carried_state_keeps_only_unchanged_servers() {
        let live = Model::from_load_balancers(&http_and_tcp()).unwrap();
        let mut lbs = http_and_tcp();
        lbs[0].nodes = vec![
            node("11", "10.0.0.1", 80, 7, true), // same place: weight and backup may change
            node("12", "2001:db8::1", 8081, 256, false), // moved to another port
            node("14", "10.0.0.4", 80, 1, false), // new
        ];
        lbs[1].monitor = Some(monitor(MonitorType::Connect, 5, 5, 1, "/")); // a new check
        let next = Model::from_load_balancers(&lbs).unwrap();
        let header =
            "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight";
        let dump = format!(
            "1\n{header}\n\
             3 http-servers 1 id-11 10.0.0.1 0 0 1 1 5 8 2 0 6 0 0 0 - 80 - 0 0 - - 0\n\
             3 http-servers 2 id-12 2001:db8::1 2 0 256 256 5 6 3 4 6 0 0 0 - 8080 - 0 0 - - 0\n\
             3 http-servers 3 id-13 127.0.0.1 2 0 5 5 5 6 3 4 6 0 0 0 localhost 80 - 0 0 - - 0\n\
             5 tcp-servers 1 id-db-1 10.0.0.2 0 0 1 1 5 8 2 0 6 0 0 0 - 3306 - 0 0 - - 0\n\
             7 other 1 id-11 10.0.0.1 0 0 1 1 5 8 2 0 6 0 0 0 - 80 - 0 0 - - 0\n\n"
        );
        let carried = carry_server_state(&dump, &live, &next);
        assert_eq!(
            carried,
            format!("1\n{header}\n3 http-servers 1 id-11 10.0.0.1 0 0 1 1 5 8 2 0 6 0 0 0 - 80 - 0 0 - - 0\n")
        );
        // Nothing carries into a model that has no such load balancer, or from a bad dump.
        assert_eq!(
            carry_server_state(&dump, &live, &Model::new()),
            format!("1\n{header}\n")
        );
        assert_eq!(
            carry_server_state(&dump, &Model::new(), &next),
            format!("1\n{header}\n")
        );
        assert_eq!(carry_server_state("", &live, &next), EMPTY_SERVER_STATE);
        assert_eq!(
            carry_server_state("2\nx\n", &live, &live),
            EMPTY_SERVER_STATE
        );
        assert_eq!(
            carry_server_state("Unknown command\n", &live, &live),
            EMPTY_SERVER_STATE
        );
    }

    /// Sends `hello` through the frontend and tells which listener it reached. Health
    /// checks also connect, but they send nothing and are skipped.
    fn hello_reaches(frontend: u16, listeners: &[&std::net::TcpListener]) -> Option<usize> {
        use std::io::{ErrorKind, Read, Write};
        let mut client = std::net::TcpStream::connect(("127.0.0.1", frontend)).unwrap();
        client.write_all(b"hello").unwrap();
        for l in listeners {
            l.set_nonblocking(true).unwrap();
        }
        poll_until(Duration::from_secs(10), Duration::from_millis(10), || {
            listeners
                .iter()
                .enumerate()
                .find_map(|(i, l)| match l.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        conn.set_read_timeout(Some(Duration::from_millis(500)))
                            .unwrap();
                        let mut buf = [0u8; 5];
                        (conn.read_exact(&mut buf).is_ok() && &buf == b"hello").then_some(i)
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => None,
                    Err(e) => panic!("accept: {e}"),
                })
        })
    }

    #[test]
    fn a_moved_node_gets_its_new_port_after_a_restart_with_carried_state() {
        let old = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let new = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let frontend = free_port();
        let model_at = |port: u16| {
            let tcp = lb(
                Protocol::Tcp,
                frontend,
                vec![node("1", "127.0.0.1", port, 1, false)],
            );
            Model::from_load_balancers(&[tcp]).unwrap()
        };
        let (live, next) = (
            model_at(old.local_addr().unwrap().port()),
            model_at(new.local_addr().unwrap().port()),
        );
        let mut h = TestHaproxy::empty();
        let mut env = env_in(h.dir.path(), LogTarget::Stdout, false);
        env.bind_address = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let state = h.path("server-state");

        fs::write(&state, EMPTY_SERVER_STATE).unwrap();
        h.write_config_text(&render(&live, &env).unwrap());
        h.start();
        let dump = h.stats().show_servers_state().unwrap();
        h.stop();
        assert!(
            dump.starts_with("1\n") && dump.contains(" tcp-servers 1 id-1 127.0.0.1 "),
            "{dump}"
        );

        // Why the state is filtered: HAProxy 2.6 restores the saved port over the new one.
        fs::write(&state, &dump).unwrap();
        h.write_config_text(&render(&next, &env).unwrap());
        h.start();
        assert_eq!(
            hello_reaches(frontend, &[&old, &new]),
            Some(0),
            "HAProxy no longer restores saved ports"
        );
        h.stop();

        fs::write(&state, carry_server_state(&dump, &live, &next)).unwrap();
        h.write_config_text(&render(&next, &env).unwrap());
        h.start();
        assert_eq!(hello_reaches(frontend, &[&old, &new]), Some(1));
    }

    // ---- property test: random valid models always render to accepted, allow-listed text

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
}
