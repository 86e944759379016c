//! `docs/upgrade.md` followed on a fake appliance of the Python worker, with the installed
//! package: the reference INI kept as it is (service mode, sudo), the reference worker's
//! `haproxy.cfg` (`tests/fixtures/reference-haproxy.cfg`, the layout its driver wrote)
//! served by a root HAProxy from an init-like script, its METRICS state file; then the
//! packaged binary, as user `libra`, takes over: same HAProxy process, exactly the bytes
//! the reference had not billed, UPDATEs through sudo; and the rollback leaves HAProxy
//! serving a file it accepts.
//!
//! Ignored in the ordinary suite: it needs root and the installed package.
//! `scripts/test-package.sh` runs it after `dpkg -i` with
//! `LIBRA_WORKER_BIN=/usr/bin/libra-worker`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::appliance::{http_lb, node, socket_command};
use common::backends::{http_get, Backend};
use common::sudo::*;
use common::*;
use serde_json::json;

const INSTALLED: &str = "/usr/bin/libra-worker";

/// HAProxy's backend `bout` on `socket`.
fn bout(socket: &std::path::Path) -> u64 {
    let csv = socket_command(socket, "show stat");
    let row = csv
        .lines()
        .find(|l| l.starts_with("http-servers,BACKEND,"))
        .unwrap_or_else(|| panic!("no backend row:\n{csv}"));
    row.split(',').nth(9).unwrap().parse().unwrap()
}

fn billed_http(m: &serde_json::Value) -> u64 {
    m["loadBalancers"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["protocol"] == "http"))
        .and_then(|l| l["bytes_out"].as_u64())
        .unwrap_or_else(|| panic!("no http entry: {m}"))
}

#[test]
#[ignore = "needs root and the installed package: scripts/test-package.sh runs it"]
fn the_upgrade_notes_take_over_an_appliance_of_the_python_worker() {
    assert_eq!(
        worker_bin(),
        INSTALLED,
        "run with LIBRA_WORKER_BIN={INSTALLED} (scripts/test-package.sh)"
    );
    assert!(require_root(
        "installs a sudoers file for the package's user"
    ));
    assert!(
        nix::unistd::User::from_name("libra")
            .ok()
            .flatten()
            .is_some(),
        "the package creates the user libra"
    );

    // The old appliance, as the reference worker left it.
    let layout = Layout::for_user("libra");
    let _haproxy = HaproxyGuard {
        script: layout.script(),
        config: layout.config(),
    };
    let g = Gearmand::start();
    let b = Backend::http("b1");
    let port = free_port();
    let socket = layout.path("run/stats.sock");
    let reference_cfg = include_str!("fixtures/reference-haproxy.cfg")
        .replace("@STATS_SOCKET@", &socket.display().to_string())
        .replace("@PORT@", &port.to_string())
        .replace("@BACKEND@", &b.port.to_string());
    std::fs::write(layout.config(), &reference_cfg).unwrap();
    let started = Command::new(layout.script()).arg("start").output().unwrap();
    assert!(started.status.success(), "{started:?}");
    assert!(wait_until(Duration::from_secs(10), || http_get(port, None)
        .is_ok_and(|r| r.1 == "b1")));
    for _ in 0..20 {
        http_get(port, None).unwrap();
    }
    // The reference's last METRICS report saw the counter 1234 bytes lower than now.
    let now = bout(&socket);
    let reference_state = json!({
        "start": "2014-01-09 14:11:45.704754", "end": "2014-01-09 15:11:45",
        "last_tcp_bytes_out": 0, "last_http_bytes_out": now - 1234,
        "unreported_tcp_bytes_out": 0, "unreported_http_bytes_out": 0,
    });
    std::fs::write(
        layout.path("log/haproxy.stats"),
        reference_state.to_string(),
    )
    .unwrap();
    let haproxy_before = haproxy_pid(&layout);

    // Step 1 (install the package) was done by scripts/test-package.sh; it does not start
    // the service on a first install.
    let version = Command::new(INSTALLED).arg("--version").output().unwrap();
    assert!(version.status.success());

    // Step 2: /etc/libra/libra.cfg stays as it is (here: the reference INI of this layout).
    let mut cfg = WorkerConfig::new(&[g.addr()]);
    cfg.driver = "haproxy".to_string();
    cfg.run_as = Some((layout.uid, layout.gid));
    let worker_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        worker_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let ini = layout.worker_ini(&cfg, worker_dir.path());
    let ini_path = worker_dir.path().join("libra.cfg");
    std::fs::write(&ini_path, &ini).unwrap();

    // Step 3: the sudoers rule the installed binary prints for this file and user.
    let rule = printed_rule_for(&ini_path, "libra");
    assert!(rule.contains("\nlibra ALL=(root) NOPASSWD: "), "{rule}");
    let _sudoers = SudoersFile::install(&layout, &rule);

    // Step 4 (stop the old worker) has nothing to stop here. Step 5: start ours as the
    // service-mode drop-in does: `libra-worker run --config /etc/libra/libra.cfg`, user libra.
    let w = Worker::start_with_file(cfg, worker_dir, "libra.cfg", &ini);
    assert!(
        w.wait_for_log("connected to job server", 1, Duration::from_secs(15)),
        "{}",
        w.log()
    );
    assert_eq!(uids(w.pid()), vec![layout.uid; 4], "runs as libra");

    // Step 6, the checks of the notes: DISCOVER, STATS, METRICS taken over.
    let d = action(&g, &w, "DISCOVER");
    assert!(passed(&d), "{d}");
    let s = action(&g, &w, "STATS");
    assert!(passed(&s), "{s}\n{}", w.log());
    for _ in 0..10 {
        http_get(port, None).unwrap();
    }
    let after = bout(&socket);
    let m = action(&g, &w, "METRICS");
    assert!(passed(&m), "{m}\n{}", w.log());
    assert_eq!(
        billed_http(&m),
        after - (now - 1234),
        "exactly what the reference had not billed: {m}"
    );
    assert_eq!(m["utc_start"], "2014-01-09 15:11:45.000001", "{m}");
    assert_eq!(
        haproxy_pid(&layout),
        haproxy_before,
        "HAProxy was not restarted"
    );

    // An UPDATE rewrites the live file through sudo and reloads the distribution's HAProxy.
    let b2 = Backend::http("b2");
    let v = update(&g, &w, json!([http_lb(port, vec![node(2, &b2)])]));
    assert!(passed(&v), "{v}\n{}", w.log());
    assert!(wait_until(Duration::from_secs(10), || http_get(port, None)
        .is_ok_and(|r| r.1 == "b2")));
    assert_eq!(layout.owner(&layout.config()), 0, "the live file is root's");

    // Rollback (the notes' last section): stop ours; HAProxy goes on serving, on a file it
    // accepts, for the old worker to take back.
    // (`stop` hands the directory on: the harness does not stop HAProxy as `drop` would.)
    let _worker_dir = w.stop();
    assert_eq!(http_get(port, None).unwrap().1, "b2");
    let check = Command::new(libra_worker::config::haproxy_binary_from_env())
        .args(["-c", "-f"])
        .arg(layout.config())
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
}
