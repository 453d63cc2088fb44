//! Who is signed in: argon2id passwords, sessions kept in the database (so any node serves
//! them), the session cookie, CSRF tokens and the throttling of wrong passwords.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use axum::http::{header, HeaderMap};
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tillgate_core::console::{SessionRecord, UserRecord};
use tillgate_core::{Store, StoreError};

/// The session cookie's name.
pub const COOKIE: &str = "tillgate_console";
/// A session unused this long ends.
pub const IDLE: Duration = Duration::minutes(30);
/// A session ends this long after sign-in, used or not.
pub const ABSOLUTE: Duration = Duration::hours(12);
/// Wrong passwords in a row that lock a login…
pub const LOCK_AFTER: i64 = 5;
/// …for this long.
pub const LOCK_FOR: Duration = Duration::minutes(15);
/// How often a session's last use is written (not on every page).
const TOUCH_EVERY: Duration = Duration::seconds(60);

/// A password's argon2id hash in PHC form.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// What a new password must be.
pub fn check_new_password(password: &str) -> Result<(), &'static str> {
    if password.chars().count() < 12 {
        return Err("a console password has at least 12 characters");
    }
    if password.len() > 1024 {
        return Err("a console password has at most 1024 bytes");
    }
    Ok(())
}

/// Whether `password` is the one `hash` was made from. A malformed hash matches nothing.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash no password matches, verified for unknown logins so that they take as long as known
/// ones.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("no login has this password").unwrap_or_default())
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

pub fn digest(cookie: &str) -> String {
    hex::encode(Sha256::digest(cookie.as_bytes()))
}

/// Starts a session for `user`: answers the cookie's value (only its digest is stored).
pub async fn open_session(
    store: &dyn Store,
    user: &UserRecord,
    now: DateTime<Utc>,
) -> Result<String, StoreError> {
    let cookie = random_hex(32);
    store
        .insert_session(SessionRecord {
            id_hash: digest(&cookie),
            user_id: user.id,
            csrf: random_hex(32),
            created_at: now,
            last_seen_at: now,
        })
        .await?;
    Ok(cookie)
}

/// The session cookie's value in a request, if any.
pub fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Set-Cookie` of a session: HttpOnly, SameSite=Strict, the console's path, Secure in
/// production; without a value it ends the session in the browser.
pub fn set_cookie(value: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match value {
        Some(v) => format!("{COOKIE}={v}; Path=/console; HttpOnly; SameSite=Strict{secure}"),
        None => format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// A signed-in user with the session's CSRF token.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: UserRecord,
    pub session: SessionRecord,
}

/// The user a request's cookie signs in, if its session is alive and the user not disabled.
pub async fn signed_in(
    store: &dyn Store,
    headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Result<Option<SignedIn>, StoreError> {
    let Some(cookie) = cookie_of(headers) else {
        return Ok(None);
    };
    let id_hash = digest(&cookie);
    let Some(session) = store.session(&id_hash).await? else {
        return Ok(None);
    };
    if now - session.last_seen_at > IDLE || now - session.created_at > ABSOLUTE {
        store.delete_session(&id_hash).await?;
        return Ok(None);
    }
    let Some(user) = store.user_by_id(session.user_id).await? else {
        return Ok(None);
    };
    if user.disabled {
        return Ok(None);
    }
    if now - session.last_seen_at > TOUCH_EVERY {
        store.touch_session(&id_hash, now).await?;
    }
    Ok(Some(SignedIn { user, session }))
}

/// Whether a form's CSRF token is its session's (constant time).
pub fn csrf_ok(session: &SessionRecord, given: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(session.csrf.as_bytes()))
}

/// A POST from a page of another site is refused before anything else: its `Origin` (which
/// browsers send with every POST) must name the host the request was sent to, and
/// `Sec-Fetch-Site` must not say cross-site.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| !host.is_empty() && authority == host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterz", &h));
        assert!(!verify_password("correct horse battery", "not a hash"));
    }

    #[test]
    fn only_a_well_formed_session_cookie_is_read() {
        let good = "a".repeat(64);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("x=1; {COOKIE}={good}").parse().unwrap(),
        );
        assert_eq!(cookie_of(&h), Some(good));
        h.insert(header::COOKIE, format!("{COOKIE}=short").parse().unwrap());
        assert_eq!(cookie_of(&h), None);
    }

    #[test]
    fn a_post_from_another_origin_is_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(!same_origin(&h));
    }
}
