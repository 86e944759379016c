//! ARCHIVE: the object-store fields, checked in the reference worker's order (the first
//! missing one is reported), turned into a Swift target for the driver.

use serde_json::{Map, Value};

use super::request::kind_of;
use crate::drivers::{check_plain_text, quoted, ArchiveTarget, Protocol};

pub const STORE_TYPE_FIELD: &str = "hpcs_object_store_type";
pub const BASEPATH_FIELD: &str = "hpcs_object_store_basepath";
pub const ENDPOINT_FIELD: &str = "hpcs_object_store_endpoint";
pub const TOKEN_FIELD: &str = "hpcs_object_store_token";

/// Parses an ARCHIVE request. The error is the validation message.
pub fn parse(msg: &Map<String, Value>) -> Result<ArchiveTarget, String> {
    let store_type = match msg.get(STORE_TYPE_FIELD) {
        None => return Err(format!("Missing '{STORE_TYPE_FIELD}' element")),
        Some(Value::String(s)) => s.to_ascii_lowercase(),
        Some(other) => return Err(format!("'{}' is not a valid store type", other)),
    };
    if store_type != "swift" {
        return Err(format!("'{store_type}' is not a valid store type"));
    }
    let text = |field: &str| -> Result<String, String> {
        match msg.get(field) {
            None => Err(format!("Missing '{field}' element")),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!(
                "'{field}' must be a string, not {}",
                kind_of(other)
            )),
        }
    };
    let container = text(BASEPATH_FIELD)?;
    let endpoint = text(ENDPOINT_FIELD)?;
    let token = text(TOKEN_FIELD)?;
    let first = match msg.get("loadBalancers") {
        None => return Err("Missing 'loadBalancers' element".to_string()),
        Some(Value::Array(list)) => match list.first() {
            Some(Value::Object(lb)) => lb,
            _ => return Err("'loadBalancers' must hold one load balancer object".to_string()),
        },
        Some(other) => {
            return Err(format!(
                "'loadBalancers' must be a list, not {}",
                kind_of(other)
            ))
        }
    };
    let protocol = match first.get("protocol") {
        None => return Err("Missing required 'protocol' value.".to_string()),
        Some(Value::String(p)) => {
            Protocol::parse(p).ok_or_else(|| format!("Unsupported protocol: {}", quoted(p)))?
        }
        Some(other) => return Err(format!("Unsupported protocol: {}", kind_of(other))),
    };
    let lb_id = match first.get("id") {
        None | Some(Value::Null) => return Err("Missing load balancer 'id'".to_string()),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => return Err(format!("Invalid load balancer id: {}", shown(other))),
    };
    if lb_id.contains('/') {
        return Err(format!("Invalid load balancer id: {}", quoted(&lb_id)));
    }
    check_plain_text("load balancer id", &lb_id).map_err(|e| e.0)?;
    if container.is_empty() || container.contains('/') {
        return Err(format!(
            "Invalid '{BASEPATH_FIELD}' value {}: a Swift container name",
            quoted(&container)
        ));
    }
    check_plain_text(BASEPATH_FIELD, &container).map_err(|e| e.0)?;
    let lower = endpoint.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://"))
        || endpoint.chars().any(char::is_whitespace)
    {
        return Err(format!(
            "Invalid '{ENDPOINT_FIELD}' value {}: an http(s) URL",
            quoted(&endpoint)
        ));
    }
    if token.is_empty() || token.chars().any(|c| c.is_control()) {
        // Never quote the token itself.
        return Err(format!("Invalid '{TOKEN_FIELD}' value"));
    }
    Ok(ArchiveTarget {
        container,
        endpoint,
        token,
        protocol,
        lb_id,
    })
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => quoted(s),
        other => quoted(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full() -> Value {
        json!({"hpcs_action": "ARCHIVE", "hpcs_object_store_type": "Swift",
               "hpcs_object_store_basepath": "lbaaslogs",
               "hpcs_object_store_endpoint": "http://127.0.0.1:8080/v1/AUTH_x",
               "hpcs_object_store_token": "tok",
               "loadBalancers": [{"protocol": "HTTP", "id": 15}]})
    }

    #[test]
    fn full_request_parses() {
        let t = parse(full().as_object().unwrap()).unwrap();
        assert_eq!(
            (t.container.as_str(), t.lb_id.as_str(), t.protocol),
            ("lbaaslogs", "15", Protocol::Http)
        );
    }

    #[test]
    fn first_missing_field_is_reported_in_order() {
        let order = [
            STORE_TYPE_FIELD,
            BASEPATH_FIELD,
            ENDPOINT_FIELD,
            TOKEN_FIELD,
            "loadBalancers",
        ];
        for (i, field) in order.iter().enumerate() {
            let mut v = full();
            // Remove this field and every later one: the first missing must be named.
            for f in &order[i..] {
                v.as_object_mut().unwrap().remove(*f);
            }
            assert_eq!(
                parse(v.as_object().unwrap()).unwrap_err(),
                format!("Missing '{field}' element")
            );
        }
    }

    #[test]
    fn invalid_store_type() {
        let mut v = full();
        v["hpcs_object_store_type"] = json!("S3");
        assert_eq!(
            parse(v.as_object().unwrap()).unwrap_err(),
            "'s3' is not a valid store type"
        );
    }
}
