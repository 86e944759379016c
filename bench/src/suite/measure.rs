//! How the suite measures: the libra-worker configurations it starts (`Variant`, the
//! shipped one `MAIN`), a measurement (`Case`: a job body at a window against some worker
//! processes), the `Suite` that starts the workers and runs every case `--reps` times
//! interleaved, and the median run it reports (`Measure`, with the CPU per job of gearmand
//! and the worker from /proc).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::json;

use super::{SuiteError, JOBS_WINDOW_1, JOBS_WINDOW_64};
use crate::load::{self, Expect, LoadReport, LoadSpec};
use crate::procfs::{self, ProcfsError};
use crate::procs::{self, Gearmand, Running};
use crate::stats;
use crate::BenchArgs;

/// Bound on one run.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// One configuration of the libra-worker under test.
#[derive(Debug, Clone)]
pub(super) struct Variant {
    pub(super) function: &'static str,
    pub(super) prefetch: usize,
    pub(super) level: &'static str,
    pub(super) metrics: bool,
}

/// The worker as it ships (prefetch 16, the default), log level warning.
pub(super) const MAIN: Variant = Variant {
    function: "lbw-main",
    prefetch: libra_worker::config::DEFAULT_PREFETCH,
    level: "warning",
    metrics: true,
};

/// A measurement: what runs, against which worker processes.
pub(super) struct Case<'a> {
    pub(super) label: String,
    pub(super) function: &'a str,
    pub(super) workers: Vec<u32>,
    pub(super) body: &'a Bytes,
    pub(super) window: usize,
    pub(super) connections: usize,
    pub(super) jobs: u64,
    pub(super) expect: Expect,
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
    pub(super) fn rate(&self) -> f64 {
        self.load.jobs_per_sec
    }
    pub(super) fn p50(&self) -> f64 {
        self.load.latency.p50_us
    }
    pub(super) fn p99(&self) -> f64 {
        self.load.latency.p99_us
    }
    pub(super) fn spread(&self) -> String {
        let lo = self.rates.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = self.rates.iter().copied().fold(0.0, f64::max);
        format!("{lo:.0}–{hi:.0}")
    }
}

/// The suite's fixed parts: its arguments, work directory, worker binary and gearmand.
pub(super) struct Suite<'a> {
    pub(super) args: &'a BenchArgs,
    pub(super) dir: &'a Path,
    pub(super) binary: PathBuf,
    pub(super) gearmand: Gearmand,
}

impl Suite<'_> {
    fn scaled(&self, jobs: u64) -> u64 {
        ((jobs as f64 * self.args.scale).round() as u64).max(10)
    }

    pub(super) fn jobs_for(&self, window: usize) -> u64 {
        if window <= 1 {
            self.scaled(JOBS_WINDOW_1)
        } else {
            self.scaled(JOBS_WINDOW_64)
        }
    }

    /// Starts libra-worker in `v`'s configuration and waits until it has registered.
    pub(super) fn start_ours(&self, v: &Variant) -> Result<Running, SuiteError> {
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
    pub(super) fn start_from_config(
        &self,
        config: &Path,
        function: &str,
    ) -> Result<Running, SuiteError> {
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

    pub(super) fn start_c_workers(
        &self,
        function: &str,
        n: usize,
    ) -> Result<Vec<Running>, SuiteError> {
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
    pub(super) fn measure(&self, cases: &[Case], reps: usize) -> Result<Vec<Measure>, SuiteError> {
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

/// The body of a job that asks for `action` (DISCOVER, STATS).
pub(super) fn action_body(action: &str) -> Bytes {
    Bytes::from(json!({ "hpcs_action": action }).to_string())
}
