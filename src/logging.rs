//! Logging: builds the slog root logger (human `term` or `json` lines, to stderr or a
//! file, through slog-async) and masks secrets in every logged copy of a job.

use std::fs::OpenOptions;
use std::io::Write;

use serde_json::Value;
use slog::{o, Drain, Logger};

use crate::config::{LogFormat, LogSettings};

/// Job fields whose value never reaches a log.
pub const SECRET_FIELDS: &[&str] = &["hpcs_object_store_token"];
/// What a secret looks like in a log.
pub const MASK: &str = "*****";

/// Builds the root logger. The returned guard flushes the async drain when dropped.
pub fn build(settings: &LogSettings) -> std::io::Result<(Logger, slog_async::AsyncGuard)> {
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
    let drain: Box<dyn Drain<Ok = (), Err = slog::Never> + Send> = match settings.format {
        LogFormat::Term => {
            let decorator = slog_term::PlainSyncDecorator::new(sink);
            Box::new(slog_term::FullFormat::new(decorator).build().fuse())
        }
        LogFormat::Json => Box::new(slog_json::Json::new(sink).add_default_keys().build().fuse()),
    };
    let (drain, guard) = slog_async::Async::new(drain)
        .chan_size(4096)
        .build_with_guard();
    // The level filter sits in front of the async channel: a record below the level is
    // dropped in the caller's thread instead of being serialized, sent and woken for.
    let drain = drain.filter_level(settings.level).fuse();
    Ok((Logger::root(drain, o!()), guard))
}

/// A logger that drops everything (tests, tools).
pub fn discard() -> Logger {
    Logger::root(slog::Discard, o!())
}

/// A copy of `value` safe to log: every secret field, at any depth, replaced by `*****`.
pub fn masked(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    if SECRET_FIELDS.contains(&k.as_str()) {
                        (k.clone(), Value::String(MASK.to_string()))
                    } else {
                        (k.clone(), masked(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(masked).collect()),
        other => other.clone(),
    }
}

/// Masks a raw job body that may not even be JSON: secrets are cut out textually, so a
/// malformed body cannot leak a token either.
pub fn masked_text(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => masked(&v).to_string(),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            if SECRET_FIELDS.iter().any(|f| text.contains(f)) {
                format!(
                    "<{} bytes, not JSON, holds a secret field: not logged>",
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
    }
}
