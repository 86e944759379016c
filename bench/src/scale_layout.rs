//! The UPDATE jobs of the scale bench: an appliance of two load balancers, HTTP of N nodes
//! and TCP of N/10 (`scale` says why not N), every node a distinct loopback address on the backends' one port, and
//! the changes measured against it: one node added or removed, one node re-weighted (the
//! runtime API, no reload), a batch of servers added, removed and re-weighted at once, and
//! a structural change (an HTTP option, `haproxy -c` + reload). The bodies are written as
//! text: a 20,000-node body is built for every UPDATE, and the bench should not be what
//! is slow.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use bytes::Bytes;

/// First id of the nodes a batch adds (far above any size measured).
const BATCH_ID_BASE: u32 = 1_000_000;
/// The id of the one node the add/remove row adds.
const EXTRA_ID: u32 = 2_000_000;
/// The HTTP client timeout of the base layout, and the one a structural change sets.
pub const BASE_CLIENT_TIMEOUT_MS: u32 = 30_000;
pub const ALT_CLIENT_TIMEOUT_MS: u32 = 31_000;

/// How one UPDATE differs from the base layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Change {
    /// One more HTTP node.
    pub extra_node: bool,
    /// The last HTTP node's weight is 3 instead of 1.
    pub reweight: bool,
    /// Change this many HTTP servers at once: a third removed, a third re-weighted, the
    /// rest added.
    pub batch: Option<u32>,
    /// The HTTP client timeout is `ALT_CLIENT_TIMEOUT_MS` (a structural change).
    pub alt_timeout: bool,
}

/// The appliance of one size.
#[derive(Debug, Clone)]
pub struct ScaleLayout {
    pub http_port: u16,
    pub tcp_port: u16,
    /// Nodes of the HTTP load balancer (every change measured is made to it).
    pub nodes: u32,
    /// Nodes of the TCP load balancer.
    pub tcp_nodes: u32,
    pub backend_port: u16,
    /// Nodes get distinct loopback addresses (else all `127.0.0.1`).
    pub spread: bool,
}

/// What a batch changes, by HTTP node id: removed `1..=removed`, re-weighted the next
/// `reweighted`, and `added` new ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchShape {
    pub removed: u32,
    pub reweighted: u32,
    pub added: u32,
}

impl BatchShape {
    pub fn of(size: u32) -> BatchShape {
        let third = size / 3;
        BatchShape {
            removed: third,
            reweighted: third,
            added: size - 2 * third,
        }
    }
}

impl ScaleLayout {
    /// The loopback address of the node at `index` (1, 2, ...).
    fn address(&self, index: u32) -> Ipv4Addr {
        if !self.spread {
            return Ipv4Addr::LOCALHOST;
        }
        let [_, a, b, c] = index.to_be_bytes();
        Ipv4Addr::new(127, a, b, c)
    }

    /// The HTTP nodes (id, address index, weight) of `change`.
    pub fn http_nodes(&self, change: Change) -> Vec<(u32, u32, u16)> {
        let n = self.nodes;
        let shape = change.batch.map(BatchShape::of);
        let mut nodes = Vec::with_capacity(n as usize + 1);
        for id in 1..=n {
            let mut weight = 1;
            if let Some(s) = shape {
                if id <= s.removed {
                    continue;
                }
                if id <= s.removed + s.reweighted {
                    weight = 2;
                }
            }
            if change.reweight && id == n {
                weight = 3;
            }
            nodes.push((id, id, weight));
        }
        if let Some(s) = shape {
            // Addresses after both load balancers' nodes.
            for k in 1..=s.added {
                nodes.push((BATCH_ID_BASE + k, 2 * n + k, 1));
            }
        }
        if change.extra_node {
            nodes.push((EXTRA_ID, 2 * n + 50_000, 1));
        }
        nodes
    }

    /// The UPDATE job body of `change`.
    pub fn body(&self, change: Change) -> Bytes {
        let n = self.nodes;
        let mut text = String::with_capacity(64 * 2 * n as usize + 512);
        let node = |text: &mut String, id: u32, index: u32, weight: u16| {
            let _ = write!(
                text,
                r#"{{"id":{id},"address":"{}","port":{},"weight":{weight}}},"#,
                self.address(index),
                self.backend_port
            );
        };
        let timeout = if change.alt_timeout {
            ALT_CLIENT_TIMEOUT_MS
        } else {
            BASE_CLIENT_TIMEOUT_MS
        };
        let _ = write!(
            text,
            r#"{{"hpcs_action":"UPDATE","loadBalancers":[{{"name":"scale-web","protocol":"HTTP","port":{},"options":{{"client_timeout":{timeout}}},"nodes":["#,
            self.http_port
        );
        for (id, index, weight) in self.http_nodes(change) {
            node(&mut text, id, index, weight);
        }
        text.pop();
        let _ = write!(
            text,
            r#"]}},{{"name":"scale-tcp","protocol":"TCP","port":{},"nodes":["#,
            self.tcp_port
        );
        for id in n + 1..=n + self.tcp_nodes {
            node(&mut text, id, id, 1);
        }
        text.pop();
        text.push_str("]}]}");
        Bytes::from(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn layout(nodes: u32) -> ScaleLayout {
        ScaleLayout {
            http_port: 8080,
            tcp_port: 8443,
            nodes,
            tcp_nodes: nodes,
            backend_port: 9000,
            spread: true,
        }
    }

    fn http_ids(body: &Bytes) -> Vec<u64> {
        let v: Value = serde_json::from_slice(body).unwrap();
        v["loadBalancers"][0]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn bodies_are_json_with_distinct_addresses() {
        let l = layout(300);
        let body = l.body(Change::default());
        let v: Value = serde_json::from_slice(&body).unwrap();
        let web = v["loadBalancers"][0]["nodes"].as_array().unwrap();
        let tcp = v["loadBalancers"][1]["nodes"].as_array().unwrap();
        assert_eq!((web.len(), tcp.len()), (300, 300));
        assert_eq!(web[0]["address"], "127.0.0.1");
        assert_eq!(web[299]["address"], "127.0.1.44");
        assert_eq!(tcp[0]["id"], 301);
        let mut all: Vec<&str> = web
            .iter()
            .chain(tcp)
            .map(|n| n["address"].as_str().unwrap())
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 600);
        assert_eq!(v["loadBalancers"][0]["options"]["client_timeout"], 30_000);
    }

    #[test]
    fn changes_touch_what_they_say() {
        let l = layout(30);
        let base = http_ids(&l.body(Change::default()));
        let extra = http_ids(&l.body(Change {
            extra_node: true,
            ..Change::default()
        }));
        assert_eq!(extra.len(), base.len() + 1);
        let batch = l.http_nodes(Change {
            batch: Some(10),
            ..Change::default()
        });
        let s = BatchShape::of(10);
        assert_eq!((s.removed, s.reweighted, s.added), (3, 3, 4));
        assert_eq!(batch.len(), 30 - 3 + 4);
        assert_eq!(batch[0], (4, 4, 2));
        assert_eq!(batch[3], (7, 7, 1));
        let reweighted = l.http_nodes(Change {
            reweight: true,
            ..Change::default()
        });
        assert_eq!(reweighted[29], (30, 30, 3));
    }
}
