//! What a request concerned, noted while it is handled, for its log line and its metrics: the
//! dialect and the code it was answered with, the endpoint where a path does not say it, the
//! merchant, and the transaction.
//!
//! The server runs each request inside [`noted`]; the parts that learn something note it
//! where they learn it, whatever their depth: a dialect's envelope its code as it renders the
//! answer, the credentials loader the merchant, the lifecycle the transaction it found or
//! added. Outside a request (the janitor, the dispatcher, operator commands) noting does
//! nothing. Nothing secret is ever noted: numbers and codes only.

use crate::model::Dialect;
use std::cell::RefCell;
use std::future::Future;

tokio::task_local! {
    static NOTE: RefCell<Note>;
}

/// What one request concerned, as far as it was learnt.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Note {
    /// The dialect whose envelope answered; `None` for the operator surfaces.
    pub dialect: Option<Dialect>,
    /// The code of the dialect's answer (Pockyt `ret_code`, unified `code`, YabandPay `code`).
    pub code: Option<&'static str>,
    /// The endpoint, where the path alone does not say it (YabandPay's method).
    pub endpoint: Option<&'static str>,
    /// The merchant whose credentials the request named.
    pub merchant_no: Option<String>,
    /// The transaction it concerned.
    pub transaction_no: Option<String>,
    /// Whether it was answered with a remembered answer (an exact replay).
    pub replayed: bool,
}

/// Runs `request` with a fresh note; answers its output and what was noted.
pub async fn noted<F: Future>(request: F) -> (F::Output, Note) {
    NOTE.scope(RefCell::new(Note::default()), async {
        let output = request.await;
        let note = NOTE.with(|n| n.take());
        (output, note)
    })
    .await
}

fn with(change: impl FnOnce(&mut Note)) {
    let _ = NOTE.try_with(|n| change(&mut n.borrow_mut()));
}

/// The answer: `dialect`'s envelope with `code`.
pub fn answer(dialect: Dialect, code: &'static str) {
    with(|n| {
        n.dialect = Some(dialect);
        n.code = Some(code);
    });
}

/// The endpoint, when the path does not name it.
pub fn endpoint(endpoint: &'static str) {
    with(|n| n.endpoint = Some(endpoint));
}

/// The merchant whose credentials the request named.
pub fn merchant(merchant_no: &str) {
    with(|n| {
        if n.merchant_no.as_deref() != Some(merchant_no) {
            n.merchant_no = Some(merchant_no.to_owned());
        }
    });
}

/// The transaction the request concerned.
pub fn transaction(transaction_no: &str) {
    with(|n| {
        if n.transaction_no.as_deref() != Some(transaction_no) {
            n.transaction_no = Some(transaction_no.to_owned());
        }
    });
}

/// The request got a remembered answer instead of acting.
pub fn replayed() {
    with(|n| n.replayed = true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_is_noted_inside_a_request_comes_back_with_it_and_nothing_leaks_outside() {
        merchant("outside");
        let ((), note) = noted(async {
            merchant("200043");
            tokio::task::yield_now().await;
            transaction("217000000000000001");
            answer(Dialect::Pockyt, "000100");
        })
        .await;
        assert_eq!(
            note,
            Note {
                dialect: Some(Dialect::Pockyt),
                code: Some("000100"),
                merchant_no: Some("200043".into()),
                transaction_no: Some("217000000000000001".into()),
                ..Note::default()
            }
        );
        let ((), empty) = noted(async {}).await;
        assert_eq!(empty, Note::default(), "each request starts afresh");
    }
}
