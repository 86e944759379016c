//! The model as the driver persists it (`model.json`): every value spelt as the jobs spell
//! it, and read back through the same parsers and checks as a job, so that a hand-edited
//! file cannot smuggle in a value the job parser would refuse.

use serde::{Deserialize, Serialize};

use super::*;

/// Version of the persisted JSON layout.
const STORED_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StoredModel {
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
