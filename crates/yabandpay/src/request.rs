//! The request body `{"user","sign","method","time","data":{…}}`, parsed into the values the
//! sign is computed over, each kept as the exact text that was sent.

use crate::envelope::YabandError;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use tillgate_wire::{json_object, Params, ParamsError, Value};

/// The top-level fields signed together with `data`; `data` may not repeat them.
pub const SIGNED_TOP_LEVEL: [&str; 3] = ["user", "method", "time"];

/// The longest `user` and `method` accepted; longer ones cannot name anything.
const MAX_NAME: usize = 64;

/// The longest top-level value read at all (a sign is 64 hex digits).
const MAX_TOP_LEVEL: usize = 128;

/// A parsed request whose signature has not been checked yet.
#[derive(Debug, Clone)]
pub struct Request {
    pub user: String,
    pub sign: String,
    pub method: String,
    /// `time` as sent (seconds or milliseconds).
    pub time: String,
    pub data: Params,
    user_value: Value,
    method_value: Value,
    time_value: Value,
}

impl Request {
    /// What the sign covers: `user`, `method`, `time` and every `data` field.
    pub fn sign_entries(&self) -> Vec<(&str, &Value)> {
        let mut entries = vec![
            ("user", &self.user_value),
            ("method", &self.method_value),
            ("time", &self.time_value),
        ];
        entries.extend(self.data.iter());
        entries
    }
}

/// One JSON value as a sign value; objects and arrays are refused.
fn scalar(name: &str, raw: &RawValue) -> Result<Value, YabandError> {
    let text = raw.get();
    Ok(match text.as_bytes().first() {
        Some(b'"') => {
            Value::Text(serde_json::from_str(text).map_err(|e| {
                YabandError::malformed(format!("{name} is not a valid string: {e}"))
            })?)
        }
        Some(b't') => Value::Bool(true),
        Some(b'f') => Value::Bool(false),
        Some(b'n') => Value::Null,
        Some(b'{') | Some(b'[') => {
            return Err(YabandError::malformed(format!(
                "{name} must be a string or a number"
            )))
        }
        _ => Value::Number(text.to_owned()),
    })
}

/// A required top-level field: a string (or a number for `user` and `time`), not empty.
fn top_level(
    map: &BTreeMap<String, &RawValue>,
    name: &str,
    numbers: bool,
) -> Result<(String, Value), YabandError> {
    let raw = map.get(name).ok_or_else(|| YabandError::missing(name))?;
    let value = scalar(name, raw)?;
    let text = match &value {
        Value::Text(s) => s.clone(),
        Value::Number(s) if numbers => s.clone(),
        Value::Null => return Err(YabandError::missing(name)),
        _ => return Err(YabandError::malformed(format!("{name} must be a string"))),
    };
    if text.is_empty() {
        return Err(YabandError::missing(name));
    }
    if text.chars().count() > MAX_TOP_LEVEL || text.chars().any(char::is_control) {
        return Err(YabandError::malformed(format!(
            "{name} is too long or contains a control character"
        )));
    }
    Ok((text, value))
}

/// Parses a request body. Missing fields are −3001; anything else malformed is −3007.
pub fn parse(body: &[u8]) -> Result<Request, YabandError> {
    if body.trim_ascii().is_empty() {
        return Err(YabandError::malformed(
            "the request body is empty; send a JSON object with user, sign, method, time and data",
        ));
    }
    // The same strict reader as every dialect's: no repeated key, only UTF-8.
    let map = json_object(body).map_err(|e| match e {
        ParamsError::Duplicate(k) => {
            YabandError::malformed(format!("the request body gives {k} more than once"))
        }
        ParamsError::BadUtf8 => YabandError::malformed("the request body is not valid UTF-8"),
        other => YabandError::malformed(format!("the request body is not a JSON object ({other})")),
    })?;
    let (user, user_value) = top_level(&map, "user", true)?;
    let (sign, _) = top_level(&map, "sign", false)?;
    let (method, method_value) = top_level(&map, "method", false)?;
    let (time, time_value) = top_level(&map, "time", true)?;
    if user.chars().count() > MAX_NAME || method.chars().count() > MAX_NAME {
        return Err(YabandError::malformed(format!(
            "user and method are at most {MAX_NAME} characters"
        )));
    }
    let raw_data = map
        .get("data")
        .ok_or_else(|| YabandError::missing("data"))?;
    let data = match raw_data.get().as_bytes().first() {
        Some(b'{') => Params::parse(Some("application/json"), raw_data.get().as_bytes()).map_err(
            |e| match e {
                ParamsError::Nested(k) => YabandError::malformed(format!(
                    "data.{k} must be a string or a number, not an object or array"
                )),
                other => YabandError::malformed(format!("data: {other}")),
            },
        )?,
        Some(b'n') => return Err(YabandError::missing("data")),
        _ => return Err(YabandError::malformed("data must be a JSON object")),
    };
    for name in SIGNED_TOP_LEVEL.iter().chain(&["sign"]) {
        if data.get(name).is_some() {
            // Merged with the top level for the sign, a repeated key would be ambiguous.
            return Err(YabandError::malformed(format!(
                "data.{name} repeats a top-level field"
            )));
        }
    }
    Ok(Request {
        user,
        sign,
        method,
        time,
        data,
        user_value,
        method_value,
        time_value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Code;

    fn code(body: &str) -> Code {
        parse(body.as_bytes())
            .map(|_| Code::Success)
            .unwrap_or_else(|e| e.code)
    }

    #[test]
    fn the_fields_keep_the_text_that_was_sent() {
        let r = parse(
            br#"{"user":"016683","sign":"ab","method":"v3.QueryOrder","time":1546588959,
                "data":{"trade_id":"t-1","amount":0.10,"demo":"","x":null},"extra":[1]}"#,
        )
        .unwrap();
        assert_eq!(
            (r.user.as_str(), r.method.as_str(), r.time.as_str()),
            ("016683", "v3.QueryOrder", "1546588959")
        );
        let entries: Vec<(&str, String)> = r
            .sign_entries()
            .into_iter()
            .map(|(k, v)| (k, crate::sign::value_text(v).to_owned()))
            .collect();
        assert!(entries.contains(&("amount", "0.10".to_owned())));
        assert!(entries.contains(&("time", "1546588959".to_owned())));
        assert_eq!(entries.len(), 7);
    }

    #[test]
    fn missing_and_malformed_fields_have_their_codes() {
        let ok = r#"{"user":"u","sign":"s","method":"m","time":"1","data":{}}"#;
        assert_eq!(code(ok), Code::Success);
        for missing in [
            r#"{"sign":"s","method":"m","time":1,"data":{}}"#,
            r#"{"user":"","sign":"s","method":"m","time":1,"data":{}}"#,
            r#"{"user":"u","method":"m","time":1,"data":{}}"#,
            r#"{"user":"u","sign":"s","time":1,"data":{}}"#,
            r#"{"user":"u","sign":"s","method":"m","data":{}}"#,
            r#"{"user":"u","sign":"s","method":"m","time":null,"data":{}}"#,
            r#"{"user":"u","sign":"s","method":"m","time":1}"#,
            r#"{"user":"u","sign":"s","method":"m","time":1,"data":null}"#,
        ] {
            assert_eq!(code(missing), Code::MissingField, "{missing}");
        }
        for bad in [
            "",
            "   ",
            "{",
            "[1]",
            "\"x\"",
            "\u{0}",
            r#"{"user":{"a":1},"sign":"s","method":"m","time":1,"data":{}}"#,
            r#"{"user":"u","sign":1,"method":"m","time":1,"data":{}}"#,
            r#"{"user":"u","sign":"s","method":true,"time":1,"data":{}}"#,
            r#"{"user":"u","sign":"s","method":"m","time":1,"data":[]}"#,
            r#"{"user":"u","sign":"s","method":"m","time":1,"data":"x"}"#,
            r#"{"user":"u","sign":"s","method":"m","time":1,"data":{"a":{"b":1}}}"#,
            r#"{"user":"u","sign":"s","method":"m","time":1,"data":{"user":"u"}}"#,
            r#"{"user":"u","sign":"s","method":"m","time":1,"data":{"sign":"x"}}"#,
            r#"{"user":"u\n","sign":"s","method":"m","time":1,"data":{}}"#,
            r#"{"user":"u","sign":"s","method":"m","time":1,"data":{},"user":"v"}"#,
            r#"{"user":"u","sign":"s","method":"m","time":1,"data":{},"data":{"a":"1"}}"#,
            r#"{"user":"u","sign":"s","method":"m","time":1,"data":{"a":"1","a":"2"}}"#,
            r#"{"user":"u","sign":"s","method":"m","time":1,"data":{"a":"\u0000"}}"#,
            r#"{"user":"u\u0000","sign":"s","method":"m","time":1,"data":{}}"#,
        ] {
            assert_eq!(code(bad), Code::Malformed, "{bad:?}");
        }
        let long = format!(
            r#"{{"user":"{}","sign":"s","method":"m","time":1,"data":{{}}}}"#,
            "u".repeat(65)
        );
        assert_eq!(code(&long), Code::Malformed);
        let not_utf8 =
            b"{\"user\":\"u\xff\",\"sign\":\"s\",\"method\":\"m\",\"time\":1,\"data\":{}}";
        assert_eq!(parse(not_utf8).unwrap_err().code, Code::Malformed);
    }
}
