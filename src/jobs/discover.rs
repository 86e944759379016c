//! DISCOVER: the worker's version (`<major>.<minor>`) and full build string.

use serde_json::{Map, Value};

use super::response;

/// `<major>.<minor>` of this build.
pub fn version() -> String {
    let mut parts = env!("CARGO_PKG_VERSION").split('.');
    format!(
        "{}.{}",
        parts.next().unwrap_or("0"),
        parts.next().unwrap_or("0")
    )
}

/// The full build string: crate version and the commit it was built from.
pub fn release() -> String {
    format!(
        "libra-worker {} ({})",
        env!("CARGO_PKG_VERSION"),
        env!("LIBRA_WORKER_BUILD")
    )
}

/// Answers a DISCOVER.
pub fn answer(msg: &mut Map<String, Value>) {
    msg.insert("version".to_string(), Value::from(version()));
    msg.insert("release".to_string(), Value::from(release()));
    response::pass(msg);
}
