//! Provider reads shared between the references that name the same secret: one read
//! per distinct secret per refresh window however many entries reference it, and only
//! a few reads in flight at once, so that a cold start does not stampede the provider
//! (Secrets Manager bills by the read and throttles bursts).
//!
//! Only the read is shared: every reference is still checked against what its own
//! namespace may read before it gets a value, and references whose credentials differ
//! never share.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{OnceCell, Semaphore};

use crate::secrets::{self, SecretValue};

/// How many provider reads may be in flight at once.
pub const READS_IN_FLIGHT: usize = 8;

/// What makes two reads the same read: the same provider with the same credentials
/// (`source`), the same secret, and the same stage.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReadKey {
    pub source: String,
    pub secret_id: String,
    pub stage: String,
}

/// Reads made in the current window, by key.
pub struct SharedReads {
    window: Duration,
    in_flight: Semaphore,
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    by_key: HashMap<ReadKey, Arc<Slot>>,
    /// Slots made since expired ones were last swept out.
    made: usize,
}

struct Slot {
    at: Instant,
    read: OnceCell<Arc<SecretValue>>,
}

impl SharedReads {
    pub fn new(window: Duration, in_flight: usize) -> Self {
        Self {
            window,
            in_flight: Semaphore::new(in_flight.max(1)),
            slots: Mutex::default(),
        }
    }

    /// The value `key` names: read by `fetch` unless another reference read it in the
    /// current window, or is reading it now (then this waits for that read). A failed
    /// read is not shared: the next reference tries again.
    pub async fn read<F, Fut>(&self, key: &ReadKey, fetch: F) -> secrets::Result<Arc<SecretValue>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = secrets::Result<SecretValue>>,
    {
        let slot = self.slot(key, Instant::now());
        let read = slot.read.get_or_try_init(|| async {
            let _permit = self.in_flight.acquire().await;
            fetch().await.map(Arc::new)
        });
        read.await.cloned()
    }

    /// Forgets what was read of `secret_id`, from any source: the next reference reads
    /// it anew. For a rotation this operator made.
    pub fn forget(&self, secret_id: &str) {
        self.lock()
            .by_key
            .retain(|key, _| key.secret_id != secret_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The slot of `key` for a read at `now`: the current window's, or a new one.
    fn slot(&self, key: &ReadKey, now: Instant) -> Arc<Slot> {
        let fresh = |slot: &Slot| now.duration_since(slot.at) < self.window;
        let mut slots = self.lock();
        if let Some(slot) = slots.by_key.get(key).filter(|slot| fresh(slot)) {
            return slot.clone();
        }
        // Values of secrets nobody references any more go too, a sweep costing no
        // more than the slots made since the last.
        if slots.made > slots.by_key.len() / 2 {
            slots.by_key.retain(|_, slot| fresh(slot));
            slots.made = 0;
        }
        let slot = Arc::new(Slot {
            at: now,
            read: OnceCell::new(),
        });
        slots.by_key.insert(key.clone(), slot.clone());
        slots.made += 1;
        slot
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::secrets::SecretString;

    fn key(secret_id: &str) -> ReadKey {
        ReadKey {
            source: "aws".into(),
            secret_id: secret_id.into(),
            stage: "AWSCURRENT".into(),
        }
    }

    async fn read(
        reads: &SharedReads,
        key: &ReadKey,
        count: &AtomicUsize,
    ) -> secrets::Result<String> {
        let value = reads
            .read(key, || async {
                let n = count.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Ok(SecretValue {
                    version_id: format!("v{n}"),
                    value: SecretString::from("value"),
                })
            })
            .await?;
        Ok(value.version_id.clone())
    }

    #[tokio::test]
    async fn references_to_one_secret_share_one_read_per_window() {
        let reads = SharedReads::new(Duration::from_secs(3600), 2);
        let count = AtomicUsize::new(0);
        let db = key("db");
        let together = futures::future::join_all((0..50).map(|_| read(&reads, &db, &count)));
        let versions = together.await;
        assert!(versions.iter().all(|v| v.as_deref().ok() == Some("v0")));
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "one read for fifty references"
        );
        read(&reads, &key("other"), &count).await.expect("read");
        assert_eq!(
            count.load(Ordering::SeqCst),
            2,
            "another secret is another read"
        );
        reads.forget("db");
        assert_eq!(read(&reads, &db, &count).await.expect("read"), "v2");
    }

    #[tokio::test]
    async fn a_read_is_made_again_once_its_window_has_passed() {
        let reads = SharedReads::new(Duration::ZERO, 2);
        let count = AtomicUsize::new(0);
        read(&reads, &key("db"), &count).await.expect("read");
        read(&reads, &key("db"), &count).await.expect("read");
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_read_is_not_shared() {
        let reads = SharedReads::new(Duration::from_secs(3600), 2);
        let failed = reads
            .read(&key("db"), || async {
                Err(secrets::Error::Unavailable {
                    provider: "test",
                    action: "read".into(),
                    detail: "down".into(),
                })
            })
            .await;
        assert!(failed.is_err());
        let count = AtomicUsize::new(0);
        read(&reads, &key("db"), &count).await.expect("read");
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}
