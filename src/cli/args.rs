//! The command line's shape: every subcommand, flag and help text, and nothing else.
//! `build.rs` includes this file as it is to generate the man page and the shell
//! completions, so it may use only `clap` and `std`: what `--help` says and what the
//! package's man page says come from the same definitions and cannot drift apart.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The man page's DESCRIPTION, and `--help`'s.
const LONG_ABOUT: &str = "\
Libra LBaaS worker: takes the API server's JSON jobs (UPDATE, SUSPEND, ENABLE, DELETE, \
DISCOVER, STATS, METRICS, ARCHIVE, DIAGNOSTICS) from Gearman job servers and drives the \
HAProxy of this appliance.

Configuration: a native TOML file (the package installs a commented one at \
/etc/libra/libra-worker.toml) or the reference worker's INI file (/etc/libra/libra.cfg), \
read unchanged. Environment variables LIBRA_WORKER__<SECTION>__<KEY> override keys.

Signals: SIGTERM or SIGINT stop the worker gracefully (no new jobs; the jobs in hand are \
answered). SIGHUP re-reads the configuration file's [log] level. HAProxy keeps running \
when the worker stops; the next worker adopts it.

Under systemd (Type=notify) the worker reports READY once its configuration is read and \
its driver runs, feeds the watchdog from its controller, and logs to the journal with \
syslog priorities and without timestamps of its own.

Exit status: 0 success, 1 a runtime failure, 2 a usage or configuration error.";

#[derive(Debug, Parser)]
#[command(
    name = "libra-worker",
    version,
    about = "Libra LBaaS worker: Gearman jobs in, HAProxy out",
    long_about = LONG_ABOUT
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the worker.
    Run {
        /// Configuration file: .toml (native) or .cfg/.ini (the reference worker's).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and print the effective configuration as TOML.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the sudoers rule service mode needs for this configuration: every command
    /// the worker runs through sudo, fully specified (a comment says when none is needed).
    Sudoers {
        #[arg(long, short)]
        config: PathBuf,
        /// The user the worker runs as (default: the current user).
        #[arg(long)]
        user: Option<String>,
    },
    /// Submit one job to a job server and print the answer's JSON.
    Submit {
        /// Job server, host:port.
        #[arg(long, default_value = "localhost:4730")]
        server: String,
        /// Gearman function (the worker's host name by default).
        #[arg(long)]
        function: Option<String>,
        /// Send this JSON file as the job body.
        #[arg(long, conflicts_with_all = ["action", "json"])]
        file: Option<PathBuf>,
        /// Send this JSON text as the job body.
        #[arg(long, conflicts_with = "action")]
        json: Option<String>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Print the answer on one line.
        #[arg(long)]
        compact: bool,
        /// An action with no other fields (DISCOVER, DIAGNOSTICS, STATS, ...).
        #[arg(required_unless_present_any = ["file", "json"])]
        action: Option<String>,
    },
    /// Control the HAProxy that the worker manages.
    Haproxy {
        #[command(subcommand)]
        command: HaproxyCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum HaproxyCmd {
    /// Stop the managed HAProxy of this configuration (it outlives the worker otherwise).
    Stop {
        #[arg(long, short)]
        config: PathBuf,
    },
}
