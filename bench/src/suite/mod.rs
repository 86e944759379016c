//! `libra-bench --suite`: gearmand on a free port, the C worker (`gearman -w`, which
//! does no work) and libra-worker (null driver) driven by the same generator, every
//! measurement repeated interleaved (median reported), printed as markdown: throughput,
//! latency, CPU per job, generator capacity, log level, metrics, prefetch, memory; unless
//! `--no-haproxy`, STATS against a HAProxy-driver worker, then UPDATE latency and zero-drop.
//!
//! This file owns the suite's errors, its entry point and the order of its sections; each
//! section measures and writes its tables in a module of its own: `comparison` (the main
//! table, its STATS worker in `stats_worker`), `capacity` (the generator's), `variants`
//! (log level, metrics endpoint, prefetch depth), `memory`, `haproxy` (UPDATE latency and
//! zero-drop). `measure` starts workers and runs cases, `report` has what the tables share,
//! `temp_dir` the work directory.

mod capacity;
mod comparison;
mod haproxy;
mod measure;
mod memory;
mod report;
mod stats_worker;
mod temp_dir;
mod variants;

use std::path::{Path, PathBuf};

use serde_json::json;

pub use measure::Measure;
pub(crate) use temp_dir::TempDir;

use crate::load::LoadError;
use crate::procfs::ProcfsError;
use crate::procs::{self, Gearmand, ProcsError};
use crate::BenchArgs;
use measure::{action_body, Suite};

/// gearmand I/O threads unless `--gearmand-threads` says otherwise.
pub const DEFAULT_GEARMAND_THREADS: u32 = 1;
/// Measured jobs of a window-1 run (before `--scale`).
pub const JOBS_WINDOW_1: u64 = 4_000;
/// Measured jobs of a window-64 run (before `--scale`).
pub const JOBS_WINDOW_64: u64 = 20_000;

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
    Appliance(#[from] crate::appliance::ApplianceError),
    #[error("UPDATE latency: {0}")]
    UpdateLatency(#[from] crate::update_latency::UpdateLatencyError),
    #[error("zero-drop: {0}")]
    ZeroDrop(#[from] crate::zero_drop::ZeroDropError),
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
            command: None,
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
    let mut md = String::new();
    let machine = report::machine();
    note!(
        "bench suite: gearmand at {addr} (--threads={}), work in {}",
        args.gearmand_threads,
        dir.display()
    );

    // Main comparison: the C worker and ours, both registered, measured in turn.
    let main = comparison::run(s, &machine, &discover, &mut md)?;
    // Generator capacity: measured now, reported after the prefetch table.
    let cap = capacity::measure(s, &discover)?;
    // Log level, metrics endpoint and prefetch depth, each beside the main worker.
    let log_runs = variants::log_level(s, &main.ours, &discover, &mut md)?;
    let metric_runs = variants::metrics_endpoint(s, &main.ours, &discover, &mut md)?;
    let pf = variants::prefetch(
        s,
        &main.ours,
        main.c_workers,
        main.c_pid,
        &discover,
        &mut md,
    )?;
    capacity::write_table(&mut md, &cap, &main.runs, &pf.runs);
    memory::write_table(&mut md, &main.memory, pf.ours_peak);
    drop(main.ours);

    // The HAProxy driver: UPDATE latency and zero-drop, each with a worker of its own.
    let haproxy = haproxy::run(s, &mut md)?;

    let json = json!({
        "machine": machine,
        "gearmand_threads": args.gearmand_threads,
        "reps": args.reps,
        "main": main.runs,
        "targets": main.targets,
        "notes": main.notes,
        "generator_capacity": cap,
        "log_level": log_runs,
        "metrics_endpoint": metric_runs,
        "prefetch": pf.runs,
        "memory": memory::json(&main.memory, pf.ours_peak),
        "update_latency": haproxy.update_latency,
        "zero_drop": haproxy.zero_drop,
    });
    Ok(SuiteReport { markdown: md, json })
}
