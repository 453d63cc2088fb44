//! `verifySign`: MD5 over the parameters sorted by key, joined as `k=v` with `&`, followed by
//! `&` and the lower-case hex MD5 of the store's API token.
//!
//! The official SDKs disagree on empty and null values (some sign `k=`, some skip the pair) and
//! on how typed JSON values are written (the Python SDK signs `True` for `true`). The gateway
//! accepts a signature that matches any of those forms, compared in constant time, and signs
//! what it sends in the one form they all accept: no empty values.

use crate::params::{Params, Value};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// How a signer treats empty and null values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Empties {
    /// Go SDK, yuansfer-jssdk: empty strings and nulls are left out.
    Skip,
    /// Python and Java SDKs: empty strings are signed as `k=`, nulls left out.
    KeepEmpty,
    /// PHP SDK: empty strings and nulls are both signed as `k=`.
    KeepAll,
}

/// How a signer writes JSON booleans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bools {
    /// The JSON text: `true`.
    Literal,
    /// Python's `str(True)`: `True`.
    Python,
}

/// The lower-case hex MD5 of `text`.
pub fn md5_hex(text: &[u8]) -> String {
    hex::encode(Md5::digest(text))
}

fn canonical(params: &Params, empties: Empties, bools: Bools, token_md5: &str) -> String {
    let mut out = String::with_capacity(256);
    for (key, value) in params.iter() {
        if key == "verifySign" {
            continue;
        }
        let text: &str = match value {
            Value::Text(s) | Value::Number(s) => s,
            Value::Bool(b) => match (bools, b) {
                (Bools::Literal, true) => "true",
                (Bools::Literal, false) => "false",
                (Bools::Python, true) => "True",
                (Bools::Python, false) => "False",
            },
            Value::Null => "",
        };
        let keep = match (value, empties) {
            (Value::Null, Empties::KeepAll) => true,
            (Value::Null, _) => false,
            (_, Empties::Skip) => !text.is_empty(),
            _ => true,
        };
        if !keep {
            continue;
        }
        out.push_str(key);
        out.push('=');
        out.push_str(text);
        out.push('&');
    }
    out.push_str(token_md5);
    out
}

/// The signature of `params` (without `verifySign`) in the form every SDK accepts.
pub fn sign(params: &Params, token: &str) -> String {
    let token_md5 = md5_hex(token.as_bytes());
    md5_hex(canonical(params, Empties::Skip, Bools::Literal, &token_md5).as_bytes())
}

/// True when `signature` matches `params` in any form an official SDK produces.
pub fn verify(params: &Params, token: &str, signature: &str) -> bool {
    verify_with_token_md5(params, &md5_hex(token.as_bytes()), signature)
}

/// Like [`verify`], with the token's MD5 already computed.
pub fn verify_with_token_md5(params: &Params, token_md5: &str, signature: &str) -> bool {
    let given = signature.to_ascii_lowercase();
    let has_empty = params
        .iter()
        .any(|(k, v)| k != "verifySign" && (v.is_empty_text() || matches!(v, Value::Null)));
    let has_bool = params.iter().any(|(_, v)| matches!(v, Value::Bool(_)));
    let empties: &[Empties] = if has_empty {
        &[Empties::Skip, Empties::KeepEmpty, Empties::KeepAll]
    } else {
        &[Empties::Skip]
    };
    let bools: &[Bools] = if has_bool {
        &[Bools::Literal, Bools::Python]
    } else {
        &[Bools::Literal]
    };
    let mut matched = subtle::Choice::from(0u8);
    for e in empties {
        for b in bools {
            let expected = md5_hex(canonical(params, *e, *b, token_md5).as_bytes());
            matched |= expected.as_bytes().ct_eq(given.as_bytes());
        }
    }
    matched.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::from_pairs(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Value::Text(v.to_string())))
                .collect(),
        )
        .unwrap()
    }

    const DOCS_TOKEN: &str = "5cbfb079f15b150122261c8537086d77a";
    const SEED_TOKEN: &str = "359c05eb811c7c8576f4a8a277dc6f6b";

    fn seed_refund() -> Vec<(&'static str, &'static str)> {
        vec![
            ("merchantNo", "200043"),
            ("storeNo", "303660"),
            ("refundAmount", "10"),
            ("currency", "USD"),
            ("settleCurrency", "USD"),
            ("transactionNo", "316129873376769782"),
        ]
    }

    #[test]
    fn token_digest_of_the_docs_example() {
        assert_eq!(
            md5_hex(DOCS_TOKEN.as_bytes()),
            "186abea4b8610d7ff03768255588597a"
        );
    }

    #[test]
    fn seed_javascript_sample_pre_image_and_signature() {
        let p = params(&seed_refund());
        let pre = canonical(
            &p,
            Empties::Skip,
            Bools::Literal,
            &md5_hex(SEED_TOKEN.as_bytes()),
        );
        assert_eq!(
            pre,
            "currency=USD&merchantNo=200043&refundAmount=10&settleCurrency=USD&storeNo=303660\
             &transactionNo=316129873376769782&4854caeee6eef49c322873019fa9ff04"
        );
        assert_eq!(sign(&p, SEED_TOKEN), "a1ae09cbff2a749f66736e0438d84857");
        assert!(verify(&p, SEED_TOKEN, "a1ae09cbff2a749f66736e0438d84857"));
        assert!(verify(&p, SEED_TOKEN, "A1AE09CBFF2A749F66736E0438D84857"));
        assert!(!verify(&p, DOCS_TOKEN, "a1ae09cbff2a749f66736e0438d84857"));
    }

    #[test]
    fn docs_refund_curl_verifies_with_the_docs_token() {
        let p = params(&[
            ("merchantNo", "200043"),
            ("storeNo", "300014"),
            ("verifySign", "dd81f7781603bec48ae2c6a9ac758bf2"),
            ("refundAmount", "0.01"),
            ("currency", "USD"),
            ("settleCurrency", "USD"),
            ("transactionNo", "297553638301777927"),
            ("refundReference", "refund2020101305"),
        ]);
        assert!(verify(&p, DOCS_TOKEN, "dd81f7781603bec48ae2c6a9ac758bf2"));
    }

    #[test]
    fn both_empty_value_forms_verify() {
        let mut pairs = seed_refund();
        pairs.push(("refundReference", ""));
        let p = params(&pairs);
        // Python SDK and the Pockyt JavaScript sample sign the empty value ...
        assert!(verify(&p, SEED_TOKEN, "f01448b60a0848fd2ed4a10f82cfcc1b"));
        // ... the Go SDK and yuansfer-jssdk leave it out.
        assert!(verify(&p, SEED_TOKEN, "a1ae09cbff2a749f66736e0438d84857"));
        assert!(!verify(&p, SEED_TOKEN, "00000000000000000000000000000000"));
    }

    #[test]
    fn a_float_rendered_by_python_signs_as_its_text() {
        let mut pairs = seed_refund();
        pairs.retain(|(k, _)| *k != "refundAmount");
        let mut p: Vec<(String, Value)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::Text(v.to_string())))
            .collect();
        p.push(("refundAmount".into(), Value::Number("10.0".into())));
        let p = Params::from_pairs(p).unwrap();
        assert!(sign(&p, SEED_TOKEN).starts_with("2866ad98"));
    }

    #[test]
    fn ipn_vector_of_the_java_sdk() {
        let p = params(&[
            ("transactionNo", "305680500880311923"),
            ("status", "success"),
            ("amount", "0.01"),
            ("currency", "USD"),
            ("settleCurrency", "USD"),
            ("reference", "test1666247277861"),
            ("time", "20221020142817"),
        ]);
        assert_eq!(sign(&p, DOCS_TOKEN), "435d01c5d5fa88cfe8168fbfbf732519");
    }

    #[test]
    fn python_booleans_verify() {
        let mut p: Vec<(String, Value)> = seed_refund()
            .iter()
            .map(|(k, v)| (k.to_string(), Value::Text(v.to_string())))
            .collect();
        p.push(("flag".into(), Value::Bool(true)));
        let as_json = Params::from_pairs(p.clone()).unwrap();
        p.pop();
        p.push(("flag".into(), Value::Text("True".into())));
        let as_python = Params::from_pairs(p).unwrap();
        assert!(verify(&as_json, SEED_TOKEN, &sign(&as_python, SEED_TOKEN)));
    }
}
