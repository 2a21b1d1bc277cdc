//! Abuse limits on the edges: connection rate per client IP, sockets per driver, message rate
//! per connection, fix rate per driver (all its sockets and devices together) and request rate
//! per OsmAnd device. Token buckets are `governor`'s GCRA (generic cell rate
//! algorithm, ATM Forum TM 4.1), which keeps one 8-byte state per bucket.
//!
//! Exceeding any of them gets an error frame (`rate_limited` / `too_many_sockets`), then close
//! 1008 (policy violation, RFC 6455 §7.4.1).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use crate::model::DriverKey;
use axum::http::HeaderMap;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Limits, all configurable on `trackhub serve`; 0 turns a rate limit off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitsConfig {
    /// Messages per second one socket may send, sustained.
    pub msgs_per_s: u32,
    /// Messages one socket may send in a burst above that rate.
    pub msg_burst: u32,
    /// Open driver sockets per driver (a phone reconnecting while its old socket times out).
    pub sockets_per_driver: u32,
    /// Open watcher sockets and streams (WebSocket and SSE) per identity (fleet and token
    /// `sub`): a dispatcher's tabs and a service's consumers, not an unbounded number.
    pub sockets_per_watcher: u32,
    /// New sockets per second from one client IP, sustained.
    pub conns_per_ip_per_s: u32,
    /// New sockets from one client IP in a burst (a replay or a NAT full of phones reconnecting).
    pub conn_burst_per_ip: u32,
    /// Take the client IP from the rightmost `X-Forwarded-For` entry (set by our proxy) instead
    /// of the TCP peer. Only behind a proxy that sets it: clients can forge the header.
    pub trust_forwarded_for: bool,
    /// Fixes per second one driver may send, sustained, over all its sockets and devices.
    pub fixes_per_driver_per_s: u32,
    /// Fixes one driver may send in a burst above that rate: a phone's offline buffer.
    pub fix_burst_per_driver: u32,
    /// `/osmand` requests per second one device may make, sustained (burst: ten times that).
    pub osmand_per_device_per_s: u32,
    /// Requests per second one client IP may make to the public tracking pages (`/t/…`),
    /// sustained (burst: six times that).
    pub public_per_ip_per_s: u32,
}

impl Default for LimitsConfig {
    /// 20 msg/s (burst 40) per socket: a phone sends ~1/s and a map a few subscribes per pan.
    /// 4 sockets per driver; 32 watcher sockets and streams per identity (a dispatcher with a
    /// dozen tabs, a service with a consumer per partition). 100 new sockets/s per IP, burst 1,000 (a fleet replay from one host).
    /// 50 fixes/s per driver, burst 20,000 (5.5 hours of 1 Hz fixes buffered offline), so one
    /// token cannot flood the shared history writer (issue 16: 20 frames/s × 1,000 fixes × 4
    /// sockets was 80,000 fixes/s). 20 `/osmand` requests/s per device, burst 200 (Traccar
    /// Client sends its offline queue one request at a time).
    fn default() -> Self {
        Self {
            msgs_per_s: 20,
            msg_burst: 40,
            sockets_per_driver: 4,
            sockets_per_watcher: 32,
            conns_per_ip_per_s: 100,
            conn_burst_per_ip: 1_000,
            trust_forwarded_for: false,
            fixes_per_driver_per_s: 50,
            fix_burst_per_driver: 20_000,
            osmand_per_device_per_s: 20,
            public_per_ip_per_s: 5,
        }
    }
}

/// The shared limiters of one hub.
#[derive(Debug)]
pub struct Limits {
    pub cfg: LimitsConfig,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    driver_sockets: DashMap<DriverKey, u32>,
    /// Open watcher sockets and streams per (fleet, sub).
    watcher_sockets: DashMap<DriverKey, u32>,
    driver_fixes: Option<DefaultKeyedRateLimiter<DriverKey>>,
    device_requests: Option<DefaultKeyedRateLimiter<String>>,
    public_requests: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

fn quota(per_s: u32, burst: u32) -> Option<Quota> {
    let per_s = NonZeroU32::new(per_s)?;
    let burst = NonZeroU32::new(burst.max(per_s.get())).unwrap_or(per_s);
    Some(Quota::per_second(per_s).allow_burst(burst))
}

impl Limits {
    pub fn new(cfg: LimitsConfig) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            per_ip: quota(cfg.conns_per_ip_per_s, cfg.conn_burst_per_ip).map(RateLimiter::keyed),
            driver_sockets: DashMap::new(),
            watcher_sockets: DashMap::new(),
            driver_fixes: quota(cfg.fixes_per_driver_per_s, cfg.fix_burst_per_driver)
                .map(RateLimiter::keyed),
            device_requests: quota(
                cfg.osmand_per_device_per_s,
                cfg.osmand_per_device_per_s.saturating_mul(10),
            )
            .map(RateLimiter::keyed),
            public_requests: quota(
                cfg.public_per_ip_per_s,
                cfg.public_per_ip_per_s.saturating_mul(6),
            )
            .map(RateLimiter::keyed),
        })
    }

    /// Takes one public tracking-page request (a page load, a status read, a live stream) from
    /// the client IP's budget; `Err(wait)` when over it. Tokens are 256-bit, so this is about
    /// load, not guessing: a customer's page makes one request a few times a minute at most.
    pub fn admit_public_request(&self, ip: IpAddr) -> Result<(), Duration> {
        let Some(l) = &self.public_requests else {
            return Ok(());
        };
        l.check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Takes `n` fixes from the driver's budget; `Err(wait)` when over it (nothing taken): the
    /// client keeps the fixes and resends them after `wait`.
    pub fn admit_fixes(&self, who: &DriverKey, n: usize) -> Result<(), Duration> {
        let (Some(l), Some(n)) = (&self.driver_fixes, NonZeroU32::new(n as u32)) else {
            return Ok(());
        };
        match l.check_key_n(who, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(DefaultClock::default().now())),
            // More than the whole burst at once: wait for a full bucket, then split.
            Err(_) => Err(Duration::from_secs(1)),
        }
    }

    /// Counts one `/osmand` request of `device`; `Err(wait)` when the device is over its rate.
    pub fn admit_device_request(&self, device: &str) -> Result<(), Duration> {
        let Some(l) = &self.device_requests else {
            return Ok(());
        };
        l.check_key(&device.to_string())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Counts a new socket from `ip`; false when the IP is over its connection rate.
    pub fn admit_connection(&self, ip: IpAddr) -> bool {
        self.per_ip
            .as_ref()
            .is_none_or(|l| l.check_key(&ip).is_ok())
    }

    /// Reserves one of the driver's sockets; `None` when it already has the maximum open. The
    /// permit frees the slot when dropped (the socket ends).
    pub fn driver_socket(self: &Arc<Self>, who: &DriverKey) -> Option<SocketPermit> {
        self.reserve(SocketKind::Driver, who)
    }

    /// Reserves one of an identity's watcher sockets or streams (`who`: its fleet and token
    /// `sub`); `None` when it already has [`LimitsConfig::sockets_per_watcher`] open.
    pub fn watcher_socket(self: &Arc<Self>, who: &DriverKey) -> Option<SocketPermit> {
        self.reserve(SocketKind::Watcher, who)
    }

    fn reserve(self: &Arc<Self>, kind: SocketKind, who: &DriverKey) -> Option<SocketPermit> {
        let (map, max) = self.sockets(kind);
        let mut open = map.entry(who.clone()).or_insert(0);
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(SocketPermit {
            limits: self.clone(),
            kind,
            who: who.clone(),
        })
    }

    fn sockets(&self, kind: SocketKind) -> (&DashMap<DriverKey, u32>, u32) {
        match kind {
            SocketKind::Driver => (&self.driver_sockets, self.cfg.sockets_per_driver),
            SocketKind::Watcher => (&self.watcher_sockets, self.cfg.sockets_per_watcher),
        }
    }

    /// The `too_many_sockets` message for `kind`.
    pub fn too_many_sockets_message(&self, kind: SocketKind) -> String {
        match kind {
            SocketKind::Driver => format!(
                "this driver already has {} open sockets",
                self.cfg.sockets_per_driver
            ),
            SocketKind::Watcher => format!(
                "this token's identity already has {} open watcher sockets and streams; close one",
                self.cfg.sockets_per_watcher
            ),
        }
    }

    /// A fresh message-rate bucket for one socket; `None` when unlimited.
    pub fn message_limiter(&self) -> Option<DefaultDirectRateLimiter> {
        quota(self.cfg.msgs_per_s, self.cfg.msg_burst).map(RateLimiter::direct)
    }

    /// The `rate_limited` message for a socket over its message rate.
    pub fn over_rate_message(&self) -> String {
        format!("more than {} messages/s", self.cfg.msgs_per_s)
    }

    /// The `rate_limited` message for an IP over its connection rate.
    pub fn over_connection_rate_message(&self) -> &'static str {
        "too many new connections from this address; retry later"
    }

    /// Forgets per-IP buckets that are full again (called every second by the sweeper), so the
    /// map holds only IPs seen recently.
    pub fn sweep(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.driver_fixes {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.device_requests {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.public_requests {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// The client's IP: the TCP peer, or with `trust_forwarded_for` the rightmost valid
    /// `X-Forwarded-For` entry.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        if self.cfg.trust_forwarded_for {
            let forwarded = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
                .next_back();
            if let Some(ip) = forwarded {
                return ip;
            }
        }
        peer.ip()
    }
}

/// Which per-identity socket count a permit holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// `/v1/ws/driver`, per driver.
    Driver,
    /// `/v1/ws/watch`, `/v1/ws/stream` and `/v1/stream` (SSE), per (fleet, sub).
    Watcher,
}

/// One open socket, counted against [`LimitsConfig::sockets_per_driver`] or
/// [`LimitsConfig::sockets_per_watcher`] until dropped.
#[derive(Debug)]
pub struct SocketPermit {
    limits: Arc<Limits>,
    kind: SocketKind,
    who: DriverKey,
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        self.limits
            .sockets(self.kind)
            .0
            .remove_if_mut(&self.who, |_, open| {
                *open = open.saturating_sub(1);
                *open == 0
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_are_budgeted_per_driver_and_requests_per_device() {
        let limits = Limits::new(LimitsConfig {
            fixes_per_driver_per_s: 10,
            fix_burst_per_driver: 100,
            osmand_per_device_per_s: 1,
            ..Default::default()
        });
        let d = |id: &str| DriverKey {
            fleet: "f".into(),
            driver_id: id.into(),
        };
        assert!(limits.admit_fixes(&d("a"), 100).is_ok());
        let wait = limits.admit_fixes(&d("a"), 10).unwrap_err();
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(
            limits.admit_fixes(&d("b"), 100).is_ok(),
            "budgets are per driver"
        );
        for _ in 0..10 {
            assert!(limits.admit_device_request("p1").is_ok());
        }
        assert!(limits.admit_device_request("p1").is_err());
        assert!(limits.admit_device_request("p2").is_ok());
    }

    #[test]
    fn sockets_per_driver_are_counted_and_released() {
        let limits = Limits::new(LimitsConfig {
            sockets_per_driver: 2,
            ..Default::default()
        });
        let who = DriverKey {
            fleet: "f".into(),
            driver_id: "d".into(),
        };
        let a = limits.driver_socket(&who).unwrap();
        let _b = limits.driver_socket(&who).unwrap();
        assert!(limits.driver_socket(&who).is_none());
        drop(a);
        assert!(limits.driver_socket(&who).is_some());
    }

    #[test]
    fn connection_rate_is_per_ip_and_forwarded_for_only_when_trusted() {
        let limits = Limits::new(LimitsConfig {
            conns_per_ip_per_s: 1,
            conn_burst_per_ip: 2,
            ..Default::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limits.admit_connection(a) && limits.admit_connection(a));
        assert!(!limits.admit_connection(a));
        assert!(limits.admit_connection(b));
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "1.2.3.4, 10.9.9.9".parse().unwrap());
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(limits.client_ip(peer, &headers), peer.ip());
        let trusting = Limits::new(LimitsConfig {
            trust_forwarded_for: true,
            ..Default::default()
        });
        assert_eq!(
            trusting.client_ip(peer, &headers),
            "10.9.9.9".parse::<IpAddr>().unwrap()
        );
    }
}
