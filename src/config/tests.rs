use super::*;

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn servers_parse_in_every_form() {
    assert_eq!(
        parse_server("10.0.0.1:4730", false).unwrap(),
        ServerAddr {
            host: "10.0.0.1".into(),
            port: 4730,
            tls: false
        }
    );
    assert_eq!(parse_server("gm.example", false).unwrap().port, 4730);
    assert_eq!(
        parse_server("[::1]:5000", false).unwrap(),
        ServerAddr {
            host: "::1".into(),
            port: 5000,
            tls: false
        }
    );
    assert!(parse_server("tls://h:1", false).unwrap().tls);
    assert!(!parse_server("tcp://h:1", true).unwrap().tls);
    assert!(parse_server("h:1", true).unwrap().tls);
    for bad in ["h:0", "h:70000", "h:x", ":80", "a b:1", "[::1"] {
        assert!(parse_server(bad, false).is_err(), "{bad}");
    }
}

#[test]
fn unknown_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "w.toml",
        "[gearman]\nservers = [\"a:1\"]\nreconect_sleep = 3\n",
    );
    let err = Settings::load_with_env(&p, &[]).unwrap_err().to_string();
    assert!(err.contains("reconect_sleep"), "{err}");
}

#[test]
fn bad_value_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "w.toml", "[log]\nlevel = \"loud\"\n");
    let err = Settings::load_with_env(&p, &[]).unwrap_err().to_string();
    assert!(err.starts_with("log.level:"), "{err}");
    let p = write(&dir, "w2.toml", "[gearman]\nservers = [\"a:99999\"]\n");
    let err = Settings::load_with_env(&p, &[]).unwrap_err().to_string();
    assert!(err.starts_with("gearman.servers:"), "{err}");
}

#[test]
fn heartbeat_defaults_to_30_s_and_refuses_zero() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "w.toml", "");
    let s = Settings::load_with_env(&p, &[]).unwrap();
    assert_eq!(s.gearman.heartbeat, Duration::from_secs(DEFAULT_HEARTBEAT));
    let p = write(&dir, "h.toml", "[gearman]\nheartbeat = 2\n");
    let s = Settings::load_with_env(&p, &[]).unwrap();
    assert_eq!(s.gearman.heartbeat, Duration::from_secs(2));
    let p = write(&dir, "z.toml", "[gearman]\nheartbeat = 0\n");
    let err = Settings::load_with_env(&p, &[]).unwrap_err().to_string();
    assert!(err.starts_with("gearman.heartbeat:"), "{err}");
}

#[test]
fn unreadable_tls_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "w.toml",
        "[gearman]\nssl_ca = \"/nonexistent/ca.pem\"\n",
    );
    let err = Settings::load_with_env(&p, &[]).unwrap_err().to_string();
    assert!(
        err.starts_with("gearman.ssl_ca: cannot read /nonexistent/ca.pem"),
        "{err}"
    );
}

#[test]
fn hostname_check_is_on_in_toml_and_off_in_the_reference_ini() {
    let dir = tempfile::tempdir().unwrap();
    let ca = write(&dir, "ca.pem", "");
    let ca = ca.display();
    let verify = |name: &str, text: String| {
        let s = Settings::load_with_env(&write(&dir, name, &text), &[]).unwrap();
        let noted = s.warnings.iter().any(|w| w.contains("not checked"));
        let shown = s.effective().gearman.ssl_verify_hostname;
        (s.gearman.tls.map(|t| t.verify_hostname), shown, noted)
    };
    let on = (Some(true), Some(true), false);
    let off = (Some(false), Some(false), true);
    assert_eq!(
        verify("a.toml", format!("[gearman]\nssl_ca = \"{ca}\"\n")),
        on
    );
    assert_eq!(
        verify(
            "b.toml",
            format!("[gearman]\nssl_ca = \"{ca}\"\nssl_verify_hostname = false\n")
        ),
        off
    );
    assert_eq!(verify("c.cfg", format!("[gearman]\nssl_ca = {ca}\n")), off);
    assert_eq!(
        verify(
            "d.cfg",
            format!("[gearman]\nssl_ca = {ca}\nssl_verify_hostname = True\n")
        ),
        on
    );
    // Without TLS the key means nothing: not shown, nothing noted.
    assert_eq!(verify("e.cfg", String::new()), (None, None, false));
    // Every server plain: nothing goes unchecked, so nothing to note.
    let plain = verify(
        "f.cfg",
        format!("[gearman]\nssl_ca = {ca}\nservers = tcp://a:1\n"),
    );
    assert_eq!(plain, (Some(false), Some(false), false));
}

#[test]
fn environment_overrides_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "w.toml",
        "[gearman]\nservers = [\"a:1\"]\n[worker]\nfunction = \"f\"\n",
    );
    let env = vec![
        (
            "LIBRA_WORKER__GEARMAN__SERVERS".to_string(),
            "b:2, c:3".to_string(),
        ),
        (
            "LIBRA_WORKER__WORKER__JOB_TIMEOUT".to_string(),
            "7".to_string(),
        ),
        ("UNRELATED".to_string(), "x".to_string()),
    ];
    let s = Settings::load_with_env(&p, &env).unwrap();
    let hosts: Vec<_> = s.gearman.servers.iter().map(|s| s.host_port()).collect();
    assert_eq!(hosts, vec!["b:2", "c:3"]);
    assert_eq!(s.worker.job_timeout, Duration::from_secs(7));
    assert_eq!(s.worker.function, "f");
}

#[test]
fn unknown_environment_key_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "w.toml", "");
    let env = vec![(
        "LIBRA_WORKER__GEARMAN__SERVRS".to_string(),
        "b:2".to_string(),
    )];
    let err = Settings::load_with_env(&p, &env).unwrap_err().to_string();
    assert!(err.contains("servrs"), "{err}");
}

#[test]
fn reference_ini_maps_onto_native_keys() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
            &dir,
            "libra.cfg",
            "[DEFAULT]\nverbose = true\ndebug = false\ndaemon = true\nuser = libra\ngroup = libra\n\n\
             [gearman]\nservers = 10.0.0.1:4730, 10.0.0.2:4731\nkeepalive = True\nkeepcnt = 4\nkeepidle = 600\nkeepintvl = 30\nreconnect_sleep = 30\npoll = 1\n\n\
             [worker]\ndriver = haproxy\npid = /var/run/libra/libra_worker.pid\n\n\
             [worker:haproxy]\nservice = ubuntu\nlogfile = /var/log/haproxy.log\nstatsfile = /var/log/haproxy.stats\n\n\
             [admin_api]\ndb_sections = mysql1\n",
        );
    let s = Settings::load_with_env(&p, &[]).unwrap();
    assert_eq!(s.gearman.servers.len(), 2);
    assert_eq!(s.gearman.servers[1].port, 4731);
    assert_eq!(s.gearman.reconnect_sleep, Duration::from_secs(30));
    assert_eq!(s.gearman.keepalive.and_then(|k| k.count), Some(4));
    assert_eq!(s.haproxy.mode, HaproxyMode::Service);
    // The reference's METRICS state is taken over; the worker's own ledger is its own.
    assert_eq!(
        s.haproxy.reference_statsfile,
        Some(PathBuf::from("/var/log/haproxy.stats"))
    );
    assert_eq!(
        s.haproxy.statsfile,
        PathBuf::from(DEFAULT_STATE_DIR).join("metrics.json")
    );
    assert_eq!(
        s.haproxy.config_file,
        PathBuf::from("/etc/haproxy/haproxy.cfg")
    );
    assert_eq!(s.log.level, slog::Level::Info);
    assert_eq!(
        s.worker.pid,
        Some(PathBuf::from("/var/run/libra/libra_worker.pid"))
    );
    let ignored: Vec<_> = s
        .warnings
        .iter()
        .filter(|w| w.contains("ignored"))
        .collect();
    assert_eq!(ignored.len(), 1, "{:?}", s.warnings);
    assert!(ignored[0].contains("[admin_api]"), "{ignored:?}");
}

#[test]
fn ini_defaults_are_the_references() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "a.cfg", "[gearman]\nservers = a:1\n");
    let s = Settings::load_with_env(&p, &[]).unwrap();
    assert_eq!(s.haproxy.mode, HaproxyMode::Service);
    assert_eq!(
        s.haproxy.config_file,
        PathBuf::from("/etc/haproxy/haproxy.cfg")
    );
    assert_eq!(s.haproxy.logfile, PathBuf::from("/var/log/haproxy.log"));
    assert_eq!(
        s.haproxy.reference_statsfile,
        Some(PathBuf::from(reference_ini::REFERENCE_STATSFILE))
    );
    assert!(s
        .haproxy
        .reload_cmd
        .ends_with(&["haproxy".to_string(), "reload".to_string()]));
    assert!(
        s.haproxy.reload_cmd[0].ends_with("service"),
        "{:?}",
        s.haproxy.reload_cmd
    );
    let p = write(&dir, "b.cfg", "[worker:haproxy]\nservice = UBUNTU\n");
    assert_eq!(
        Settings::load_with_env(&p, &[]).unwrap().haproxy.mode,
        HaproxyMode::Service
    );
    let p = write(&dir, "c.cfg", "[worker:haproxy]\nservice = redhat\n");
    let err = Settings::load_with_env(&p, &[]).unwrap_err().to_string();
    assert!(err.contains("service = redhat"), "{err}");
    // Our own [haproxy] section in the INI still chooses managed mode.
    let p = write(&dir, "d.cfg", "[haproxy]\nmode = managed\n");
    assert_eq!(
        Settings::load_with_env(&p, &[]).unwrap().haproxy.mode,
        HaproxyMode::Managed
    );
    // The native format keeps managed mode and no reference state by default.
    let p = write(&dir, "e.toml", "");
    let s = Settings::load_with_env(&p, &[]).unwrap();
    assert_eq!(s.haproxy.mode, HaproxyMode::Managed);
    assert_eq!(s.haproxy.reference_statsfile, None);
    assert!(s.haproxy.sudo.is_empty());
}

#[test]
fn privileged_steps_go_through_the_sudo_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "s.toml",
        "[haproxy]\nmode = \"service\"\nsudo = \"/usr/bin/sudo -n\"\n",
    );
    let s = Settings::load_with_env(&p, &[]).unwrap();
    assert_eq!(s.haproxy.sudo, ["/usr/bin/sudo", "-n"]);
    let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        s.haproxy.privileged(&argv(&["/bin/mv", "a", "b"])),
        argv(&["/usr/bin/sudo", "-n", "/bin/mv", "a", "b"])
    );
    // A command written with sudo already is not wrapped twice.
    assert_eq!(
        s.haproxy.privileged(&argv(&["/usr/bin/sudo", "-n", "x"])),
        argv(&["/usr/bin/sudo", "-n", "x"])
    );
    let p = write(
        &dir,
        "n.toml",
        "[haproxy]\nmode = \"service\"\nsudo = \"\"\n",
    );
    let s = Settings::load_with_env(&p, &[]).unwrap();
    assert!(s.haproxy.sudo.is_empty());
    assert_eq!(
        s.haproxy.privileged(&argv(&["/bin/mv", "a", "b"])),
        argv(&["/bin/mv", "a", "b"])
    );
}

#[test]
fn haproxy_limits_have_the_references_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "e.toml", "");
    let s = Settings::load_with_env(&p, &[]).unwrap();
    assert_eq!(s.haproxy.maxconn, 50_000);
    assert_eq!(s.haproxy.hard_stop_after, None);
    assert_eq!(s.haproxy.max_old_workers, DEFAULT_MAX_OLD_WORKERS);
    let p = write(
        &dir,
        "s.toml",
        "[haproxy]\nmaxconn = 10\nhard_stop_after = 3600\nmax_old_workers = 1\n",
    );
    let s = Settings::load_with_env(&p, &[]).unwrap();
    assert_eq!(
        (
            s.haproxy.maxconn,
            s.haproxy.hard_stop_after,
            s.haproxy.max_old_workers
        ),
        (10, Some(Duration::from_secs(3600)), 1)
    );
    let p = write(&dir, "z.toml", "[haproxy]\nmaxconn = 0\n");
    let err = Settings::load_with_env(&p, &[]).unwrap_err().to_string();
    assert!(err.starts_with("haproxy.maxconn:"), "{err}");
}

#[test]
fn ini_unknown_key_and_section_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "a.cfg", "[gearman]\nserverz = a:1\n");
    let err = Settings::load_with_env(&p, &[]).unwrap_err().to_string();
    assert!(
        err.contains("[gearman]") && err.contains("serverz"),
        "{err}"
    );
    let p = write(&dir, "b.cfg", "[gearmen]\nservers = a:1\n");
    let err = Settings::load_with_env(&p, &[]).unwrap_err().to_string();
    assert!(
        err.contains("[gearmen]") && err.contains("did you mean [gearman]"),
        "{err}"
    );
    // Another service's section, however odd, is not ours to refuse.
    let p = write(
        &dir,
        "c.cfg",
        "[keystone]\n[mysql1]\nport = 3306\n[worker:other]\nx = 1\n",
    );
    let s = Settings::load_with_env(&p, &[]).unwrap();
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("[keystone]") && w.contains("[mysql1]")),
        "{:?}",
        s.warnings
    );
}
