//! Signed Pockyt v3 request bodies, amounts formatted from integer cents, the seeded
//! transactions' numbers, and the small deterministic random source the workers draw from.

use tillgate_pockyt::params::{Params, Value};
use tillgate_pockyt::sign;

/// The sandbox merchant that `tillgate serve` creates on an empty database.
pub const MERCHANT_NO: &str = "200043";
pub const STORE_NO: &str = "303660";
pub const TOKEN: &str = "359c05eb811c7c8576f4a8a277dc6f6b";

pub const ADD: &str = "/app-instore/v3/add";
pub const PAY: &str = "/app-instore/v3/pay";
pub const CANCEL: &str = "/app-data-search/v3/cancel";
pub const REFUND: &str = "/app-data-search/v3/refund";
pub const QUERY: &str = "/app-data-search/v3/tran-query";

/// The amount of every seeded transaction, in cents: 1000.00 USD leaves room for tens of
/// thousands of one-to-nine-cent partial refunds on each.
pub const SEEDED_AMOUNT_MINOR: i64 = 100_000;

/// The gateway number of seeded transaction `index`: 18 digits starting with 1. Numbers the
/// gateway issues start with the milliseconds since 2020, which begin with 2 for years to come,
/// so the two never clash and new rows still land after the seeded ones in the index.
pub fn seeded_transaction_no(index: u64) -> String {
    format!("1{index:017}")
}

/// The merchant reference of seeded transaction `index`.
pub fn seeded_reference(index: u64) -> String {
    format!("seed-{index}")
}

/// A decimal amount string in major units from integer minor units of a two-decimal currency:
/// 5 is "0.05", 100000 is "1000.00". Money never passes through a float.
pub fn decimal_2(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.unsigned_abs();
    format!("{sign}{}.{:02}", m / 100, m % 100)
}

/// Signs requests for one store.
#[derive(Debug, Clone)]
pub struct Signer {
    merchant_no: String,
    store_no: String,
    token: String,
}

impl Default for Signer {
    fn default() -> Self {
        Signer::new(MERCHANT_NO, STORE_NO, TOKEN)
    }
}

impl Signer {
    pub fn new(merchant_no: &str, store_no: &str, token: &str) -> Signer {
        Signer {
            merchant_no: merchant_no.to_owned(),
            store_no: store_no.to_owned(),
            token: token.to_owned(),
        }
    }

    /// A form body of `pairs` plus merchantNo, storeNo and a valid verifySign.
    pub fn body(&self, pairs: &[(&str, &str)]) -> Vec<u8> {
        self.body_signed_with(pairs, &self.token)
    }

    /// The same body with a verifySign made with the wrong token: a forged request.
    pub fn forged_body(&self, pairs: &[(&str, &str)]) -> Vec<u8> {
        self.body_signed_with(pairs, "not-the-store-token-0000000000000")
    }

    fn body_signed_with(&self, pairs: &[(&str, &str)], token: &str) -> Vec<u8> {
        let mut all: Vec<(&str, &str)> = Vec::with_capacity(pairs.len() + 3);
        all.push(("merchantNo", &self.merchant_no));
        all.push(("storeNo", &self.store_no));
        all.extend_from_slice(pairs);
        let params = Params::from_pairs(
            all.iter()
                .map(|(k, v)| ((*k).to_owned(), Value::Text((*v).to_owned())))
                .collect(),
        );
        // The pairs come from this crate's own code: a duplicate key is a bug here.
        let signature = match params {
            Ok(p) => sign::sign(&p, token),
            Err(e) => panic!("the benchmark built a request with a duplicate key: {e}"),
        };
        all.push(("verifySign", &signature));
        serde_urlencoded::to_string(&all)
            .unwrap_or_default()
            .into_bytes()
    }
}

/// SplitMix64: a tiny, fast, seedable generator. Workers need only cheap, reproducible choices
/// (which transaction, which amount), not cryptographic randomness.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is 0). The modulo bias is below 1e-9 for the ranges
    /// used here.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.next_u64() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_formatted_from_integer_cents() {
        assert_eq!(decimal_2(5), "0.05");
        assert_eq!(decimal_2(61), "0.61");
        assert_eq!(decimal_2(100_000), "1000.00");
        assert_eq!(decimal_2(2_500), "25.00");
        assert_eq!(decimal_2(-7), "-0.07");
        assert_eq!(decimal_2(0), "0.00");
    }

    #[test]
    fn seeded_numbers_are_unique_eighteen_digit_strings() {
        let a = seeded_transaction_no(0);
        let b = seeded_transaction_no(9_999_999);
        assert_eq!(a, "100000000000000000");
        assert_eq!(b.len(), 18);
        assert!(b.bytes().all(|c| c.is_ascii_digit()));
        assert!(b > a);
        assert_eq!(seeded_reference(42), "seed-42");
    }

    #[test]
    fn bodies_verify_with_the_gateways_own_code() {
        let s = Signer::default();
        let body = s.body(&[("transactionNo", "100000000000000007"), ("x", "a b&c")]);
        let p = Params::parse(None, &body).unwrap();
        assert_eq!(p.text("merchantNo"), Some(MERCHANT_NO));
        assert_eq!(p.text("x"), Some("a b&c"));
        let sig = p.text("verifySign").unwrap().to_owned();
        assert!(sign::verify(&p, TOKEN, &sig));
        let forged = Params::parse(None, &s.forged_body(&[("x", "1")])).unwrap();
        let sig = forged.text("verifySign").unwrap().to_owned();
        assert!(!sign::verify(&forged, TOKEN, &sig));
    }

    #[test]
    fn the_random_source_is_deterministic_and_bounded() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..100).map(|_| a.below(10)).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.below(10)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|&x| x < 10));
        assert!((0..10).all(|d| xs.contains(&d)), "every value shows up");
        assert_eq!(Rng::new(1).below(0), 0);
    }
}
