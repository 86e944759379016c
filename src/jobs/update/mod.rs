//! UPDATE: checks the whole desired state before anything is touched and turns it into
//! typed load balancers. Missing fields get the reference worker's exact messages; every
//! other refused value gets a message naming the field and the value.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::request::kind_of;
use super::response;
use crate::config::Limits;
use crate::drivers::{
    quoted, Address, Algorithm, InvalidValue, LoadBalancer, Monitor, MonitorType, Node, NodeId,
    Protocol, RuleError, Timeouts, UrlPath, MAX_ATTEMPTS, MAX_MONITOR_SECONDS, MAX_RETRIES,
    MAX_TIMEOUT_MS, MAX_WEIGHT,
};

pub const LB_LIST_FIELD: &str = "loadBalancers";
/// Node states written into the answer.
pub const NODE_OK: &str = "ENABLED";
pub const NODE_ERR: &str = "DISABLED";

/// Why an UPDATE is refused. The texts are the reference worker's where it had one (the
/// API server may show them to users); the others name the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("Missing 'loadBalancers' element")]
    MissingLoadBalancers,
    #[error("Missing 'nodes' element")]
    MissingNodes,
    #[error("Missing required 'protocol' value.")]
    MissingProtocol,
    #[error("Missing node '{0}'")]
    MissingNodeField(&'static str),
    #[error("Missing monitor value '{0}'")]
    MissingMonitorValue(&'static str),
    #[error("Missing '{0}' value")]
    MissingValue(String),
    #[error("'loadBalancers' must hold at least one load balancer")]
    NoLoadBalancers,
    #[error("{what} must be {expected}, not {found}")]
    WrongType {
        what: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("Too many {what}: {count} (limits.{limit} is {max})")]
    TooMany {
        what: &'static str,
        count: usize,
        limit: &'static str,
        max: usize,
    },
    #[error("Unsupported protocol: {0}")]
    UnsupportedProtocol(String),
    #[error("Port is required for this protocol.")]
    PortRequired,
    #[error("Invalid algorithm: {0}")]
    InvalidAlgorithm(String),
    #[error("Invalid monitor type: {0}")]
    InvalidMonitorType(String),
    #[error("Non-integer '{field}' value: {value}")]
    NotAnInteger { field: String, value: String },
    #[error("'{field}' value {value} is out of range {min}..{max}")]
    OutOfRange {
        field: String,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("Invalid {field} {value}: must be 1..65535")]
    InvalidPort { field: &'static str, value: i64 },
    #[error("Invalid node 'backup' value: {0} (TRUE or FALSE)")]
    InvalidBackup(String),
    #[error(transparent)]
    Value(#[from] InvalidValue),
    #[error(transparent)]
    Rule(#[from] RuleError),
}

impl UpdateError {
    fn wrong_type(what: &'static str, expected: &'static str, found: &Value) -> UpdateError {
        UpdateError::WrongType {
            what,
            expected,
            found: kind_of(found),
        }
    }

    fn not_an_integer(field: &str, value: &Value) -> UpdateError {
        UpdateError::NotAnInteger {
            field: field.to_string(),
            value: shown(value),
        }
    }
}

/// Parses the `loadBalancers` of an UPDATE.
pub fn parse(
    msg: &mut Map<String, Value>,
    limits: &Limits,
) -> Result<Vec<LoadBalancer>, UpdateError> {
    let list = match msg.get_mut(LB_LIST_FIELD) {
        None => return Err(UpdateError::MissingLoadBalancers),
        Some(Value::Array(list)) => list,
        Some(other) => return Err(UpdateError::wrong_type("'loadBalancers'", "a list", other)),
    };
    if list.is_empty() {
        return Err(UpdateError::NoLoadBalancers);
    }
    if list.len() > limits.max_load_balancers {
        return Err(UpdateError::TooMany {
            what: "load balancers",
            count: list.len(),
            limit: "max_load_balancers",
            max: limits.max_load_balancers,
        });
    }
    let mut lbs: Vec<LoadBalancer> = Vec::with_capacity(list.len());
    for entry in list.iter_mut() {
        let Value::Object(lb) = entry else {
            return Err(UpdateError::wrong_type(
                "Each load balancer",
                "an object",
                entry,
            ));
        };
        let parsed = parse_lb(lb, limits)?;
        if let Some(other) = lbs
            .iter()
            .find(|o| o.protocol.section_prefix() == parsed.protocol.section_prefix())
        {
            return Err(RuleError::same_section(other.protocol, parsed.protocol).into());
        }
        if lbs.iter().any(|o| o.port == parsed.port) {
            return Err(RuleError::PortInUse(parsed.port).into());
        }
        lbs.push(parsed);
    }
    Ok(lbs)
}

fn parse_lb(lb: &mut Map<String, Value>, limits: &Limits) -> Result<LoadBalancer, UpdateError> {
    // The reference checks 'nodes' before 'protocol'; the API server may rely on it.
    let node_count = match lb.get("nodes") {
        None => return Err(UpdateError::MissingNodes),
        Some(Value::Array(n)) => n.len(),
        Some(other) => return Err(UpdateError::wrong_type("'nodes'", "a list", other)),
    };
    let protocol = match lb.get("protocol") {
        None => return Err(UpdateError::MissingProtocol),
        Some(Value::String(p)) => {
            Protocol::parse(p).ok_or_else(|| UpdateError::UnsupportedProtocol(quoted(p)))?
        }
        Some(other) => return Err(UpdateError::UnsupportedProtocol(kind_of(other).to_string())),
    };
    // The user's free text (any characters, up to 128 in the API server): echoed, never
    // refused, never written into the configuration.
    let name = match lb.get("name") {
        Some(Value::String(n)) => Some(n.clone()),
        _ => None,
    };
    let port = match lb.get("port") {
        None | Some(Value::Null) => protocol.default_port().ok_or(UpdateError::PortRequired)?,
        Some(v) => port_value("port", v)?,
    };
    let algorithm = match lb.get("algorithm") {
        None | Some(Value::Null) => Algorithm::RoundRobin,
        Some(Value::String(a)) => {
            Algorithm::parse(a).ok_or_else(|| UpdateError::InvalidAlgorithm(quoted(a)))?
        }
        Some(other) => return Err(UpdateError::InvalidAlgorithm(kind_of(other).to_string())),
    };
    let monitor = match lb.get_mut("monitor") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(parse_monitor(m)?),
        Some(other) => return Err(UpdateError::wrong_type("'monitor'", "an object", other)),
    };
    let timeouts = match lb.get("options") {
        None | Some(Value::Null) => Timeouts::default(),
        Some(Value::Object(o)) => parse_options(o)?,
        Some(other) => return Err(UpdateError::wrong_type("'options'", "an object", other)),
    };
    if node_count > limits.max_nodes {
        return Err(UpdateError::TooMany {
            what: "nodes",
            count: node_count,
            limit: "max_nodes",
            max: limits.max_nodes,
        });
    }
    let mut nodes: Vec<Node> = Vec::with_capacity(node_count);
    let mut ids = HashSet::with_capacity(node_count);
    if let Some(Value::Array(list)) = lb.get("nodes") {
        for entry in list {
            let Value::Object(node) = entry else {
                return Err(UpdateError::wrong_type("Each node", "an object", entry));
            };
            let node = parse_node(node)?;
            if !ids.insert(node.id.clone()) {
                return Err(RuleError::DuplicateNode(node.id).into());
            }
            nodes.push(node);
        }
    }
    if protocol == Protocol::Galera && nodes.iter().filter(|n| !n.backup).count() > 1 {
        return Err(RuleError::GaleraPrimaries.into());
    }
    Ok(LoadBalancer {
        name,
        protocol,
        port,
        algorithm,
        nodes,
        monitor,
        timeouts,
    })
}

fn parse_monitor(m: &mut Map<String, Value>) -> Result<Monitor, UpdateError> {
    for field in ["type", "delay", "timeout", "attempts"] {
        if !m.contains_key(field) {
            return Err(UpdateError::MissingMonitorValue(field));
        }
    }
    let kind = match m.get("type") {
        Some(Value::String(t)) => {
            MonitorType::parse(t).ok_or_else(|| UpdateError::InvalidMonitorType(quoted(t)))?
        }
        Some(other) => return Err(UpdateError::InvalidMonitorType(kind_of(other).to_string())),
        None => return Err(UpdateError::MissingMonitorValue("type")),
    };
    let seconds = MAX_MONITOR_SECONDS.into();
    let delay = int_in(m.get("delay"), "delay", 1, seconds)?;
    let timeout = int_in(m.get("timeout"), "timeout", 1, seconds)?;
    let attempts = int_in(m.get("attempts"), "attempts", 1, MAX_ATTEMPTS.into())?;
    if timeout > delay {
        return Err(RuleError::MonitorTimeout.into());
    }
    let path = match m.get("path") {
        None | Some(Value::Null) => UrlPath::parse("/"),
        Some(Value::String(p)) if p.is_empty() => UrlPath::parse("/"),
        Some(Value::String(p)) => UrlPath::parse(p),
        Some(other) => return Err(UpdateError::wrong_type("The monitor path", "text", other)),
    }?;
    // The reference echoed the defaulted path; so do we.
    m.insert("path".to_string(), Value::from(path.as_str()));
    Ok(Monitor {
        kind,
        delay,
        timeout,
        attempts,
        path,
    })
}

fn parse_options(o: &Map<String, Value>) -> Result<Timeouts, UpdateError> {
    let d = Timeouts::default();
    // The API server forwards 0 (no timeout) .. 1,000,000 ms and 0..256 retries.
    let ms = |field: &str, default: u32| match o.get(field) {
        None | Some(Value::Null) => Ok(default),
        v => int_in(v, field, 0, MAX_TIMEOUT_MS.into()),
    };
    Ok(Timeouts {
        client_ms: ms("client_timeout", d.client_ms)?,
        server_ms: ms("server_timeout", d.server_ms)?,
        connect_ms: ms("connect_timeout", d.connect_ms)?,
        retries: match o.get("connect_retries") {
            None | Some(Value::Null) => d.retries,
            v => int_in(v, "connect_retries", 0, MAX_RETRIES.into())?,
        },
    })
}

/// A node object's fields, read in one pass over its entries: a 10,000-node UPDATE looked
/// each field up by hash (SipHash per key) 50,000 times, a third of the validation.
#[derive(Default)]
struct NodeFields<'a> {
    port: Option<&'a Value>,
    address: Option<&'a Value>,
    id: Option<&'a Value>,
    weight: Option<&'a Value>,
    backup: Option<&'a Value>,
}

impl<'a> NodeFields<'a> {
    fn of(node: &'a Map<String, Value>) -> NodeFields<'a> {
        let mut f = NodeFields::default();
        for (key, value) in node {
            let slot = match key.as_str() {
                "port" => &mut f.port,
                "address" => &mut f.address,
                "id" => &mut f.id,
                "weight" => &mut f.weight,
                "backup" => &mut f.backup,
                _ => continue,
            };
            *slot = Some(value);
        }
        f
    }
}

fn parse_node(node: &Map<String, Value>) -> Result<Node, UpdateError> {
    let fields = NodeFields::of(node);
    let port = match fields.port {
        None => return Err(UpdateError::MissingNodeField("port")),
        Some(v) => port_value("node port", v)?,
    };
    let address = match fields.address {
        None => return Err(UpdateError::MissingNodeField("address")),
        Some(Value::String(a)) => Address::parse(a)?,
        Some(other) => return Err(UpdateError::wrong_type("A node address", "text", other)),
    };
    let id = match fields.id {
        None | Some(Value::Null) => return Err(UpdateError::MissingNodeField("id")),
        Some(Value::String(s)) => NodeId::parse(s)?,
        Some(Value::Number(n)) => NodeId::parse_owned(n.to_string())?,
        Some(other) => {
            return Err(UpdateError::wrong_type(
                "A node id",
                "a number or text",
                other,
            ))
        }
    };
    let weight = match fields.weight {
        None | Some(Value::Null) => 1,
        Some(v) => {
            let w = integer(v).ok_or_else(|| UpdateError::not_an_integer("weight", v))?;
            if w > i64::from(MAX_WEIGHT) {
                return Err(RuleError::WeightTooHigh(w).into());
            }
            if w < 1 {
                return Err(RuleError::WeightTooLow(w).into());
            }
            w as u16
        }
    };
    let backup = match fields.backup {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        Some(v) => return Err(UpdateError::InvalidBackup(shown(v))),
    };
    Ok(Node {
        id,
        address,
        port,
        weight,
        backup,
    })
}

/// Sets every node's `condition` in the echoed request.
pub fn mark_nodes(msg: &mut Map<String, Value>, condition: &str) {
    if let Some(Value::Array(lbs)) = msg.get_mut(LB_LIST_FIELD) {
        for lb in lbs {
            if let Some(Value::Array(nodes)) = lb.get_mut("nodes") {
                for node in nodes {
                    if let Value::Object(n) = node {
                        n.insert("condition".to_string(), Value::from(condition));
                    }
                }
            }
        }
    }
}

/// Answers an UPDATE that failed validation.
pub fn refuse(msg: &mut Map<String, Value>, message: &str) {
    response::bad_request(msg, message);
}

/// An integer given as a JSON number or a string of digits.
fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

fn int_in(v: Option<&Value>, field: &str, min: i64, max: i64) -> Result<u32, UpdateError> {
    let v = v.ok_or_else(|| UpdateError::MissingValue(field.to_string()))?;
    let n = integer(v).ok_or_else(|| UpdateError::not_an_integer(field, v))?;
    if n < min || n > max {
        return Err(UpdateError::OutOfRange {
            field: field.to_string(),
            value: n,
            min,
            max,
        });
    }
    Ok(n as u32)
}

fn port_value(field: &'static str, v: &Value) -> Result<u16, UpdateError> {
    let n = integer(v).ok_or_else(|| UpdateError::not_an_integer(field, v))?;
    if !(1..=65535).contains(&n) {
        return Err(UpdateError::InvalidPort { field, value: n });
    }
    Ok(n as u16)
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => quoted(s),
        other => quoted(&other.to_string()),
    }
}

#[cfg(test)]
mod tests;
