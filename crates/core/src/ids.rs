//! Gateway-issued numbers: transaction, refund and cancel numbers.
//!
//! They are decimal digits, roughly time ordered (milliseconds since 2020 followed by six random
//! digits) so that new rows land at the end of their index, and unique enough that a collision
//! is a retry, not an error: the store's unique constraints catch the rare clash.

use chrono::{DateTime, Utc};
use rand::Rng;

/// Milliseconds at 2020-01-01T00:00:00Z.
const EPOCH_MS: i64 = 1_577_836_800_000;

/// A new 18-digit gateway number for `now`.
pub fn new_number(now: DateTime<Utc>) -> String {
    let ms = (now.timestamp_millis() - EPOCH_MS).max(0);
    let random: u32 = rand::thread_rng().gen_range(0..1_000_000);
    format!("{ms:012}{random:06}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_digits_and_grow_with_time() {
        let t = DateTime::from_timestamp(1_795_000_000, 0).unwrap();
        let a = new_number(t);
        let b = new_number(t + chrono::Duration::milliseconds(1));
        assert_eq!(a.len(), 18);
        assert!(a.bytes().all(|c| c.is_ascii_digit()));
        assert!(b > a);
    }
}
