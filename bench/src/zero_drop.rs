//! `libra-bench --zero-drop` and the suite's zero-drop section: wrk through the HAProxy-driver
//! worker's HTTP load balancer (real backends in this process) while UPDATEs change nodes
//! (runtime API) or force reloads, with keep-alive and with close-mode clients, counting
//! every failed request; then keep-alive clients across reloads on standalone copies of
//! the same configuration with and without `option idle-close-on-response`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use libra_worker::config::haproxy_binary_from_env;
use serde::Serialize;
use serde_json::json;

use super::appliance::{HaproxyWorker, LogLevel};
use super::client::JobClient;
use super::http_backend::HttpBackend;
use super::section::{Env, Section};
use super::standalone::{Edits, StandaloneHaproxy};
use super::updates::{Appliance, NodeSpec, ALT_CLIENT_TIMEOUT_MS, BASE_CLIENT_TIMEOUT_MS};
use super::wrk::{self, ClientMode, WrkReport};

/// UPDATEs per run unless told otherwise.
pub const DEFAULT_UPDATES: usize = 100;
/// wrk clients unless told otherwise.
pub const DEFAULT_CONNECTIONS: u32 = 16;
/// Pause between two UPDATEs: traffic flows through every state, not only the last.
const GAP: Duration = Duration::from_millis(20);
/// Traffic before the first and after the last UPDATE (retired processes finish).
const SETTLE: Duration = Duration::from_millis(500);
/// Bound on one UPDATE.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);
const FUNCTION: &str = "lbw-zerodrop";

#[derive(Debug, thiserror::Error)]
pub enum ZeroDropError {
    #[error("wrk is not installed (apt-get install wrk)")]
    NoWrk,
    #[error("an HTTP backend: {0}")]
    Backend(#[from] super::http_backend::BackendError),
    #[error("the HAProxy-driver worker: {0}")]
    Appliance(#[from] super::appliance::ApplianceError),
    #[error("{0}")]
    Job(#[from] super::client::JobError),
    #[error("the set-up UPDATE failed: {0}")]
    Setup(String),
    #[error("wrk: {0}")]
    Wrk(#[from] wrk::WrkError),
    #[error("a free port: {0}")]
    Port(#[from] super::procs::ProcsError),
    #[error("the standalone HAProxy: {0}")]
    Standalone(#[from] super::standalone::StandaloneError),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// What changes between UPDATEs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// The third HTTP node alternates between two backends under a new id each time
    /// (as the API gives a re-added node a new id): runtime API, no reload.
    NodesOnly,
    /// The third HTTP node alternates between two fixed ids and backends, {1,2,3} and
    /// {1,2,4}: a removed server that still has connections lingers (HAProxy 2.6 will not
    /// delete it), and adding its id back then takes the reload path.
    NodeSetsAB,
    /// The HTTP load balancer's client timeout alternates: validate and reload.
    Reload,
}

impl Change {
    fn label(self) -> &'static str {
        match self {
            Change::NodesOnly => "node-only (runtime API)",
            Change::NodeSetsAB => "node-only, two fixed node sets A/B (ids re-added)",
            Change::Reload => "reload (option changed)",
        }
    }
}

/// One run: a client mode under one kind of change.
#[derive(Debug, Clone, Serialize)]
pub struct DropRow {
    pub clients: ClientMode,
    pub change: String,
    pub updates: usize,
    /// UPDATEs answered FAIL (they count against the run, not as dropped requests).
    pub failed_updates: usize,
    pub reloads: u32,
    pub wrk: WrkReport,
    /// Requests the backends answered during the run (at least wrk's count).
    pub backend_hits: u64,
    pub target: String,
}

/// Options of the section.
#[derive(Debug, Clone, Copy)]
pub struct ZeroDropOpts {
    pub updates: usize,
    pub connections: u32,
    /// Also run the with/without `idle-close-on-response` comparison.
    pub compare_idle_close: bool,
}

/// The section alone, with its own gearmand.
pub fn main(opts: ZeroDropOpts, json: bool) -> i32 {
    super::section::main_alone("--zero-drop", json, |env| {
        run(env, opts).map_err(|e| e.to_string())
    })
}

/// The four backends and the layouts they make.
struct Layouts {
    base: Appliance,
    backends: Vec<HttpBackend>,
}

impl Layouts {
    fn new(http_port: u16, tcp_port: u16) -> Result<Layouts, ZeroDropError> {
        let backends = (1..=4)
            .map(|i| HttpBackend::start(&format!("b{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        let node = |id: u32, b: &HttpBackend| NodeSpec { id, port: b.port() };
        let base = Appliance {
            http_port,
            tcp_port,
            http_client_timeout_ms: BASE_CLIENT_TIMEOUT_MS,
            http_nodes: vec![
                node(1, &backends[0]),
                node(2, &backends[1]),
                node(3, &backends[2]),
            ],
            // Nothing listens there: the TCP load balancer only has to exist.
            tcp_nodes: vec![NodeSpec { id: 4, port: 1 }, NodeSpec { id: 5, port: 2 }],
        };
        Ok(Layouts { base, backends })
    }

    fn hits(&self) -> u64 {
        self.backends.iter().map(HttpBackend::hits).sum()
    }

    /// The `i`-th UPDATE of a storm (from 0).
    fn variant(&self, change: Change, i: usize) -> Appliance {
        let mut next = self.base.clone();
        match change {
            Change::NodesOnly => {
                let backend = &self.backends[2 + i % 2];
                next.http_nodes[2] = NodeSpec {
                    id: 100 + u32::try_from(i).unwrap_or(u32::MAX - 100),
                    port: backend.port(),
                };
            }
            Change::NodeSetsAB => {
                if i.is_multiple_of(2) {
                    next.http_nodes[2] = NodeSpec {
                        id: 4,
                        port: self.backends[3].port(),
                    };
                }
            }
            Change::Reload => {
                next.http_client_timeout_ms = if i.is_multiple_of(2) {
                    ALT_CLIENT_TIMEOUT_MS
                } else {
                    BASE_CLIENT_TIMEOUT_MS
                };
            }
        }
        next
    }
}

/// Runs the section against `env`'s job server.
pub fn run(env: &Env, opts: ZeroDropOpts) -> Result<Section, ZeroDropError> {
    let program = wrk::program().ok_or(ZeroDropError::NoWrk)?;
    let updates = opts.updates.max(1);
    let (http_port, tcp_port) = (super::procs::free_port()?, super::procs::free_port()?);
    let layouts = Layouts::new(http_port, tcp_port)?;
    let mut worker = HaproxyWorker::start(
        env.binary,
        &env.gearmand,
        env.dir,
        FUNCTION,
        LogLevel::Warning,
    )?;
    let mut client = JobClient::connect(&env.gearmand, FUNCTION, JOB_TIMEOUT)?;
    client
        .submit_pass(&layouts.base.update_body())
        .map_err(ZeroDropError::Setup)?;
    let url = format!("http://127.0.0.1:{http_port}/");
    let mut rows = Vec::new();
    let runs = [
        (Change::NodesOnly, ClientMode::KeepAlive),
        (Change::NodesOnly, ClientMode::Close),
        (Change::Reload, ClientMode::KeepAlive),
        (Change::Reload, ClientMode::Close),
        (Change::NodeSetsAB, ClientMode::KeepAlive),
    ];
    for (run_index, (change, mode)) in runs.into_iter().enumerate() {
        // New node ids in every run (an even offset keeps the alternation's phase).
        let offset = run_index * 2 * updates;
        note!(
            "zero-drop: {} clients, {updates} {} UPDATEs",
            mode.label(),
            change.label()
        );
        client
            .submit_pass(&layouts.base.update_body())
            .map_err(ZeroDropError::Setup)?;
        std::thread::sleep(SETTLE);
        let reloads_before = worker.reloads()?;
        let hits_before = layouts.hits();
        let log = env.dir.join(format!(
            "wrk-{}-{}.out",
            mode.label(),
            match change {
                Change::NodesOnly => "nodes",
                Change::NodeSetsAB => "nodes-ab",
                Change::Reload => "reload",
            }
        ));
        let mut run = wrk::start(&program, &url, mode, opts.connections, 1, &log)?;
        std::thread::sleep(SETTLE);
        run.check_running()?;
        let mut failed_updates = 0;
        for i in 0..updates {
            let body = layouts.variant(change, offset + i).update_body();
            match client.submit_pass(&body) {
                Ok(_) => {}
                Err(e) => {
                    failed_updates += 1;
                    note!("zero-drop: UPDATE {i} failed: {e}");
                }
            }
            std::thread::sleep(GAP);
        }
        std::thread::sleep(SETTLE);
        let report = run.finish()?;
        let reloads = worker.reloads()?.saturating_sub(reloads_before);
        let target = match (change, mode) {
            (Change::Reload, ClientMode::KeepAlive) => "as close to 0 as HAProxy allows",
            _ => "0",
        };
        rows.push(DropRow {
            clients: mode,
            change: change.label().to_string(),
            updates,
            failed_updates,
            reloads,
            wrk: report,
            backend_hits: layouts.hits().saturating_sub(hits_before),
            target: target.to_string(),
        });
    }
    let rendered_path = worker.haproxy().config_file.clone();
    let rendered =
        std::fs::read_to_string(&rendered_path).map_err(|source| ZeroDropError::Read {
            path: rendered_path.display().to_string(),
            source,
        })?;
    let state_dir = worker.haproxy().state_dir.clone();
    let stopped = worker.stop()?;
    note!("zero-drop: {}", stopped.trim());

    let mut compare = Vec::new();
    // Half as many reloads as UPDATEs: the option's effect shows at 50 already, and the
    // two runs are the longest of the suite.
    let compare_reloads = (updates / 2).max(10);
    if opts.compare_idle_close {
        for drop_idle_close in [false, true] {
            let edits = Edits {
                drop_idle_close,
                skip_ca_load: false,
            };
            note!(
                "zero-drop: standalone copy {}, keep-alive clients, {compare_reloads} reloads",
                edits.label()
            );
            compare.push(standalone_run(
                env,
                &program,
                &rendered,
                &state_dir,
                (http_port, tcp_port),
                edits,
                compare_reloads,
                opts.connections,
                &layouts,
            )?);
        }
    }
    let markdown = markdown(&rows, &compare, opts.connections);
    let json = json!({
        "updates": updates,
        "connections": opts.connections,
        "rows": rows,
        "idle_close_comparison": compare,
    });
    Ok(Section { markdown, json })
}

/// A standalone copy of the worker's configuration, reloaded `updates` times (each after
/// `haproxy -c`, as the driver does) under keep-alive load.
#[allow(clippy::too_many_arguments)]
fn standalone_run(
    env: &Env,
    program: &std::path::Path,
    rendered: &str,
    state_dir: &std::path::Path,
    (http_port, tcp_port): (u16, u16),
    edits: Edits,
    updates: usize,
    connections: u32,
    layouts: &Layouts,
) -> Result<CompareRow, ZeroDropError> {
    let new_http = super::procs::free_port()?;
    let new_tcp = super::procs::free_port()?;
    let dir = env.dir.join(format!(
        "zero-drop-copy-{}",
        u8::from(edits.drop_idle_close)
    ));
    let mut h = StandaloneHaproxy::start(
        &haproxy_binary_from_env(),
        rendered,
        state_dir,
        &dir,
        &[(http_port, new_http), (tcp_port, new_tcp)],
        edits,
    )?;
    let url = format!("http://127.0.0.1:{new_http}/");
    let log = dir.join("wrk.out");
    let hits_before = layouts.hits();
    let mut run = wrk::start(program, &url, ClientMode::KeepAlive, connections, 1, &log)?;
    std::thread::sleep(SETTLE);
    run.check_running()?;
    let started = Instant::now();
    let mut failed_reloads = 0;
    for _ in 0..updates {
        if h.validate().and_then(|_| h.reload()).is_err() {
            failed_reloads += 1;
        }
        std::thread::sleep(GAP);
    }
    let storm = started.elapsed();
    std::thread::sleep(SETTLE);
    let report = run.finish()?;
    let reloads = h.reloads().unwrap_or(0);
    h.stop();
    Ok(CompareRow {
        config: edits.label(),
        reloads,
        failed_reloads,
        storm_seconds: storm.as_secs_f64(),
        wrk: report,
        backend_hits: layouts.hits().saturating_sub(hits_before),
    })
}

/// Keep-alive clients across reloads of a standalone copy.
#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    pub config: String,
    pub reloads: u32,
    pub failed_reloads: usize,
    pub storm_seconds: f64,
    pub wrk: WrkReport,
    pub backend_hits: u64,
}

fn errors_cell(r: &WrkReport) -> String {
    format!(
        "{} ({}/{}/{}/{})",
        r.socket_errors(),
        r.connect_errors,
        r.read_errors,
        r.write_errors,
        r.timeouts
    )
}

fn markdown(rows: &[DropRow], compare: &[CompareRow], connections: u32) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### Zero-drop: HTTP load through UPDATEs (HAProxy driver)\n"
    );
    let _ = writeln!(
        md,
        "wrk ({connections} connections, 1 thread) through the worker's HTTP load balancer to 3 of 4 \
         HTTP backends in the bench process, while UPDATEs run one after another with {} ms between \
         them: node-only (the third node moves between two backends under a new id each time, as the \
         API numbers a re-added node), forcing a reload (the HTTP `client_timeout` option \
         alternates), or node-only between two fixed node sets {{1,2,3}} and {{1,2,4}} (ids come \
         back). Close-mode clients send \
         `Connection: close` and reconnect for every request. Socket errors are wrk's \
         connect/read/write/timeout counts; non-2xx is wrk's \"Non-2xx or 3xx responses\".\n",
        GAP.as_millis()
    );
    let _ = writeln!(
        md,
        "| clients | UPDATEs | HAProxy reloads | seconds | requests | socket errors (c/r/w/t) | non-2xx | failed | target | result |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---|---|");
    for r in rows {
        let failed = r.wrk.failed();
        let verdict = if r.target == "0" {
            if failed == 0 {
                "met"
            } else {
                "MISSED"
            }
        } else if failed == 0 {
            "0"
        } else {
            "see the comparison"
        };
        let _ = writeln!(
            md,
            "| {} | {} x {}{} | {} | {:.1} | {} | {} | {} | {} | {} | {verdict} |",
            r.clients.label(),
            r.updates,
            r.change,
            if r.failed_updates > 0 {
                format!(" ({} FAILED)", r.failed_updates)
            } else {
                String::new()
            },
            r.reloads,
            r.wrk.seconds,
            r.wrk.requests,
            errors_cell(&r.wrk),
            r.wrk.non_2xx_3xx,
            failed,
            r.target
        );
    }
    if !compare.is_empty() {
        let _ = writeln!(
            md,
            "\n#### Keep-alive clients across reloads, with and without `option idle-close-on-response`\n"
        );
        let _ = writeln!(
            md,
            "Standalone copies of the worker's rendered configuration (own ports and sockets), run by \
             the driver's process control; each of the reloads follows a `haproxy -c`, as in the \
             driver. Same backends, same wrk.\n"
        );
        let _ = writeln!(
            md,
            "| configuration | reloads | seconds | requests | socket errors (c/r/w/t) | non-2xx | failed | per 1000 reloads |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for c in compare {
            let per_k = if c.reloads > 0 {
                c.wrk.failed() as f64 * 1000.0 / f64::from(c.reloads)
            } else {
                0.0
            };
            let _ = writeln!(
                md,
                "| {} | {}{} | {:.1} | {} | {} | {} | {} | {:.0} |",
                c.config,
                c.reloads,
                if c.failed_reloads > 0 {
                    format!(" ({} failed)", c.failed_reloads)
                } else {
                    String::new()
                },
                c.storm_seconds,
                c.wrk.requests,
                errors_cell(&c.wrk),
                c.wrk.non_2xx_3xx,
                c.wrk.failed(),
                per_k
            );
        }
    }
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storms_change_what_they_say() {
        let l = Layouts::new(8080, 8443).unwrap();
        let a = l.variant(Change::NodesOnly, 0);
        let b = l.variant(Change::NodesOnly, 1);
        assert_eq!(a.http_nodes[..2], l.base.http_nodes[..2]);
        assert_ne!(a.http_nodes[2].id, b.http_nodes[2].id, "a new id each time");
        assert_ne!(a.http_nodes[2].port, b.http_nodes[2].port, "two backends");
        assert_eq!(a.http_client_timeout_ms, l.base.http_client_timeout_ms);
        let r0 = l.variant(Change::Reload, 0);
        let r1 = l.variant(Change::Reload, 1);
        assert_eq!(r0.http_nodes, l.base.http_nodes);
        assert_ne!(r0.http_client_timeout_ms, r1.http_client_timeout_ms);
        assert_eq!(r1, l.base);
        let ab0 = l.variant(Change::NodeSetsAB, 0);
        assert_eq!(ab0.http_nodes[2].id, 4);
        assert_eq!(ab0.http_nodes[2].port, l.backends[3].port());
        assert_eq!(l.variant(Change::NodeSetsAB, 1), l.base);
        assert_eq!(l.variant(Change::NodeSetsAB, 2), ab0);
    }

    #[test]
    fn a_row_with_failures_is_marked() {
        let row = DropRow {
            clients: ClientMode::Close,
            change: "x".into(),
            updates: 3,
            failed_updates: 0,
            reloads: 3,
            wrk: WrkReport {
                requests: 10,
                read_errors: 2,
                ..WrkReport::default()
            },
            backend_hits: 10,
            target: "0".into(),
        };
        let md = markdown(&[row], &[], 4);
        assert!(
            md.contains("| close | 3 x x | 3 | 0.0 | 10 | 2 (0/2/0/0) | 0 | 2 | 0 | MISSED |"),
            "{md}"
        );
    }
}
