//! New work before old: what a watch reports live (an object created or edited) goes to
//! its controller at once, while what a (re)list reports (every object, at start-up or
//! after a watch expired) waits in a backlog released a few at a time as reconciles
//! finish. A cold start over 10,000 entries then never stands between a person's new
//! entry or approval and the cluster: the controller's queue holds at most a few
//! listed objects ahead of it.
//!
//! The backlog holds references, not objects: the controller reads each object from
//! its cache when it runs.

use std::{
    collections::{HashMap, VecDeque},
    pin::pin,
    sync::Arc,
    time::Duration,
};

use futures::{Stream, StreamExt, channel::mpsc};
use kube::runtime::{reflector::ObjectRef, watcher};
use tokio::sync::Semaphore;

use super::{Kind, Wakes};

/// How long the backlog waits for a finished reconcile before it releases one anyway:
/// a released object that never runs (deleted before its turn) must not stall it.
const SLOT_WAIT: Duration = Duration::from_millis(250);

/// Slots for listed objects in the controllers' queues, given back as reconciles
/// finish, shared by every kind.
pub struct Pacer {
    slots: Semaphore,
    capacity: usize,
}

impl Pacer {
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: Semaphore::new(capacity),
            capacity,
        }
    }

    /// A reconcile finished: one more listed object may go.
    pub fn finished(&self) {
        if self.slots.available_permits() < self.capacity {
            self.slots.add_permits(1);
        }
    }

    /// Waits for a slot, or for [`SLOT_WAIT`].
    async fn slot(&self) {
        if let Ok(Ok(permit)) = tokio::time::timeout(SLOT_WAIT, self.slots.acquire()).await {
            permit.forget();
        }
    }
}

/// What a controller is fed from its watch: objects seen live, at once, and
/// references to listed objects, paced by a [`Pacer`]; either only when the object's
/// `wakes` hash changed since it was last seen.
pub struct Fed<K: Kind> {
    pub live: mpsc::UnboundedReceiver<Result<K, watcher::Error>>,
    pub listed: mpsc::UnboundedReceiver<ObjectRef<K>>,
}

/// Splits `events` into what [`Fed`] holds, in a task of its own; every object seen
/// written or deleted live is told to `tap` too, whether it wakes its controller or
/// not (for controllers that follow this kind without a watch of their own).
pub fn split<K: Kind>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    wakes: Wakes<K>,
    pacer: Arc<Pacer>,
    tap: Option<mpsc::UnboundedSender<ObjectRef<K>>>,
) -> Fed<K> {
    let told = move |object: &K| {
        if let Some(tap) = &tap {
            let _ = tap.unbounded_send(ObjectRef::from_obj(object));
        }
    };
    let (live, live_out) = mpsc::unbounded();
    let (listed, listed_out) = mpsc::unbounded();
    tokio::spawn(async move {
        let mut events = pin!(events);
        let mut seen = Seen::<K>::new(wakes);
        let mut backlog = VecDeque::new();
        loop {
            tokio::select! {
                biased;
                event = events.next() => match event {
                    None => break,
                    Some(Ok(watcher::Event::InitApply(object))) => {
                        if seen.changed(&object) {
                            backlog.push_back(ObjectRef::from_obj(&object));
                        }
                    }
                    Some(Ok(watcher::Event::Apply(object))) => {
                        told(&object);
                        if seen.changed(&object) && live.unbounded_send(Ok(object)).is_err() {
                            break;
                        }
                    }
                    Some(Ok(watcher::Event::Delete(object))) => {
                        told(&object);
                        seen.forget(&object);
                    }
                    Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
                    Some(Err(error)) => {
                        if live.unbounded_send(Err(error)).is_err() {
                            break;
                        }
                    }
                },
                () = pacer.slot(), if !backlog.is_empty() => {
                    let next = backlog.pop_front().expect("not empty");
                    if listed.unbounded_send(next).is_err() {
                        break;
                    }
                }
            }
        }
    });
    Fed {
        live: live_out,
        listed: listed_out,
    }
}

/// The `wakes` hash each object had when last seen.
struct Seen<K: Kind> {
    wakes: Wakes<K>,
    hashes: HashMap<ObjectRef<K>, u64>,
}

impl<K: Kind> Seen<K> {
    fn new(wakes: Wakes<K>) -> Self {
        Self {
            wakes,
            hashes: HashMap::new(),
        }
    }

    /// Whether `object` should wake its controller: its hash changed, or it has none.
    fn changed(&mut self, object: &K) -> bool {
        let Some(hash) = (self.wakes)(object) else {
            return true;
        };
        self.hashes.insert(ObjectRef::from_obj(object), hash) != Some(hash)
    }

    fn forget(&mut self, object: &K) {
        self.hashes.remove(&ObjectRef::from_obj(object));
    }
}
