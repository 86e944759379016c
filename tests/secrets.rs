//! The Swift token of ARCHIVE jobs never reaches a log: real gearmand, the real binary at
//! `log.level = "trace"`, in `term` and `json` format, to stderr and to `log.file`, fed a
//! valid ARCHIVE and bodies that carry the token in every awkward place we could think of.

mod common;

use std::path::Path;
use std::time::Duration;

use common::worker_toml::{quoted_path, set_key};
use common::*;
use serde_json::{json, Value};

/// A token no log line can contain by chance.
fn new_token() -> String {
    let n: u128 = rand::random();
    format!("SwiftTok-{n:032x}-zQ")
}

/// Job bodies carrying `token`, each answered FAIL by the null driver or the validator.
fn bodies(token: &str) -> Vec<Vec<u8>> {
    let archive = json!({
        "hpcs_action": "ARCHIVE",
        "hpcs_object_store_type": "swift",
        "hpcs_object_store_basepath": "lbaaslogs",
        "hpcs_object_store_endpoint": "https://swift.example.com/v1/AUTH_test",
        "hpcs_object_store_token": token,
        "loadBalancers": [{"id": "15", "protocol": "HTTP"}]
    });
    let mut bad_id = archive.clone();
    bad_id["loadBalancers"][0]["id"] = json!({"hpcs_object_store_token": token});
    let mut bad_type = archive.clone();
    bad_type["hpcs_object_store_type"] = json!({"hpcs_object_store_token": token});
    let mut upper = archive.clone();
    upper["HPCS_OBJECT_STORE_TOKEN"] = json!(token);
    let mut deep = json!({"hpcs_object_store_token": token});
    for _ in 0..40 {
        deep = json!([deep]);
    }
    let json_bodies = vec![
        // The real thing; the null driver answers FAIL.
        archive.clone(),
        // Validation failures with the token present.
        json!({"hpcs_action": "ARCHIVE", "hpcs_object_store_token": token}),
        json!({"hpcs_action": "archive", "hpcs_object_store_type": "S3",
               "hpcs_object_store_token": token}),
        bad_id,
        bad_type,
        upper,
        // Refused before dispatch.
        json!({"hpcs_action": "FLY", "hpcs_object_store_token": token}),
        json!({"hpcs_object_store_token": token}),
        json!([{"hpcs_action": "ARCHIVE", "hpcs_object_store_token": token}]),
        json!({"hpcs_action": "ARCHIVE", "hpcs_object_store_token": token, "deep": deep}),
        // Other actions carrying it, nested.
        json!({"hpcs_action": "UPDATE", "hpcs_object_store_token": token,
               "loadBalancers": [{"protocol": "HTTP", "hpcs_object_store_token": token,
                                  "nodes": [{"address": "10.0.0.1", "port": 80}]}]}),
        json!({"hpcs_action": "DISCOVER", "extra": {"hpcs_object_store_token": token}}),
        // JSON encoded twice: a string that holds the request.
        Value::String(archive.to_string()),
    ];
    let mut out: Vec<Vec<u8>> = json_bodies
        .iter()
        .map(|v| v.to_string().into_bytes())
        .collect();
    let archive_text = archive.to_string();
    // Truncated, with a trailing comma, and not UTF-8.
    out.push(archive_text.as_bytes()[..archive_text.len() - 20].to_vec());
    out.push(
        format!(r#"{{"hpcs_action": "ARCHIVE", "hpcs_object_store_token": "{token}","#)
            .into_bytes(),
    );
    let mut not_utf8 =
        format!(r#"{{"hpcs_action": "ARCHIVE", "hpcs_object_store_token": "{token}", "x": ""#)
            .into_bytes();
    not_utf8.extend_from_slice(b"\xff\xfe\"}");
    out.push(not_utf8);
    // The key spelled with JSON escapes, in a body that does not parse.
    out.push(
        format!(r#"{{"hpcs_action": "ARCHIVE", "hpcs_object_store_tok\u0065n": "{token}", }}"#)
            .into_bytes(),
    );
    // Over limits.max_job_bytes (1 MiB).
    let big = json!({"hpcs_action": "ARCHIVE", "hpcs_object_store_token": token,
                     "padding": "p".repeat(1024 * 1024)});
    out.push(big.to_string().into_bytes());
    out
}

/// Runs every body through a worker logging at trace level in `format`, to `log.file`
/// when `to_file`, and checks the token is in no output at all.
fn token_stays_out_of_the_log(format: &str, to_file: bool) {
    let token = new_token();
    let g = Gearmand::start();
    let file_name = format!("{format}.log");
    let w = Worker::start_edited(WorkerConfig::new(&[g.addr()]), |t, dir: &Path| {
        let t = set_key(&t, "log", "level", "\"trace\"");
        let t = set_key(&t, "log", "format", &format!("\"{format}\""));
        if to_file {
            set_key(&t, "log", "file", &quoted_path(&dir.join(&file_name)))
        } else {
            t
        }
    });
    let log_file = w.dir.path().join(&file_name);
    let output = |w: &Worker| w.log() + &std::fs::read_to_string(&log_file).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || output(&w)
            .contains("connected to job server")),
        "{}",
        output(&w)
    );

    let bodies = bodies(&token);
    for body in &bodies {
        let answer = submit_raw(&g.addr(), w.function(), body.clone());
        let discover = body.starts_with(br#"{"hpcs_action":"DISCOVER""#);
        assert_eq!(passed(&answer), discover, "{answer}");
    }
    // Stopping flushes the asynchronous log drain.
    let stderr_path = w.log_path.clone();
    let dir = w.stop();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let file = std::fs::read_to_string(dir.path().join(&file_name)).unwrap_or_default();
    let all = format!("{stderr}{file}");

    // The jobs were logged, in the configured place and format, and masked.
    let main = if to_file { &file } else { &stderr };
    assert!(
        main.matches("job done").count() >= bodies.len(),
        "{} of {} jobs logged:\n{all}",
        main.matches("job done").count(),
        bodies.len()
    );
    assert!(
        main.contains("job refused") && main.contains("*****"),
        "{all}"
    );
    if to_file {
        assert!(
            !stderr.contains("job done"),
            "log.file set, yet jobs went to stderr"
        );
    }
    if format == "json" {
        for line in main.lines().filter(|l| !l.is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(v.get("msg").is_some(), "{line}");
        }
    }
    let leaks: Vec<&str> = all.lines().filter(|l| l.contains(&token)).collect();
    assert!(
        leaks.is_empty(),
        "the token was logged:\n{}",
        leaks.join("\n")
    );
    // Not even a recognisable part of it (a cut-off line would show a prefix).
    for window in token.as_bytes().windows(16) {
        let part = std::str::from_utf8(window).expect("ascii");
        assert!(!all.contains(part), "part of the token was logged: {part}");
    }
    drop(g);
}

#[test]
fn term_format_to_stderr() {
    token_stays_out_of_the_log("term", false);
}

#[test]
fn term_format_to_log_file() {
    token_stays_out_of_the_log("term", true);
}

#[test]
fn json_format_to_stderr() {
    token_stays_out_of_the_log("json", false);
}

#[test]
fn json_format_to_log_file() {
    token_stays_out_of_the_log("json", true);
}
