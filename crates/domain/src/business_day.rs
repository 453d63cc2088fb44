//! "Same day" as merchants mean it: the same calendar day in the merchant's time zone,
//! optionally extended past midnight by a cut-off (YabandPay allows until 00:30 the next day, CET).

use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;

/// A merchant's configured time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MerchantZone(Tz);

impl MerchantZone {
    /// Parses an IANA zone name such as "Europe/Amsterdam" or "UTC".
    pub fn parse(name: &str) -> Option<MerchantZone> {
        name.parse::<Tz>().ok().map(MerchantZone)
    }

    pub fn utc() -> MerchantZone {
        MerchantZone(Tz::UTC)
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// The wall-clock time of an instant in this zone.
    pub fn local_time(&self, at: DateTime<Utc>) -> chrono::NaiveDateTime {
        self.0.from_utc_datetime(&at.naive_utc()).naive_local()
    }

    /// The calendar day of an instant in this zone.
    pub fn day_of(&self, at: DateTime<Utc>) -> chrono::NaiveDate {
        self.0.from_utc_datetime(&at.naive_utc()).date_naive()
    }

    /// The first instant of a calendar day in this zone: its midnight, the earlier one where a
    /// clock change repeats it, the first instant after the gap where one skips it.
    pub fn day_start(&self, day: chrono::NaiveDate) -> DateTime<Utc> {
        self.start_of(day)
    }

    /// The instants `[from, to)` of calendar day `date` in this zone: 23 or 25 hours on the
    /// days summer time starts or ends.
    pub fn day_bounds(&self, date: chrono::NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
        let next = date.succ_opt().unwrap_or(date);
        (self.start_of(date), self.start_of(next))
    }

    /// The first instant of `date` in this zone (a zone that skips midnight starts its day at
    /// the first minute that exists).
    fn start_of(&self, date: chrono::NaiveDate) -> DateTime<Utc> {
        let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
        (0..=180)
            .find_map(|m| {
                self.0
                    .from_local_datetime(&(midnight + Duration::minutes(m)))
                    .earliest()
            })
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| midnight.and_utc())
    }
}

/// When a paid transaction may still be reversed in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusinessDayRule {
    zone: MerchantZone,
    /// How long after midnight the previous day still counts (zero for a strict calendar day).
    grace_after_midnight: Duration,
}

impl BusinessDayRule {
    /// The same calendar day in `zone`, nothing after midnight.
    pub fn calendar_day(zone: MerchantZone) -> BusinessDayRule {
        BusinessDayRule {
            zone,
            grace_after_midnight: Duration::zero(),
        }
    }

    /// The same calendar day in `zone`, or the next day until `grace` after midnight.
    pub fn with_grace(zone: MerchantZone, grace: Duration) -> BusinessDayRule {
        BusinessDayRule {
            zone,
            grace_after_midnight: grace,
        }
    }

    /// True when `now` is on the business day of `paid_at`.
    pub fn same_day(&self, paid_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        if now < paid_at {
            // A clock that stepped back is still the same day; never reject on skew alone.
            return true;
        }
        let paid_day = self.zone.day_of(paid_at);
        self.zone.day_of(now) == paid_day
            || self.zone.day_of(now - self.grace_after_midnight) == paid_day
    }
}

#[cfg(test)]
mod day_start_tests {
    use super::*;

    #[test]
    fn a_day_starts_at_local_midnight() {
        let ams = MerchantZone::parse("Europe/Amsterdam").unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2026, 7, 1).unwrap();
        assert_eq!(ams.day_start(day).to_rfc3339(), "2026-06-30T22:00:00+00:00");
        // Santiago skips midnight when its clocks go forward (2026-09-06 00:00 → 01:00).
        let scl = MerchantZone::parse("America/Santiago").unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2026, 9, 6).unwrap();
        assert_eq!(scl.day_of(scl.day_start(day)), day);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn same_day_follows_the_merchant_zone_not_utc() {
        let rule = BusinessDayRule::calendar_day(MerchantZone::parse("Asia/Shanghai").unwrap());
        // 23:00 UTC is 07:00 the next morning in Shanghai.
        assert!(!rule.same_day(at("2026-11-21T15:00:00Z"), at("2026-11-21T16:30:00Z")));
        assert!(rule.same_day(at("2026-11-21T16:30:00Z"), at("2026-11-22T15:59:59Z")));
    }

    #[test]
    fn grace_extends_the_day_past_midnight() {
        let cet = MerchantZone::parse("Europe/Amsterdam").unwrap();
        let rule = BusinessDayRule::with_grace(cet, Duration::minutes(30));
        // Paid 22:00 CET on the 21st; 00:29 CET on the 22nd is 23:29 UTC on the 21st.
        let paid = at("2026-11-21T21:00:00Z");
        assert!(rule.same_day(paid, at("2026-11-21T23:29:00Z")));
        assert!(!rule.same_day(paid, at("2026-11-21T23:31:00Z")));
        assert!(!BusinessDayRule::calendar_day(cet).same_day(paid, at("2026-11-21T23:29:00Z")));
    }
}
