//! Shared parts of the scheduler's tests: an in-memory provider, a launcher that needs no
//! bootstrap, and what the ingress does when nodes register and heartbeat.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use dayshift_config::clock::{Clock, ManualClock};
use dayshift_provisioning::{
    LabelSelector, Provider, ProviderError, Server, ServerSpec, ServerStatus, ServerType,
};
use dayshift_scheduler::{LaunchError, Launcher, MemoryStore, NodeRecord, NodeState, NodeStore};

/// A provider that lives in memory: servers are created running at once.
pub struct SimProvider {
    pub clock: Arc<ManualClock>,
    pub servers: Mutex<BTreeMap<String, Server>>,
    next: Mutex<u64>,
}

impl SimProvider {
    pub fn new(clock: Arc<ManualClock>) -> Self {
        SimProvider {
            clock,
            servers: Mutex::new(BTreeMap::new()),
            next: Mutex::new(0),
        }
    }

    pub fn count(&self) -> usize {
        self.servers.lock().unwrap().len()
    }
}

#[async_trait]
impl Provider for SimProvider {
    fn kind(&self) -> &'static str {
        "sim"
    }
    async fn create(&self, spec: &ServerSpec) -> Result<Server, ProviderError> {
        spec.validate()?;
        let mut n = self.next.lock().unwrap();
        *n += 1;
        let s = Server {
            id: n.to_string(),
            name: spec.name.clone(),
            status: ServerStatus::Running,
            ipv4: Some(Ipv4Addr::new(127, 0, 0, 1)),
            labels: spec.labels.clone(),
            server_type: spec.server_type.clone(),
            location: spec.location.clone(),
            created: self.clock.now(),
            port: None,
        };
        self.servers.lock().unwrap().insert(s.id.clone(), s.clone());
        Ok(s)
    }
    async fn get(&self, id: &str) -> Result<Server, ProviderError> {
        self.servers
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| ProviderError::NotFound(id.into()))
    }
    async fn list(&self, selector: &LabelSelector) -> Result<Vec<Server>, ProviderError> {
        Ok(self
            .servers
            .lock()
            .unwrap()
            .values()
            .filter(|s| selector.matches(&s.labels))
            .cloned()
            .collect())
    }
    async fn delete(&self, id: &str) -> Result<(), ProviderError> {
        self.servers
            .lock()
            .unwrap()
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| ProviderError::NotFound(id.into()))
    }
    async fn server_types(&self) -> Result<Vec<ServerType>, ProviderError> {
        Ok(vec![])
    }
    fn billing_rule(&self) -> dayshift_config::billing::BillingRule {
        dayshift_config::billing::BillingRule::HETZNER
    }
}

/// Builds a labelled spec; no bootstrap (as for the `local` provider).
pub struct NoBootstrap;

#[async_trait]
impl Launcher for NoBootstrap {
    async fn spec(&self, node: &NodeRecord) -> Result<ServerSpec, LaunchError> {
        Ok(ServerSpec {
            name: format!("office-{}", node.id),
            server_type: "ccx63".into(),
            image: "ubuntu-24.04".into(),
            location: Some("fsn1".into()),
            labels: dayshift_provisioning::dayshift_labels("office", &node.id, &node.pool),
            ssh_keys: vec![],
            user_data: None,
            fallbacks: vec![],
        })
    }
    async fn bootstrap(&self, _node: &NodeRecord, _server: &Server) -> Result<(), LaunchError> {
        Ok(())
    }
}

pub fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// What the ingress does when a node registers and heartbeats: loading -> ready once
/// `boot` has passed since it was planned, heartbeats while ready.
pub async fn simulate_nodes(store: &MemoryStore, now: DateTime<Utc>, boot: Duration) {
    for n in store.live_nodes().await.unwrap() {
        let mut next = n.clone();
        match n.state {
            NodeState::Loading if now - n.planned_at >= boot => {
                next.state = NodeState::Ready;
                next.ready_at = Some(now);
                next.last_heartbeat = Some(now);
            }
            NodeState::Ready | NodeState::Draining => next.last_heartbeat = Some(now),
            _ => continue,
        }
        store
            .update_node(&next, n.state, now, "registered")
            .await
            .unwrap();
    }
}

/// A monthly budget of `cap` EUR for pool `chat` at 1 EUR per hour under Hetzner's rule.
pub fn chat_budget(cap: &str) -> dayshift_scheduler::budget::Budget {
    use std::str::FromStr;
    dayshift_scheduler::budget::Budget {
        monthly_cap: rust_decimal::Decimal::from_str(cap).expect("a decimal cap"),
        rule: dayshift_config::billing::BillingRule::HETZNER,
        prices: BTreeMap::from([(
            "chat".to_string(),
            dayshift_config::billing::Price {
                hourly: rust_decimal::Decimal::ONE,
                monthly: None,
            },
        )]),
        ranges: BTreeMap::new(),
    }
}
