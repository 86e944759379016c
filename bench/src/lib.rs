//! `libra-bench`: a pipelined Gearman load generator (`load`, `stats`, `procfs`,
//! `procs`), the worker-against-C-worker comparison (`suite`), and against a HAProxy-driver
//! worker (`appliance`, `updates`, `client`) the UPDATE latency (`update_latency`, `steps`,
//! `standalone`) and zero-drop (`zero_drop`, `wrk`, `http_backend`) sections (`section`),
//! the time a killed HAProxy takes to serve again (`recovery`), and the reload storm
//! (`storm`, `storm_report`, `long_conns`, `echo_backend`, `haproxy_procs`).
//! Hand-written: the Gearman load tools that exist submit one job at a time per connection.

/// Writes a line to standard output. A reader that went away (`| head`) is no reason to
/// panic, so write errors are ignored.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// As `out!`, to standard error (progress and errors).
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

pub mod appliance;
pub mod client;
pub mod echo_backend;
pub mod haproxy_procs;
pub mod http_backend;
pub mod load;
pub mod long_conns;
pub mod procfs;
pub mod procs;
pub mod recovery;
pub mod scale;
pub mod scale_backends;
pub mod scale_layout;
pub mod section;
pub mod soak;
pub mod standalone;
pub mod stats;
pub mod steps;
pub mod storm;
pub mod storm_report;
pub mod suite;
pub mod update_latency;
pub mod updates;
pub mod wrk;
pub mod zero_drop;

/// A unit test whose prerequisite is missing: a failure under CI (`CI=true`), elsewhere a
/// loud `SKIPPED` line that `scripts/test.sh` lists at the end.
#[cfg(test)]
pub(crate) fn skip_or_fail(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("a prerequisite is missing under CI: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    // The workspace's target directory, one level above this crate.
    let list = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/tmp/skipped.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(list)
    {
        use std::io::Write;
        let test = std::thread::current()
            .name()
            .unwrap_or("a test")
            .to_string();
        let _ = writeln!(f, "SKIPPED: {test}: {reason}");
    }
}

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;

use load::{Expect, LoadSpec};

/// The command line: the generator alone, `--suite`, or one HAProxy section alone.
#[derive(Debug, Parser)]
#[command(
    name = "libra-bench",
    version,
    about = "Load generator and benchmark suite for libra-worker",
    subcommand_negates_reqs = true
)]
pub struct BenchArgs {
    /// A section with options of its own (`scale`).
    #[command(subcommand)]
    pub command: Option<Sub>,
    /// Run the whole comparison: start gearmand, the C worker and libra-worker, measure,
    /// and print the table (markdown).
    #[arg(long, conflicts_with_all = ["server", "function", "action", "file"])]
    pub suite: bool,
    /// Measure UPDATE latency (nodes only, structural) against a HAProxy-driver worker of
    /// its own, with the per-step timing of a structural UPDATE; print the markdown.
    #[arg(long, conflicts_with_all = ["suite", "server", "function", "action", "file", "zero_drop"])]
    pub update_latency: bool,
    /// Count failed HTTP requests (wrk, keep-alive and close-mode clients) through a
    /// HAProxy-driver worker of its own while UPDATEs change nodes or force reloads.
    #[arg(long, conflicts_with_all = ["suite", "server", "function", "action", "file"])]
    pub zero_drop: bool,
    /// Ten minutes (`--quick`: one) of wrk traffic, DISCOVER/STATS at window 16, an
    /// UPDATE every second and METRICS every 10 s against a HAProxy-driver worker of its
    /// own: RSS, fds and threads sampled every 10 s, failed requests, METRICS against
    /// wrk's bytes.
    #[arg(long, conflicts_with_all = ["suite", "server", "function", "action", "file", "update_latency", "zero_drop", "recovery"])]
    pub soak: bool,
    /// SIGKILL the HAProxy of a HAProxy-driver worker of its own, --rounds times, and
    /// measure each time until a new HTTP request through the load balancer is answered;
    /// print p50/p99/max.
    #[arg(long, conflicts_with_all = ["suite", "server", "function", "action", "file", "zero_drop", "update_latency"])]
    pub recovery: bool,
    /// Recovery: kills (default 20).
    #[arg(long, default_value_t = recovery::DEFAULT_ROUNDS)]
    pub rounds: usize,
    /// Job server, host:port.
    #[arg(long, required_unless_present_any = ["suite", "update_latency", "zero_drop", "soak", "recovery"])]
    pub server: Option<String>,
    /// Gearman function to submit to.
    #[arg(long, required_unless_present_any = ["suite", "update_latency", "zero_drop", "soak", "recovery"])]
    pub function: Option<String>,
    /// Jobs to submit (measured; the warm-up comes on top).
    #[arg(long, default_value_t = 10_000)]
    pub jobs: u64,
    /// Jobs kept outstanding at once, over all connections.
    #[arg(long, default_value_t = 1)]
    pub window: usize,
    /// Client connections the window is spread over.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Submit `{"hpcs_action": ACTION}` (DISCOVER, STATS, ...).
    #[arg(long, conflicts_with = "file", required_unless_present_any = ["file", "suite", "update_latency", "zero_drop", "soak", "recovery"])]
    pub action: Option<String>,
    /// Submit this file's bytes as every job's body.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// `pass`: an answer without `"hpcs_response": "PASS"` counts as a failure (exit 1);
    /// `any`: every WORK_COMPLETE is a success (for `gearman -w`, which answers empty).
    #[arg(long, value_enum, default_value_t = Expect::Pass)]
    pub expect: Expect,
    /// Jobs run before the measurement and not counted.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Seconds the whole run may take.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Suite: repetitions of every measurement (the median run is reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Suite: scale every job count by this factor (0.2 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Suite: gearmand I/O threads (`--threads`).
    #[arg(long, default_value_t = suite::DEFAULT_GEARMAND_THREADS)]
    pub gearmand_threads: u32,
    /// Suite: run the STATS rows against a worker started from this configuration (its
    /// job servers, function, log and metrics settings are overridden); by default the
    /// null-driver worker, whose STATS answers FAIL, so those rows are skipped.
    #[arg(long)]
    pub stats_config: Option<PathBuf>,
    /// Suite: submit this job once to the STATS worker before its rows (an UPDATE that
    /// creates the load balancer STATS reports on).
    #[arg(long, requires = "stats_config")]
    pub stats_setup: Option<PathBuf>,
    /// Suite: also write the markdown report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Suite: leave out everything that needs HAProxy (the STATS rows are then skipped
    /// unless --stats-config is given; no UPDATE latency, no zero-drop section).
    #[arg(long)]
    pub no_haproxy: bool,
    /// Suite: a short run (1 repetition, job counts x 0.2, 20 UPDATEs per HAProxy row).
    #[arg(long)]
    pub quick: bool,
    /// UPDATE latency and zero-drop: UPDATEs per row (default 100; 20 with --quick).
    #[arg(long)]
    pub updates: Option<usize>,
    /// Zero-drop: wrk connections.
    #[arg(long, default_value_t = zero_drop::DEFAULT_CONNECTIONS)]
    pub wrk_connections: u32,
    /// Zero-drop: leave out the with/without `option idle-close-on-response` comparison.
    #[arg(long)]
    pub no_idle_close_comparison: bool,
}

/// The sections that are subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// UPDATE latency, STATS and memory by node count: two load balancers of N nodes each
    /// per size, backed by real sockets (`libra-bench scale --sizes 100,1000,10000`).
    Scale {
        /// Nodes per load balancer, one worker per size.
        #[arg(long, value_delimiter = ',', default_values_t = scale::DEFAULT_SIZES.to_vec())]
        sizes: Vec<u32>,
        /// UPDATEs (and STATS) per row.
        #[arg(long, default_value_t = update_latency::DEFAULT_UPDATES)]
        updates: usize,
        /// Also print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Issue 12's reload storm: structural UPDATEs back to back under wrk keep-alive and
    /// close-mode clients and 50 long-lived TCP connections; first the long connections
    /// across `max_old_workers` reloads and one more, then the storm (`libra-bench storm`).
    Storm {
        /// UPDATEs of the storm (default 1,000; 100 with --quick).
        #[arg(long)]
        updates: Option<usize>,
        /// A short storm.
        #[arg(long)]
        quick: bool,
        /// Also print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// UPDATEs of a --quick run.
pub const QUICK_UPDATES: usize = 20;

impl BenchArgs {
    /// UPDATEs per row of the HAProxy sections.
    pub fn update_count(&self) -> usize {
        self.updates.unwrap_or(if self.quick {
            QUICK_UPDATES
        } else {
            update_latency::DEFAULT_UPDATES
        })
    }

    pub fn zero_drop_opts(&self) -> zero_drop::ZeroDropOpts {
        zero_drop::ZeroDropOpts {
            updates: self.update_count(),
            connections: self.wrk_connections,
            compare_idle_close: !self.no_idle_close_comparison,
        }
    }
}

/// Runs the bench; returns the process exit code (0 ok, 1 failures seen, 2 usage).
pub fn main(args: BenchArgs) -> i32 {
    if let Some(Sub::Scale {
        sizes,
        updates,
        json,
    }) = &args.command
    {
        return scale::main(sizes, *updates, *json);
    }
    if let Some(Sub::Storm {
        updates,
        quick,
        json,
    }) = &args.command
    {
        let updates = updates.unwrap_or(if *quick {
            storm::QUICK_UPDATES
        } else {
            storm::DEFAULT_UPDATES
        });
        return storm::main(storm::StormOpts { updates }, *json);
    }
    if args.suite {
        return suite::main(&args);
    }
    if args.update_latency {
        return update_latency::main(args.update_count(), args.json);
    }
    if args.zero_drop {
        return zero_drop::main(args.zero_drop_opts(), args.json);
    }
    if args.soak {
        let duration = if args.quick {
            soak::QUICK_DURATION
        } else {
            soak::DEFAULT_DURATION
        };
        return soak::main(soak::SoakOpts { duration }, args.json);
    }
    if args.recovery {
        return recovery::main(args.rounds, args.json);
    }
    let body = match (&args.file, &args.action) {
        (Some(path), _) => match std::fs::read(path) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                note!("libra-bench: cannot read {}: {e}", path.display());
                return 2;
            }
        },
        (None, Some(action)) => {
            Bytes::from(serde_json::json!({ "hpcs_action": action }).to_string())
        }
        (None, None) => {
            note!("libra-bench: give --action or --file");
            return 2;
        }
    };
    let (Some(server), Some(function)) = (args.server.clone(), args.function.clone()) else {
        note!("libra-bench: give --server and --function");
        return 2;
    };
    let spec = LoadSpec {
        server,
        function,
        body,
        jobs: args.jobs,
        window: args.window,
        connections: args.connections,
        warmup: args.warmup,
        timeout: Duration::from_secs(args.timeout),
        tag: args.expect == load::Expect::Pass,
    };
    match load::run(&spec) {
        Ok(report) => {
            if args.json {
                out!("{}", report.to_json(&spec));
            } else {
                out!("{}", report.to_text(&spec));
            }
            if report.outcomes.failures(args.expect) > 0 {
                1
            } else {
                0
            }
        }
        Err(e) => {
            note!("libra-bench: {e}");
            1
        }
    }
}
