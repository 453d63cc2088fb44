//! `GET /console/transactions/{no}/live`: the transaction's timeline as it grows, as
//! server-sent events, so its page follows a terminal at work without being reloaded. Each
//! new event of the timeline is one `timeline` message (`{"at","kind","detail","state"}`);
//! the page's script (`console.js`) appends it. The stream looks at the store once a second
//! and ends after ten minutes (the browser reconnects if the page is still open).

use super::*;
use axum::response::sse::{Event, KeepAlive, Sse};
use std::time::Duration;

const LOOK_EVERY: Duration = Duration::from_secs(1);
const LASTS: Duration = Duration::from_secs(600);

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Shown {
    /// How many events of the timeline the page shows.
    shown: Option<usize>,
}

pub async fn timeline(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(transaction_no): Path<String>,
    Query(q): Query<Shown>,
) -> Response {
    let s = match require(&c, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let store = c.app.store().clone();
    let p = match store.payment_by_transaction_no(&transaction_no).await {
        Ok(Some(p)) if s.user.sees(p.merchant_id, &p.store_no) => p,
        Ok(_) => return failure(StatusCode::NOT_FOUND, Some(&s), "No such transaction."),
        Err(e) => return unavailable(e),
    };
    // Events already on the page are not sent again: the page says how many it shows (and a
    // reconnecting browser, the id of the last event it got).
    let shown = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .or(q.shown);
    let zone = match store.merchant_by_id(p.merchant_id).await {
        Ok(m) => m.map_or(c.zone, |m| m.zone),
        Err(e) => return unavailable(e),
    };
    let start = tokio::time::Instant::now();
    let state = (store, p.id, shown, start);
    let events = futures_util::stream::unfold(state, move |(store, id, shown, start)| async move {
        if start.elapsed() > LASTS {
            return None;
        }
        if shown.is_some() {
            tokio::time::sleep(LOOK_EVERY).await;
        }
        let (Ok(events), Ok(Some(payment))) =
            (store.events_of(id).await, store.payment_by_id(id).await)
        else {
            return None;
        };
        let from = shown.unwrap_or(events.len()).min(events.len());
        let batch: Vec<Result<Event, std::convert::Infallible>> = events[from..]
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let data = serde_json::json!({
                    "at": at(e.at, zone),
                    "kind": e.kind,
                    "detail": e.detail,
                    "state": payment.payment.state().as_str(),
                });
                Ok(Event::default()
                    .event("timeline")
                    .id((from + i + 1).to_string())
                    .data(data.to_string()))
            })
            .collect();
        let total = events.len();
        Some((
            futures_util::stream::iter(batch),
            (store, id, Some(total), start),
        ))
    });
    use futures_util::StreamExt;
    let mut r = Sse::new(events.flatten())
        .keep_alive(KeepAlive::default())
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
