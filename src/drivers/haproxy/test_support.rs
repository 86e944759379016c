//! The one harness for unit tests that run HAProxy: its binary (found as the settings find
//! it), a real managed HAProxy in a temp dir (`TestHaproxy`, killed on drop even when the
//! test fails), `haproxy -c` through the driver's own check, an echo backend, free ports
//! and a small configuration. Waits go through `process::poll`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::process::check::check_config;
use super::process::managed::MASTER_SOCKET_NAME;
use super::process::procfs::{alive, cmdline_has};
use super::process::{Managed, ManagedPaths, Process, ProcessError, StepTimeouts};
use super::runtime_api::StatsSocket;

/// The HAProxy binary the tests run: the default of the settings, resolved as they resolve
/// it.
pub fn haproxy() -> PathBuf {
    crate::config::default_haproxy_binary()
}

/// `haproxy -c` of the file `config` with the driver's own check: HAProxy's warnings about
/// a configuration it accepts, or why it refused it. Bounded generously: it resolves names.
pub fn check(config: &Path) -> Result<Vec<String>, ProcessError> {
    check_config(&haproxy(), config, Duration::from_secs(60))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP echo server on a free port, the backend of the test configurations.
pub fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// Sends `text` on `conn` and reads the echo back.
pub fn echo(conn: &mut TcpStream, text: &str) -> String {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(text.as_bytes()).unwrap();
    let mut buf = vec![0u8; text.len()];
    conn.read_exact(&mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

/// A new connection to `port` echoes through HAProxy.
pub fn serves(port: u16) -> bool {
    match TcpStream::connect(("127.0.0.1", port)) {
        Ok(mut conn) => {
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            conn.write_all(b"ping").is_ok() && {
                let mut buf = [0u8; 4];
                conn.read_exact(&mut buf).is_ok() && &buf == b"ping"
            }
        }
        Err(_) => false,
    }
}

/// A configuration with one frontend (`x-in`) on `binds` and one backend (`x-servers`,
/// server `id-1` on `backend`), its stats socket and server-state file in `dir`.
pub fn config_text(dir: &Path, binds: &[u16], backend: u16) -> String {
    let d = dir.display();
    let binds: String = binds
        .iter()
        .map(|p| format!("    bind 127.0.0.1:{p}\n"))
        .collect();
    format!(
        "global\n    stats socket {d}/stats.sock mode 600 level admin expose-fd listeners\n    \
         log stdout format raw local0\n    server-state-file {d}/server-state\n\n\
         defaults\n    log global\n    mode tcp\n    option tcplog\n    timeout connect 5s\n    \
         timeout client 30s\n    timeout server 30s\n    load-server-state-from-file global\n\n\
         frontend x-in\n{binds}    default_backend x-servers\n\n\
         backend x-servers\n    balance roundrobin\n    server id-1 127.0.0.1:{backend} check inter 1s\n"
    )
}

/// A managed HAProxy's files in `dir`; its configuration must declare `dir/stats.sock`.
pub fn paths(dir: &Path) -> ManagedPaths {
    ManagedPaths {
        binary: haproxy(),
        config_file: dir.join("haproxy.cfg"),
        pid_file: dir.join("haproxy.pid"),
        master_socket: dir.join(MASTER_SOCKET_NAME),
        log_file: dir.join("haproxy.log"),
        stats_socket: Some(dir.join("stats.sock")),
    }
}

pub fn fast_timeouts() -> StepTimeouts {
    StepTimeouts {
        start: Duration::from_secs(20),
        reload: Duration::from_secs(20),
        stop: Duration::from_secs(10),
        cli: Duration::from_secs(2),
        command: Duration::from_secs(20),
    }
}

/// A managed HAProxy in a temp dir. `new` writes a `config_text` configuration whose
/// frontend listens on `port` and forwards to an echo server on `backend`; `empty` leaves
/// the configuration to the test (then `port` and `backend` are 0).
pub struct TestHaproxy {
    pub dir: tempfile::TempDir,
    pub managed: Managed,
    /// The frontend port of the first configuration.
    pub port: u16,
    pub backend: u16,
    masters: Vec<u32>,
}

impl TestHaproxy {
    /// A temp dir for HAProxy's files, without a configuration; does not start it.
    pub fn empty() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let managed = Managed::new(paths(dir.path())).with_timeouts(fast_timeouts());
        TestHaproxy {
            dir,
            managed,
            port: 0,
            backend: 0,
            masters: Vec::new(),
        }
    }

    /// Writes a configuration with one frontend on a free port; does not start it.
    pub fn new() -> Self {
        let mut h = TestHaproxy::empty();
        h.backend = echo_server();
        h.port = free_port();
        h.write_config(&[h.port]);
        h
    }

    pub fn started() -> Self {
        let mut h = TestHaproxy::new();
        h.start();
        h
    }

    /// Starts HAProxy with the configuration file as it is, and tracks its master.
    pub fn start(&mut self) {
        let started = self.managed.start();
        self.track();
        started.unwrap();
    }

    /// Stops HAProxy; the state dir stays, to start it again.
    pub fn stop(&mut self) {
        self.managed.stop().unwrap();
    }

    /// Remembers the current master so that drop kills it whatever happened.
    pub fn track(&mut self) {
        if let Some(pid) = self.managed.master_pid() {
            self.masters.push(pid);
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A `config_text` configuration listening on `binds`, to the echo backend.
    pub fn write_config(&self, binds: &[u16]) {
        self.write_config_text(&config_text(self.dir.path(), binds, self.backend));
    }

    pub fn write_config_text(&self, text: &str) {
        std::fs::write(self.path("haproxy.cfg"), text).unwrap();
    }

    pub fn stats(&self) -> StatsSocket {
        StatsSocket::new(self.path("stats.sock"), Duration::from_secs(2))
    }

    pub fn master_env(&self, pid: u32) -> String {
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
            .replace('\0', "\n")
    }
}

impl Drop for TestHaproxy {
    fn drop(&mut self) {
        let _ = self.managed.stop();
        let pid_file = self.path("haproxy.pid");
        for &pid in &self.masters {
            if alive(pid) && cmdline_has(pid, &pid_file) {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}
