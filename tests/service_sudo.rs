//! Service mode as the reference ran it, end to end: the worker as an unprivileged system
//! user, every privileged step through the real sudo under exactly the rule that
//! `libra-worker sudoers` prints, HAProxy started as root by an init-like script, the live
//! files in root-owned directories, jobs through a real gearmand: every action works and
//! every file has the owner it should. Without the rule: `service_sudo_without_rule.rs`.
//! Needs root to create the user and the sudoers file (`common::require_root`); the
//! layout is `common::sudo`.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::appliance::{http_lb, node};
use common::backends::{http_get, Backend};
use common::sudo::*;
use common::swift::MockSwift;
use common::*;
use serde_json::json;

#[test]
fn service_mode_runs_unprivileged_through_sudo() {
    if !require_root(NEEDS_ROOT) {
        return;
    }
    let layout = Layout::new();
    let _haproxy = HaproxyGuard {
        script: layout.script(),
        config: layout.config(),
    };
    let g = Gearmand::start();
    let (cfg, worker_dir, ini) = worker_files(&layout, &g);
    let rule = printed_rule(&worker_dir.path().join("worker.cfg"));
    eprintln!("---- sudoers rule ----\n{rule}");
    assert!(
        rule.contains(&format!("\n{USER} ALL=(root) NOPASSWD: ")),
        "{rule}"
    );
    assert!(!rule.contains('*'), "no wildcard: {rule}");
    let _sudoers = SudoersFile::install(&layout, &rule);
    let w = start_worker(cfg, worker_dir, &ini);
    let uid = layout.uid;
    assert_eq!(uids(w.pid()), vec![uid; 4], "the worker runs as {USER}");

    // UPDATE: HAProxy (root) starts on the file the worker rendered.
    let b1 = Backend::http("b1");
    let port1 = free_port();
    let v = update(&g, &w, json!([http_lb(port1, vec![node(1, &b1)])]));
    assert!(passed(&v), "{v}\n{}", w.log());
    assert_eq!(http_get(port1, None).unwrap().1, "b1");
    let live_owned_by_root = |what: &str| {
        let config = layout.config();
        let m = fs::metadata(&config).unwrap();
        assert_eq!(m.uid(), 0, "{what}: the live file is root's");
        assert_eq!(m.mode() & 0o022, 0, "{what}: mode {:o}", m.mode());
        assert!(
            !layout.as_user(&["/usr/bin/test", "-w", config.to_str().unwrap()]),
            "{what}: the worker's user can write the live file"
        );
        assert_eq!(layout.owner(&layout.path("etc")), 0);
    };
    live_owned_by_root("first UPDATE");
    let first = fs::read_to_string(layout.config()).unwrap();
    for needed in [
        format!("bind 127.0.0.1:{port1}"),
        format!("127.0.0.1:{}", b1.port),
        format!(
            "stats socket {} mode 600",
            layout.path("run/stats.sock").display()
        ),
        format!("uid {uid} gid {}", layout.gid),
        format!("pidfile {}", layout.path("run/haproxy.pid").display()),
    ] {
        assert!(first.contains(&needed), "{needed} in:\n{first}");
    }
    let master = fs::read_to_string(layout.path("run/haproxy.pid")).unwrap();
    let master: u32 = master.trim().parse().unwrap();
    assert_eq!(uids(master)[0], 0, "HAProxy's master runs as root");

    // A structural change: a new port, a reload; the previous file is the backup.
    let port2 = free_port();
    let v = update(&g, &w, json!([http_lb(port2, vec![node(1, &b1)])]));
    assert!(passed(&v), "{v}\n{}", w.log());
    // PASS means the new configuration serves (HAProxy's new process answered).
    assert_eq!(
        http_get(port2, None).map(|r| r.1).ok().as_deref(),
        Some("b1"),
        "serves on the new port"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !port_open(port1)),
        "the old port is closed"
    );
    live_owned_by_root("second UPDATE");
    assert_eq!(fs::read_to_string(layout.backup()).unwrap(), first);
    assert_eq!(layout.owner(&layout.backup()), 0);
    let second = fs::read_to_string(layout.config()).unwrap();
    assert!(
        second.contains(&format!("bind 127.0.0.1:{port2}")),
        "{second}"
    );

    // Nodes only: through the runtime API on the socket HAProxy (root) made the worker's.
    let b2 = Backend::http("b2");
    let before = haproxy_pid(&layout);
    let v = update(
        &g,
        &w,
        json!([http_lb(port2, vec![node(1, &b1), node(2, &b2)])]),
    );
    assert!(passed(&v), "{v}\n{}", w.log());
    assert_eq!(haproxy_pid(&layout), before, "no reload for a node change");
    let seen: Vec<String> = (0..10)
        .map(|_| http_get(port2, None).map(|r| r.1).unwrap_or_default())
        .collect();
    assert!(seen.iter().any(|b| b == "b2"), "{seen:?}");
    live_owned_by_root("runtime UPDATE");
    assert!(fs::read_to_string(layout.config())
        .unwrap()
        .contains(&format!("127.0.0.1:{}", b2.port)));
    assert_eq!(fs::read_to_string(layout.backup()).unwrap(), second);

    // STATS and METRICS through the socket; the reference's METRICS state (root's, 0600)
    // was taken over through `sudo cat`.
    assert!(wait_until(Duration::from_secs(10), || {
        let v = action(&g, &w, "STATS");
        passed(&v)
            && v["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == 2 && n.iter().all(|n| n["status"] == "UP"))
    }));
    let m = action(&g, &w, "METRICS");
    assert!(passed(&m), "{m}");
    assert_eq!(m["utc_start"], "2014-01-09 15:11:45.704755", "{m}");
    let http = m["loadBalancers"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["protocol"] == "http"))
        .unwrap_or_else(|| panic!("an http entry: {m}"));
    assert!(http["bytes_out"].is_u64(), "{m}");

    // ARCHIVE: the log (root's, 0640) read through `sudo cat`.
    let token = "tk-sudo-5e1f";
    let swift = MockSwift::start(token);
    let v = submit(
        &g.addr(),
        w.function(),
        &json!({"hpcs_action": "ARCHIVE", "hpcs_object_store_type": "swift",
            "hpcs_object_store_basepath": "lbaaslogs", "hpcs_object_store_endpoint": swift.endpoint(),
            "hpcs_object_store_token": token, "loadBalancers": [{"protocol": "HTTP", "id": 42}]}),
    );
    assert!(passed(&v), "{v}\n{}", w.log());
    let objects = swift.objects();
    assert_eq!(objects.len(), 1, "{objects:?}");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&objects.values().next().unwrap()[..])
        .read_to_string(&mut text)
        .unwrap();
    let expected: Vec<&str> = LOG_LINES.lines().filter(|l| l.contains("http-")).collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), expected, "{text}");

    // SUSPEND stops HAProxy through the stop command; ENABLE starts it again.
    assert!(passed(&action(&g, &w, "SUSPEND")));
    assert!(!port_open(port2), "suspended: connections refused");
    let v = action(&g, &w, "ENABLE");
    assert!(passed(&v), "{v}\n{}", w.log());
    let body = http_get(port2, None).map(|r| r.1).unwrap_or_default();
    assert!(body == "b1" || body == "b2", "enabled: serves ({body:?})");

    // Every file in the state directory is the worker's; every live file root's.
    let state = layout.path("state");
    for entry in fs::read_dir(&state).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(
            layout.owner(&path),
            uid,
            "{} is the worker's",
            path.display()
        );
    }
    assert_eq!(layout.owner(&state), uid);
    for entry in fs::read_dir(layout.path("etc")).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(layout.owner(&path), 0, "{} is root's", path.display());
    }

    // DELETE: HAProxy stopped, the files gone, the log emptied in place.
    let log_inode = fs::metadata(layout.path("log/haproxy.log")).unwrap().ino();
    let v = action(&g, &w, "DELETE");
    assert!(passed(&v), "{v}\n{}", w.log());
    assert!(!port_open(port2), "deleted: connections refused");
    assert!(!layout.config().exists() && !layout.backup().exists());
    let log = fs::metadata(layout.path("log/haproxy.log")).unwrap();
    assert_eq!((log.len(), log.ino(), log.uid()), (0, log_inode, 0));
    assert_eq!(fs::read_dir(layout.path("etc")).unwrap().count(), 0);

    assert_eq!(
        uids(w.pid()),
        vec![uid; 4],
        "the worker ran as {USER} all along"
    );
    assert!(!w.log().contains(token));
}
