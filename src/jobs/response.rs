//! Answer fields common to every action: `hpcs_response` PASS/FAIL, `hpcs_error`, and
//! the reference worker's "badRequest" validation shape.

use serde_json::{json, Map, Value};

pub const ACTION_FIELD: &str = "hpcs_action";
pub const RESPONSE_FIELD: &str = "hpcs_response";
pub const ERROR_FIELD: &str = "hpcs_error";
pub const PASS: &str = "PASS";
pub const FAIL: &str = "FAIL";

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
        "badRequest".to_string(),
        json!({
            "code": "400",
            "message": "Validation fault",
            "details": "The object is not valid",
            "validationErrors": {"message": message},
        }),
    );
    fail(msg, message);
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
