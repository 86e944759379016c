//! `libra-bench --soak`: everything at once for ten minutes (`--quick`: one) against a
//! HAProxy-driver worker of its own: wrk keep-alive clients through its HTTP load
//! balancer, DISCOVER and STATS at window 16, an UPDATE every second (node-only and
//! structural in turn) and METRICS every 10 s. Every 10 s it samples the worker's RSS,
//! open fds and threads and the HAProxy processes' RSS; it reports each series' slope,
//! every failed request or job, and METRICS' bytes against what wrk received and what the
//! backends sent.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};

use super::appliance::{HaproxyWorker, LogLevel};
use super::client::JobClient;
use super::haproxy_procs;
use super::http_backend::HttpBackend;
use super::load::{self, Expect, LoadSpec};
use super::procfs;
use super::procs::free_port;
use super::section::{Env, Section};
use super::wrk::{self, ClientMode};

/// A full run and a `--quick` one.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(600);
pub const QUICK_DURATION: Duration = Duration::from_secs(60);
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const UPDATE_EVERY: Duration = Duration::from_secs(1);
const METRICS_EVERY: Duration = Duration::from_secs(10);
/// Large answers: the headers HAProxy adds (the stickiness cookie) stay well under 1% of
/// the bytes, so METRICS (the backends' bytes) and wrk (the clients') can be compared.
const BODY_BYTES: usize = 16 * 1024;
const JOB_WINDOW: usize = 16;
/// DISCOVER or STATS jobs per load round; the generator alternates the two.
const JOBS_PER_ROUND: u64 = 2_000;
const WRK_CONNECTIONS: u32 = 16;
const JOB_TIMEOUT: Duration = Duration::from_secs(60);
/// After wrk stops, before the last METRICS: answers in flight land in the counters.
const SETTLE: Duration = Duration::from_secs(1);
/// METRICS against wrk's bytes: the issue's bound.
const BYTES_TOLERANCE: f64 = 0.01;
const FUNCTION: &str = "lbw-soak";

#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    #[error("wrk is not installed (apt-get install wrk)")]
    NoWrk,
    #[error("an HTTP backend: {0}")]
    Backend(#[from] super::http_backend::BackendError),
    #[error("the HAProxy-driver worker: {0}")]
    Appliance(#[from] super::appliance::ApplianceError),
    #[error("{0}")]
    Job(#[from] super::client::JobError),
    #[error("a free port: {0}")]
    Port(#[from] super::procs::ProcsError),
    #[error("wrk: {0}")]
    Wrk(#[from] wrk::WrkError),
    #[error("the set-up UPDATE failed: {0}")]
    Setup(String),
    #[error("sampling process {pid}: {problem}")]
    Sample { pid: u32, problem: String },
    #[error("{report}\nsoak FAILED: {why}")]
    Failed { report: String, why: String },
}

/// How long to run.
#[derive(Debug, Clone, Copy)]
pub struct SoakOpts {
    pub duration: Duration,
}

pub fn main(opts: SoakOpts, json: bool) -> i32 {
    super::section::main_alone("--soak", json, |env| {
        run(env, opts).map_err(|e| e.to_string())
    })
}

/// One sample of the worker and its HAProxy.
#[derive(Debug, Clone, Copy, Serialize)]
struct Sample {
    seconds: f64,
    worker_rss_kib: u64,
    worker_fds: u64,
    worker_threads: u64,
    haproxy_rss_kib: u64,
    haproxy_processes: u64,
}

/// DISCOVER/STATS load totals.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct JobTotals {
    jobs: u64,
    failures: u64,
    rounds: u64,
}

fn run(env: &Env, opts: SoakOpts) -> Result<Section, SoakError> {
    let wrk_program = wrk::program().ok_or(SoakError::NoWrk)?;
    let backends = (1..=3)
        .map(|i| HttpBackend::start_sized(&format!("s{i}"), BODY_BYTES))
        .collect::<Result<Vec<_>, _>>()?;
    let mut worker = HaproxyWorker::start(
        env.binary,
        &env.gearmand,
        env.dir,
        FUNCTION,
        LogLevel::Warning,
    )?;
    let (http_port, tcp_port) = (free_port()?, free_port()?);
    let ports: Vec<u16> = backends.iter().map(HttpBackend::port).collect();
    let mut client = JobClient::connect(&env.gearmand, FUNCTION, JOB_TIMEOUT)?;
    client
        .submit_pass(&update_body(http_port, tcp_port, &ports, 0))
        .map_err(SoakError::Setup)?;
    // Zero the METRICS baseline: from here on every byte is billed once.
    let metrics_body = Bytes::from_static(br#"{"hpcs_action":"METRICS"}"#);
    client
        .submit_pass(&metrics_body)
        .map_err(SoakError::Setup)?;
    let sent_before: u64 = backends.iter().map(HttpBackend::bytes_sent).sum();

    let mut wrk_run = wrk::start(
        &wrk_program,
        &format!("http://127.0.0.1:{http_port}/"),
        ClientMode::KeepAlive,
        WRK_CONNECTIONS,
        2,
        &env.dir.join("soak-wrk.txt"),
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let jobs = {
        let (stop, server) = (stop.clone(), env.gearmand.clone());
        thread::spawn(move || job_load(&server, &stop))
    };

    let started = Instant::now();
    let (mut samples, mut update_ms, mut failed_jobs) = (Vec::new(), Vec::new(), Vec::new());
    let mut metrics_bytes = 0u64;
    let (mut next_update, mut next_metrics, mut next_sample) =
        (Duration::ZERO, METRICS_EVERY, Duration::ZERO);
    let mut round = 0u32;
    while started.elapsed() < opts.duration {
        let now = started.elapsed();
        if now >= next_sample {
            samples.push(sample(&worker, now)?);
            next_sample += SAMPLE_EVERY;
        }
        if now >= next_update {
            round += 1;
            let body = update_body(http_port, tcp_port, &ports, round);
            match client.submit_pass(&body) {
                Ok(a) => update_ms.push(a.took.as_secs_f64() * 1e3),
                Err(e) => failed_jobs.push(format!("UPDATE {round}: {e}")),
            }
            next_update += UPDATE_EVERY;
        }
        if now >= next_metrics {
            match metrics(&mut client, &metrics_body) {
                Ok(b) => metrics_bytes += b,
                Err(e) => failed_jobs.push(format!("METRICS: {e}")),
            }
            next_metrics += METRICS_EVERY;
        }
        wrk_run.check_running()?;
        let next = next_update.min(next_metrics).min(next_sample);
        if let Some(wait) = next.checked_sub(started.elapsed()) {
            thread::sleep(wait.min(UPDATE_EVERY));
        }
    }
    let wrk_report = wrk_run.finish()?;
    stop.store(true, Ordering::Relaxed);
    let job_totals = jobs.join().unwrap_or(JobTotals {
        failures: 1,
        ..JobTotals::default()
    });
    thread::sleep(SETTLE);
    match metrics(&mut client, &metrics_body) {
        Ok(b) => metrics_bytes += b,
        Err(e) => failed_jobs.push(format!("METRICS: {e}")),
    }
    samples.push(sample(&worker, started.elapsed())?);
    let backend_bytes = backends
        .iter()
        .map(HttpBackend::bytes_sent)
        .sum::<u64>()
        .saturating_sub(sent_before);
    let _ = worker.stop();

    let bytes_ratio = metrics_bytes as f64 / (wrk_report.bytes_read.max(1)) as f64;
    let mut why = Vec::new();
    if wrk_report.failed() > 0 {
        why.push(format!("{} failed HTTP requests", wrk_report.failed()));
    }
    if job_totals.failures > 0 {
        why.push(format!(
            "{} failed DISCOVER/STATS jobs",
            job_totals.failures
        ));
    }
    if !failed_jobs.is_empty() {
        why.push(format!(
            "{} failed UPDATE/METRICS jobs: {}",
            failed_jobs.len(),
            failed_jobs.join("; ")
        ));
    }
    if (bytes_ratio - 1.0).abs() > BYTES_TOLERANCE {
        why.push(format!(
            "METRICS billed {metrics_bytes} bytes, wrk received {} ({:.4}x)",
            wrk_report.bytes_read, bytes_ratio
        ));
    }

    let mut md = String::new();
    let _ = writeln!(
        md,
        "### Soak: {} s, wrk keep-alive x{WRK_CONNECTIONS}, DISCOVER/STATS at window {JOB_WINDOW}, \
         an UPDATE every {} s, METRICS every {} s\n",
        opts.duration.as_secs(),
        UPDATE_EVERY.as_secs(),
        METRICS_EVERY.as_secs()
    );
    let _ = writeln!(md, "| t (s) | worker RSS (KiB) | worker fds | worker threads | HAProxy RSS (KiB) | HAProxy processes |");
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|");
    for s in &samples {
        let _ = writeln!(
            md,
            "| {:.0} | {} | {} | {} | {} | {} |",
            s.seconds,
            s.worker_rss_kib,
            s.worker_fds,
            s.worker_threads,
            s.haproxy_rss_kib,
            s.haproxy_processes
        );
    }
    // The first sample is the idle worker before any load: the slopes are those of the
    // run under load.
    let loaded = samples.get(1..).unwrap_or_default();
    let slope_of = |f: fn(&Sample) -> u64| slope_per_minute(loaded, f);
    let slopes = json!({
        "worker_rss_kib_per_min": slope_of(|s| s.worker_rss_kib),
        "worker_fds_per_min": slope_of(|s| s.worker_fds),
        "worker_threads_per_min": slope_of(|s| s.worker_threads),
        "haproxy_rss_kib_per_min": slope_of(|s| s.haproxy_rss_kib),
    });
    let _ = writeln!(
        md,
        "\nSlopes (least squares over the samples under load, per minute): worker RSS {:+.1} KiB, fds {:+.2}, threads {:+.2}; \
         HAProxy RSS {:+.1} KiB.",
        slope_of(|s| s.worker_rss_kib),
        slope_of(|s| s.worker_fds),
        slope_of(|s| s.worker_threads),
        slope_of(|s| s.haproxy_rss_kib)
    );
    update_ms.sort_by(f64::total_cmp);
    let _ = writeln!(
        md,
        "\n| figure | value |\n|---|---:|\n\
         | HTTP requests (wrk) | {} |\n| failed HTTP requests | {} |\n\
         | DISCOVER/STATS jobs | {} |\n| failed DISCOVER/STATS jobs | {} |\n\
         | UPDATEs (p50 / p99 ms) | {} ({:.1} / {:.1}) |\n| failed UPDATE/METRICS jobs | {} |\n\
         | bytes wrk received | {} |\n| bytes the backends sent | {} |\n\
         | bytes METRICS billed | {} ({:.4}x wrk's) |",
        wrk_report.requests,
        wrk_report.failed(),
        job_totals.jobs,
        job_totals.failures,
        update_ms.len(),
        percentile(&update_ms, 0.5),
        percentile(&update_ms, 0.99),
        failed_jobs.len(),
        wrk_report.bytes_read,
        backend_bytes,
        metrics_bytes,
        bytes_ratio
    );
    let report = json!({
        "seconds": opts.duration.as_secs(),
        "samples": samples,
        "slopes_per_minute": slopes,
        "wrk": wrk_report,
        "jobs": job_totals,
        "updates": update_ms.len(),
        "update_p50_ms": percentile(&update_ms, 0.5),
        "update_p99_ms": percentile(&update_ms, 0.99),
        "failed_update_or_metrics": failed_jobs,
        "bytes": {"wrk_read": wrk_report.bytes_read, "backends_sent": backend_bytes, "metrics": metrics_bytes},
    });
    if why.is_empty() {
        Ok(Section {
            markdown: md,
            json: report,
        })
    } else {
        Err(SoakError::Failed {
            report: md,
            why: why.join("; "),
        })
    }
}

/// The appliance's UPDATE in round `round`: an HTTP load balancer on the three backends
/// and a TCP one. Odd rounds change nodes only (the third node comes back under a new id,
/// as the API gives a re-added node); even rounds change the HTTP client timeout, which
/// takes the reload path.
fn update_body(http_port: u16, tcp_port: u16, ports: &[u16], round: u32) -> Bytes {
    let node = |id: u32, port: u16| json!({"id": id, "address": "127.0.0.1", "port": port});
    let mut nodes: Vec<Value> = ports
        .iter()
        .take(2)
        .zip(1..)
        .map(|(p, id)| node(id, *p))
        .collect();
    if let Some(third) = ports.get(2) {
        nodes.push(node(100 + round.div_ceil(2), *third));
    }
    let timeout = 30_000 + (round / 2) % 2;
    let body = json!({
        "hpcs_action": "UPDATE",
        "loadBalancers": [
            {"name": "soak-web", "protocol": "HTTP", "port": http_port, "nodes": nodes,
             "options": {"client_timeout": timeout}},
            {"name": "soak-tcp", "protocol": "TCP", "port": tcp_port,
             "nodes": [node(1000, ports.first().copied().unwrap_or(1))]},
        ],
    });
    Bytes::from(body.to_string())
}

/// One METRICS job: the HTTP bytes it bills.
fn metrics(client: &mut JobClient, body: &Bytes) -> Result<u64, String> {
    let a = client.submit_pass(body)?;
    let lbs = a.answer["loadBalancers"]
        .as_array()
        .ok_or_else(|| format!("no loadBalancers in {}", a.answer))?;
    lbs.iter()
        .filter(|lb| lb["protocol"] == "http")
        .map(|lb| {
            lb["bytes_out"]
                .as_u64()
                .ok_or_else(|| format!("bytes_out is not an integer in {}", a.answer))
        })
        .sum()
}

/// DISCOVER and STATS in turn at window 16 until told to stop.
fn job_load(server: &str, stop: &AtomicBool) -> JobTotals {
    let mut totals = JobTotals::default();
    let actions = ["DISCOVER", "STATS"];
    while !stop.load(Ordering::Relaxed) {
        let action = actions[(totals.rounds % 2) as usize];
        let spec = LoadSpec {
            server: server.to_string(),
            function: FUNCTION.to_string(),
            body: Bytes::from(json!({ "hpcs_action": action }).to_string()),
            jobs: JOBS_PER_ROUND,
            window: JOB_WINDOW,
            connections: 1,
            warmup: 0,
            timeout: Duration::from_secs(120),
            tag: true,
        };
        match load::run(&spec) {
            Ok(r) => {
                totals.jobs += r.jobs;
                totals.failures += r.outcomes.failures(Expect::Pass);
            }
            Err(e) => {
                note!("soak: {action} load: {e}");
                totals.failures += 1;
            }
        }
        totals.rounds += 1;
    }
    totals
}

fn sample(worker: &HaproxyWorker, at: Duration) -> Result<Sample, SoakError> {
    let pid = worker.pid();
    let err = |problem: String| SoakError::Sample { pid, problem };
    let memory = procfs::memory(pid).map_err(|e| err(e.to_string()))?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| err(e.to_string()))?
        .count() as u64;
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .ok_or_else(|| err("no Threads line".to_string()))?;
    let haproxy = haproxy_procs::haproxy_now(&worker.haproxy().pid_file, true);
    Ok(Sample {
        seconds: at.as_secs_f64(),
        worker_rss_kib: memory.rss_kib,
        worker_fds: fds,
        worker_threads: threads,
        haproxy_rss_kib: haproxy.rss_kib,
        haproxy_processes: u64::from(haproxy.processes),
    })
}

/// Least-squares slope of `f` over the samples, per minute.
fn slope_per_minute(samples: &[Sample], f: fn(&Sample) -> u64) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mean_t = samples.iter().map(|s| s.seconds).sum::<f64>() / n;
    let mean_v = samples.iter().map(|s| f(s) as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for s in samples {
        let dt = s.seconds - mean_t;
        num += dt * (f(s) as f64 - mean_v);
        den += dt * dt;
    }
    if den == 0.0 {
        0.0
    } else {
        num / den * 60.0
    }
}

/// The `q` quantile of sorted values (nearest rank); 0 when empty.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: f64, rss: u64) -> Sample {
        Sample {
            seconds,
            worker_rss_kib: rss,
            worker_fds: 10,
            worker_threads: 5,
            haproxy_rss_kib: 0,
            haproxy_processes: 0,
        }
    }

    #[test]
    fn slopes_are_per_minute() {
        let rising: Vec<Sample> = (0..7).map(|i| at(i as f64 * 10.0, 1000 + i * 5)).collect();
        assert!((slope_per_minute(&rising, |s| s.worker_rss_kib) - 30.0).abs() < 1e-9);
        assert_eq!(slope_per_minute(&rising, |s| s.worker_fds), 0.0);
        assert_eq!(slope_per_minute(&rising[..1], |s| s.worker_rss_kib), 0.0);
    }

    #[test]
    fn rounds_alternate_node_only_and_structural_changes() {
        let body = |round| -> Value {
            serde_json::from_slice(&update_body(80, 81, &[1, 2, 3], round)).unwrap()
        };
        let web = |v: &Value| v["loadBalancers"][0].clone();
        let (r0, r1, r2, r3) = (body(0), body(1), body(2), body(3));
        // Round 1: only the third node's id changes.
        assert_eq!(web(&r0)["options"], web(&r1)["options"]);
        assert_ne!(web(&r0)["nodes"][2]["id"], web(&r1)["nodes"][2]["id"]);
        // Round 2: the client timeout changes, nodes as in round 1.
        assert_ne!(web(&r1)["options"], web(&r2)["options"]);
        assert_eq!(web(&r1)["nodes"], web(&r2)["nodes"]);
        // Round 3: nodes again.
        assert_eq!(web(&r2)["options"], web(&r3)["options"]);
        assert_ne!(web(&r2)["nodes"][2]["id"], web(&r3)["nodes"][2]["id"]);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
