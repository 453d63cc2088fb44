//! Addresses of the hosted payment pages: `{public_url}/pay/{token}`.
//!
//! A token is the transaction number and a MAC of it under a key derived from the master key,
//! `{transaction_no}-{32 hex}`: nobody without the key can make one for another transaction (128
//! bits to guess), and any node checks one without a lookup. A token opens only the payment it
//! names, so a page never shows another merchant's data.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// What the page key is derived with from the master key (changing it voids every link).
const LABEL: &[u8] = b"tillgate hosted payment page tokens v1";
/// Bytes of the MAC kept in a token.
const MAC_BYTES: usize = 16;

pub(crate) fn derive_key(master: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(master).expect("HMAC takes any key length");
    mac.update(LABEL);
    mac.finalize().into_bytes().into()
}

/// Makes and checks page tokens.
#[derive(Clone, Copy)]
pub struct PageTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens([REDACTED])")
    }
}

impl PageTokens {
    pub(crate) fn new(key: [u8; 32]) -> PageTokens {
        PageTokens { key }
    }

    fn mac(&self, transaction_no: &str) -> [u8; MAC_BYTES] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(transaction_no.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_BYTES];
        out.copy_from_slice(&full[..MAC_BYTES]);
        out
    }

    /// The token of a transaction's page.
    pub fn token(&self, transaction_no: &str) -> String {
        format!("{transaction_no}-{}", hex::encode(self.mac(transaction_no)))
    }

    /// The transaction number a token was made for, if it was made with this key.
    pub fn open<'t>(&self, token: &'t str) -> Option<&'t str> {
        let (transaction_no, mac_hex) = token.rsplit_once('-')?;
        if transaction_no.is_empty()
            || transaction_no.len() > 64
            || !transaction_no.bytes().all(|b| b.is_ascii_digit())
            || mac_hex.len() != MAC_BYTES * 2
        {
            return None;
        }
        let given = hex::decode(mac_hex).ok()?;
        let expected = self.mac(transaction_no);
        bool::from(given.as_slice().ct_eq(&expected)).then_some(transaction_no)
    }
}

/// The address of a transaction's hosted payment page under the gateway's public address.
pub fn page_url(public_url: &str, tokens: &PageTokens, transaction_no: &str) -> String {
    format!(
        "{}/pay/{}",
        public_url.trim_end_matches('/'),
        tokens.token(transaction_no)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(master: u8) -> PageTokens {
        PageTokens::new(derive_key(&[master; 32]))
    }

    #[test]
    fn a_token_opens_its_own_transaction_only() {
        let t = tokens(1);
        let token = t.token("217476000000000123");
        assert_eq!(t.open(&token), Some("217476000000000123"));
        // The same MAC on another number, another key, or a changed MAC: nothing.
        let mac = token.rsplit_once('-').unwrap().1;
        assert_eq!(t.open(&format!("217476000000000124-{mac}")), None);
        assert_eq!(tokens(2).open(&token), None);
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(t.open(std::str::from_utf8(&flipped).unwrap()), None);
    }

    #[test]
    fn odd_tokens_are_refused_without_panicking() {
        let t = tokens(1);
        for odd in [
            "",
            "-",
            "123",
            "123-",
            "-00000000000000000000000000000000",
            "12a-00000000000000000000000000000000",
            "123-zz000000000000000000000000000000",
            "123-0000",
            "１２３-00000000000000000000000000000000",
        ] {
            assert_eq!(t.open(odd), None, "{odd:?}");
        }
    }

    #[test]
    fn page_url_joins_without_a_double_slash() {
        let t = tokens(1);
        let url = page_url("http://127.0.0.1:8080/", &t, "42");
        assert!(url.starts_with("http://127.0.0.1:8080/pay/42-"), "{url}");
    }
}
