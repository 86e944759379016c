//! Answer fields common to every action: `hpcs_response` PASS/FAIL, `hpcs_error`, and
//! the reference worker's "badRequest" validation shape.

use serde_json::{json, Map, Value};

pub const ACTION_FIELD: &str = "hpcs_action";
pub const RESPONSE_FIELD: &str = "hpcs_response";
pub const ERROR_FIELD: &str = "hpcs_error";
pub const PASS: &str = "PASS";
pub const FAIL: &str = "FAIL";
pub const BAD_REQUEST_FIELD: &str = "badRequest";
/// The API server stores `hpcs_error` (and a `badRequest` message) in an `errmsg
/// VARCHAR(128)` column; under strict SQL mode a longer text makes the whole status update
/// fail, leaving the load balancer pending. Texts are cut to this many characters.
pub const MAX_ERROR_CHARS: usize = 128;

/// Marks the echoed request as a success.
pub fn pass(msg: &mut Map<String, Value>) {
    msg.insert(RESPONSE_FIELD.to_string(), Value::from(PASS));
}

/// Marks the echoed request as a failure with a reason a person can act on.
pub fn fail(msg: &mut Map<String, Value>, error: impl Into<String>) {
    msg.insert(RESPONSE_FIELD.to_string(), Value::from(FAIL));
    msg.insert(ERROR_FIELD.to_string(), Value::from(error.into()));
}

/// A validation failure in the reference's shape, merged into the echoed request.
pub fn bad_request(msg: &mut Map<String, Value>, message: &str) {
    msg.insert(
        BAD_REQUEST_FIELD.to_string(),
        json!({
            "code": "400",
            "message": "Validation fault",
            "details": "The object is not valid",
            "validationErrors": {"message": message},
        }),
    );
    fail(msg, message);
}

/// `text` cut to [`MAX_ERROR_CHARS`] characters, ending in "..." when something was cut.
/// Error texts put the most useful part first, so the cut keeps it.
pub fn fit(text: &str) -> String {
    if text.chars().count() <= MAX_ERROR_CHARS {
        return text.to_string();
    }
    let mut out: String = text.chars().take(MAX_ERROR_CHARS - 3).collect();
    out.push_str("...");
    out
}

/// Cuts the answer's `hpcs_error` and `badRequest` message to what the API server can
/// store, returning the full `hpcs_error` if it had to be cut (for the log).
pub fn fit_errors(msg: &mut Map<String, Value>) -> Option<String> {
    if let Some(Value::Object(bad)) = msg.get_mut(BAD_REQUEST_FIELD) {
        if let Some(Value::Object(errors)) = bad.get_mut("validationErrors") {
            if let Some(Value::String(m)) = errors.get_mut("message") {
                *m = fit(m);
            }
        }
    }
    match msg.get_mut(ERROR_FIELD) {
        Some(Value::String(e)) if e.chars().count() > MAX_ERROR_CHARS => {
            let full = std::mem::take(e);
            *e = fit(&full);
            Some(full)
        }
        _ => None,
    }
}

/// The answer to a body that is not a JSON object: a new object.
pub fn failure_object(error: impl Into<String>) -> Value {
    let mut msg = Map::new();
    fail(&mut msg, error);
    Value::Object(msg)
}

/// Whether an answer says PASS.
pub fn passed(answer: &Value) -> bool {
    answer.get(RESPONSE_FIELD).and_then(Value::as_str) == Some(PASS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_fit_the_api_servers_column() {
        let short = "Missing 'nodes' element";
        assert_eq!(fit(short), short);
        let exact = "x".repeat(MAX_ERROR_CHARS);
        assert_eq!(fit(&exact), exact);
        // Characters, not bytes: the column is VARCHAR(128) of a UTF-8 table.
        let long = format!("HAProxy rejected the configuration: {}", "é".repeat(200));
        let cut = fit(&long);
        assert_eq!(cut.chars().count(), MAX_ERROR_CHARS);
        assert!(cut.starts_with("HAProxy rejected the configuration: é"));
        assert!(cut.ends_with("..."));

        let mut msg = Map::new();
        bad_request(&mut msg, &long);
        let full = fit_errors(&mut msg);
        assert_eq!(full.as_deref(), Some(long.as_str()));
        assert_eq!(msg[ERROR_FIELD].as_str().unwrap(), cut);
        assert_eq!(
            msg[BAD_REQUEST_FIELD]["validationErrors"]["message"]
                .as_str()
                .unwrap(),
            cut
        );
        let mut ok = Map::new();
        fail(&mut ok, short);
        assert_eq!(fit_errors(&mut ok), None);
        assert_eq!(ok[ERROR_FIELD], short);
    }
}
