//! `data` fields parsed into domain values; each failure names the field.
//!
//! Amounts are decimal strings in major units ("24.99"), parsed exactly once into `Money` with
//! the currency's exponent; a JSON number is read from its literal text, never through a float.

use crate::envelope::{Code, YabandError};
use tillgate_domain::{Currency, Key, Money};
use tillgate_wire::{Params, Value};

/// The text of a field; absent, null and empty are alike "not given". A boolean is refused:
/// no YabandPay field is one, and `true` would otherwise pass as text.
fn given<'a>(p: &'a Params, field: &str) -> Result<Option<&'a str>, YabandError> {
    match p.get(field) {
        Some(Value::Bool(_)) => Err(YabandError::malformed(format!(
            "data.{field} must be a string or a number"
        ))),
        _ => Ok(p.text(field)),
    }
}

/// At most `max` characters on one line. `Params` already refused every control character at
/// the boundary; the check stays for values built any other way.
fn check(field: &str, t: &str, max: usize) -> Result<(), YabandError> {
    if t.chars().count() > max {
        return Err(YabandError::malformed(format!(
            "data.{field} is longer than {max} characters"
        )));
    }
    if t.chars().any(char::is_control) {
        return Err(YabandError::malformed(format!(
            "data.{field} contains a control character"
        )));
    }
    Ok(())
}

/// An optional one-line text, bounded.
pub fn text(p: &Params, field: &str, max: usize) -> Result<Option<String>, YabandError> {
    match given(p, field)? {
        Some(t) => {
            check(field, t, max)?;
            Ok(Some(t.to_owned()))
        }
        None => Ok(None),
    }
}

/// A required one-line text, bounded.
pub fn required_text(p: &Params, field: &str, max: usize) -> Result<String, YabandError> {
    text(p, field, max)?.ok_or_else(|| YabandError::missing(&format!("data.{field}")))
}

/// A merchant key (`order_id`, `request_id`, `m_refund_id`) when given.
pub fn optional_key(p: &Params, field: &str) -> Result<Option<Key>, YabandError> {
    match given(p, field)? {
        Some(t) => Key::parse(t)
            .map(Some)
            .map_err(|e| YabandError::malformed(format!("data.{field} {e}"))),
        None => Ok(None),
    }
}

/// A required merchant key.
pub fn key(p: &Params, field: &str) -> Result<Key, YabandError> {
    optional_key(p, field)?.ok_or_else(|| YabandError::missing(&format!("data.{field}")))
}

/// A gateway number the merchant names (`trade_id`, `refund_id`): bounded text.
pub fn id(p: &Params, field: &str) -> Result<String, YabandError> {
    required_text(p, field, 64)
}

/// An ISO 4217 code; YabandPay writes it in upper case, any case is accepted.
pub fn currency(p: &Params, field: &str) -> Result<Currency, YabandError> {
    let t = given(p, field)?.ok_or_else(|| YabandError::missing(&format!("data.{field}")))?;
    Currency::from_code(&t.to_ascii_uppercase()).ok_or_else(|| {
        YabandError::malformed(format!(
            "data.{field} {t:?} is not a supported ISO 4217 currency code"
        ))
    })
}

/// A positive amount in major units ("0.10") with at most the currency's decimals.
pub fn amount(p: &Params, field: &str, currency: Currency) -> Result<Money, YabandError> {
    let t = given(p, field)?.ok_or_else(|| YabandError::missing(&format!("data.{field}")))?;
    Money::parse_positive(t, currency).map_err(|e| {
        YabandError::malformed(format!(
            "data.{field} {t:?}: {e} (a decimal string in major units, e.g. \"24.99\")"
        ))
    })
}

/// `tip_amount`: tips are not supported, so only an absent or zero tip is accepted.
pub fn no_tip(p: &Params, currency: Currency) -> Result<(), YabandError> {
    let Some(t) = given(p, "tip_amount")? else {
        return Ok(());
    };
    let tip = Money::parse(t, currency)
        .map_err(|e| YabandError::malformed(format!("data.tip_amount {t:?}: {e}")))?;
    if tip.is_zero() {
        Ok(())
    } else {
        Err(YabandError::new(
            Code::Unsupported,
            "tips are not supported; send tip_amount 0 and include any tip in amount",
        ))
    }
}

/// `operation` of `v3.POS`: 1 (sale) or absent; 2 (authorisation) is refused.
pub fn sale_operation(p: &Params) -> Result<(), YabandError> {
    match given(p, "operation")? {
        None | Some("1") => Ok(()),
        Some("2") => Err(YabandError::new(
            Code::Unsupported,
            "operation 2 (authorisation) is not supported; use 1 (sale)",
        )),
        Some(other) => Err(YabandError::malformed(format!(
            "data.operation {other:?} is not 1 (sale) or 2 (authorisation)"
        ))),
    }
}

/// `timeout` in minutes of a QR payment; "0" means a day, as YabandPay documents it.
pub fn timeout_minutes(p: &Params) -> Result<Option<i64>, YabandError> {
    const DAY: i64 = 1440;
    let Some(t) = given(p, "timeout")? else {
        return Ok(None);
    };
    let minutes = t
        .parse::<i64>()
        .ok()
        .filter(|m| (0..=30 * DAY).contains(m) && t.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            YabandError::malformed(format!(
                "data.timeout {t:?} is not a whole number of minutes from 0 to {}",
                30 * DAY
            ))
        })?;
    Ok(Some(if minutes == 0 { DAY } else { minutes }))
}

/// `notify_url`, checked against the gateway's URL policy.
pub fn notify_url(
    p: &Params,
    check: &dyn Fn(&str) -> Result<(), String>,
) -> Result<Option<String>, YabandError> {
    let Some(url) = text(p, "notify_url", 512)? else {
        return Ok(None);
    };
    check(&url).map_err(|why| YabandError::malformed(format!("data.notify_url {why}")))?;
    Ok(Some(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(json: &str) -> Params {
        Params::parse(Some("application/json"), json.as_bytes()).unwrap()
    }

    fn eur() -> Currency {
        Currency::from_code("EUR").unwrap()
    }

    #[test]
    fn amounts_are_exact_decimal_strings_or_number_literals() {
        let p = data(r#"{"a":"0.10","b":24.99,"c":"1.005","d":"-1","e":"0","f":"1e3","g":true}"#);
        assert_eq!(amount(&p, "a", eur()).unwrap().minor(), 10);
        assert_eq!(amount(&p, "b", eur()).unwrap().minor(), 2499);
        for bad in ["c", "d", "e", "f", "g"] {
            assert_eq!(
                amount(&p, bad, eur()).unwrap_err().code,
                Code::Malformed,
                "{bad}"
            );
        }
        assert_eq!(amount(&p, "z", eur()).unwrap_err().code, Code::MissingField);
        let jpy = Currency::from_code("JPY").unwrap();
        assert_eq!(
            amount(&data(r#"{"a":"500"}"#), "a", jpy).unwrap().minor(),
            500
        );
    }

    #[test]
    fn tips_operations_and_timeouts() {
        assert!(no_tip(&data(r#"{"tip_amount":"0.00"}"#), eur()).is_ok());
        assert!(no_tip(&data(r#"{"tip_amount":""}"#), eur()).is_ok());
        assert_eq!(
            no_tip(&data(r#"{"tip_amount":"1.00"}"#), eur())
                .unwrap_err()
                .code,
            Code::Unsupported
        );
        assert_eq!(
            no_tip(&data(r#"{"tip_amount":"x"}"#), eur())
                .unwrap_err()
                .code,
            Code::Malformed
        );
        assert!(sale_operation(&data(r#"{"operation":1}"#)).is_ok());
        assert!(sale_operation(&data(r#"{}"#)).is_ok());
        assert_eq!(
            sale_operation(&data(r#"{"operation":"2"}"#))
                .unwrap_err()
                .code,
            Code::Unsupported
        );
        assert_eq!(
            sale_operation(&data(r#"{"operation":"3"}"#))
                .unwrap_err()
                .code,
            Code::Malformed
        );
        assert_eq!(
            timeout_minutes(&data(r#"{"timeout":"0"}"#)).unwrap(),
            Some(1440)
        );
        assert_eq!(
            timeout_minutes(&data(r#"{"timeout":15}"#)).unwrap(),
            Some(15)
        );
        for bad in [
            r#"{"timeout":"-1"}"#,
            r#"{"timeout":"+5"}"#,
            r#"{"timeout":99999}"#,
        ] {
            assert!(timeout_minutes(&data(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn texts_are_bounded() {
        let p = data(r#"{"b":"ab","c":" k"}"#);
        assert!(text(&p, "b", 1).is_err());
        assert_eq!(key(&p, "c").unwrap_err().code, Code::Malformed);
        assert_eq!(
            required_text(&p, "z", 5).unwrap_err().code,
            Code::MissingField
        );
        assert_eq!(currency(&data(r#"{"c":"eur"}"#), "c").unwrap(), eur());
        assert_eq!(
            currency(&data(r#"{"c":"EURO"}"#), "c").unwrap_err().code,
            Code::Malformed
        );
    }
}
