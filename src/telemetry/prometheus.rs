//! Renders the counters as Prometheus text exposition format (version 0.0.4).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::connection::ConnState;
use super::histogram::{Snapshot, BOUNDS};
use super::mailbox::MailboxStats;
use super::Telemetry;
use crate::jobs::Action;

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, s: &Snapshot) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (i, c) in s.cumulative.iter().enumerate() {
        let le = BOUNDS
            .get(i)
            .map(|b| b.to_string())
            .unwrap_or_else(|| "+Inf".to_string());
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {c}");
    }
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", s.sum_seconds);
    let _ = writeln!(out, "{name}_count{braces} {}", s.count);
}

/// The whole metrics page.
pub fn render(t: &Telemetry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    header(
        &mut out,
        "libra_worker_build_info",
        "gauge",
        "Build of this worker.",
    );
    let _ = writeln!(
        out,
        "libra_worker_build_info{{version=\"{}\",release=\"{}\"}} 1",
        label(&crate::jobs::discover::version()),
        label(&crate::jobs::discover::release())
    );
    header(
        &mut out,
        "libra_worker_uptime_seconds",
        "gauge",
        "Seconds since the worker started.",
    );
    let _ = writeln!(
        out,
        "libra_worker_uptime_seconds {}",
        t.started.elapsed().as_secs_f64()
    );

    let mailboxes: Vec<(String, &MailboxStats)> = vec![
        ("controller".to_string(), &t.controller),
        ("driver".to_string(), &t.driver_mailbox),
    ];
    let conns = t.connections();
    let conn_boxes: Vec<(String, &MailboxStats)> = conns
        .iter()
        .map(|c| (format!("connection {}", c.server), &c.inbox))
        .collect();
    let all: Vec<&(String, &MailboxStats)> = mailboxes.iter().chain(conn_boxes.iter()).collect();

    header(
        &mut out,
        "libra_worker_mailbox_depth",
        "gauge",
        "Messages waiting in an actor's queue (sent, not yet taken out by its handler).",
    );
    for (actor, m) in &all {
        let _ = writeln!(
            out,
            "libra_worker_mailbox_depth{{actor=\"{}\"}} {}",
            label(actor),
            m.depth()
        );
    }
    header(
        &mut out,
        "libra_worker_mailbox_high_water",
        "gauge",
        "Deepest an actor's mailbox has been.",
    );
    for (actor, m) in &all {
        let _ = writeln!(
            out,
            "libra_worker_mailbox_high_water{{actor=\"{}\"}} {}",
            label(actor),
            m.high_water()
        );
    }
    header(
        &mut out,
        "libra_worker_mailbox_handled_total",
        "counter",
        "Messages an actor's handler has taken out of its queue.",
    );
    for (actor, m) in &all {
        let _ = writeln!(
            out,
            "libra_worker_mailbox_handled_total{{actor=\"{}\"}} {}",
            label(actor),
            m.handled_total()
        );
    }
    header(
        &mut out,
        "libra_worker_mailbox_wait_seconds",
        "histogram",
        "Time a message waited in an actor's queue before its handler took it.",
    );
    for (actor, m) in &all {
        histogram(
            &mut out,
            "libra_worker_mailbox_wait_seconds",
            &format!("actor=\"{}\"", label(actor)),
            &m.wait.snapshot(),
        );
    }
    header(
        &mut out,
        "libra_worker_mailbox_handling_seconds",
        "histogram",
        "Time an actor's handler spent on one message.",
    );
    for (actor, m) in &all {
        histogram(
            &mut out,
            "libra_worker_mailbox_handling_seconds",
            &format!("actor=\"{}\"", label(actor)),
            &m.handling.snapshot(),
        );
    }

    let slots: Vec<(Option<Action>, &str)> = std::iter::once((None, "INVALID"))
        .chain(Action::ALL.iter().map(|a| (Some(*a), a.as_str())))
        .collect();
    header(
        &mut out,
        "libra_worker_jobs_total",
        "counter",
        "Jobs answered, by action and result.",
    );
    for (a, name) in &slots {
        for (passed, result) in [(true, "PASS"), (false, "FAIL")] {
            let _ = writeln!(
                out,
                "libra_worker_jobs_total{{action=\"{name}\",result=\"{result}\"}} {}",
                t.jobs.count(*a, passed)
            );
        }
    }
    header(
        &mut out,
        "libra_worker_job_duration_seconds",
        "histogram",
        "Job latency from arrival to answer, by action.",
    );
    for (a, name) in &slots {
        histogram(
            &mut out,
            "libra_worker_job_duration_seconds",
            &format!("action=\"{name}\""),
            &t.jobs.latency(*a).snapshot(),
        );
    }

    header(
        &mut out,
        "libra_worker_connection_state",
        "gauge",
        "Job-server connection state (1 for the current one).",
    );
    for c in &conns {
        let now = c.state();
        for s in ConnState::ALL {
            let _ = writeln!(
                out,
                "libra_worker_connection_state{{server=\"{}\",state=\"{}\"}} {}",
                label(&c.server),
                s.name(),
                u8::from(s == now)
            );
        }
    }
    header(
        &mut out,
        "libra_worker_connection_reconnects_total",
        "counter",
        "Connection failures followed by a reconnect.",
    );
    for c in &conns {
        let _ = writeln!(
            out,
            "libra_worker_connection_reconnects_total{{server=\"{}\"}} {}",
            label(&c.server),
            c.reconnects.load(Ordering::Relaxed)
        );
    }
    header(
        &mut out,
        "libra_worker_connection_jobs_total",
        "counter",
        "Jobs taken from a job server.",
    );
    for c in &conns {
        let _ = writeln!(
            out,
            "libra_worker_connection_jobs_total{{server=\"{}\"}} {}",
            label(&c.server),
            c.jobs.load(Ordering::Relaxed)
        );
    }
    header(
        &mut out,
        "libra_worker_connection_last_error_info",
        "gauge",
        "The last error of a connection (empty when healthy).",
    );
    for c in &conns {
        let _ = writeln!(
            out,
            "libra_worker_connection_last_error_info{{server=\"{}\",error=\"{}\"}} 1",
            label(&c.server),
            label(&c.last_error())
        );
    }

    let d = &t.driver;
    for (name, help, v) in [
        (
            "libra_worker_haproxy_reloads_total",
            "HAProxy reloads and restarts the driver performed.",
            d.reloads.load(Ordering::Relaxed),
        ),
        (
            "libra_worker_haproxy_reload_failures_total",
            "Reloads HAProxy refused (the previous config kept serving).",
            d.reload_failures.load(Ordering::Relaxed),
        ),
        (
            "libra_worker_haproxy_runtime_applies_total",
            "Node-only updates applied through the runtime API, without a reload.",
            d.runtime_applies.load(Ordering::Relaxed),
        ),
        (
            "libra_worker_haproxy_runtime_fallbacks_total",
            "Runtime-API updates that fell back to a reload.",
            d.runtime_fallbacks.load(Ordering::Relaxed),
        ),
        (
            "libra_worker_validation_failures_total",
            "Configurations refused by validation (job checks or haproxy -c).",
            d.validation_failures.load(Ordering::Relaxed),
        ),
        (
            "libra_worker_haproxy_restarts_total",
            "Times the worker restarted a HAProxy that had died.",
            d.restarts.load(Ordering::Relaxed),
        ),
        (
            "libra_worker_haproxy_watch_restarts_total",
            "Of those, restarts the watch on HAProxy's master triggered (at once, not at a housekeeping turn).",
            d.watch_restarts.load(Ordering::Relaxed),
        ),
        (
            "libra_worker_haproxy_watch_exits_total",
            "Exits of HAProxy's master the watch reported (the driver's own stops included).",
            d.watch_exits.load(Ordering::Relaxed),
        ),
        (
            "libra_worker_haproxy_state_snapshots_total",
            "Node-health snapshots written to the server-state file between reloads.",
            d.state_snapshots.load(Ordering::Relaxed),
        ),
        (
            "libra_worker_driver_housekeeping_total",
            "Upkeep turns the driver finished (restarting a dead HAProxy, sweeping drained servers).",
            t.housekeeping.load(Ordering::Relaxed),
        ),
    ] {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    header(
        &mut out,
        "libra_worker_haproxy_up",
        "gauge",
        "HAProxy running (1), stopped (0), unknown (-1).",
    );
    let _ = writeln!(
        out,
        "libra_worker_haproxy_up {}",
        d.haproxy_up.load(Ordering::Relaxed)
    );
    header(
        &mut out,
        "libra_worker_haproxy_expected_up",
        "gauge",
        "What the last job left: running (1), stopped (0), no opinion (-1).",
    );
    let _ = writeln!(
        out,
        "libra_worker_haproxy_expected_up {}",
        d.haproxy_expected_up.load(Ordering::Relaxed)
    );
    header(
        &mut out,
        "libra_worker_healthy",
        "gauge",
        "1 when /healthz answers 200.",
    );
    let _ = writeln!(out, "libra_worker_healthy {}", u8::from(t.health().is_ok()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn page_holds_counts_and_escapes_labels() {
        let t = Telemetry::default();
        t.jobs
            .record(Some(Action::Discover), true, Duration::from_micros(300));
        t.jobs.record(None, false, Duration::from_micros(30));
        let c = std::sync::Arc::new(super::super::connection::ConnectionStatus::new(
            "h:1".into(),
        ));
        c.set_last_error("bad \"quote\"\nnewline");
        t.set_connections(vec![c]);
        let page = render(&t);
        assert!(page.contains("libra_worker_jobs_total{action=\"DISCOVER\",result=\"PASS\"} 1"));
        assert!(page.contains("libra_worker_jobs_total{action=\"INVALID\",result=\"FAIL\"} 1"));
        assert!(page.contains(
            "libra_worker_job_duration_seconds_bucket{action=\"DISCOVER\",le=\"0.0005\"} 1"
        ));
        assert!(page.contains("error=\"bad \\\"quote\\\"\\nnewline\""));
        assert!(
            page.contains("libra_worker_connection_state{server=\"h:1\",state=\"connecting\"} 1")
        );
    }
}
