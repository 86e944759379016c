//! The shared integration-test harness: starts real `gearmand`, the real `libra-worker`
//! binary (which runs a real HAProxy), real backends, on free loopback ports in
//! temporary directories, and stops them all when dropped.
#![allow(dead_code)]

pub mod appliance;
pub mod backends;
pub mod fake_server;
pub mod gearman_admin;
pub mod sudo;
pub mod swift;
pub mod tls;
pub mod worker_toml;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use libra_worker::gearman::client::{Client, JobOutcome};
use serde_json::Value;

/// The binary under test.
/// The binary under test: this build's, or the one `LIBRA_WORKER_BIN` names (the
/// installed package's, for `tests/package_upgrade.rs` run by `scripts/test-package.sh`).
pub fn worker_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("LIBRA_WORKER_BIN")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_libra-worker").to_string())
    })
}

/// Whether the test runs as root, which `reason` needs. When not: under CI (`CI=true`)
/// the test fails with the reason; elsewhere it prints `SKIPPED: <reason>` on stderr and
/// returns false, and the caller returns at once.
pub fn require_root(reason: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    skip_or_fail(&format!("{reason} (needs root)"));
    false
}

/// A loopback port nobody listens on, never handed out twice in this test process. Ports
/// come from below the kernel's ephemeral range (32768 and up), so no outgoing
/// connection takes one as its source port between this call and the test's bind; each
/// is checked free by binding it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const LAST: u16 = 32_000;
    // Test binaries run one after another; start each one somewhere else in the range.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        FIRST + (std::process::id() % u32::from(LAST - FIRST)) as u16,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in FIRST..LAST {
        let port = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (port - FIRST) % (LAST - FIRST);
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("0.0.0.0", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{LAST}");
}

/// A test whose prerequisite is missing. Under CI (`CI=true`) that is a failure; anywhere
/// else a loud `SKIPPED: <reason>` on stderr and a line in `target/tmp/skipped.txt`, which
/// `scripts/test.sh` prints at the end (the test runner hides a passing test's output).
pub fn skip_or_fail(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("a prerequisite is missing under CI: {reason}");
    }
    // Straight to the process's stderr: `eprintln!` is captured, and hidden, for a test
    // that passes, and a skip must show.
    {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let list = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(list)
    {
        use std::io::Write;
        let _ = writeln!(f, "SKIPPED: {test}: {reason}");
    }
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// A real gearmand on a loopback port.
pub struct Gearmand {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Gearmand {
    pub fn start() -> Gearmand {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Gearmand {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut g = Gearmand {
            port,
            child: None,
            dir,
        };
        g.launch();
        g
    }

    fn launch(&mut self) {
        let log = self.dir.path().join("gearmand.log");
        let child = Command::new("gearmand")
            .args([
                "--listen=127.0.0.1",
                &format!("--port={}", self.port),
                "--verbose=ERROR",
                "--threads=2",
            ])
            .arg(format!("--log-file={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gearmand (apt-get install gearman-job-server)");
        self.child = Some(child);
        assert!(
            wait_until(Duration::from_secs(10), || port_open(self.port)),
            "gearmand did not listen on {}",
            self.port
        );
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for Gearmand {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Submits one job through gearmand, as the API server would, and returns the answer.
pub fn submit(server: &str, function: &str, body: &Value) -> Value {
    submit_raw(server, function, body.to_string().into_bytes())
}

/// Submits one job under a unique id of the caller's, as the API server does.
pub fn submit_unique(server: &str, function: &str, unique: &str, body: &Value) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let outcome = rt
        .block_on(async {
            let mut c = Client::connect(server).await?;
            c.submit_unique(
                function,
                unique.as_bytes().to_vec(),
                body.to_string().into_bytes(),
                Duration::from_secs(60),
            )
            .await
        })
        .expect("job answered");
    match outcome {
        JobOutcome::Complete(data) => serde_json::from_slice(&data).expect("answer is JSON"),
        other => panic!("job not completed: {other:?}"),
    }
}

/// Submits raw bytes (not necessarily JSON) and parses the answer.
pub fn submit_raw(server: &str, function: &str, body: Vec<u8>) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let outcome = rt
        .block_on(async {
            let mut c = Client::connect(server).await?;
            c.submit(function, body, Duration::from_secs(60)).await
        })
        .expect("job answered");
    match outcome {
        JobOutcome::Complete(data) => serde_json::from_slice(&data).expect("answer is JSON"),
        other => panic!("job not completed: {other:?}"),
    }
}

/// Runs the CLI and returns its output.
pub fn cli(args: &[&str]) -> Output {
    Command::new(worker_bin())
        .args(args)
        .output()
        .expect("run libra-worker")
}

/// Settings for one worker under test, rendered to a TOML file.
#[derive(Clone)]
pub struct WorkerConfig {
    pub servers: Vec<String>,
    pub function: String,
    pub driver: String,
    pub reconnect_sleep: u64,
    /// Extra lines for the `[worker]` section.
    pub worker_extra: String,
    /// Extra TOML appended verbatim (other sections).
    pub extra: String,
    /// Replaces the default `[haproxy]` section body (state_dir under the test directory,
    /// loopback bind address).
    pub haproxy: Option<String>,
    /// `[metrics] listen`; empty (disabled) by default.
    pub metrics_listen: String,
    /// Environment variables for the worker process (e.g. `FAILPOINTS`).
    pub env: Vec<(String, String)>,
    /// Run the worker as this uid and gid instead of the test's user (the test must be
    /// root; supplementary groups are dropped).
    pub run_as: Option<(u32, u32)>,
}

impl WorkerConfig {
    pub fn new(servers: &[String]) -> Self {
        WorkerConfig {
            servers: servers.to_vec(),
            function: format!("lb-test-{}", free_port()),
            driver: "null".to_string(),
            reconnect_sleep: 2,
            worker_extra: String::new(),
            extra: String::new(),
            haproxy: None,
            metrics_listen: String::new(),
            env: Vec::new(),
            run_as: None,
        }
    }

    pub fn toml(&self, dir: &Path) -> String {
        let servers: Vec<String> = self.servers.iter().map(|s| format!("\"{s}\"")).collect();
        let haproxy = self.haproxy.clone().unwrap_or_else(|| {
            format!(
                "state_dir = \"{}\"\nbind_address = \"127.0.0.1\"\n",
                dir.join("state").display()
            )
        });
        format!(
            "[gearman]\nservers = [{}]\nreconnect_sleep = {}\n\n[worker]\nfunction = \"{}\"\ndriver = \"{}\"\n{}\n\n\
             [log]\nlevel = \"debug\"\n\n[haproxy]\n{}\n[metrics]\nlisten = \"{}\"\n\n{}",
            servers.join(", "),
            self.reconnect_sleep,
            self.function,
            self.driver,
            self.worker_extra,
            haproxy,
            self.metrics_listen,
            self.extra
        )
    }
}

/// A running `libra-worker run`, its log captured in a file.
pub struct Worker {
    pub config: WorkerConfig,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    /// Stop the managed HAProxy when dropped (not when the directory is handed on).
    owns_haproxy: bool,
}

impl Worker {
    pub fn start(config: WorkerConfig) -> Worker {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(config, dir)
    }

    /// Starts in an existing directory (a restart keeps the state directory).
    pub fn start_in(config: WorkerConfig, dir: tempfile::TempDir) -> Worker {
        let toml = config.toml(dir.path());
        Self::start_with_toml(config, dir, &toml)
    }

    /// Starts on a configuration text of the caller's (see `worker_toml::set_key`).
    pub fn start_with_toml(config: WorkerConfig, dir: tempfile::TempDir, toml: &str) -> Worker {
        Self::start_with_file(config, dir, "worker.toml", toml)
    }

    /// Starts on `text` written to `file_name` in `dir`; the worker reads the format the
    /// extension names (`.toml`, or `.cfg` for the reference INI: `worker_toml::reference_ini`).
    pub fn start_with_file(
        config: WorkerConfig,
        dir: tempfile::TempDir,
        file_name: &str,
        text: &str,
    ) -> Worker {
        let config_path = dir.path().join(file_name);
        std::fs::write(&config_path, text).expect("write config");
        let log_path = dir.path().join("worker.log");
        let mut w = Worker {
            config,
            dir,
            config_path,
            log_path,
            child: None,
            owns_haproxy: true,
        };
        w.launch();
        w
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log");
        let err = log.try_clone().expect("log");
        let mut command = Command::new(worker_bin());
        command
            .args(["run", "--config"])
            .arg(&self.config_path)
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        if let Some((uid, gid)) = self.config.run_as {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        let child = command.spawn().expect("start worker");
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the log holds `needle` `count` times.
    pub fn wait_for_log(&self, needle: &str, count: usize, limit: Duration) -> bool {
        wait_until(limit, || self.log().matches(needle).count() >= count)
    }

    pub fn function(&self) -> &str {
        &self.config.function
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        let _ = nix::sys::signal::kill(pid, sig);
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops the worker (SIGTERM, then SIGKILL) and hands back its directory, with the
    /// managed HAProxy still running in it.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.terminate();
        self.check_no_panic();
        self.owns_haproxy = false;
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }

    /// Fails the test if the worker's log shows a panic: a panicking actor dies quietly
    /// (the worker may even go on), so every stop of a worker checks its log.
    fn check_no_panic(&self) {
        if std::thread::panicking() {
            return;
        }
        let log = self.log();
        if let Some(line) = log.lines().find(|l| l.contains("panicked at")) {
            panic!(
                "the worker panicked: {line}\n---- worker log {} ----\n{log}",
                self.log_path.display()
            );
        }
    }

    fn terminate(&mut self) {
        if self.child.is_some() {
            self.signal(nix::sys::signal::Signal::SIGTERM);
            if self.wait_exit(Duration::from_secs(10)).is_none() {
                if let Some(mut c) = self.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
    }

    /// Stops the HAProxy this worker manages (it outlives the worker by design).
    pub fn stop_haproxy(&self) {
        let _ = Command::new(worker_bin())
            .args(["haproxy", "stop", "--config"])
            .arg(&self.config_path)
            .output();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.terminate();
        if self.config.driver == "haproxy" && self.owns_haproxy {
            self.stop_haproxy();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- worker log {} ----\n{}",
                self.log_path.display(),
                self.log()
            );
        } else {
            self.check_no_panic();
        }
    }
}

/// A listener whose accept queue is full: connecting to it hangs until the caller's
/// timeout (the kernel drops the SYNs). Keeps a DIAGNOSTICS check busy for 5 s.
pub struct Blackhole {
    pub port: u16,
    _listener: socket2::Socket,
    _filler: Vec<TcpStream>,
}

impl Blackhole {
    pub fn new() -> Blackhole {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind");
        s.listen(0).expect("listen");
        let port = s
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .expect("port");
        let filler = vec![TcpStream::connect(("127.0.0.1", port)).expect("fill the accept queue")];
        Blackhole {
            port,
            _listener: s,
            _filler: filler,
        }
    }
}

pub fn answer_error(v: &Value) -> &str {
    v.get("hpcs_error").and_then(Value::as_str).unwrap_or("")
}

pub fn passed(v: &Value) -> bool {
    v.get("hpcs_response").and_then(Value::as_str) == Some("PASS")
}
