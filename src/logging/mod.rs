//! Logging: builds the slog root logger (human `term`, `json` or `journal` lines, to
//! stderr or a file, through slog-async) with a level that SIGHUP can change, and masks
//! secrets in every logged copy of a job.

mod journal;
mod level;

pub use journal::stderr_is_journal;
pub use level::LevelHandle;

use std::fs::OpenOptions;
use std::io::Write;

use serde_json::Value;
use slog::{o, Drain, Logger};

use crate::config::{LogFormat, LogSettings};

/// Job fields whose value never reaches a log.
pub const SECRET_FIELDS: &[&str] = &["hpcs_object_store_token"];
/// What a secret looks like in a log.
pub const MASK: &str = "*****";

/// The root logger and what keeps it going.
pub struct Logging {
    pub log: Logger,
    /// The level in force; `set` changes it for every logger derived from `log`.
    pub level: LevelHandle,
    /// Flushes the async drain when dropped.
    pub guard: slog_async::AsyncGuard,
}

/// The format actually written: `term` on standard error becomes `journal` when systemd
/// connected standard error to its journal.
pub fn effective_format(settings: &LogSettings) -> LogFormat {
    match settings.format {
        LogFormat::Term if settings.file.is_none() && stderr_is_journal() => LogFormat::Journal,
        other => other,
    }
}

/// Builds the root logger.
pub fn build(settings: &LogSettings) -> std::io::Result<Logging> {
    let sink: Box<dyn Write + Send> = match &settings.file {
        Some(path) => {
            let mut opts = OpenOptions::new();
            opts.create(true).append(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o640);
            }
            Box::new(opts.open(path)?)
        }
        None => Box::new(std::io::stderr()),
    };
    let drain: Box<dyn Drain<Ok = (), Err = slog::Never> + Send> = match effective_format(settings)
    {
        LogFormat::Term => {
            let decorator = slog_term::PlainSyncDecorator::new(sink);
            Box::new(slog_term::FullFormat::new(decorator).build().fuse())
        }
        LogFormat::Json => Box::new(slog_json::Json::new(sink).add_default_keys().build().fuse()),
        LogFormat::Journal => Box::new(journal::JournalDrain::new(sink).ignore_res()),
    };
    let (drain, guard) = slog_async::Async::new(drain)
        .chan_size(4096)
        .build_with_guard();
    // The level filter sits in front of the async channel: a record below the level is
    // dropped in the caller's thread instead of being serialized, sent and woken for.
    let level = LevelHandle::new(settings.level);
    let drain = level::LevelFilter {
        inner: drain.fuse(),
        level: level.clone(),
    }
    .fuse();
    Ok(Logging {
        log: Logger::root(drain, o!()),
        level,
        guard,
    })
}

/// A logger that drops everything (unit tests).
#[cfg(test)]
pub(crate) fn discard() -> Logger {
    Logger::root(slog::Discard, o!())
}

/// Whether `key` names a secret field; case is ignored so that no spelling slips by.
fn is_secret_key(key: &str) -> bool {
    SECRET_FIELDS.iter().any(|f| key.eq_ignore_ascii_case(f))
}

/// How deep `secrets_in` looks into strings that hold JSON themselves.
const MAX_NESTED_JSON: usize = 3;

/// The values of the secret fields anywhere in `value`, including inside strings that
/// hold JSON themselves (a request encoded twice). Validation messages may quote any part
/// of a request, so these values are cut out of every logged string, not just the fields.
pub fn secrets_in(value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    collect_secrets(value, false, MAX_NESTED_JSON, &mut found);
    found.retain(|s| !s.is_empty());
    found.sort();
    found.dedup();
    found
}

fn collect_secrets(value: &Value, secret: bool, nested: usize, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                collect_secrets(v, secret || is_secret_key(k), nested, found);
            }
        }
        Value::Array(items) => {
            for v in items {
                collect_secrets(v, secret, nested, found);
            }
        }
        Value::String(s) if secret => found.push(s.clone()),
        Value::String(s) if nested > 0 => {
            let t = s.trim_start();
            if t.starts_with('{') || t.starts_with('[') || t.starts_with('"') {
                if let Ok(inner) = serde_json::from_str::<Value>(s) {
                    collect_secrets(&inner, false, nested - 1, found);
                }
            }
        }
        Value::Number(n) if secret => found.push(n.to_string()),
        _ => {}
    }
}

/// `text` with every occurrence of each secret, raw or JSON-escaped, replaced by `*****`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for secret in secrets {
        out = out.replace(secret.as_str(), MASK);
        let escaped = Value::String(secret.clone()).to_string();
        let escaped = &escaped[1..escaped.len() - 1];
        if escaped != secret {
            out = out.replace(escaped, MASK);
        }
    }
    out
}

/// A copy of `value` safe to log: every secret field, at any depth, replaced by `*****`,
/// and the secrets' values cut out of every other string (error texts quoting them,
/// requests encoded twice).
pub fn masked(value: &Value) -> Value {
    let secrets = secrets_in(value);
    mask_with(value, &secrets)
}

fn mask_with(value: &Value, secrets: &[String]) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    if is_secret_key(k) {
                        (k.clone(), Value::String(MASK.to_string()))
                    } else {
                        (k.clone(), mask_with(v, secrets))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| mask_with(v, secrets)).collect()),
        Value::String(s) if !secrets.is_empty() => Value::String(redact(s, secrets)),
        other => other.clone(),
    }
}

/// Largest job body copied into a log line.
pub const MAX_LOGGED_BODY: usize = 16 * 1024;

/// Masks a raw job body that may not even be JSON: secrets are cut out textually, so a
/// malformed body cannot leak a token either. A body that is not JSON is not logged when
/// it names a secret field in any case, or has a `\u` escape (which can spell one).
pub fn masked_text(body: &[u8]) -> String {
    // A refused oversize body would otherwise make one enormous log line.
    if body.len() > MAX_LOGGED_BODY {
        return format!("<{} bytes: too large to log>", body.len());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => masked(&v).to_string(),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let lower = text.to_ascii_lowercase();
            if SECRET_FIELDS.iter().any(|f| lower.contains(f)) || lower.contains("\\u") {
                format!(
                    "<{} bytes, not JSON, may hold a secret field: not logged>",
                    body.len()
                )
            } else {
                text.chars().take(512).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_is_masked_at_any_depth() {
        let v = json!({"hpcs_action": "ARCHIVE", "hpcs_object_store_token": "s3cr3t",
                       "nested": [{"hpcs_object_store_token": "s3cr3t"}]});
        let text = masked(&v).to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert_eq!(text.matches(MASK).count(), 2);
    }

    #[test]
    fn malformed_body_with_a_token_is_not_logged() {
        let body = br#"{"hpcs_object_store_token": "s3cr3t", "#;
        assert!(!masked_text(body).contains("s3cr3t"));
        // The key spelled with an escape, or in capitals, in a body that does not parse.
        let body = br#"{"hpcs_object_store_tok\u0065n": "s3cr3t", "#;
        assert!(!masked_text(body).contains("s3cr3t"));
        let body = br#"{"HPCS_OBJECT_STORE_TOKEN": "s3cr3t", "#;
        assert!(!masked_text(body).contains("s3cr3t"));
        // Malformed bodies without secrets are still shown, for debugging.
        assert_eq!(masked_text(b"{not json"), "{not json");
    }

    #[test]
    fn token_quoted_elsewhere_is_cut_out() {
        // A validation message quoting the part of the request that held the token.
        let v = json!({"hpcs_object_store_token": "s3cr3t",
                       "hpcs_error": "Invalid id: '{\"hpcs_object_store_token\":\"s3cr3t\"}'",
                       "HPCS_Object_Store_Token": "other-secret"});
        let text = masked(&v).to_string();
        assert!(
            !text.contains("s3cr3t") && !text.contains("other-secret"),
            "{text}"
        );
        assert!(
            text.contains("Invalid id:"),
            "the rest of the message stays: {text}"
        );
        // A request encoded twice: a JSON string holding the JSON request.
        let inner = json!({"hpcs_action": "ARCHIVE", "hpcs_object_store_token": "s3cr3t"});
        let text = masked_text(Value::String(inner.to_string()).to_string().as_bytes());
        assert!(
            !text.contains("s3cr3t") && text.contains("ARCHIVE"),
            "{text}"
        );
        // Escaped forms of a token with quotes or backslashes in it.
        let v = json!({"hpcs_object_store_token": "a\"b\\c", "echo": "x a\"b\\c y"});
        let text = masked(&v).to_string();
        assert!(!text.contains("a\\\"b"), "{text}");
    }

    #[test]
    fn redact_ignores_nothing_and_handles_json_escapes() {
        assert_eq!(redact("a s3 b", &["s3".to_string()]), "a ***** b");
        assert_eq!(redact("plain", &[]), "plain");
        let secrets = secrets_in(&json!({"x": [{"hpcs_object_store_token": ""}]}));
        assert!(secrets.is_empty(), "an empty token would mask everything");
    }
}
