//! Service mode as an unprivileged user with the real sudo but without the sudoers rule
//! (`libra-worker sudoers` printed, never installed): an UPDATE fails with an error that
//! says who refused what and how to fix it, the live file stays as it was, nothing is left
//! staged, and the worker goes on serving. Needs root to create the user
//! (`common::require_root`); the layout is `common::sudo`.

mod common;

use std::fs;
use std::time::Duration;

use common::appliance::{http_lb, node};
use common::backends::Backend;
use common::sudo::*;
use common::*;
use serde_json::json;

#[test]
fn without_the_sudoers_rule_an_update_fails_with_an_actionable_error() {
    if !require_root(NEEDS_ROOT) {
        return;
    }
    let layout = Layout::new();
    let _haproxy = HaproxyGuard {
        script: layout.script(),
        config: layout.config(),
    };
    let previous = "# the previous worker's configuration\n";
    fs::write(layout.config(), previous).unwrap();
    let g = Gearmand::start();
    let (cfg, worker_dir, ini) = worker_files(&layout, &g);
    let mut w = start_worker(cfg, worker_dir, &ini);

    let b = Backend::http("b");
    let port = free_port();
    let v = update(&g, &w, json!([http_lb(port, vec![node(1, &b)])]));
    assert_eq!(v["hpcs_response"], "FAIL", "{v}");
    // The first words say who refused what; the log has the whole command.
    let err = answer_error(&v);
    let tmp = format!("{}.BKUP.tmp", layout.config().display());
    assert!(
        err.starts_with(&format!("sudo: a password is required for `cp … {tmp}`")),
        "{err}"
    );
    let full = format!(
        "`{SUDO} -n /usr/bin/cp -- {}/haproxy.cfg.BKUP.staged {tmp}` failed",
        layout.path("state").display()
    );
    assert!(
        w.wait_for_log(&full, 1, Duration::from_secs(5)),
        "{full} in:\n{}",
        w.log()
    );
    assert!(
        w.log().contains("`libra-worker sudoers --config"),
        "{}",
        w.log()
    );
    assert_eq!(fs::read_to_string(layout.config()).unwrap(), previous);
    let staged: Vec<_> = fs::read_dir(layout.path("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".staged"))
        .collect();
    assert!(staged.is_empty(), "nothing left staged: {staged:?}");
    assert_eq!(layout.owner(&layout.config()), 0);
    assert!(!port_open(port));
    assert!(w.is_running(), "the worker keeps running");
    assert!(passed(&action(&g, &w, "DISCOVER")));
    assert_eq!(uids(w.pid()), vec![layout.uid; 4]);
}
