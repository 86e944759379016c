//! Reads the reference (Python) worker's INI file unchanged and maps it onto the native
//! configuration shape: `[DEFAULT]`, `[gearman]`, `[worker]` and `[worker:haproxy]`,
//! plus our own sections under their native names. Sections that belong to other Libra
//! services (the same file often served them all) are ignored with a warning.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::file::{
    FileConfig, GearmanFile, HaproxyFile, LimitsFile, LogFile, MetricsFile, WorkerFile,
};
use super::ConfigError;

/// Sections of a shared `libra.cfg` that configure other Libra services, not the worker.
const OTHER_LIBRA_SECTIONS: &[&str] = &[
    "api",
    "admin_api",
    "mgm",
    "pool_mgm",
    "billing",
    "keystone_authtoken",
    "mysql",
];

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
    for (name, value) in sections {
        let section = |e: config::ConfigError| ConfigError::Section {
            section: name.clone(),
            problem: e.to_string(),
        };
        match name.as_str() {
            "DEFAULT" => {
                let table = value.clone().into_table().map_err(section)?;
                for key in table.keys() {
                    if !["daemon", "user", "group", "verbose", "debug"].contains(&key.as_str()) {
                        warnings.push(format!("[DEFAULT] {key} is not a worker option; ignored"));
                    }
                }
                default = value.try_deserialize().map_err(section)?;
            }
            "gearman" => out.gearman = value.try_deserialize::<GearmanFile>().map_err(section)?,
            "worker" => worker = value.try_deserialize().map_err(section)?,
            "worker:haproxy" => {
                let mut table = value.into_table().map_err(section)?;
                service = table.remove("service");
                worker_haproxy = config::Value::new(None, config::ValueKind::Table(table))
                    .try_deserialize()
                    .map_err(section)?;
            }
            "haproxy" => haproxy_native = Some(value.try_deserialize().map_err(section)?),
            "log" => out.log = value.try_deserialize::<LogFile>().map_err(section)?,
            "metrics" => out.metrics = value.try_deserialize::<MetricsFile>().map_err(section)?,
            "limits" => out.limits = value.try_deserialize::<LimitsFile>().map_err(section)?,
            other if OTHER_LIBRA_SECTIONS.contains(&other) => {
                warnings.push(format!(
                    "section [{other}] configures another Libra service; ignored"
                ));
            }
            other => {
                return Err(ConfigError::Section {
                    section: other.to_string(),
                    problem: "unknown section".to_string(),
                })
            }
        }
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
    if haproxy.mode.is_none() && service.is_some() {
        // The reference's `service = ubuntu`: HAProxy is run by the distribution's scripts.
        haproxy.mode = Some("service".to_string());
    }
    out.haproxy = haproxy;
    Ok(IniRead {
        config: out,
        warnings,
    })
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
        runtime_api
    );
}
