//! The fake's in-memory account: servers, actions, SSH keys, capacity and rate limit.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dayshift_provisioning::LabelSelector;
use serde_json::Value;

/// True when a (stored, already validated) label selector matches the labels.
pub fn selector_matches(selector: &str, labels: &BTreeMap<String, String>) -> bool {
    LabelSelector::parse(selector).is_ok_and(|s| s.matches(labels))
}

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
    /// Resources it concerns: (id, type), e.g. `(42, "server")`, `(7, "firewall")`.
    pub resources: Vec<(i64, &'static str)>,
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

/// One firewall rule, as stored (validated and normalised by `firewall_rules`).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleRec {
    /// `in` or `out`.
    pub direction: String,
    /// `tcp`, `udp`, `icmp`, `esp` or `gre`.
    pub protocol: String,
    /// Port, range (`1024-5000`) or `any`; only for `tcp` and `udp`.
    pub port: Option<String>,
    /// CIDRs for direction `in`.
    pub source_ips: Vec<String>,
    /// CIDRs for direction `out`.
    pub destination_ips: Vec<String>,
    /// Free text.
    pub description: Option<String>,
}

/// A firewall.
#[derive(Debug, Clone)]
pub struct FirewallRec {
    /// Id.
    pub id: i64,
    /// Name (unique).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// Rules, in order.
    pub rules: Vec<RuleRec>,
    /// Servers it is applied to directly.
    pub servers: Vec<i64>,
    /// Label selectors it is applied through.
    pub selectors: Vec<String>,
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
    /// Firewalls by id.
    pub firewalls: BTreeMap<i64, FirewallRec>,
    /// (server type, location) pairs with no capacity.
    pub unavailable: Vec<(String, String)>,
    /// Default duration of new actions.
    pub action_duration: Duration,
    /// The request budget (Hetzner: 3600, refilled one per second).
    pub budget: Budget,
    /// Answers sent (for `X-Correlation-Id`).
    pub answered: u64,
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

    /// Starts an action on a server.
    pub fn start_action(
        &mut self,
        command: &str,
        server_id: i64,
        duration: Duration,
        ready: bool,
    ) -> i64 {
        self.start_action_on(command, vec![(server_id, "server")], duration, ready)
    }

    /// Starts an action on any resources, e.g. a firewall and a server.
    pub fn start_action_on(
        &mut self,
        command: &str,
        resources: Vec<(i64, &'static str)>,
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
                resources,
                ready,
                error: None,
                finished: None,
            },
        );
        id
    }

    /// Ids of the firewalls applied to a server (directly or through a label selector).
    pub fn firewalls_of(&self, server: &ServerRec) -> Vec<i64> {
        self.firewalls
            .values()
            .filter(|f| {
                f.servers.contains(&server.id)
                    || f.selectors
                        .iter()
                        .any(|sel| selector_matches(sel, &server.labels))
            })
            .map(|f| f.id)
            .collect()
    }

    /// Servers a label selector matches now.
    pub fn servers_matching(&self, selector: &str) -> Vec<i64> {
        self.servers
            .values()
            .filter(|s| selector_matches(selector, &s.labels))
            .map(|s| s.id)
            .collect()
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
