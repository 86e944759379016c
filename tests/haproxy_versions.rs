//! Which HAProxy the worker drives: it asks the binary (`haproxy -vv`), says what it found
//! in `check-config`, and refuses one older than 2.2 at start. The HAProxy under test is
//! the system's, or the one `LIBRA_WORKER__HAPROXY__BINARY` names (`.ci/run` runs the
//! HAProxy-facing tests once per version that way).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::*;
use libra_worker::config::haproxy_binary_from_env;

/// The first line of `haproxy -vv`: "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - ...".
fn release_of(binary: &std::path::Path) -> String {
    let out = Command::new(binary)
        .arg("-vv")
        .output()
        .expect("haproxy -vv");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let first = text.lines().next().unwrap_or_default();
    first
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no version in {first:?}"))
        .to_string()
}

#[test]
fn check_config_names_the_haproxy_and_what_it_will_use() {
    let binary = haproxy_binary_from_env();
    let release = release_of(&binary);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = WorkerConfig::new(&["127.0.0.1:4730".to_string()]);
    cfg.driver = "haproxy".to_string();
    cfg.haproxy = Some(format!(
        "state_dir = \"{}\"\nbinary = \"{}\"\n",
        dir.path().join("state").display(),
        binary.display()
    ));
    let path = dir.path().join("worker.toml");
    std::fs::write(&path, cfg.toml(dir.path())).unwrap();
    let out = cli(&["check-config", "--config", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(format!("# HAProxy {release} at {}", binary.display()).as_str()),
        "{stdout}"
    );
    // One line per capability, each saying yes or no.
    let caps: Vec<&str> = lines.take_while(|l| l.starts_with("# ")).collect();
    assert!(caps.len() >= 4, "{stdout}");
    assert!(
        caps.iter()
            .all(|l| l.ends_with(": yes") || l.ends_with(": no")),
        "{stdout}"
    );
    assert!(
        caps.iter().any(|l| l.contains("dynamic servers")),
        "{stdout}"
    );
    // The rest is the configuration, still valid TOML.
    assert!(toml::from_str::<toml::Value>(&stdout).is_ok(), "{stdout}");
}

/// A stand-in for a HAProxy this machine cannot run: it answers `-vv` as HAProxy 2.0 does
/// and nothing else.
fn old_haproxy(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("haproxy-2.0");
    std::fs::write(
        &path,
        "#!/bin/sh\n[ \"$1\" = -vv ] || exit 1\n\
         echo 'HA-Proxy version 2.0.33-1~bpo10+1 2023/09/01 - https://haproxy.org/'\n\
         echo 'Status: long-term supported branch.'\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn an_haproxy_older_than_2_2_is_refused_at_start_naming_both_versions() {
    let g = Gearmand::start();
    let bin_dir = tempfile::tempdir().unwrap();
    let old = old_haproxy(bin_dir.path());
    let mut cfg = WorkerConfig::new(&[g.addr()]);
    cfg.driver = "haproxy".to_string();
    cfg.env = vec![(
        "LIBRA_WORKER__HAPROXY__BINARY".to_string(),
        old.display().to_string(),
    )];
    let mut w = Worker::start(cfg);
    let code = w.wait_exit(Duration::from_secs(15));
    let log = w.log();
    assert_eq!(code, Some(1), "the worker refuses to start:\n{log}");
    assert!(log.contains("HAProxy 2.0.33-1~bpo10+1"), "{log}");
    assert!(log.contains("HAProxy 2.2.0 or newer"), "{log}");
    assert!(!log.contains("connected to job server"), "{log}");

    // check-config says the same, and fails.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("worker.toml");
    let mut cfg = WorkerConfig::new(&[g.addr()]);
    cfg.driver = "haproxy".to_string();
    cfg.haproxy = Some(format!("binary = \"{}\"\n", old.display()));
    std::fs::write(&path, cfg.toml(dir.path())).unwrap();
    // The file names the binary; the variable (set when testing another HAProxy) would
    // override it.
    let out = Command::new(worker_bin())
        .args(["check-config", "--config", path.to_str().unwrap()])
        .env_remove("LIBRA_WORKER__HAPROXY__BINARY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("2.2.0 or newer"), "{stderr}");
}
