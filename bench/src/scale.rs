//! `libra-bench scale`: how the UPDATE path grows with the node count. For each size N, a
//! HAProxy-driver worker of its own gets an appliance of two load balancers, HTTP of N
//! nodes and TCP of N/10 (`tcp_nodes`), every node a real socket (`scale_backends`), and through gearmand,
//! one at a time: one node added or removed, one node re-weighted, a batch of servers
//! added, removed and re-weighted at once (all through the runtime API, no reload), a
//! structural change (`haproxy -c` + reload), and STATS. Then the floor of a structural
//! change, measured directly against a copy of the same HAProxy file (`haproxy -c`, then
//! a reload until the new worker answers), the worker's memory, and where the time goes
//! per step: the driver's own `update steps` line per UPDATE (the worker logs at info), and the job parser
//! run by the bench on the same bodies.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libra_worker::config::{haproxy_binary_from_env, Limits};
use serde::Serialize;
use serde_json::{json, Value};

use super::appliance::{HaproxyWorker, LogLevel};
use super::client::JobClient;
use super::scale_backends::LoopbackBackends;
use super::scale_layout::{BatchShape, Change, ScaleLayout};
use super::section::{Env, Section};
use super::standalone::{Edits, StandaloneHaproxy};
use super::steps::{self, StepTimes};

/// Sizes measured unless told otherwise (nodes per load balancer).
pub const DEFAULT_SIZES: &[u32] = &[100, 1_000, 10_000];
/// Servers a batch changes at most (at 10,000 nodes: 1,000; a tenth below that).
const MAX_BATCH: u32 = 1_000;
/// UPDATEs of each kind run first and not counted (one of each direction).
const WARMUP: usize = 2;
/// Samples of the structural floor.
const FLOOR_SAMPLES: usize = 10;
/// Bound on one job (a 10,000-node reload takes seconds).
const JOB_TIMEOUT: Duration = Duration::from_secs(120);
/// The steps of the driver's `update steps` line, in the order they happen.
const STEPS: &[&str] = &[
    "validate", "diff", "render", "write", "runtime", "check", "state", "reload",
];
/// Targets, p99 in milliseconds.
const NODE_TARGET_MS: f64 = 10.0;
const NODE_TARGET_10K_MS: f64 = 25.0;
const BATCH_TARGET_MS: f64 = 100.0;
const STATS_TARGET_MS: f64 = 50.0;
const FLOOR_FACTOR: f64 = 1.3;
const RSS_TARGET_KIB: u64 = 30 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    #[error("the backends: {0}")]
    Backends(#[from] super::scale_backends::BackendsError),
    #[error("the HAProxy-driver worker: {0}")]
    Appliance(#[from] super::appliance::ApplianceError),
    #[error("{0}")]
    Job(#[from] super::client::JobError),
    #[error("{size} nodes, {kind}: {problem}")]
    Update {
        size: u32,
        kind: String,
        problem: String,
    },
    #[error("a free port: {0}")]
    Port(#[from] super::procs::ProcsError),
    #[error("the floor: {0}")]
    Step(#[from] steps::StepError),
    #[error("the standalone HAProxy: {0}")]
    Standalone(#[from] super::standalone::StandaloneError),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the worker's memory: {0}")]
    Memory(#[from] super::procfs::ProcfsError),
}

/// One kind of UPDATE at one size.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub kind: String,
    pub latency: StepTimes,
    /// The driver's time per step (p50, p99 in ms), from its `update steps` lines.
    pub steps: BTreeMap<String, (f64, f64)>,
    /// The job parser on the same bodies, run by the bench (p50 ms).
    pub parse_ms: f64,
    pub reloads: u32,
    /// p99 bound, and whether it was met.
    pub target_ms: f64,
}

/// Everything measured at one size.
#[derive(Debug, Clone, Serialize)]
pub struct SizeReport {
    pub nodes_per_lb: u32,
    pub rows: Vec<Row>,
    pub stats: StepTimes,
    pub floor: StepTimes,
    pub rss_kib: u64,
    pub peak_kib: u64,
}

/// `libra-bench scale`, with its own gearmand.
pub fn main(sizes: &[u32], updates: usize, json: bool) -> i32 {
    super::section::main_alone("scale", json, |env| {
        run(env, sizes, updates).map_err(|e| e.to_string())
    })
}

pub fn run(env: &Env, sizes: &[u32], updates: usize) -> Result<Section, ScaleError> {
    raise_fd_limit();
    let backends = LoopbackBackends::start()?;
    let mut reports = Vec::new();
    for &size in sizes {
        note!("scale: {size} nodes per load balancer, {updates} UPDATEs per kind");
        reports.push(run_size(env, &backends, size, updates.max(1))?);
    }
    let markdown = markdown(&reports, updates, &backends);
    let json = json!({"updates": updates, "sizes": reports});
    Ok(Section { markdown, json })
}

/// The TCP load balancer's nodes beside an HTTP one of `size`: a tenth. HAProxy needs a
/// file descriptor per checked server on top of its connections, and two load balancers
/// of 10,000 servers each need more than this machine's hard limit of 20,000 (HAProxy
/// 2.6: "Cannot raise FD limit to 20241, limit is 20000"); every change measured is made
/// to the HTTP one.
pub fn tcp_nodes(size: u32) -> u32 {
    (size / 10).max(1)
}

/// File descriptors the worker and its HAProxy may open (inherited from the bench):
/// HAProxy sizes its own need from `maxconn` and the servers it checks, and 2 x 10,000
/// servers need more than the 20,000 a shell often allows.
const FD_LIMIT: u64 = 1 << 16;

/// Raises this process's open-file limit to `FD_LIMIT` (the hard limit too where allowed,
/// as root); where it cannot, the largest sizes fail with HAProxy's own message.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= FD_LIMIT {
        return;
    }
    if setrlimit(Resource::RLIMIT_NOFILE, FD_LIMIT, hard.max(FD_LIMIT)).is_err() {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// A kind of UPDATE: label, the change of its i-th UPDATE, p99 target (None: from the
/// floor).
type Kind = (String, Box<dyn Fn(usize) -> Change>, Option<f64>);

/// The kinds of UPDATE of one size.
fn kinds(size: u32) -> Vec<Kind> {
    let node_target = if size >= 10_000 {
        NODE_TARGET_10K_MS
    } else {
        NODE_TARGET_MS
    };
    let batch = (size / 10).clamp(3, MAX_BATCH);
    let shape = BatchShape::of(batch);
    let even = |i: usize| i.is_multiple_of(2);
    vec![
        (
            "one node added / removed (runtime API)".to_string(),
            Box::new(move |i| Change {
                extra_node: even(i),
                ..Change::default()
            }),
            Some(node_target),
        ),
        (
            "one node re-weighted (runtime API)".to_string(),
            Box::new(move |i| Change {
                reweight: even(i),
                ..Change::default()
            }),
            Some(node_target),
        ),
        (
            format!(
                "batch: {} servers added, {} removed, {} re-weighted at once (runtime API)",
                shape.added, shape.removed, shape.reweighted
            ),
            Box::new(move |i| Change {
                batch: even(i).then_some(batch),
                ..Change::default()
            }),
            Some(BATCH_TARGET_MS),
        ),
        (
            "structural: the HTTP client timeout changes (`haproxy -c` + reload)".to_string(),
            Box::new(move |i| Change {
                alt_timeout: even(i),
                ..Change::default()
            }),
            // Set from the floor once it is measured.
            None,
        ),
    ]
}

fn run_size(
    env: &Env,
    backends: &LoopbackBackends,
    size: u32,
    updates: usize,
) -> Result<SizeReport, ScaleError> {
    let function = format!("scale-{size}");
    // The batch adds up to 1,000 servers on top of N; the body of 11,000 nodes is about
    // 0.7 MB. The defaults (512 nodes, 1 MiB) stay the worker's.
    let max_nodes = size as usize + MAX_BATCH as usize + 10;
    let max_job_bytes = 200 * max_nodes + 64 * 1024;
    let limits_text =
        format!("\n[limits]\nmax_nodes = {max_nodes}\nmax_job_bytes = {max_job_bytes}\n");
    let mut worker = HaproxyWorker::start_with(
        env.binary,
        &env.gearmand,
        env.dir,
        &function,
        LogLevel::InfoJson,
        &limits_text,
    )?;
    let layout = ScaleLayout {
        http_port: super::procs::free_port()?,
        tcp_port: super::procs::free_port()?,
        nodes: size,
        tcp_nodes: tcp_nodes(size),
        backend_port: backends.port(),
        spread: backends.any_loopback(),
    };
    let limits = Limits {
        max_nodes,
        max_job_bytes,
        ..Limits::default()
    };
    let mut sender = Sender {
        client: JobClient::connect(&env.gearmand, &function, JOB_TIMEOUT)?,
        submitted: 0,
        size,
    };
    let base = layout.body(Change::default());
    sender.send(&base, "first")?;
    let mut rows = Vec::new();
    // Which UPDATEs (in submission order) each row measured, to find their log lines.
    let mut spans = Vec::new();
    for (label, change, target) in kinds(size) {
        note!("scale: {size}: {label}");
        // Bodies first: building 100 bodies of 20,000 nodes is not what is measured.
        let bodies: Vec<Bytes> = (0..WARMUP + updates)
            .map(|i| layout.body(change(i)))
            .collect();
        let parse_ms = parse_time(&bodies[0], &limits);
        sender.send(&base, &label)?;
        for body in &bodies[..WARMUP] {
            sender.send(body, &label)?;
        }
        let reloads_before = worker.reloads()?;
        let from = sender.submitted;
        let mut took = Vec::with_capacity(updates);
        for body in &bodies[WARMUP..] {
            took.push(sender.send(body, &label)?);
        }
        spans.push((from, sender.submitted));
        rows.push(Row {
            latency: StepTimes::from_durations(&label, &took),
            kind: label,
            steps: BTreeMap::new(),
            parse_ms,
            reloads: worker.reloads()?.saturating_sub(reloads_before),
            target_ms: target.unwrap_or(0.0),
        });
    }
    sender.send(&base, "base")?;
    note!("scale: {size}: STATS");
    let stats_body = Bytes::from_static(br#"{"hpcs_action":"STATS"}"#);
    let mut stats = Vec::with_capacity(updates);
    for _ in 0..updates {
        let a = sender
            .client
            .submit_pass(&stats_body)
            .map_err(|problem| ScaleError::Update {
                size,
                kind: "STATS".to_string(),
                problem,
            })?;
        stats.push(a.took);
    }
    let memory = super::procfs::memory(worker.pid())?;
    note!("scale: {size}: the floor (`haproxy -c` + reload of a copy of the same file)");
    let floor = floor(env, &worker, &layout, size)?;
    // The logging thread writes asynchronously.
    std::thread::sleep(Duration::from_millis(500));
    let stopped = worker.stop()?;
    note!("scale: {size}: {}", stopped.trim());
    let lines = update_steps(worker.log_file())?;
    for (row, (from, to)) in rows.iter_mut().zip(&spans) {
        if let Some(samples) = lines.get(*from..*to) {
            row.steps = summarize_steps(samples);
        }
        if row.target_ms == 0.0 {
            row.target_ms = FLOOR_FACTOR * floor.p99_ms;
        }
    }
    Ok(SizeReport {
        nodes_per_lb: size,
        rows,
        stats: StepTimes::from_durations("STATS", &stats),
        floor,
        rss_kib: memory.rss_kib,
        peak_kib: memory.peak_kib,
    })
}

/// Submits UPDATEs that must pass, counting them (the n-th UPDATE is the n-th
/// `update steps` line of the log).
struct Sender {
    client: JobClient,
    submitted: usize,
    size: u32,
}

impl Sender {
    fn send(&mut self, body: &Bytes, kind: &str) -> Result<Duration, ScaleError> {
        self.submitted += 1;
        self.client
            .submit_pass(body)
            .map(|a| a.took)
            .map_err(|problem| ScaleError::Update {
                size: self.size,
                kind: kind.to_string(),
                problem,
            })
    }
}

/// The worker's job parser on `body` (JSON, then the UPDATE's checks), as the controller
/// runs it before the driver sees the job: p50 of 5 runs, in milliseconds.
fn parse_time(body: &Bytes, limits: &Limits) -> f64 {
    let times: Vec<Duration> = (0..5)
        .map(|_| {
            let started = Instant::now();
            if let Ok(Value::Object(mut msg)) = serde_json::from_slice::<Value>(body) {
                let _ = libra_worker::jobs::update::parse(&mut msg, limits);
            }
            started.elapsed()
        })
        .collect();
    StepTimes::from_durations("parse", &times).p50_ms
}

/// The floor of a structural UPDATE at this size: `haproxy -c` of the worker's live file
/// plus a reload of a copy of it (own sockets and ports) until the new worker answers on
/// the stats socket, probed every millisecond.
fn floor(
    env: &Env,
    worker: &HaproxyWorker,
    layout: &ScaleLayout,
    size: u32,
) -> Result<StepTimes, ScaleError> {
    let settings = worker.haproxy();
    let config = &settings.config_file;
    let rendered = std::fs::read_to_string(config).map_err(|source| ScaleError::Read {
        path: config.display().to_string(),
        source,
    })?;
    let ports = [
        (layout.http_port, super::procs::free_port()?),
        (layout.tcp_port, super::procs::free_port()?),
    ];
    let copy_dir = env.dir.join(format!("scale-floor-{size}"));
    let binary = haproxy_binary_from_env();
    let h = StandaloneHaproxy::start(
        &binary,
        &rendered,
        &settings.state_dir,
        &copy_dir,
        &ports,
        Edits::default(),
    )?;
    let mut samples = Vec::with_capacity(FLOOR_SAMPLES);
    for _ in 0..FLOOR_SAMPLES {
        let check = h.validate()?;
        let reload = steps::probe_reload(h.master_socket(), h.stats_socket())?;
        samples.push(check + reload.worker_answers);
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(StepTimes::from_durations("floor", &samples))
}

/// The `us` field of every `update steps` line of the worker's JSON log, in order.
fn update_steps(log: &std::path::Path) -> Result<Vec<BTreeMap<String, u64>>, ScaleError> {
    let text = std::fs::read_to_string(log).map_err(|source| ScaleError::Read {
        path: log.display().to_string(),
        source,
    })?;
    Ok(parse_update_steps(&text))
}

fn parse_update_steps(text: &str) -> Vec<BTreeMap<String, u64>> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("msg").and_then(Value::as_str) == Some("update steps"))
        .map(|v| {
            v.get("us")
                .and_then(Value::as_str)
                .unwrap_or("")
                .split_whitespace()
                .filter_map(|w| w.split_once('='))
                .filter_map(|(k, us)| Some((k.to_string(), us.parse().ok()?)))
                .collect()
        })
        .collect()
}

/// p50 and p99 (ms) of each step over the UPDATEs of a row; a step an UPDATE did not
/// take counts as 0 for it.
fn summarize_steps(samples: &[BTreeMap<String, u64>]) -> BTreeMap<String, (f64, f64)> {
    STEPS
        .iter()
        .map(|step| {
            let times: Vec<Duration> = samples
                .iter()
                .map(|m| Duration::from_micros(m.get(*step).copied().unwrap_or(0)))
                .collect();
            let t = StepTimes::from_durations(step, &times);
            (step.to_string(), (t.p50_ms, t.p99_ms))
        })
        .collect()
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

fn markdown(reports: &[SizeReport], updates: usize, backends: &LoopbackBackends) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### Scale: UPDATE latency by node count (HAProxy driver)\n"
    );
    let _ = writeln!(
        md,
        "Per size, a worker of its own with an appliance of two load balancers, HTTP of N nodes \
         (every change is made to it) and TCP of N/10 (two of 10,000 need more file descriptors \
         than this machine's hard limit of 20,000), every node a distinct {} address on one real listening \
         socket; {updates} UPDATEs per row, one at a time through gearmand, alternating between \
         two layouts, after {WARMUP} warm-ups. Milliseconds, end to end at the client. The \
         structural target is {FLOOR_FACTOR} x the floor: `haproxy -c` of the same file + a \
         reload of a copy until its new worker answers, measured directly ({FLOOR_SAMPLES} \
         samples). HAProxy {}.\n",
        if backends.any_loopback() {
            "127.x.y.z"
        } else {
            "(all 127.0.0.1)"
        },
        super::update_latency::haproxy_version()
    );
    let _ = writeln!(
        md,
        "| N (HTTP nodes) | change | p50 | p90 | p99 | max | reloads | target (p99) |"
    );
    let _ = writeln!(md, "|---:|---|---:|---:|---:|---:|---:|---|");
    for r in reports {
        for row in &r.rows {
            let l = &row.latency;
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | <= {:.0} ms: {} |",
                r.nodes_per_lb,
                row.kind,
                l.p50_ms,
                l.p90_ms,
                l.p99_ms,
                l.max_ms,
                row.reloads,
                row.target_ms,
                verdict(l.p99_ms <= row.target_ms)
            );
        }
        let s = &r.stats;
        let _ = writeln!(
            md,
            "| {} | STATS | {:.1} | {:.1} | {:.1} | {:.1} | - | <= {STATS_TARGET_MS:.0} ms: {} |",
            r.nodes_per_lb,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            s.max_ms,
            verdict(s.p99_ms <= STATS_TARGET_MS)
        );
        let f = &r.floor;
        let _ = writeln!(
            md,
            "| {} | floor: `haproxy -c` + reload, direct | {:.1} | {:.1} | {:.1} | {:.1} | - | - |",
            r.nodes_per_lb, f.p50_ms, f.p90_ms, f.p99_ms, f.max_ms
        );
    }
    let _ = writeln!(
        md,
        "\n#### Where the time goes (p50 / p99 ms per step)\n\n\
         parse: the worker's job parser on the row's body, run by the bench (p50 of 5); the \
         others: the driver's `update steps` line of each measured UPDATE (validate = \
         the model built node by node, diff = the runtime plan, write = files and markers, \
         runtime = the pipelined runtime-API session, state = ports, server states and \
         counters before a reload).\n"
    );
    let _ = writeln!(
        md,
        "| N (HTTP nodes) | change | parse | {} |",
        STEPS.join(" | ")
    );
    let _ = writeln!(md, "|---:|---|---:|{}", "---:|".repeat(STEPS.len()));
    for r in reports {
        for row in &r.rows {
            let cells: Vec<String> = STEPS
                .iter()
                .map(|s| {
                    row.steps.get(*s).map_or("n/a".to_string(), |(p50, p99)| {
                        format!("{p50:.1} / {p99:.1}")
                    })
                })
                .collect();
            let short = row.kind.split(':').next().unwrap_or(&row.kind);
            let short = short.split(" (").next().unwrap_or(short);
            let _ = writeln!(
                md,
                "| {} | {short} | {:.1} | {} |",
                r.nodes_per_lb,
                row.parse_ms,
                cells.join(" | ")
            );
        }
    }
    let _ = writeln!(md, "\n#### Worker memory after the rows\n");
    let _ = writeln!(md, "| N (HTTP nodes) | RSS MB | peak RSS MB | target |");
    let _ = writeln!(md, "|---:|---:|---:|---|");
    for r in reports {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} | <= 30 MB (RSS): {} |",
            r.nodes_per_lb,
            r.rss_kib as f64 / 1024.0,
            r.peak_kib as f64 / 1024.0,
            verdict(r.rss_kib <= RSS_TARGET_KIB)
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_update_steps_from_the_json_log() {
        let log = r#"{"msg":"update steps","level":"DEBG","us":"validate=120 diff=40 runtime=900"}
{"msg":"driver command done","command":"update","ms":1}
{"msg":"update steps","level":"DEBG","us":"validate=100 render=5 check=600000 reload=900000"}
"#;
        let lines = parse_update_steps(log);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["runtime"], 900);
        assert_eq!(lines[1]["reload"], 900_000);
        let s = summarize_steps(&lines);
        assert_eq!(s["validate"].1, 0.12);
        assert_eq!(s["diff"], (0.0, 0.04));
    }

    #[test]
    fn targets_by_size() {
        let k = kinds(10_000);
        assert_eq!(k.len(), 4);
        assert_eq!(k[0].2, Some(NODE_TARGET_10K_MS));
        assert_eq!(k[2].2, Some(BATCH_TARGET_MS));
        assert!(k[2].0.starts_with("batch: 334 servers added, 333 removed"));
        assert_eq!(k[3].2, None);
        assert_eq!(kinds(1_000)[0].2, Some(NODE_TARGET_MS));
        assert!(k[0].1(0).extra_node && !k[0].1(1).extra_node);
    }
}
