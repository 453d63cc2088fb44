//! Money as integer minor units of an ISO 4217 currency.
//!
//! Decimal strings are parsed exactly once, at the boundary, into [`Money`]; past that point an
//! amount is always a valid, non-negative number of minor units. There is no float anywhere.

use std::fmt;

/// An ISO 4217 currency that tillgate accepts, with its minor-unit exponent.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

/// The currencies tillgate knows, with their ISO 4217 exponents.
const CURRENCIES: &[(&str, u8)] = &[
    ("AUD", 2),
    ("BHD", 3),
    ("CAD", 2),
    ("CHF", 2),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("INR", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MOP", 2),
    ("MYR", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PHP", 2),
    ("PLN", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TWD", 2),
    ("USD", 2),
    ("VND", 0),
];

impl Currency {
    /// Looks up an upper-case ISO 4217 code. Dialects that accept lower case fold it first.
    pub fn from_code(code: &str) -> Option<Currency> {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(c, exponent)| {
                let b = c.as_bytes();
                Currency {
                    code: [b[0], b[1], b[2]],
                    exponent: *exponent,
                }
            })
    }

    /// The three-letter upper-case code.
    pub fn code(&self) -> &str {
        // The table holds ASCII only.
        std::str::from_utf8(&self.code).unwrap_or("XXX")
    }

    /// The number of decimal places of the minor unit (2 for USD, 0 for JPY, 3 for KWD).
    pub fn exponent(&self) -> u8 {
        self.exponent
    }

    /// Every currency tillgate knows.
    pub fn all() -> impl Iterator<Item = Currency> {
        CURRENCIES
            .iter()
            .filter_map(|(c, _)| Currency::from_code(c))
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Why a decimal string is not an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount is empty")]
    Empty,
    #[error("amount is not a decimal number")]
    NotADecimal,
    #[error("amount is negative")]
    Negative,
    #[error("amount must be greater than zero")]
    Zero,
    #[error("amount has more than {max_decimals} decimals for its currency")]
    TooManyDecimals { max_decimals: u8 },
    #[error("amount is too large")]
    Overflow,
}

/// The largest amount tillgate accepts, in minor units. It leaves head room below `i64::MAX`
/// so that sums of a payment's refunds can never overflow.
pub const MAX_MINOR_UNITS: i64 = 1_000_000_000_000_000;

/// A non-negative amount of a currency, in integer minor units.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

impl Money {
    /// Builds an amount from minor units; `None` if negative or above [`MAX_MINOR_UNITS`].
    pub fn from_minor(minor: i64, currency: Currency) -> Option<Money> {
        (0..=MAX_MINOR_UNITS)
            .contains(&minor)
            .then_some(Money { minor, currency })
    }

    /// Zero of a currency.
    pub fn zero(currency: Currency) -> Money {
        Money { minor: 0, currency }
    }

    /// Parses a decimal string in major units ("13", "0.01", "13.00") exactly.
    ///
    /// Rejects signs, exponents, separators, white space, more decimals than the currency has,
    /// and amounts above [`MAX_MINOR_UNITS`]. Zero is allowed; see [`Money::parse_positive`].
    pub fn parse(text: &str, currency: Currency) -> Result<Money, AmountError> {
        if text.is_empty() {
            return Err(AmountError::Empty);
        }
        if let Some(rest) = text.strip_prefix('-') {
            // Report a negative number as such, and garbage after a minus sign as garbage. A
            // second sign is garbage at once: the recursion below goes one level deep only, so
            // a long run of signs cannot overflow the stack.
            if rest.starts_with('-') {
                return Err(AmountError::NotADecimal);
            }
            return match Money::parse(rest, currency) {
                Ok(m) if m.minor == 0 => Err(AmountError::NotADecimal),
                Ok(_) | Err(AmountError::TooManyDecimals { .. }) | Err(AmountError::Overflow) => {
                    Err(AmountError::Negative)
                }
                Err(_) => Err(AmountError::NotADecimal),
            };
        }
        let (whole, fraction) = match text.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (text, None),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) {
            return Err(AmountError::NotADecimal);
        }
        let fraction = fraction.unwrap_or("");
        if !all_digits(fraction) || (whole.is_empty() && fraction.is_empty()) {
            return Err(AmountError::NotADecimal);
        }
        if text.ends_with('.') {
            return Err(AmountError::NotADecimal);
        }
        let exponent = currency.exponent();
        // Trailing zeros beyond the exponent are harmless ("13.000" for USD is 13.00).
        let significant = fraction.trim_end_matches('0');
        if significant.len() > usize::from(exponent) {
            return Err(AmountError::TooManyDecimals {
                max_decimals: exponent,
            });
        }
        let mut minor: i64 = 0;
        for b in whole.bytes() {
            minor = minor
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(b - b'0')))
                .ok_or(AmountError::Overflow)?;
        }
        let mut digits = significant.bytes();
        for _ in 0..exponent {
            let d = digits.next().map_or(0, |b| i64::from(b - b'0'));
            minor = minor
                .checked_mul(10)
                .and_then(|m| m.checked_add(d))
                .ok_or(AmountError::Overflow)?;
        }
        Money::from_minor(minor, currency).ok_or(AmountError::Overflow)
    }

    /// Like [`Money::parse`], but zero is an error too.
    pub fn parse_positive(text: &str, currency: Currency) -> Result<Money, AmountError> {
        let m = Money::parse(text, currency)?;
        if m.is_zero() {
            return Err(AmountError::Zero);
        }
        Ok(m)
    }

    /// The amount in minor units (cents for USD).
    pub fn minor(&self) -> i64 {
        self.minor
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn is_zero(&self) -> bool {
        self.minor == 0
    }

    /// `self + other`, or `None` on a currency mismatch or above the maximum.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        Money::from_minor(self.minor.checked_add(other.minor)?, self.currency)
    }

    /// `self - other`, or `None` on a currency mismatch or when the result would be negative.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        Money::from_minor(self.minor.checked_sub(other.minor)?, self.currency)
    }

    /// The amount in major units with exactly the currency's decimals ("13.00", "500", "1.250").
    pub fn to_decimal_string(&self) -> String {
        let exponent = u32::from(self.currency.exponent());
        if exponent == 0 {
            return self.minor.to_string();
        }
        let scale = 10_i64.pow(exponent);
        format!(
            "{}.{:0width$}",
            self.minor / scale,
            self.minor % scale,
            width = exponent as usize
        )
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd() -> Currency {
        Currency::from_code("USD").unwrap()
    }

    #[test]
    fn parses_the_decimal_forms_the_sdks_send() {
        assert_eq!(Money::parse("13", usd()).unwrap().minor(), 1300);
        assert_eq!(Money::parse("0.01", usd()).unwrap().minor(), 1);
        assert_eq!(Money::parse("13.5", usd()).unwrap().minor(), 1350);
        assert_eq!(Money::parse(".5", usd()).unwrap().minor(), 50);
        assert_eq!(Money::parse("13.000", usd()).unwrap().minor(), 1300);
        let jpy = Currency::from_code("JPY").unwrap();
        assert_eq!(Money::parse("500", jpy).unwrap().minor(), 500);
        let kwd = Currency::from_code("KWD").unwrap();
        assert_eq!(Money::parse("1.25", kwd).unwrap().minor(), 1250);
    }

    #[test]
    fn rejects_everything_that_is_not_an_exact_amount() {
        let jpy = Currency::from_code("JPY").unwrap();
        assert_eq!(Money::parse("", usd()), Err(AmountError::Empty));
        assert_eq!(Money::parse("-1", usd()), Err(AmountError::Negative));
        assert_eq!(Money::parse("-0.001", usd()), Err(AmountError::Negative));
        assert_eq!(
            Money::parse("0.001", usd()),
            Err(AmountError::TooManyDecimals { max_decimals: 2 })
        );
        assert_eq!(
            Money::parse("1.5", jpy),
            Err(AmountError::TooManyDecimals { max_decimals: 0 })
        );
        assert_eq!(Money::parse_positive("0.00", usd()), Err(AmountError::Zero));
        assert_eq!(
            Money::parse("99999999999999999999", usd()),
            Err(AmountError::Overflow)
        );
        assert_eq!(
            Money::parse("10000000000000.01", usd()),
            Err(AmountError::Overflow)
        );
        for garbage in [
            "abc", "1e3", "1,000", " 1", "1 ", "+1", "1.", ".", "1.2.3", "0x10", "--1", "-", "１",
        ] {
            assert_eq!(
                Money::parse(garbage, usd()),
                Err(AmountError::NotADecimal),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn renders_with_the_currency_exponent() {
        assert_eq!(
            Money::parse("13", usd()).unwrap().to_decimal_string(),
            "13.00"
        );
        assert_eq!(
            Money::parse("0.01", usd()).unwrap().to_decimal_string(),
            "0.01"
        );
        let jpy = Currency::from_code("JPY").unwrap();
        assert_eq!(Money::parse("500", jpy).unwrap().to_decimal_string(), "500");
    }

    #[test]
    fn arithmetic_refuses_mixed_currencies_and_negative_results() {
        let eur = Currency::from_code("EUR").unwrap();
        let a = Money::from_minor(100, usd()).unwrap();
        assert!(a.checked_add(Money::from_minor(1, eur).unwrap()).is_none());
        assert!(a
            .checked_sub(Money::from_minor(101, usd()).unwrap())
            .is_none());
        assert_eq!(
            a.checked_sub(Money::from_minor(40, usd()).unwrap())
                .unwrap()
                .minor(),
            60
        );
    }

    proptest! {
        #[test]
        fn rendering_then_parsing_gives_the_same_amount(minor in 0..=MAX_MINOR_UNITS, idx in 0usize..31) {
            let currency = Currency::all().nth(idx % Currency::all().count()).unwrap();
            let m = Money::from_minor(minor, currency).unwrap();
            prop_assert_eq!(Money::parse(&m.to_decimal_string(), currency), Ok(m));
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,24}") {
            let _ = Money::parse(&text, usd());
        }
    }
}
