//! The actor core end to end: a real gearmand, the real binary, jobs submitted the way
//! the API server submits them.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn discover_and_diagnostics_through_gearmand() {
    let g = Gearmand::start();
    let w = Worker::start(WorkerConfig::new(&[g.addr()]));
    assert!(
        w.wait_for_log("connected to job server", 1, Duration::from_secs(10)),
        "{}",
        w.log()
    );

    let a = submit(
        &g.addr(),
        w.function(),
        &json!({"hpcs_action": "DISCOVER", "keep": "me"}),
    );
    assert!(passed(&a), "{a}");
    let version = a["version"].as_str().unwrap();
    assert_eq!(version.split('.').count(), 2, "{version}");
    assert!(a["release"]
        .as_str()
        .unwrap()
        .contains(env!("CARGO_PKG_VERSION")));
    assert_eq!(a["keep"], "me", "unknown fields are echoed");

    let d = submit(
        &g.addr(),
        w.function(),
        &json!({"hpcs_action": "diagnostics"}),
    );
    assert!(passed(&d), "{d}");
    assert_eq!(
        d["gearman"],
        json!([{"host": "127.0.0.1", "status": "PASS"}])
    );
    assert_eq!(d["network"], "SKIPPED");
}

#[test]
fn diagnostics_reports_each_check() {
    let g = Gearmand::start();
    let outside = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = WorkerConfig::new(&[g.addr(), format!("127.0.0.1:{}", free_port())]);
    cfg.worker_extra = format!(
        "diagnostics_target = \"127.0.0.1:{}\"",
        outside.local_addr().unwrap().port()
    );
    let w = Worker::start(cfg);
    assert!(
        w.wait_for_log("connected to job server", 1, Duration::from_secs(10)),
        "{}",
        w.log()
    );
    let d = submit(
        &g.addr(),
        w.function(),
        &json!({"hpcs_action": "DIAGNOSTICS"}),
    );
    assert!(passed(&d), "checks ran, whatever they found: {d}");
    assert_eq!(d["network"], "PASS", "{d}");
    assert_eq!(d["gearman"][0]["status"], "PASS");
    assert_eq!(
        d["gearman"][1]["status"], "FAIL",
        "the second job server is down: {d}"
    );
    drop(outside);
    let d = submit(
        &g.addr(),
        w.function(),
        &json!({"hpcs_action": "DIAGNOSTICS"}),
    );
    assert_eq!(d["network"], "FAIL", "{d}");
}

#[test]
fn submit_cli_prints_the_answer() {
    let g = Gearmand::start();
    let w = Worker::start(WorkerConfig::new(&[g.addr()]));
    assert!(w.wait_for_log("connected to job server", 1, Duration::from_secs(10)));
    let out = cli(&[
        "submit",
        "--server",
        &g.addr(),
        "--function",
        w.function(),
        "DISCOVER",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(passed(&v), "{v}");
    assert!(v["version"].is_string());

    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.json");
    std::fs::write(&job, r#"{"hpcs_action": "DIAGNOSTICS"}"#).unwrap();
    let out = cli(&[
        "submit",
        "--server",
        &g.addr(),
        "--function",
        w.function(),
        "--file",
        job.to_str().unwrap(),
        "--compact",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["gearman"][0]["status"], "PASS", "{v}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim().lines().count(),
        1
    );
}

#[test]
fn malformed_jobs_fail_and_the_next_job_is_served() {
    let g = Gearmand::start();
    let w = Worker::start(WorkerConfig::new(&[g.addr()]));
    assert!(w.wait_for_log("connected to job server", 1, Duration::from_secs(10)));
    let f = w.function().to_string();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"this is not json".to_vec(), "not valid JSON"),
        (b"[1, 2, 3]".to_vec(), "must be a JSON object"),
        (b"\"DISCOVER\"".to_vec(), "must be a JSON object"),
        (
            br#"{"loadBalancers": []}"#.to_vec(),
            "Missing 'hpcs_action' value",
        ),
        (
            br#"{"hpcs_action": "EXPLODE"}"#.to_vec(),
            "Invalid 'hpcs_action' value",
        ),
        (vec![0xff, 0xfe, 0x00, 0x01], "not valid JSON"),
    ];
    for (body, want) in cases {
        let a = submit_raw(&g.addr(), &f, body.clone());
        assert_eq!(a["hpcs_response"], "FAIL", "{a}");
        assert!(answer_error(&a).contains(want), "{want}: {a}");
        let next = submit(&g.addr(), &f, &json!({"hpcs_action": "DISCOVER"}));
        assert!(passed(&next), "the worker keeps serving: {next}");
    }
    let a = submit(&g.addr(), &f, &json!({"hpcs_action": "STATS"}));
    assert_eq!(
        answer_error(&a),
        "STATS is not supported by the null driver"
    );
}

#[test]
fn two_job_servers_one_down_at_start() {
    let g1 = Gearmand::start();
    let port2 = free_port();
    let cfg = WorkerConfig::new(&[g1.addr(), format!("127.0.0.1:{port2}")]);
    let w = Worker::start(cfg);
    assert!(w.wait_for_log("connected to job server", 1, Duration::from_secs(10)));
    assert!(passed(&submit(
        &g1.addr(),
        w.function(),
        &json!({"hpcs_action": "DISCOVER"})
    )));

    // The second server comes up later: the worker picks it up without a restart.
    let g2 = Gearmand::start_on(port2);
    assert!(
        w.wait_for_log("job server connection restored", 1, Duration::from_secs(15)),
        "{}",
        w.log()
    );
    for _ in 0..3 {
        assert!(passed(&submit(
            &g2.addr(),
            w.function(),
            &json!({"hpcs_action": "DISCOVER"})
        )));
        assert!(passed(&submit(
            &g1.addr(),
            w.function(),
            &json!({"hpcs_action": "DISCOVER"})
        )));
    }
    // Retries of the down server were logged once at warning level, not once per retry.
    assert_eq!(
        w.log().matches("cannot reach job server").count(),
        1,
        "{}",
        w.log()
    );
}

#[test]
fn gearmand_killed_and_restarted_five_times() {
    let mut g = Gearmand::start();
    let mut w = Worker::start(WorkerConfig::new(&[g.addr()]));
    assert!(w.wait_for_log("connected to job server", 1, Duration::from_secs(10)));
    for round in 1..=5 {
        g.restart();
        // Back-off bound after a healthy connection drops: 1 s + 20 % jitter, plus the
        // time to connect; allow a generous margin for a loaded machine.
        assert!(
            w.wait_for_log(
                "job server connection restored",
                round,
                Duration::from_secs(10)
            ),
            "round {round}: {}",
            w.log()
        );
        let a = submit(&g.addr(), w.function(), &json!({"hpcs_action": "DISCOVER"}));
        assert!(passed(&a), "round {round}: {a}");
    }
    // One process all along: it never exited, and it started once.
    assert!(w.is_running());
    assert_eq!(
        w.log().matches("libra-worker started").count(),
        1,
        "the worker was never restarted"
    );
}

#[test]
fn sigterm_finishes_the_job_in_hand_then_exits_zero() {
    let g = Gearmand::start();
    let hole = Blackhole::new();
    let mut cfg = WorkerConfig::new(&[g.addr()]);
    cfg.worker_extra = format!("diagnostics_target = \"127.0.0.1:{}\"", hole.port);
    let mut w = Worker::start(cfg);
    assert!(w.wait_for_log("connected to job server", 1, Duration::from_secs(10)));
    let server = g.addr();
    let function = w.function().to_string();
    // DIAGNOSTICS to the blackhole takes the full 5 s connect timeout.
    let job = std::thread::spawn(move || {
        submit(&server, &function, &json!({"hpcs_action": "DIAGNOSTICS"}))
    });
    assert!(
        w.wait_for_log("\"DIAGNOSTICS\"", 1, Duration::from_secs(10)),
        "{}",
        w.log()
    );
    w.signal(nix::sys::signal::Signal::SIGTERM);
    let answer = job.join().unwrap();
    assert!(passed(&answer), "{answer}");
    assert_eq!(answer["network"], "FAIL", "{answer}");
    assert_eq!(w.wait_exit(Duration::from_secs(15)), Some(0), "{}", w.log());
    assert!(w.log().contains("stopping: taking no new jobs"));
}

#[test]
fn reference_ini_and_toml_give_the_same_effective_configuration() {
    let root = env!("CARGO_MANIFEST_DIR");
    let check = |file: &str| {
        let out = cli(&["check-config", "--config", &format!("{root}/config/{file}")]);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stdout.is_empty());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ini = check("libra.cfg");
    assert_eq!(ini, check("libra-worker-service.toml"));
    assert!(ini.contains("mode = \"service\""), "{ini}");
    // The native sample is the managed layout, and valid too.
    let toml = check("libra-worker.toml");
    assert!(toml.contains("mode = \"managed\""), "{toml}");
}

#[test]
fn the_reference_sample_libra_cfg_is_read_unchanged_in_service_mode() {
    // etc/libra.cfg of stackforge/libra as it was, every service's section in it.
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/libra.cfg");
    let out = cli(&["check-config", "--config", fixture]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("mode = \"service\""), "{stdout}");
    assert!(
        stdout.contains("config_file = \"/etc/haproxy/haproxy.cfg\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("reference_statsfile = \"/var/log/haproxy.stats\""),
        "{stdout}"
    );
    // One line names everything ignored: other services' sections and DEFAULT keys.
    let ignored: Vec<&str> = stderr.lines().filter(|l| l.contains("ignored")).collect();
    assert_eq!(ignored.len(), 1, "{stderr}");
    for name in [
        "[api]",
        "[admin_api]",
        "[mgm]",
        "[keystone]",
        "[mysql1]",
        "rabbit_use_ssl",
    ] {
        assert!(ignored[0].contains(name), "{name} in {}", ignored[0]);
    }
}

#[test]
fn configuration_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[gearman]\nservers = [\"localhost:4730\"]\nssl_ca = \"/no/such/ca.pem\"\n",
    )
    .unwrap();
    let out = cli(&["run", "--config", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gearman.ssl_ca") && err.contains("/no/such/ca.pem"),
        "{err}"
    );
    std::fs::write(&p, "[worker]\nfuntion = \"x\"\n").unwrap();
    let out = cli(&["check-config", "--config", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("funtion"));
}

#[test]
fn job_limits_fail_clearly_and_change_nothing() {
    let g = Gearmand::start();
    let mut cfg = WorkerConfig::new(&[g.addr()]);
    cfg.extra = "[limits]\nmax_job_bytes = 600\nmax_json_depth = 5\nmax_load_balancers = 1\nmax_nodes = 2\n".to_string();
    let w = Worker::start(cfg);
    assert!(
        w.wait_for_log("connected to job server", 1, Duration::from_secs(10)),
        "{}",
        w.log()
    );
    let f = w.function().to_string();
    let node = |i: u32| json!({"id": i, "address": "10.0.0.1", "port": 80});
    let cases = vec![
        (
            json!({"hpcs_action": "DISCOVER", "pad": "x".repeat(700)}),
            "limits.max_job_bytes",
        ),
        (
            json!({"hpcs_action": "DISCOVER", "a": [[[[[[1]]]]]]}),
            "limits.max_json_depth",
        ),
        (
            json!({"hpcs_action": "UPDATE", "loadBalancers": [
            {"protocol": "HTTP", "nodes": [node(1)]}, {"protocol": "TCP", "port": 81, "nodes": [node(2)]}]}),
            "limits.max_load_balancers",
        ),
        (
            json!({"hpcs_action": "UPDATE", "loadBalancers": [{"protocol": "HTTP", "nodes": [node(1), node(2), node(3)]}]}),
            "limits.max_nodes",
        ),
    ];
    for (job, key) in cases {
        let a = submit(&g.addr(), &f, &job);
        assert_eq!(a["hpcs_response"], "FAIL", "{a}");
        assert!(answer_error(&a).contains(key), "{key}: {a}");
    }
    assert!(passed(&submit(
        &g.addr(),
        &f,
        &json!({"hpcs_action": "DISCOVER"})
    )));
}

#[test]
fn two_hundred_jobs_in_flight_each_answer_is_its_own() {
    use libra_worker::gearman::client::{Client, JobOutcome};
    let (g1, g2) = (Gearmand::start(), Gearmand::start());
    let w = Worker::start(WorkerConfig::new(&[g1.addr(), g2.addr()]));
    assert!(w.wait_for_log("connected to job server", 2, Duration::from_secs(10)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mismatched = rt.block_on(async {
        // 100 jobs on each job server, all sent before any answer is read.
        let mut clients = [
            Client::connect(&g1.addr()).await.unwrap(),
            Client::connect(&g2.addr()).await.unwrap(),
        ];
        let mut sent = std::collections::HashMap::new();
        for (c, client) in clients.iter_mut().enumerate() {
            for i in 0..100 {
                // A mix of actions (STATS queues for the driver, DISCOVER is answered at
                // once) keeps answers from coming back in the order the jobs went out.
                let tag = format!("{c}-{i}");
                let action = if i % 3 == 0 { "STATS" } else { "DISCOVER" };
                let body = json!({"hpcs_action": action, "tag": tag});
                let seq = client.feed(w.function(), body.to_string()).await.unwrap();
                sent.insert((c, seq), tag);
            }
            client.flush().await.unwrap();
        }
        assert_eq!(sent.len(), 200);
        let mut mismatched = Vec::new();
        for (c, client) in clients.iter_mut().enumerate() {
            for _ in 0..100 {
                let done = tokio::time::timeout(Duration::from_secs(30), client.next_finished())
                    .await
                    .expect("answered in time")
                    .unwrap();
                let JobOutcome::Complete(data) = done.outcome else {
                    panic!("job {} not completed: {:?}", done.seq, done.outcome);
                };
                let answer: serde_json::Value = serde_json::from_slice(&data).unwrap();
                let want = &sent[&(c, done.seq)];
                if answer["tag"] != want.as_str() {
                    mismatched.push(format!("{want} got {answer}"));
                }
            }
        }
        mismatched
    });
    assert!(mismatched.is_empty(), "{mismatched:?}");
}
