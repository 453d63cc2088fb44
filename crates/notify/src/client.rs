//! The HTTP client notifications are sent with.
//!
//! A notification URL was checked when the merchant gave it, but a host name says nothing
//! about where it leads: it may resolve to 127.0.0.1 or 10.0.0.8, today or only at the moment
//! of sending. So the client resolves names through [`PolicyResolver`], which hands the
//! connector only the addresses the gateway's [`UrlPolicy`] allows — the one place that sees
//! the address actually connected to. Addresses written in the URL itself are not resolved;
//! the dispatcher checks them with the same policy before each attempt. Redirects are not
//! followed (a receiver could otherwise send the POST anywhere), and no proxy from the
//! environment is used (it would resolve the name itself, past this check).

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tillgate_core::notify::UrlPolicy;

/// A host name none of whose addresses notifications may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForbiddenAddress {
    pub host: String,
    pub why: String,
}

impl std::fmt::Display for ForbiddenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} resolves to no address notifications may reach: it {}",
            self.host, self.why
        )
    }
}

impl std::error::Error for ForbiddenAddress {}

/// Resolves host names with the system's resolver and keeps the addresses `policy` allows.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: Arc<UrlPolicy>,
}

impl PolicyResolver {
    pub fn new(policy: UrlPolicy) -> PolicyResolver {
        PolicyResolver {
            policy: Arc::new(policy),
        }
    }
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match policy.allows(addr.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refused = Some(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| "has no address".to_owned());
                tracing::warn!(%host, %why, "notification host refused at connect time");
                return Err(Box::new(ForbiddenAddress { host, why }) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The client of the dispatcher: each request bounded by `timeout` (connecting included),
/// names resolved through the policy, no redirects, no proxy.
pub fn notification_client(
    policy: UrlPolicy,
    timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(PolicyResolver::new(policy)))
        .user_agent(concat!("tillgate/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The policy refusal somewhere in `e`'s chain of causes, if that is why it failed.
pub fn forbidden_in<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e ForbiddenAddress> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(f) = c.downcast_ref::<ForbiddenAddress>() {
            return Some(f);
        }
        cause = c.source();
    }
    None
}
