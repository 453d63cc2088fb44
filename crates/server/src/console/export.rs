//! `GET /console/transactions.csv`: every transaction the filters match, as CSV, streamed a
//! page of rows at a time (keyset pages of the same search), so memory stays flat however
//! many rows match. Text cells are quoted, and a cell a spreadsheet would read as a formula
//! is prefixed with `'`.

use super::*;
use axum::body::Body;

/// Rows fetched per page of the export.
const CHUNK: u32 = 500;

const HEADER: &str = "transactionNo,merchantNo,storeNo,reference,dialect,state,currency,amount,refunded,createdAt\r\n";

/// One CSV cell: quoted, quotes doubled, formulas defused.
fn cell(text: &str) -> String {
    let defused = match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}"),
        _ => text.to_owned(),
    };
    format!("\"{}\"", defused.replace('"', "\"\""))
}

fn line(p: &PaymentRecord) -> String {
    let amount = p.payment.amount();
    format!(
        "{},{},{},{},{},{},{},{},{},{}\r\n",
        cell(&p.transaction_no),
        cell(&p.merchant_no),
        cell(&p.store_no),
        cell(&p.reference),
        p.dialect.as_str(),
        p.payment.state().as_str(),
        amount.currency().code(),
        amount.to_decimal_string(),
        p.payment.refunded().to_decimal_string(),
        p.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

pub async fn csv(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Response {
    let s = match require(&c, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let store = c.app.store().clone();
    let first = match filter
        .search(
            store.as_ref(),
            scope(&s.user),
            &s.user.stores,
            c.zone,
            CHUNK,
        )
        .await
    {
        Ok((search, _)) => search,
        Err(search::FilterError::Invalid(message)) => {
            return failure(StatusCode::BAD_REQUEST, Some(&s), &message)
        }
        Err(search::FilterError::Store(e)) => return unavailable(e),
    };
    let now = c.app.clock().now();
    let entry = NewAudit {
        at: now,
        user_id: Some(s.user.id),
        login: s.user.login.clone(),
        action: "export".into(),
        transaction_no: None,
        detail: format!("transactions.csv?{}", filter.query(None)),
        address: None,
    };
    if let Err(e) = store.audit(entry).await {
        return unavailable(e);
    }
    // The stream's state: the search of the next page, or None once the last was sent.
    let pages = futures_util::stream::unfold(Some((first, true)), move |next| {
        let store = store.clone();
        async move {
            let (mut search, header) = next?;
            let rows = match store.search_payments(&search).await {
                Ok(rows) => rows,
                Err(e) => {
                    // The answer has started: end it short; the log says why.
                    tracing::warn!(error = %e, "console: export cut short");
                    return Some((Err(std::io::Error::other(e.to_string())), None));
                }
            };
            let mut chunk = String::with_capacity(rows.len() * 128 + HEADER.len());
            if header {
                chunk.push_str(HEADER);
            }
            for p in &rows {
                chunk.push_str(&line(p));
            }
            let more = rows.len() == CHUNK as usize;
            let following = match (more, rows.last()) {
                (true, Some(last)) => {
                    search.before_id = Some(last.id);
                    Some((search, false))
                }
                _ => None,
            };
            Some((Ok::<_, std::io::Error>(chunk), following))
        }
    });
    let mut r = Response::new(Body::from_stream(pages));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"transactions.csv\""),
    );
    guard(&mut r);
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        assert_eq!(super::cell("a,b"), "\"a,b\"");
        assert_eq!(super::cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(super::cell("=HYPERLINK(1)"), "\"'=HYPERLINK(1)\"");
        assert_eq!(super::cell("-1"), "\"'-1\"");
    }
}
