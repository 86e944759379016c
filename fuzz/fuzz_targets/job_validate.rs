//! Fuzzes the job path a Gearman job body takes before anything is run: the request parser
//! and limits (`jobs::request::parse`), then the UPDATE and ARCHIVE validators, and the
//! log masking of the body. Oracles beyond "never panics": an accepted UPDATE keeps the
//! limits and holds only values safe to write into haproxy.cfg, and parsing it again gives
//! the same load balancers; an accepted ARCHIVE has a usable target; an ARCHIVE error never
//! quotes the token; a masked body or request holds no secret value in any string.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libra_worker::config::Limits;
use libra_worker::drivers::Address;
use libra_worker::jobs::{archive, request, response, update, Action};
use libra_worker::logging::{masked, masked_text, secrets_in};
use serde_json::{Map, Value};

/// Small limits so the fuzzer reaches them.
const LIMITS: Limits = Limits {
    max_job_bytes: 64 * 1024,
    max_json_depth: 16,
    max_load_balancers: 4,
    max_nodes: 8,
};

/// Every string value (not key) in `v`.
fn values_in<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|i| values_in(i, out)),
        Value::Object(map) => map.values().for_each(|i| values_in(i, out)),
        _ => {}
    }
}

/// Every key and string value in `v`.
fn texts_in<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    if let Value::Object(map) = v {
        out.extend(map.keys().map(String::as_str));
    }
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|i| texts_in(i, out)),
        Value::Object(map) => map.values().for_each(|i| texts_in(i, out)),
        _ => {}
    }
}

/// No string value of the masked form of `v` contains one of `v`'s secrets.
fn check_masked(v: &Value) {
    // A secret with the mask's character in it could be re-created by masking itself.
    let secrets: Vec<String> = secrets_in(v)
        .into_iter()
        .filter(|s| !s.contains('*'))
        .collect();
    let m = masked(v);
    let mut values = Vec::new();
    values_in(&m, &mut values);
    for s in &secrets {
        for text in &values {
            assert!(
                !text.contains(s.as_str()),
                "secret {s:?} survives masking in {text:?}"
            );
        }
    }
}

fn check_update(msg: &mut Map<String, Value>) {
    let original = msg.clone();
    match update::parse(msg, &LIMITS) {
        Ok(lbs) => {
            assert!(!lbs.is_empty() && lbs.len() <= LIMITS.max_load_balancers);
            let mut ports: Vec<u16> = lbs.iter().map(|l| l.port).collect();
            ports.sort_unstable();
            ports.dedup();
            assert_eq!(ports.len(), lbs.len(), "two load balancers on one port");
            for lb in &lbs {
                // `nodes` may be empty (the contract allows it).
                assert!(lb.nodes.len() <= LIMITS.max_nodes);
                if let Some(name) = &lb.name {
                    assert!(!name.chars().any(|c| c.is_whitespace() || c.is_control()));
                }
                for n in &lb.nodes {
                    let id = n.id.as_str();
                    assert!(!id.is_empty() && id.len() <= 64);
                    assert!(id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b)));
                    let addr = n.address.to_string();
                    if let Address::Dns(_) = n.address {
                        assert!(addr
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
                    }
                    assert!((1..=256).contains(&n.weight));
                    assert!(n.port >= 1);
                }
                if let Some(m) = &lb.monitor {
                    let p = m.path.as_str();
                    assert!(p.starts_with('/'));
                    assert!(!p.bytes().any(|b| b.is_ascii_whitespace()
                        || b.is_ascii_control()
                        || b"#\"'\\$".contains(&b)));
                    assert!(m.timeout <= m.delay, "timeout above delay");
                }
            }
            // What the validator wrote back into the request must validate to the same.
            let mut again = msg.clone();
            let lbs2 = update::parse(&mut again, &LIMITS).expect("an accepted UPDATE re-parses");
            assert_eq!(lbs, lbs2);
            update::mark_nodes(msg, update::NODE_OK);
        }
        Err(message) => {
            assert!(!message.is_empty());
            let mut refused = original;
            update::refuse(&mut refused, &message);
            assert!(!response::passed(&Value::Object(refused)));
        }
    }
}

fn check_archive(msg: &Map<String, Value>) {
    match archive::parse(msg) {
        Ok(t) => {
            assert!(!t.container.is_empty() && !t.container.contains('/'));
            let lower = t.endpoint.to_ascii_lowercase();
            assert!(lower.starts_with("http://") || lower.starts_with("https://"));
            assert!(!t.token.is_empty() && !t.token.chars().any(char::is_control));
            assert!(!t.lb_id.is_empty() && !t.lb_id.contains('/'));
        }
        Err(e) => {
            let Some(Value::String(token)) = msg.get(archive::TOKEN_FIELD) else {
                return;
            };
            // Only meaningful for a token-like value that appears nowhere else.
            if token.len() < 4 || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return;
            }
            let mut rest = msg.clone();
            rest.remove(archive::TOKEN_FIELD);
            let rest = Value::Object(rest);
            let mut texts = Vec::new();
            texts_in(&rest, &mut texts);
            if rest.to_string().contains(token.as_str())
                || texts.iter().any(|t| t.contains(token.as_str()))
            {
                return;
            }
            assert!(
                !e.contains(token.as_str()),
                "ARCHIVE error quotes the token: {e}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = masked_text(data);
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        check_masked(&v);
    }
    match request::parse(data, &LIMITS) {
        Err(rejected) => assert!(!response::passed(&rejected.answer)),
        Ok(req) => {
            let mut msg = req.body.clone();
            match req.action {
                Action::Update => check_update(&mut msg),
                Action::Archive => check_archive(&msg),
                _ => {}
            }
        }
    }
});
