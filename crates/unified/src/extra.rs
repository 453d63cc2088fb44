//! What the unified dialect keeps with a payment, a refund and a cancel (the records' `extra`
//! JSON), so that answers and notifications can repeat the merchant's own fields later.
//!
//! The payment's extra is part of the add request's fingerprint, so it holds only what the
//! request said (never a time or a generated value): the same request yields the same text and
//! replays, another request with the same `mchOrderNo` is refused. The authCode in
//! `channelExtra` is deliberately not kept: it is a one-time customer credential.

use serde::{Deserialize, Serialize};

/// The unified fields of a payment. Every field is optional so that payments added through
/// another dialect (no extra at all) still render.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PayExtra {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub way_code: Option<String>,
    /// The currency as the merchant wrote it ("cny"); answers repeat it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext_param: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub division_mode: Option<String>,
}

/// The unified fields of a refund order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RefundExtra {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext_param: Option<String>,
}

/// The unified fields of a cancel (or close) order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CancelExtra {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext_param: Option<String>,
}

/// Serialises an extra; a struct of strings always serialises.
pub fn to_json<T: Serialize>(extra: &T) -> String {
    serde_json::to_string(extra).unwrap_or_else(|_| "{}".to_owned())
}

/// Reads an extra; no extra (another dialect's record) is the empty one.
pub fn parse<T: for<'de> Deserialize<'de> + Default>(text: Option<&str>) -> Result<T, String> {
    match text {
        None => Ok(T::default()),
        Some(t) => {
            serde_json::from_str(t).map_err(|e| format!("extra is not the unified form: {e}"))
        }
    }
}

/// Reads an extra for an answer: a record whose extra is not ours (written by another dialect)
/// renders with the fields the record itself has.
pub fn parse_lenient<T: for<'de> Deserialize<'de> + Default>(text: Option<&str>) -> T {
    parse(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_request_writes_the_same_text() {
        let e = PayExtra {
            app_id: Some("app".into()),
            way_code: Some("AUTO_BAR".into()),
            currency: Some("cny".into()),
            subject: Some("s".into()),
            body: Some("b".into()),
            ..PayExtra::default()
        };
        let text = to_json(&e);
        assert_eq!(
            text,
            r#"{"appId":"app","wayCode":"AUTO_BAR","currency":"cny","subject":"s","body":"b"}"#
        );
        assert_eq!(to_json(&e.clone()), text);
        assert_eq!(parse::<PayExtra>(Some(&text)).unwrap(), e);
    }

    #[test]
    fn missing_and_foreign_extras() {
        assert_eq!(parse::<RefundExtra>(None).unwrap(), RefundExtra::default());
        assert!(parse::<CancelExtra>(Some("[1]")).is_err());
        assert_eq!(
            parse_lenient::<CancelExtra>(Some("nope")),
            CancelExtra::default()
        );
        // Unknown keys (a newer writer) are ignored.
        let c: CancelExtra = parse(Some(r#"{"appId":"a","later":1}"#)).unwrap();
        assert_eq!(c.app_id.as_deref(), Some("a"));
    }
}
