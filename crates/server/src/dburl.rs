//! Database URLs as they may appear in messages and logs: without their password.

use url::{Position, Url};

/// What stands in for a hidden password.
const HIDDEN: &str = "***";

/// A database URL without its password, for messages and logs.
///
/// The user name, host, port and database stay readable. A password is hidden wherever a
/// PostgreSQL URL can carry one: in the user info (`user:PASSWORD@`) and in a `password=`
/// query parameter. A URL that cannot be read with certainty — several `host:port` pairs, an
/// `@` outside the user info, no host at all — gets everything between the scheme and its last
/// `@` hidden, so that no reading of it leaves a password behind. A URL with nothing to hide
/// comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let redacted = match Url::parse(url) {
        Ok(parsed) if is_plain(&parsed) => match parsed.password() {
            None => url.to_owned(),
            Some(_) => {
                let mut hidden = parsed;
                match hidden.set_password(Some(HIDDEN)) {
                    Ok(()) => hidden.to_string(),
                    Err(()) => redact_user_info(url),
                }
            }
        },
        _ => redact_user_info(url),
    };
    redact_password_parameter(&redacted)
}

/// True when the parsed URL accounts for every `@` of the text: its user info, if any, is the
/// only place one may stand, so a password can only be in `password()`.
fn is_plain(parsed: &Url) -> bool {
    parsed.has_host() && !parsed[Position::BeforePath..].contains('@')
}

/// Hides everything between the scheme (`scheme://` or `scheme:`) and the last `@`.
fn redact_user_info(url: &str) -> String {
    let start = match url.find("://") {
        Some(i) => i + 3,
        None => url.find(':').map_or(0, |i| i + 1),
    };
    match url[start..].rfind('@') {
        Some(at) => format!("{}{HIDDEN}{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

/// Hides the value of every `password=` parameter of the query.
fn redact_password_parameter(url: &str) -> String {
    let Some((head, rest)) = url.split_once('?') else {
        return url.to_owned();
    };
    let (query, fragment) = match rest.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (rest, None),
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}={HIDDEN}"),
            _ => pair.to_owned(),
        })
        .collect();
    let mut out = format!("{head}?{}", query.join("&"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    /// No secret of `secrets` survives in the redacted form of `url`.
    fn hides(url: &str, secrets: &[&str]) -> String {
        let shown = redact_url(url);
        for secret in secrets {
            assert!(
                !shown.contains(secret),
                "{secret:?} leaks from {url:?} as {shown:?}"
            );
        }
        shown
    }

    #[test]
    fn the_password_is_hidden_and_the_user_kept() {
        assert_eq!(
            hides(
                "postgres://tillgate:s3cret@db.internal:5432/tillgate",
                &["s3cret"]
            ),
            "postgres://tillgate:***@db.internal:5432/tillgate"
        );
        assert_eq!(
            hides("postgresql://app:pw@[::1]/db?sslmode=require", &["pw@"]),
            "postgresql://app:***@[::1]/db?sslmode=require"
        );
    }

    #[test]
    fn passwords_with_reserved_characters_are_hidden_whole() {
        assert_eq!(
            hides("postgres://u:p@ss:w0rd@host/db", &["p@ss", "w0rd"]),
            "postgres://u:***@host/db"
        );
        assert_eq!(
            hides("postgres://u:p%40ss@host/db", &["p%40ss"]),
            "postgres://u:***@host/db"
        );
        hides("postgres://u:pa/ss@host/db", &["pa/ss", "ss@"]);
        hides("postgres://u:12/34@host/db", &["12/34"]);
        hides("postgres://u:pa#ss@host/db", &["pa#ss"]);
        hides("postgres://u:pa?ss@host/db", &["pa?ss"]);
    }

    #[test]
    fn a_url_without_a_password_is_unchanged() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://db.internal/tillgate",
            "postgres:///tillgate?host=/var/run/postgresql",
            "sqlite://tillgate.db",
            "sqlite:/tmp/x.db?mode=rwc",
            "postgres://u:@host/db",
            "not a url",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn several_hosts_leak_no_password() {
        assert_eq!(
            hides("postgres://u:pw@h1:5432,h2:5433/db", &["pw"]),
            "postgres://***@h1:5432,h2:5433/db"
        );
        assert_eq!(
            hides("postgres://u:pw@h1,h2/db", &["pw"]),
            "postgres://u:***@h1,h2/db"
        );
    }

    #[test]
    fn unreadable_urls_leak_no_password() {
        hides("postgres://u:pw@/db?host=/tmp", &["pw"]);
        hides("postgres://u:pw@host:notaport/db", &["pw"]);
        hides("postgres://u:pw@ho st/db", &["pw"]);
        hides("postgres:u:pw@host/db", &["pw"]);
        hides("u:pw@host/db", &["pw"]);
        hides("://u:pw@host", &["pw"]);
    }

    #[test]
    fn a_password_parameter_is_hidden() {
        assert_eq!(
            hides(
                "postgres://u@host/db?sslmode=disable&password=pw&application_name=x",
                &["pw"]
            ),
            "postgres://u@host/db?sslmode=disable&password=***&application_name=x"
        );
        hides("postgres://u:a@host/db?password=b", &["a@", "=b"]);
        hides("postgres://host:1,h2:2/db?PASSWORD=pw", &["pw"]);
    }
}
