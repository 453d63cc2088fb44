//! Notifications: the port each dialect implements to render and sign a frozen
//! [`Snapshot`], the schedule of attempts, and which URLs merchants may give.

mod url;

pub use crate::snapshot::Snapshot;
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
pub use url::UrlPolicy;

/// A notification rendered in a dialect: the body to POST and how to read the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub ack: Ack,
}

/// What answer body acknowledges a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The expected body, e.g. "success".
    pub expected: &'static str,
    /// Compare without regard to ASCII case.
    pub ignore_case: bool,
    /// Allow white space around the body.
    pub trim: bool,
}

impl Ack {
    /// True when `body` (an HTTP 2xx answer's body) acknowledges the notification.
    pub fn accepts(&self, body: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(body) else {
            return false;
        };
        let text = if self.trim { text.trim() } else { text };
        if self.ignore_case {
            text.eq_ignore_ascii_case(self.expected)
        } else {
            text == self.expected
        }
    }
}

/// Why a notification could not be rendered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderError {
    /// The snapshot lacks what the dialect needs (a bug, or a credential removed since).
    #[error("cannot render the notification: {0}")]
    Invalid(String),
    /// Reading credentials failed; try again later.
    #[error("credentials unavailable: {0}")]
    Unavailable(String),
}

/// A dialect's notification format: renders and signs a frozen snapshot.
#[async_trait]
pub trait Renderer: Send + Sync + 'static {
    async fn render(&self, snapshot: &Snapshot) -> Result<Rendered, RenderError>;
}

/// Delays before each attempt, each counted from the previous attempt: the first number is the
/// delay of the first attempt after the change (usually 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(Vec<u32>);

/// The schedule of seed 004: attempts at once, then 30, 60, 90, 120 and 150 seconds apart.
pub const DEFAULT_SCHEDULE: &str = "0,30,60,90,120,150";

/// The most attempts a schedule may have (a bound, DESIGN.md rule 9).
pub const MAX_ATTEMPTS: usize = 32;

impl Schedule {
    /// Parses "0,30,60": whole seconds, at least one, at most [`MAX_ATTEMPTS`], each at most a
    /// day.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let delays: Result<Vec<u32>, _> =
            text.split(',').map(|d| d.trim().parse::<u32>()).collect();
        let delays = delays.map_err(|_| {
            format!("notification schedule {text:?} must be whole seconds separated by commas")
        })?;
        if delays.is_empty() || delays.len() > MAX_ATTEMPTS {
            return Err(format!(
                "notification schedule must have 1 to {MAX_ATTEMPTS} attempts"
            ));
        }
        if delays.iter().any(|d| *d > 86_400) {
            return Err("a notification delay may be at most 86400 seconds".into());
        }
        Ok(Schedule(delays))
    }

    pub fn attempts(&self) -> usize {
        self.0.len()
    }

    /// The delay before the first attempt.
    pub fn first_delay(&self) -> Duration {
        Duration::seconds(i64::from(self.0[0]))
    }

    /// When attempt `made + 1` is due after attempt `made` at `at`; `None` when `made` was the
    /// last one.
    pub fn next_after(&self, made: usize, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0
            .get(made)
            .map(|d| at + Duration::seconds(i64::from(*d)))
    }

    pub fn to_text(&self) -> String {
        self.0
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule::parse(DEFAULT_SCHEDULE).unwrap_or(Schedule(vec![0]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_is_seed_004s() {
        let s = Schedule::default();
        assert_eq!(s.attempts(), 6);
        let t0 = DateTime::from_timestamp(1_795_000_000, 0).unwrap();
        assert_eq!(s.first_delay(), Duration::zero());
        assert_eq!(s.next_after(1, t0), Some(t0 + Duration::seconds(30)));
        assert_eq!(s.next_after(5, t0), Some(t0 + Duration::seconds(150)));
        assert_eq!(s.next_after(6, t0), None);
    }

    #[test]
    fn acks_follow_each_dialects_rule() {
        let strict = Ack {
            expected: "success",
            ignore_case: true,
            trim: false,
        };
        assert!(strict.accepts(b"SUCCESS"));
        assert!(strict.accepts(b"success"));
        assert!(!strict.accepts(b"success "));
        assert!(!strict.accepts(b"fail"));
        let lenient = Ack {
            expected: "success",
            ignore_case: false,
            trim: true,
        };
        assert!(lenient.accepts(b"success\n"));
        assert!(!lenient.accepts(b"Success"));
    }

    #[test]
    fn bad_schedules_are_refused() {
        assert!(Schedule::parse("").is_err());
        assert!(Schedule::parse("0,x").is_err());
        assert!(Schedule::parse("-1").is_err());
        assert!(Schedule::parse(&vec!["1"; 33].join(",")).is_err());
        assert_eq!(Schedule::parse(" 0, 2 ,5").unwrap().to_text(), "0,2,5");
    }
}
