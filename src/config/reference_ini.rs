//! Reads the reference (Python) worker's INI file unchanged and maps it onto the native
//! configuration shape: `[DEFAULT]`, `[gearman]`, `[worker]` and `[worker:haproxy]`,
//! plus our own sections under their native names. One `libra.cfg` usually serves every
//! Libra service: sections and `[DEFAULT]` keys the worker does not know are ignored, as
//! oslo.config ignores them, and listed in one warning; a section name one or two letters
//! away from one of ours is a typo and an error, as is an unknown key in our sections.
//! Defaults are the reference's: HAProxy belongs to the distribution (service mode) and
//! its METRICS state file is `/var/log/haproxy.stats`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::file::{
    FileConfig, GearmanFile, HaproxyFile, LimitsFile, LogFile, MetricsFile, WorkerFile,
};
use super::ConfigError;

/// The sections the worker reads; any other is another service's and ignored.
const WORKER_SECTIONS: &[&str] = &[
    "DEFAULT",
    "gearman",
    "worker",
    "worker:haproxy",
    "haproxy",
    "log",
    "metrics",
    "limits",
];

/// `[DEFAULT]` keys the worker reads.
const DEFAULT_KEYS: &[&str] = &["daemon", "user", "group", "verbose", "debug"];

/// The reference's `[worker:haproxy] service` values: the OS-services classes it knew.
const SERVICES: &[&str] = &["ubuntu"];

/// The reference's `[worker:haproxy] statsfile` default.
pub const REFERENCE_STATSFILE: &str = "/var/log/haproxy.stats";

/// `[DEFAULT]` keys the worker understands. Others are common oslo options of the
/// other services and are ignored with a warning.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct IniDefault {
    daemon: Option<bool>,
    user: Option<String>,
    group: Option<String>,
    verbose: Option<bool>,
    debug: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct IniWorker {
    function: Option<String>,
    driver: Option<String>,
    diagnostics_target: Option<String>,
    job_timeout: Option<u64>,
    pid: Option<String>,
    /// The reference's own log file; ours is `[log] file`.
    logfile: Option<String>,
}

/// The result of reading an INI file: the native configuration and the warnings worth
/// logging once the logger exists.
pub struct IniRead {
    pub config: FileConfig,
    pub warnings: Vec<String>,
}

/// Maps the sections of a parsed INI file onto the native shape.
pub fn from_sections(sections: BTreeMap<String, config::Value>) -> Result<IniRead, ConfigError> {
    let mut out = FileConfig::default();
    let mut warnings = Vec::new();
    let mut default = IniDefault::default();
    let mut worker = IniWorker::default();
    let mut worker_haproxy = HaproxyFile::default();
    // The reference's OS-services class (`service = ubuntu`): HAProxy belongs to the
    // init system.
    let mut service: Option<config::Value> = None;
    let mut haproxy_native: Option<HaproxyFile> = None;
    let mut reference_statsfile: Option<String> = None;
    let mut ignored: Vec<String> = Vec::new();
    for (name, value) in sections {
        let section = |e: config::ConfigError| ConfigError::Section {
            section: name.clone(),
            problem: e.to_string(),
        };
        match name.as_str() {
            "DEFAULT" => {
                let table = value.clone().into_table().map_err(section)?;
                ignored.extend(
                    table
                        .keys()
                        .filter(|k| !DEFAULT_KEYS.contains(&k.as_str()))
                        .map(|k| format!("[DEFAULT] {k}")),
                );
                default = value.try_deserialize().map_err(section)?;
            }
            "gearman" => out.gearman = value.try_deserialize::<GearmanFile>().map_err(section)?,
            "worker" => worker = value.try_deserialize().map_err(section)?,
            "worker:haproxy" => {
                let mut table = value.into_table().map_err(section)?;
                service = table.remove("service");
                reference_statsfile = table
                    .remove("statsfile")
                    .map(|v| v.into_string())
                    .transpose()
                    .map_err(section)?;
                worker_haproxy = config::Value::new(None, config::ValueKind::Table(table))
                    .try_deserialize()
                    .map_err(section)?;
            }
            "haproxy" => haproxy_native = Some(value.try_deserialize().map_err(section)?),
            "log" => out.log = value.try_deserialize::<LogFile>().map_err(section)?,
            "metrics" => out.metrics = value.try_deserialize::<MetricsFile>().map_err(section)?,
            "limits" => out.limits = value.try_deserialize::<LimitsFile>().map_err(section)?,
            other => {
                if let Some(ours) = misspelt(other) {
                    return Err(ConfigError::Section {
                        section: other.to_string(),
                        problem: format!("unknown section; did you mean [{ours}]?"),
                    });
                }
                ignored.push(format!("[{other}]"));
            }
        }
    }
    if !ignored.is_empty() {
        warnings.push(format!(
            "ignored (other Libra services' settings): {}",
            ignored.join(", ")
        ));
    }

    // The reference verified the job server's chain against ssl_ca and never its name;
    // its INI files keep that unless they say otherwise.
    if out.gearman.ssl_verify_hostname.is_none() {
        out.gearman.ssl_verify_hostname = Some(false);
    }
    out.worker = WorkerFile {
        function: worker.function,
        driver: worker.driver,
        diagnostics_target: worker.diagnostics_target,
        job_timeout: worker.job_timeout,
        pid: worker.pid,
    };
    if out.log.file.is_none() {
        out.log.file = worker.logfile;
    }
    if out.log.level.is_none() {
        out.log.level = match (default.debug, default.verbose) {
            (Some(true), _) => Some("debug".to_string()),
            (_, Some(true)) => Some("info".to_string()),
            (Some(false), _) | (_, Some(false)) => Some("warning".to_string()),
            _ => None,
        };
    }
    if default.daemon == Some(true) {
        warnings.push("[DEFAULT] daemon = true: the worker stays in the foreground; run it under a service manager".to_string());
    }
    if default.user.is_some() || default.group.is_some() {
        warnings
            .push("[DEFAULT] user/group: the worker runs as the user that starts it".to_string());
    }

    let mut haproxy = worker_haproxy;
    if let Some(native) = haproxy_native {
        merge_haproxy(&mut haproxy, native);
    }
    if haproxy.mode.is_none() {
        // The reference's `service` (default `ubuntu`): HAProxy is the distribution's,
        // run by its service scripts.
        let name = match service {
            None => "ubuntu".to_string(),
            Some(v) => v.into_string().map_err(|e| ConfigError::Section {
                section: "worker:haproxy".to_string(),
                problem: e.to_string(),
            })?,
        };
        if !SERVICES.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(ConfigError::Section {
                section: "worker:haproxy".to_string(),
                problem: format!(
                    "service = {name}: unknown service ({})",
                    SERVICES.join(", ")
                ),
            });
        }
        haproxy.mode = Some("service".to_string());
    }
    if haproxy.reference_statsfile.is_none() {
        haproxy.reference_statsfile =
            Some(reference_statsfile.unwrap_or_else(|| REFERENCE_STATSFILE.to_string()));
    }
    out.haproxy = haproxy;
    Ok(IniRead {
        config: out,
        warnings,
    })
}

/// The worker's section that `name` is probably a typo of.
fn misspelt(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    WORKER_SECTIONS
        .iter()
        .find(|ours| strsim::damerau_levenshtein(&lower, &ours.to_ascii_lowercase()) <= 2)
        .copied()
}

/// Fills the fields of `into` that are unset from `from`.
fn merge_haproxy(into: &mut HaproxyFile, from: HaproxyFile) {
    macro_rules! fill {
        ($($f:ident),*) => { $( if into.$f.is_none() { into.$f = from.$f; } )* };
    }
    fill!(
        mode,
        binary,
        state_dir,
        bind_address,
        config_file,
        logfile,
        statsfile,
        stats_socket,
        pid_file,
        start_cmd,
        stop_cmd,
        reload_cmd,
        runtime_api,
        sudo,
        reference_statsfile,
        maxconn,
        hard_stop_after,
        max_old_workers
    );
}
