//! ARCHIVE: the object-store fields, checked in the reference worker's order (the first
//! missing one is reported), turned into a Swift target for the driver.

use serde_json::{Map, Value};

use super::request::kind_of;
use crate::drivers::{check_plain_text, quoted, ArchiveTarget, InvalidValue, Protocol};

pub const STORE_TYPE_FIELD: &str = "hpcs_object_store_type";
pub const BASEPATH_FIELD: &str = "hpcs_object_store_basepath";
pub const ENDPOINT_FIELD: &str = "hpcs_object_store_endpoint";
pub const TOKEN_FIELD: &str = "hpcs_object_store_token";

/// Why an ARCHIVE request was refused; the text is the `hpcs_error` the caller sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error("Missing '{0}' element")]
    Missing(&'static str),
    #[error("'{0}' is not a valid store type")]
    StoreType(String),
    #[error("'{field}' must be {expected}, not {found}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("'loadBalancers' must hold one load balancer object")]
    NoLoadBalancer,
    #[error("Missing required 'protocol' value.")]
    MissingProtocol,
    #[error("Unsupported protocol: {0}")]
    UnsupportedProtocol(String),
    #[error("Missing load balancer 'id'")]
    MissingId,
    #[error("Invalid load balancer id: {0}")]
    InvalidId(String),
    #[error("Invalid '{BASEPATH_FIELD}' value {0}: a Swift container name")]
    Container(String),
    #[error("Invalid '{ENDPOINT_FIELD}' value {0}: an http(s) URL")]
    Endpoint(String),
    /// The token itself is never quoted back.
    #[error("Invalid '{TOKEN_FIELD}' value")]
    Token,
    #[error(transparent)]
    Value(#[from] InvalidValue),
}

/// Parses an ARCHIVE request.
pub fn parse(msg: &Map<String, Value>) -> Result<ArchiveTarget, ArchiveError> {
    let store_type = match msg.get(STORE_TYPE_FIELD) {
        None => return Err(ArchiveError::Missing(STORE_TYPE_FIELD)),
        Some(Value::String(s)) => s.to_ascii_lowercase(),
        Some(other) => return Err(ArchiveError::StoreType(other.to_string())),
    };
    if store_type != "swift" {
        return Err(ArchiveError::StoreType(store_type));
    }
    let text = |field: &'static str| -> Result<String, ArchiveError> {
        match msg.get(field) {
            None => Err(ArchiveError::Missing(field)),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(ArchiveError::WrongType {
                field,
                expected: "a string",
                found: kind_of(other),
            }),
        }
    };
    let container = text(BASEPATH_FIELD)?;
    let endpoint = text(ENDPOINT_FIELD)?;
    let token = text(TOKEN_FIELD)?;
    let first = match msg.get("loadBalancers") {
        None => return Err(ArchiveError::Missing("loadBalancers")),
        Some(Value::Array(list)) => match list.first() {
            Some(Value::Object(lb)) => lb,
            _ => return Err(ArchiveError::NoLoadBalancer),
        },
        Some(other) => {
            return Err(ArchiveError::WrongType {
                field: "loadBalancers",
                expected: "a list",
                found: kind_of(other),
            })
        }
    };
    let protocol = match first.get("protocol") {
        None => return Err(ArchiveError::MissingProtocol),
        Some(Value::String(p)) => {
            Protocol::parse(p).ok_or_else(|| ArchiveError::UnsupportedProtocol(quoted(p)))?
        }
        Some(other) => {
            return Err(ArchiveError::UnsupportedProtocol(
                kind_of(other).to_string(),
            ))
        }
    };
    let lb_id = match first.get("id") {
        None | Some(Value::Null) => return Err(ArchiveError::MissingId),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => return Err(ArchiveError::InvalidId(shown(other))),
    };
    if lb_id.contains('/') {
        return Err(ArchiveError::InvalidId(quoted(&lb_id)));
    }
    check_plain_text("load balancer id", &lb_id)?;
    if container.is_empty() || container.contains('/') {
        return Err(ArchiveError::Container(quoted(&container)));
    }
    check_plain_text(BASEPATH_FIELD, &container)?;
    let lower = endpoint.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://"))
        || endpoint.chars().any(char::is_whitespace)
    {
        return Err(ArchiveError::Endpoint(quoted(&endpoint)));
    }
    if token.is_empty() || token.chars().any(|c| c.is_control()) {
        return Err(ArchiveError::Token);
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
                parse(v.as_object().unwrap()).unwrap_err().to_string(),
                format!("Missing '{field}' element")
            );
        }
    }

    #[test]
    fn invalid_store_type() {
        let mut v = full();
        v["hpcs_object_store_type"] = json!("S3");
        assert_eq!(
            parse(v.as_object().unwrap()).unwrap_err().to_string(),
            "'s3' is not a valid store type"
        );
    }
}
