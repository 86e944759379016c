//! One appliance under test: a real gearmand and the real worker binary with the HAProxy
//! driver (managed mode, loopback), and the jobs the API server sends it.

use std::time::Duration;

use libra_worker::config::haproxy_binary_from_env;
use libra_worker::tools::capabilities::Capabilities;
use serde_json::{json, Value};

use super::backends::Backend;
use super::{submit, Gearmand, Worker, WorkerConfig};

/// A worker with the HAProxy driver, connected to its own gearmand.
pub struct Appliance {
    pub g: Gearmand,
    pub w: Worker,
}

impl Appliance {
    pub fn start() -> Appliance {
        Self::start_with(|_| {})
    }

    pub fn start_with(tune: impl FnOnce(&mut WorkerConfig)) -> Appliance {
        let g = Gearmand::start();
        let mut cfg = WorkerConfig::new(&[g.addr()]);
        cfg.driver = "haproxy".to_string();
        tune(&mut cfg);
        let w = Worker::start(cfg);
        assert!(
            w.wait_for_log("connected to job server", 1, Duration::from_secs(15)),
            "{}",
            w.log()
        );
        Appliance { g, w }
    }

    /// What the HAProxy under test can do, as the worker asks it
    /// (`LIBRA_WORKER__HAPROXY__BINARY` picks another HAProxy for the worker and the tests).
    pub fn capabilities(&self) -> Capabilities {
        Capabilities::ask(&haproxy_binary_from_env()).expect("haproxy -vv")
    }

    pub fn job(&self, body: Value) -> Value {
        submit(&self.g.addr(), self.w.function(), &body)
    }

    pub fn update(&self, lbs: Value) -> Value {
        self.job(json!({"hpcs_action": "UPDATE", "loadBalancers": lbs}))
    }

    pub fn action(&self, action: &str) -> Value {
        self.job(json!({"hpcs_action": action}))
    }

    pub fn state_dir(&self) -> std::path::PathBuf {
        self.w.dir.path().join("state")
    }

    pub fn live_config(&self) -> Vec<u8> {
        std::fs::read(self.state_dir().join("haproxy.cfg")).unwrap_or_default()
    }

    /// One command on the managed HAProxy's stats socket (`show stat`, `show info`).
    pub fn stats_command(&self, command: &str) -> String {
        socket_command(&self.state_dir().join("stats.sock"), command)
    }

    /// One command on the managed HAProxy's master CLI (`show proc`).
    pub fn master_command(&self, command: &str) -> String {
        socket_command(&self.state_dir().join("master.sock"), command)
    }

    /// A backend's `bout` (bytes sent to clients) as HAProxy counts it now.
    pub fn backend_bytes_out(&self, backend: &str) -> u64 {
        let csv = self.stats_command("show stat");
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or("")
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let (px, sv, bout) = (col("pxname"), col("svname"), col("bout"));
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.len() > bout && f[px] == backend && f[sv] == "BACKEND")
            .map(|f| f[bout].parse().unwrap())
            .unwrap_or_else(|| panic!("no {backend} BACKEND row in:\n{csv}"))
    }
}

/// Sends `command` to a HAProxy CLI socket and returns all it answers.
pub fn socket_command(path: &std::path::Path, command: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("{command}\n").as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

pub fn node(id: u32, b: &Backend) -> Value {
    json!({"id": id, "address": "127.0.0.1", "port": b.port})
}

pub fn http_lb(port: u16, nodes: Vec<Value>) -> Value {
    json!({"name": "web", "protocol": "HTTP", "port": port, "nodes": nodes})
}
