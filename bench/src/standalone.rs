//! A HAProxy started outside the worker, from an edited copy of the configuration the
//! worker rendered, and driven by the driver's own process control (`process::Managed`):
//! the bench's way to measure configuration variants the worker does not write (without
//! `option idle-close-on-response`, with `httpclient.ssl.verify none`) without any change
//! to the driver. The copy gets its own directory, sockets and listening ports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libra_worker::tools::process::{self, Managed, ManagedPaths, Process, StepTimeouts};
use libra_worker::tools::render;

/// The frontend option whose effect on keep-alive clients across reloads is compared.
pub const IDLE_CLOSE_LINE: &str = "    option idle-close-on-response";
/// A global setting that stops HAProxy 2.6 from loading the system CA store at every
/// start (for its internal HTTP client, which these configurations never use).
pub const SKIP_CA_LINE: &str = "    httpclient.ssl.verify none";

#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error("cannot edit the rendered configuration: {0}")]
    Edit(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("the edited configuration does not pass `haproxy -c`: {0}")]
    Invalid(String),
    #[error("the standalone HAProxy did not start: {0}")]
    Start(String),
    #[error("the standalone HAProxy did not reload: {0}")]
    Reload(String),
}

/// What to change in the copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Edits {
    /// Remove `option idle-close-on-response` from every frontend.
    pub drop_idle_close: bool,
    /// Add `httpclient.ssl.verify none` to `global`.
    pub skip_ca_load: bool,
}

impl Edits {
    pub fn label(self) -> String {
        let mut parts = Vec::new();
        parts.push(if self.drop_idle_close {
            "without idle-close-on-response"
        } else {
            "with idle-close-on-response"
        });
        if self.skip_ca_load {
            parts.push("httpclient.ssl.verify none");
        }
        parts.join(", ")
    }
}

/// The configuration text of the copy: every path under `from_dir` moved under `to_dir`,
/// every `bind <ip>:<old>` of `ports` moved to its new port, then `edits`. Each change
/// must find what it changes, so a renderer that moved on makes this fail loudly.
pub fn edit(
    rendered: &str,
    from_dir: &Path,
    to_dir: &Path,
    ports: &[(u16, u16)],
    edits: Edits,
) -> Result<String, String> {
    let from = from_dir.display().to_string();
    if from.is_empty() || !rendered.contains(&from) {
        return Err(format!("the configuration has no path under {from}"));
    }
    let mut text = rendered.replace(&from, &to_dir.display().to_string());
    for &(old, new) in ports {
        let suffix = format!(":{old}");
        let mut found = false;
        text = text
            .lines()
            .map(|line| {
                if line.trim_start().starts_with("bind ") && line.ends_with(&suffix) {
                    found = true;
                    format!("{}:{new}", &line[..line.len() - suffix.len()])
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        text.push('\n');
        if !found {
            return Err(format!("no `bind` line on port {old}"));
        }
    }
    if edits.drop_idle_close {
        let before = text.lines().count();
        text = text
            .lines()
            .filter(|l| *l != IDLE_CLOSE_LINE)
            .collect::<Vec<_>>()
            .join("\n");
        text.push('\n');
        if text.lines().count() == before {
            return Err(format!("no `{}` line", IDLE_CLOSE_LINE.trim()));
        }
    }
    if edits.skip_ca_load {
        if !text.contains("\nglobal\n") {
            return Err("no `global` section".to_string());
        }
        text = text.replacen("\nglobal\n", &format!("\nglobal\n{SKIP_CA_LINE}\n"), 1);
    }
    Ok(text)
}

/// A running standalone HAProxy; stopped when dropped.
pub struct StandaloneHaproxy {
    managed: Managed,
    config: PathBuf,
    stats_socket: PathBuf,
    binary: PathBuf,
    stopped: bool,
}

impl StandaloneHaproxy {
    /// Writes the edited copy of `rendered` (which the worker wrote for its state
    /// directory `from_dir`) into `dir`, checks it and starts it in master-worker mode.
    pub fn start(
        binary: &Path,
        rendered: &str,
        from_dir: &Path,
        dir: &Path,
        ports: &[(u16, u16)],
        edits: Edits,
    ) -> Result<StandaloneHaproxy, StandaloneError> {
        std::fs::create_dir_all(dir).map_err(|source| StandaloneError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        let text = edit(rendered, from_dir, dir, ports, edits).map_err(StandaloneError::Edit)?;
        let write = |path: PathBuf, bytes: &str| {
            std::fs::write(&path, bytes).map_err(|source| StandaloneError::Write {
                path: path.display().to_string(),
                source,
            })
        };
        let config = dir.join("haproxy.cfg");
        write(config.clone(), &text)?;
        // The state file the copy names (moved with the rest); an empty one is valid.
        write(dir.join("server-state"), render::EMPTY_SERVER_STATE)?;
        let stats_socket = dir.join("stats.sock");
        if !text.contains(&format!("stats socket {} ", stats_socket.display())) {
            return Err(StandaloneError::Edit(format!(
                "the copy does not declare the stats socket {}",
                stats_socket.display()
            )));
        }
        process::validate(binary, &config).map_err(|e| StandaloneError::Invalid(e.to_string()))?;
        let paths = ManagedPaths {
            binary: binary.to_path_buf(),
            config_file: config.clone(),
            pid_file: dir.join("haproxy.pid"),
            master_socket: dir.join("master.sock"),
            log_file: dir.join("haproxy.log"),
            stats_socket: Some(stats_socket.clone()),
        };
        let mut managed = Managed::new(paths).with_timeouts(StepTimeouts {
            start: Duration::from_secs(20),
            reload: Duration::from_secs(20),
            stop: Duration::from_secs(10),
            cli: Duration::from_secs(2),
            command: Duration::from_secs(20),
        });
        // On a failed start `Managed` has already killed what it spawned.
        managed
            .start()
            .map_err(|e| StandaloneError::Start(e.to_string()))?;
        Ok(StandaloneHaproxy {
            managed,
            config,
            stats_socket,
            binary: binary.to_path_buf(),
            stopped: false,
        })
    }

    pub fn config(&self) -> &Path {
        &self.config
    }

    pub fn stats_socket(&self) -> &Path {
        &self.stats_socket
    }

    pub fn master_socket(&self) -> &Path {
        &self.managed.paths().master_socket
    }

    /// `haproxy -c` of the copy, as the driver runs it before a reload; returns its time.
    pub fn validate(&self) -> Result<Duration, StandaloneError> {
        let started = Instant::now();
        process::validate(&self.binary, &self.config)
            .map_err(|e| StandaloneError::Invalid(e.to_string()))?;
        Ok(started.elapsed())
    }

    /// A reload by the driver's own code; returns its time.
    pub fn reload(&mut self) -> Result<Duration, StandaloneError> {
        let started = Instant::now();
        self.managed
            .reload()
            .map_err(|e| StandaloneError::Reload(e.to_string()))?;
        Ok(started.elapsed())
    }

    /// Reloads done so far (from the master's `show proc`).
    pub fn reloads(&self) -> Option<u32> {
        self.managed.show_proc().ok().map(|p| p.master.reloads)
    }

    pub fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            if let Err(e) = self.managed.stop_master() {
                note!("libra-bench: stopping the standalone HAProxy: {e}");
            }
        }
    }
}

impl Drop for StandaloneHaproxy {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = "# header\n\nglobal\n    maxconn 4096\n    stats socket /s/state/stats.sock mode 600 level admin expose-fd listeners\n    server-state-file /s/state/server-state\n\nfrontend http-in\n    mode http\n    bind 127.0.0.1:8080\n    option idle-close-on-response\n    default_backend http-servers\n\nbackend http-servers\n    mode http\n    server id-1 127.0.0.1:1 weight 1\n";

    #[test]
    fn edits_paths_ports_and_options() {
        let out = edit(
            RENDERED,
            Path::new("/s/state"),
            Path::new("/t/copy"),
            &[(8080, 9090)],
            Edits {
                drop_idle_close: true,
                skip_ca_load: true,
            },
        )
        .unwrap();
        assert!(
            out.contains("stats socket /t/copy/stats.sock mode 600"),
            "{out}"
        );
        assert!(
            out.contains("server-state-file /t/copy/server-state\n"),
            "{out}"
        );
        assert!(out.contains("    bind 127.0.0.1:9090\n"), "{out}");
        assert!(!out.contains("idle-close-on-response"), "{out}");
        assert!(
            out.contains("\nglobal\n    httpclient.ssl.verify none\n    maxconn"),
            "{out}"
        );
        assert!(!out.contains("/s/state"));
        // The backend's server port is not a bind line and stays.
        assert!(out.contains("server id-1 127.0.0.1:1 weight 1"));
        let kept = edit(
            RENDERED,
            Path::new("/s/state"),
            Path::new("/t"),
            &[],
            Edits::default(),
        )
        .unwrap();
        assert!(kept.contains(IDLE_CLOSE_LINE));
        assert!(!kept.contains("httpclient"));
    }

    #[test]
    fn an_edit_that_finds_nothing_fails() {
        let e = |from: &str, ports: &[(u16, u16)], edits| {
            edit(RENDERED, Path::new(from), Path::new("/t"), ports, edits)
        };
        assert!(e("/elsewhere", &[], Edits::default()).is_err());
        assert!(e("/s/state", &[(81, 82)], Edits::default()).is_err());
        let without = RENDERED.replace(IDLE_CLOSE_LINE, "    option httplog");
        assert!(edit(
            &without,
            Path::new("/s/state"),
            Path::new("/t"),
            &[],
            Edits {
                drop_idle_close: true,
                skip_ca_load: false
            }
        )
        .is_err());
    }

    #[test]
    fn starts_reloads_and_stops_a_copy() {
        // HAProxy is a prerequisite of the test suite (scripts/install-deps.sh): no probe,
        // a missing one fails here.
        let binary = libra_worker::config::haproxy_binary_from_env();
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("state");
        let port = crate::procs::free_port().unwrap();
        let rendered = format!(
            "\nglobal\n    stats socket {}/stats.sock mode 600 level admin expose-fd listeners\n    server-state-file {}/server-state\n\ndefaults\n    mode http\n    timeout client 5s\n    timeout server 5s\n    timeout connect 5s\n    load-server-state-from-file global\n\nfrontend http-in\n    bind 127.0.0.1:1\n{IDLE_CLOSE_LINE}\n    default_backend b\n\nbackend b\n    server s 127.0.0.1:1\n",
            from.display(),
            from.display()
        );
        let copy = dir.path().join("copy");
        let mut h = StandaloneHaproxy::start(
            &binary,
            &rendered,
            &from,
            &copy,
            &[(1, port)],
            Edits {
                drop_idle_close: true,
                skip_ca_load: true,
            },
        )
        .unwrap();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert_eq!(h.reloads(), Some(0));
        assert!(h.validate().unwrap() > Duration::ZERO);
        h.reload().unwrap();
        assert_eq!(h.reloads(), Some(1));
        h.stop();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
