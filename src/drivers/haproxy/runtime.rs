//! Node-only changes without a reload: when an UPDATE differs from what is serving only in
//! its nodes, the changes go through HAProxy's runtime API on the stats socket (`add
//! server`, `set server addr|weight`, `disable`/`del server`), all in one pipelined
//! session, so no process is replaced and no connection is touched. `plan` decides whether
//! that is possible; `apply` does it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::model::Model;
use super::render;
use super::runtime_api::commands::{line, Batch};
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
/// run time. Linear in the nodes: every lookup goes through the models' id indexes.
pub fn plan(
    live: &Model,
    next: &Model,
    parked: &ParkedServers,
    dynamic_servers: bool,
) -> Result<Vec<Step>, NeedsReload> {
    if !live.same_structure(next) {
        return Err(NeedsReload::Structure);
    }
    let mut flips = Vec::new();
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
            match old.node(&node.id) {
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
                    // It must be gone before it is added again.
                    flips.push(Step::Remove {
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
            if !new.has_node(&o.id) {
                removes.push(Step::Remove {
                    protocol,
                    id: o.id.clone(),
                });
            }
        }
    }
    let changes_servers = !(adds.is_empty() && flips.is_empty() && removes.is_empty());
    if changes_servers && !dynamic_servers {
        return Err(NeedsReload::NoDynamicServers);
    }
    Ok(flips
        .into_iter()
        .chain(adds)
        .chain(sets)
        .chain(removes)
        .collect())
}

/// What `apply` changed in the set of parked servers.
#[derive(Debug, Default)]
pub struct Applied {
    /// Removed servers that still had connections: parked until housekeeping deletes them.
    pub parked: Vec<((String, String), Parked)>,
    /// Parked servers brought back into rotation.
    pub revived: Vec<(String, String)>,
    /// Runtime commands sent (all in one pipelined session).
    pub commands: usize,
}

/// What a command's answer decides.
enum Expect {
    /// Anything but success falls back to a reload.
    Done,
    /// A `del server`: refused while the server still has connections, which parks it
    /// (it is in maintenance already, out of rotation) for housekeeping to delete.
    Deleted(Option<((String, String), Parked)>),
}

/// Runs the steps against the stats socket in one pipelined session: the servers to add
/// are created (in maintenance), the HTTP backend's dynamic cookies set once, then they
/// are put in rotation; addresses and weights change; removed servers are put in
/// maintenance (drained: no new connection) and deleted in the same session when they
/// have no connection left, else parked. `live` is what runs before; `next` must already
/// mark the added HTTP nodes as dynamic-cookie nodes, so their options match what the
/// file will say.
pub fn apply(
    socket: &StatsSocket,
    live: &Model,
    next: &Model,
    steps: &[Step],
) -> Result<Applied, RuntimeError> {
    let mut batch = Batch::default();
    let mut expect = Vec::new();
    let mut applied = Applied::default();
    // Added servers are put in rotation together, after the backend's cookies are set.
    let mut to_enable: Vec<(String, String)> = Vec::new();
    let mut cookie_backends: Vec<String> = Vec::new();
    let mut push = |batch: &mut Batch, line: String, e: Expect| {
        batch.push(line);
        expect.push(e);
    };
    let flush_enables = |batch: &mut Batch,
                         push: &mut dyn FnMut(&mut Batch, String, Expect),
                         to_enable: &mut Vec<(String, String)>,
                         cookie_backends: &mut Vec<String>|
     -> Result<(), RuntimeError> {
        for backend in cookie_backends.drain(..) {
            push(batch, line::enable_dynamic_cookie(&backend)?, Expect::Done);
        }
        for (backend, server) in to_enable.drain(..) {
            push(batch, line::enable_health(&backend, &server)?, Expect::Done);
            push(batch, line::enable_server(&backend, &server)?, Expect::Done);
        }
        Ok(())
    };
    for step in steps {
        match step {
            Step::Add { protocol, node } => {
                let Some(lb) = next.get(*protocol) else {
                    continue;
                };
                let Address::Ip(ip) = node.address else {
                    continue;
                };
                let (backend, server) = (
                    render::backend_name(lb.protocol),
                    render::server_name(&node.id),
                );
                let options: Vec<String> = render::server_options(lb, node)
                    .iter()
                    .flat_map(|o| o.split_whitespace().map(String::from).collect::<Vec<_>>())
                    .collect();
                let words: Vec<&str> = options.iter().map(String::as_str).collect();
                push(
                    &mut batch,
                    line::add_server(&backend, &server, ip, node.port, &words)?,
                    Expect::Done,
                );
                if lb.protocol == Protocol::Http && !cookie_backends.contains(&backend) {
                    cookie_backends.push(backend.clone());
                }
                to_enable.push((backend, server));
            }
            Step::Revive { protocol, node } => {
                let Address::Ip(ip) = node.address else {
                    continue;
                };
                let (backend, server) = (
                    render::backend_name(*protocol),
                    render::server_name(&node.id),
                );
                for l in [
                    line::set_server_addr(&backend, &server, ip, node.port)?,
                    line::set_server_weight(&backend, &server, node.weight)?,
                    line::enable_server(&backend, &server)?,
                    line::enable_health(&backend, &server)?,
                ] {
                    push(&mut batch, l, Expect::Done);
                }
                applied.revived.push((backend, server));
            }
            Step::SetAddr {
                protocol,
                id,
                ip,
                port,
            } => push(
                &mut batch,
                line::set_server_addr(
                    &render::backend_name(*protocol),
                    &render::server_name(id),
                    *ip,
                    *port,
                )?,
                Expect::Done,
            ),
            Step::SetWeight {
                protocol,
                id,
                weight,
            } => push(
                &mut batch,
                line::set_server_weight(
                    &render::backend_name(*protocol),
                    &render::server_name(id),
                    *weight,
                )?,
                Expect::Done,
            ),
            Step::Remove { protocol, id } => {
                // The added servers take traffic before any other one leaves.
                flush_enables(&mut batch, &mut push, &mut to_enable, &mut cookie_backends)?;
                let (backend, server) = (render::backend_name(*protocol), render::server_name(id));
                let old = live.get(*protocol);
                let parked = old.and_then(|lb| lb.node(id)).map(|node| {
                    (
                        (backend.clone(), server.clone()),
                        Parked {
                            node: node.clone(),
                            dynamic_cookie: old.is_some_and(|lb| lb.dynamic_cookie.contains(id)),
                        },
                    )
                });
                push(
                    &mut batch,
                    line::disable_server(&backend, &server)?,
                    Expect::Done,
                );
                push(
                    &mut batch,
                    line::del_server(&backend, &server)?,
                    Expect::Deleted(parked),
                );
            }
        }
    }
    flush_enables(&mut batch, &mut push, &mut to_enable, &mut cookie_backends)?;
    applied.commands = batch.len();
    if batch.is_empty() {
        return Ok(applied);
    }
    let answers = socket.run_batch(&batch)?;
    for (answer, e) in answers.into_iter().zip(expect) {
        match (answer, e) {
            (Ok(_), _) => {}
            // Still serving open connections: out of rotation now, deleted later.
            (Err(_), Expect::Deleted(Some(parked))) => applied.parked.push(parked),
            (Err(_), Expect::Deleted(None)) => {}
            (Err(e), Expect::Done) => return Err(e.into()),
        }
    }
    Ok(applied)
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

    /// The models of a batch at `n` nodes: a third of `changed` removed, a third
    /// re-weighted, the rest added.
    fn batch_models(n: u32, changed: u32) -> (Model, Model) {
        let ip = |i: u32| {
            let [_, a, b, c] = i.to_be_bytes();
            format!("10.{a}.{b}.{c}")
        };
        let live = model(
            (1..=n)
                .map(|i| node(&i.to_string(), &ip(i), 80, 1, false))
                .collect(),
        );
        let third = changed / 3;
        let next = model(
            (third + 1..=n)
                .map(|i| {
                    node(
                        &i.to_string(),
                        &ip(i),
                        80,
                        if i <= 2 * third { 2 } else { 1 },
                        false,
                    )
                })
                .chain(
                    (1..=changed - 2 * third)
                        .map(|k| node(&format!("new-{k}"), &ip(n + k), 80, 1, false)),
                )
                .collect(),
        );
        (live, next)
    }

    #[test]
    fn building_and_planning_are_linear_in_the_nodes() {
        // Work counted as node-id comparisons, not time: a scan per node (what the model
        // and the plan did before) makes 10x the nodes 100x the comparisons.
        let work = |n: u32| {
            crate::drivers::types::id_comparisons::take();
            let (live, next) = batch_models(n, n / 10);
            let built = crate::drivers::types::id_comparisons::take();
            let steps = plan(&live, &next, &ParkedServers::new(), true).unwrap();
            assert_eq!(steps.len() as u32, n / 10);
            (built, crate::drivers::types::id_comparisons::take())
        };
        let (built_1k, planned_1k) = work(1_000);
        let (built_10k, planned_10k) = work(10_000);
        assert!(
            built_10k <= 12 * built_1k.max(100),
            "{built_1k} -> {built_10k}"
        );
        assert!(
            planned_10k <= 12 * planned_1k.max(100),
            "{planned_1k} -> {planned_10k}"
        );
        // About one comparison per node (a hash hit), not one per pair.
        assert!(planned_10k < 5 * 20_000, "{planned_10k}");
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
