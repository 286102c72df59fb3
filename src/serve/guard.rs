//! What keeps clients that fail authentication, or open sessions without end, from growing the server's
//! memory. Each structure here is bounded by construction:
//!
//! * [`TtlCache`] — verified tokens, kept a short time (revocation takes effect within the TTL) and at
//!   most `capacity` of them. Refused tokens are never cached: every distinct made-up token would be an
//!   entry. The status page's login sessions are one too (idle expiry, created only by a valid meta
//!   token).
//! * [`FailedAuth`] — a token bucket of authentication *failures* per client address (IPv4 address, or
//!   IPv6 /64): a client that keeps failing gets `429` with `Retry-After` instead of `401` until it
//!   pauses. At most `capacity` clients are tracked; when full, clients whose bucket has refilled are
//!   forgotten first.
//! * [`SessionLimits`] — the MCP sessions each principal holds: at most `per_principal`, the least
//!   recently used closed when a new one would exceed that; sessions unused for longer than the idle
//!   time are forgotten (rmcp closes them itself after the same time).
//!
//! Caveat: behind a reverse proxy (or cloudflared) every client has the proxy's address, so they share
//! one failure bucket (forwarded-for headers are not trusted: any client can set them). That is why a
//! valid token is always accepted, throttled address or not: one client's failures never lock another
//! client out; only clients that fail are answered 429.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::mcp::Endpoint;

/// A map whose entries expire after `ttl` and which never holds more than `capacity` entries.
pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        TtlCache {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(v, _)| v.clone())
    }

    /// Like [`Self::get`], and restarts the entry's time to live: the entry expires after `ttl` without
    /// use (an idle timeout).
    pub fn get_refreshed(&self, key: &K) -> Option<V> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get_mut(key) {
            Some((v, at)) if at.elapsed() < self.ttl => {
                *at = Instant::now();
                Some(v.clone())
            }
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn remove(&self, key: &K) -> Option<V> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(key).map(|(v, _)| v)
    }

    pub fn insert(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
            if entries.len() >= self.capacity
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, (value, Instant::now()));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The address a failure is counted against: IPv4 as is, IPv6 by its /64 (one host usually holds a
/// whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
    }
}

/// Authentication failures per client: `burst` failures at once, then one per `1 / per_second`.
pub struct FailedAuth {
    burst: f64,
    per_second: f64,
    capacity: usize,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl FailedAuth {
    pub fn new(burst: u32, per_second: f64, capacity: usize) -> Self {
        FailedAuth {
            burst: f64::from(burst.max(1)),
            per_second: per_second.max(0.001),
            capacity: capacity.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn level(&self, (tokens, at): (f64, Instant), now: Instant) -> f64 {
        (tokens + now.duration_since(at).as_secs_f64() * self.per_second).min(self.burst)
    }

    /// `Err(seconds)` when `ip` has used up its failures: answer 429 with that `Retry-After`.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(&bucket) = buckets.get(&client_key(ip)) else {
            return Ok(());
        };
        let level = self.level(bucket, Instant::now());
        if level >= 1.0 {
            Ok(())
        } else {
            Err(((1.0 - level) / self.per_second).ceil().max(1.0) as u64)
        }
    }

    /// Counts one failure of `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let key = client_key(ip);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= self.capacity && !buckets.contains_key(&key) {
            // Forget clients that are back to a full bucket; if every one is still throttled, the
            // one with the most failures left.
            buckets.retain(|_, b| self.level(*b, now) < self.burst);
            if buckets.len() >= self.capacity
                && let Some(k) = buckets
                    .iter()
                    .max_by(|a, b| self.level(*a.1, now).total_cmp(&self.level(*b.1, now)))
                    .map(|(k, _)| *k)
            {
                buckets.remove(&k);
            }
        }
        let bucket = buckets.entry(key).or_insert((self.burst, now));
        let level = self.level(*bucket, now);
        *bucket = ((level - 1.0).max(0.0), now);
    }

    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One open MCP session, as far as the limits are concerned.
#[derive(Debug, Clone)]
struct Tracked {
    endpoint: Endpoint,
    id: String,
    last_used: Instant,
}

/// MCP sessions per principal (a token id, or the local user without auth).
pub struct SessionLimits {
    per_principal: usize,
    idle: Duration,
    sessions: Mutex<HashMap<String, Vec<Tracked>>>,
}

impl SessionLimits {
    pub fn new(per_principal: usize, idle: Duration) -> Self {
        SessionLimits {
            per_principal: per_principal.max(1),
            idle,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// A request used session `id`.
    pub fn touch(&self, principal: &str, id: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sessions
            .get_mut(principal)
            .and_then(|list| list.iter_mut().find(|s| s.id == id))
        {
            s.last_used = Instant::now();
        }
    }

    /// `principal` opened session `id` on `endpoint`; returns the sessions to close to stay within the
    /// limit (least recently used first).
    pub fn opened(
        &self,
        principal: &str,
        endpoint: &Endpoint,
        id: &str,
    ) -> Vec<(Endpoint, String)> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let list = sessions.entry(principal.to_string()).or_default();
        // Sessions idle longer than the idle time are gone already (rmcp closed them).
        list.retain(|s| s.last_used.elapsed() < self.idle);
        list.push(Tracked {
            endpoint: endpoint.clone(),
            id: id.to_string(),
            last_used: Instant::now(),
        });
        let mut evicted = Vec::new();
        while list.len() > self.per_principal {
            let Some(i) = list
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            let s = list.remove(i);
            evicted.push((s.endpoint, s.id));
        }
        evicted
    }

    /// The session was closed (by the client or by eviction).
    pub fn closed(&self, principal: &str, id: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = sessions.get_mut(principal) {
            list.retain(|s| s.id != id);
            if list.is_empty() {
                sessions.remove(principal);
            }
        }
    }

    /// Sessions currently counted (idle ones included until the principal's next session).
    pub fn open(&self) -> usize {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .values()
            .flatten()
            .filter(|s| s.last_used.elapsed() < self.idle)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_never_grows_past_its_capacity() {
        let cache = TtlCache::new(Duration::from_secs(60), 100);
        for i in 0..10_000 {
            cache.insert(i, i);
        }
        assert_eq!(cache.len(), 100);
        assert_eq!(cache.get(&9_999), Some(9_999));
        assert_eq!(cache.get(&0), None);
        let short = TtlCache::new(Duration::from_millis(0), 10);
        short.insert("k", 1);
        assert_eq!(short.get(&"k"), None, "expired entries are not returned");
        assert_eq!(short.get_refreshed(&"k"), None);
        assert_eq!(
            short.len(),
            0,
            "an expired entry read with refresh is dropped"
        );
    }

    #[test]
    fn a_refreshed_entry_lives_while_it_is_used() {
        let cache = TtlCache::new(Duration::from_millis(60), 10);
        cache.insert("s", 1);
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(30));
            assert_eq!(
                cache.get_refreshed(&"s"),
                Some(1),
                "used within the idle time"
            );
        }
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(cache.get_refreshed(&"s"), None, "idle longer than the TTL");
        cache.insert("t", 2);
        assert_eq!(cache.remove(&"t"), Some(2));
        assert_eq!(cache.get(&"t"), None);
    }

    #[test]
    fn failures_are_throttled_per_client_and_bounded() {
        let f = FailedAuth::new(3, 1.0, 1000);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(f.check(a), Ok(()));
            f.failed(a);
        }
        assert_eq!(f.check(a), Err(1));
        assert_eq!(f.check(b), Ok(()), "another client is not affected");
        // One IPv6 host with many addresses in its /64 is one client.
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        for i in 0..3 {
            f.failed(v6(i));
        }
        assert!(f.check(v6(999)).is_err());
        // Memory stays bounded whatever the number of addresses.
        let bounded = FailedAuth::new(3, 1.0, 50);
        for i in 0..5_000u32 {
            bounded.failed(IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(bounded.tracked(), 50);
    }

    #[test]
    fn sessions_beyond_the_limit_close_the_least_recently_used() {
        let limits = SessionLimits::new(2, Duration::from_secs(60));
        let ep = Endpoint::Meta;
        assert!(limits.opened("tok_a", &ep, "s1").is_empty());
        std::thread::sleep(Duration::from_millis(2));
        assert!(limits.opened("tok_a", &ep, "s2").is_empty());
        std::thread::sleep(Duration::from_millis(2));
        limits.touch("tok_a", "s1");
        assert!(
            limits.opened("tok_b", &ep, "t1").is_empty(),
            "per principal"
        );
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(
            limits.opened("tok_a", &ep, "s3"),
            [(Endpoint::Meta, "s2".to_string())]
        );
        assert_eq!(limits.open(), 3);
        limits.closed("tok_b", "t1");
        assert_eq!(limits.open(), 2);
    }
}
