//! `libra-bench --recovery`: how long a load balancer is down after its HAProxy is killed.
//! An appliance of its own (gearmand, a HAProxy-driver worker, one HTTP backend, one HTTP
//! load balancer); each round SIGKILLs HAProxy's master and its workers (the whole
//! process group: nothing of the old HAProxy can answer), then sends a new HTTP request
//! through the load balancer every few milliseconds until one is answered by the backend.
//! The time from the kill to that answer is the round's figure: the worker's watch seeing
//! the exit, the restart from the last good configuration, HAProxy's start.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::json;

use super::appliance::{HaproxyWorker, LogLevel};
use super::client::JobClient;
use super::http_backend::HttpBackend;
use super::section::{Env, Section};
use super::stats::Latency;

/// Rounds unless told otherwise.
pub const DEFAULT_ROUNDS: usize = 20;
/// The target: p99 from the kill to traffic served again, in milliseconds.
pub const TARGET_MS: f64 = 1000.0;
/// Bound on one job.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on one round's wait for traffic.
const ROUND_LIMIT: Duration = Duration::from_secs(30);
/// Between two requests while the load balancer is down.
const PROBE_EVERY: Duration = Duration::from_millis(5);
/// Bounds on one probe request.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Between one round's recovery and the next kill: crashes do not come back to back, and
/// the restarted master is watched from a moment after it serves.
const SETTLE: Duration = Duration::from_millis(300);
/// The worker's function.
const FUNCTION: &str = "lbw-recovery";
/// What the worker logs for a restart the watch triggered (term format).
const WATCH_RESTART_LINE: &str = "noticed_by: watch";

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("the HAProxy-driver worker: {0}")]
    Appliance(#[from] super::appliance::ApplianceError),
    #[error("the backend: {0}")]
    Backend(#[from] super::http_backend::BackendError),
    #[error(transparent)]
    Procs(#[from] super::procs::ProcsError),
    #[error("the job server: {0}")]
    Job(#[from] super::client::JobError),
    #[error("the UPDATE failed: {0}")]
    Update(String),
    #[error("no HAProxy master pid in {0}")]
    NoMaster(String),
    #[error("cannot kill HAProxy (pid {pid}): {source}")]
    Kill { pid: i32, source: nix::errno::Errno },
    #[error("round {round}: the load balancer did not serve again within {} s", ROUND_LIMIT.as_secs())]
    NotBack { round: usize },
}

/// Runs the section alone (`libra-bench --recovery`).
pub fn main(rounds: usize, json: bool) -> i32 {
    super::section::main_alone("--recovery", json, |env| {
        run(env, rounds).map_err(|e| e.to_string())
    })
}

/// `rounds` kills; the report of the times from kill to traffic.
pub fn run(env: &Env, rounds: usize) -> Result<Section, RecoveryError> {
    let rounds = rounds.max(1);
    let backend = HttpBackend::start("b")?;
    let port = super::procs::free_port()?;
    let worker = HaproxyWorker::start(
        env.binary,
        &env.gearmand,
        env.dir,
        FUNCTION,
        LogLevel::Warning,
    )?;
    let mut client = JobClient::connect(&env.gearmand, FUNCTION, JOB_TIMEOUT)?;
    let update = json!({"hpcs_action": "UPDATE", "loadBalancers": [{
        "protocol": "HTTP", "port": port,
        "nodes": [{"id": 1, "address": "127.0.0.1", "port": backend.port()}]}]});
    client
        .submit_pass(&Bytes::from(update.to_string()))
        .map_err(RecoveryError::Update)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let pid_file = worker.haproxy().pid_file.clone();
    let mut samples = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        std::thread::sleep(SETTLE);
        if !served(addr, backend.name()) {
            return Err(RecoveryError::NotBack { round });
        }
        let master = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .ok_or_else(|| RecoveryError::NoMaster(pid_file.display().to_string()))?;
        let killed = Instant::now();
        killpg(Pid::from_raw(master), Signal::SIGKILL).map_err(|source| RecoveryError::Kill {
            pid: master,
            source,
        })?;
        loop {
            if served(addr, backend.name()) {
                break;
            }
            if killed.elapsed() > ROUND_LIMIT {
                return Err(RecoveryError::NotBack { round });
            }
            std::thread::sleep(PROBE_EVERY);
        }
        let took = killed.elapsed();
        samples.push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
        note!(
            "recovery: round {round}: {:.1} ms",
            took.as_secs_f64() * 1e3
        );
    }
    let by_watch = std::fs::read_to_string(worker.log_file())
        .map(|log| log.matches(WATCH_RESTART_LINE).count())
        .unwrap_or(0);
    Ok(report(Latency::from_samples(&mut samples), by_watch))
}

/// One request through the load balancer, answered 200 by the backend `name`.
fn served(addr: SocketAddr, name: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
    let _ = s.set_write_timeout(Some(PROBE_TIMEOUT));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: lb\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = Vec::new();
    if s.read_to_end(&mut answer).is_err() {
        return false;
    }
    let text = String::from_utf8_lossy(&answer);
    (text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200")) && text.ends_with(name)
}

fn report(l: Latency, by_watch: usize) -> Section {
    let ms = |us: f64| us / 1000.0;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### HAProxy killed: time until traffic is served again\n"
    );
    let _ = writeln!(
        md,
        "SIGKILL to HAProxy's process group (master and workers), then a new HTTP request \
         every {} ms through the load balancer until the backend answers; {} rounds, \
         {by_watch} restarts noticed by the watch on the master.\n",
        PROBE_EVERY.as_millis(),
        l.samples
    );
    let _ = writeln!(md, "| rounds | p50 | p99 | max | target p99 |");
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        md,
        "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} ms {} |",
        l.samples,
        ms(l.p50_us),
        ms(l.p99_us),
        ms(l.max_us),
        TARGET_MS,
        if ms(l.p99_us) <= TARGET_MS {
            "(met)"
        } else {
            "(MISSED)"
        }
    );
    Section {
        markdown: md,
        json: json!({
            "section": "recovery",
            "rounds": l.samples,
            "restarts_by_watch": by_watch,
            "p50_ms": ms(l.p50_us),
            "p99_ms": ms(l.p99_us),
            "max_ms": ms(l.max_us),
            "target_p99_ms": TARGET_MS,
        }),
    }
}
