use super::*;
use crate::config::HaproxyMode;
use crate::drivers::haproxy::process::validate;
use crate::drivers::haproxy::test_support::*;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;

#[test]
fn start_serve_stop() {
    let mut h = TestHaproxy::started();
    assert!(h.managed.is_running());
    let pid = h.managed.master_pid().unwrap();
    assert_eq!(read_pid_file(&h.path("haproxy.pid")), Some(pid));
    // Its own process group: signals to the worker's group do not reach it.
    let group = getpgid(Some(Pid::from_raw(pid as i32))).unwrap();
    assert_eq!(group.as_raw() as u32, pid);
    assert_ne!(group, getpgid(None).unwrap());
    let session = nix::unistd::getsid(Some(Pid::from_raw(pid as i32))).unwrap();
    assert_eq!(session.as_raw() as u32, pid);
    let mode = std::fs::metadata(h.path("haproxy.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let mut conn = TcpStream::connect(("127.0.0.1", h.port)).unwrap();
    assert_eq!(echo(&mut conn, "hello"), "hello");
    drop(conn);
    // `log stdout format raw` traffic logs land in the log file.
    let log = || std::fs::read_to_string(h.path("haproxy.log")).unwrap();
    let logged = poll_until(Duration::from_secs(10), POLL_INTERVAL, || {
        log().contains("x-in x-servers/id-1").then_some(())
    });
    assert!(logged.is_some(), "no traffic log line in {}", log());
    // Starting again adopts, it does not start a second HAProxy.
    h.managed.start().unwrap();
    assert_eq!(h.managed.master_pid(), Some(pid));

    assert_eq!(h.managed.stop_master().unwrap(), Some(pid));
    assert!(!h.managed.is_running());
    assert!(!h.path("haproxy.pid").exists());
    assert!(
        TcpStream::connect(("127.0.0.1", h.port)).is_err(),
        "port still accepts after stop"
    );
    assert!(!alive(pid));
    // Idempotent.
    assert_eq!(h.managed.stop_master().unwrap(), None);
    h.managed.stop().unwrap();
    // And it starts again in the same state dir (stale socket files are no problem).
    h.start();
    assert!(serves(h.port));
}

#[test]
fn start_failure_reports_haproxy_alerts() {
    let mut h = TestHaproxy::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    h.write_config(&[taken_port]);
    let err = h.managed.start().unwrap_err();
    h.track();
    let text = err.to_string();
    assert!(matches!(err, ProcessError::StartExited { .. }), "{err:?}");
    assert!(
        text.contains("cannot bind socket (Address already in use)"),
        "{text}"
    );
    assert!(text.contains(&format!("127.0.0.1:{taken_port}")), "{text}");
    assert!(!h.managed.is_running());
    assert!(h.managed.child.is_none(), "exited child not reaped");
}

#[test]
fn missing_binary_is_a_spawn_error() {
    let h = TestHaproxy::new();
    let mut p = paths(h.dir.path());
    p.binary = PathBuf::from("/nonexistent/haproxy");
    let err = Managed::new(p.clone()).start().unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot start /nonexistent/haproxy: no such program"
    );
    p.binary = PathBuf::from("no-such-haproxy-in-path");
    assert!(matches!(
        Managed::new(p).start(),
        Err(ProcessError::Spawn { .. })
    ));
}

#[test]
fn a_reload_lets_an_old_worker_past_its_limit_finish_its_connection_first() {
    let mut h = TestHaproxy::new();
    h.managed = Managed::new(paths(h.dir.path()))
        .with_timeouts(fast_timeouts())
        .with_max_old_workers(1);
    let limited = |h: &TestHaproxy| {
        let text = config_text(h.dir.path(), &[h.port], h.backend);
        h.write_config_text(&text.replacen("global\n", "global\n    mworker-max-reloads 1\n", 1));
    };
    limited(&h);
    h.start();
    let mut conn = TcpStream::connect(("127.0.0.1", h.port)).unwrap();
    assert_eq!(echo(&mut conn, "first"), "first");
    // After one reload the connection's worker is old; the next reload takes it past
    // `mworker-max-reloads 1`, and the master would stop it with the connection open.
    h.managed.reload().unwrap();
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let answer = echo(&mut conn, "late");
        drop(conn);
        answer
    });
    limited(&h);
    h.managed.reload().unwrap();
    assert_eq!(late.join().unwrap(), "late");
    assert!(serves(h.port));
}

#[test]
fn reload_keeps_established_connections() {
    let mut h = TestHaproxy::started();
    let mut conn = TcpStream::connect(("127.0.0.1", h.port)).unwrap();
    assert_eq!(echo(&mut conn, "before"), "before");
    let before = h.managed.show_proc().unwrap();
    let second = free_port();
    h.write_config(&[h.port, second]);
    h.managed.reload().unwrap();
    let after = h.managed.show_proc().unwrap();
    assert_eq!(after.master.pid, before.master.pid);
    assert_eq!(after.master.reloads, before.master.reloads + 1);
    assert_ne!(after.workers[0].pid, before.workers[0].pid);
    // The old worker drains the open connection, which keeps working.
    assert!(
        after
            .old_workers
            .iter()
            .any(|w| w.pid == before.workers[0].pid),
        "{after:?}"
    );
    assert_eq!(echo(&mut conn, "after reload"), "after reload");
    assert!(h
        .master_env(after.master.pid)
        .contains("HAPROXY_MWORKER_WAIT_ONLY=1"));
    assert!(serves(h.port));
    assert!(serves(second));
    drop(conn);
    let drained = poll_until(Duration::from_secs(10), POLL_INTERVAL, || {
        h.managed
            .show_proc()
            .unwrap()
            .old_workers
            .is_empty()
            .then_some(())
    });
    assert!(
        drained.is_some(),
        "old worker did not exit after its connection closed"
    );
}

#[test]
fn failed_reload_reports_cannot_bind_and_old_worker_keeps_serving() {
    let mut h = TestHaproxy::started();
    let good = std::fs::read_to_string(h.path("haproxy.cfg")).unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let mut conn = TcpStream::connect(("127.0.0.1", h.port)).unwrap();
    let before = h.managed.show_proc().unwrap();
    h.write_config(&[h.port, taken_port]);
    // `haproxy -c` does not see a port taken by another process.
    validate(&haproxy(), &h.path("haproxy.cfg")).unwrap();

    let err = h.managed.reload().unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ProcessError::ReloadFailed { serving: true, .. }),
        "{err:?}"
    );
    assert!(
        text.starts_with("HAProxy reload failed (the previous configuration serves on): Binding ["),
        "{text}"
    );
    assert!(
        text.contains("cannot bind socket (Address already in use)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("[127.0.0.1:{taken_port}]")),
        "{text}"
    );
    // Only the master's alerts: not the old worker's messages.
    assert!(
        !text.contains("Paused") && !text.contains("Resumed"),
        "{text}"
    );

    // The old worker still serves, old and new connections alike.
    assert_eq!(echo(&mut conn, "still here"), "still here");
    assert!(serves(h.port));
    let failed = h.managed.show_proc().unwrap();
    assert_eq!(failed.master.pid, before.master.pid);
    assert!(failed.last_load_refused());
    assert_eq!(failed.master.failed_reloads, Some(1));
    assert_eq!(
        failed.workers.iter().map(|w| w.pid).collect::<Vec<_>>(),
        before.workers.iter().map(|w| w.pid).collect::<Vec<_>>()
    );
    assert!(h.managed.is_running());
    // The master is in wait mode, as after every load.
    assert!(h
        .master_env(failed.master.pid)
        .contains("HAPROXY_MWORKER_WAIT_ONLY=1"));

    // Reloading the same file fails again: wait mode re-reads the file.
    let err = h.managed.reload().unwrap_err();
    assert!(err.to_string().contains("cannot bind socket"), "{err}");
    let again = h.managed.show_proc().unwrap();
    assert!(again.last_load_refused());
    assert_eq!(again.master.failed_reloads, Some(2));

    // Restoring the previous file and reloading works and leaves wait mode.
    std::fs::write(h.path("haproxy.cfg"), good).unwrap();
    h.managed.reload().unwrap();
    let restored = h.managed.show_proc().unwrap();
    assert!(!restored.last_load_refused());
    assert_eq!(restored.master.failed_reloads, Some(0));
    assert_ne!(restored.workers[0].pid, before.workers[0].pid);
    assert_eq!(echo(&mut conn, "after restore"), "after restore");
    assert!(serves(h.port));
    drop(taken);
}

#[test]
fn reloads_under_traffic_refuse_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::Arc;
    let mut h = TestHaproxy::started();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, ok, failed, port) = (stop.clone(), ok.clone(), failed.clone(), h.port);
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let counter = if serves(port) { &ok } else { &failed };
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    for _ in 0..10 {
        h.managed.reload().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    assert_eq!(failed.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(ok.load(std::sync::atomic::Ordering::Relaxed) > 10);
}

#[test]
fn haproxy_outlives_the_worker_and_is_adopted() {
    let mut h = TestHaproxy::started();
    let pid = h.managed.master_pid().unwrap();
    // The worker goes away (crash, upgrade) without stopping HAProxy.
    let crashed = std::mem::replace(
        &mut h.managed,
        Managed::new(paths(h.dir.path())).with_timeouts(fast_timeouts()),
    );
    drop(crashed);
    assert!(serves(h.port));
    // A new worker process finds it through the state dir and uses it.
    assert!(h.managed.is_running());
    h.managed.start().unwrap();
    assert_eq!(h.managed.master_pid(), Some(pid));
    assert_eq!(h.managed.show_proc().unwrap().master.pid, pid);
    h.managed.reload().unwrap();
    assert!(serves(h.port));

    // `libra-worker haproxy stop` stops it, whoever started it.
    let settings = HaproxySettings {
        mode: HaproxyMode::Managed,
        binary: haproxy(),
        state_dir: h.dir.path().to_path_buf(),
        bind_address: "127.0.0.1".into(),
        config_file: h.path("haproxy.cfg"),
        logfile: h.path("haproxy.log"),
        statsfile: h.path("metrics.json"),
        stats_socket: h.path("stats.sock"),
        pid_file: h.path("haproxy.pid"),
        start_cmd: vec![],
        stop_cmd: vec![],
        reload_cmd: vec![],
        runtime_api: true,
        sudo: vec![],
        sudo_setting: None,
        reference_statsfile: None,
        maxconn: 50_000,
        hard_stop_after: None,
        max_old_workers: 10,
    };
    assert_eq!(
        stop_by_state_dir(&settings, fast_timeouts()).unwrap(),
        Some(pid)
    );
    assert!(!h.managed.is_running());
    assert!(TcpStream::connect(("127.0.0.1", h.port)).is_err());
    assert_eq!(stop_by_state_dir(&settings, fast_timeouts()).unwrap(), None);
}

#[test]
fn worker_start_failure_during_reload_stops_haproxy() {
    let mut h = TestHaproxy::started();
    let good = std::fs::read_to_string(h.path("haproxy.cfg")).unwrap();
    // Valid for `haproxy -c`; only the new worker finds out, after the fork.
    let bad = good.replacen("global\n", "global\n    chroot /nonexistent-dir\n", 1);
    std::fs::write(h.path("haproxy.cfg"), &bad).unwrap();
    validate(&haproxy(), &h.path("haproxy.cfg")).unwrap();
    let err = h.managed.reload().unwrap_err();
    let text = err.to_string();
    // The master kills everything (`exit-on-failure`) and exits.
    assert!(
        matches!(err, ProcessError::ExitedDuringReload { .. }),
        "{err:?}"
    );
    assert!(text.contains("Cannot chroot(/nonexistent-dir)"), "{text}");
    assert!(text.contains("exit-on-failure"), "{text}");
    // HAProxy is down: restore the previous file and start again.
    assert!(!h.managed.is_running());
    assert!(TcpStream::connect(("127.0.0.1", h.port)).is_err());
    std::fs::write(h.path("haproxy.cfg"), good).unwrap();
    h.start();
    assert!(serves(h.port));
}

#[test]
fn lost_pid_file_master_found_through_its_socket() {
    let mut h = TestHaproxy::started();
    let pid = h.managed.master_pid().unwrap();
    std::fs::remove_file(h.path("haproxy.pid")).unwrap();
    let mut other = Managed::new(paths(h.dir.path())).with_timeouts(fast_timeouts());
    assert_eq!(other.master_pid(), Some(pid));
    assert!(other.is_running());
    assert_eq!(other.stop_master().unwrap(), Some(pid));
    assert!(!h.managed.is_running());
}

#[test]
fn stale_pid_file_is_not_trusted() {
    let mut h = TestHaproxy::new();
    // Our own pid: alive, but not a HAProxy of this state dir.
    std::fs::write(h.path("haproxy.pid"), format!("{}\n", std::process::id())).unwrap();
    assert_eq!(h.managed.master_pid(), None);
    assert!(!h.managed.is_running());
    assert!(matches!(h.managed.reload(), Err(ProcessError::NotRunning)));
    assert_eq!(h.managed.stop_master().unwrap(), None);
    assert!(!h.path("haproxy.pid").exists());
    h.start();
    assert!(serves(h.port));
}
