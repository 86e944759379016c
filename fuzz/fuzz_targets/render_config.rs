//! Fuzzes the renderer behind the job path: a job body that the UPDATE validator accepts
//! becomes a model and then haproxy.cfg text. Oracles beyond "never panics": the model
//! accepts whatever the validator accepted, rendering succeeds, the text has no control
//! character, every line is one of the renderer's own shapes, and each node has exactly one
//! `server id-<id>` line in its backend.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use libra_worker::config::Limits;
use libra_worker::tools::model::Model;
use libra_worker::tools::render::{render, LogTarget, RenderEnv};
use libra_worker::jobs::{request, update};

const LIMITS: Limits = Limits { max_job_bytes: 64 * 1024, max_json_depth: 16, max_load_balancers: 4, max_nodes: 8 };

/// Keywords a rendered line may start with (after its indentation).
const KEYWORDS: &[&str] = &[
    "#", "global", "defaults", "frontend", "backend", "maxconn", "log", "pidfile", "stats", "server-state-file",
    "hard-stop-after", "option", "load-server-state-from-file", "default-server", "timeout", "mode", "bind",
    "default_backend", "balance", "retries", "cookie", "dynamic-cookie-key", "stick-table", "stick", "server",
];

fuzz_target!(|data: &[u8]| {
    let Ok(req) = request::parse(data, &LIMITS) else { return };
    let mut msg = req.body;
    let Ok(lbs) = update::parse(&mut msg, &LIMITS) else { return };
    let model = Model::from_load_balancers(&lbs).expect("the model accepts what the validator accepted");
    let env = RenderEnv {
        bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        stats_socket: PathBuf::from("/var/lib/libra-worker/stats.sock"),
        server_state_file: PathBuf::from("/var/lib/libra-worker/server-state"),
        log: LogTarget::Stdout,
        pid_file: None,
        socket_owner: None,
        cookie_key: "fuzzKey".to_string(),
        limits: Default::default(),
    };
    let text = render(&model, &env).expect("a validated model renders");
    assert!(text.chars().all(|c| c == '\n' || !c.is_control()), "control character in:\n{text}");
    for line in text.lines().filter(|l| !l.is_empty()) {
        let word = line.split_whitespace().next().unwrap_or("");
        assert!(KEYWORDS.contains(&word), "a line the renderer does not write: {line:?}");
        assert!(!line.contains('"') && !line.contains('$') && !line.contains('\\'), "{line:?}");
    }
    for lb in &lbs {
        let header = format!("backend {}-servers", lb.protocol.section_prefix());
        let section: Vec<&str> = text.lines().skip_while(|l| *l != header).take_while(|l| !l.is_empty()).collect();
        let servers = section.iter().filter(|l| l.trim_start().starts_with("server ")).count();
        assert_eq!(servers, lb.nodes.len(), "{text}");
        for n in &lb.nodes {
            let name = format!("    server id-{} ", n.id);
            assert_eq!(section.iter().filter(|l| l.starts_with(&name)).count(), 1, "{text}");
        }
    }
});
