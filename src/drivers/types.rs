//! The vocabulary of the driver API: protocols, algorithms, nodes, monitors, timeouts,
//! node status and usage figures. Values that reach a load balancer's configuration
//! are validated newtypes: a `NodeId` or `Address` that exists is safe to render.

use std::fmt;
use std::net::IpAddr;

/// Highest node weight (the reference's limit).
pub const MAX_WEIGHT: u16 = 256;
/// Longest health-check interval or timeout, in seconds (one day).
pub const MAX_MONITOR_SECONDS: u32 = 86_400;
/// Most consecutive checks needed to change a node's state.
pub const MAX_ATTEMPTS: u32 = 100;
/// Longest client, server or connect timeout, in milliseconds (one day; the API server
/// allows up to 1,000,000). 0 means no timeout, as HAProxy reads it.
pub const MAX_TIMEOUT_MS: u32 = 86_400_000;
/// Most connection retries (the API server's limit).
pub const MAX_RETRIES: u32 = 256;

/// The names of an enumerated field's values, in one table: `parse` (case-insensitive, as
/// the contract says for enumerated fields) and `as_str` (the name used in jobs, answers
/// and stored state) both come from it.
macro_rules! named {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            pub fn parse(s: &str) -> Option<$ty> {
                $(if s.eq_ignore_ascii_case($name) {
                    return Some($ty::$variant);
                })+
                None
            }

            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }
    };
}

named!(Protocol { Http => "HTTP", Tcp => "TCP", Galera => "GALERA" });
named!(Algorithm { RoundRobin => "ROUND_ROBIN", LeastConnections => "LEAST_CONNECTIONS" });
named!(MonitorType { Connect => "CONNECT", Http => "HTTP" });

/// A load balancer's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Http,
    Tcp,
    /// TCP to a Galera cluster: one primary takes all traffic, the rest are backups.
    Galera,
}

impl Protocol {
    /// The HAProxy section prefix: `galera` shares `tcp`, as in the reference layout.
    pub fn section_prefix(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tcp | Protocol::Galera => "tcp",
        }
    }

    /// The name METRICS reports usage under: `http` or `tcp` (GALERA is billed as tcp).
    /// The admin server's billing scheduler lower-cases the load balancer's protocol, maps
    /// anything but `http` to `tcp` and keeps only entries that match exactly.
    pub fn billing_name(self) -> &'static str {
        self.section_prefix()
    }

    /// The protocol a load balancer's usage is kept under: GALERA shares TCP's backend
    /// and its bill.
    pub fn billing(self) -> Protocol {
        match self {
            Protocol::Galera => Protocol::Tcp,
            other => other,
        }
    }

    /// Whether the protocol needs an explicit listening port.
    pub fn default_port(self) -> Option<u16> {
        match self {
            Protocol::Http => Some(80),
            Protocol::Tcp | Protocol::Galera => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a load balancer picks a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    LeastConnections,
}

/// A rule the load balancers of one appliance keep. The job parser and the driver's model
/// check the same rules, and say so in the same words (the API server shows them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("Protocol '{0}' is already defined.")]
    ProtocolDefined(Protocol),
    #[error("Protocols '{existing}' and '{added}' cannot both be defined: they share the tcp load balancer")]
    SectionShared { existing: Protocol, added: Protocol },
    #[error("Port {0} is used by more than one load balancer")]
    PortInUse(u16),
    #[error("Node id '{0}' is used more than once")]
    DuplicateNode(NodeId),
    #[error("Galera protocol does not accept more than one non-backup node")]
    GaleraPrimaries,
    #[error("Timeout cannot be greater than delay")]
    MonitorTimeout,
    #[error("Server 'weight' {0} exceeds max of {MAX_WEIGHT}")]
    WeightTooHigh(i64),
    #[error("Server 'weight' {0} is below the minimum of 1")]
    WeightTooLow(i64),
}

impl RuleError {
    /// A load balancer of `added` when one of `existing` is there: the same protocol twice,
    /// or TCP and GALERA, which share HAProxy's `tcp` sections.
    pub fn same_section(existing: Protocol, added: Protocol) -> RuleError {
        if existing == added {
            RuleError::ProtocolDefined(added)
        } else {
            RuleError::SectionShared { existing, added }
        }
    }
}

/// A value refused before it could reach a configuration; each holds the value, quoted
/// for a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    #[error("Missing node 'id'")]
    EmptyNodeId,
    #[error("Invalid node id {0}: use at most 64 letters, digits, '_', '.', ':' or '-'")]
    NodeId(String),
    #[error("Invalid node address {0}: expected an IP address or a DNS name")]
    Address(String),
    #[error("Invalid monitor path {0}: percent-encode anything but URL characters (at most {MAX_PATH_LEN})")]
    Path(String),
    #[error("Invalid {field} {value}: no white space or control characters, at most 128 bytes")]
    PlainText { field: String, value: String },
}

/// A node id: non-empty, at most 64 characters of `[A-Za-z0-9_.:-]`, so that
/// `server id-<id>` can never carry white space or configuration syntax.
#[derive(Debug, Clone, Eq, PartialOrd, Ord)]
pub struct NodeId(String);

// By hand only so that tests can count comparisons: the work of a diff of 10,000 nodes,
// measured without a clock (`id_comparisons`).
impl PartialEq for NodeId {
    fn eq(&self, other: &NodeId) -> bool {
        #[cfg(test)]
        id_comparisons::count();
        self.0 == other.0
    }
}

impl std::hash::Hash for NodeId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// How many node ids this thread compared for equality (tests only).
#[cfg(test)]
pub(crate) mod id_comparisons {
    use std::cell::Cell;

    thread_local! {
        static COUNT: Cell<u64> = const { Cell::new(0) };
    }

    pub(crate) fn count() {
        COUNT.with(|c| c.set(c.get() + 1));
    }

    /// The comparisons since the last call.
    pub(crate) fn take() -> u64 {
        COUNT.with(|c| c.replace(0))
    }
}

impl NodeId {
    pub fn parse(s: &str) -> Result<NodeId, InvalidValue> {
        NodeId::check(s)?;
        Ok(NodeId(s.to_string()))
    }

    /// `parse` of a string the caller owns already (a numeric id's text): no second copy.
    pub fn parse_owned(s: String) -> Result<NodeId, InvalidValue> {
        NodeId::check(&s)?;
        Ok(NodeId(s))
    }

    fn check(s: &str) -> Result<(), InvalidValue> {
        if s.is_empty() {
            return Err(InvalidValue::EmptyNodeId);
        }
        if s.len() > 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        {
            return Err(InvalidValue::NodeId(quoted(s)));
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node address: an IP literal or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    Ip(IpAddr),
    Dns(String),
}

impl Address {
    pub fn parse(s: &str) -> Result<Address, InvalidValue> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Address::Ip(ip));
        }
        let name = s.strip_suffix('.').unwrap_or(s);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        // An all-numeric dotted name would be read as a (bad) IPv4 address.
        let looks_numeric = name
            .split('.')
            .all(|l| l.bytes().all(|b| b.is_ascii_digit()));
        if name.is_empty() || name.len() > 253 || looks_numeric || !name.split('.').all(label_ok) {
            return Err(InvalidValue::Address(quoted(s)));
        }
        Ok(Address::Dns(name.to_ascii_lowercase()))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(ip) => write!(f, "{ip}"),
            Address::Dns(name) => f.write_str(name),
        }
    }
}

/// A text field that reaches a file name or an object path (ARCHIVE's container and
/// load balancer id): no white space, no control characters, at most 128 bytes.
pub fn check_plain_text(field: &str, s: &str) -> Result<(), InvalidValue> {
    if s.len() > 128 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidValue::PlainText {
            field: field.to_string(),
            value: quoted(s),
        });
    }
    Ok(())
}

/// Longest health-check path accepted. The API server allows 2000 characters.
pub const MAX_PATH_LEN: usize = 2048;

/// A health-check URL path as the API server sends it: a leading '/', then RFC 3986
/// characters only (unreserved, reserved and '%'), so `'`, `#` and `$` may all appear and
/// the renderer quotes them. White space, control characters, `"`, `\`, `<`, `>` and the
/// like never do: the API server percent-encodes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPath(String);

impl UrlPath {
    /// Adds a leading '/' when missing, as the reference did.
    pub fn parse(s: &str) -> Result<UrlPath, InvalidValue> {
        let path = if s.starts_with('/') {
            s.to_string()
        } else {
            format!("/{s}")
        };
        if path.len() > MAX_PATH_LEN || !path.bytes().all(is_uri_byte) {
            return Err(InvalidValue::Path(quoted(s)));
        }
        Ok(UrlPath(path))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// RFC 3986 unreserved and reserved characters, and '%' of a percent-encoding.
fn is_uri_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b)
}

/// Quotes a user value for an error message, escaping anything unprintable.
pub fn quoted(s: &str) -> String {
    let shown: String = s.chars().take(80).collect();
    format!("'{}'", shown.escape_debug())
}

/// One back-end node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: NodeId,
    pub address: Address,
    pub port: u16,
    /// 1..=256.
    pub weight: u16,
    pub backup: bool,
}

/// Health-check kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorType {
    Connect,
    Http,
}

/// A health monitor: every `delay` seconds, `timeout` seconds each, `attempts` to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    pub kind: MonitorType,
    pub delay: u32,
    pub timeout: u32,
    pub attempts: u32,
    pub path: UrlPath,
}

/// Per load balancer timeouts (milliseconds) and connection retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub client_ms: u32,
    pub server_ms: u32,
    pub connect_ms: u32,
    pub retries: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            client_ms: 30_000,
            server_ms: 30_000,
            connect_ms: 30_000,
            retries: 3,
        }
    }
}

/// A complete, validated load balancer as an UPDATE describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancer {
    pub name: Option<String>,
    pub protocol: Protocol,
    pub port: u16,
    pub algorithm: Algorithm,
    pub nodes: Vec<Node>,
    pub monitor: Option<Monitor>,
    pub timeouts: Timeouts,
}

/// Health of one node as STATS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: String,
    pub up: bool,
}

/// Bytes sent out by one load balancer over a METRICS period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub protocol: Protocol,
    pub bytes_out: u64,
}

/// A METRICS report: the period and the usage of each load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statistics {
    pub utc_start: String,
    pub utc_end: String,
    pub usage: Vec<Usage>,
}

/// Where ARCHIVE ships a load balancer's log (Swift).
#[derive(Clone, PartialEq, Eq)]
pub struct ArchiveTarget {
    pub container: String,
    pub endpoint: String,
    pub token: String,
    pub protocol: Protocol,
    pub lb_id: String,
}

impl fmt::Debug for ArchiveTarget {
    // The token never reaches a log, even through Debug.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArchiveTarget")
            .field("container", &self.container)
            .field("endpoint", &self.endpoint)
            .field("token", &crate::logging::MASK)
            .field("protocol", &self.protocol)
            .field("lb_id", &self.lb_id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_refuse_syntax() {
        assert!(NodeId::parse("11").is_ok());
        assert!(NodeId::parse("node-a.1").is_ok());
        for bad in [
            "",
            "1 2",
            "1\n    stats enable",
            "a#b",
            "a\"b",
            "${X}",
            &"x".repeat(65),
        ] {
            assert!(NodeId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn addresses_are_ips_or_dns_names() {
        assert_eq!(
            Address::parse("10.0.0.1").unwrap(),
            Address::Ip("10.0.0.1".parse().unwrap())
        );
        assert!(matches!(Address::parse("::1").unwrap(), Address::Ip(_)));
        assert_eq!(
            Address::parse("Web-1.Example.com.").unwrap(),
            Address::Dns("web-1.example.com".into())
        );
        for bad in [
            "",
            "10.0.0.1:80\n    stats enable",
            "10.0.0.256",
            "a b",
            "-a.com",
            "a..b",
            "1.2.3",
            "h@x",
            "[::1]",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_are_url_paths() {
        assert_eq!(UrlPath::parse("health").unwrap().as_str(), "/health");
        assert_eq!(
            UrlPath::parse("/a/b?c=d&e=%20").unwrap().as_str(),
            "/a/b?c=d&e=%20"
        );
        // Everything the API server's `quote(path, "/~+*,;:!$'[]()?&=#%")` lets through.
        let api = "/~+*,;:!$'[]()?&=#%20a-b_c.d@e";
        assert_eq!(UrlPath::parse(api).unwrap().as_str(), api);
        assert!(UrlPath::parse(&format!("/{}", "a".repeat(1999))).is_ok());
        for bad in [
            "/a b", "/a\nb", "/\"x", "/a\\b", "/<x>", "/a{b}", "/a|b", "/a^b", "/a`b",
        ] {
            assert!(UrlPath::parse(bad).is_err(), "{bad:?}");
        }
        assert!(UrlPath::parse(&format!("/{}", "a".repeat(MAX_PATH_LEN))).is_err());
    }

    #[test]
    fn archive_target_debug_hides_token() {
        let t = ArchiveTarget {
            container: "c".into(),
            endpoint: "http://x".into(),
            token: "s3cr3t".into(),
            protocol: Protocol::Http,
            lb_id: "1".into(),
        };
        assert!(!format!("{t:?}").contains("s3cr3t"));
    }
}
