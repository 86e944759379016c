//! Node-only changes without a reload: when an UPDATE differs from what is serving only in
//! its nodes, the changes go through HAProxy's runtime API on the stats socket (`add
//! server`, `set server addr|weight`, `disable`/`del server`), so no process is replaced
//! and no connection is touched. `plan` decides whether that is possible; `apply` does it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::model::{LbConfig, Model};
use super::render;
use super::runtime_api::{self, StatsSocket};
use crate::drivers::{Address, Node, NodeId, Protocol};

/// Why a change needs the full validate-and-reload path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NeedsReload {
    #[error("more than nodes changed")]
    Structure,
    #[error("node {0} has a DNS name: only a reload resolves it")]
    DnsName(NodeId),
    #[error("node {0} is still draining from an earlier removal with another backup flag")]
    Lingering(NodeId),
    #[error("nodes are added or removed and this HAProxy has no dynamic servers")]
    NoDynamicServers,
}

/// A runtime command that HAProxy refused or could not be sent; the driver falls back
/// to a reload, which makes HAProxy match the file again.
#[derive(Debug, thiserror::Error)]
#[error("runtime API: {0}")]
pub struct RuntimeError(#[from] runtime_api::StatsError);

/// A server removed at run time while it still had connections: in maintenance, out of
/// rotation, deleted by housekeeping once idle — or brought back if its node returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    pub node: Node,
    /// Its HTTP cookie was the dynamic one (it keeps it if it comes back).
    pub dynamic_cookie: bool,
}

/// Parked servers by (backend, server name).
pub type ParkedServers = BTreeMap<(String, String), Parked>;

/// One change to one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Add {
        protocol: Protocol,
        node: Node,
    },
    /// A parked server whose node is back: new address and weight, back in rotation.
    Revive {
        protocol: Protocol,
        node: Node,
    },
    SetAddr {
        protocol: Protocol,
        id: NodeId,
        ip: IpAddr,
        port: u16,
    },
    SetWeight {
        protocol: Protocol,
        id: NodeId,
        weight: u16,
    },
    Remove {
        protocol: Protocol,
        id: NodeId,
    },
}

/// The steps that turn `live` into `next`, adds first and removals last so capacity
/// never dips; a node whose backup flag flips is removed and added again. Without
/// `dynamic_servers` (HAProxy before 2.6) only address and weight changes can be made at
/// run time.
pub fn plan(
    live: &Model,
    next: &Model,
    parked: &ParkedServers,
    dynamic_servers: bool,
) -> Result<Vec<Step>, NeedsReload> {
    if !live.same_structure(next) {
        return Err(NeedsReload::Structure);
    }
    let mut adds = Vec::new();
    let mut sets = Vec::new();
    let mut removes = Vec::new();
    for (old, new) in live.load_balancers().iter().zip(next.load_balancers()) {
        let protocol = new.protocol;
        let backend = render::backend_name(protocol);
        for node in &new.nodes {
            let ip = |n: &Node| match n.address {
                Address::Ip(ip) => Ok(ip),
                Address::Dns(_) => Err(NeedsReload::DnsName(n.id.clone())),
            };
            match old.nodes.iter().find(|o| o.id == node.id) {
                None => {
                    ip(node)?;
                    let node = node.clone();
                    match parked.get(&(backend.clone(), render::server_name(&node.id))) {
                        // `backup` cannot change at run time, and the name is taken.
                        Some(p) if p.node.backup != node.backup => {
                            return Err(NeedsReload::Lingering(node.id));
                        }
                        Some(_) => adds.push(Step::Revive { protocol, node }),
                        None => adds.push(Step::Add { protocol, node }),
                    }
                }
                Some(o) if o == node => {}
                Some(o) if o.backup != node.backup => {
                    ip(node)?;
                    removes.push(Step::Remove {
                        protocol,
                        id: node.id.clone(),
                    });
                    adds.push(Step::Add {
                        protocol,
                        node: node.clone(),
                    });
                }
                Some(o) => {
                    if o.address != node.address || o.port != node.port {
                        sets.push(Step::SetAddr {
                            protocol,
                            id: node.id.clone(),
                            ip: ip(node)?,
                            port: node.port,
                        });
                    }
                    if o.weight != node.weight {
                        sets.push(Step::SetWeight {
                            protocol,
                            id: node.id.clone(),
                            weight: node.weight,
                        });
                    }
                }
            }
        }
        for o in &old.nodes {
            if !new.nodes.iter().any(|n| n.id == o.id) {
                removes.push(Step::Remove {
                    protocol,
                    id: o.id.clone(),
                });
            }
        }
    }
    // A flipped node must be gone before it is added again; other removals go last.
    let (flips, others): (Vec<Step>, Vec<Step>) = removes.into_iter().partition(|r| match r {
        Step::Remove { protocol, id } => adds.iter().any(
            |a| matches!(a, Step::Add { protocol: p, node } if p == protocol && &node.id == id),
        ),
        _ => false,
    });
    let changes_servers = !(adds.is_empty() && flips.is_empty() && others.is_empty());
    if changes_servers && !dynamic_servers {
        return Err(NeedsReload::NoDynamicServers);
    }
    Ok(flips
        .into_iter()
        .chain(adds)
        .chain(sets)
        .chain(others)
        .collect())
}

/// What `apply` changed in the set of parked servers.
#[derive(Debug, Default)]
pub struct Applied {
    /// Removed servers that still had connections: parked until housekeeping deletes them.
    pub parked: Vec<((String, String), Parked)>,
    /// Parked servers brought back into rotation.
    pub revived: Vec<(String, String)>,
}

/// Runs the steps against the stats socket. `live` is what runs before; `next` must
/// already mark the added HTTP nodes as dynamic-cookie nodes, so their options match what
/// the file will say.
pub fn apply(
    socket: &StatsSocket,
    live: &Model,
    next: &Model,
    steps: &[Step],
) -> Result<Applied, RuntimeError> {
    let mut applied = Applied::default();
    let lb_of = |protocol: Protocol| next.get(protocol);
    for (i, step) in steps.iter().enumerate() {
        if i > 0 {
            crash_point!("runtime-between-commands");
        }
        match step {
            Step::Add { protocol, node } => {
                let Some(lb) = lb_of(*protocol) else { continue };
                add(socket, lb, node)?;
            }
            Step::Revive { protocol, node } => {
                let Address::Ip(ip) = node.address else {
                    continue;
                };
                let (backend, server) = (
                    render::backend_name(*protocol),
                    render::server_name(&node.id),
                );
                socket.set_server_addr(&backend, &server, ip, node.port)?;
                socket.set_server_weight(&backend, &server, node.weight)?;
                socket.enable_server(&backend, &server)?;
                socket.enable_health(&backend, &server)?;
                applied.revived.push((backend, server));
            }
            Step::SetAddr {
                protocol,
                id,
                ip,
                port,
            } => {
                socket.set_server_addr(
                    &render::backend_name(*protocol),
                    &render::server_name(id),
                    *ip,
                    *port,
                )?;
            }
            Step::SetWeight {
                protocol,
                id,
                weight,
            } => {
                socket.set_server_weight(
                    &render::backend_name(*protocol),
                    &render::server_name(id),
                    *weight,
                )?;
            }
            Step::Remove { protocol, id } => {
                let (backend, server) = (render::backend_name(*protocol), render::server_name(id));
                socket.disable_server(&backend, &server)?;
                if socket.del_server(&backend, &server).is_err() {
                    // Still serving open connections: out of rotation now, deleted later.
                    let old = live.get(*protocol);
                    if let Some(node) = old.and_then(|lb| lb.nodes.iter().find(|n| &n.id == id)) {
                        let dynamic_cookie = old.is_some_and(|lb| lb.dynamic_cookie.contains(id));
                        applied.parked.push((
                            (backend, server),
                            Parked {
                                node: node.clone(),
                                dynamic_cookie,
                            },
                        ));
                    }
                }
            }
        }
    }
    Ok(applied)
}

fn add(socket: &StatsSocket, lb: &LbConfig, node: &Node) -> Result<(), RuntimeError> {
    let Address::Ip(ip) = node.address else {
        return Ok(());
    };
    let backend = render::backend_name(lb.protocol);
    let server = render::server_name(&node.id);
    let options: Vec<String> = render::server_options(lb, node)
        .iter()
        .flat_map(|o| o.split_whitespace().map(String::from).collect::<Vec<_>>())
        .collect();
    let words: Vec<&str> = options.iter().map(String::as_str).collect();
    socket.add_server(&backend, &server, ip, node.port, &words)?;
    if lb.protocol == Protocol::Http {
        socket.enable_dynamic_cookie(&backend)?;
    }
    socket.enable_health(&backend, &server)?;
    socket.enable_server(&backend, &server)?;
    Ok(())
}

/// Deletes parked servers that have no connection left; returns those still parked.
pub fn sweep(socket: &StatsSocket, parked: &ParkedServers) -> ParkedServers {
    parked
        .iter()
        .filter(|((b, s), _)| socket.del_server(b, s).is_err())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::{Algorithm, LoadBalancer, Timeouts};

    fn node(id: &str, addr: &str, port: u16, weight: u16, backup: bool) -> Node {
        Node {
            id: NodeId::parse(id).unwrap(),
            address: Address::parse(addr).unwrap(),
            port,
            weight,
            backup,
        }
    }

    fn model(nodes: Vec<Node>) -> Model {
        Model::from_load_balancers(&[LoadBalancer {
            name: None,
            protocol: Protocol::Http,
            port: 80,
            algorithm: Algorithm::RoundRobin,
            nodes,
            monitor: None,
            timeouts: Timeouts::default(),
        }])
        .unwrap()
    }

    #[test]
    fn plans_adds_then_sets_then_removes() {
        let live = model(vec![
            node("1", "10.0.0.1", 80, 1, false),
            node("2", "10.0.0.2", 80, 1, false),
        ]);
        let next = model(vec![
            node("1", "10.0.0.9", 81, 5, false),
            node("3", "10.0.0.3", 80, 1, false),
        ]);
        let steps = plan(&live, &next, &ParkedServers::new(), true).unwrap();
        let kinds: Vec<&str> = steps
            .iter()
            .map(|s| match s {
                Step::Add { .. } => "add",
                Step::Revive { .. } => "revive",
                Step::SetAddr { .. } => "addr",
                Step::SetWeight { .. } => "weight",
                Step::Remove { .. } => "remove",
            })
            .collect();
        assert_eq!(kinds, vec!["add", "addr", "weight", "remove"]);
    }

    #[test]
    fn backup_flip_is_remove_then_add() {
        let live = model(vec![node("1", "10.0.0.1", 80, 1, false)]);
        let next = model(vec![node("1", "10.0.0.1", 80, 1, true)]);
        let steps = plan(&live, &next, &ParkedServers::new(), true).unwrap();
        assert!(
            matches!(steps[0], Step::Remove { .. }) && matches!(steps[1], Step::Add { .. }),
            "{steps:?}"
        );
    }

    #[test]
    fn what_needs_a_reload() {
        let live = model(vec![node("1", "10.0.0.1", 80, 1, false)]);
        let dns = model(vec![node("1", "web.example", 80, 1, false)]);
        assert_eq!(
            plan(&live, &dns, &ParkedServers::new(), true),
            Err(NeedsReload::DnsName(NodeId::parse("1").unwrap()))
        );
        let mut other = Model::new();
        other.add_protocol(Protocol::Http, 81).unwrap();
        assert_eq!(
            plan(&live, &other, &ParkedServers::new(), true),
            Err(NeedsReload::Structure)
        );
        assert_eq!(plan(&live, &live, &ParkedServers::new(), true), Ok(vec![]));
    }

    #[test]
    fn without_dynamic_servers_only_addresses_and_weights_change_at_run_time() {
        let live = model(vec![
            node("1", "10.0.0.1", 80, 1, false),
            node("2", "10.0.0.2", 80, 1, false),
        ]);
        let moved = model(vec![
            node("1", "10.0.0.9", 81, 5, false),
            node("2", "10.0.0.2", 80, 7, false),
        ]);
        let none = ParkedServers::new();
        assert_eq!(plan(&live, &moved, &none, false).unwrap().len(), 3);
        let added = model(vec![
            node("1", "10.0.0.1", 80, 1, false),
            node("2", "10.0.0.2", 80, 1, false),
            node("3", "10.0.0.3", 80, 1, false),
        ]);
        let removed = model(vec![node("1", "10.0.0.1", 80, 1, false)]);
        let flipped = model(vec![
            node("1", "10.0.0.1", 80, 1, true),
            node("2", "10.0.0.2", 80, 1, false),
        ]);
        for next in [&added, &removed, &flipped] {
            assert_eq!(
                plan(&live, next, &none, false),
                Err(NeedsReload::NoDynamicServers)
            );
            assert!(plan(&live, next, &none, true).is_ok());
        }
    }

    #[test]
    fn a_parked_server_comes_back_unless_its_backup_flag_changed() {
        let live = model(vec![node("1", "10.0.0.1", 80, 1, false)]);
        let next = model(vec![
            node("1", "10.0.0.1", 80, 1, false),
            node("2", "10.0.0.2", 81, 3, false),
        ]);
        let key = ("http-servers".to_string(), "id-2".to_string());
        let mut parked = ParkedServers::new();
        parked.insert(
            key.clone(),
            Parked {
                node: node("2", "10.0.0.9", 80, 1, false),
                dynamic_cookie: false,
            },
        );
        assert!(matches!(
            plan(&live, &next, &parked, true).unwrap()[..],
            [Step::Revive { .. }]
        ));
        parked.insert(
            key,
            Parked {
                node: node("2", "10.0.0.9", 80, 1, true),
                dynamic_cookie: false,
            },
        );
        assert!(matches!(
            plan(&live, &next, &parked, true),
            Err(NeedsReload::Lingering(_))
        ));
    }
}
