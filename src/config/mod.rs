//! Configuration as a pipeline: a file (native TOML, or the reference worker's INI read
//! unchanged) plus `LIBRA_WORKER__SECTION__KEY` environment overrides, deserialized into
//! strict file structs, then checked and turned into typed `Settings` with defaults.
//! Every error names the key and the problem.

pub(crate) mod file;
pub(crate) mod reference_ini;
pub(crate) mod state_files;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use file::FileConfig;

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
    Term,
    Json,
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

/// Lays `LIBRA_WORKER__SECTION__KEY=value` variables over the file configuration.
fn apply_env(file: FileConfig, env: &[(String, String)]) -> Result<FileConfig, ConfigError> {
    let prefix = format!("{ENV_PREFIX}__");
    let mut builder = config::Config::builder().add_source(
        config::Config::try_from(&file).map_err(|e| invalid("configuration", e.to_string()))?,
    );
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let key = rest.to_ascii_lowercase().replace("__", ".");
        builder = builder
            .set_override(key.as_str(), value.as_str())
            .map_err(|e| invalid("environment", format!("{name}: {e}")))?;
    }
    builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigError::Section {
            section: "environment".to_string(),
            problem: e.to_string(),
        })
}

fn gearman_settings(f: &FileConfig) -> Result<GearmanSettings, ConfigError> {
    let g = &f.gearman;
    let tls = match (&g.ssl_ca, &g.ssl_cert, &g.ssl_key) {
        (None, None, None) => None,
        (ca, cert, key) => {
            let ca = ca.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
                invalid("gearman.ssl_ca", "required when ssl_cert or ssl_key is set")
            })?;
            if cert.is_some() != key.is_some() {
                return Err(invalid(
                    "gearman.ssl_cert",
                    "ssl_cert and ssl_key must be given together",
                ));
            }
            let files = TlsFiles {
                ca: readable("gearman.ssl_ca", ca)?,
                cert: cert
                    .as_deref()
                    .map(|c| readable("gearman.ssl_cert", c))
                    .transpose()?,
                key: key
                    .as_deref()
                    .map(|k| readable("gearman.ssl_key", k))
                    .transpose()?,
                verify_hostname: g.ssl_verify_hostname.unwrap_or(true),
            };
            Some(files)
        }
    };
    let default_list = vec![DEFAULT_SERVER.to_string()];
    let list = g.servers.as_ref().unwrap_or(&default_list);
    if list.is_empty() {
        return Err(invalid(
            "gearman.servers",
            "at least one job server is required",
        ));
    }
    let servers = list
        .iter()
        .map(|s| parse_server(s, tls.is_some()))
        .collect::<Result<Vec<_>, _>>()?;
    if servers.iter().any(|s| s.tls) && tls.is_none() {
        return Err(invalid(
            "gearman.ssl_ca",
            "a tls:// job server needs ssl_ca to verify it",
        ));
    }
    let keepalive = if g.keepalive.unwrap_or(false) {
        Some(Keepalive {
            idle: g.keepidle.map(Duration::from_secs),
            interval: g.keepintvl.map(Duration::from_secs),
            count: g.keepcnt,
        })
    } else {
        None
    };
    let reconnect_sleep = g.reconnect_sleep.unwrap_or(DEFAULT_RECONNECT_SLEEP);
    if reconnect_sleep == 0 {
        return Err(invalid(
            "gearman.reconnect_sleep",
            "must be at least 1 second",
        ));
    }
    let max_packet_bytes = g
        .max_packet_bytes
        .unwrap_or(crate::gearman::DEFAULT_MAX_PACKET_BYTES);
    if max_packet_bytes < 1024 {
        return Err(invalid("gearman.max_packet_bytes", "must be at least 1024"));
    }
    let prefetch = g.prefetch.unwrap_or(DEFAULT_PREFETCH);
    if !(1..=1024).contains(&prefetch) {
        return Err(invalid("gearman.prefetch", "must be between 1 and 1024"));
    }
    let heartbeat = g.heartbeat.unwrap_or(DEFAULT_HEARTBEAT);
    if heartbeat == 0 {
        return Err(invalid("gearman.heartbeat", "must be at least 1 second"));
    }
    Ok(GearmanSettings {
        servers,
        reconnect_sleep: Duration::from_secs(reconnect_sleep),
        poll: Duration::from_secs(g.poll.unwrap_or(1)),
        tls,
        keepalive,
        max_packet_bytes,
        prefetch,
        heartbeat: Duration::from_secs(heartbeat),
    })
}

/// Parses `host:port`, `[v6]:port`, `host` (default port), with an optional `tls://` or
/// `tcp://` scheme. Without a scheme a server uses TLS when `ssl_ca` is configured, as
/// the reference worker did.
pub fn parse_server(text: &str, tls_default: bool) -> Result<ServerAddr, ConfigError> {
    let bad = |why: &str| invalid("gearman.servers", format!("'{text}': {why}"));
    let (tls, rest) = if let Some(r) = text.strip_prefix("tls://") {
        (true, r)
    } else if let Some(r) = text.strip_prefix("tcp://") {
        (false, r)
    } else {
        (tls_default, text)
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse::<u16>().map_err(|_| bad("port must be 1..65535"))?,
            None if after.is_empty() => DEFAULT_GEARMAN_PORT,
            None => return Err(bad("expected ':' after ']'")),
        };
        (h.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse::<u16>().map_err(|_| bad("port must be 1..65535"))?,
            ),
            None => (rest.to_string(), DEFAULT_GEARMAN_PORT),
        }
    };
    if port == 0 {
        return Err(bad("port must be 1..65535"));
    }
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(bad("not a host name or address"));
    }
    Ok(ServerAddr { host, port, tls })
}

fn readable(key: &'static str, path: &str) -> Result<PathBuf, ConfigError> {
    std::fs::read(path).map_err(|e| invalid(key, format!("cannot read {path}: {e}")))?;
    Ok(PathBuf::from(path))
}

fn worker_settings(f: &FileConfig) -> Result<WorkerSettings, ConfigError> {
    let w = &f.worker;
    let function = match w.function.as_deref() {
        Some(name) => name.to_string(),
        None => gethostname::gethostname().into_string().map_err(|_| {
            invalid(
                "worker.function",
                "the host name is not valid UTF-8; set the function explicitly",
            )
        })?,
    };
    if function.is_empty()
        || function.len() > 255
        || function.bytes().any(|b| b == 0 || b.is_ascii_whitespace())
    {
        return Err(invalid(
            "worker.function",
            format!("'{function}' is not a usable Gearman function name"),
        ));
    }
    let driver = match w
        .driver
        .as_deref()
        .unwrap_or("haproxy")
        .to_ascii_lowercase()
        .as_str()
    {
        "haproxy" => DriverKind::Haproxy,
        "null" => DriverKind::Null,
        other => {
            return Err(invalid(
                "worker.driver",
                format!("unknown driver '{other}' (haproxy or null)"),
            ))
        }
    };
    let diagnostics_target = match w.diagnostics_target.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(t) => {
            let (host, port) = t.rsplit_once(':').ok_or_else(|| {
                invalid(
                    "worker.diagnostics_target",
                    format!("'{t}' is not host:port"),
                )
            })?;
            if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(invalid(
                    "worker.diagnostics_target",
                    format!("'{t}' is not host:port"),
                ));
            }
            Some(t.to_string())
        }
    };
    let job_timeout = w.job_timeout.unwrap_or(DEFAULT_JOB_TIMEOUT);
    if job_timeout == 0 {
        return Err(invalid("worker.job_timeout", "must be at least 1 second"));
    }
    Ok(WorkerSettings {
        function,
        driver,
        diagnostics_target,
        job_timeout: Duration::from_secs(job_timeout),
        pid: w
            .pid
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
    })
}

fn log_settings(f: &FileConfig) -> Result<LogSettings, ConfigError> {
    let level = match f
        .log
        .level
        .as_deref()
        .unwrap_or("info")
        .to_ascii_lowercase()
        .as_str()
    {
        "critical" => slog::Level::Critical,
        "error" => slog::Level::Error,
        "warning" | "warn" => slog::Level::Warning,
        "info" => slog::Level::Info,
        "debug" => slog::Level::Debug,
        "trace" => slog::Level::Trace,
        other => {
            return Err(invalid(
                "log.level",
                format!("unknown level '{other}' (critical, error, warning, info, debug, trace)"),
            ))
        }
    };
    let format = match f
        .log
        .format
        .as_deref()
        .unwrap_or("term")
        .to_ascii_lowercase()
        .as_str()
    {
        "term" => LogFormat::Term,
        "json" => LogFormat::Json,
        other => {
            return Err(invalid(
                "log.format",
                format!("unknown format '{other}' (term or json)"),
            ))
        }
    };
    Ok(LogSettings {
        level,
        format,
        file: f
            .log
            .file
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
    })
}

pub fn level_name(level: slog::Level) -> &'static str {
    match level {
        slog::Level::Critical => "critical",
        slog::Level::Error => "error",
        slog::Level::Warning => "warning",
        slog::Level::Info => "info",
        slog::Level::Debug => "debug",
        slog::Level::Trace => "trace",
    }
}

fn haproxy_settings(f: &FileConfig) -> Result<HaproxySettings, ConfigError> {
    let h = &f.haproxy;
    let mode = match h
        .mode
        .as_deref()
        .unwrap_or("managed")
        .to_ascii_lowercase()
        .as_str()
    {
        "managed" => HaproxyMode::Managed,
        "service" => HaproxyMode::Service,
        other => {
            return Err(invalid(
                "haproxy.mode",
                format!("unknown mode '{other}' (managed or service)"),
            ))
        }
    };
    let set = |v: &Option<String>| {
        v.as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(PathBuf::from)
    };
    let state_dir = set(&h.state_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    if !state_dir.is_absolute() {
        return Err(invalid("haproxy.state_dir", "must be an absolute path"));
    }
    let in_state = |name: &str| state_dir.join(name);
    let (config_file, logfile, stats_socket, pid_file) = match mode {
        HaproxyMode::Managed => (
            in_state(state_files::CONFIG),
            in_state(state_files::LOG),
            in_state(state_files::STATS_SOCKET),
            in_state(state_files::PID),
        ),
        HaproxyMode::Service => (
            PathBuf::from("/etc/haproxy/haproxy.cfg"),
            PathBuf::from("/var/log/haproxy.log"),
            PathBuf::from("/var/run/haproxy-stats.socket"),
            PathBuf::from("/var/run/haproxy.pid"),
        ),
    };
    let command = |key: &'static str,
                   v: &Option<String>,
                   default: &str|
     -> Result<Vec<String>, ConfigError> {
        let words = program_words(v.as_deref().unwrap_or(default));
        if words.is_empty() {
            return Err(invalid(key, "must name a command"));
        }
        Ok(words)
    };
    let bind_address = h
        .bind_address
        .clone()
        .unwrap_or_else(|| DEFAULT_BIND_ADDRESS.to_string());
    if bind_address.parse::<std::net::IpAddr>().is_err() {
        return Err(invalid(
            "haproxy.bind_address",
            format!("'{bind_address}' is not an IP address"),
        ));
    }
    let mut settings = HaproxySettings {
        mode,
        binary: set(&h.binary).map_or_else(default_haproxy_binary, |b| resolve_program(&b)),
        bind_address,
        config_file: set(&h.config_file).unwrap_or(config_file),
        logfile: set(&h.logfile).unwrap_or(logfile),
        statsfile: set(&h.statsfile).unwrap_or_else(|| in_state(state_files::LEDGER)),
        stats_socket: set(&h.stats_socket).unwrap_or(stats_socket),
        pid_file: set(&h.pid_file).unwrap_or(pid_file),
        start_cmd: command("haproxy.start_cmd", &h.start_cmd, "service haproxy start")?,
        stop_cmd: command("haproxy.stop_cmd", &h.stop_cmd, "service haproxy stop")?,
        reload_cmd: command(
            "haproxy.reload_cmd",
            &h.reload_cmd,
            "service haproxy reload",
        )?,
        runtime_api: h.runtime_api.unwrap_or(true),
        // Resolved below, once the settings exist.
        sudo: Vec::new(),
        sudo_setting: h.sudo.as_deref().map(program_words),
        reference_statsfile: set(&h.reference_statsfile),
        maxconn: match h.maxconn.unwrap_or(DEFAULT_MAXCONN) {
            0 => return Err(invalid("haproxy.maxconn", "must be at least 1")),
            n => n,
        },
        hard_stop_after: match h.hard_stop_after.unwrap_or(DEFAULT_HARD_STOP_AFTER) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        },
        max_old_workers: h.max_old_workers.unwrap_or(DEFAULT_MAX_OLD_WORKERS),
        state_dir,
    };
    settings.sudo = settings.sudo_for(nix::unistd::geteuid().is_root());
    for (key, p) in [
        ("haproxy.config_file", &settings.config_file),
        ("haproxy.logfile", &settings.logfile),
        ("haproxy.statsfile", &settings.statsfile),
        ("haproxy.stats_socket", &settings.stats_socket),
        ("haproxy.pid_file", &settings.pid_file),
    ]
    .into_iter()
    .chain(
        settings
            .reference_statsfile
            .as_ref()
            .map(|p| ("haproxy.reference_statsfile", p)),
    ) {
        let text = p.display().to_string();
        // These paths are written into haproxy.cfg: keep them plain.
        if !p.is_absolute()
            || text
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '#')
        {
            return Err(invalid(
                key,
                format!("'{text}' must be an absolute path without spaces or quotes"),
            ));
        }
    }
    Ok(settings)
}

/// A command line split into words (no shell), its program resolved by [`resolve_program`].
fn program_words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = text.split_whitespace().map(String::from).collect();
    if let Some(first) = words.first_mut() {
        *first = resolve_program(Path::new(first.as_str()))
            .display()
            .to_string();
    }
    words
}

/// The HAProxy binary when `haproxy.binary` is not set: `haproxy`, resolved by
/// [`resolve_program`]. The one lookup of HAProxy.
pub fn default_haproxy_binary() -> PathBuf {
    resolve_program(Path::new("haproxy"))
}

/// The HAProxy a worker started now would use without a configuration file: the
/// `LIBRA_WORKER__HAPROXY__BINARY` override, else [`default_haproxy_binary`]. The tests
/// and the bench use it, so that one variable points all of them at another HAProxy.
pub fn haproxy_binary_from_env() -> PathBuf {
    match std::env::var_os(format!("{ENV_PREFIX}__HAPROXY__BINARY")) {
        Some(path) if !path.is_empty() => resolve_program(Path::new(&path)),
        _ => default_haproxy_binary(),
    }
}

/// A bare program name (`haproxy`) as an absolute path: found on `PATH`, or in the sbin
/// directories an unprivileged user's `PATH` often lacks (Debian installs HAProxy in
/// /usr/sbin). Unchanged when it is a path already or is found nowhere.
pub fn resolve_program(name: &Path) -> PathBuf {
    if name.components().count() != 1 {
        return name.to_path_buf();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/usr/local/sbin", "/sbin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| name.to_path_buf())
}

fn metrics_settings(f: &FileConfig) -> Result<MetricsSettings, ConfigError> {
    let listen = match f.metrics.listen.as_deref().map(str::trim) {
        None => Some(
            DEFAULT_METRICS_LISTEN
                .parse()
                .map_err(|_| invalid("metrics.listen", "bad default"))?,
        ),
        Some("") => None,
        Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "metrics.listen",
                format!("'{a}' is not ip:port (empty disables)"),
            )
        })?),
    };
    Ok(MetricsSettings {
        listen,
        summary_interval: Duration::from_secs(
            f.metrics
                .summary_interval
                .unwrap_or(DEFAULT_SUMMARY_INTERVAL),
        ),
    })
}

fn limits_settings(f: &FileConfig) -> Result<Limits, ConfigError> {
    let l = &f.limits;
    let positive = |key: &'static str, v: Option<usize>, default: usize| match v {
        Some(0) => Err(invalid(key, "must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    Ok(Limits {
        max_job_bytes: positive(
            "limits.max_job_bytes",
            l.max_job_bytes,
            DEFAULT_MAX_JOB_BYTES,
        )?,
        max_json_depth: positive(
            "limits.max_json_depth",
            l.max_json_depth,
            DEFAULT_MAX_JSON_DEPTH,
        )?,
        max_load_balancers: positive(
            "limits.max_load_balancers",
            l.max_load_balancers,
            DEFAULT_MAX_LOAD_BALANCERS,
        )?,
        max_nodes: positive("limits.max_nodes", l.max_nodes, DEFAULT_MAX_NODES)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn servers_parse_in_every_form() {
        assert_eq!(
            parse_server("10.0.0.1:4730", false).unwrap(),
            ServerAddr {
                host: "10.0.0.1".into(),
                port: 4730,
                tls: false
            }
        );
        assert_eq!(parse_server("gm.example", false).unwrap().port, 4730);
        assert_eq!(
            parse_server("[::1]:5000", false).unwrap(),
            ServerAddr {
                host: "::1".into(),
                port: 5000,
                tls: false
            }
        );
        assert!(parse_server("tls://h:1", false).unwrap().tls);
        assert!(!parse_server("tcp://h:1", true).unwrap().tls);
        assert!(parse_server("h:1", true).unwrap().tls);
        for bad in ["h:0", "h:70000", "h:x", ":80", "a b:1", "[::1"] {
            assert!(parse_server(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "w.toml",
            "[gearman]\nservers = [\"a:1\"]\nreconect_sleep = 3\n",
        );
        let err = Settings::load_with_env(&p, &[]).unwrap_err().to_string();
        assert!(err.contains("reconect_sleep"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "w.toml", "[log]\nlevel = \"loud\"\n");
        let err = Settings::load_with_env(&p, &[]).unwrap_err().to_string();
        assert!(err.starts_with("log.level:"), "{err}");
        let p = write(&dir, "w2.toml", "[gearman]\nservers = [\"a:99999\"]\n");
        let err = Settings::load_with_env(&p, &[]).unwrap_err().to_string();
        assert!(err.starts_with("gearman.servers:"), "{err}");
    }

    #[test]
    fn heartbeat_defaults_to_30_s_and_refuses_zero() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "w.toml", "");
        let s = Settings::load_with_env(&p, &[]).unwrap();
        assert_eq!(s.gearman.heartbeat, Duration::from_secs(DEFAULT_HEARTBEAT));
        let p = write(&dir, "h.toml", "[gearman]\nheartbeat = 2\n");
        let s = Settings::load_with_env(&p, &[]).unwrap();
        assert_eq!(s.gearman.heartbeat, Duration::from_secs(2));
        let p = write(&dir, "z.toml", "[gearman]\nheartbeat = 0\n");
        let err = Settings::load_with_env(&p, &[]).unwrap_err().to_string();
        assert!(err.starts_with("gearman.heartbeat:"), "{err}");
    }

    #[test]
    fn unreadable_tls_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "w.toml",
            "[gearman]\nssl_ca = \"/nonexistent/ca.pem\"\n",
        );
        let err = Settings::load_with_env(&p, &[]).unwrap_err().to_string();
        assert!(
            err.starts_with("gearman.ssl_ca: cannot read /nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn hostname_check_is_on_in_toml_and_off_in_the_reference_ini() {
        let dir = tempfile::tempdir().unwrap();
        let ca = write(&dir, "ca.pem", "");
        let ca = ca.display();
        let verify = |name: &str, text: String| {
            let s = Settings::load_with_env(&write(&dir, name, &text), &[]).unwrap();
            let noted = s.warnings.iter().any(|w| w.contains("not checked"));
            let shown = s.effective().gearman.ssl_verify_hostname;
            (s.gearman.tls.map(|t| t.verify_hostname), shown, noted)
        };
        let on = (Some(true), Some(true), false);
        let off = (Some(false), Some(false), true);
        assert_eq!(
            verify("a.toml", format!("[gearman]\nssl_ca = \"{ca}\"\n")),
            on
        );
        assert_eq!(
            verify(
                "b.toml",
                format!("[gearman]\nssl_ca = \"{ca}\"\nssl_verify_hostname = false\n")
            ),
            off
        );
        assert_eq!(verify("c.cfg", format!("[gearman]\nssl_ca = {ca}\n")), off);
        assert_eq!(
            verify(
                "d.cfg",
                format!("[gearman]\nssl_ca = {ca}\nssl_verify_hostname = True\n")
            ),
            on
        );
        // Without TLS the key means nothing: not shown, nothing noted.
        assert_eq!(verify("e.cfg", String::new()), (None, None, false));
        // Every server plain: nothing goes unchecked, so nothing to note.
        let plain = verify(
            "f.cfg",
            format!("[gearman]\nssl_ca = {ca}\nservers = tcp://a:1\n"),
        );
        assert_eq!(plain, (Some(false), Some(false), false));
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "w.toml",
            "[gearman]\nservers = [\"a:1\"]\n[worker]\nfunction = \"f\"\n",
        );
        let env = vec![
            (
                "LIBRA_WORKER__GEARMAN__SERVERS".to_string(),
                "b:2, c:3".to_string(),
            ),
            (
                "LIBRA_WORKER__WORKER__JOB_TIMEOUT".to_string(),
                "7".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let s = Settings::load_with_env(&p, &env).unwrap();
        let hosts: Vec<_> = s.gearman.servers.iter().map(|s| s.host_port()).collect();
        assert_eq!(hosts, vec!["b:2", "c:3"]);
        assert_eq!(s.worker.job_timeout, Duration::from_secs(7));
        assert_eq!(s.worker.function, "f");
    }

    #[test]
    fn unknown_environment_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "w.toml", "");
        let env = vec![(
            "LIBRA_WORKER__GEARMAN__SERVRS".to_string(),
            "b:2".to_string(),
        )];
        let err = Settings::load_with_env(&p, &env).unwrap_err().to_string();
        assert!(err.contains("servrs"), "{err}");
    }

    #[test]
    fn reference_ini_maps_onto_native_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "libra.cfg",
            "[DEFAULT]\nverbose = true\ndebug = false\ndaemon = true\nuser = libra\ngroup = libra\n\n\
             [gearman]\nservers = 10.0.0.1:4730, 10.0.0.2:4731\nkeepalive = True\nkeepcnt = 4\nkeepidle = 600\nkeepintvl = 30\nreconnect_sleep = 30\npoll = 1\n\n\
             [worker]\ndriver = haproxy\npid = /var/run/libra/libra_worker.pid\n\n\
             [worker:haproxy]\nservice = ubuntu\nlogfile = /var/log/haproxy.log\nstatsfile = /var/log/haproxy.stats\n\n\
             [admin_api]\ndb_sections = mysql1\n",
        );
        let s = Settings::load_with_env(&p, &[]).unwrap();
        assert_eq!(s.gearman.servers.len(), 2);
        assert_eq!(s.gearman.servers[1].port, 4731);
        assert_eq!(s.gearman.reconnect_sleep, Duration::from_secs(30));
        assert_eq!(s.gearman.keepalive.and_then(|k| k.count), Some(4));
        assert_eq!(s.haproxy.mode, HaproxyMode::Service);
        // The reference's METRICS state is taken over; the worker's own ledger is its own.
        assert_eq!(
            s.haproxy.reference_statsfile,
            Some(PathBuf::from("/var/log/haproxy.stats"))
        );
        assert_eq!(
            s.haproxy.statsfile,
            PathBuf::from(DEFAULT_STATE_DIR).join("metrics.json")
        );
        assert_eq!(
            s.haproxy.config_file,
            PathBuf::from("/etc/haproxy/haproxy.cfg")
        );
        assert_eq!(s.log.level, slog::Level::Info);
        assert_eq!(
            s.worker.pid,
            Some(PathBuf::from("/var/run/libra/libra_worker.pid"))
        );
        let ignored: Vec<_> = s
            .warnings
            .iter()
            .filter(|w| w.contains("ignored"))
            .collect();
        assert_eq!(ignored.len(), 1, "{:?}", s.warnings);
        assert!(ignored[0].contains("[admin_api]"), "{ignored:?}");
    }

    #[test]
    fn ini_defaults_are_the_references() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "a.cfg", "[gearman]\nservers = a:1\n");
        let s = Settings::load_with_env(&p, &[]).unwrap();
        assert_eq!(s.haproxy.mode, HaproxyMode::Service);
        assert_eq!(
            s.haproxy.config_file,
            PathBuf::from("/etc/haproxy/haproxy.cfg")
        );
        assert_eq!(s.haproxy.logfile, PathBuf::from("/var/log/haproxy.log"));
        assert_eq!(
            s.haproxy.reference_statsfile,
            Some(PathBuf::from(reference_ini::REFERENCE_STATSFILE))
        );
        assert!(s
            .haproxy
            .reload_cmd
            .ends_with(&["haproxy".to_string(), "reload".to_string()]));
        assert!(
            s.haproxy.reload_cmd[0].ends_with("service"),
            "{:?}",
            s.haproxy.reload_cmd
        );
        let p = write(&dir, "b.cfg", "[worker:haproxy]\nservice = UBUNTU\n");
        assert_eq!(
            Settings::load_with_env(&p, &[]).unwrap().haproxy.mode,
            HaproxyMode::Service
        );
        let p = write(&dir, "c.cfg", "[worker:haproxy]\nservice = redhat\n");
        let err = Settings::load_with_env(&p, &[]).unwrap_err().to_string();
        assert!(err.contains("service = redhat"), "{err}");
        // Our own [haproxy] section in the INI still chooses managed mode.
        let p = write(&dir, "d.cfg", "[haproxy]\nmode = managed\n");
        assert_eq!(
            Settings::load_with_env(&p, &[]).unwrap().haproxy.mode,
            HaproxyMode::Managed
        );
        // The native format keeps managed mode and no reference state by default.
        let p = write(&dir, "e.toml", "");
        let s = Settings::load_with_env(&p, &[]).unwrap();
        assert_eq!(s.haproxy.mode, HaproxyMode::Managed);
        assert_eq!(s.haproxy.reference_statsfile, None);
        assert!(s.haproxy.sudo.is_empty());
    }

    #[test]
    fn privileged_steps_go_through_the_sudo_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "s.toml",
            "[haproxy]\nmode = \"service\"\nsudo = \"/usr/bin/sudo -n\"\n",
        );
        let s = Settings::load_with_env(&p, &[]).unwrap();
        assert_eq!(s.haproxy.sudo, ["/usr/bin/sudo", "-n"]);
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            s.haproxy.privileged(&argv(&["/bin/mv", "a", "b"])),
            argv(&["/usr/bin/sudo", "-n", "/bin/mv", "a", "b"])
        );
        // A command written with sudo already is not wrapped twice.
        assert_eq!(
            s.haproxy.privileged(&argv(&["/usr/bin/sudo", "-n", "x"])),
            argv(&["/usr/bin/sudo", "-n", "x"])
        );
        let p = write(
            &dir,
            "n.toml",
            "[haproxy]\nmode = \"service\"\nsudo = \"\"\n",
        );
        let s = Settings::load_with_env(&p, &[]).unwrap();
        assert!(s.haproxy.sudo.is_empty());
        assert_eq!(
            s.haproxy.privileged(&argv(&["/bin/mv", "a", "b"])),
            argv(&["/bin/mv", "a", "b"])
        );
    }

    #[test]
    fn haproxy_limits_have_the_references_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "e.toml", "");
        let s = Settings::load_with_env(&p, &[]).unwrap();
        assert_eq!(s.haproxy.maxconn, 50_000);
        assert_eq!(s.haproxy.hard_stop_after, None);
        assert_eq!(s.haproxy.max_old_workers, DEFAULT_MAX_OLD_WORKERS);
        let p = write(
            &dir,
            "s.toml",
            "[haproxy]\nmaxconn = 10\nhard_stop_after = 3600\nmax_old_workers = 1\n",
        );
        let s = Settings::load_with_env(&p, &[]).unwrap();
        assert_eq!(
            (
                s.haproxy.maxconn,
                s.haproxy.hard_stop_after,
                s.haproxy.max_old_workers
            ),
            (10, Some(Duration::from_secs(3600)), 1)
        );
        let p = write(&dir, "z.toml", "[haproxy]\nmaxconn = 0\n");
        let err = Settings::load_with_env(&p, &[]).unwrap_err().to_string();
        assert!(err.starts_with("haproxy.maxconn:"), "{err}");
    }

    #[test]
    fn ini_unknown_key_and_section_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "a.cfg", "[gearman]\nserverz = a:1\n");
        let err = Settings::load_with_env(&p, &[]).unwrap_err().to_string();
        assert!(
            err.contains("[gearman]") && err.contains("serverz"),
            "{err}"
        );
        let p = write(&dir, "b.cfg", "[gearmen]\nservers = a:1\n");
        let err = Settings::load_with_env(&p, &[]).unwrap_err().to_string();
        assert!(
            err.contains("[gearmen]") && err.contains("did you mean [gearman]"),
            "{err}"
        );
        // Another service's section, however odd, is not ours to refuse.
        let p = write(
            &dir,
            "c.cfg",
            "[keystone]\n[mysql1]\nport = 3306\n[worker:other]\nx = 1\n",
        );
        let s = Settings::load_with_env(&p, &[]).unwrap();
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains("[keystone]") && w.contains("[mysql1]")),
            "{:?}",
            s.warnings
        );
    }
}
