//! Request parameters as received, JSON or form-urlencoded, kept as the text that was sent so
//! that the signature is computed over exactly the bytes the merchant signed.

use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// One received parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A string (JSON string or form value), decoded.
    Text(String),
    /// A JSON number, as its literal text ("10.0" stays "10.0").
    Number(String),
    Bool(bool),
    Null,
}

impl Value {
    pub fn is_empty_text(&self) -> bool {
        matches!(self, Value::Text(s) if s.is_empty())
    }
}

/// Why a body is not a set of parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("request body is empty")]
    Empty,
    #[error("request body is not valid JSON: {0}")]
    BadJson(String),
    #[error("request body must be a JSON object")]
    NotAnObject,
    #[error("request body is not valid form-urlencoded data")]
    BadForm,
    #[error("parameter {0} must be a string or a number, not an object or array")]
    Nested(String),
    #[error("parameter {0} is given more than once")]
    Duplicate(String),
}

/// Parameters sorted by key (byte-wise, as every SDK sorts), each key once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, Value)>,
}

impl Params {
    pub fn from_pairs(mut pairs: Vec<(String, Value)>) -> Result<Params, ParamsError> {
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(ParamsError::Duplicate(w[0].0.clone()));
        }
        Ok(Params { pairs })
    }

    /// Parses a body as JSON when its content type says so or when it starts with `{` (curl's
    /// `-d` labels a JSON body as a form, as seed 000's own sample does); as a form otherwise.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Params, ParamsError> {
        let trimmed = body.trim_ascii_start();
        if trimmed.is_empty() {
            return Err(ParamsError::Empty);
        }
        let ct = content_type.unwrap_or("").to_ascii_lowercase();
        let json = ct.contains("json") || trimmed.starts_with(b"{");
        if json {
            Params::parse_json(body)
        } else {
            Params::parse_form(body)
        }
    }

    fn parse_json(body: &[u8]) -> Result<Params, ParamsError> {
        let value: &RawValue =
            serde_json::from_slice(body).map_err(|e| ParamsError::BadJson(e.to_string()))?;
        if !value.get().trim_start().starts_with('{') {
            return Err(ParamsError::NotAnObject);
        }
        // serde_json keeps the last of duplicate keys; a BTreeMap of raw values is enough.
        let map: BTreeMap<String, &RawValue> =
            serde_json::from_str(value.get()).map_err(|e| ParamsError::BadJson(e.to_string()))?;
        let mut pairs = Vec::with_capacity(map.len());
        for (key, raw) in map {
            let text = raw.get();
            let value = match text.as_bytes().first() {
                Some(b'"') => Value::Text(
                    serde_json::from_str(text).map_err(|e| ParamsError::BadJson(e.to_string()))?,
                ),
                Some(b't') => Value::Bool(true),
                Some(b'f') => Value::Bool(false),
                Some(b'n') => Value::Null,
                Some(b'{') | Some(b'[') => return Err(ParamsError::Nested(key)),
                _ => Value::Number(text.to_owned()),
            };
            pairs.push((key, value));
        }
        Params::from_pairs(pairs)
    }

    fn parse_form(body: &[u8]) -> Result<Params, ParamsError> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_bytes(body).map_err(|_| ParamsError::BadForm)?;
        Params::from_pairs(
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::Text(v)))
                .collect(),
        )
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.pairs
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &self.pairs[i].1)
    }

    /// The text of a parameter as sent (`true` for a JSON boolean); `None` when it is absent,
    /// null or empty.
    pub fn text(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Text(s) | Value::Number(s) if !s.is_empty() => Some(s),
            Value::Bool(true) => Some("true"),
            Value::Bool(false) => Some("false"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_number_literals_and_form_decodes_values() {
        let p = Params::parse(
            Some("application/json"),
            br#"{"amount": 10.0, "b": "x y", "c": true, "d": null}"#,
        )
        .unwrap();
        assert_eq!(p.get("amount"), Some(&Value::Number("10.0".into())));
        assert_eq!(p.text("b"), Some("x y"));
        assert_eq!(p.get("c"), Some(&Value::Bool(true)));
        assert_eq!(p.text("d"), None);
        let f = Params::parse(None, b"b=x+y&a=%26").unwrap();
        assert_eq!(f.text("b"), Some("x y"));
        assert_eq!(f.iter().next().unwrap().0, "a");
    }

    #[test]
    fn malformed_bodies_are_named_errors() {
        assert_eq!(Params::parse(None, b"  "), Err(ParamsError::Empty));
        assert!(matches!(
            Params::parse(Some("application/json"), b"{\"a\":"),
            Err(ParamsError::BadJson(_))
        ));
        assert_eq!(
            Params::parse(Some("application/json"), b"[1]"),
            Err(ParamsError::NotAnObject)
        );
        assert_eq!(
            Params::parse(Some("application/json"), br#"{"a":{"b":1}}"#),
            Err(ParamsError::Nested("a".into()))
        );
        assert_eq!(
            Params::parse(None, b"a=1&a=2"),
            Err(ParamsError::Duplicate("a".into()))
        );
    }
}
