//! The typed desired state of the appliance: at most one load balancer per HAProxy section
//! (`http`, or `tcp` shared by TCP and GALERA), built through the driver trait's incremental
//! calls and checked again here (defence in depth behind the job parser). The model is what
//! the renderer turns into text and what the driver persists as JSON to know what is live.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

pub use crate::drivers::types::{
    MAX_ATTEMPTS, MAX_MONITOR_SECONDS, MAX_RETRIES, MAX_TIMEOUT_MS, MAX_WEIGHT,
};
use crate::drivers::{
    Address, Algorithm, InvalidValue, LoadBalancer, Monitor, MonitorType, Node, NodeId, Protocol,
    RuleError, Timeouts, UrlPath,
};

/// Version of the persisted JSON layout.
const STORED_VERSION: u32 = 1;

/// Why a load balancer cannot enter the model. The texts are answered to the API server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error(
        "Protocol '{0}' is not defined: declare the load balancer before its settings and nodes"
    )]
    ProtocolUndefined(Protocol),
    #[error("Port 0 is not a valid listening port")]
    PortZero,
    #[error("Node '{0}': port 0 is not a valid node port")]
    NodePortZero(NodeId),
    #[error("'{field}' value {value} is out of range {min}..{max}")]
    OutOfRange {
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    /// A persisted model that no longer reads as one (edited by hand, or a newer layout).
    #[error("stored load balancer state is invalid: {0}")]
    Stored(String),
    #[error("stored load balancer state is invalid: {0}")]
    StoredValue(#[from] InvalidValue),
}

/// One load balancer: a frontend `<prefix>-in` and a backend `<prefix>-servers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbConfig {
    pub protocol: Protocol,
    pub port: u16,
    pub algorithm: Algorithm,
    pub monitor: Option<Monitor>,
    pub timeouts: Timeouts,
    /// In the order the job gave them; ids are unique within the load balancer.
    pub nodes: Vec<Node>,
    /// HTTP nodes whose stickiness cookie is HAProxy's dynamic one (derived from the
    /// backend's key and the node's address): nodes added at run time, where HAProxy 2.6
    /// refuses an explicit `cookie`. They keep that cookie across reloads.
    pub dynamic_cookie: BTreeSet<NodeId>,
}

impl LbConfig {
    /// The HAProxy section prefix (`http` or `tcp`).
    pub fn prefix(&self) -> &'static str {
        self.protocol.section_prefix()
    }
}

/// The desired load balancers, sorted by section prefix so that rendering is deterministic.
/// Fields are private: every change goes through the checks below.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "StoredModel", try_from = "StoredModel")]
pub struct Model {
    lbs: Vec<LbConfig>,
}

impl Model {
    pub(crate) fn new() -> Model {
        Model::default()
    }

    /// Builds a model from parsed UPDATE load balancers, in the driver trait's order.
    pub fn from_load_balancers(lbs: &[LoadBalancer]) -> Result<Model, ModelError> {
        let mut model = Model::new();
        for lb in lbs {
            model.add_protocol(lb.protocol, lb.port)?;
            model.set_algorithm(lb.protocol, lb.algorithm)?;
            if let Some(monitor) = &lb.monitor {
                model.set_monitor(lb.protocol, monitor)?;
            }
            model.set_timeouts(lb.protocol, &lb.timeouts)?;
            for node in &lb.nodes {
                model.add_server(lb.protocol, node)?;
            }
        }
        Ok(model)
    }

    /// The load balancers, `http` before `tcp`.
    pub(crate) fn load_balancers(&self) -> &[LbConfig] {
        &self.lbs
    }

    /// The load balancer declared for exactly this protocol.
    pub(crate) fn get(&self, protocol: Protocol) -> Option<&LbConfig> {
        self.lbs.iter().find(|lb| lb.protocol == protocol)
    }

    /// Declares a load balancer with the defaults (round robin, no monitor, default timeouts).
    pub(crate) fn add_protocol(&mut self, protocol: Protocol, port: u16) -> Result<(), ModelError> {
        if let Some(other) = self
            .lbs
            .iter()
            .find(|lb| lb.prefix() == protocol.section_prefix())
        {
            return Err(RuleError::same_section(other.protocol, protocol).into());
        }
        if port == 0 {
            return Err(ModelError::PortZero);
        }
        if self.lbs.iter().any(|lb| lb.port == port) {
            return Err(RuleError::PortInUse(port).into());
        }
        let lb = LbConfig {
            protocol,
            port,
            algorithm: Algorithm::RoundRobin,
            monitor: None,
            timeouts: Timeouts::default(),
            nodes: Vec::new(),
            dynamic_cookie: BTreeSet::new(),
        };
        let at = self.lbs.partition_point(|o| o.prefix() < lb.prefix());
        self.lbs.insert(at, lb);
        Ok(())
    }

    pub(crate) fn set_algorithm(
        &mut self,
        protocol: Protocol,
        algorithm: Algorithm,
    ) -> Result<(), ModelError> {
        self.lb_mut(protocol)?.algorithm = algorithm;
        Ok(())
    }

    pub(crate) fn set_monitor(
        &mut self,
        protocol: Protocol,
        monitor: &Monitor,
    ) -> Result<(), ModelError> {
        let lb = self.lb_mut(protocol)?;
        in_range("delay", monitor.delay.into(), 1, MAX_MONITOR_SECONDS.into())?;
        in_range(
            "timeout",
            monitor.timeout.into(),
            1,
            MAX_MONITOR_SECONDS.into(),
        )?;
        in_range("attempts", monitor.attempts.into(), 1, MAX_ATTEMPTS.into())?;
        if monitor.timeout > monitor.delay {
            return Err(RuleError::MonitorTimeout.into());
        }
        lb.monitor = Some(monitor.clone());
        Ok(())
    }

    pub(crate) fn set_timeouts(
        &mut self,
        protocol: Protocol,
        timeouts: &Timeouts,
    ) -> Result<(), ModelError> {
        let lb = self.lb_mut(protocol)?;
        let max = MAX_TIMEOUT_MS.into();
        in_range("client_timeout", timeouts.client_ms.into(), 0, max)?;
        in_range("server_timeout", timeouts.server_ms.into(), 0, max)?;
        in_range("connect_timeout", timeouts.connect_ms.into(), 0, max)?;
        in_range(
            "connect_retries",
            timeouts.retries.into(),
            0,
            MAX_RETRIES.into(),
        )?;
        lb.timeouts = *timeouts;
        Ok(())
    }

    pub(crate) fn add_server(&mut self, protocol: Protocol, node: &Node) -> Result<(), ModelError> {
        let lb = self.lb_mut(protocol)?;
        if node.port == 0 {
            return Err(ModelError::NodePortZero(node.id.clone()));
        }
        if node.weight > MAX_WEIGHT {
            return Err(RuleError::WeightTooHigh(node.weight.into()).into());
        }
        if node.weight == 0 {
            return Err(RuleError::WeightTooLow(0).into());
        }
        if lb.nodes.iter().any(|n| n.id == node.id) {
            return Err(RuleError::DuplicateNode(node.id.clone()).into());
        }
        if lb.protocol == Protocol::Galera && !node.backup && lb.nodes.iter().any(|n| !n.backup) {
            return Err(RuleError::GaleraPrimaries.into());
        }
        lb.nodes.push(node.clone());
        Ok(())
    }

    /// Equal except for the node lists: a change between two such models touches nodes only.
    pub(crate) fn same_structure(&self, other: &Model) -> bool {
        self.lbs.len() == other.lbs.len()
            && self.lbs.iter().zip(&other.lbs).all(|(a, b)| {
                a.protocol == b.protocol
                    && a.port == b.port
                    && a.algorithm == b.algorithm
                    && a.monitor == b.monitor
                    && a.timeouts == b.timeouts
            })
    }

    /// Marks nodes of `protocol` as using the dynamic cookie; ids not among its nodes are
    /// ignored.
    pub(crate) fn mark_dynamic_cookie<'a>(
        &mut self,
        protocol: Protocol,
        ids: impl IntoIterator<Item = &'a NodeId>,
    ) {
        if let Ok(lb) = self.lb_mut(protocol) {
            for id in ids {
                if lb.nodes.iter().any(|n| &n.id == id) {
                    lb.dynamic_cookie.insert(id.clone());
                }
            }
        }
    }

    /// Keeps the dynamic-cookie marks of `live` for the nodes `self` still has, so a
    /// client stuck to such a node stays stuck across the change.
    pub(crate) fn inherit_dynamic_cookies(&mut self, live: &Model) {
        for old in &live.lbs {
            if let Ok(lb) = self.lb_mut(old.protocol) {
                for id in &old.dynamic_cookie {
                    if lb.nodes.iter().any(|n| &n.id == id) {
                        lb.dynamic_cookie.insert(id.clone());
                    }
                }
            }
        }
    }

    fn lb_mut(&mut self, protocol: Protocol) -> Result<&mut LbConfig, ModelError> {
        self.lbs
            .iter_mut()
            .find(|lb| lb.protocol == protocol)
            .ok_or(ModelError::ProtocolUndefined(protocol))
    }
}

fn in_range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), ModelError> {
    if value < min || value > max {
        return Err(ModelError::OutOfRange {
            field,
            value,
            min,
            max,
        });
    }
    Ok(())
}

// The persisted form spells every value as the jobs do, and reading it back goes through
// the same parsers and checks as a job: a hand-edited file cannot smuggle in a value.

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredModel {
    version: u32,
    load_balancers: Vec<StoredLb>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredLb {
    protocol: String,
    port: u16,
    algorithm: String,
    monitor: Option<StoredMonitor>,
    client_timeout_ms: u32,
    server_timeout_ms: u32,
    connect_timeout_ms: u32,
    connect_retries: u32,
    nodes: Vec<StoredNode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dynamic_cookie: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredMonitor {
    #[serde(rename = "type")]
    kind: String,
    delay: u32,
    timeout: u32,
    attempts: u32,
    path: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredNode {
    id: String,
    address: String,
    port: u16,
    weight: u16,
    backup: bool,
}

impl From<Model> for StoredModel {
    fn from(model: Model) -> StoredModel {
        let load_balancers = model
            .lbs
            .into_iter()
            .map(|lb| StoredLb {
                protocol: lb.protocol.as_str().to_string(),
                port: lb.port,
                algorithm: lb.algorithm.as_str().to_string(),
                monitor: lb.monitor.map(|m| StoredMonitor {
                    kind: m.kind.as_str().to_string(),
                    delay: m.delay,
                    timeout: m.timeout,
                    attempts: m.attempts,
                    path: m.path.as_str().to_string(),
                }),
                client_timeout_ms: lb.timeouts.client_ms,
                server_timeout_ms: lb.timeouts.server_ms,
                connect_timeout_ms: lb.timeouts.connect_ms,
                connect_retries: lb.timeouts.retries,
                dynamic_cookie: lb
                    .dynamic_cookie
                    .iter()
                    .map(|id| id.as_str().to_string())
                    .collect(),
                nodes: lb
                    .nodes
                    .into_iter()
                    .map(|n| StoredNode {
                        id: n.id.as_str().to_string(),
                        address: n.address.to_string(),
                        port: n.port,
                        weight: n.weight,
                        backup: n.backup,
                    })
                    .collect(),
            })
            .collect();
        StoredModel {
            version: STORED_VERSION,
            load_balancers,
        }
    }
}

impl TryFrom<StoredModel> for Model {
    type Error = ModelError;

    fn try_from(stored: StoredModel) -> Result<Model, ModelError> {
        if stored.version != STORED_VERSION {
            return Err(ModelError::Stored(format!(
                "layout version {} is not {STORED_VERSION}",
                stored.version
            )));
        }
        let bad = |what: &str, value: &str| {
            ModelError::Stored(format!("{what} '{}'", value.escape_debug()))
        };
        let mut lbs = Vec::with_capacity(stored.load_balancers.len());
        let mut dynamic = Vec::new();
        for s in stored.load_balancers {
            let protocol =
                Protocol::parse(&s.protocol).ok_or_else(|| bad("protocol", &s.protocol))?;
            let algorithm =
                Algorithm::parse(&s.algorithm).ok_or_else(|| bad("algorithm", &s.algorithm))?;
            let monitor = match s.monitor {
                None => None,
                Some(m) => Some(Monitor {
                    kind: MonitorType::parse(&m.kind)
                        .ok_or_else(|| bad("monitor type", &m.kind))?,
                    delay: m.delay,
                    timeout: m.timeout,
                    attempts: m.attempts,
                    path: UrlPath::parse(&m.path)?,
                }),
            };
            let mut nodes = Vec::with_capacity(s.nodes.len());
            for n in s.nodes {
                nodes.push(Node {
                    id: NodeId::parse(&n.id)?,
                    address: Address::parse(&n.address)?,
                    port: n.port,
                    weight: n.weight,
                    backup: n.backup,
                });
            }
            for id in &s.dynamic_cookie {
                dynamic.push((protocol, NodeId::parse(id)?));
            }
            lbs.push(LoadBalancer {
                name: None,
                protocol,
                port: s.port,
                algorithm,
                nodes,
                monitor,
                timeouts: Timeouts {
                    client_ms: s.client_timeout_ms,
                    server_ms: s.server_timeout_ms,
                    connect_ms: s.connect_timeout_ms,
                    retries: s.connect_retries,
                },
            });
        }
        let mut model = Model::from_load_balancers(&lbs)?;
        for (protocol, id) in &dynamic {
            model.mark_dynamic_cookie(*protocol, [id]);
        }
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
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
        let m = Model::from_load_balancers(&[lb(
            Protocol::Http,
            80,
            vec![node("1", "10.0.0.1", false)],
        )])
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
}
