//! The load generator: submits N jobs through a job server keeping W outstanding, spread
//! over C pipelined client connections on one thread, and records every job's latency
//! (submit to WORK_COMPLETE) and outcome. Each connection answers a batch of finished
//! jobs with one write of as many new SUBMIT_JOBs, so the generator costs a few
//! microseconds of CPU per job and is not the ceiling of what it measures. Under
//! `Expect::Pass` every job carries its own tag, and an answer that does not echo its own
//! job's tag is a failure: a worker that mixed answers up cannot pass.

use std::borrow::Cow;
use std::cell::Cell;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use libra_worker::gearman::client::{Client, ClientError, Finished, JobOutcome};
use serde::{Deserialize, Serialize};

use super::procfs;
use super::stats::{self, Latency};

/// What the job's answers are expected to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// `"hpcs_response": "PASS"`; anything else is a failure.
    Pass,
    /// Any WORK_COMPLETE is a success (for workers that do not answer in JSON, such as
    /// `gearman -w`).
    Any,
}

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Job server, `host:port`.
    pub server: String,
    pub function: String,
    /// Every job's body.
    pub body: Bytes,
    /// Jobs measured.
    pub jobs: u64,
    /// Jobs outstanding at once, over all connections.
    pub window: usize,
    pub connections: usize,
    /// Jobs run first, on the same connections, and not measured.
    pub warmup: u64,
    /// Bound on the whole run, warm-up included.
    pub timeout: Duration,
    /// Give every job its own tag and count an answer that does not echo its job's tag
    /// as `mismatched` (for workers that answer with the request echoed).
    pub tag: bool,
}

/// What can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("bad load: {0}")]
    Spec(String),
    #[error("cannot start the generator's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Connect(ClientError),
    #[error("job server connection failed during the run: {0}")]
    Run(ClientError),
    #[error("only {answered} of {total} jobs (warm-up included) were answered within {timeout:?}; is a worker registered for the function?")]
    Stalled {
        answered: u64,
        total: u64,
        timeout: Duration,
    },
}

/// How the measured jobs ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    /// WORK_COMPLETE with `"hpcs_response": "PASS"`.
    pub pass: u64,
    /// WORK_COMPLETE with anything else (FAIL, or no `hpcs_response` at all).
    pub not_pass: u64,
    /// A PASS that echoed another job's tag: an answer paired with the wrong job.
    pub mismatched: u64,
    pub work_fail: u64,
    pub work_exception: u64,
}

impl Outcomes {
    fn add(&mut self, other: &Outcomes) {
        self.pass += other.pass;
        self.not_pass += other.not_pass;
        self.mismatched += other.mismatched;
        self.work_fail += other.work_fail;
        self.work_exception += other.work_exception;
    }

    fn count(&mut self, outcome: &JobOutcome, tag: Option<&str>) {
        match outcome {
            JobOutcome::Complete(data) if answer_passed(data) => match tag {
                Some(tag) if answer_tag(data).as_deref() != Some(tag) => self.mismatched += 1,
                _ => self.pass += 1,
            },
            JobOutcome::Complete(_) => self.not_pass += 1,
            JobOutcome::Fail => self.work_fail += 1,
            JobOutcome::Exception(_) => self.work_exception += 1,
        }
    }

    /// Jobs that count as failed under `expect`.
    pub fn failures(&self, expect: Expect) -> u64 {
        let gearman = self.work_fail + self.work_exception;
        match expect {
            Expect::Pass => gearman + self.not_pass + self.mismatched,
            Expect::Any => gearman,
        }
    }
}

/// Whether an answer body says `"hpcs_response": "PASS"`.
pub fn answer_passed(data: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Answer<'a> {
        #[serde(borrow, default)]
        hpcs_response: Option<Cow<'a, str>>,
    }
    serde_json::from_slice::<Answer>(data)
        .ok()
        .and_then(|a| a.hpcs_response)
        .is_some_and(|r| r == libra_worker::jobs::response::PASS)
}

/// The field each job's tag travels in; the worker echoes unknown fields.
pub const TAG_FIELD: &str = "libra_bench_tag";

/// `body` (a JSON object) with `"libra_bench_tag": "<tag>"` as its first field.
fn tagged(body: &[u8], tag: &str) -> Bytes {
    let Some(rest) = body.strip_prefix(b"{") else {
        return Bytes::copy_from_slice(body);
    };
    let mut out = Vec::with_capacity(body.len() + TAG_FIELD.len() + tag.len() + 8);
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(TAG_FIELD.as_bytes());
    out.extend_from_slice(b"\":\"");
    out.extend_from_slice(tag.as_bytes());
    out.push(b'"');
    if rest.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Bytes::from(out)
}

/// The tag an answer echoes.
fn answer_tag(data: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(data)
        .ok()?
        .get(TAG_FIELD)?
        .as_str()
        .map(String::from)
}

/// The tag of connection `conn`'s job `seq`.
fn tag_of(conn: usize, seq: u64) -> String {
    format!("{conn}-{seq}")
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub jobs: u64,
    #[serde(serialize_with = "as_secs")]
    pub elapsed: Duration,
    pub jobs_per_sec: f64,
    pub latency: Latency,
    pub outcomes: Outcomes,
    /// CPU the generator itself used during the measurement.
    #[serde(serialize_with = "as_secs")]
    pub generator_cpu: Duration,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl LoadReport {
    /// Generator CPU per job, in microseconds.
    pub fn generator_us_per_job(&self) -> f64 {
        if self.jobs == 0 {
            return 0.0;
        }
        self.generator_cpu.as_secs_f64() * 1e6 / self.jobs as f64
    }

    /// The share of one core the generator used, in percent.
    pub fn generator_core_percent(&self) -> f64 {
        let wall = self.elapsed.as_secs_f64();
        if wall > 0.0 {
            100.0 * self.generator_cpu.as_secs_f64() / wall
        } else {
            0.0
        }
    }

    pub fn to_text(&self, spec: &LoadSpec) -> String {
        let l = &self.latency;
        let o = &self.outcomes;
        format!(
            "{jobs} jobs to {f} at {s}, window {w} over {c} connection(s): {rate:.0} jobs/s in {secs:.3} s\n\
             latency: p50 {p50:.1} us, p90 {p90:.1} us, p99 {p99:.1} us (min {min:.1}, max {max:.1}, mean {mean:.1})\n\
             answers: {pass} PASS, {np} not PASS, {mm} with another job's tag; failures: {wf} WORK_FAIL, {we} WORK_EXCEPTION\n\
             generator: {gus:.2} us CPU per job, {gpc:.0}% of one core",
            jobs = self.jobs,
            f = spec.function,
            s = spec.server,
            w = spec.window,
            c = spec.connections,
            rate = self.jobs_per_sec,
            secs = self.elapsed.as_secs_f64(),
            p50 = l.p50_us,
            p90 = l.p90_us,
            p99 = l.p99_us,
            min = l.min_us,
            max = l.max_us,
            mean = l.mean_us,
            pass = o.pass,
            np = o.not_pass,
            mm = o.mismatched,
            wf = o.work_fail,
            we = o.work_exception,
            gus = self.generator_us_per_job(),
            gpc = self.generator_core_percent(),
        )
    }

    pub fn to_json(&self, spec: &LoadSpec) -> serde_json::Value {
        serde_json::json!({
            "server": spec.server,
            "function": spec.function,
            "window": spec.window,
            "connections": spec.connections,
            "warmup": spec.warmup,
            "report": self,
            "generator_us_per_job": self.generator_us_per_job(),
            "generator_core_percent": self.generator_core_percent(),
        })
    }
}

/// Runs one load on a fresh single-thread runtime (the calling thread).
pub fn run(spec: &LoadSpec) -> Result<LoadReport, LoadError> {
    if spec.jobs == 0 || spec.window == 0 || spec.connections == 0 {
        return Err(LoadError::Spec(
            "--jobs, --window and --connections must be at least 1".to_string(),
        ));
    }
    if spec.connections > spec.window {
        return Err(LoadError::Spec(format!(
            "{} connections cannot share a window of {}: every connection needs a job",
            spec.connections, spec.window
        )));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LoadError::Runtime)?;
    let answered = Cell::new(0u64);
    rt.block_on(async {
        tokio::time::timeout(spec.timeout, run_phases(spec, &answered))
            .await
            .map_err(|_| LoadError::Stalled {
                answered: answered.get(),
                total: spec.jobs + spec.warmup,
                timeout: spec.timeout,
            })?
    })
}

async fn run_phases(spec: &LoadSpec, answered: &Cell<u64>) -> Result<LoadReport, LoadError> {
    let mut clients =
        futures::future::try_join_all((0..spec.connections).map(|_| Client::connect(&spec.server)))
            .await
            .map_err(LoadError::Connect)?;
    let shares = split(spec.window, spec.connections);
    let quota = Cell::new(spec.warmup);
    if spec.warmup > 0 {
        phase(spec, &mut clients, &shares, &quota, answered, false).await?;
    }
    quota.set(spec.jobs);
    let cpu_before = procfs::thread_cpu().unwrap_or_default();
    let started = Instant::now();
    let tallies = phase(spec, &mut clients, &shares, &quota, answered, true).await?;
    let elapsed = started.elapsed();
    let generator_cpu = procfs::thread_cpu()
        .unwrap_or_default()
        .saturating_sub(cpu_before);
    let mut outcomes = Outcomes::default();
    let mut samples = Vec::with_capacity(usize::try_from(spec.jobs).unwrap_or(0));
    for t in tallies {
        outcomes.add(&t.outcomes);
        samples.extend(t.samples);
    }
    let jobs = samples.len() as u64;
    Ok(LoadReport {
        jobs,
        elapsed,
        jobs_per_sec: stats::rate(jobs, elapsed),
        latency: Latency::from_samples(&mut samples),
        outcomes,
        generator_cpu,
    })
}

/// Splits `window` slots over `n` connections as evenly as possible.
fn split(window: usize, n: usize) -> Vec<usize> {
    (0..n)
        .map(|i| window / n + usize::from(i < window % n))
        .collect()
}

/// Runs every connection until the shared quota is used up and all are answered.
async fn phase(
    spec: &LoadSpec,
    clients: &mut [Client],
    shares: &[usize],
    quota: &Cell<u64>,
    answered: &Cell<u64>,
    record: bool,
) -> Result<Vec<Tally>, LoadError> {
    let drives = clients
        .iter_mut()
        .zip(shares)
        .enumerate()
        .map(|(conn, (client, &share))| {
            let job = Jobs {
                function: &spec.function,
                body: &spec.body,
                tag: spec.tag.then_some(conn),
            };
            drive(client, job, share, quota, answered, record)
        });
    futures::future::try_join_all(drives)
        .await
        .map_err(LoadError::Run)
}

/// One connection's share of a phase.
#[derive(Default)]
struct Tally {
    samples: Vec<u64>,
    outcomes: Outcomes,
}

/// Takes up to `want` jobs from the shared quota.
fn take(quota: &Cell<u64>, want: usize) -> usize {
    let n = quota.get().min(want as u64);
    quota.set(quota.get() - n);
    // n <= want, so it fits.
    n as usize
}

/// Submit times of one phase, indexed by the client's sequence number minus the first.
struct SendTimes {
    first_seq: Option<u64>,
    at: Vec<Instant>,
}

impl SendTimes {
    fn get(&self, seq: u64) -> Option<Instant> {
        let first = self.first_seq?;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.at.get(i).copied()
    }
}

/// What one connection submits: the function, the body, and (when tagging) the
/// connection's number, which with the job's sequence number makes its tag.
#[derive(Clone, Copy)]
struct Jobs<'a> {
    function: &'a str,
    body: &'a Bytes,
    tag: Option<usize>,
}

async fn submit(
    client: &mut Client,
    jobs: Jobs<'_>,
    n: usize,
    times: &mut SendTimes,
) -> Result<(), ClientError> {
    if n == 0 {
        return Ok(());
    }
    let now = Instant::now();
    for _ in 0..n {
        let body = match jobs.tag {
            Some(conn) => tagged(jobs.body, &tag_of(conn, client.next_seq())),
            None => jobs.body.clone(),
        };
        let seq = client.feed(jobs.function, body).await?;
        times.first_seq.get_or_insert(seq);
        times.at.push(now);
    }
    // One write for the whole batch.
    client.flush().await
}

async fn drive(
    client: &mut Client,
    jobs: Jobs<'_>,
    share: usize,
    quota: &Cell<u64>,
    answered: &Cell<u64>,
    record: bool,
) -> Result<Tally, ClientError> {
    let mut tally = Tally::default();
    let mut times = SendTimes {
        first_seq: None,
        at: Vec::new(),
    };
    let first = take(quota, share);
    submit(client, jobs, first, &mut times).await?;
    while client.outstanding() > 0 {
        let mut next: Option<Finished> = Some(client.next_finished().await?);
        let mut done = 0;
        while let Some(finished) = next.take() {
            let now = Instant::now();
            if record {
                if let Some(sent) = times.get(finished.seq) {
                    let ns = now.duration_since(sent).as_nanos();
                    tally.samples.push(u64::try_from(ns).unwrap_or(u64::MAX));
                }
                let tag = jobs.tag.map(|conn| tag_of(conn, finished.seq));
                tally.outcomes.count(&finished.outcome, tag.as_deref());
            }
            done += 1;
            // Take every answer that is already here before writing the next batch.
            if client.outstanding() > 0 {
                if let Some(more) = client.next_finished().now_or_never() {
                    next = Some(more?);
                }
            }
        }
        answered.set(answered.get() + done as u64);
        let refill = take(quota, done);
        submit(client, jobs, refill, &mut times).await?;
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_split_evenly() {
        assert_eq!(split(64, 1), vec![64]);
        assert_eq!(split(64, 3), vec![22, 21, 21]);
        assert_eq!(split(4, 4), vec![1, 1, 1, 1]);
    }

    #[test]
    fn quota_is_shared_and_never_overdrawn() {
        let q = Cell::new(5);
        assert_eq!(take(&q, 3), 3);
        assert_eq!(take(&q, 3), 2);
        assert_eq!(take(&q, 3), 0);
    }

    #[test]
    fn pass_is_read_from_the_answer() {
        assert!(answer_passed(
            br#"{"hpcs_action":"DISCOVER","hpcs_response":"PASS"}"#
        ));
        assert!(!answer_passed(
            br#"{"hpcs_response":"FAIL","hpcs_error":"x"}"#
        ));
        assert!(!answer_passed(br#"{"hpcs_action":"DISCOVER"}"#));
        assert!(!answer_passed(b"not json"));
        let mut o = Outcomes::default();
        o.count(&JobOutcome::Complete(Bytes::from_static(b"{}")), None);
        o.count(&JobOutcome::Fail, None);
        assert_eq!(o.failures(Expect::Pass), 2);
        assert_eq!(o.failures(Expect::Any), 1);
    }

    #[test]
    fn an_answer_with_another_jobs_tag_is_a_failure() {
        let body = tagged(br#"{"hpcs_action":"DISCOVER"}"#, &tag_of(1, 7));
        assert_eq!(
            &body[..],
            br#"{"libra_bench_tag":"1-7","hpcs_action":"DISCOVER"}"#
        );
        assert_eq!(&tagged(b"{}", "x")[..], br#"{"libra_bench_tag":"x"}"#);
        let answer = |tag: &str| {
            JobOutcome::Complete(Bytes::from(format!(
                r#"{{"libra_bench_tag":"{tag}","hpcs_response":"PASS"}}"#
            )))
        };
        let mut o = Outcomes::default();
        o.count(&answer("1-7"), Some("1-7"));
        o.count(&answer("1-8"), Some("1-7"));
        o.count(
            &JobOutcome::Complete(Bytes::from_static(br#"{"hpcs_response":"PASS"}"#)),
            Some("1-7"),
        );
        assert_eq!((o.pass, o.mismatched), (1, 2));
        assert_eq!(o.failures(Expect::Pass), 2);
    }

    #[test]
    fn measures_every_job_through_a_real_gearmand() {
        use crate::procs::{start_c_worker, wait_registered, Gearmand};
        let dir = tempfile::tempdir().unwrap();
        let g = Gearmand::start(dir.path(), 1).unwrap();
        let mut w = start_c_worker(&g, "echo", dir.path()).unwrap();
        wait_registered(&g.addr(), "echo", 1, &mut w).unwrap();
        let spec = LoadSpec {
            server: g.addr(),
            function: "echo".to_string(),
            body: Bytes::from_static(br#"{"hpcs_action":"DISCOVER","hpcs_response":"PASS"}"#),
            jobs: 300,
            window: 8,
            connections: 3,
            warmup: 20,
            timeout: Duration::from_secs(60),
            tag: false,
        };
        let r = run(&spec).unwrap();
        assert_eq!(r.jobs, 300, "warm-up jobs are not measured");
        assert_eq!(r.latency.samples, 300);
        // `gearman -w` answers every job with an empty WORK_COMPLETE: not a PASS.
        assert_eq!(r.outcomes.not_pass, 300);
        assert_eq!(r.outcomes.failures(Expect::Any), 0);
        assert_eq!(r.outcomes.failures(Expect::Pass), 300);
        assert!(r.latency.min_us > 0.0 && r.latency.p50_us <= r.latency.p99_us);
        assert!(r.jobs_per_sec > 0.0);
        // Nobody serves this function: the run stalls and says so.
        let stalled = LoadSpec {
            function: "nobody".to_string(),
            jobs: 2,
            window: 1,
            connections: 1,
            warmup: 0,
            timeout: Duration::from_millis(300),
            ..spec
        };
        assert!(matches!(
            run(&stalled),
            Err(LoadError::Stalled {
                answered: 0,
                total: 2,
                ..
            })
        ));
    }

    #[test]
    fn refuses_a_window_smaller_than_the_connections() {
        let spec = LoadSpec {
            server: "127.0.0.1:1".to_string(),
            function: "f".to_string(),
            body: Bytes::new(),
            jobs: 1,
            window: 1,
            connections: 2,
            warmup: 0,
            timeout: Duration::from_secs(1),
            tag: false,
        };
        assert!(matches!(run(&spec), Err(LoadError::Spec(_))));
    }
}
