//! The UPDATE jobs the bench sends its HAProxy-driver worker: one appliance of two load
//! balancers (HTTP and TCP, on loopback) and the variations the sections need, a change
//! of nodes only (the runtime API path) and structural changes (a new port, a changed
//! option) that force a validate-and-reload.

use bytes::Bytes;
use serde_json::{json, Value};

/// One node: its id and the loopback port it points at (nothing need listen there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSpec {
    pub id: u32,
    pub port: u16,
}

/// An appliance as an UPDATE describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appliance {
    pub http_port: u16,
    pub tcp_port: u16,
    /// The HTTP load balancer's `options.client_timeout`, in milliseconds.
    pub http_client_timeout_ms: u32,
    pub http_nodes: Vec<NodeSpec>,
    pub tcp_nodes: Vec<NodeSpec>,
}

/// The HTTP client timeout of the base layout (the API's default).
pub const BASE_CLIENT_TIMEOUT_MS: u32 = 30_000;
/// The other value a structural "option" change alternates to.
pub const ALT_CLIENT_TIMEOUT_MS: u32 = 31_000;

impl Appliance {
    /// Two load balancers of `per_lb` nodes each; node ids 1..=per_lb are HTTP, the next
    /// per_lb TCP; node `id` points at port `first_node_port + id - 1`.
    pub fn two_lbs(http_port: u16, tcp_port: u16, per_lb: u32, first_node_port: u16) -> Self {
        let node = |id: u32| NodeSpec {
            id,
            port: first_node_port.saturating_add(u16::try_from(id - 1).unwrap_or(0)),
        };
        Appliance {
            http_port,
            tcp_port,
            http_client_timeout_ms: BASE_CLIENT_TIMEOUT_MS,
            http_nodes: (1..=per_lb).map(node).collect(),
            tcp_nodes: (per_lb + 1..=2 * per_lb).map(node).collect(),
        }
    }

    /// Total nodes over both load balancers.
    pub fn node_count(&self) -> usize {
        self.http_nodes.len() + self.tcp_nodes.len()
    }

    /// The same appliance whose last node of each load balancer is replaced by a node of
    /// another id and port (`variant` 1, 2, ...; 0 gives `self` back). Alternating 0 and
    /// 1 flips between two node sets; structure and options stay the same.
    pub fn with_node_variant(&self, variant: u32) -> Self {
        let mut next = self.clone();
        if variant == 0 {
            return next;
        }
        for nodes in [&mut next.http_nodes, &mut next.tcp_nodes] {
            if let Some(last) = nodes.last_mut() {
                last.id += 1000 * variant;
                last.port = last.port.saturating_add(100);
            }
        }
        next
    }

    /// The UPDATE job body.
    pub fn update_body(&self) -> Bytes {
        Bytes::from(self.update_json().to_string())
    }

    pub fn update_json(&self) -> Value {
        let nodes = |list: &[NodeSpec]| -> Vec<Value> {
            list.iter()
                .map(|n| json!({"id": n.id, "address": "127.0.0.1", "port": n.port}))
                .collect()
        };
        json!({
            "hpcs_action": "UPDATE",
            "loadBalancers": [
                {
                    "name": "bench-web",
                    "protocol": "HTTP",
                    "port": self.http_port,
                    "nodes": nodes(&self.http_nodes),
                    "options": {"client_timeout": self.http_client_timeout_ms},
                },
                {
                    "name": "bench-tcp",
                    "protocol": "TCP",
                    "port": self.tcp_port,
                    "nodes": nodes(&self.tcp_nodes),
                },
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_nodes_over_two_load_balancers() {
        let a = Appliance::two_lbs(8080, 8443, 5, 20001);
        assert_eq!(a.node_count(), 10);
        assert_eq!(a.http_nodes[0], NodeSpec { id: 1, port: 20001 });
        assert_eq!(
            a.tcp_nodes[4],
            NodeSpec {
                id: 10,
                port: 20010
            }
        );
        let v = a.update_json();
        assert_eq!(v["hpcs_action"], "UPDATE");
        assert_eq!(v["loadBalancers"][0]["protocol"], "HTTP");
        assert_eq!(v["loadBalancers"][1]["port"], 8443);
        assert_eq!(v["loadBalancers"][1]["nodes"][4]["id"], 10);
        assert_eq!(v["loadBalancers"][0]["options"]["client_timeout"], 30_000);
    }

    #[test]
    fn node_variants_change_only_nodes() {
        let a = Appliance::two_lbs(8080, 8443, 5, 20001);
        assert_eq!(a.with_node_variant(0), a);
        let b = a.with_node_variant(1);
        assert_ne!(a, b);
        assert_eq!((b.http_port, b.tcp_port), (a.http_port, a.tcp_port));
        assert_eq!(b.http_client_timeout_ms, a.http_client_timeout_ms);
        assert_eq!(b.http_nodes[..4], a.http_nodes[..4]);
        assert_eq!(
            b.http_nodes[4],
            NodeSpec {
                id: 1005,
                port: 20105
            }
        );
        assert_eq!(
            b.tcp_nodes[4],
            NodeSpec {
                id: 1010,
                port: 20110
            }
        );
        assert_ne!(a.with_node_variant(2), b);
    }
}
