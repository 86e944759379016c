//! What systemd sees of the worker (the packaged unit is `Type=notify`, `WatchdogSec=`,
//! `ExecReload=kill -HUP`): READY once the driver runs, the watchdog fed, STOPPING on the
//! way out, SIGHUP re-reading the log level while jobs go on, and journal lines (syslog
//! priority, no timestamp of ours) when standard error is the journal's stream. systemd
//! itself is not needed: the tests play its part through the same environment variables
//! and a datagram socket, as sd_notify(3) defines them.

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

/// Starts the worker on `toml` in `dir` with `env`; stderr goes to `dir/stderr.log`.
/// `WATCHDOG_PID` is the worker's own pid, as systemd sets it (a shell execs the worker).
fn spawn(dir: &std::path::Path, toml: &str, env: &[(&str, String)], watchdog: bool) -> Child {
    let config = dir.join("worker.toml");
    std::fs::write(&config, toml).unwrap();
    let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let script = if watchdog {
        "WATCHDOG_PID=$$ exec \"$0\" run --config \"$1\""
    } else {
        "exec \"$0\" run --config \"$1\""
    };
    Command::new("sh")
        .args(["-c", script, worker_bin()])
        .arg(&config)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn stop(child: &mut Child) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The notifications received within `limit`, one string per datagram.
fn receive(
    sock: &UnixDatagram,
    limit: Duration,
    mut until: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !until(&got) {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[test]
fn ready_watchdog_and_stopping_reach_the_service_manager() {
    let gearmand = Gearmand::start();
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let config = WorkerConfig::new(&[gearmand.addr()]);
    let env = [
        ("NOTIFY_SOCKET", sock_path.display().to_string()),
        // 200 ms: the worker feeds every 100 ms.
        ("WATCHDOG_USEC", "200000".to_string()),
    ];
    let mut child = spawn(dir.path(), &config.toml(dir.path()), &env, true);
    let got = receive(&sock, Duration::from_secs(20), |g| {
        g.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 5
            && g.iter().any(|m| m.contains("READY=1"))
    });
    let ready = got.iter().position(|m| m.contains("READY=1"));
    assert!(ready.is_some(), "no READY=1 in {got:?}");
    assert!(
        got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 5,
        "the watchdog is not fed: {got:?}"
    );
    // READY means jobs are answered.
    let answer = submit(
        &gearmand.addr(),
        &config.function,
        &json!({"hpcs_action": "DISCOVER"}),
    );
    assert!(passed(&answer), "{answer}");
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let got = receive(&sock, Duration::from_secs(10), |g| {
        g.iter().any(|m| m.contains("STOPPING=1"))
    });
    assert!(
        got.iter().any(|m| m.contains("STOPPING=1")),
        "no STOPPING=1 in {got:?}"
    );
    stop(&mut child);
}

#[test]
fn without_a_watchdog_pid_of_its_own_the_worker_feeds_nothing() {
    // WATCHDOG_USEC meant for another process (sd_watchdog_enabled(3)): READY only.
    let gearmand = Gearmand::start();
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let config = WorkerConfig::new(&[gearmand.addr()]);
    let env = [
        ("NOTIFY_SOCKET", sock_path.display().to_string()),
        ("WATCHDOG_USEC", "200000".to_string()),
        ("WATCHDOG_PID", "1".to_string()),
    ];
    let mut child = spawn(dir.path(), &config.toml(dir.path()), &env, false);
    let got = receive(&sock, Duration::from_secs(3), |_| false);
    stop(&mut child);
    assert!(got.iter().any(|m| m.contains("READY=1")), "{got:?}");
    assert!(!got.iter().any(|m| m.contains("WATCHDOG=1")), "{got:?}");
}

#[test]
fn sighup_rereads_the_log_level_and_drops_no_job() {
    let gearmand = Gearmand::start();
    let dir = tempfile::tempdir().unwrap();
    let config = WorkerConfig::new(&[gearmand.addr()]);
    let info = config
        .toml(dir.path())
        .replace("level = \"debug\"", "level = \"info\"");
    assert!(info.contains("level = \"info\""));
    let mut child = spawn(dir.path(), &info, &[], false);
    let log = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    let server = gearmand.addr();
    let discover = json!({"hpcs_action": "DISCOVER"});
    assert!(passed(&submit(&server, &config.function, &discover)));
    assert!(
        !log().contains("DEBG"),
        "debug lines at level info:\n{}",
        log()
    );

    // Jobs keep flowing while the level changes, back and forth.
    let (s, f) = (server.clone(), config.function.clone());
    let jobs = std::thread::spawn(move || {
        (0..200)
            .filter(|_| passed(&submit(&s, &f, &json!({"hpcs_action": "DISCOVER"}))))
            .count()
    });
    let debug = info.replace("level = \"info\"", "level = \"debug\"");
    for round in 0..6 {
        let text = if round % 2 == 0 { &debug } else { &info };
        std::fs::write(dir.path().join("worker.toml"), text).unwrap();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGHUP).unwrap();
        let want = round + 1;
        assert!(
            wait_until(Duration::from_secs(10), || log()
                .matches("log level re-read")
                .count()
                >= want),
            "SIGHUP {round} not applied:\n{}",
            log()
        );
    }
    assert_eq!(jobs.join().unwrap(), 200, "jobs were dropped across SIGHUP");
    // The last file says debug? No: six rounds end on info. Set debug once more and look
    // for the per-job debug line.
    std::fs::write(dir.path().join("worker.toml"), &debug).unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGHUP).unwrap();
    assert!(wait_until(Duration::from_secs(10), || log()
        .matches("log level re-read")
        .count()
        >= 7));
    assert!(passed(&submit(&server, &config.function, &discover)));
    assert!(
        wait_until(Duration::from_secs(5), || log().contains("DEBG")
            && log().contains("action: DISCOVER")),
        "no debug line after SIGHUP to debug:\n{}",
        log()
    );
    // A file that no longer loads keeps the level and the worker.
    std::fs::write(dir.path().join("worker.toml"), "[log]\nlevel = \"loud\"\n").unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGHUP).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || log()
            .contains("no longer loads")),
        "{}",
        log()
    );
    assert!(passed(&submit(&server, &config.function, &discover)));
    stop(&mut child);
    assert!(!log().contains("panicked"), "{}", log());
}

#[test]
fn on_the_journal_stream_lines_have_a_priority_and_no_timestamp() {
    let gearmand = Gearmand::start();
    let dir = tempfile::tempdir().unwrap();
    let config = WorkerConfig::new(&[gearmand.addr()]);
    // The stream systemd would hand over: the file standard error is connected to.
    let stderr = dir.path().join("stderr.log");
    std::fs::File::create(&stderr).unwrap();
    let meta = std::fs::metadata(&stderr).unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let toml = config.toml(dir.path());
    // `spawn` re-creates the file: same inode (truncated, not replaced).
    let mut child = spawn(dir.path(), &toml, &[("JOURNAL_STREAM", stream)], false);
    assert_eq!(std::fs::metadata(&stderr).unwrap().ino(), meta.ino());
    let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || log()
            .contains("libra-worker started")),
        "{}",
        log()
    );
    stop(&mut child);
    let text = log();
    // slog-term's timestamp looks like "Dec 02 04:30:00.123".
    let timestamp = regex::Regex::new(r"\d\d:\d\d:\d\d\.\d{3}").unwrap();
    let started = text
        .lines()
        .find(|l| l.contains("libra-worker started"))
        .unwrap();
    assert!(
        started.starts_with("<6>libra-worker started, "),
        "{started}"
    );
    for line in text.lines() {
        assert!(
            line.starts_with('<') && line.as_bytes().get(2) == Some(&b'>'),
            "not a journal line: {line}"
        );
        assert!(!timestamp.is_match(line), "{line}");
    }

    // The same variable with standard error elsewhere (a shell started from the unit):
    // ordinary lines, with their timestamps.
    let mut child = spawn(
        dir.path(),
        &toml,
        &[("JOURNAL_STREAM", "1:1".to_string())],
        false,
    );
    assert!(wait_until(Duration::from_secs(10), || log()
        .contains("libra-worker started")));
    stop(&mut child);
    let started = log()
        .lines()
        .find(|l| l.contains("libra-worker started"))
        .unwrap()
        .to_string();
    assert!(!started.starts_with('<'), "{started}");
    assert!(started.contains(" INFO "), "{started}");
}
