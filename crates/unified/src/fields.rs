//! Request fields parsed into domain values, each failure a code-11 answer that names the field.
//!
//! Amounts are Jeepay's `Long` fen: integer text of the minor unit ("100" is 1.00 CNY), parsed
//! exactly, never through a float.

use crate::envelope::UnifiedError;
use tillgate_domain::{Currency, Key, Money};
use tillgate_wire::{Params, Value};

/// A required parameter; absent, null and empty are alike missing (Jeepay's `@NotBlank`).
pub fn required<'a>(params: &'a Params, field: &str) -> Result<&'a str, UnifiedError> {
    params
        .text(field)
        .ok_or_else(|| UnifiedError::missing(field))
}

/// A text of at most `max` characters on one line. `Params` already refused every control
/// character at the boundary; the check stays for values built any other way.
fn check_text(field: &str, t: &str, max: usize) -> Result<(), UnifiedError> {
    if t.chars().count() > max {
        return Err(UnifiedError::params(format!(
            "参数{field}长度超过{max} ({field} is longer than {max} characters)"
        )));
    }
    if t.chars().any(char::is_control) {
        return Err(UnifiedError::params(format!(
            "参数{field}格式错误 ({field} contains a control character)"
        )));
    }
    Ok(())
}

/// An optional free text, bounded.
pub fn optional_text(
    params: &Params,
    field: &str,
    max: usize,
) -> Result<Option<String>, UnifiedError> {
    match params.text(field) {
        Some(t) => {
            check_text(field, t, max)?;
            Ok(Some(t.to_owned()))
        }
        None => Ok(None),
    }
}

/// A required text on one line, bounded.
pub fn required_text(params: &Params, field: &str, max: usize) -> Result<String, UnifiedError> {
    optional_text(params, field, max)?.ok_or_else(|| UnifiedError::missing(field))
}

/// A merchant key (`mchOrderNo`, `mchRefundNo`).
pub fn key(params: &Params, field: &str) -> Result<Key, UnifiedError> {
    let t = required(params, field)?;
    Key::parse(t).map_err(|e| UnifiedError::params(format!("参数{field}格式错误 ({field} {e})")))
}

/// A currency code in any case ("cny"), with the text as sent.
pub fn currency(params: &Params, field: &str) -> Result<(Currency, String), UnifiedError> {
    let t = required(params, field)?;
    let currency = Currency::from_code(&t.to_ascii_uppercase()).ok_or_else(|| {
        UnifiedError::params(format!(
            "参数{field}不支持 ({field} is not a supported ISO 4217 currency code)"
        ))
    })?;
    Ok((currency, t.to_owned()))
}

/// An amount in minor units: integer text ≥ 1 (a JSON number or a string of digits).
pub fn amount(params: &Params, field: &str, currency: Currency) -> Result<Money, UnifiedError> {
    let bad = |why: &str| {
        UnifiedError::params(format!(
            "参数{field}格式错误 ({field} {why}; it is an integer number of minor units, e.g. 100 for 1.00)"
        ))
    };
    let t = match params.get(field) {
        Some(Value::Text(s) | Value::Number(s)) if !s.is_empty() => s.as_str(),
        Some(Value::Bool(_)) => return Err(bad("is a boolean")),
        _ => return Err(UnifiedError::missing(field)),
    };
    if !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("is not a whole positive number"));
    }
    let minor: i64 = t.parse().map_err(|_| bad("is too large"))?;
    if minor < 1 {
        return Err(bad("must be at least 1"));
    }
    Money::from_minor(minor, currency).ok_or_else(|| bad("is too large"))
}

/// A notification URL: http or https with a host, bounded, and allowed by `policy` (the
/// gateway's rule on which hosts notifications may reach).
pub fn notify_url(
    params: &Params,
    field: &str,
    policy: &dyn Fn(&str) -> Result<(), String>,
) -> Result<Option<String>, UnifiedError> {
    let url = optional_text(params, field, 512)?;
    if let Some(u) = &url {
        let lower = u.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"));
        if rest.is_none_or(|h| h.is_empty() || h.starts_with('/') || h.contains(' ')) {
            return Err(UnifiedError::params(format!(
                "异步通知地址协议仅支持http:// 或 https:// ! ({field} must be an http or https URL)"
            )));
        }
        policy(u)
            .map_err(|why| UnifiedError::params(format!("参数{field}不可用 ({field} {why})")))?;
    }
    Ok(url)
}

/// The longest `expiredTime` accepted: 30 days, in seconds.
const MAX_EXPIRED_SECONDS: i64 = 30 * 24 * 3600;

/// `expiredTime` (seconds) as whole minutes, rounded up; `None` for the default (2 hours).
pub fn expired_minutes(params: &Params) -> Result<Option<i64>, UnifiedError> {
    let Some(t) = params.text("expiredTime") else {
        return Ok(None);
    };
    let seconds = t
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| t.parse::<i64>().ok())
        .flatten()
        .filter(|s| (1..=MAX_EXPIRED_SECONDS).contains(s))
        .ok_or_else(|| {
            UnifiedError::params(format!(
                "参数expiredTime格式错误 (expiredTime must be whole seconds from 1 to {MAX_EXPIRED_SECONDS})"
            ))
        })?;
    Ok(Some((seconds + 59) / 60))
}

/// `divisionMode`: 0, 1 or 2 when given.
pub fn division_mode(params: &Params) -> Result<Option<String>, UnifiedError> {
    match params.text("divisionMode") {
        None => Ok(None),
        Some(m @ ("0" | "1" | "2")) => Ok(Some(m.to_owned())),
        Some(_) => Err(UnifiedError::params(
            "参数divisionMode格式错误 (divisionMode must be 0, 1 or 2)",
        )),
    }
}

/// The `authCode` in `channelExtra` (a JSON string such as `{"authCode":"134…"}`), required by
/// the barcode way codes.
pub fn auth_code(params: &Params) -> Result<String, UnifiedError> {
    let missing = || {
        UnifiedError::params(
            "用户支付条码[authCode]不能为空 (channelExtra must carry {\"authCode\": \"…\"} for a barcode payment)",
        )
    };
    let extra = params.text("channelExtra").ok_or_else(missing)?;
    let json: serde_json::Value = serde_json::from_str(extra).map_err(|_| {
        UnifiedError::params("参数channelExtra格式错误 (channelExtra must be a JSON object string)")
    })?;
    let code = match json.get("authCode") {
        Some(serde_json::Value::String(s)) => s.clone(),
        // A numeric code is written as JSON number by some clients.
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => return Err(missing()),
    };
    if code.is_empty() {
        return Err(missing());
    }
    check_text("authCode", &code, 128)?;
    Ok(code)
}

/// A gateway order id (`payOrderId` with "P", `refundOrderId` with "R", `cancelOrderId` with
/// "C"), accepted with or without its prefix; the bare number is returned.
pub fn order_id(
    params: &Params,
    field: &str,
    prefix: char,
) -> Result<Option<String>, UnifiedError> {
    let Some(t) = params.text(field) else {
        return Ok(None);
    };
    check_text(field, t, 64)?;
    let bare = t.strip_prefix(prefix).unwrap_or(t);
    if bare.is_empty() {
        return Err(UnifiedError::params(format!(
            "参数{field}格式错误 ({field} is empty)"
        )));
    }
    Ok(Some(bare.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Code;

    fn json(body: &str) -> Params {
        Params::parse(Some("application/json"), body.as_bytes()).unwrap()
    }

    fn cny() -> Currency {
        Currency::from_code("CNY").unwrap()
    }

    #[test]
    fn amounts_are_integer_minor_units() {
        let ok = |body: &str| amount(&json(body), "amount", cny()).map(|m| m.minor());
        assert_eq!(ok(r#"{"amount":100}"#), Ok(100));
        assert_eq!(ok(r#"{"amount":"100"}"#), Ok(100));
        assert_eq!(ok(r#"{"amount":"007"}"#), Ok(7));
        for bad in [
            r#"{"amount":"1.5"}"#,
            r#"{"amount":1.5}"#,
            r#"{"amount":"-1"}"#,
            r#"{"amount":-1}"#,
            r#"{"amount":"0"}"#,
            r#"{"amount":0}"#,
            r#"{"amount":"99999999999999999999"}"#,
            r#"{"amount":"1000000000000000001"}"#,
            r#"{"amount":"abc"}"#,
            r#"{"amount":"1e2"}"#,
            r#"{"amount":1e2}"#,
            r#"{"amount":" 1"}"#,
            r#"{"amount":"+1"}"#,
            r#"{"amount":true}"#,
        ] {
            let e = ok(bad).unwrap_err();
            assert_eq!(e.code, Code::ParamsError, "{bad}");
            assert!(e.msg.contains("amount"), "{bad}: {}", e.msg);
        }
        let e = ok(r#"{"amount":""}"#).unwrap_err();
        assert!(e.msg.contains("不能为空"));
        let e = ok(r#"{"amount":null}"#).unwrap_err();
        assert!(e.msg.contains("不能为空"));
    }

    #[test]
    fn currencies_in_any_case_and_unknown_ones_refused() {
        let (c, sent) = currency(&json(r#"{"currency":"cny"}"#), "currency").unwrap();
        assert_eq!((c.code(), sent.as_str()), ("CNY", "cny"));
        assert_eq!(
            currency(&json(r#"{"currency":"xyz"}"#), "currency")
                .unwrap_err()
                .code,
            Code::ParamsError
        );
        assert!(currency(&json("{}"), "currency")
            .unwrap_err()
            .msg
            .starts_with("参数currency不能为空"));
    }

    #[test]
    fn expired_time_rounds_up_to_minutes() {
        let m = |body: &str| expired_minutes(&json(body));
        assert_eq!(m("{}"), Ok(None));
        assert_eq!(m(r#"{"expiredTime":60}"#), Ok(Some(1)));
        assert_eq!(m(r#"{"expiredTime":61}"#), Ok(Some(2)));
        assert_eq!(m(r#"{"expiredTime":"7200"}"#), Ok(Some(120)));
        assert_eq!(m(r#"{"expiredTime":1}"#), Ok(Some(1)));
        for bad in ["0", "-5", "1.5", "\"x\"", "2592001", "99999999999999999999"] {
            assert!(m(&format!(r#"{{"expiredTime":{bad}}}"#)).is_err(), "{bad}");
        }
    }

    #[test]
    fn auth_codes_come_from_channel_extra() {
        let a = |body: &str| auth_code(&json(body));
        assert_eq!(
            a(r#"{"channelExtra":"{\"authCode\":\"134567\"}"}"#),
            Ok("134567".into())
        );
        assert_eq!(
            a(r#"{"channelExtra":"{\"authCode\":134567}"}"#),
            Ok("134567".into())
        );
        for bad in [
            "{}",
            r#"{"channelExtra":""}"#,
            r#"{"channelExtra":"{}"}"#,
            r#"{"channelExtra":"{\"authCode\":\"\"}"}"#,
            r#"{"channelExtra":"not json"}"#,
            r#"{"channelExtra":"[1]"}"#,
        ] {
            assert_eq!(a(bad).unwrap_err().code, Code::ParamsError, "{bad}");
        }
    }

    #[test]
    fn order_ids_with_or_without_prefix() {
        let p = json(r#"{"payOrderId":"P217000000000000001","refundOrderId":"217","x":"P"}"#);
        assert_eq!(
            order_id(&p, "payOrderId", 'P'),
            Ok(Some("217000000000000001".into()))
        );
        assert_eq!(order_id(&p, "refundOrderId", 'R'), Ok(Some("217".into())));
        assert_eq!(order_id(&p, "cancelOrderId", 'C'), Ok(None));
        assert!(order_id(&p, "x", 'P').is_err());
    }

    #[test]
    fn urls_texts_and_keys() {
        let p =
            json(r#"{"a":"https://shop.example/notify?x=1","b":"ftp://x","c":"http://","k":" k"}"#);
        let any = |_: &str| Ok(());
        assert!(notify_url(&p, "a", &any).unwrap().is_some());
        assert!(notify_url(&p, "b", &any).is_err());
        assert!(notify_url(&p, "c", &any).is_err());
        assert_eq!(notify_url(&p, "none", &any), Ok(None));
        let refuse = |_: &str| Err("may not point to a private address".to_owned());
        let e = notify_url(&p, "a", &refuse).unwrap_err();
        assert_eq!(e.code, crate::envelope::Code::ParamsError);
        assert!(e.msg.contains("private address"));
        assert!(optional_text(&p, "a", 5).is_err());
        assert!(key(&p, "k").is_err());
        assert!(key(&p, "missing").unwrap_err().msg.contains("不能为空"));
        assert_eq!(
            division_mode(&json(r#"{"divisionMode":1}"#)),
            Ok(Some("1".into()))
        );
        assert!(division_mode(&json(r#"{"divisionMode":3}"#)).is_err());
    }
}
