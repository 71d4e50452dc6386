//! Live routing state: per pool, the registered nodes with their in-flight counts,
//! whether a node is on its way, and a wake-up for requests waiting for one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use dayshift_config::protocol::{LoadFigures, Secret};
use tokio::sync::Notify;

use super::upstream::NodeClient;
use crate::control::ScaleView;

/// One registered node as the gateway sees it.
pub struct NodeHandle {
    /// Node id.
    pub id: String,
    /// Pool.
    pub pool: String,
    /// API base URL without trailing `/`.
    pub api_url: String,
    /// Pinned certificate sha256.
    pub fingerprint: Option<String>,
    /// Client for this node (pinned TLS).
    pub client: NodeClient,
    /// sha256 of the session token.
    pub session_hash: String,
    /// The node's API credential (from its registration), sent on every proxied request;
    /// held in memory only, gone with the handle.
    pub api_token: Secret,
    in_flight: AtomicU32,
    draining: AtomicBool,
    drain_requested: AtomicBool,
    failed: AtomicBool,
    loading: AtomicBool,
    /// When the handle was made; `last_heartbeat` counts from here.
    born: Instant,
    /// Microseconds from `born` to the last heartbeat (an atomic, so routing takes no lock).
    last_heartbeat: AtomicU64,
    load: Mutex<LoadFigures>,
}

impl NodeHandle {
    /// A new handle, alive now.
    pub fn new(
        id: String,
        pool: String,
        api_url: String,
        fingerprint: Option<String>,
        client: NodeClient,
        session_hash: String,
        api_token: Secret,
    ) -> NodeHandle {
        NodeHandle {
            id,
            pool,
            api_url: api_url.trim_end_matches('/').to_string(),
            fingerprint,
            client,
            session_hash,
            api_token,
            in_flight: AtomicU32::new(0),
            draining: AtomicBool::new(false),
            drain_requested: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            loading: AtomicBool::new(false),
            born: Instant::now(),
            last_heartbeat: AtomicU64::new(0),
            load: Mutex::new(LoadFigures::default()),
        }
    }
    /// Requests the gateway has in flight on this node.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
    /// True once the node said it drains or the scheduler asked it to.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
    /// Marks the node draining (no new requests).
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
    /// True when the scheduler asked for a drain (the next heartbeat says so).
    pub fn drain_requested(&self) -> bool {
        self.drain_requested.load(Ordering::Relaxed)
    }
    /// Records a heartbeat.
    pub fn heartbeat(&self, load: LoadFigures) {
        self.failed.store(false, Ordering::Relaxed);
        let since_born = u64::try_from(self.born.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_heartbeat.store(since_born, Ordering::Relaxed);
        if let Ok(mut l) = self.load.lock() {
            *l = load;
        }
    }
    /// Changes with every heartbeat (for noticing one; not a time to read).
    pub fn heartbeat_mark(&self) -> u64 {
        self.last_heartbeat.load(Ordering::Relaxed)
    }
    /// Time since the last heartbeat (or registration).
    pub fn silence(&self) -> Duration {
        let last = Duration::from_micros(self.last_heartbeat.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(last)
    }
    /// Records whether the node says it is still loading (not routable while it is).
    pub fn set_loading(&self, loading: bool) {
        self.loading.store(loading, Ordering::Relaxed);
    }
    /// Takes the node out of routing until its next heartbeat (a request to it failed).
    pub fn mark_failed(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }
    /// True when the node may take requests: not draining, not failed since its last
    /// heartbeat, and heard from within `stale_after`.
    pub fn routable(&self, stale_after: Duration) -> bool {
        !self.is_draining()
            && !self.failed.load(Ordering::Relaxed)
            && !self.loading.load(Ordering::Relaxed)
            && self.silence() <= stale_after
    }
    /// Last load figures.
    pub fn load(&self) -> LoadFigures {
        self.load.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// How many more requests in flight than the least-loaded node a request's preferred
/// node ([`PoolRuntime::pick`]) may have and still be given it.
pub const AFFINITY_SLACK: u32 = 4;

/// The rendezvous (highest random weight) score of node `id` for `affinity`: the node
/// with the highest score is preferred; adding or removing a node moves only the
/// conversations that node wins or held.
fn rendezvous(affinity: u64, id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    affinity.hash(&mut h);
    id.hash(&mut h);
    h.finish()
}

/// Counts one request in flight on a node until dropped.
pub struct InFlight(pub Arc<NodeHandle>);

impl InFlight {
    /// Starts counting.
    pub fn start(node: Arc<NodeHandle>) -> InFlight {
        node.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(node)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Routing state of one pool.
pub struct PoolRuntime {
    /// Pool name.
    pub name: String,
    /// Model clients ask for.
    pub model: String,
    /// Longest wait for a node on its way.
    pub queue_timeout: Duration,
    /// Whether a conversation goes to the node that holds its start (the pool's nodes keep
    /// a prefix cache, its `prefix_cache`); without, every request to the least-loaded node.
    pub conversation_affinity: bool,
    nodes: RwLock<Vec<Arc<NodeHandle>>>,
    on_the_way: AtomicU32,
    queued: AtomicU32,
    scale: RwLock<ScaleView>,
    changed: Notify,
}

/// Counts one request waiting for a node of a pool until dropped.
pub struct Queued(Arc<PoolRuntime>);

impl Queued {
    /// Starts counting.
    pub fn start(pool: Arc<PoolRuntime>) -> Queued {
        pool.queued.fetch_add(1, Ordering::Relaxed);
        Queued(pool)
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PoolRuntime {
    /// An empty pool whose requests go by conversation (see [`PoolRuntime::pick`]).
    pub fn new(name: String, model: String, queue_timeout: Duration) -> PoolRuntime {
        PoolRuntime {
            name,
            model,
            queue_timeout,
            conversation_affinity: true,
            nodes: RwLock::new(Vec::new()),
            on_the_way: AtomicU32::new(0),
            queued: AtomicU32::new(0),
            scale: RwLock::new(ScaleView::default()),
            changed: Notify::new(),
        }
    }

    /// The routable node for a request whose conversation hashes to `affinity`
    /// (see `gateway::affinity`), skipping `exclude`: the node rendezvous hashing
    /// prefers for it, while that node has at most [`AFFINITY_SLACK`] more requests in
    /// flight than the least-loaded one (a conversation's turns then meet the node whose
    /// KV cache holds their start); else, without an affinity, or in a pool without
    /// [`PoolRuntime::conversation_affinity`], the least-loaded node.
    pub fn pick(
        &self,
        affinity: Option<u64>,
        exclude: &[String],
        stale_after: Duration,
    ) -> Option<Arc<NodeHandle>> {
        let nodes = self.nodes.read().ok()?;
        let open = || {
            nodes
                .iter()
                .filter(|n| n.routable(stale_after))
                .filter(|n| !exclude.iter().any(|e| e == &n.id))
        };
        let least = open().min_by_key(|n| n.in_flight())?;
        let Some(affinity) = affinity.filter(|_| self.conversation_affinity) else {
            return Some(least.clone());
        };
        let preferred = open().max_by_key(|n| rendezvous(affinity, &n.id))?;
        if preferred.in_flight() <= least.in_flight().saturating_add(AFFINITY_SLACK) {
            Some(preferred.clone())
        } else {
            Some(least.clone())
        }
    }

    /// Every registered node (draining and silent ones included).
    pub fn nodes(&self) -> Vec<Arc<NodeHandle>> {
        self.nodes.read().map(|n| n.clone()).unwrap_or_default()
    }

    /// Number of routable nodes.
    pub fn ready_count(&self, stale_after: Duration) -> usize {
        self.nodes
            .read()
            .map(|n| n.iter().filter(|n| n.routable(stale_after)).count())
            .unwrap_or(0)
    }

    /// Nodes the scheduler says are on their way (creating … loading).
    pub fn on_the_way(&self) -> u32 {
        self.on_the_way.load(Ordering::Relaxed)
    }

    /// Sets the number of nodes on their way; requests wait for them instead of a 503.
    pub fn set_on_the_way(&self, count: u32) {
        self.on_the_way.store(count, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// Requests waiting for a node of this pool now.
    pub fn queued(&self) -> u32 {
        self.queued.load(Ordering::Relaxed)
    }

    /// The scheduler's last scale decision for the pool, as the gateway knows it.
    pub fn scale(&self) -> ScaleView {
        self.scale.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Records the scheduler's scale decision and wakes waiting requests.
    pub fn set_scale(&self, view: ScaleView) {
        if let Ok(mut s) = self.scale.write() {
            *s = view;
        }
        self.changed.notify_waiters();
    }

    /// Adds or replaces a node (same id) and wakes waiting requests.
    pub fn insert(&self, node: Arc<NodeHandle>) {
        if let Ok(mut nodes) = self.nodes.write() {
            nodes.retain(|n| n.id != node.id);
            nodes.push(node);
        }
        self.changed.notify_waiters();
    }

    /// Removes a node by id; returns it.
    pub fn remove(&self, id: &str) -> Option<Arc<NodeHandle>> {
        let mut nodes = self.nodes.write().ok()?;
        let pos = nodes.iter().position(|n| n.id == id)?;
        let n = nodes.remove(pos);
        drop(nodes);
        self.changed.notify_waiters();
        Some(n)
    }

    /// Waits until the pool changes (a node registers, the on-the-way count moves).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// A future that completes on the next change; create it before checking state to
    /// not miss a wake-up.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

/// All pools and the node sessions.
pub struct Registry {
    pools: HashMap<String, Arc<PoolRuntime>>,
    by_model: HashMap<String, Arc<PoolRuntime>>,
    sessions: RwLock<HashMap<String, Arc<NodeHandle>>>,
}

impl Registry {
    /// Pools from the config.
    pub fn new(pools: Vec<PoolRuntime>) -> Registry {
        let mut by_name = HashMap::new();
        let mut by_model = HashMap::new();
        for p in pools {
            let p = Arc::new(p);
            by_model.insert(p.model.clone(), p.clone());
            by_name.insert(p.name.clone(), p);
        }
        Registry {
            pools: by_name,
            by_model,
            sessions: RwLock::new(HashMap::new()),
        }
    }
    /// A pool by name.
    pub fn pool(&self, name: &str) -> Option<&Arc<PoolRuntime>> {
        self.pools.get(name)
    }
    /// The pool serving `model`.
    pub fn pool_for_model(&self, model: &str) -> Option<&Arc<PoolRuntime>> {
        self.by_model.get(model)
    }
    /// Every pool, sorted by name.
    pub fn pools(&self) -> Vec<Arc<PoolRuntime>> {
        let mut v: Vec<_> = self.pools.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
    /// Registers a node: routing plus its session.
    pub fn add_node(&self, node: Arc<NodeHandle>) {
        if let Some(pool) = self.pools.get(&node.pool) {
            pool.insert(node.clone());
        }
        if let Ok(mut s) = self.sessions.write() {
            s.retain(|_, n| n.id != node.id);
            s.insert(node.session_hash.clone(), node);
        }
    }
    /// The node whose session token hashes to `hash`.
    pub fn session(&self, hash: &str) -> Option<Arc<NodeHandle>> {
        self.sessions.read().ok()?.get(hash).cloned()
    }
    /// A node by id.
    pub fn node(&self, id: &str) -> Option<Arc<NodeHandle>> {
        self.sessions
            .read()
            .ok()?
            .values()
            .find(|n| n.id == id)
            .cloned()
    }
    /// Takes a node out of routing and forgets its session.
    pub fn remove_node(&self, id: &str) -> Option<Arc<NodeHandle>> {
        if let Ok(mut s) = self.sessions.write() {
            s.retain(|_, n| n.id != id);
        }
        self.pools.values().find_map(|p| p.remove(id))
    }
    /// Asks a node to drain: no new requests; its next heartbeat answer says `drain`.
    pub fn request_drain(&self, id: &str) -> bool {
        match self.node(id) {
            Some(n) => {
                n.drain_requested.store(true, Ordering::Relaxed);
                n.set_draining();
                true
            }
            None => false,
        }
    }
}
