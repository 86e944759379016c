//! The worker the main table's STATS rows run against: the user's `--stats-config`
//! worker, by default a HAProxy-driver worker of the suite's own (set up with an UPDATE of
//! two load balancers so that STATS has something to read), or with `--no-haproxy` the
//! main null-driver worker, whose STATS answers FAIL. Set up and probed with one job
//! each; a probe that fails skips our worker's STATS rows and says why in a note.

use std::time::Duration;

use bytes::Bytes;
use libra_worker::gearman::client::{Client, JobOutcome};

use super::measure::{Suite, MAIN};
use super::SuiteError;
use crate::appliance::{HaproxyWorker, LogLevel};
use crate::load;
use crate::procs::{self, Running};

/// Bound on a single setup or probe job.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

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

/// Where the STATS rows run, and whether our worker's run at all.
pub(super) struct StatsRows {
    /// A worker started for these rows, stopped when dropped; `None`: the main worker.
    worker: Option<StatsWorker>,
    /// The function the STATS jobs are submitted to.
    pub(super) function: &'static str,
    /// The process that answers them.
    pub(super) pid: u32,
    /// Whether the probe job passed; when not, our worker's STATS rows are skipped.
    pub(super) ok: bool,
}

impl StatsRows {
    /// Whether a worker of its own (not the main null-driver one) answers STATS.
    pub(super) fn own_worker(&self) -> bool {
        self.worker.is_some()
    }
}

/// Starts the STATS worker, submits its set-up job and one probe; `main_pid` is the main
/// worker's, which answers STATS when no other worker does. What was done goes to `notes`.
pub(super) fn start(
    s: &Suite,
    main_pid: u32,
    stats_body: &Bytes,
    notes: &mut Vec<String>,
) -> Result<StatsRows, SuiteError> {
    let (args, dir, addr) = (s.args, s.dir, s.gearmand.addr());
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
    let stats_pid = stats_worker.as_ref().map_or(main_pid, StatsWorker::pid);
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
                crate::updates::Appliance::two_lbs(procs::free_port()?, procs::free_port()?, 2, 1);
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
    Ok(StatsRows {
        worker: stats_worker,
        function: stats_function,
        pid: stats_pid,
        ok: stats_ok,
    })
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
