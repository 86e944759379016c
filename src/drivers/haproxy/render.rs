//! The one place HAProxy configuration text is produced: `render` turns a `Model` and the
//! appliance's paths into `haproxy.cfg`, keeping the reference layout (`<prefix>-in`,
//! `<prefix>-servers`, `server id-<id>`) that STATS, METRICS and ARCHIVE rely on. Every
//! line is a fixed keyword plus numbers or validated values, and each value is checked once
//! more as it is written, so no input can add a line or a keyword the model did not hold.

use std::collections::HashSet;
use std::fmt::Write as _;
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
    // One line per node, written straight into the text, the check words built once: a
    // String per name, address, option and line made the render of 10,000 nodes take
    // 16 ms (scale bench, p50), 7-9 ms without them.
    let check = check_options(lb);
    out.text.reserve(lb.nodes.len() * (64 + check.len()));
    for node in &lb.nodes {
        word("node id", node.id.as_str())?;
        let start = out.text.len();
        let text = &mut out.text;
        text.push_str("    server ");
        text.push_str(SERVER_PREFIX);
        text.push_str(node.id.as_str());
        text.push(' ');
        match &node.address {
            Address::Ip(IpAddr::V4(ip)) => {
                let _ = write!(text, "{ip}");
            }
            Address::Ip(IpAddr::V6(ip)) => {
                let _ = write!(text, "[{ip}]");
            }
            Address::Dns(name) => text.push_str(word("node address", name)?),
        }
        let _ = write!(text, ":{} weight {}", node.port, node.weight);
        if node.backup {
            text.push_str(" backup");
        }
        if lb.protocol == Protocol::Http && !lb.dynamic_cookie.contains(&node.id) {
            text.push_str(" cookie ");
            text.push_str(SERVER_PREFIX);
            text.push_str(node.id.as_str());
        }
        text.push(' ');
        text.push_str(&check);
        out.end_line(start)?;
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
            let same = |n: &Node| n.address == node.address && n.port == node.port;
            if old.node(&node.id).is_some_and(same) {
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

    /// Ends a line written directly into `text` from `start` (its indent included), with
    /// the same check as `push`.
    fn end_line(&mut self, start: usize) -> Result<(), RenderError> {
        if self.text[start..].chars().any(char::is_control) {
            let line = self.text.split_off(start);
            return Err(RenderError::UnsafeValue {
                field: "configuration line",
                value: quoted(line.trim_start()),
            });
        }
        self.text.push('\n');
        Ok(())
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
mod tests;
