//! DIAGNOSTICS: can this appliance work? A TCP connect (5 s timeout) to each job server
//! and to the configured outside address; PASS whenever the checks ran.

use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::net::TcpStream;

use super::{discover, response};
use crate::config::ServerAddr;

/// How long one connect check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// What DIAGNOSTICS checks.
#[derive(Debug, Clone)]
pub struct Targets {
    pub gearman: Vec<ServerAddr>,
    /// `host:port` outside the appliance; `None` reports `network: SKIPPED`.
    pub network: Option<String>,
}

/// Runs every check concurrently and writes the verdicts into the request.
pub async fn run(targets: Targets, mut msg: Map<String, Value>) -> Map<String, Value> {
    let gearman =
        futures::future::join_all(targets.gearman.iter().map(|s| reachable(s.host_port())));
    let network = async {
        match &targets.network {
            Some(t) => Some(reachable(t.clone()).await),
            None => None,
        }
    };
    let (gearman, network) = futures::join!(gearman, network);
    let list: Vec<Value> = targets
        .gearman
        .iter()
        .zip(gearman)
        .map(|(s, ok)| json!({"host": s.host, "status": verdict(ok)}))
        .collect();
    msg.insert("gearman".to_string(), Value::Array(list));
    msg.insert(
        "network".to_string(),
        Value::from(network.map(verdict).unwrap_or("SKIPPED")),
    );
    msg.insert("release".to_string(), Value::from(discover::release()));
    response::pass(&mut msg);
    msg
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        response::PASS
    } else {
        response::FAIL
    }
}

async fn reachable(target: String) -> bool {
    matches!(
        tokio::time::timeout(CHECK_TIMEOUT, TcpStream::connect(target)).await,
        Ok(Ok(_))
    )
}
