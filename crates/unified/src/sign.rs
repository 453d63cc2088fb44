//! The Jeepay sign: MD5 over `k=v&` fragments sorted case-insensitively as whole fragments,
//! followed by `key=<appSecret>`, in upper-case hex.
//!
//! Jeepay (`JeepayKit.getSign`, identical in the SDK) keeps every entry whose value is neither
//! null nor `""`, leaves out `sign`, builds `k=v&` for each, sorts those strings with Java's
//! `String.CASE_INSENSITIVE_ORDER` and appends `key=` and the secret. The sort compares whole
//! fragments, so `a0=…&` comes before `a=…&` (`'0'` < `'='`), which a sort by key gets wrong.
//! The server compares signatures ignoring case; so does [`verify`], in constant time.

use md5::{Digest, Md5};
use std::cmp::Ordering;
use subtle::ConstantTimeEq;
use tillgate_wire::{Params, Value};

/// Java's `Character.toLowerCase(Character.toUpperCase(c))` of one UTF-16 code unit, which is
/// what `CASE_INSENSITIVE_ORDER` compares (Java 8 works on code units, so a surrogate stands for
/// itself).
fn fold(unit: u16) -> u16 {
    let Some(c) = char::from_u32(u32::from(unit)) else {
        return unit;
    };
    // Java maps one char to one char (the simple case mapping). Rust yields the full mapping;
    // where it has several chars there is no simple upper-case mapping that changes the fold
    // (ß stays ß, ᾀ folds back to itself either way), so the char is kept.
    let mut upper = c.to_uppercase();
    let up = match (upper.next(), upper.next()) {
        (Some(u), None) => u,
        _ => c,
    };
    // The only multi-char lower-case mapping is İ → i + U+0307, whose simple mapping is `i`.
    let low = up.to_lowercase().next().unwrap_or(up);
    u16::try_from(u32::from(low)).unwrap_or(unit)
}

/// `String.CASE_INSENSITIVE_ORDER.compare(a, b)`: code unit by code unit after case folding,
/// then the shorter first.
pub fn java_case_insensitive_cmp(a: &str, b: &str) -> Ordering {
    let mut left = a.encode_utf16();
    let mut right = b.encode_utf16();
    loop {
        match (left.next(), right.next()) {
            (Some(x), Some(y)) => {
                if x != y {
                    let ordering = fold(x).cmp(&fold(y));
                    if ordering != Ordering::Equal {
                        return ordering;
                    }
                }
            }
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (None, None) => return Ordering::Equal,
        }
    }
}

/// The string that is hashed: the kept `k=v&` fragments in Jeepay's order, then
/// `key=<secret>`. Fragments that tie case-insensitively keep the order they were given in
/// (Java's object sort is stable too).
pub fn canonical<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    secret: &str,
) -> String {
    let mut fragments: Vec<String> = entries
        .into_iter()
        .filter(|(k, v)| *k != "sign" && !v.is_empty())
        .map(|(k, v)| format!("{k}={v}&"))
        .collect();
    fragments.sort_by(|a, b| java_case_insensitive_cmp(a, b));
    let mut out = String::with_capacity(fragments.iter().map(String::len).sum::<usize>() + 64);
    for f in &fragments {
        out.push_str(f);
    }
    out.push_str("key=");
    out.push_str(secret);
    out
}

/// Upper-case hex MD5 of `text`.
pub fn md5_upper(text: &str) -> String {
    hex::encode_upper(Md5::digest(text.as_bytes()))
}

/// The sign of text entries (the answer's `data`, a notification's fields).
pub fn sign<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>, secret: &str) -> String {
    md5_upper(&canonical(entries, secret))
}

/// The text a request parameter is signed as; `None` when it is null (left out). JSON numbers
/// and booleans sign as their literal text, as the SDK's `toString` writes them.
fn param_text(value: &Value) -> Option<&str> {
    match value {
        Value::Text(s) | Value::Number(s) => Some(s),
        Value::Bool(true) => Some("true"),
        Value::Bool(false) => Some("false"),
        Value::Null => None,
    }
}

/// The sign of request parameters as received.
pub fn sign_params(params: &Params, secret: &str) -> String {
    sign(
        params
            .iter()
            .filter_map(|(k, v)| param_text(v).map(|t| (k, t))),
        secret,
    )
}

/// True when `signature` (any case) is the sign of `params`, or of the subset of them whose
/// names are in `known`.
///
/// Jeepay recomputes the sign from its parsed request bean, so parameters it does not know are
/// not signed; the SDK signs everything it sends. Either form is accepted. Both candidates are
/// computed and compared in constant time.
pub fn verify(params: &Params, secret: &str, known: &[&str], signature: &str) -> bool {
    let given = signature.to_ascii_uppercase();
    let all = sign_params(params, secret);
    let mut matched = all.as_bytes().ct_eq(given.as_bytes());
    if params
        .iter()
        .any(|(k, _)| k != "sign" && !known.contains(&k))
    {
        let subset = sign(
            params
                .iter()
                .filter(|(k, _)| known.contains(k))
                .filter_map(|(k, v)| param_text(v).map(|t| (k, t))),
            secret,
        );
        matched |= subset.as_bytes().ct_eq(given.as_bytes());
    }
    matched.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;

    const VECTORS: &str = include_str!("../tests/data/jeepay-sign-vectors.json");

    /// The vectors' params omit the three fields their canonical strings include.
    fn with_common_fields(params: &Json) -> Json {
        let mut object = params.as_object().cloned().unwrap_or_default();
        object.insert("reqTime".into(), Json::String("1700000000123".into()));
        object.insert("signType".into(), Json::String("MD5".into()));
        object.insert("version".into(), Json::String("1.0".into()));
        Json::Object(object)
    }

    #[test]
    fn all_eight_vectors_match_through_the_request_parser() {
        let doc: Json = serde_json::from_str(VECTORS).unwrap();
        let secret = doc["api_key"].as_str().unwrap();
        let vectors = doc["vectors"].as_array().unwrap();
        assert_eq!(vectors.len(), 8);
        for v in vectors {
            let name = v["name"].as_str().unwrap();
            let body = serde_json::to_vec(&with_common_fields(&v["params"])).unwrap();
            let params = Params::parse(Some("application/json"), &body).unwrap();
            let entries: Vec<(&str, &str)> = params
                .iter()
                .filter_map(|(k, v)| param_text(v).map(|t| (k, t)))
                .collect();
            assert_eq!(
                canonical(entries, secret),
                v["canonical"].as_str().unwrap(),
                "canonical string of vector {name}"
            );
            let expected = v["sign"].as_str().unwrap();
            assert_eq!(sign_params(&params, secret), expected, "vector {name}");
            assert!(verify(&params, secret, &[], expected), "vector {name}");
            assert!(
                verify(&params, secret, &[], &expected.to_ascii_lowercase()),
                "vector {name} in lower case"
            );
            assert!(
                !verify(&params, "other-key", &[], expected),
                "vector {name}"
            );
        }
    }

    #[test]
    fn whole_fragments_sort_not_keys() {
        // `a` sorts before `a0` by key, but `a0=` before `a=` as fragments.
        let canonical = canonical([("a", "z"), ("A", "a"), ("a0", "prefix")], "k");
        assert_eq!(canonical, "a0=prefix&A=a&a=z&key=k");
        assert_eq!(
            java_case_insensitive_cmp("Zebra", "apple"),
            Ordering::Greater
        );
        assert_eq!(java_case_insensitive_cmp("ab", "AB"), Ordering::Equal);
        assert_eq!(java_case_insensitive_cmp("ab", "ABC"), Ordering::Less);
        // Java folds İ to i, and compares a surrogate as a code unit (above U+D7FF, below U+E000).
        assert_eq!(java_case_insensitive_cmp("İ", "i"), Ordering::Equal);
        assert_eq!(java_case_insensitive_cmp("😀", "\u{e000}"), Ordering::Less);
        assert_eq!(java_case_insensitive_cmp("ß", "SS"), Ordering::Greater);
    }

    #[test]
    fn empty_data_signs_the_key_alone() {
        assert_eq!(sign([], "s"), md5_upper("key=s"));
    }

    #[test]
    fn a_sign_over_known_fields_only_verifies_and_a_partial_one_does_not() {
        let params = Params::parse(
            Some("application/json"),
            br#"{"mchNo":"M1","appId":"A1","amount":100,"clientTag":"x","sign":"?"}"#,
        )
        .unwrap();
        let known_only = sign([("mchNo", "M1"), ("appId", "A1"), ("amount", "100")], "s");
        assert!(verify(
            &params,
            "s",
            &["mchNo", "appId", "amount"],
            &known_only
        ));
        assert!(!verify(&params, "s", &["mchNo", "appId"], &known_only));
        let everything = sign_params(&params, "s");
        assert!(verify(
            &params,
            "s",
            &["mchNo", "appId", "amount"],
            &everything
        ));
        assert!(!verify(&params, "s", &[], "not-a-sign"));
    }
}
