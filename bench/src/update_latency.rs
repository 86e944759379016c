//! `libra-bench --update-latency` and the suite's UPDATE section: end-to-end latency (submit to
//! PASS, window 1) of UPDATEs to a HAProxy-driver worker of 2 load balancers x 5 nodes, for
//! a change of nodes only (runtime API) and for structural changes (a new TCP port, a
//! changed HTTP option) that validate and reload; then where a structural UPDATE's time
//! goes (`steps`), with the driver's own time per command from the worker's debug log.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use libra_worker::config::haproxy_binary_from_env;
use serde::Serialize;
use serde_json::{json, Value};

use super::appliance::{HaproxyWorker, LogLevel};
use super::client::JobClient;
use super::section::{Env, Section};
use super::standalone::{Edits, StandaloneHaproxy};
use super::steps::{self, StepTimes};
use super::updates::{Appliance, ALT_CLIENT_TIMEOUT_MS, BASE_CLIENT_TIMEOUT_MS};

/// UPDATEs per kind of change unless told otherwise.
pub const DEFAULT_UPDATES: usize = 100;
/// The targets, p99 in milliseconds.
pub const NODES_ONLY_TARGET_MS: f64 = 10.0;
pub const STRUCTURAL_TARGET_MS: f64 = 100.0;
/// Bound on one UPDATE.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);
/// UPDATEs of each kind run first and not counted.
const WARMUP: usize = 5;
/// Nodes per load balancer (10 in all).
const NODES_PER_LB: u32 = 5;
/// The worker's function.
const FUNCTION: &str = "lbw-update";

#[derive(Debug, thiserror::Error)]
pub enum UpdateLatencyError {
    #[error("the HAProxy-driver worker: {0}")]
    Appliance(#[from] super::appliance::ApplianceError),
    #[error("{0}")]
    Job(#[from] super::client::JobError),
    #[error("UPDATE {n} of \"{kind}\" {problem}")]
    Update {
        kind: String,
        n: usize,
        problem: String,
    },
    #[error("a free port: {0}")]
    Port(#[from] super::procs::ProcsError),
    #[error("timing the steps: {0}")]
    Step(#[from] steps::StepError),
    #[error("the standalone HAProxy: {0}")]
    Standalone(#[from] super::standalone::StandaloneError),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// One kind of change, measured.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeRow {
    pub change: String,
    /// End to end at the client.
    pub latency: StepTimes,
    /// The driver's own time for the same UPDATEs (its debug log, whole milliseconds).
    pub driver: Option<StepTimes>,
    /// Reloads HAProxy's master counted during these UPDATEs.
    pub reloads: u32,
    pub target_p99_ms: f64,
}

impl ChangeRow {
    fn met(&self) -> bool {
        self.latency.p99_ms <= self.target_p99_ms
    }
}

/// The section alone, with its own gearmand.
pub fn main(updates: usize, json: bool) -> i32 {
    super::section::main_alone("--update-latency", json, |env| {
        run(env, updates).map_err(|e| e.to_string())
    })
}

/// Runs the section against `env`'s job server.
pub fn run(env: &Env, updates: usize) -> Result<Section, UpdateLatencyError> {
    let updates = updates.max(1);
    note!("UPDATE latency: {updates} UPDATEs per kind of change");
    let mut worker = HaproxyWorker::start(
        env.binary,
        &env.gearmand,
        env.dir,
        FUNCTION,
        LogLevel::DebugJson,
    )?;
    let (http_port, tcp_port, alt_tcp_port) = (
        super::procs::free_port()?,
        super::procs::free_port()?,
        super::procs::free_port()?,
    );
    // Nodes on ports 1-10 and 101-110 of loopback, where nothing listens: the UPDATE path
    // does not depend on the nodes being up.
    let base = Appliance::two_lbs(http_port, tcp_port, NODES_PER_LB, 1);
    let mut sender = Sender {
        client: JobClient::connect(&env.gearmand, FUNCTION, JOB_TIMEOUT)?,
        submitted: 0,
    };
    sender.send(&base.update_body(), "first", 0)?;

    type Variant = Box<dyn Fn(usize) -> Appliance>;
    let kinds: Vec<(&str, Variant, f64)> = vec![
        (
            "nodes only: one node of each load balancer replaced (runtime API)",
            Box::new({
                let base = base.clone();
                move |i| base.with_node_variant(u32::from(i.is_multiple_of(2)))
            }),
            NODES_ONLY_TARGET_MS,
        ),
        (
            "structural: the TCP load balancer's port changes (validate + reload)",
            Box::new({
                let base = base.clone();
                move |i| Appliance {
                    tcp_port: if i.is_multiple_of(2) {
                        alt_tcp_port
                    } else {
                        tcp_port
                    },
                    ..base.clone()
                }
            }),
            STRUCTURAL_TARGET_MS,
        ),
        (
            "structural: the HTTP client_timeout option changes (validate + reload)",
            Box::new({
                let base = base.clone();
                move |i| Appliance {
                    http_client_timeout_ms: if i.is_multiple_of(2) {
                        ALT_CLIENT_TIMEOUT_MS
                    } else {
                        BASE_CLIENT_TIMEOUT_MS
                    },
                    ..base.clone()
                }
            }),
            STRUCTURAL_TARGET_MS,
        ),
    ];
    let mut rows = Vec::new();
    // Which UPDATEs (in submission order) each row measured, to find their log lines.
    let mut spans = Vec::new();
    for (label, variant, target) in &kinds {
        note!("UPDATE latency: {label}");
        // Start every kind from the base layout.
        sender.send(&base.update_body(), label, 0)?;
        for i in 0..WARMUP {
            sender.send(&variant(i).update_body(), label, i)?;
        }
        // Back on the base layout, so that the first measured UPDATE changes something
        // (an UPDATE equal to what runs is nearly free).
        if WARMUP % 2 == 1 {
            sender.send(&base.update_body(), label, 0)?;
        }
        let reloads_before = worker.reloads()?;
        let first = sender.submitted;
        let mut took = Vec::with_capacity(updates);
        for i in 0..updates {
            took.push(sender.send(&variant(i).update_body(), label, i + 1)?);
        }
        spans.push((first, sender.submitted));
        let reloads = worker.reloads()?.saturating_sub(reloads_before);
        rows.push(ChangeRow {
            change: label.to_string(),
            latency: StepTimes::from_durations(label, &took),
            driver: None,
            reloads,
            target_p99_ms: *target,
        });
    }
    sender.send(&base.update_body(), "base", 0)?;
    // The logging thread writes asynchronously.
    std::thread::sleep(Duration::from_millis(300));
    let driver_ms = update_durations(worker.log_file())?;
    let log_complete = driver_ms.len() == sender.submitted;
    if log_complete {
        for (row, (from, to)) in rows.iter_mut().zip(&spans) {
            let times: Vec<Duration> = driver_ms[*from..*to]
                .iter()
                .map(|&ms| Duration::from_millis(ms))
                .collect();
            row.driver = Some(StepTimes::from_durations("driver", &times));
        }
    }

    note!("UPDATE latency: timing the steps of a structural UPDATE");
    let n = (updates / 5).clamp(5, 20);
    let breakdown = breakdown(env, &worker, n)?;
    let stopped = worker.stop()?;
    note!("UPDATE latency: {}", stopped.trim());

    let markdown = markdown(&rows, &breakdown, updates, n, log_complete);
    let json = json!({
        "updates": updates,
        "rows": rows,
        "steps": breakdown,
        "driver_log_complete": log_complete,
    });
    Ok(Section { markdown, json })
}

/// Submits UPDATEs that must pass, counting them (the n-th UPDATE is the n-th
/// `driver command done` line of the log).
struct Sender {
    client: JobClient,
    submitted: usize,
}

impl Sender {
    fn send(&mut self, body: &Bytes, kind: &str, n: usize) -> Result<Duration, UpdateLatencyError> {
        self.submitted += 1;
        self.client
            .submit_pass(body)
            .map(|a| a.took)
            .map_err(|problem| UpdateLatencyError::Update {
                kind: kind.to_string(),
                n,
                problem,
            })
    }
}

/// Per-step timing on the idle appliance, and the same reload on copies of its
/// configuration with and without the system CA store loaded.
fn breakdown(
    env: &Env,
    worker: &HaproxyWorker,
    n: usize,
) -> Result<Vec<StepTimes>, UpdateLatencyError> {
    let settings = worker.haproxy();
    let binary = haproxy_binary_from_env();
    let config = &settings.config_file;
    let rendered = std::fs::read_to_string(config).map_err(|source| UpdateLatencyError::Read {
        path: config.display().to_string(),
        source,
    })?;
    let mut out = Vec::new();
    out.push(StepTimes::from_durations(
        "`haproxy -c` of the live configuration",
        &steps::time_check(&binary, config, n)?,
    ));
    let skip_ca = env.dir.join("update-latency-skip-ca.cfg");
    let skip_ca_text = super::standalone::edit(
        &rendered,
        &settings.state_dir,
        &settings.state_dir,
        &[],
        Edits {
            drop_idle_close: false,
            skip_ca_load: true,
        },
    )
    .map_err(|e| UpdateLatencyError::Standalone(super::standalone::StandaloneError::Edit(e)))?;
    std::fs::write(&skip_ca, skip_ca_text).map_err(|source| UpdateLatencyError::Write {
        path: skip_ca.display().to_string(),
        source,
    })?;
    out.push(StepTimes::from_durations(
        "`haproxy -c` of the same with `httpclient.ssl.verify none`",
        &steps::time_check(&binary, &skip_ca, n)?,
    ));
    out.push(StepTimes::from_durations(
        "stats socket reads before a reload (`show servers state`, `show info`, `show stat`)",
        &steps::time_socket_reads(&settings.stats_socket, n)?,
    ));
    out.push(StepTimes::from_durations(
        "one fsynced atomic write of the configuration in the state directory (the driver does 5 per reload)",
        &steps::time_atomic_write(&settings.state_dir, rendered.as_bytes(), n)?,
    ));
    let mut managed = worker.managed();
    let mut reloads = Vec::with_capacity(n);
    for _ in 0..n {
        let started = std::time::Instant::now();
        libra_worker::tools::process::Process::reload(&mut managed).map_err(|e| {
            UpdateLatencyError::Step(steps::StepError::Reload {
                socket: settings.state_dir.display().to_string(),
                problem: e.to_string(),
            })
        })?;
        reloads.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    out.push(StepTimes::from_durations(
        "the reload alone, by the driver's code (`Managed::reload`, polling every `POLL_INTERVAL`)",
        &reloads,
    ));
    let master = &managed.paths().master_socket;
    let phases =
        steps::probe_reloads(master, &settings.stats_socket, n, Duration::from_millis(50))?;
    out.extend(steps::phase_times("worker's HAProxy", &phases));
    // The same reload on copies whose only difference is the CA store.
    for skip_ca_load in [false, true] {
        let edits = Edits {
            drop_idle_close: false,
            skip_ca_load,
        };
        let copy_dir = env
            .dir
            .join(format!("update-latency-copy-{}", u8::from(skip_ca_load)));
        let ports = [
            (ports_of(&rendered)[0], super::procs::free_port()?),
            (ports_of(&rendered)[1], super::procs::free_port()?),
        ];
        let mut h = StandaloneHaproxy::start(
            &binary,
            &rendered,
            &settings.state_dir,
            &copy_dir,
            &ports,
            edits,
        )?;
        let phases = steps::probe_reloads(
            h.master_socket(),
            h.stats_socket(),
            n,
            Duration::from_millis(50),
        )?;
        let label = if skip_ca_load {
            "copy + `httpclient.ssl.verify none`"
        } else {
            "copy as rendered"
        };
        out.extend(steps::phase_times(label, &phases));
        // The core of a structural UPDATE as the driver runs it: check, then reload.
        let mut both = Vec::with_capacity(n);
        for _ in 0..n {
            both.push(h.validate()? + h.reload()?);
            std::thread::sleep(Duration::from_millis(50));
        }
        out.push(StepTimes::from_durations(
            &format!("{label}: `haproxy -c` + reload by the driver's code"),
            &both,
        ));
    }
    Ok(out)
}

/// The `bind` ports of a rendered configuration, in order.
fn ports_of(rendered: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = rendered
        .lines()
        .filter_map(|l| l.trim().strip_prefix("bind "))
        .filter_map(|b| b.rsplit(':').next()?.parse().ok())
        .collect();
    // Two load balancers are always rendered here; pad defensively for the indexing above.
    while ports.len() < 2 {
        ports.push(0);
    }
    ports
}

/// The driver's time of every UPDATE, in order, from the worker's JSON debug log.
fn update_durations(log: &Path) -> Result<Vec<u64>, UpdateLatencyError> {
    let text = std::fs::read_to_string(log).map_err(|source| UpdateLatencyError::Read {
        path: log.display().to_string(),
        source,
    })?;
    Ok(parse_update_durations(&text))
}

fn parse_update_durations(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v.get("msg").and_then(Value::as_str) == Some("driver command done")
                && v.get("command").and_then(Value::as_str) == Some("update")
        })
        .filter_map(|v| v.get("ms").and_then(Value::as_u64))
        .collect()
}

fn markdown(
    rows: &[ChangeRow],
    steps: &[StepTimes],
    updates: usize,
    n: usize,
    log_complete: bool,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "### UPDATE latency (HAProxy driver)\n");
    let _ = writeln!(
        md,
        "An appliance of 2 load balancers (HTTP and TCP, 5 nodes each), managed HAProxy {}; {updates} \
         UPDATEs per row, one at a time (window 1), alternating between two layouts, after {WARMUP} \
         warm-ups. End to end = submit to the PASS answer at the client; driver = the worker's \
         `driver command done` debug line for the same UPDATEs (whole ms). Milliseconds.\n",
        haproxy_version()
    );
    let _ = writeln!(
        md,
        "| change | p50 | p90 | p99 | max | driver p50 | driver p99 | HAProxy reloads | target (p99) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let (dp50, dp99) = r.driver.as_ref().map_or(("n/a".into(), "n/a".into()), |d| {
            (format!("{:.0}", d.p50_ms), format!("{:.0}", d.p99_ms))
        });
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {dp50} | {dp99} | {} | <= {:.0} ms: {} |",
            r.change,
            r.latency.p50_ms,
            r.latency.p90_ms,
            r.latency.p99_ms,
            r.latency.max_ms,
            r.reloads,
            r.target_p99_ms,
            if r.met() { "met" } else { "MISSED" }
        );
    }
    if !log_complete {
        let _ = writeln!(
            md,
            "\n(The worker's log did not hold one `driver command done` line per UPDATE; driver times left out.)"
        );
    }
    let _ = writeln!(
        md,
        "\n#### Where a structural UPDATE's time goes ({n} samples per step, the appliance idle)\n"
    );
    let _ = writeln!(md, "| step | n | p50 | p90 | p99 | max |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for s in steps {
        let _ = writeln!(md, "{}", s.row());
    }
    md.push('\n');
    md
}

pub(crate) fn haproxy_version() -> String {
    std::process::Command::new(haproxy_binary_from_env())
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        })
        .unwrap_or_else(|| "(unknown version)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_update_durations_from_the_json_log() {
        let log = r#"{"msg":"driver command done","level":"DEBG","ts":"x","command":"update","ms":91,"ok":true,"actor":"driver"}
{"msg":"driver command done","level":"DEBG","ts":"x","command":"housekeeping","ms":0,"ok":true,"actor":"driver"}
not json
{"msg":"job","level":"DEBG","action":"UPDATE"}
{"msg":"driver command done","level":"DEBG","ts":"x","command":"update","ms":2,"ok":true,"actor":"driver"}
"#;
        assert_eq!(parse_update_durations(log), vec![91, 2]);
    }

    #[test]
    fn bind_ports_in_order() {
        let text = "frontend a\n    bind 127.0.0.1:8080\nfrontend b\n    bind 127.0.0.1:8443\n";
        assert_eq!(ports_of(text), vec![8080, 8443]);
    }
}
