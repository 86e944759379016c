//! The `[haproxy]` section: mode (managed or service), files, the privilege prefix and
//! service commands, process limits, and which HAProxy binary runs (with its environment
//! override for tests and benches).

use super::*;

pub(super) fn haproxy_settings(f: &FileConfig) -> Result<HaproxySettings, ConfigError> {
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
pub(super) fn program_words(text: &str) -> Vec<String> {
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
