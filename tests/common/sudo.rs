//! Service mode as the reference ran it, for `tests/service_sudo*.rs`: an unprivileged
//! system user for the worker, the appliance's file system (root-owned `etc/`, `run/`,
//! `log/` and an init-like script that starts HAProxy as root; the worker's state
//! directory), a sudoers file installed after `visudo` accepted it and removed when
//! dropped, a guard that stops the root HAProxy whatever happens, and the worker's
//! reference INI for that layout. Creating the user and the sudoers file needs root
//! (`super::require_root`).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use super::appliance::socket_command;
use super::worker_toml::{reference_ini, set_key};
use super::{submit, worker_bin, Gearmand, Worker, WorkerConfig};

pub const USER: &str = "libra-sudo-test";
pub const NEEDS_ROOT: &str =
    "creates a system user and a sudoers file to run the worker unprivileged through sudo";
pub const SUDO: &str = "/usr/bin/sudo";

/// Log lines as HAProxy sends them to syslog: two of the HTTP load balancer, one of TCP.
pub const LOG_LINES: &str = "\
Jan  9 15:11:45 lb haproxy[4242]: 10.0.0.9:50001 [09/Jan/2014:15:11:45.123] http-in http-servers/id-1 0/0/1/2/3 200 512 - - ---- 1/1/0/0/0 0/0 \"GET / HTTP/1.1\"
Jan  9 15:11:46 lb haproxy[4242]: 10.0.0.9:50002 [09/Jan/2014:15:11:46.123] tcp-in tcp-servers/id-2 1/0/5 42 -- 1/1/0/0/0 0/0
Jan  9 15:11:47 lb haproxy[4242]: Server http-servers/id-1 is UP, reason: Layer4 check passed
";

/// The reference worker's METRICS state, as it left it: the first report starts 1 µs later.
const REFERENCE_STATS: &str = r#"{"start": "2014-01-09 14:11:45.000001", "end": "2014-01-09 15:11:45.704754",
 "last_tcp_bytes_out": 0, "last_http_bytes_out": 0,
 "unreported_tcp_bytes_out": 0, "unreported_http_bytes_out": 0}"#;

/// The test user's uid and gid; the user is created once (system user, no home, no shell)
/// unless it exists (the package's `libra`).
fn test_user(name: &str) -> (u32, u32) {
    static CREATE: Mutex<()> = Mutex::new(());
    let _once = CREATE.lock().unwrap_or_else(|e| e.into_inner());
    let lookup = || nix::unistd::User::from_name(name).expect("getpwnam");
    if lookup().is_none() {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .output()
            .expect("run useradd");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let user = lookup().expect("the test user exists");
    assert!(!user.uid.is_root(), "{name} must not be root");
    (user.uid.as_raw(), user.gid.as_raw())
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// The appliance's file system: root-owned `etc/`, `run/`, `log/` and `bin/` (the
/// init-like script), the worker's state directory, owned by the test user.
pub struct Layout {
    dir: tempfile::TempDir,
    pub uid: u32,
    pub gid: u32,
    /// The worker's user.
    pub user: String,
}

impl Layout {
    pub fn new() -> Layout {
        Layout::for_user(USER)
    }

    /// The layout for a worker that runs as `user` (created when missing).
    pub fn for_user(user: &str) -> Layout {
        assert!(
            Path::new(SUDO).is_file() && Path::new("/usr/sbin/visudo").is_file(),
            "sudo is not installed (apt-get install sudo)"
        );
        let (uid, gid) = test_user(user);
        let dir = tempfile::tempdir().expect("tempdir");
        // The user traverses it (tempfile makes it 0700).
        chmod(dir.path(), 0o755);
        let l = Layout {
            dir,
            uid,
            gid,
            user: user.to_string(),
        };
        for d in ["etc", "run", "log", "bin"] {
            fs::create_dir(l.path(d)).unwrap();
            chmod(&l.path(d), 0o755);
        }
        let state = l.path("state");
        fs::create_dir(&state).unwrap();
        nix::unistd::chown(
            &state,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .unwrap();
        chmod(&state, 0o700);
        // HAProxy's log and the reference's METRICS state: root's, unreadable by the worker.
        fs::write(l.path("log/haproxy.log"), LOG_LINES).unwrap();
        chmod(&l.path("log/haproxy.log"), 0o640);
        fs::write(l.path("log/haproxy.stats"), REFERENCE_STATS).unwrap();
        chmod(&l.path("log/haproxy.stats"), 0o600);
        fs::write(l.script(), l.script_text()).unwrap();
        chmod(&l.script(), 0o755);
        // The binary under test must be reachable by the user.
        let bin = Path::new(worker_bin());
        for dir in bin.ancestors().skip(1) {
            let mode = fs::metadata(dir).unwrap().permissions().mode();
            assert!(
                mode & 0o001 != 0,
                "{} is not traversable by other users (mode {mode:o}): {user} cannot run {}",
                dir.display(),
                bin.display()
            );
        }
        l
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn script(&self) -> PathBuf {
        self.path("bin/haproxy-service")
    }

    pub fn config(&self) -> PathBuf {
        self.path("etc/haproxy.cfg")
    }

    pub fn backup(&self) -> PathBuf {
        self.path("etc/haproxy.cfg.BKUP")
    }

    /// Stands in for `service haproxy start|stop|reload`: HAProxy runs as root in
    /// master-worker mode, daemonized (no descriptor of ours kept open).
    fn script_text(&self) -> String {
        let cfg = self.config().display().to_string();
        let pid = self.path("run/haproxy.pid").display().to_string();
        let haproxy = libra_worker::config::haproxy_binary_from_env();
        let haproxy = haproxy.display();
        format!(
            "#!/bin/sh\n\
             # tests/service_sudo.rs: an init script for HAProxy\n\
             set -e\n\
             case \"$1\" in\n\
             start) exec {haproxy} -W -D -f {cfg} -p {pid} ;;\n\
             reload) kill -USR2 \"$(cat {pid})\" ;;\n\
             stop)\n\
               [ -f {pid} ] || exit 0\n\
               p=$(cat {pid})\n\
               kill -TERM \"$p\" 2>/dev/null || true\n\
               i=0\n\
               while kill -0 \"$p\" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n\
               rm -f {pid} ;;\n\
             *) echo \"usage: $0 start|stop|reload\" >&2; exit 2 ;;\n\
             esac\n"
        )
    }

    /// The worker's configuration: the reference INI (service mode by default) with the
    /// test's paths, and no `sudo` key (the default must be `sudo -n` for this user).
    pub fn worker_ini(&self, cfg: &WorkerConfig, worker_dir: &Path) -> String {
        let mut ini = reference_ini(cfg, worker_dir, "");
        let path = |rel: &str| self.path(rel).display().to_string();
        let script = self.script().display().to_string();
        for (key, value) in [
            ("state_dir", path("state")),
            ("config_file", path("etc/haproxy.cfg")),
            ("stats_socket", path("run/stats.sock")),
            ("pid_file", path("run/haproxy.pid")),
            ("start_cmd", format!("{script} start")),
            ("stop_cmd", format!("{script} stop")),
            ("reload_cmd", format!("{script} reload")),
        ] {
            ini = set_key(&ini, "haproxy", key, &value);
        }
        ini.push_str(&format!(
            "\n[worker:haproxy]\nservice = ubuntu\nlogfile = {}\nstatsfile = {}\n",
            path("log/haproxy.log"),
            path("log/haproxy.stats")
        ));
        assert!(!ini.contains("sudo"), "{ini}");
        ini
    }

    /// Runs `argv` as the test user; whether it exited 0.
    pub fn as_user(&self, argv: &[&str]) -> bool {
        use std::os::unix::process::CommandExt;
        Command::new(argv[0])
            .args(&argv[1..])
            .uid(self.uid)
            .gid(self.gid)
            .status()
            .expect("run as the test user")
            .success()
    }

    pub fn owner(&self, path: &Path) -> u32 {
        fs::symlink_metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .uid()
    }
}

/// Stops the root HAProxy whatever happens: through the script, then SIGKILL to any
/// process still running on this test's configuration.
pub struct HaproxyGuard {
    pub script: PathBuf,
    pub config: PathBuf,
}

impl Drop for HaproxyGuard {
    fn drop(&mut self) {
        let _ = Command::new(&self.script).arg("stop").output();
        for pid in haproxy_pids(&self.config) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// HAProxy processes started with `-f config`.
fn haproxy_pids(config: &Path) -> Vec<u32> {
    let want = config.as_os_str().as_encoded_bytes();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
                args.windows(2).any(|w| w[0] == b"-f" && w[1] == want)
            })
        })
        .collect()
}

/// A sudoers file in /etc/sudoers.d, removed when dropped (also on panic).
pub struct SudoersFile(PathBuf);

impl SudoersFile {
    /// Installs `text` after `visudo -cf` accepted it; a file sudo reads is never partial.
    pub fn install(layout: &Layout, text: &str) -> SudoersFile {
        static N: AtomicU32 = AtomicU32::new(0);
        // No dot in the name: sudo skips such files in an included directory.
        let name = format!(
            "libra-sudo-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let candidate = layout.path(&name);
        fs::write(&candidate, text).unwrap();
        chmod(&candidate, 0o440);
        let check = Command::new("visudo")
            .arg("-cf")
            .arg(&candidate)
            .output()
            .expect("run visudo");
        assert!(
            check.status.success(),
            "visudo refuses the printed rule: {}{}\n{text}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let path = Path::new("/etc/sudoers.d").join(&name);
        let guard = SudoersFile(path.clone());
        // Same file system as /etc? Not necessarily: copy beside it, then rename.
        let beside = Path::new("/etc/sudoers.d").join(format!("{name}.tmp"));
        fs::copy(&candidate, &beside).unwrap();
        chmod(&beside, 0o440);
        fs::rename(&beside, &path).unwrap();
        let all = Command::new("visudo")
            .arg("-c")
            .output()
            .expect("visudo -c");
        assert!(
            all.status.success(),
            "sudoers as a whole: {}",
            String::from_utf8_lossy(&all.stderr)
        );
        guard
    }
}

impl Drop for SudoersFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// What `libra-worker sudoers --config <file> --user <USER>` prints.
pub fn printed_rule(config: &Path) -> String {
    printed_rule_for(config, USER)
}

/// What `libra-worker sudoers --config <file> --user <user>` prints.
pub fn printed_rule_for(config: &Path, user: &str) -> String {
    let out = Command::new(worker_bin())
        .args(["sudoers", "--config"])
        .arg(config)
        .args(["--user", user])
        .output()
        .expect("run libra-worker sudoers");
    assert!(
        out.status.success(),
        "libra-worker sudoers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The worker's configuration written where the test user can read it, and the worker
/// config for `Worker`.
pub fn worker_files(layout: &Layout, g: &Gearmand) -> (WorkerConfig, tempfile::TempDir, String) {
    let mut cfg = WorkerConfig::new(&[g.addr()]);
    cfg.driver = "haproxy".to_string();
    cfg.run_as = Some((layout.uid, layout.gid));
    let worker_dir = tempfile::tempdir().expect("tempdir");
    chmod(worker_dir.path(), 0o755);
    let ini = layout.worker_ini(&cfg, worker_dir.path());
    fs::write(worker_dir.path().join("worker.cfg"), &ini).unwrap();
    (cfg, worker_dir, ini)
}

pub fn start_worker(cfg: WorkerConfig, dir: tempfile::TempDir, ini: &str) -> Worker {
    let w = Worker::start_with_file(cfg, dir, "worker.cfg", ini);
    assert!(
        w.wait_for_log("connected to job server", 1, Duration::from_secs(15)),
        "{}",
        w.log()
    );
    w
}

/// The real, effective, saved and file-system uids of `pid`.
pub fn uids(pid: u32) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("a Uid line");
    line.split_whitespace()
        .skip(1)
        .map(|u| u.parse().unwrap())
        .collect()
}

pub fn update(g: &Gearmand, w: &Worker, lbs: Value) -> Value {
    submit(
        &g.addr(),
        w.function(),
        &json!({"hpcs_action": "UPDATE", "loadBalancers": lbs}),
    )
}

pub fn action(g: &Gearmand, w: &Worker, name: &str) -> Value {
    submit(&g.addr(), w.function(), &json!({ "hpcs_action": name }))
}

pub fn haproxy_pid(layout: &Layout) -> String {
    socket_command(&layout.path("run/stats.sock"), "show info")
        .lines()
        .find_map(|l| l.strip_prefix("Pid: "))
        .map(str::to_string)
        .expect("show info has a Pid")
}
