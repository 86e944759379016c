//! Configuration as a pipeline: a file (native TOML, or the reference worker's INI read
//! unchanged) plus `LIBRA_WORKER__SECTION__KEY` environment overrides, deserialized into
//! strict file structs, then checked and turned into typed `Settings` with defaults.
//! Every error names the key and the problem.

mod env_overrides;
pub(crate) mod file;
mod gearman;
mod haproxy;
pub(crate) mod reference_ini;
mod sections;
pub(crate) mod state_files;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use env_overrides::apply_env;
use file::FileConfig;
use gearman::gearman_settings;
pub use gearman::parse_server;
pub use haproxy::{default_haproxy_binary, haproxy_binary_from_env, resolve_program};
use haproxy::{haproxy_settings, program_words};
pub use sections::level_name;
use sections::{limits_settings, log_settings, metrics_settings, worker_settings};

/// Default job server list, as in the reference worker.
pub const DEFAULT_SERVER: &str = "localhost:4730";
/// Default Gearman port when a server is given without one.
pub const DEFAULT_GEARMAN_PORT: u16 = 4730;
/// Upper bound of the reconnect back-off, in seconds (the reference's `reconnect_sleep`).
pub const DEFAULT_RECONNECT_SLEEP: u64 = 60;
/// Seconds of silence from a job server before the worker pings it (ECHO_REQ); a ping
/// unanswered for as long again drops the connection.
pub const DEFAULT_HEARTBEAT: u64 = 30;
/// How long one job may take before it is answered FAIL, in seconds.
pub const DEFAULT_JOB_TIMEOUT: u64 = 60;
/// Jobs a connection may hold at once (1 = no prefetch). Grabbing ahead keeps gearmand,
/// the network and the worker busy at once; the controller still runs one server's jobs
/// in arrival order (docs/performance.md: 17k jobs/s at 1, 128k at 16).
pub const DEFAULT_PREFETCH: usize = 16;
/// Where the managed HAProxy keeps its files.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/libra-worker";
/// Address the load balancers listen on.
pub const DEFAULT_BIND_ADDRESS: &str = "0.0.0.0";
/// Connections one load balancer (frontend) accepts: the reference's `maxconn 50000` in
/// `defaults`, which users relied on.
pub const DEFAULT_MAXCONN: u32 = 50_000;
/// Old HAProxy processes (still finishing connections after a reload) kept at most; the
/// oldest is told to stop when a reload would exceed it. This, not a timer, bounds memory.
pub const DEFAULT_MAX_OLD_WORKERS: u32 = 10;
/// Seconds an old process may keep finishing its connections after a reload; 0 = as long
/// as they last, as the reference's `-sf` reloads did (database sessions last hours).
pub const DEFAULT_HARD_STOP_AFTER: u64 = 0;
/// The privilege prefix of service mode when the worker does not run as root.
pub const DEFAULT_SUDO: &str = "sudo -n";
/// Prometheus endpoint.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9646";
/// Seconds between the periodic metrics summary log lines (0 disables them).
pub const DEFAULT_SUMMARY_INTERVAL: u64 = 300;
/// Largest job body accepted, in bytes.
pub const DEFAULT_MAX_JOB_BYTES: usize = 1024 * 1024;
/// Deepest JSON nesting accepted in a job.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 32;
/// Most load balancers in one UPDATE.
pub const DEFAULT_MAX_LOAD_BALANCERS: usize = 16;
/// Most nodes in one load balancer.
pub const DEFAULT_MAX_NODES: usize = 512;
/// Environment variables with this prefix override file keys: `LIBRA_WORKER__GEARMAN__SERVERS`.
pub const ENV_PREFIX: &str = "LIBRA_WORKER";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {path}: unknown format (use .toml, .cfg or .ini)")]
    Format { path: PathBuf },
    #[error("configuration file {path}: {problem}")]
    Parse { path: PathBuf, problem: String },
    #[error("section [{section}]: {problem}")]
    Section { section: String, problem: String },
    #[error("{key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// Checked, typed settings with every default applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub gearman: GearmanSettings,
    pub worker: WorkerSettings,
    pub log: LogSettings,
    pub haproxy: HaproxySettings,
    pub metrics: MetricsSettings,
    pub limits: Limits,
    /// Things worth a warning in the log (ignored reference options and the like).
    pub warnings: Vec<String>,
}

/// One job server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
    /// Speak TLS to this server.
    pub tls: bool,
}

impl ServerAddr {
    /// `host:port`, as used for connecting and in logs.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The form written in the configuration (with a scheme for TLS servers).
    pub fn config_form(&self) -> String {
        if self.tls {
            format!("tls://{}", self.host_port())
        } else {
            self.host_port()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Check the job server's name against its certificate (`ssl_verify_hostname`); the
    /// chain is verified against `ca` either way.
    pub verify_hostname: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub idle: Option<Duration>,
    pub interval: Option<Duration>,
    pub count: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct GearmanSettings {
    pub servers: Vec<ServerAddr>,
    pub reconnect_sleep: Duration,
    pub poll: Duration,
    pub tls: Option<TlsFiles>,
    pub keepalive: Option<Keepalive>,
    pub max_packet_bytes: u32,
    pub prefetch: usize,
    /// Silence after which a job server is pinged; twice this without a packet drops it.
    pub heartbeat: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    Haproxy,
    /// Supports no load-balancer action; DISCOVER and DIAGNOSTICS still work.
    Null,
}

impl DriverKind {
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::Haproxy => "haproxy",
            DriverKind::Null => "null",
        }
    }
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub function: String,
    pub driver: DriverKind,
    pub diagnostics_target: Option<String>,
    pub job_timeout: Duration,
    pub pid: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human lines; under systemd, with standard error connected to the journal, the
    /// journal's form instead (`Journal`).
    Term,
    Json,
    /// Human lines without a timestamp, each prefixed with its syslog priority (`<6>`),
    /// as systemd's journal reads standard error.
    Journal,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: slog::Level,
    pub format: LogFormat,
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaproxyMode {
    /// The worker runs HAProxy itself (master-worker mode) under `state_dir`.
    Managed,
    /// HAProxy belongs to the init system; the worker runs configured commands.
    Service,
}

#[derive(Debug, Clone)]
pub struct HaproxySettings {
    pub mode: HaproxyMode,
    pub binary: PathBuf,
    pub state_dir: PathBuf,
    pub bind_address: String,
    pub config_file: PathBuf,
    pub logfile: PathBuf,
    pub statsfile: PathBuf,
    pub stats_socket: PathBuf,
    pub pid_file: PathBuf,
    pub start_cmd: Vec<String>,
    pub stop_cmd: Vec<String>,
    pub reload_cmd: Vec<String>,
    /// Apply node-only changes through the stats socket instead of a reload.
    pub runtime_api: bool,
    /// Service mode: the command prefix of every privileged step (`sudo -n`); empty when
    /// the worker may do them itself. Commands never go through a shell. Resolved for the
    /// user running the worker (see [`HaproxySettings::sudo_for`]).
    pub sudo: Vec<String>,
    /// The `sudo` key as the file gives it, split into words; None when the key is absent.
    pub sudo_setting: Option<Vec<String>>,
    /// The reference worker's METRICS state file, taken over once when the worker's own
    /// ledger does not exist yet.
    pub reference_statsfile: Option<PathBuf>,
    /// `maxconn` of every load balancer (frontend).
    pub maxconn: u32,
    /// `hard-stop-after`: how long an old process may finish its connections; None = no limit.
    pub hard_stop_after: Option<Duration>,
    /// `mworker-max-reloads`: old processes kept at most; 0 = no limit.
    pub max_old_workers: u32,
}

impl HaproxySettings {
    /// The privilege prefix for a worker run by root (`runs_as_root`) or by another user:
    /// the `sudo` key when given; otherwise `sudo -n` in service mode for a user other
    /// than root, and none in managed mode or for root.
    pub fn sudo_for(&self, runs_as_root: bool) -> Vec<String> {
        match &self.sudo_setting {
            Some(prefix) => prefix.clone(),
            None if self.mode == HaproxyMode::Service && !runs_as_root => {
                program_words(DEFAULT_SUDO)
            }
            None => Vec::new(),
        }
    }

    /// `argv` as a privileged step runs it: behind the `sudo` prefix unless it already
    /// starts with that program.
    pub fn privileged(&self, argv: &[String]) -> Vec<String> {
        match (self.sudo.first(), argv.first()) {
            (Some(sudo), Some(first)) if sudo != first => {
                self.sudo.iter().chain(argv).cloned().collect()
            }
            _ => argv.to_vec(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MetricsSettings {
    pub listen: Option<SocketAddr>,
    pub summary_interval: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_job_bytes: usize,
    pub max_json_depth: usize,
    pub max_load_balancers: usize,
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_job_bytes: DEFAULT_MAX_JOB_BYTES,
            max_json_depth: DEFAULT_MAX_JSON_DEPTH,
            max_load_balancers: DEFAULT_MAX_LOAD_BALANCERS,
            max_nodes: DEFAULT_MAX_NODES,
        }
    }
}

impl Settings {
    /// Reads `path` (format by extension), applies environment overrides and checks it.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &env)
    }

    /// As [`Settings::load`], with an explicit environment (for tests).
    pub fn load_with_env(path: &Path, env: &[(String, String)]) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let parse = |problem: String| ConfigError::Parse {
            path: path.to_path_buf(),
            problem,
        };
        let (file, warnings) = match ext.as_str() {
            "toml" => {
                let file: FileConfig = config::Config::builder()
                    .add_source(config::File::from_str(&text, config::FileFormat::Toml))
                    .build()
                    .and_then(|c| c.try_deserialize())
                    .map_err(|e| parse(e.to_string()))?;
                (file, Vec::new())
            }
            "cfg" | "ini" | "conf" => {
                let sections: BTreeMap<String, config::Value> = config::Config::builder()
                    .add_source(config::File::from_str(&text, config::FileFormat::Ini))
                    .build()
                    .and_then(|c| c.try_deserialize())
                    .map_err(|e| parse(e.to_string()))?;
                let read = reference_ini::from_sections(sections)?;
                (read.config, read.warnings)
            }
            _ => {
                return Err(ConfigError::Format {
                    path: path.to_path_buf(),
                })
            }
        };
        let file = apply_env(file, env)?;
        let mut settings = Settings::from_file(file)?;
        settings.warnings.extend(warnings);
        Ok(settings)
    }

    /// Checks a file configuration and fills in defaults.
    pub(crate) fn from_file(f: FileConfig) -> Result<Settings, ConfigError> {
        let gearman = gearman_settings(&f)?;
        let worker = worker_settings(&f)?;
        let log = log_settings(&f)?;
        let haproxy = haproxy_settings(&f)?;
        let metrics = metrics_settings(&f)?;
        let limits = limits_settings(&f)?;
        let mut warnings = Vec::new();
        let tls_servers = gearman.servers.iter().any(|s| s.tls);
        if gearman.tls.as_ref().is_some_and(|t| !t.verify_hostname) && tls_servers {
            // The reference's behaviour, kept for its INI files: said once at start.
            warnings.push(
                "[gearman] ssl_verify_hostname = false: job servers' certificate chains are \
                 verified against ssl_ca, their host names are not checked"
                    .to_string(),
            );
        }
        Ok(Settings {
            gearman,
            worker,
            log,
            haproxy,
            metrics,
            limits,
            warnings,
        })
    }

    /// The effective configuration in the native file shape, every key filled in. Two
    /// files that mean the same thing give the same value.
    pub(crate) fn effective(&self) -> FileConfig {
        let path = |p: &Path| Some(p.display().to_string());
        let words = |v: &[String]| Some(v.join(" "));
        let g = &self.gearman;
        FileConfig {
            gearman: file::GearmanFile {
                servers: Some(g.servers.iter().map(ServerAddr::config_form).collect()),
                reconnect_sleep: Some(g.reconnect_sleep.as_secs()),
                poll: Some(g.poll.as_secs()),
                ssl_ca: g.tls.as_ref().and_then(|t| path(&t.ca)),
                ssl_cert: g
                    .tls
                    .as_ref()
                    .and_then(|t| t.cert.as_deref().and_then(path)),
                ssl_key: g.tls.as_ref().and_then(|t| t.key.as_deref().and_then(path)),
                // Shown with TLS only: without it the key means nothing, and the INI and
                // TOML defaults differ.
                ssl_verify_hostname: g.tls.as_ref().map(|t| t.verify_hostname),
                keepalive: Some(g.keepalive.is_some()),
                keepcnt: g.keepalive.and_then(|k| k.count),
                keepidle: g.keepalive.and_then(|k| k.idle.map(|d| d.as_secs())),
                keepintvl: g.keepalive.and_then(|k| k.interval.map(|d| d.as_secs())),
                max_packet_bytes: Some(g.max_packet_bytes),
                prefetch: Some(g.prefetch),
                heartbeat: Some(g.heartbeat.as_secs()),
            },
            worker: file::WorkerFile {
                function: Some(self.worker.function.clone()),
                driver: Some(self.worker.driver.name().to_string()),
                diagnostics_target: self.worker.diagnostics_target.clone(),
                job_timeout: Some(self.worker.job_timeout.as_secs()),
                pid: self.worker.pid.as_deref().and_then(path),
            },
            log: file::LogFile {
                level: Some(level_name(self.log.level).to_string()),
                format: Some(match self.log.format {
                    LogFormat::Term => "term".to_string(),
                    LogFormat::Json => "json".to_string(),
                    LogFormat::Journal => "journal".to_string(),
                }),
                file: self.log.file.as_deref().and_then(path),
            },
            haproxy: {
                let h = &self.haproxy;
                file::HaproxyFile {
                    mode: Some(match h.mode {
                        HaproxyMode::Managed => "managed".to_string(),
                        HaproxyMode::Service => "service".to_string(),
                    }),
                    binary: path(&h.binary),
                    state_dir: path(&h.state_dir),
                    bind_address: Some(h.bind_address.clone()),
                    config_file: path(&h.config_file),
                    logfile: path(&h.logfile),
                    statsfile: path(&h.statsfile),
                    stats_socket: path(&h.stats_socket),
                    pid_file: path(&h.pid_file),
                    start_cmd: words(&h.start_cmd),
                    stop_cmd: words(&h.stop_cmd),
                    reload_cmd: words(&h.reload_cmd),
                    runtime_api: Some(h.runtime_api),
                    sudo: words(&h.sudo),
                    reference_statsfile: h.reference_statsfile.as_deref().and_then(path),
                    maxconn: Some(h.maxconn),
                    hard_stop_after: Some(h.hard_stop_after.map_or(0, |d| d.as_secs())),
                    max_old_workers: Some(h.max_old_workers),
                }
            },
            metrics: file::MetricsFile {
                listen: Some(
                    self.metrics
                        .listen
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                ),
                summary_interval: Some(self.metrics.summary_interval.as_secs()),
            },
            limits: file::LimitsFile {
                max_job_bytes: Some(self.limits.max_job_bytes),
                max_json_depth: Some(self.limits.max_json_depth),
                max_load_balancers: Some(self.limits.max_load_balancers),
                max_nodes: Some(self.limits.max_nodes),
            },
        }
    }
}
