//! Token validation: the [`TokenValidator`] trait and the [`CachingValidator`] that sits in front of any validator.
//!
//! The cache is keyed by a 128-bit keyed hash of the token (two SipHash instances with per-process random keys), so
//! raw tokens are never stored. Positive entries live until the earlier of the token's expiry and the configured TTL
//! (keystonemiddleware's `token_cache_time`, default 60 s); negative entries (invalid tokens) live a few seconds so
//! a flood of bad tokens does not reach identity. When full, the entry that would expire soonest is evicted first,
//! which makes short-lived negative entries go before valid tokens.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use chrono::Utc;

use crate::{AuthError, Context};

/// Validates subject tokens. Implemented in-process by the identity service and over HTTP by
/// [`crate::HttpValidator`].
#[async_trait]
pub trait TokenValidator: Send + Sync + 'static {
    /// Validates a subject token; `Err(AuthError::Invalid)` for unknown/expired/revoked/garbled tokens.
    async fn validate(&self, token: &str) -> Result<Context, AuthError>;
}

#[async_trait]
impl<V: TokenValidator + ?Sized> TokenValidator for Arc<V> {
    async fn validate(&self, token: &str) -> Result<Context, AuthError> {
        (**self).validate(token).await
    }
}

/// Tuning for [`CachingValidator`].
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Longest time a successful validation is reused.
    pub ttl: Duration,
    /// How long an invalid token is remembered as invalid.
    pub negative_ttl: Duration,
    /// Most entries kept (positive and negative together).
    pub capacity: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { ttl: Duration::from_secs(60), negative_ttl: Duration::from_secs(5), capacity: 10_000 }
    }
}

type Key = u128;

struct Entry {
    /// `None` remembers an invalid token.
    context: Option<Context>,
    expires: Instant,
    seq: u64,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<Key, Entry>,
    /// Entries ordered by expiry (ties broken by insertion), for purging and eviction.
    by_expiry: BTreeMap<(Instant, u64), Key>,
    next_seq: u64,
}

impl Cache {
    fn get(&mut self, key: Key, now: Instant) -> Option<Option<Context>> {
        let entry = self.entries.get(&key)?;
        if entry.expires > now {
            return Some(entry.context.clone());
        }
        self.remove(key);
        None
    }

    fn remove(&mut self, key: Key) {
        if let Some(old) = self.entries.remove(&key) {
            self.by_expiry.remove(&(old.expires, old.seq));
        }
    }

    fn insert(&mut self, key: Key, context: Option<Context>, expires: Instant, now: Instant, capacity: usize) {
        if capacity == 0 {
            return;
        }
        self.remove(key);
        while let Some((&(at, _), _)) = self.by_expiry.first_key_value() {
            if at > now && self.entries.len() < capacity {
                break;
            }
            if let Some((_, victim)) = self.by_expiry.pop_first() {
                self.entries.remove(&victim);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_expiry.insert((expires, seq), key);
        self.entries.insert(key, Entry { context, expires, seq });
    }
}

/// Caches the results of another validator. See the module documentation.
pub struct CachingValidator<V> {
    inner: V,
    config: CacheConfig,
    hashers: (RandomState, RandomState),
    cache: Mutex<Cache>,
}

impl<V: TokenValidator> CachingValidator<V> {
    /// A cache with the default configuration (60 s TTL, 5 s negative TTL, 10 000 entries).
    pub fn new(inner: V) -> Self {
        Self::with_config(inner, CacheConfig::default())
    }

    pub fn with_config(inner: V, config: CacheConfig) -> Self {
        Self { inner, config, hashers: (RandomState::new(), RandomState::new()), cache: Mutex::default() }
    }

    /// Forgets every cached result, positive and negative.
    pub fn invalidate_all(&self) {
        *self.lock() = Cache::default();
    }

    /// Number of cached entries, expired ones included until they are purged.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The validator behind the cache.
    pub fn inner(&self) -> &V {
        &self.inner
    }

    fn key(&self, token: &str) -> Key {
        let high = self.hashers.0.hash_one(token) as u128;
        let low = self.hashers.1.hash_one(token) as u128;
        (high << 64) | low
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        // The cache holds no invariant a panic elsewhere could break half-way; keep using it.
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl<V: TokenValidator> TokenValidator for CachingValidator<V> {
    async fn validate(&self, token: &str) -> Result<Context, AuthError> {
        let key = self.key(token);
        if let Some(cached) = self.lock().get(key, Instant::now()) {
            return cached.ok_or(AuthError::Invalid);
        }
        let result = self.inner.validate(token).await;
        let now = Instant::now();
        match result {
            Ok(context) => {
                let Ok(remaining) = (context.expires_at - Utc::now()).to_std() else {
                    return Err(AuthError::Invalid);
                };
                if remaining.is_zero() {
                    return Err(AuthError::Invalid);
                }
                let expires = now + remaining.min(self.config.ttl);
                self.lock().insert(key, Some(context.clone()), expires, now, self.config.capacity);
                Ok(context)
            }
            Err(AuthError::Invalid) => {
                let expires = now + self.config.negative_ttl;
                self.lock().insert(key, None, expires, now, self.config.capacity);
                Err(AuthError::Invalid)
            }
            // Identity trouble is not the token's fault: do not remember it.
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::context::tests::member;

    /// Accepts tokens starting with "good", counting every call that reaches it.
    #[derive(Default)]
    struct Counting {
        calls: AtomicUsize,
        lifetime: Option<chrono::Duration>,
        unavailable: bool,
    }

    #[async_trait]
    impl TokenValidator for Counting {
        async fn validate(&self, token: &str) -> Result<Context, AuthError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.unavailable {
                return Err(AuthError::Unavailable("down".into()));
            }
            if !token.starts_with("good") {
                return Err(AuthError::Invalid);
            }
            let mut ctx = member("p1");
            ctx.user_id = token.to_string();
            if let Some(lifetime) = self.lifetime {
                ctx.expires_at = Utc::now() + lifetime;
            }
            Ok(ctx)
        }
    }

    fn cache(counting: Counting, config: CacheConfig) -> CachingValidator<Arc<Counting>> {
        CachingValidator::with_config(Arc::new(counting), config)
    }

    fn calls(v: &CachingValidator<Arc<Counting>>) -> usize {
        v.inner().calls.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn hits_do_not_revalidate() {
        let v = cache(Counting::default(), CacheConfig::default());
        let first = v.validate("good-1").await.unwrap();
        let second = v.validate("good-1").await.unwrap();
        assert_eq!(first, second);
        assert_eq!(calls(&v), 1);
        v.validate("good-2").await.unwrap();
        assert_eq!(calls(&v), 2);
    }

    #[tokio::test]
    async fn ttl_expiry_revalidates() {
        let config = CacheConfig { ttl: Duration::from_millis(50), ..CacheConfig::default() };
        let v = cache(Counting::default(), config);
        v.validate("good").await.unwrap();
        v.validate("good").await.unwrap();
        assert_eq!(calls(&v), 1);
        tokio::time::sleep(Duration::from_millis(80)).await;
        v.validate("good").await.unwrap();
        assert_eq!(calls(&v), 2);
    }

    #[tokio::test]
    async fn token_expiry_bounds_the_entry() {
        let counting = Counting { lifetime: Some(chrono::Duration::milliseconds(300)), ..Counting::default() };
        let v = cache(counting, CacheConfig::default());
        v.validate("good").await.unwrap();
        v.validate("good").await.unwrap();
        assert_eq!(calls(&v), 1);
        tokio::time::sleep(Duration::from_millis(350)).await;
        v.validate("good").await.unwrap();
        assert_eq!(calls(&v), 2);
    }

    #[tokio::test]
    async fn already_expired_context_is_refused() {
        let counting = Counting { lifetime: Some(chrono::Duration::seconds(-1)), ..Counting::default() };
        let v = cache(counting, CacheConfig::default());
        assert!(matches!(v.validate("good").await, Err(AuthError::Invalid)));
        assert!(v.is_empty());
    }

    #[tokio::test]
    async fn negative_results_are_cached_briefly() {
        let config = CacheConfig { negative_ttl: Duration::from_millis(50), ..CacheConfig::default() };
        let v = cache(Counting::default(), config);
        for _ in 0..5 {
            assert!(matches!(v.validate("bad").await, Err(AuthError::Invalid)));
        }
        assert_eq!(calls(&v), 1);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(matches!(v.validate("bad").await, Err(AuthError::Invalid)));
        assert_eq!(calls(&v), 2);
    }

    #[tokio::test]
    async fn identity_failures_are_not_cached() {
        let v = cache(Counting { unavailable: true, ..Counting::default() }, CacheConfig::default());
        assert!(matches!(v.validate("good").await, Err(AuthError::Unavailable(_))));
        assert!(matches!(v.validate("good").await, Err(AuthError::Unavailable(_))));
        assert_eq!(calls(&v), 2);
        assert!(v.is_empty());
    }

    #[tokio::test]
    async fn capacity_bound_evicts_soonest_expiring() {
        let config = CacheConfig { capacity: 3, ..CacheConfig::default() };
        let v = cache(Counting::default(), config);
        for t in ["good-a", "good-b", "good-c"] {
            v.validate(t).await.unwrap();
        }
        assert_eq!(v.len(), 3);
        // A bad token pushes out the oldest valid one ...
        let _ = v.validate("bad-1").await;
        assert_eq!(v.len(), 3);
        v.validate("good-a").await.unwrap();
        assert_eq!(calls(&v), 5, "good-a was evicted and revalidated");
        // ... and later bad tokens displace the earlier negative entry, not the valid ones.
        let _ = v.validate("bad-2").await;
        let calls_before = calls(&v);
        let _ = v.validate("bad-3").await;
        v.validate("good-a").await.unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(calls(&v), calls_before + 1, "good-a stayed cached while bad tokens churned");
    }

    #[tokio::test]
    async fn invalidate_all_forgets_everything() {
        let v = cache(Counting::default(), CacheConfig::default());
        v.validate("good").await.unwrap();
        let _ = v.validate("bad").await;
        assert_eq!(v.len(), 2);
        v.invalidate_all();
        assert!(v.is_empty());
        v.validate("good").await.unwrap();
        assert_eq!(calls(&v), 3);
    }
}
