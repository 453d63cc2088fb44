//! Notifications: the port each dialect implements to render and sign a frozen
//! [`Snapshot`], the schedule of attempts, and which URLs merchants may give.

pub use crate::snapshot::Snapshot;
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

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

/// Which notification URLs merchants may give. Notifications are requests the gateway makes on
/// a merchant's behalf, so by default they may not reach the gateway's own machine or private
/// networks (a merchant could otherwise probe them); sandbox mode allows loopback so a
/// developer's local receiver works, and an operator may allow networks explicitly.
#[derive(Debug, Clone, Default)]
pub struct UrlPolicy {
    pub allow_loopback: bool,
    /// Networks allowed even though they are private: (address, prefix length).
    pub allowed_networks: Vec<(std::net::IpAddr, u8)>,
}

impl UrlPolicy {
    /// Parses a network such as "10.1.0.0/16" or "fd00::/8".
    pub fn parse_network(text: &str) -> Result<(std::net::IpAddr, u8), String> {
        let (addr, prefix) = text.split_once('/').unwrap_or((text, ""));
        let addr: std::net::IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a bad prefix length"))?
        };
        Ok((addr, prefix))
    }

    /// Checks a notification URL: http or https, a host, and not a forbidden address.
    pub fn check(&self, url: &str) -> Result<(), String> {
        let lower = url.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"))
            .ok_or("must be an http or https URL")?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host_port = authority.rsplit('@').next().unwrap_or("");
        let host = if let Some(v6) = host_port.strip_prefix('[') {
            v6.split(']').next().unwrap_or("")
        } else {
            host_port.split(':').next().unwrap_or("")
        };
        if host.is_empty() {
            return Err("must name a host".into());
        }
        let ip: Option<std::net::IpAddr> = if host == "localhost" || host.ends_with(".localhost") {
            Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
        } else {
            host.parse().ok()
        };
        let Some(ip) = ip else {
            // A name: its addresses are the resolver's business when the notification is sent.
            return Ok(());
        };
        if self.allowed_networks.iter().any(|n| in_network(ip, *n)) {
            return Ok(());
        }
        if ip.is_loopback() {
            return if self.allow_loopback {
                Ok(())
            } else {
                Err("may not point to the gateway's own machine".into())
            };
        }
        if forbidden(ip) {
            return Err("may not point to a private, link-local or reserved address".into());
        }
        Ok(())
    }
}

fn in_network(ip: std::net::IpAddr, (net, prefix): (std::net::IpAddr, u8)) -> bool {
    match (ip, net) {
        (std::net::IpAddr::V4(a), std::net::IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (std::net::IpAddr::V6(a), std::net::IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn forbidden(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.octets()[0] == 0
                || (v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]))
        }
        std::net::IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| forbidden(std::net::IpAddr::V4(v4)) || v4.is_loopback())
        }
    }
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
    fn notification_urls_may_not_reach_private_networks_unless_allowed() {
        let strict = UrlPolicy::default();
        assert!(strict.check("https://shop.example.com/notify?x=1").is_ok());
        assert!(strict.check("http://203.0.113.7:8080/ipn").is_ok());
        for bad in [
            "ftp://example.com/x",
            "http://",
            "http://127.0.0.1/x",
            "http://localhost:9000/x",
            "http://10.1.2.3/x",
            "http://192.168.0.1/x",
            "http://172.16.5.5/x",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/x",
            "http://[fd00::1]/x",
            "http://[::ffff:10.0.0.1]/x",
            "http://0.0.0.0/x",
        ] {
            assert!(strict.check(bad).is_err(), "{bad}");
        }
        let sandbox = UrlPolicy {
            allow_loopback: true,
            allowed_networks: vec![UrlPolicy::parse_network("10.1.0.0/16").unwrap()],
        };
        assert!(sandbox.check("http://127.0.0.1:9000/x").is_ok());
        assert!(sandbox.check("http://10.1.200.3/x").is_ok());
        assert!(sandbox.check("http://10.2.0.1/x").is_err());
        assert!(UrlPolicy::parse_network("10.0.0.0/33").is_err());
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
