//! The small sections: `[worker]`, `[log]`, `[metrics]` and `[limits]`.

use super::*;

pub(super) fn worker_settings(f: &FileConfig) -> Result<WorkerSettings, ConfigError> {
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

pub(super) fn log_settings(f: &FileConfig) -> Result<LogSettings, ConfigError> {
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
        "journal" => LogFormat::Journal,
        other => {
            return Err(invalid(
                "log.format",
                format!("unknown format '{other}' (term, json or journal)"),
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

pub(super) fn metrics_settings(f: &FileConfig) -> Result<MetricsSettings, ConfigError> {
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

pub(super) fn limits_settings(f: &FileConfig) -> Result<Limits, ConfigError> {
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
