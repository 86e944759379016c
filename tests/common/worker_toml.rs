//! Workers whose configuration a test edits beyond what `WorkerConfig` renders (TLS files,
//! log format and level, heartbeat): the rendered TOML is rewritten key by key before the
//! worker starts, so the shared `WorkerConfig` and `Worker` stay as they are.

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
