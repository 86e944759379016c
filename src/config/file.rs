//! The native configuration file shape (TOML, and environment overrides on top of it):
//! serde structs that refuse unknown keys. Every field is optional here; defaults and
//! checks are applied when `Settings` are built from it.

use serde::{Deserialize, Deserializer, Serialize};

/// The whole file: one table per section.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub gearman: GearmanFile,
    pub worker: WorkerFile,
    pub log: LogFile,
    pub haproxy: HaproxyFile,
    pub metrics: MetricsFile,
    pub limits: LimitsFile,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GearmanFile {
    #[serde(
        deserialize_with = "string_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub servers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnect_sleep: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_ca: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_key: Option<String>,
    /// Check the job server's name (or IP) against its certificate. TOML: true; the
    /// reference INI: false, as the reference worker never checked it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_verify_hostname: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepcnt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepidle: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepintvl: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_packet_bytes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics_target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HaproxyFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logfile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statsfile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats_socket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_cmd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_cmd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload_cmd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_api: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sudo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_statsfile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxconn: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hard_stop_after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_old_workers: Option<u32>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary_interval: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_job_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_json_depth: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_load_balancers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_nodes: Option<usize>,
}

/// Accepts a list of strings or one comma-separated string (the reference INI's form,
/// and the natural form of an environment variable).
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => None,
        Some(OneOrMany::One(s)) => Some(split_list(&s)),
        Some(OneOrMany::Many(v)) => Some(v.iter().map(|s| s.trim().to_string()).collect()),
    })
}

/// Splits `a, b,c` into trimmed, non-empty items.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}
