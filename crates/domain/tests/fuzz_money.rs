//! Fuzzing `Money::parse`, the one reader of decimal amounts from outside (issue 15, part 4):
//! any text, and decimal-looking text around every limit, in every currency. It never panics,
//! answers a named error or an amount, and an amount it answers reads back to itself.

use proptest::prelude::*;
use tillgate_domain::{AmountError, Currency, Money};
use tillgate_testkit::fuzz;

fn currency() -> impl Strategy<Value = Currency> {
    let all: Vec<Currency> = Currency::all().collect();
    (0..all.len()).prop_map(move |i| all[i])
}

/// Decimal-looking text: signs, digits around the limits, points, exponents, blanks.
fn decimal_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[-+]{0,3}[0-9]{0,24}(\\.[0-9]{0,8})?",
        "[-+ ]{0,2}[0-9.,eE_ ]{0,24}",
        "[0-9]{15,20}(\\.0{0,5})?",
        ".{0,32}",
    ]
}

fn check(text: &str, currency: Currency) -> Result<(), TestCaseError> {
    match Money::parse(text, currency) {
        Ok(m) => {
            prop_assert!(m.minor() >= 0);
            prop_assert!(m.minor() <= 1_000_000_000_000_000);
            let again = Money::parse(&m.to_decimal_string(), currency);
            prop_assert_eq!(again, Ok(m), "{:?} does not read back", text);
            prop_assert!(text.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
        }
        Err(e) => {
            let named = matches!(
                e,
                AmountError::Empty
                    | AmountError::NotADecimal
                    | AmountError::Negative
                    | AmountError::TooManyDecimals { .. }
                    | AmountError::Overflow
            );
            prop_assert!(named, "{:?}: {:?}", text, e);
        }
    }
    let _ = Money::parse_positive(text, currency);
    Ok(())
}

#[test]
fn money_parse_never_panics_and_what_it_reads_reads_back() {
    fuzz::run(
        "Money::parse",
        (decimal_text(), currency()),
        |(text, currency)| check(&text, currency),
    );
}

#[test]
fn money_parse_of_mutated_real_amounts_never_panics() {
    let amounts: &[&[u8]] = &[
        b"13",
        b"0.01",
        b"13.00",
        b"1000000.99",
        b"100",
        b"0",
        b"9.9",
    ];
    let strategy = (0..amounts.len(), fuzz::mutations(), currency());
    fuzz::run("Money::parse mutated", strategy, |(i, m, currency)| {
        let text = String::from_utf8_lossy(&fuzz::apply(amounts[i], &m)).into_owned();
        check(&text, currency)
    });
}

/// Found by the fuzzing above: a minus sign was stripped by recursion, so a body of tens of
/// thousands of minus signs overflowed the stack of the thread reading it (an abort, not even
/// a panic).
#[test]
fn an_amount_of_many_minus_signs_is_refused_without_recursion() {
    let usd = Currency::from_code("USD").unwrap();
    let text = format!("{}1", "-".repeat(60_000));
    let parsed = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || Money::parse(&text, usd))
        .unwrap()
        .join()
        .expect("parsing must not overflow the stack");
    assert_eq!(parsed, Err(AmountError::NotADecimal));
    assert_eq!(Money::parse("-1", usd), Err(AmountError::Negative));
    assert_eq!(Money::parse("--1", usd), Err(AmountError::NotADecimal));
    assert_eq!(Money::parse("-0", usd), Err(AmountError::NotADecimal));
    assert_eq!(Money::parse("-", usd), Err(AmountError::NotADecimal));
}
