//! Request parameters as received, JSON or form-urlencoded, kept as the text that was sent so
//! that the signature is computed over exactly the bytes the merchant signed.
//!
//! Parsing is strict, so that what is signed and what is acted on can never differ between two
//! readers of the same body: a key given twice, bytes that are not UTF-8 (raw or
//! percent-encoded), and control characters or null bytes in a key or a value are refused here,
//! before any credential is looked up and long before anything reaches a database.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
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
    #[error("parameter {0} must be a string or a number, not an object or array")]
    Nested(String),
    #[error("parameter {0} is given more than once")]
    Duplicate(String),
    #[error("request body is not valid UTF-8")]
    BadUtf8,
    /// The key, escaped (`\0` for a null byte), so that the answer never carries the character.
    #[error("parameter {0} contains a control character or a null byte")]
    ControlCharacter(String),
}

/// Whether `text` holds a character that no parameter may carry: the C0 controls (the null
/// byte among them), DEL and the C1 controls.
pub fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// The members of one JSON object in the order sent, a repeated key kept so that it can be
/// refused (serde_json's own maps keep the last value silently).
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Members<'de>, D::Error> {
        struct Each;
        impl<'de> Visitor<'de> for Each {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Each)
    }
}

/// A body that must be one JSON object: its members by key, each value as the raw text sent.
/// Invalid UTF-8, invalid JSON, anything but an object and a key given twice are refused.
pub fn json_object(body: &[u8]) -> Result<BTreeMap<String, &RawValue>, ParamsError> {
    let text = std::str::from_utf8(body).map_err(|_| ParamsError::BadUtf8)?;
    let value: &RawValue =
        serde_json::from_str(text).map_err(|e| ParamsError::BadJson(e.to_string()))?;
    if !value.get().trim_start().starts_with('{') {
        return Err(ParamsError::NotAnObject);
    }
    let Members(members) =
        serde_json::from_str(value.get()).map_err(|e| ParamsError::BadJson(e.to_string()))?;
    let mut map = BTreeMap::new();
    for (key, raw) in members {
        if map.contains_key(&key) {
            return Err(ParamsError::Duplicate(key));
        }
        map.insert(key, raw);
    }
    Ok(map)
}

/// Decodes one form key or value: `+` is a space, `%XX` a byte, and the bytes must be UTF-8.
fn form_text(raw: &str) -> Result<String, ParamsError> {
    let spaced = raw.replace('+', " ");
    String::from_utf8(percent_encoding::percent_decode_str(&spaced).collect())
        .map_err(|_| ParamsError::BadUtf8)
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
        let map = json_object(body)?;
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
        Params::checked(pairs)
    }

    /// A form body: `k=v` pairs joined by `&`. Unlike the lenient decoders, which put U+FFFD in
    /// place of bytes that are not UTF-8, a byte sequence that is not UTF-8 is refused.
    fn parse_form(body: &[u8]) -> Result<Params, ParamsError> {
        let text = std::str::from_utf8(body).map_err(|_| ParamsError::BadUtf8)?;
        let mut pairs = Vec::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            pairs.push((form_text(key)?, Value::Text(form_text(value)?)));
        }
        Params::checked(pairs)
    }

    /// Received pairs: no control character in a key or a text value, each key once.
    fn checked(pairs: Vec<(String, Value)>) -> Result<Params, ParamsError> {
        for (key, value) in &pairs {
            let bad = has_control(key) || matches!(value, Value::Text(t) if has_control(t));
            if bad {
                return Err(ParamsError::ControlCharacter(
                    key.escape_debug().to_string(),
                ));
            }
        }
        Params::from_pairs(pairs)
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

    #[test]
    fn a_key_given_twice_is_refused_in_json_as_in_forms() {
        // serde_json alone would keep the last value: what one reader signs, another acts on.
        for (body, key) in [
            (
                &br#"{"transactionNo":"bogus","amount":"1","transactionNo":"123"}"#[..],
                "transactionNo",
            ),
            (
                br#"{"refundAmount":"1.00","refundAmount":"2.00"}"#,
                "refundAmount",
            ),
            (br#"{"a":1,"a":1}"#, "a"),
            (br#"{"a":null,"a":"x"}"#, "a"),
        ] {
            assert_eq!(
                Params::parse(Some("application/json"), body),
                Err(ParamsError::Duplicate(key.into())),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Escapes do not hide a repeat: "\u0061" is "a".
        assert_eq!(
            Params::parse(Some("application/json"), br#"{"a":"1","\u0061":"2"}"#),
            Err(ParamsError::Duplicate("a".into()))
        );
        assert_eq!(
            Params::parse(None, b"refundAmount=1.00&refundAmount=2.00"),
            Err(ParamsError::Duplicate("refundAmount".into()))
        );
        assert_eq!(
            json_object(br#"{"data":{},"data":{}}"#).unwrap_err(),
            ParamsError::Duplicate("data".into())
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_raw_or_percent_encoded() {
        assert_eq!(
            Params::parse(Some("application/json"), b"{\"a\":\"\xff\"}"),
            Err(ParamsError::BadUtf8)
        );
        assert_eq!(Params::parse(None, b"a=\xc3"), Err(ParamsError::BadUtf8));
        // A lenient decoder turns these into U+FFFD and accepts them.
        assert_eq!(Params::parse(None, b"a=%FF"), Err(ParamsError::BadUtf8));
        assert_eq!(Params::parse(None, b"a=%C3%28"), Err(ParamsError::BadUtf8));
        assert_eq!(Params::parse(None, b"%FF=1"), Err(ParamsError::BadUtf8));
        // A lone surrogate escape is no character either.
        assert!(matches!(
            Params::parse(Some("application/json"), br#"{"a":"\ud800"}"#),
            Err(ParamsError::BadJson(_))
        ));
        // Valid multi-byte text passes both ways.
        let p = Params::parse(None, "a=%E4%B8%AD&b=\u{00e9}".as_bytes()).unwrap();
        assert_eq!(
            (p.text("a"), p.text("b")),
            (Some("\u{4e2d}"), Some("\u{e9}"))
        );
    }

    #[test]
    fn control_characters_and_null_bytes_are_refused_in_keys_and_values() {
        for body in [
            &br#"{"merchantNo":"200043\u0000"}"#[..],
            br#"{"reference":"a\nb"}"#,
            br#"{"storeNo":"\t1"}"#,
            br#"{"x":"\u007f"}"#,
            br#"{"x":"\u0085"}"#,
            br#"{"x\u0000":"1"}"#,
        ] {
            assert!(
                matches!(
                    Params::parse(Some("application/json"), body),
                    Err(ParamsError::ControlCharacter(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        for body in [
            &b"transactionNo=1%00"[..],
            b"a=%0D%0A",
            b"a=\x01",
            b"a%00=1",
            b"a=%C2%9B",
        ] {
            assert!(
                matches!(
                    Params::parse(None, body),
                    Err(ParamsError::ControlCharacter(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // The key is named escaped: the answer never carries the character itself.
        let e = Params::parse(None, b"a%00b=1").unwrap_err();
        assert_eq!(e, ParamsError::ControlCharacter("a\\0b".into()));
        assert!(!e.to_string().contains('\0'));
    }
}
