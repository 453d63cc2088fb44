//! `/console/dashboard`: a day of one merchant (or all) at a glance — volume and count per hour
//! drawn as SVG on the server, the success rate, refunds, and what waits: unresolved
//! operations and the notification backlog.

use super::*;
use chrono::NaiveDate;
use std::collections::BTreeMap;

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DayQuery {
    merchant: Option<String>,
    day: Option<String>,
}

/// One bar chart of 24 hourly values, labelled every three hours.
fn bars(title: &str, values: &[i64; 24], label: impl Fn(i64) -> String, test: &str) -> Markup {
    const W: i64 = 720;
    const H: i64 = 160;
    const PAD: i64 = 28;
    let top = values.iter().copied().max().unwrap_or(0).max(1);
    let step = (W - PAD) / 24;
    html! {
        figure.chart data-test=(test) {
            figcaption { (title) " · peak " (label(top)) }
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (W) " " (H + 20) } role="img" aria-label=(title) {
                line x1=(PAD) y1=(H) x2=(W) y2=(H) stroke="#c3c9d4" {}
                @for (hour, v) in values.iter().enumerate() {
                    @let height = v * (H - 10) / top;
                    @let x = PAD + hour as i64 * step;
                    rect x=(x + 2) y=(H - height) width=(step - 4) height=(height) fill="#0b6bcb" {
                        title { (format!("{hour:02}:00 · {}", label(*v))) }
                    }
                    @if hour % 3 == 0 {
                        text x=(x + step / 2) y=(H + 15) font-size="11" text-anchor="middle" fill="#5b6577" { (format!("{hour:02}")) }
                    }
                }
            }
        }
    }
}

fn paid_like(state: tillgate_domain::PaymentState) -> bool {
    use tillgate_domain::PaymentState::*;
    matches!(state, Paid | PartiallyRefunded | Refunded | Cancelled)
}

pub async fn page(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<DayQuery>,
) -> Response {
    let s = match require(&c, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !s.user.stores.is_empty() {
        return failure(
            StatusCode::NOT_FOUND,
            Some(&s),
            "The dashboard covers a whole merchant; your transactions are on the Transactions page.",
        );
    }
    let store = c.app.store().as_ref();
    let now = c.app.clock().now();
    // Whose day, in which zone.
    let mut merchant_id = scope(&s.user);
    let mut zone = c.zone;
    let mut error = None;
    let chosen = match merchant_id {
        Some(id) => store.merchant_by_id(id).await,
        None => match q
            .merchant
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
        {
            Some(no) => store.merchant(no).await,
            None => Ok(None),
        },
    };
    match chosen {
        Ok(Some(m)) => {
            merchant_id = Some(m.id);
            zone = m.zone;
        }
        Ok(None) if q.merchant.as_deref().is_some_and(|m| !m.trim().is_empty()) => {
            error = Some("No such merchant.".to_owned());
            merchant_id = Some(-1);
        }
        Ok(None) => {}
        Err(e) => return unavailable(e),
    }
    let day = match q.day.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
        None => zone.day_of(now),
        Some(text) => match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            Ok(d) => d,
            Err(_) => {
                error = Some("day must be a day as YYYY-MM-DD".into());
                zone.day_of(now)
            }
        },
    };
    let from = zone.day_start(day);
    let to = day.succ_opt().map_or(from, |d| zone.day_start(d));
    let loaded = async {
        let totals = store.hourly_totals(merchant_id, from, to).await?;
        let backlog = store.backlog(now).await?;
        Ok::<_, tillgate_core::StoreError>((totals, backlog))
    }
    .await;
    let (totals, backlog) = match loaded {
        Ok(v) => v,
        Err(e) => return unavailable(e),
    };
    // The currency with the most paid payments is charted; every currency is in the table.
    let mut by_currency: BTreeMap<&str, (i64, i64, i64, i64)> = BTreeMap::new();
    for t in &totals {
        let e = by_currency.entry(t.currency.as_str()).or_default();
        if paid_like(t.state) {
            e.0 += t.count;
            e.1 += t.amount_minor;
            e.2 += t.refunded_minor;
        } else if t.state == tillgate_domain::PaymentState::Failed {
            e.3 += t.count;
        }
    }
    let charted = by_currency
        .iter()
        .max_by_key(|(_, v)| v.0)
        .map(|(c, _)| (*c).to_owned());
    let mut volume = [0i64; 24];
    let mut count = [0i64; 24];
    for t in totals
        .iter()
        .filter(|t| paid_like(t.state) && Some(&t.currency) == charted.as_ref())
    {
        // A day with a clock change has 23 or 25 hours; the 25th joins the last bar.
        let h = t.hour.clamp(0, 23) as usize;
        volume[h] += t.amount_minor;
        count[h] += t.count;
    }
    let paid: i64 = by_currency.values().map(|v| v.0).sum();
    let failed: i64 = by_currency.values().map(|v| v.3).sum();
    let rate = if paid + failed == 0 {
        "—".to_owned()
    } else {
        format!("{}%", paid * 100 / (paid + failed))
    };
    let charted_code = charted.clone().unwrap_or_else(|| "USD".into());
    let money_label = {
        let code = charted_code.clone();
        move |minor: i64| format!("{} {code}", actions::minor_text(minor, &code))
    };
    let body = html! {
        h1 { "Dashboard" }
        form.filters method="get" action="/console/dashboard" {
            @if !s.user.role.is_merchants() {
                label { "Merchant (empty: all)" input name="merchant" value=[q.merchant.as_deref()] size="12"; }
            }
            label { "Day (" (zone.name()) ")" input name="day" type="date" value=(day.to_string()); }
            button.primary type="submit" { "Show" }
        }
        @if let Some(e) = &error { p.error data-test="error" { (e) } }
        div.tiles {
            div.card { div.muted { "Paid payments" } div.big data-test="paid-count" { (paid) } }
            div.card { div.muted { "Success rate" } div.big data-test="success-rate" { (rate) } }
            div.card { div.muted { "Unresolved operations" } div.big data-test="unresolved" { a href="/console/unresolved" { (backlog.unresolved) } } }
            div.card { div.muted { "Notifications waiting" } div.big data-test="backlog" {
                a href="/console/notifications?status=pending" { (backlog.notifications_pending) } }
                div.muted { (backlog.notifications_due) " due now" } }
        }
        (bars(&format!("Volume per hour ({charted_code})"), &volume, money_label, "volume"))
        (bars("Paid payments per hour", &count, |n| n.to_string(), "count"))
        h2 { "By currency" }
        table data-test="currencies" {
            thead { tr { th { "Currency" } th { "Paid" } th { "Volume" } th { "Refunded" } th { "Declined" } } }
            tbody {
                @for (code, (n, amount, refunded, declined)) in &by_currency {
                    tr { td { (code) } td.num { (n) } td.num { (actions::minor_text(*amount, code)) }
                         td.num { (actions::minor_text(*refunded, code)) } td.num { (declined) } }
                }
                @if by_currency.is_empty() { tr { td colspan="5" .muted { "No payment that day." } } }
            }
        }
    };
    respond(StatusCode::OK, layout("Dashboard", Some(&s), body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tillgate_core::console::HourTotal;

    #[test]
    fn bars_scale_to_the_peak_and_label_every_third_hour() {
        let mut v = [0i64; 24];
        v[9] = 50;
        v[10] = 100;
        let svg = bars("t", &v, |n| n.to_string(), "x").into_string();
        assert!(
            svg.contains("height=\"150\""),
            "the peak fills the chart: {svg}"
        );
        assert!(
            svg.contains("height=\"75\""),
            "half the peak, half the height: {svg}"
        );
        assert_eq!(svg.matches("<text").count(), 8);
    }

    #[test]
    fn unused_hours_total_nothing() {
        let t = HourTotal {
            hour: 3,
            state: tillgate_domain::PaymentState::Paid,
            currency: "USD".into(),
            count: 2,
            amount_minor: 500,
            refunded_minor: 0,
        };
        assert!(paid_like(t.state));
    }
}
