//! Which notification URLs merchants may give, and which addresses notifications may reach.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Which notification URLs merchants may give, and which addresses notifications may reach.
///
/// Notifications are requests the gateway makes on a merchant's behalf, so by default they may
/// not reach the gateway's own machine or private networks (a merchant could otherwise probe
/// them); sandbox mode allows loopback so a developer's local receiver works, and an operator
/// may allow networks explicitly.
///
/// URLs are read with the `url` crate, the parser the HTTP client itself uses, so the host that
/// is checked is the host that is connected to: `http://127.1/`, `http://0x7f.0.0.1/`,
/// `http://2130706433/`, percent-encoded or IDNA-dotted forms all come out as 127.0.0.1 here
/// exactly as they would when sent. A host name is checked again where it is resolved (the
/// dispatcher's resolver calls [`UrlPolicy::allows`] on every address), since only then is
/// its real address known.
#[derive(Debug, Clone, Default)]
pub struct UrlPolicy {
    pub allow_loopback: bool,
    /// Networks allowed even though they are private: (address, prefix length).
    pub allowed_networks: Vec<(IpAddr, u8)>,
}

/// Where an address leads, as far as notifications are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Somewhere on the internet.
    Public,
    /// The gateway's own machine.
    Loopback,
    /// A private, link-local, shared, multicast or otherwise reserved address, or one that
    /// tunnels to an address the gateway cannot see.
    Internal,
}

impl UrlPolicy {
    /// Parses a network such as "10.1.0.0/16" or "fd00::/8".
    pub fn parse_network(text: &str) -> Result<(IpAddr, u8), String> {
        let (addr, prefix) = text.split_once('/').unwrap_or((text, ""));
        let addr: IpAddr = addr
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
        self.parse(url).map(drop)
    }

    /// Parses a notification URL as the HTTP client will and checks it (see [`check`]); the
    /// dispatcher sends to what this returns, so what was checked is what is sent.
    ///
    /// [`check`]: UrlPolicy::check
    pub fn parse(&self, text: &str) -> Result<url::Url, String> {
        // Parsers disagree about these (a backslash ends the authority for one and not for
        // another; tabs and newlines are silently dropped), so no URL may hold them.
        if text
            .chars()
            .any(|c| c == '\\' || c == ' ' || c.is_control())
        {
            return Err("may not contain backslashes, spaces or control characters".into());
        }
        let url = url::Url::parse(text).map_err(|e| format!("is not a valid URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be an http or https URL".into());
        }
        // "http://shop.example@10.0.0.1/" reads as a shop to a person and goes to 10.0.0.1;
        // a notification has no use for credentials in its URL.
        if !url.username().is_empty() || url.password().is_some() {
            return Err("may not contain a user name or password".into());
        }
        match url.host() {
            None => return Err("must name a host".into()),
            Some(url::Host::Ipv4(ip)) => self.allows(IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => self.allows(IpAddr::V6(ip))?,
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.');
                if name.is_empty() {
                    return Err("must name a host".into());
                }
                // Names that always mean this machine are refused now rather than when sent;
                // any other name is checked on the addresses it resolves to.
                if name == "localhost" || name.ends_with(".localhost") {
                    self.allows(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
                }
            }
        }
        Ok(url)
    }

    /// Whether a notification may be sent to `ip`: a public address, loopback when allowed, or
    /// an address in one of the allowed networks.
    pub fn allows(&self, ip: IpAddr) -> Result<(), String> {
        // An IPv4 address written as IPv6 (::ffff:a.b.c.d) is the IPv4 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.allowed_networks.iter().any(|n| in_network(ip, *n)) {
            return Ok(());
        }
        match reach(ip) {
            Reach::Public => Ok(()),
            Reach::Loopback if self.allow_loopback => Ok(()),
            Reach::Loopback => Err("may not point to the gateway's own machine".into()),
            Reach::Internal => {
                Err("may not point to a private, link-local or reserved address".into())
            }
        }
    }
}

fn in_network(ip: IpAddr, (net, prefix): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn reach(ip: IpAddr) -> Reach {
    match ip {
        IpAddr::V4(v4) => reach_v4(v4),
        IpAddr::V6(v6) => reach_v6(v6),
    }
}

fn reach_v4(v4: Ipv4Addr) -> Reach {
    let [a, b, c, _] = v4.octets();
    if a == 127 {
        return Reach::Loopback;
    }
    let internal = a == 0 // "this network"; 0.0.0.0 reaches this machine on Linux
        || a == 10
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
        || (a == 169 && b == 254) // link-local, cloud metadata services
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 224; // multicast, reserved, broadcast
    if internal {
        Reach::Internal
    } else {
        Reach::Public
    }
}

fn reach_v6(v6: Ipv6Addr) -> Reach {
    if v6 == Ipv6Addr::LOCALHOST {
        return Reach::Loopback;
    }
    let s = v6.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    // An IPv4 address reached through a translator or tunnel: allowed only when public (the
    // far end's loopback is not this machine's, but it is no more the merchant's to reach).
    let through = |v4: Ipv4Addr| match reach_v4(v4) {
        Reach::Public => Reach::Public,
        _ => Reach::Internal,
    };
    match s {
        // ::ffff:a.b.c.d, should it arrive here unconverted: the IPv4 address itself.
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => reach_v4(embedded(hi, lo)),
        // :: and the deprecated IPv4-compatible ::a.b.c.d.
        [0, 0, 0, 0, 0, 0, _, _] => Reach::Internal,
        // NAT64 (64:ff9b::/96).
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => through(embedded(hi, lo)),
        // 6to4 (2002::/16) carries an IPv4 address in its second and third segments.
        [0x2002, hi, lo, ..] => through(embedded(hi, lo)),
        _ => {
            let first = s[0];
            let internal = first == 0x0064 && s[1] == 0xff9b // local-use NAT64 (64:ff9b:1::/48)
                || (first == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only (100::/64)
                || (first == 0x2001 && s[1] == 0) // Teredo (2001::/32)
                || (first & 0xfe00) == 0xfc00 // unique local (fc00::/7)
                || (first & 0xffc0) == 0xfe80 // link-local (fe80::/10)
                || (first & 0xffc0) == 0xfec0 // site-local, deprecated (fec0::/10)
                || (first & 0xff00) == 0xff00; // multicast
            if internal {
                Reach::Internal
            } else {
                Reach::Public
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_in_production(forms: &[&str]) {
        let production = UrlPolicy::default();
        for form in forms {
            assert!(
                production.check(form).is_err(),
                "{form} must be refused in production"
            );
        }
    }

    #[test]
    fn public_notification_urls_are_accepted() {
        let production = UrlPolicy::default();
        for good in [
            "https://shop.example.com/notify?x=1",
            "http://203.0.113.7:8080/ipn",
            "http://8.8.8.8/ipn",
            "http://[2606:4700:4700::1111]/ipn",
            "https://bücher.example/ipn",
            // NAT64 of a public address is that public address.
            "http://[64:ff9b::808:808]/ipn",
            // What follows '#' is a fragment: this goes to shop.example, and is checked so.
            "http://shop.example#@127.0.0.1/",
        ] {
            assert!(
                production.check(good).is_ok(),
                "{good}: {:?}",
                production.check(good)
            );
        }
        let url = production.parse("HTTPS://Shop.Example.COM./ipn").unwrap();
        assert_eq!(url.host_str(), Some("shop.example.com."));
    }

    #[test]
    fn other_schemes_and_hostless_urls_are_refused() {
        refused_in_production(&[
            "ftp://example.com/x",
            "gopher://example.com/",
            "file:///etc/passwd",
            "http://",
            "http://:80/",
            "not a url",
            "",
        ]);
    }

    #[test]
    fn loopback_in_any_ipv4_spelling_is_refused() {
        refused_in_production(&[
            "http://127.0.0.1/x",
            "http://127.1/",
            "http://127.0.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://017700000001/",
            "http://0x7f.0.0.1/",
            "http://0x7F.1/",
            "http://0177.0.0.1/",
            "http://0177.1/",
            "http://127.0.0.1./",
            "http://127.255.255.254:8080/",
        ]);
    }

    #[test]
    fn percent_encoded_hosts_are_read_as_they_are_sent() {
        refused_in_production(&[
            "http://%31%32%37.0.0.1/",
            "http://%31%32%37%2e%30%2e%30%2e%31/",
            "http://%6c%6f%63%61%6c%68%6f%73%74/",
        ]);
    }

    #[test]
    fn zero_and_the_unspecified_address_are_refused() {
        refused_in_production(&[
            "http://0/",
            "http://0.0.0.0/x",
            "http://0x0/",
            "http://0.0/",
        ]);
    }

    #[test]
    fn idna_full_stops_and_wide_digits_are_refused() {
        refused_in_production(&[
            "http://127。0。0。1/",
            "http://127．0．0．1/",
            "http://127｡0｡0｡1/",
            "http://１２７.０.０.１/",
            "http://１０。０。０。１/",
            "http://ｌｏｃａｌｈｏｓｔ/",
        ]);
    }

    #[test]
    fn backslash_tricks_are_refused() {
        refused_in_production(&[
            "http://evil.example\\@127.0.0.1/",
            "http://127.0.0.1\\@evil.example/",
            "http://127.0.0.1\\.evil.example/",
            "http:\\\\127.0.0.1\\x",
            "http:/\\127.0.0.1/",
            "https://evil.example\\@10.0.0.1/",
        ]);
        // Even pointing at a public host, a backslash is refused: parsers disagree about it.
        assert!(UrlPolicy::default()
            .check("http://shop.example\\@shop.example/")
            .is_err());
    }

    #[test]
    fn whitespace_and_control_characters_are_refused() {
        refused_in_production(&[
            "http://127.0.0.1\t/",
            "http://evil.example\n@127.0.0.1/",
            " http://shop.example/ipn",
            "http://shop.example/ipn ",
            "http://shop.example/i pn",
            "http://shop.example/\u{0}",
        ]);
    }

    #[test]
    fn userinfo_is_refused_whatever_it_hides() {
        refused_in_production(&[
            "http://evil.example@127.0.0.1/",
            "http://shop.example:443@10.0.0.1/",
            "http://a@b@127.0.0.1/",
            "http://127.0.0.1:80@evil.example/",
            "https://user:secret@shop.example/ipn",
            "https://user@shop.example/ipn",
            "https://:secret@shop.example/ipn",
        ]);
    }

    #[test]
    fn private_shared_link_local_and_reserved_ipv4_are_refused() {
        refused_in_production(&[
            "http://10.1.2.3/x",
            "http://192.168.0.1/x",
            "http://172.16.5.5/x",
            "http://172.31.255.255/x",
            "http://169.254.169.254/latest/meta-data",
            "http://0xa9fea9fe/latest/meta-data",
            "http://100.64.0.1/",
            "http://192.0.0.8/",
            "http://198.18.0.1/",
            "http://224.0.0.1/",
            "http://240.0.0.1/",
            "http://255.255.255.255/",
        ]);
    }

    #[test]
    fn ipv6_loopback_ula_link_local_and_v4_mapped_forms_are_refused() {
        refused_in_production(&[
            "http://[::1]/x",
            "http://[0:0:0:0:0:0:0:1]/x",
            "http://[::]/x",
            "http://[fd00::1]/x",
            "http://[fc00::1]/x",
            "http://[fe80::1]/x",
            "http://[fe80::1%25eth0]/x",
            "http://[fec0::1]/x",
            "http://[ff02::1]/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://[::ffff:7f00:1]/x",
            "http://[0:0:0:0:0:ffff:127.0.0.1]/x",
            "http://[::ffff:10.0.0.1]/x",
            "http://[::ffff:169.254.169.254]/x",
            "http://[::127.0.0.1]/x",
            "http://[64:ff9b::7f00:1]/x",
            "http://[64:ff9b::a9fe:a9fe]/x",
            "http://[64:ff9b:1::a00:1]/x",
            "http://[2002:7f00:1::1]/x",
            "http://[2002:a00:1::1]/x",
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x",
            "http://[100::1]/x",
        ]);
    }

    #[test]
    fn localhost_names_are_refused_before_any_lookup() {
        refused_in_production(&[
            "http://localhost:9000/x",
            "http://LOCALHOST/x",
            "http://localhost./x",
            "http://api.localhost/x",
        ]);
    }

    #[test]
    fn sandbox_allows_loopback_and_operators_allow_their_networks() {
        let sandbox = UrlPolicy {
            allow_loopback: true,
            allowed_networks: vec![UrlPolicy::parse_network("10.1.0.0/16").unwrap()],
        };
        for ok in [
            "http://127.0.0.1:9000/x",
            "http://127.1:9000/x",
            "http://localhost:9000/x",
            "http://[::1]:9000/x",
            "http://[::ffff:127.0.0.1]:9000/x",
            "http://10.1.200.3/x",
            "http://[::ffff:10.1.0.9]/x",
        ] {
            assert!(sandbox.check(ok).is_ok(), "{ok}: {:?}", sandbox.check(ok));
        }
        for bad in [
            "http://10.2.0.1/x",
            "http://0.0.0.0/x",
            "http://169.254.169.254/x",
            "http://[fd00::1]/x",
            "http://evil.example\\@127.0.0.1/",
            "http://user@127.0.0.1/",
        ] {
            assert!(sandbox.check(bad).is_err(), "{bad}");
        }
        assert!(UrlPolicy::parse_network("10.0.0.0/33").is_err());
        // An operator may allow a network inside what is otherwise forbidden, loopback too.
        let allowed = UrlPolicy {
            allow_loopback: false,
            allowed_networks: vec![UrlPolicy::parse_network("fd00::/8").unwrap()],
        };
        assert!(allowed.check("http://[fd12::1]/").is_ok());
        assert!(allowed.check("http://[fe80::1]/").is_err());
        assert!(allowed.check("http://127.0.0.1/").is_err());
    }

    #[test]
    fn addresses_are_checked_the_same_way_when_resolved() {
        let production = UrlPolicy::default();
        let sandbox = UrlPolicy {
            allow_loopback: true,
            ..UrlPolicy::default()
        };
        for ip in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(production.allows(ip).is_err(), "{ip}");
            assert!(sandbox.allows(ip).is_ok(), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "fd00::1",
            "fe80::1",
            "::",
            "0.0.0.0",
            "::ffff:192.168.1.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(production.allows(ip).is_err(), "{ip}");
            assert!(sandbox.allows(ip).is_err(), "{ip}");
        }
        assert!(production.allows("93.184.215.14".parse().unwrap()).is_ok());
        assert!(production
            .allows("2606:4700::1111".parse().unwrap())
            .is_ok());
    }
}
