//! The fake's in-memory account: servers, actions, SSH keys, faults and call log.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A server record.
#[derive(Debug, Clone)]
pub struct ServerRec {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Server type name.
    pub server_type: String,
    /// Location name.
    pub location: String,
    /// Image name.
    pub image: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Public IPv4.
    pub ipv4: Ipv4Addr,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// The create action; the server runs once it has succeeded.
    pub create_action: i64,
    /// User data as sent.
    pub user_data: Option<String>,
}

/// An action record; its status is derived from time and readiness.
#[derive(Debug, Clone)]
pub struct ActionRec {
    /// Id.
    pub id: i64,
    /// Command, e.g. `create_server`.
    pub command: String,
    /// When it started.
    pub started_at: Instant,
    /// Wall clock start.
    pub started: DateTime<Utc>,
    /// How long it runs at least.
    pub duration: Duration,
    /// Server it concerns.
    pub server_id: i64,
    /// Set once the test host (if any) is up; the action cannot succeed before.
    pub ready: bool,
    /// Set when the action failed (code, message).
    pub error: Option<(String, String)>,
    /// When it was first seen finished.
    pub finished: Option<DateTime<Utc>>,
}

impl ActionRec {
    /// `running`, `success` or `error`, and progress in percent.
    pub fn status(&self) -> (&'static str, i64) {
        let elapsed = self.started_at.elapsed();
        if self.error.is_some() && elapsed >= self.duration {
            return ("error", 100);
        }
        if elapsed >= self.duration && self.ready {
            return ("success", 100);
        }
        let pct = if self.duration.is_zero() {
            99
        } else {
            ((elapsed.as_millis() * 100) / self.duration.as_millis()).min(99) as i64
        };
        ("running", pct)
    }
}

/// A registered SSH key.
#[derive(Debug, Clone)]
pub struct SshKeyRec {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// OpenSSH public key line.
    pub public_key: String,
    /// MD5 fingerprint, colon separated.
    pub fingerprint: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Creation time.
    pub created: DateTime<Utc>,
}

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer with this 5xx status (`500` service_error, `503` unavailable, `502`/`504`
    /// an HTML page as from a load balancer).
    ServerError {
        /// HTTP status.
        status: u16,
    },
    /// Answer `429 rate_limit_exceeded` with `RateLimit-*` headers resetting after N seconds.
    RateLimit {
        /// Seconds until `RateLimit-Reset` (when a budget of 3600 would be full again).
        reset_after_secs: u64,
        /// Also send `Retry-After` with this many seconds.
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// Answer `412 resource_unavailable` (no capacity).
    ResourceUnavailable,
    /// Sleep this long before handling the call normally.
    Delay {
        /// Milliseconds.
        ms: u64,
    },
    /// Handle the call normally, then answer `504` as a load balancer whose backend was
    /// too slow would: the change happened, the client does not know.
    LoseResponse,
    /// Create the server, but its test host's sshd presents a host key of its own instead
    /// of the one in the user data.
    WrongHostKey,
    /// Accept the call, but the action it starts ends in `error` with this code (e.g.
    /// `resource_unavailable` when placement fails after the create was accepted).
    ActionError {
        /// Error code of the failed action.
        code: String,
    },
    /// Handle the call normally, but any action it starts runs this long.
    SlowAction {
        /// Milliseconds.
        ms: u64,
    },
}

/// A fault armed for the next `count` calls of one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Route as written in the API docs, e.g. `/v1/servers` or `/v1/servers/{id}`.
    pub path: String,
    /// How many calls it hits.
    pub count: u32,
    /// What it does.
    pub fault: FaultKind,
}

/// One call seen by the fake.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRecord {
    /// Method.
    pub method: String,
    /// Route pattern.
    pub path: String,
    /// Status answered; `0` for a call delayed by a fault (logged before its answer).
    pub status: u16,
}

/// The mutable state behind the fake.
#[derive(Debug, Default)]
pub struct Account {
    /// Next id for any object.
    pub next_id: i64,
    /// Servers by id.
    pub servers: BTreeMap<i64, ServerRec>,
    /// Actions by id.
    pub actions: BTreeMap<i64, ActionRec>,
    /// SSH keys by id.
    pub ssh_keys: BTreeMap<i64, SshKeyRec>,
    /// Armed faults, in order.
    pub faults: VecDeque<Fault>,
    /// Every call answered.
    pub calls: Vec<CallRecord>,
    /// (server type, location) pairs with no capacity.
    pub unavailable: Vec<(String, String)>,
    /// Default duration of new actions.
    pub action_duration: Duration,
    /// The request budget (Hetzner: 3600, refilled one per second).
    pub budget: Budget,
}

/// A token bucket like Hetzner's rate limit: `limit` requests, refilled linearly.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Size of the bucket.
    pub limit: u32,
    /// Requests refilled per second.
    pub per_second: f64,
    tokens: f64,
    last: Instant,
}

impl Default for Budget {
    fn default() -> Self {
        Self::new(3600, 1.0)
    }
}

impl Budget {
    /// A full bucket.
    pub fn new(limit: u32, per_second: f64) -> Self {
        Self {
            limit,
            per_second,
            tokens: limit as f64,
            last: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let add = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + add).min(self.limit as f64);
        self.last = now;
    }

    /// Takes one request from the budget; `false` when it is empty.
    pub fn take(&mut self) -> bool {
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// (limit, remaining, unix time when full) for the `RateLimit-*` headers.
    pub fn headers(&mut self) -> (u32, u32, u64) {
        self.refill();
        let missing = self.limit as f64 - self.tokens;
        let until_full = if self.per_second > 0.0 {
            missing / self.per_second
        } else {
            0.0
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let reset = (now + until_full).ceil() as u64;
        (self.limit, self.tokens.floor() as u32, reset)
    }
}

impl Account {
    /// A fresh id.
    pub fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// Takes the first armed fault matching a call, decrementing its count.
    pub fn take_fault(&mut self, method: &str, path: &str) -> Option<FaultKind> {
        let idx = self
            .faults
            .iter()
            .position(|f| f.method.eq_ignore_ascii_case(method) && f.path == path && f.count > 0)?;
        let f = self.faults.get_mut(idx)?;
        f.count -= 1;
        let kind = f.fault.clone();
        if f.count == 0 {
            self.faults.remove(idx);
        }
        Some(kind)
    }

    /// Starts an action.
    pub fn start_action(
        &mut self,
        command: &str,
        server_id: i64,
        duration: Duration,
        ready: bool,
    ) -> i64 {
        let id = self.id();
        self.actions.insert(
            id,
            ActionRec {
                id,
                command: command.to_string(),
                started_at: Instant::now(),
                started: Utc::now(),
                duration,
                server_id,
                ready,
                error: None,
                finished: None,
            },
        );
        id
    }

    /// The JSON of an action, recording its finish time once finished.
    pub fn action_json(&mut self, id: i64) -> Option<Value> {
        let a = self.actions.get_mut(&id)?;
        let (status, progress) = a.status();
        if status != "running" && a.finished.is_none() {
            a.finished = Some(Utc::now());
        }
        Some(super::json::action(a, status, progress))
    }
}
