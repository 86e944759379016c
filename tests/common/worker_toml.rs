//! Workers whose configuration a test edits beyond what `WorkerConfig` renders (TLS files,
//! log format and level, heartbeat): the rendered TOML is rewritten key by key before the
//! worker starts, so the shared `WorkerConfig` and `Worker` stay as they are. Also the
//! same settings as the reference worker's INI file, for what differs by format.

use std::path::Path;

use super::{Worker, WorkerConfig};

impl Worker {
    /// Starts a worker from `config`'s TOML as changed by `edit` (given the TOML and the
    /// worker's directory), e.g. `|t, _| set_key(&t, "gearman", "heartbeat", "1")`.
    pub fn start_edited(
        config: WorkerConfig,
        edit: impl FnOnce(String, &Path) -> String,
    ) -> Worker {
        let dir = tempfile::tempdir().expect("tempdir");
        let toml = edit(config.toml(dir.path()), dir.path());
        Worker::start_with_toml(config, dir, &toml)
    }
}

impl Worker {
    /// Starts a worker from `config` written as the reference worker's INI file
    /// (`worker.cfg`), with `gearman_extra` lines added to its `[gearman]` section.
    pub fn start_ini(config: WorkerConfig, gearman_extra: &str) -> Worker {
        let dir = tempfile::tempdir().expect("tempdir");
        let ini = reference_ini(&config, dir.path(), gearman_extra);
        Worker::start_with_file(config, dir, "worker.cfg", &ini)
    }
}

/// `config` in the reference INI's shape: `tls://` servers written bare (a bare entry is
/// TLS when `gearman_extra` sets `ssl_ca`), `[worker] function` and `driver`, plus the native `[log]`,
/// `[haproxy]` and `[metrics]` sections the INI reader also takes. Only `servers`,
/// `reconnect_sleep`, the function and the driver are taken from `config`.
pub fn reference_ini(config: &WorkerConfig, dir: &Path, gearman_extra: &str) -> String {
    let servers: Vec<&str> = config
        .servers
        .iter()
        // The reference's form: a bare entry is TLS when ssl_ca is set.
        .map(|s| s.strip_prefix("tls://").unwrap_or(s))
        .collect();
    format!(
        "[DEFAULT]\nverbose = true\ndebug = true\n\n\
         [gearman]\nservers = {}\nreconnect_sleep = {}\n{}\n\n\
         [worker]\nfunction = {}\ndriver = {}\n\n\
         [log]\nlevel = debug\n\n\
         [haproxy]\nstate_dir = {}\nbind_address = 127.0.0.1\n\n\
         [metrics]\nlisten =\n",
        servers.join(", "),
        config.reconnect_sleep,
        gearman_extra,
        config.function,
        config.driver,
        dir.join("state").display(),
    )
}

/// Sets `key = value` (`value` is TOML, quoted by the caller) in table `[section]`,
/// replacing the key if the table has it. The table must exist.
pub fn set_key(toml: &str, section: &str, key: &str, value: &str) -> String {
    let header = format!("[{section}]");
    let mut out = Vec::new();
    let mut in_section = false;
    let mut done = false;
    for line in toml.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_section = trimmed == header;
            out.push(line.to_string());
            if in_section && !done && !section_has_key(toml, section, key) {
                out.push(format!("{key} = {value}"));
                done = true;
            }
            continue;
        }
        if in_section && is_key_line(trimmed, key) {
            out.push(format!("{key} = {value}"));
            done = true;
            continue;
        }
        out.push(line.to_string());
    }
    assert!(done, "no [{section}] table in:\n{toml}");
    out.join("\n") + "\n"
}

/// A TOML string literal for `path`.
pub fn quoted_path(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

fn section_has_key(toml: &str, section: &str, key: &str) -> bool {
    let header = format!("[{section}]");
    let mut in_section = false;
    for line in toml.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_section = trimmed == header;
        } else if in_section && is_key_line(trimmed, key) {
            return true;
        }
    }
    false
}

fn is_key_line(line: &str, key: &str) -> bool {
    line.split_once('=').is_some_and(|(k, _)| k.trim() == key)
}
