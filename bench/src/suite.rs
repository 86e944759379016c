//! `libra-bench --suite`: gearmand on a free port, the C worker (`gearman -w`, which
//! does no work) and libra-worker (null driver) driven by the same generator, every
//! measurement repeated interleaved (median reported), printed as markdown: throughput,
//! latency, CPU per job, generator capacity, log level, metrics, prefetch, memory; unless
//! `--no-haproxy`, STATS against a HAProxy-driver worker, then UPDATE latency and zero-drop.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use libra_worker::gearman::client::{Client, JobOutcome};
use serde::Serialize;
use serde_json::json;

use super::appliance::{HaproxyWorker, LogLevel};
use super::load::{self, Expect, LoadError, LoadReport, LoadSpec};
use super::procfs::{self, Memory, ProcfsError};
use super::procs::{self, Gearmand, ProcsError, Running};
use super::section::Env;
use super::stats;
use super::BenchArgs;

/// gearmand I/O threads unless `--gearmand-threads` says otherwise.
pub const DEFAULT_GEARMAND_THREADS: u32 = 1;
/// Measured jobs of a window-1 run (before `--scale`).
pub const JOBS_WINDOW_1: u64 = 4_000;
/// Measured jobs of a window-64 run (before `--scale`).
pub const JOBS_WINDOW_64: u64 = 20_000;
/// The STATS rows of a HAProxy-driver worker run this fraction of the jobs.
const HAPROXY_STATS_JOB_DIVISOR: u64 = 5;
/// Bound on one run.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on a single setup or probe job.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// What stops the suite.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("bad suite arguments: {0}")]
    Args(String),
    #[error("cannot create the temporary directory {path}: {source}")]
    TempDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Procs(#[from] ProcsError),
    #[error("{what}: {source}")]
    Load { what: String, source: LoadError },
    #[error("reading /proc: {0}")]
    Procfs(#[from] ProcfsError),
    #[error("{what} failed: {problem}")]
    Probe { what: String, problem: String },
    #[error("the HAProxy-driver STATS worker: {0}")]
    Appliance(#[from] super::appliance::ApplianceError),
    #[error("UPDATE latency: {0}")]
    UpdateLatency(#[from] super::update_latency::UpdateLatencyError),
    #[error("zero-drop: {0}")]
    ZeroDrop(#[from] super::zero_drop::ZeroDropError),
}

/// The worker the STATS rows run against.
enum StatsWorker {
    /// Started from the user's `--stats-config`.
    FromConfig(Running),
    /// The default: a HAProxy-driver worker of the suite's own.
    Appliance(Box<HaproxyWorker>),
}

impl StatsWorker {
    fn pid(&self) -> u32 {
        match self {
            StatsWorker::FromConfig(r) => r.pid(),
            StatsWorker::Appliance(a) => a.pid(),
        }
    }
}

/// A directory removed when dropped, unless told to keep it.
pub(crate) struct TempDir {
    pub(crate) path: PathBuf,
    pub(crate) keep: bool,
}

impl TempDir {
    pub(crate) fn create() -> Result<TempDir, SuiteError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("libra-bench-{}-{nanos:09}", std::process::id()));
        std::fs::create_dir(&path).map_err(|source| SuiteError::TempDir {
            path: path.display().to_string(),
            source,
        })?;
        Ok(TempDir { path, keep: false })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs the suite; returns the exit code.
pub fn main(args: &BenchArgs) -> i32 {
    // Looked up first: without it there is nothing to run and no directory to keep.
    let binary = match procs::worker_binary() {
        Ok(b) => b,
        Err(e) => {
            note!("libra-bench: suite: {e}");
            return 1;
        }
    };
    let mut dir = match TempDir::create() {
        Ok(d) => d,
        Err(e) => {
            note!("libra-bench: {e}");
            return 1;
        }
    };
    let result = run(args, binary, &dir.path);
    match result {
        Ok(report) => {
            out!("{}", report.markdown.trim_end());
            if args.json {
                out!("{}", report.json);
            }
            if let Some(out) = &args.out {
                if let Err(e) = std::fs::write(out, &report.markdown) {
                    note!("libra-bench: cannot write {}: {e}", out.display());
                    return 1;
                }
            }
            0
        }
        Err(e) => {
            dir.keep = true;
            note!("libra-bench: suite: {e}");
            note!("libra-bench: logs kept in {}", dir.path.display());
            1
        }
    }
}

/// The suite's output.
pub struct SuiteReport {
    pub markdown: String,
    pub json: serde_json::Value,
}

/// One configuration of the libra-worker under test.
#[derive(Debug, Clone)]
struct Variant {
    function: &'static str,
    prefetch: usize,
    level: &'static str,
    metrics: bool,
}

/// The worker as it ships (prefetch 16, the default), log level warning.
const MAIN: Variant = Variant {
    function: "lbw-main",
    prefetch: libra_worker::config::DEFAULT_PREFETCH,
    level: "warning",
    metrics: true,
};

/// A measurement: what runs, against which worker processes.
struct Case<'a> {
    label: String,
    function: &'a str,
    workers: Vec<u32>,
    body: &'a Bytes,
    window: usize,
    connections: usize,
    jobs: u64,
    expect: Expect,
}

/// The median run of a case, and every run's throughput.
#[derive(Debug, Clone, Serialize)]
pub struct Measure {
    pub label: String,
    pub window: usize,
    pub connections: usize,
    pub load: LoadReport,
    pub gearmand_us_per_job: f64,
    pub worker_us_per_job: f64,
    /// Share of one core over the measured run, in percent.
    pub gearmand_core_percent: f64,
    pub worker_core_percent: f64,
    /// Every run's jobs/s and p50, in run order (rep 1 first).
    pub rates: Vec<f64>,
    pub p50s: Vec<f64>,
}

impl Measure {
    fn rate(&self) -> f64 {
        self.load.jobs_per_sec
    }
    fn p50(&self) -> f64 {
        self.load.latency.p50_us
    }
    fn p99(&self) -> f64 {
        self.load.latency.p99_us
    }
    fn spread(&self) -> String {
        let lo = self.rates.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = self.rates.iter().copied().fold(0.0, f64::max);
        format!("{lo:.0}–{hi:.0}")
    }
}

struct Suite<'a> {
    args: &'a BenchArgs,
    dir: &'a Path,
    binary: PathBuf,
    gearmand: Gearmand,
}

impl Suite<'_> {
    fn scaled(&self, jobs: u64) -> u64 {
        ((jobs as f64 * self.args.scale).round() as u64).max(10)
    }

    fn jobs_for(&self, window: usize) -> u64 {
        if window <= 1 {
            self.scaled(JOBS_WINDOW_1)
        } else {
            self.scaled(JOBS_WINDOW_64)
        }
    }

    /// Starts libra-worker in `v`'s configuration and waits until it has registered.
    fn start_ours(&self, v: &Variant) -> Result<Running, SuiteError> {
        let listen = if v.metrics {
            format!("127.0.0.1:{}", procs::free_port()?)
        } else {
            String::new()
        };
        let config = format!(
            "[gearman]\nservers = [\"{addr}\"]\nreconnect_sleep = 1\nprefetch = {pf}\n\n\
             [worker]\nfunction = \"{f}\"\ndriver = \"null\"\n\n\
             [log]\nlevel = \"{level}\"\nfile = \"{dir}/{f}.log\"\n\n\
             [haproxy]\nstate_dir = \"{dir}/{f}-state\"\nbind_address = \"127.0.0.1\"\n\n\
             [metrics]\nlisten = \"{listen}\"\n",
            addr = self.gearmand.addr(),
            pf = v.prefetch,
            f = v.function,
            level = v.level,
            dir = self.dir.display(),
        );
        let path = self.dir.join(format!("{}.toml", v.function));
        std::fs::write(&path, config).map_err(|source| SuiteError::Write {
            path: path.display().to_string(),
            source,
        })?;
        let mut w = procs::start_worker(
            &self.binary,
            &path,
            &[],
            &self.dir.join(format!("{}.out", v.function)),
        )?;
        procs::wait_registered(&self.gearmand.addr(), v.function, 1, &mut w)?;
        Ok(w)
    }

    /// Starts a worker from the user's configuration, attached to this gearmand.
    fn start_from_config(&self, config: &Path, function: &str) -> Result<Running, SuiteError> {
        let env = [
            ("GEARMAN__SERVERS", self.gearmand.addr()),
            ("WORKER__FUNCTION", function.to_string()),
            ("LOG__LEVEL", "warning".to_string()),
            (
                "LOG__FILE",
                self.dir
                    .join(format!("{function}.log"))
                    .display()
                    .to_string(),
            ),
            ("METRICS__LISTEN", String::new()),
        ]
        .map(|(k, v)| (format!("{}__{k}", libra_worker::config::ENV_PREFIX), v));
        let mut w = procs::start_worker(
            &self.binary,
            config,
            &env,
            &self.dir.join(format!("{function}.out")),
        )?;
        procs::wait_registered(&self.gearmand.addr(), function, 1, &mut w)?;
        Ok(w)
    }

    fn start_c_workers(&self, function: &str, n: usize) -> Result<Vec<Running>, SuiteError> {
        let mut all = Vec::with_capacity(n);
        for _ in 0..n {
            all.push(procs::start_c_worker(&self.gearmand, function, self.dir)?);
        }
        if let Some(last) = all.last_mut() {
            procs::wait_registered(&self.gearmand.addr(), function, n, last)?;
        }
        Ok(all)
    }

    fn spec(&self, case: &Case, jobs: u64) -> LoadSpec {
        LoadSpec {
            server: self.gearmand.addr(),
            function: case.function.to_string(),
            body: case.body.clone(),
            jobs,
            window: case.window,
            connections: case.connections,
            warmup: 0,
            timeout: RUN_TIMEOUT,
            tag: case.expect == Expect::Pass,
        }
    }

    /// One warm-up run and one measured run of `case`.
    fn measure_once(&self, case: &Case) -> Result<Measure, SuiteError> {
        let fail = |source| SuiteError::Load {
            what: case.label.clone(),
            source,
        };
        let warmup = (case.jobs / 10).max(case.window as u64 * 4);
        load::run(&self.spec(case, warmup)).map_err(fail)?;
        let cpu = |pids: &[u32]| -> Result<Duration, ProcfsError> {
            pids.iter().map(|&p| procfs::process_cpu(p)).sum()
        };
        let g0 = procfs::process_cpu(self.gearmand.process.pid())?;
        let w0 = cpu(&case.workers)?;
        let report = load::run(&self.spec(case, case.jobs)).map_err(fail)?;
        let g1 = procfs::process_cpu(self.gearmand.process.pid())?;
        let w1 = cpu(&case.workers)?;
        let per_job = |d: Duration| d.as_secs_f64() * 1e6 / report.jobs.max(1) as f64;
        let wall = report.elapsed.as_secs_f64().max(1e-9);
        let percent = |d: Duration| 100.0 * d.as_secs_f64() / wall;
        let failures = report.outcomes.failures(case.expect);
        if failures > 0 {
            return Err(SuiteError::Probe {
                what: case.label.clone(),
                problem: format!(
                    "{failures} of {} jobs failed: {:?}",
                    report.jobs, report.outcomes
                ),
            });
        }
        Ok(Measure {
            label: case.label.clone(),
            window: case.window,
            connections: case.connections,
            gearmand_us_per_job: per_job(g1.saturating_sub(g0)),
            worker_us_per_job: per_job(w1.saturating_sub(w0)),
            gearmand_core_percent: percent(g1.saturating_sub(g0)),
            worker_core_percent: percent(w1.saturating_sub(w0)),
            load: report,
            rates: Vec::new(),
            p50s: Vec::new(),
        })
    }

    /// Runs every case `reps` times, interleaved so that a slow moment of the machine
    /// hits every case alike; returns each case's median run (by throughput).
    fn measure(&self, cases: &[Case], reps: usize) -> Result<Vec<Measure>, SuiteError> {
        let mut runs: Vec<Vec<Measure>> = cases.iter().map(|_| Vec::new()).collect();
        for rep in 0..reps {
            for (case, out) in cases.iter().zip(runs.iter_mut()) {
                let m = self.measure_once(case)?;
                note!(
                    "  [{}/{}] {:<40} {:>8.0} jobs/s  p50 {:>7.1} us  p99 {:>7.1} us",
                    rep + 1,
                    reps,
                    case.label,
                    m.rate(),
                    m.p50(),
                    m.p99()
                );
                out.push(m);
            }
        }
        runs.into_iter()
            .map(|mut all| {
                let rates: Vec<f64> = all.iter().map(Measure::rate).collect();
                let i = stats::median_index(&rates)
                    .ok_or_else(|| SuiteError::Args("--reps must be at least 1".to_string()))?;
                let p50s: Vec<f64> = all.iter().map(Measure::p50).collect();
                let mut m = all.swap_remove(i);
                m.rates = rates;
                m.p50s = p50s;
                Ok(m)
            })
            .collect()
    }
}

/// Submits one job and returns the answer's JSON.
fn one_job(server: &str, function: &str, body: Bytes) -> Result<serde_json::Value, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let outcome = rt
        .block_on(async {
            let mut c = Client::connect(server).await?;
            c.submit(function, body, PROBE_TIMEOUT).await
        })
        .map_err(|e| e.to_string())?;
    match outcome {
        JobOutcome::Complete(data) => {
            serde_json::from_slice(&data).map_err(|e| format!("answer is not JSON: {e}"))
        }
        JobOutcome::Fail => Err("WORK_FAIL".to_string()),
        JobOutcome::Exception(d) => Err(format!("WORK_EXCEPTION {}", String::from_utf8_lossy(&d))),
    }
}

fn action_body(action: &str) -> Bytes {
    Bytes::from(json!({ "hpcs_action": action }).to_string())
}

/// Static facts about the machine and the programs.
fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let gearmand = std::process::Command::new("gearmand")
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    json!({
        "nproc": nproc,
        "cpu": cpu,
        "kernel": kernel,
        "gearmand": gearmand,
        "worker": libra_worker::jobs::discover::release(),
    })
}

/// Ratios of runs made side by side (same repetition), as median, lowest and highest:
/// steadier than the ratio of two medians on a machine whose load changes.
fn paired(ours: &[f64], theirs: &[f64]) -> (f64, f64, f64) {
    let r: Vec<f64> = ours
        .iter()
        .zip(theirs)
        .map(|(&o, &t)| ratio(o, t))
        .collect();
    let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = r.iter().copied().fold(0.0, f64::max);
    let mid = stats::median_index(&r).map_or(0.0, |i| r[i]);
    (mid, lo, hi)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// The whole suite.
pub fn run(args: &BenchArgs, binary: PathBuf, dir: &Path) -> Result<SuiteReport, SuiteError> {
    let quick;
    let args = if args.quick {
        quick = BenchArgs {
            reps: 1,
            scale: 0.2,
            updates: Some(args.update_count()),
            stats_config: args.stats_config.clone(),
            stats_setup: args.stats_setup.clone(),
            out: args.out.clone(),
            server: None,
            function: None,
            action: None,
            file: None,
            ..*args
        };
        &quick
    } else {
        args
    };
    if args.reps == 0 || !args.scale.is_finite() || args.scale <= 0.0 {
        return Err(SuiteError::Args(
            "--reps must be at least 1 and --scale above 0".to_string(),
        ));
    }
    let gearmand = Gearmand::start(dir, args.gearmand_threads)?;
    let suite = Suite {
        args,
        dir,
        binary,
        gearmand,
    };
    let s = &suite;
    let addr = s.gearmand.addr();
    let discover = action_body("DISCOVER");
    let stats_body = action_body("STATS");
    let mut notes: Vec<String> = Vec::new();
    let mut md = String::new();
    let machine = machine();
    note!(
        "bench suite: gearmand at {addr} (--threads={}), work in {}",
        args.gearmand_threads,
        dir.display()
    );

    // Main comparison: the C worker and ours, both registered, measured in turn.
    let c_workers = s.start_c_workers("cworker", 1)?;
    let c_pid = c_workers[0].pid();
    let main = s.start_ours(&MAIN)?;
    std::thread::sleep(Duration::from_millis(200));
    let idle_ours = procfs::memory(main.pid())?;
    let idle_c = procfs::memory(c_pid)?;

    let stats_worker =
        match &args.stats_config {
            Some(path) => Some(StatsWorker::FromConfig(
                s.start_from_config(path, "lbw-stats")?,
            )),
            None if !args.no_haproxy => Some(StatsWorker::Appliance(Box::new(
                HaproxyWorker::start(&s.binary, &addr, dir, "lbw-stats", LogLevel::Warning)?,
            ))),
            None => None,
        };
    let stats_function = if stats_worker.is_some() {
        "lbw-stats"
    } else {
        MAIN.function
    };
    let stats_pid = stats_worker.as_ref().map_or(main.pid(), StatsWorker::pid);
    let setup = match (&args.stats_setup, &stats_worker) {
        (Some(setup), _) => Some((
            setup.display().to_string(),
            std::fs::read(setup).map_err(|e| SuiteError::Probe {
                what: format!("reading {}", setup.display()),
                problem: e.to_string(),
            })?,
        )),
        (None, Some(StatsWorker::Appliance(_))) => {
            // Two load balancers of two nodes each on closed loopback ports: STATS only
            // reads HAProxy's stats socket.
            let layout =
                super::updates::Appliance::two_lbs(procs::free_port()?, procs::free_port()?, 2, 1);
            Some((
                "an UPDATE of 2 load balancers (HTTP, TCP) of 2 nodes each".to_string(),
                layout.update_body().to_vec(),
            ))
        }
        (None, _) => None,
    };
    if let Some((what, body)) = setup {
        let answer = one_job(&addr, stats_function, Bytes::from(body)).map_err(|problem| {
            SuiteError::Probe {
                what: "the STATS set-up job".to_string(),
                problem,
            }
        })?;
        let field = |name: &str| {
            answer
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let whose = match &stats_worker {
            Some(StatsWorker::Appliance(_)) => {
                "a HAProxy-driver worker (managed HAProxy, log level warning, metrics off)"
            }
            _ => "the --stats-config worker",
        };
        notes.push(format!(
            "STATS rows: {whose}, set up with {what}: {} {}",
            field("hpcs_response"),
            field("hpcs_error")
        ));
    }
    let probe = one_job(&addr, stats_function, stats_body.clone()).map_err(|problem| {
        SuiteError::Probe {
            what: "the STATS probe job".to_string(),
            problem,
        }
    })?;
    let stats_ok = load::answer_passed(probe.to_string().as_bytes());
    if !stats_ok {
        let error = probe
            .get("hpcs_error")
            .and_then(|v| v.as_str())
            .unwrap_or("no hpcs_error");
        notes.push(match &args.stats_config {
            Some(config) => format!(
                "STATS rows for our worker skipped: the worker of {} answered STATS with FAIL (\"{error}\").",
                config.display()
            ),
            None if !args.no_haproxy => format!(
                "STATS rows for our worker skipped: the HAProxy-driver worker answered STATS with FAIL (\"{error}\")."
            ),
            None => format!(
                "STATS rows for our worker skipped: the null-driver worker answers STATS with FAIL \
                 (\"{error}\"); --no-haproxy was given."
            ),
        });
    }

    note!("main table: C worker vs libra-worker");
    let mut main_cases = Vec::new();
    for window in [1usize, 64] {
        for (action, body) in [("DISCOVER", &discover), ("STATS", &stats_body)] {
            let jobs = s.jobs_for(window);
            main_cases.push(Case {
                label: format!("C worker, window {window}, {action}"),
                function: "cworker",
                workers: vec![c_pid],
                body,
                window,
                connections: 1,
                jobs,
                expect: Expect::Any,
            });
            if action == "DISCOVER" || stats_ok {
                main_cases.push(Case {
                    label: format!("libra-worker, window {window}, {action}"),
                    function: if action == "STATS" {
                        stats_function
                    } else {
                        MAIN.function
                    },
                    workers: vec![if action == "STATS" {
                        stats_pid
                    } else {
                        main.pid()
                    }],
                    body,
                    window,
                    connections: 1,
                    // A STATS that reads HAProxy costs about 0.5 ms on the driver thread:
                    // a fifth of the jobs still makes a run of a few seconds.
                    jobs: if action == "STATS" && stats_worker.is_some() {
                        (jobs / HAPROXY_STATS_JOB_DIVISOR).max(10)
                    } else {
                        jobs
                    },
                    expect: Expect::Pass,
                });
            }
        }
    }
    if stats_ok && stats_worker.is_some() {
        notes.push(format!(
            "our STATS rows run 1/{HAPROXY_STATS_JOB_DIVISOR} of the jobs ({} at window 1, {} at window 64): \
             each reads HAProxy's sockets on the one driver thread.",
            (s.jobs_for(1) / HAPROXY_STATS_JOB_DIVISOR).max(10),
            (s.jobs_for(64) / HAPROXY_STATS_JOB_DIVISOR).max(10)
        ));
    }
    let main_runs = s.measure(&main_cases, args.reps)?;
    let loaded_ours = procfs::memory(main.pid())?;
    let loaded_c = procfs::memory(c_pid)?;
    drop(stats_worker);
    let find = |runs: &[Measure], label: &str| runs.iter().find(|m| m.label == label).cloned();

    let _ = writeln!(
        md,
        "## libra-worker vs the C worker (`gearman -w`, which does no work), same generator, same gearmand\n"
    );
    let _ = writeln!(
        md,
        "Machine: {} x {} (nproc {}), Linux {}; {} (`--threads={}`); {}.\n",
        machine["nproc"],
        machine["cpu"].as_str().unwrap_or(""),
        machine["nproc"],
        machine["kernel"].as_str().unwrap_or(""),
        machine["gearmand"].as_str().unwrap_or(""),
        args.gearmand_threads,
        machine["worker"].as_str().unwrap_or(""),
    );
    let _ = writeln!(
        md,
        "Every number is the median (by jobs/s) of {} interleaved runs; window 1: {} jobs, window 64: {} jobs \
         per run after a warm-up. Ours: null driver, log level warning, metrics endpoint on, prefetch 16 (the default). \
         Latency = submit to WORK_COMPLETE at the client, in microseconds.\n",
        args.reps,
        s.jobs_for(1),
        s.jobs_for(64)
    );
    let _ = writeln!(
        md,
        "| load | C jobs/s | ours jobs/s | ratio | C p50 | our p50 | p50 ratio | C p99 | our p99 |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut targets = Vec::new();
    for window in [1usize, 64] {
        for action in ["DISCOVER", "STATS"] {
            let c = find(&main_runs, &format!("C worker, window {window}, {action}"));
            let o = find(
                &main_runs,
                &format!("libra-worker, window {window}, {action}"),
            );
            let Some(c) = c else { continue };
            match o {
                Some(o) => {
                    let _ = writeln!(
                        md,
                        "| window {window}, {action} | {:.0} | {:.0} | {:.2}x | {:.0} | {:.0} | {:.2}x | {:.0} | {:.0} |",
                        c.rate(),
                        o.rate(),
                        ratio(o.rate(), c.rate()),
                        c.p50(),
                        o.p50(),
                        ratio(o.p50(), c.p50()),
                        c.p99(),
                        o.p99()
                    );
                    if action == "DISCOVER" && window == 64 {
                        let (mid, lo, hi) = paired(&o.rates, &c.rates);
                        targets.push(format!(
                            "window 64 jobs/s >= 5x the C worker: {:.2}x (median of the {} side-by-side pairs; \
                             range {lo:.2}x–{hi:.2}x; ratio of the medians {:.2}x): {}",
                            mid,
                            o.rates.len(),
                            ratio(o.rate(), c.rate()),
                            if mid >= 5.0 { "met" } else { "MISSED" }
                        ));
                    }
                    if action == "DISCOVER" && window == 1 {
                        let (mid, lo, hi) = paired(&o.p50s, &c.p50s);
                        targets.push(format!(
                            "window 1 p50 <= 1.0x the C worker: {:.2}x (median of the {} side-by-side pairs; \
                             range {lo:.2}x–{hi:.2}x; ratio of the medians {:.2}x): {}",
                            mid,
                            o.p50s.len(),
                            ratio(o.p50(), c.p50()),
                            if mid <= 1.0 { "met" } else { "MISSED" }
                        ));
                    }
                }
                None => {
                    let _ = writeln!(
                        md,
                        "| window {window}, {action} | {:.0} | skipped | | {:.0} | skipped | | {:.0} | skipped |",
                        c.rate(),
                        c.p50(),
                        c.p99()
                    );
                }
            }
        }
    }
    let _ = writeln!(md);
    for t in &targets {
        let _ = writeln!(md, "- Target: {t}");
    }
    for n in &notes {
        let _ = writeln!(md, "- Note: {n}");
    }
    let _ = writeln!(md);

    let _ = writeln!(
        md,
        "### Where the CPU goes (CPU time per job, microseconds, from /proc/<pid>/task/*/schedstat)\n"
    );
    let _ = writeln!(
        md,
        "| run | jobs/s (min–max of runs) | gearmand | worker | generator | busy: gearmand + worker + generator = total (% of one core) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for m in &main_runs {
        let gen = m.load.generator_core_percent();
        let _ = writeln!(
            md,
            "| {} | {:.0} ({}) | {:.1} | {:.1} | {:.1} | {:.0} + {:.0} + {:.0} = {:.0}% |",
            m.label,
            m.rate(),
            m.spread(),
            m.gearmand_us_per_job,
            m.worker_us_per_job,
            m.load.generator_us_per_job(),
            m.gearmand_core_percent,
            m.worker_core_percent,
            gen,
            m.gearmand_core_percent + m.worker_core_percent + gen
        );
    }
    let _ = writeln!(md);

    // Generator capacity: many C workers, many connections.
    note!("generator capacity: 4 C workers, 4 connections, window 256");
    let c4 = s.start_c_workers("cworker4", 4)?;
    let cap_case = Case {
        label: "generator vs 4 C workers, 4 connections, window 256".to_string(),
        function: "cworker4",
        workers: c4.iter().map(Running::pid).collect(),
        body: &discover,
        window: 256,
        connections: 4,
        jobs: s.jobs_for(64),
        expect: Expect::Any,
    };
    let cap = s.measure(std::slice::from_ref(&cap_case), args.reps)?;
    drop(c4);

    // Log level: warning (the table above) against the default, info.
    note!("log level: warning vs info");
    let info_variant = Variant {
        function: "lbw-info",
        level: "info",
        ..MAIN
    };
    let info = s.start_ours(&info_variant)?;
    let mut cases = Vec::new();
    for window in [1usize, 64] {
        for (v, pid) in [(&MAIN, main.pid()), (&info_variant, info.pid())] {
            cases.push(Case {
                label: format!("log {}, window {window}", v.level),
                function: v.function,
                workers: vec![pid],
                body: &discover,
                window,
                connections: 1,
                jobs: s.jobs_for(window),
                expect: Expect::Pass,
            });
        }
    }
    let log_runs = s.measure(&cases, args.reps)?;
    drop(info);
    let _ = writeln!(
        md,
        "### Log level (DISCOVER; info logs one line per job to a file)\n"
    );
    let _ = writeln!(
        md,
        "| window | warning jobs/s | info jobs/s | info/warning | warning p50 | info p50 | worker CPU/job warning | info |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for window in [1usize, 64] {
        if let (Some(w), Some(i)) = (
            find(&log_runs, &format!("log warning, window {window}")),
            find(&log_runs, &format!("log info, window {window}")),
        ) {
            let _ = writeln!(
                md,
                "| {window} | {:.0} | {:.0} | {:.2}x | {:.0} | {:.0} | {:.1} us | {:.1} us |",
                w.rate(),
                i.rate(),
                ratio(i.rate(), w.rate()),
                w.p50(),
                i.p50(),
                w.worker_us_per_job,
                i.worker_us_per_job
            );
        }
    }
    let _ = writeln!(md);

    // Metrics endpoint on (the table above) and off.
    note!("metrics endpoint: on vs off");
    let off_variant = Variant {
        function: "lbw-nometrics",
        metrics: false,
        ..MAIN
    };
    let off = s.start_ours(&off_variant)?;
    let mut cases = Vec::new();
    for window in [1usize, 64] {
        for (name, v, pid) in [("on", &MAIN, main.pid()), ("off", &off_variant, off.pid())] {
            cases.push(Case {
                label: format!("metrics {name}, window {window}"),
                function: v.function,
                workers: vec![pid],
                body: &discover,
                window,
                connections: 1,
                jobs: s.jobs_for(window),
                expect: Expect::Pass,
            });
        }
    }
    let metric_runs = s.measure(&cases, args.reps)?;
    drop(off);
    let _ = writeln!(
        md,
        "### Metrics endpoint (DISCOVER; not scraped during the run)\n"
    );
    let _ = writeln!(
        md,
        "| window | on jobs/s | off jobs/s | on/off | on p50 | off p50 | on p99 | off p99 |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for window in [1usize, 64] {
        if let (Some(on), Some(off)) = (
            find(&metric_runs, &format!("metrics on, window {window}")),
            find(&metric_runs, &format!("metrics off, window {window}")),
        ) {
            let _ = writeln!(
                md,
                "| {window} | {:.0} | {:.0} | {:.2}x | {:.0} | {:.0} | {:.0} | {:.0} |",
                on.rate(),
                off.rate(),
                ratio(on.rate(), off.rate()),
                on.p50(),
                off.p50(),
                on.p99(),
                off.p99()
            );
        }
    }
    let _ = writeln!(md);

    // Prefetch depth.
    // The C worker runs in the same phase, interleaved with these, for the ratio.
    note!("prefetch: 1 vs 4 vs 16, with the C worker");
    let pf_variants = [
        Variant {
            function: "lbw-pf1",
            prefetch: 1,
            ..MAIN
        },
        Variant {
            function: "lbw-pf4",
            prefetch: 4,
            ..MAIN
        },
        MAIN,
    ];
    let pf1 = s.start_ours(&pf_variants[0])?;
    let pf4 = s.start_ours(&pf_variants[1])?;
    let pids = [pf1.pid(), pf4.pid(), main.pid()];
    let mut cases = Vec::new();
    for window in [1usize, 64] {
        cases.push(Case {
            label: format!("C worker, window {window}"),
            function: "cworker",
            workers: vec![c_pid],
            body: &discover,
            window,
            connections: 1,
            jobs: s.jobs_for(window),
            expect: Expect::Any,
        });
        for (v, pid) in pf_variants.iter().zip(pids) {
            cases.push(Case {
                label: format!("prefetch {}, window {window}", v.prefetch),
                function: v.function,
                workers: vec![pid],
                body: &discover,
                window,
                connections: 1,
                jobs: s.jobs_for(window),
                expect: Expect::Pass,
            });
        }
    }
    let pf_runs = s.measure(&cases, args.reps)?;
    let pf_peak = procfs::memory(main.pid())?;
    drop(pf1);
    drop(pf4);
    drop(c_workers);
    let _ = writeln!(md, "### Prefetch depth (`gearman.prefetch`; DISCOVER)\n");
    let _ = writeln!(
        md,
        "| window | prefetch | jobs/s | vs C worker | p50 | p99 | CPU/job: worker | gearmand | generator | generator % of one core |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for m in pf_runs.iter().filter(|m| m.label.starts_with("prefetch")) {
        let c = find(&pf_runs, &format!("C worker, window {}", m.window));
        let prefetch = m
            .label
            .split(',')
            .next()
            .unwrap_or("")
            .trim_start_matches("prefetch ");
        let _ = writeln!(
            md,
            "| {} | {prefetch} | {:.0} | {:.2}x | {:.0} | {:.0} | {:.1} us | {:.1} us | {:.1} us | {:.0}% |",
            m.window,
            m.rate(),
            ratio(m.rate(), c.as_ref().map_or(0.0, Measure::rate)),
            m.p50(),
            m.p99(),
            m.worker_us_per_job,
            m.gearmand_us_per_job,
            m.load.generator_us_per_job(),
            m.load.generator_core_percent()
        );
    }
    let _ = writeln!(md);

    let c64 = find(&main_runs, "C worker, window 64, DISCOVER");
    let pf16_64 = find(&pf_runs, "prefetch 16, window 64").map(|mut m| {
        m.label = "libra-worker prefetch 16, window 64".to_string();
        m
    });
    let _ = writeln!(md, "### Generator capacity\n");
    let _ = writeln!(
        md,
        "| run | jobs/s | generator CPU per job | generator % of one core | generator ceiling (one core / CPU per job) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for m in cap.iter().chain(c64.iter()).chain(pf16_64.iter()) {
        let us = m.load.generator_us_per_job();
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.2} us | {:.0}% | {:.0} jobs/s |",
            m.label,
            m.rate(),
            us,
            m.load.generator_core_percent(),
            if us > 0.0 { 1e6 / us } else { 0.0 }
        );
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "### Memory (/proc/<pid>/status)\n");
    let _ = writeln!(
        md,
        "| process | idle VmRSS | VmRSS after the window-64 runs | peak (VmHWM) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|");
    let mem_row = |md: &mut String, name: &str, idle: Option<Memory>, after: Memory| {
        let _ = writeln!(
            md,
            "| {name} | {} | {} KiB | {} KiB |",
            idle.map_or("".to_string(), |m| format!("{} KiB", m.rss_kib)),
            after.rss_kib,
            after.peak_kib
        );
    };
    // After every run of the main worker, prefetch phase included.
    let _ = loaded_ours;
    mem_row(
        &mut md,
        "libra-worker (prefetch 16, the default)",
        Some(idle_ours),
        pf_peak,
    );
    mem_row(&mut md, "C worker (gearman -w)", Some(idle_c), loaded_c);
    let _ = writeln!(md);
    drop(main);

    // The HAProxy driver: UPDATE latency and zero-drop, each with a worker of its own.
    let (mut update_json, mut zero_drop_json) = (serde_json::Value::Null, serde_json::Value::Null);
    if !args.no_haproxy {
        let env = Env {
            binary: &s.binary,
            gearmand: addr.clone(),
            dir,
        };
        let section = super::update_latency::run(&env, args.update_count())?;
        md.push_str(&section.markdown);
        update_json = section.json;
        if super::wrk::program().is_some() {
            let section = super::zero_drop::run(&env, args.zero_drop_opts())?;
            md.push_str(&section.markdown);
            zero_drop_json = section.json;
        } else {
            let _ = writeln!(
                md,
                "### Zero-drop\n\nSkipped: wrk is not installed (apt-get install wrk).\n"
            );
        }
    }

    let json = json!({
        "machine": machine,
        "gearmand_threads": args.gearmand_threads,
        "reps": args.reps,
        "main": main_runs,
        "targets": targets,
        "notes": notes,
        "generator_capacity": cap,
        "log_level": log_runs,
        "metrics_endpoint": metric_runs,
        "prefetch": pf_runs,
        "memory": {
            "ours_idle": idle_ours, "ours_after_load": loaded_ours, "ours_prefetch16": pf_peak,
            "c_idle": idle_c, "c_after_load": loaded_c,
        },
        "update_latency": update_json,
        "zero_drop": zero_drop_json,
    });
    Ok(SuiteReport { markdown: md, json })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_by_side_ratios() {
        let (mid, lo, hi) = paired(&[10.0, 30.0, 20.0], &[10.0, 10.0, 10.0]);
        assert_eq!((mid, lo, hi), (2.0, 1.0, 3.0));
        assert_eq!(ratio(1.0, 0.0), 0.0);
    }

    #[test]
    fn temp_dir_is_removed_unless_kept() {
        let d = TempDir::create().unwrap();
        let path = d.path.clone();
        std::fs::write(path.join("x"), "y").unwrap();
        drop(d);
        assert!(!path.exists());
        let mut d = TempDir::create().unwrap();
        d.keep = true;
        let path = d.path.clone();
        drop(d);
        assert!(path.exists());
        std::fs::remove_dir_all(path).unwrap();
    }
}
