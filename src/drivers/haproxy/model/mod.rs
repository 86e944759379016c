//! The typed desired state of the appliance: at most one load balancer per HAProxy section
//! (`http`, or `tcp` shared by TCP and GALERA), built through the driver trait's incremental
//! calls and checked again here (defence in depth behind the job parser). The model is what
//! the renderer turns into text and what the driver persists as JSON to know what is live.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

mod stored;

pub use crate::drivers::types::{
    MAX_ATTEMPTS, MAX_MONITOR_SECONDS, MAX_RETRIES, MAX_TIMEOUT_MS, MAX_WEIGHT,
};
use crate::drivers::{
    Address, Algorithm, InvalidValue, LoadBalancer, Monitor, MonitorType, Node, NodeId, Protocol,
    RuleError, Timeouts, UrlPath,
};

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
    /// Where each node id is in `nodes`, so that adding a node and finding one cost the
    /// same at 10,000 nodes as at 10 (a scan per node made building and diffing quadratic).
    index: HashMap<NodeId, usize>,
    /// Whether a node that is not a backup exists (GALERA allows one).
    has_primary: bool,
}

impl LbConfig {
    /// The HAProxy section prefix (`http` or `tcp`).
    pub fn prefix(&self) -> &'static str {
        self.protocol.section_prefix()
    }

    /// The node of this id, found through the index.
    pub(crate) fn node(&self, id: &NodeId) -> Option<&Node> {
        self.index.get(id).and_then(|&i| self.nodes.get(i))
    }

    pub(crate) fn has_node(&self, id: &NodeId) -> bool {
        self.index.contains_key(id)
    }
}

/// The desired load balancers, sorted by section prefix so that rendering is deterministic.
/// Fields are private: every change goes through the checks below.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "stored::StoredModel", try_from = "stored::StoredModel")]
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
            index: HashMap::new(),
            has_primary: false,
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
        if lb.has_node(&node.id) {
            return Err(RuleError::DuplicateNode(node.id.clone()).into());
        }
        if lb.protocol == Protocol::Galera && !node.backup && lb.has_primary {
            return Err(RuleError::GaleraPrimaries.into());
        }
        lb.has_primary |= !node.backup;
        lb.index.insert(node.id.clone(), lb.nodes.len());
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
                if lb.has_node(id) {
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
                    if lb.has_node(id) {
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

#[cfg(test)]
mod tests;
