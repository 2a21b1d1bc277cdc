//! Which addresses a webhook may be sent to: public ones only, unless the operator allows private
//! targets. Fleet admins are tenants; without this, a webhook URL such as
//! `http://127.0.0.1:6379/` or `http://169.254.169.254/` turns the hub into a scanner of the
//! operator's network, with `last_status`/`last_error` reading the answers back (issue 16).
//!
//! The check is made on the *resolved* address, at connect time, by a DNS resolver given to the
//! HTTP client ([`PublicOnly`]): a name that resolves to a private address is refused, also when
//! it resolved to a public one at registration (DNS rebinding). IP literals, which the client
//! connects to without resolving, are checked by [`check_literal`] before each attempt, and
//! registration ([`check_target`]) refuses both at once so the admin learns of it with a 422.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The one error a tenant sees for a refused target, whatever the reason (no detail about the
/// operator's network).
pub const REFUSED: &str = "target address not allowed";

/// True for an address any Internet host could reach: not loopback, private (RFC 1918),
/// shared (RFC 6598, carrier-grade NAT), link-local (RFC 3927, with the cloud metadata address
/// 169.254.169.254; fe80::/10), unique-local (RFC 4193, fc00::/7), unspecified, broadcast,
/// multicast, documentation (RFC 5737, RFC 3849), benchmarking (RFC 2544), reserved (240/4),
/// or 0/8; IPv4-mapped and -compatible IPv6 addresses are judged as their IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped().or_else(|| compatible_v4(v6)) {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        || first == 0x2001 && ip.segments()[1] == 0x0db8
        || first == 0x0064 && ip.segments()[1] == 0xff9b)
}

/// `::a.b.c.d` (deprecated IPv4-compatible form), which some stacks still route to IPv4.
fn compatible_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    (s[..6] == [0; 6] && (s[6] != 0 || s[7] > 1))
        .then(|| Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8))
}

/// Refuses a URL whose host is an IP literal that is not public (`allow_private`: never).
/// Names pass here; their addresses are checked when resolved ([`PublicOnly`]).
pub fn check_literal(url: &reqwest::Url, allow_private: bool) -> Result<(), &'static str> {
    let literal = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        _ => return Ok(()),
    };
    match allow_private || is_public(literal) {
        true => Ok(()),
        false => Err(REFUSED),
    }
}

/// At registration: [`check_literal`], and a name that resolves, now, only to addresses that
/// are not public is refused too. A name that does not resolve yet is accepted (its receiver
/// may not be deployed); every delivery resolves it again through [`PublicOnly`].
pub async fn check_target(url: &reqwest::Url, allow_private: bool) -> Result<(), &'static str> {
    check_literal(url, allow_private)?;
    let Some(url::Host::Domain(name)) = url.host() else {
        return Ok(());
    };
    if allow_private {
        return Ok(());
    }
    match tokio::net::lookup_host((name, 0)).await {
        Ok(found) => {
            let found: Vec<SocketAddr> = found.collect();
            match found.is_empty() || found.iter().any(|a| is_public(a.ip())) {
                true => Ok(()),
                false => Err(REFUSED),
            }
        }
        Err(_) => Ok(()),
    }
}

/// A resolver for the webhook client that answers only public addresses: a name with none is
/// an error, so the request fails before any connection is made.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = found.filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(REFUSED.into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_loopback_link_local_and_metadata_are_not_public() {
        for s in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(ip(s)), "{s} must not be public");
        }
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip(s)), "{s} is public");
        }
    }

    #[tokio::test]
    async fn targets_are_checked_and_the_operator_may_allow_private_ones() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        for s in [
            "http://127.0.0.1:6379/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost:8080/",
            "http://10.0.0.5/hook",
        ] {
            assert_eq!(check_target(&url(s), false).await, Err(REFUSED), "{s}");
            assert_eq!(check_target(&url(s), true).await, Ok(()), "{s} allowed");
        }
        assert_eq!(check_literal(&url("http://localhost:8080/"), false), Ok(()));
        assert_eq!(check_literal(&url("http://93.184.216.34/"), false), Ok(()));
        // Not resolvable here (no DNS): accepted, resolved again at each delivery.
        assert_eq!(
            check_target(&url("https://hooks.example.com/x"), false).await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused() {
        let refused = PublicOnly.resolve("localhost".parse().unwrap()).await;
        assert!(refused.is_err());
    }
}
