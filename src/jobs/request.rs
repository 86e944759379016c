//! From a Gearman job body to an action and its JSON object, enforcing the job limits.
//! A body that cannot be a job gets a ready FAIL answer instead.

use serde_json::{Map, Value};

use super::response::{self, ACTION_FIELD};
use super::Action;
use crate::config::Limits;

/// A job body that parsed: the action and the whole request object (kept for the echo).
#[derive(Debug, Clone)]
pub struct Request {
    pub action: Action,
    pub body: Map<String, Value>,
}

/// A job body refused before dispatch, with its answer.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub action: Option<Action>,
    pub answer: Value,
}

/// Parses and checks a job body.
pub fn parse(body: &[u8], limits: &Limits) -> Result<Request, Rejected> {
    let reject = |answer: Value| Rejected {
        action: None,
        answer,
    };
    if body.len() > limits.max_job_bytes {
        return Err(reject(response::failure_object(format!(
            "Job body of {} bytes exceeds the limit of {} bytes (limits.max_job_bytes)",
            body.len(),
            limits.max_job_bytes
        ))));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        reject(response::failure_object(format!(
            "Job body is not valid JSON: {e}"
        )))
    })?;
    let depth = depth_of(&value);
    if depth > limits.max_json_depth {
        return Err(reject(response::failure_object(format!(
            "Job body nests {depth} levels deep; the limit is {} (limits.max_json_depth)",
            limits.max_json_depth
        ))));
    }
    let Value::Object(mut msg) = value else {
        return Err(reject(response::failure_object(format!(
            "Job body must be a JSON object, not {}",
            kind_of(&value)
        ))));
    };
    let action = match msg.get(ACTION_FIELD) {
        None => {
            response::fail(&mut msg, "Missing 'hpcs_action' value");
            return Err(reject(Value::Object(msg)));
        }
        Some(Value::String(s)) => match Action::parse(s) {
            Some(action) => action,
            None => {
                let error = format!("Invalid 'hpcs_action' value: {}", crate::drivers::quoted(s));
                response::fail(&mut msg, error);
                return Err(reject(Value::Object(msg)));
            }
        },
        Some(other) => {
            let error = format!(
                "Invalid 'hpcs_action' value: expected a string, got {}",
                kind_of(other)
            );
            response::fail(&mut msg, error);
            return Err(reject(Value::Object(msg)));
        }
    };
    Ok(Request { action, body: msg })
}

/// Nesting depth: a scalar is 0, `{}` and `[]` are 1.
fn depth_of(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Object(m) => {
                deepest = deepest.max(d + 1);
                stack.extend(m.values().map(|c| (c, d + 1)));
            }
            Value::Array(a) => {
                deepest = deepest.max(d + 1);
                stack.extend(a.iter().map(|c| (c, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// A JSON value's kind, for error messages.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::response::{passed, ERROR_FIELD};

    fn error_of(r: Rejected) -> String {
        assert!(!passed(&r.answer));
        r.answer[ERROR_FIELD].as_str().unwrap().to_string()
    }

    #[test]
    fn actions_are_case_insensitive() {
        let r = parse(
            br#"{"hpcs_action": "discover", "x": 1}"#,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(r.action, Action::Discover);
        assert_eq!(r.body["x"], 1);
    }

    #[test]
    fn refusals_say_why() {
        let l = Limits::default();
        assert!(
            error_of(parse(b"not json", &l).unwrap_err()).starts_with("Job body is not valid JSON")
        );
        assert!(error_of(parse(b"[1,2]", &l).unwrap_err()).contains("not a list"));
        assert!(error_of(parse(b"\"s\"", &l).unwrap_err()).contains("not a string"));
        let e = parse(br#"{"a": 1}"#, &l).unwrap_err();
        assert_eq!(e.answer["a"], 1, "the request is echoed");
        assert_eq!(error_of(e), "Missing 'hpcs_action' value");
        assert_eq!(
            error_of(parse(br#"{"hpcs_action": "FLY"}"#, &l).unwrap_err()),
            "Invalid 'hpcs_action' value: 'FLY'"
        );
        assert!(error_of(parse(br#"{"hpcs_action": 3}"#, &l).unwrap_err())
            .contains("expected a string"));
    }

    #[test]
    fn limits_apply() {
        let l = Limits {
            max_job_bytes: 10,
            ..Limits::default()
        };
        assert!(
            error_of(parse(br#"{"hpcs_action": "DISCOVER"}"#, &l).unwrap_err())
                .contains("limits.max_job_bytes")
        );
        let l = Limits {
            max_json_depth: 3,
            ..Limits::default()
        };
        assert!(parse(br#"{"hpcs_action": "DISCOVER", "a": {"b": [1]}}"#, &l).is_ok());
        let e = parse(br#"{"hpcs_action": "DISCOVER", "a": {"b": [[1]]}}"#, &l).unwrap_err();
        assert!(error_of(e).contains("limits.max_json_depth"));
    }
}
