//! The metrics page: counts after known traffic, a page promtool accepts, and /healthz
//! following the job servers and HAProxy.

mod common;

use std::time::Duration;

use common::backends::{http_get_path, Backend};
use common::*;
use serde_json::json;

fn value(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

#[test]
fn scrape_counts_known_traffic_and_promtool_accepts_it() {
    let g = Gearmand::start();
    let mport = free_port();
    let mut cfg = WorkerConfig::new(&[g.addr()]);
    cfg.driver = "haproxy".to_string();
    cfg.metrics_listen = format!("127.0.0.1:{mport}");
    let w = Worker::start(cfg);
    assert!(w.wait_for_log("connected to job server", 1, Duration::from_secs(15)));
    let f = w.function().to_string();
    for _ in 0..3 {
        assert!(passed(&submit(
            &g.addr(),
            &f,
            &json!({"hpcs_action": "DISCOVER"})
        )));
    }
    submit_raw(&g.addr(), &f, b"not json".to_vec());
    let b = Backend::http("b");
    let port = free_port();
    let update = json!({"hpcs_action": "UPDATE", "loadBalancers": [{"protocol": "HTTP", "port": port,
        "nodes": [{"id": 1, "address": "127.0.0.1", "port": b.port}]}]});
    assert!(passed(&submit(&g.addr(), &f, &update)));
    let mut two = update.clone();
    // A new weight: a runtime-API change on every HAProxy version.
    two["loadBalancers"][0]["nodes"] =
        json!([{"id": 1, "address": "127.0.0.1", "port": b.port, "weight": 5}]);
    assert!(passed(&submit(&g.addr(), &f, &two)), "a node-only change");
    let (status, page) = http_get_path(mport, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        value(
            &page,
            "libra_worker_jobs_total{action=\"DISCOVER\",result=\"PASS\"}"
        ),
        Some(3.0),
        "{page}"
    );
    assert_eq!(
        value(
            &page,
            "libra_worker_jobs_total{action=\"INVALID\",result=\"FAIL\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &page,
            "libra_worker_jobs_total{action=\"UPDATE\",result=\"PASS\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &page,
            "libra_worker_job_duration_seconds_count{action=\"DISCOVER\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        value(&page, "libra_worker_haproxy_reloads_total"),
        Some(1.0),
        "the first UPDATE started HAProxy"
    );
    assert_eq!(
        value(&page, "libra_worker_haproxy_runtime_applies_total"),
        Some(1.0),
        "the second went through the runtime API"
    );
    assert_eq!(value(&page, "libra_worker_haproxy_up"), Some(1.0));
    assert_eq!(
        value(&page, "libra_worker_mailbox_depth{actor=\"controller\"}"),
        Some(0.0)
    );
    assert!(
        value(
            &page,
            "libra_worker_mailbox_handled_total{actor=\"controller\"}"
        )
        .unwrap()
            >= 6.0
    );
    assert!(
        value(
            &page,
            "libra_worker_mailbox_handled_total{actor=\"driver\"}"
        )
        .unwrap()
            >= 2.0
    );
    // With nothing to do, the connection goes to sleep (PRE_SLEEP) once its grabs come
    // back empty: wait for that rather than expect it the instant the last job ends.
    let server = format!(
        "libra_worker_connection_state{{server=\"{}\",state=\"sleeping\"}}",
        g.addr()
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (_, page) = http_get_path(mport, "/metrics").unwrap();
            value(&page, &server) == Some(1.0)
        }),
        "{page}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("page.txt");
    std::fs::write(&file, &page).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn healthz_follows_the_job_server() {
    let mut g = Gearmand::start();
    let mport = free_port();
    let mut cfg = WorkerConfig::new(&[g.addr()]);
    cfg.metrics_listen = format!("127.0.0.1:{mport}");
    let w = Worker::start(cfg);
    assert!(w.wait_for_log("connected to job server", 1, Duration::from_secs(15)));
    let health = || http_get_path(mport, "/healthz").map(|r| r.0).unwrap_or(0);
    assert!(wait_until(Duration::from_secs(5), || health() == 200));
    g.kill();
    assert!(
        wait_until(Duration::from_secs(5), || health() == 503),
        "unhealthy without a job server"
    );
    let (_, body) = http_get_path(mport, "/healthz").unwrap();
    assert!(body.contains("no job server"), "{body}");
    g.restart();
    assert!(
        wait_until(Duration::from_secs(10), || health() == 200),
        "healthy again"
    );
}

#[test]
fn twenty_updates_in_flight_show_in_the_driver_queue() {
    use libra_worker::gearman::client::{Client, JobOutcome};
    let g = Gearmand::start();
    let mport = free_port();
    let mut cfg = WorkerConfig::new(&[g.addr()]);
    cfg.driver = "haproxy".to_string();
    cfg.metrics_listen = format!("127.0.0.1:{mport}");
    let w = Worker::start(cfg);
    assert!(w.wait_for_log("connected to job server", 1, Duration::from_secs(15)));
    let b = Backend::http("b");
    let port = free_port();
    // Structural UPDATEs (each reloads HAProxy, tens of ms): they queue for the driver.
    let update = |i: u32| {
        json!({"hpcs_action": "UPDATE", "loadBalancers": [{"protocol": "HTTP", "port": port,
            "nodes": [{"id": 1, "address": "127.0.0.1", "port": b.port}],
            "options": {"client_timeout": 10_000 + i}}]})
    };
    let scrape = || http_get_path(mport, "/metrics").unwrap().1;
    let driver = |page: &str, series: &str| {
        value(page, &format!("{series}{{actor=\"driver\"}}")).unwrap_or(-1.0)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut client = rt.block_on(Client::connect(&g.addr())).unwrap();
    rt.block_on(async {
        for i in 0..20 {
            client
                .feed(w.function(), update(i).to_string())
                .await
                .unwrap();
        }
        client.flush().await.unwrap();
    });
    // While they run, the driver's queue holds several.
    let mut deepest = 0.0f64;
    let saw_a_queue = wait_until(Duration::from_secs(30), || {
        deepest = deepest.max(driver(&scrape(), "libra_worker_mailbox_depth"));
        deepest > 1.0
    });
    assert!(
        saw_a_queue,
        "the driver's queue never held more than one: {deepest}"
    );
    rt.block_on(async {
        for _ in 0..20 {
            let done = client.next_finished().await.unwrap();
            let JobOutcome::Complete(data) = done.outcome else {
                panic!("{:?}", done.outcome)
            };
            let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
            assert!(passed(&v), "{v}");
        }
    });
    let page = scrape();
    assert_eq!(driver(&page, "libra_worker_mailbox_depth"), 0.0, "{page}");
    assert!(
        driver(&page, "libra_worker_mailbox_high_water") >= 10.0,
        "{page}"
    );
    // Waits: most of the 20 waited behind the others, for whole reloads.
    assert!(
        driver(&page, "libra_worker_mailbox_wait_seconds_count") >= 20.0,
        "{page}"
    );
    assert!(
        driver(&page, "libra_worker_mailbox_wait_seconds_sum") > 0.1,
        "{page}"
    );
    // Handling is the real apply time: 20 reloads take more than a few milliseconds.
    assert!(
        driver(&page, "libra_worker_mailbox_handling_seconds_sum") > 0.05,
        "{page}"
    );
}
