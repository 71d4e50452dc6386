//! The Cloud Firewall attached to created servers: one the operator named, looked up by
//! name, or the one dayshift keeps (`firewall = "auto"`), created and its rules restored
//! whenever they drift.

use std::collections::HashMap;

use dayshift_config::firewall::Cidr;
use hcloud::models;
use hcloud::models::{rule, rule_response};
use reqwest12::Method;

use super::{HetznerProvider, NO_BODY};
use crate::firewall::{FirewallPolicy, ManagedFirewall, SetupError};
use crate::labels::LABEL_CLUSTER;

/// Label on every firewall dayshift made (besides the cluster label).
const LABEL_MANAGED: &str = "dayshift-managed";

/// A rule reduced to what decides its effect, comparable across spellings.
type RuleKey = (String, String, Option<String>, Vec<String>, Vec<String>);

impl HetznerProvider {
    /// The firewall id to put in a create request: `None` without `provider.firewall`;
    /// a named one is looked up once; the managed one is checked (and repaired) each time.
    pub(super) async fn firewall_for_create(&self) -> Result<Option<i64>, SetupError> {
        match &self.settings.firewall {
            None => Ok(None),
            Some(FirewallPolicy::Named(name)) => {
                let mut cached = self.setup.lock().await;
                if let Some(id) = cached.firewall {
                    return Ok(Some(id));
                }
                let id = self.named_firewall(name).await?;
                cached.firewall = Some(id);
                Ok(Some(id))
            }
            Some(FirewallPolicy::Managed(m)) => {
                let _one_at_a_time = self.setup.lock().await;
                self.ensure_managed_firewall(m).await.map(Some)
            }
        }
    }

    async fn firewalls_named(&self, name: &str) -> Result<Vec<models::Firewall>, SetupError> {
        let resp: models::ListFirewallsResponse = self
            .call(
                Method::GET,
                "/firewalls",
                &[("name", name.to_string())],
                NO_BODY,
            )
            .await?;
        Ok(resp
            .firewalls
            .into_iter()
            .filter(|f| f.name == name)
            .collect())
    }

    async fn named_firewall(&self, name: &str) -> Result<i64, SetupError> {
        let found = self.firewalls_named(name).await?;
        match found.as_slice() {
            [one] => {
                tracing::info!(
                    firewall = name,
                    id = one.id,
                    "created servers get this Cloud Firewall"
                );
                Ok(one.id)
            }
            [] => Err(SetupError::FirewallMissing {
                provider: "hetzner",
                name: name.to_string(),
                what: "Cloud Firewall",
                scope: String::new(),
                how: "Cloud Console → Firewalls → Create Firewall, or `hcloud firewall create --name NAME`",
            }),
            many => Err(SetupError::FirewallAmbiguous {
                provider: "hetzner",
                name: name.to_string(),
                what: "Cloud Firewall",
                scope: String::new(),
                count: many.len(),
            }),
        }
    }

    /// Creates the managed firewall, or sets its rules back when they differ.
    async fn ensure_managed_firewall(&self, m: &ManagedFirewall) -> Result<i64, SetupError> {
        let wanted = wanted_rules(m);
        let labels: HashMap<String, String> = [
            (LABEL_CLUSTER.to_string(), m.cluster.clone()),
            (LABEL_MANAGED.to_string(), "true".to_string()),
        ]
        .into();
        let found = self.firewalls_named(&m.name).await?;
        let Some(fw) = found.into_iter().next() else {
            let mut req = models::CreateFirewallRequest::new(m.name.clone());
            req.labels = Some(labels);
            req.rules = Some(wanted);
            let resp: models::CreateFirewallResponse =
                match self.call(Method::POST, "/firewalls", &[], Some(&req)).await {
                    Ok(r) => r,
                    // Another replica created it between the look and the create:
                    // check that one's rules instead.
                    Err(e @ crate::ProviderError::Invalid(_)) => {
                        if self.firewalls_named(&m.name).await?.is_empty() {
                            return Err(e.into());
                        }
                        return Box::pin(self.ensure_managed_firewall(m)).await;
                    }
                    Err(e) => return Err(e.into()),
                };
            for action in resp.actions.iter().flatten() {
                self.wait_action(action, &format!("create firewall {}", m.name))
                    .await?;
            }
            let id = resp.firewall.map(|f| f.id).ok_or_else(|| {
                crate::ProviderError::Transient(format!(
                    "creating firewall {}: the answer holds no firewall; retry",
                    m.name
                ))
            })?;
            tracing::info!(firewall = %m.name, id, sources = ?m.sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
                ports = ?m.tcp_ports, "created the Cloud Firewall for the nodes");
            return Ok(id);
        };
        let have: Vec<RuleKey> = sorted(fw.rules.iter().map(response_key).collect());
        let want: Vec<RuleKey> = sorted(wanted.iter().map(request_key).collect());
        if have != want {
            tracing::warn!(firewall = %m.name, id = fw.id, "the Cloud Firewall's rules differ from what dayshift set; setting them back");
            let req = models::SetRulesRequest::new(wanted);
            let resp: models::SetRulesResponse = self
                .call(
                    Method::POST,
                    &format!("/firewalls/{}/actions/set_rules", fw.id),
                    &[],
                    Some(&req),
                )
                .await?;
            for action in &resp.actions {
                self.wait_action(action, &format!("set rules of firewall {}", m.name))
                    .await?;
            }
        }
        let labels_ok = fw
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_CLUSTER))
            .is_some_and(|c| *c == m.cluster);
        if !labels_ok {
            let mut req = models::ReplaceFirewallRequest::new();
            let mut all = fw.labels.clone().unwrap_or_default();
            all.extend(labels);
            req.labels = Some(all);
            let _: models::ReplaceFirewallResponse = self
                .call(
                    Method::PUT,
                    &format!("/firewalls/{}", fw.id),
                    &[],
                    Some(&req),
                )
                .await?;
        }
        Ok(fw.id)
    }
}

/// One inbound TCP rule per port, from every source; nothing else.
fn wanted_rules(m: &ManagedFirewall) -> Vec<models::Rule> {
    let sources: Vec<String> = m.sources.iter().map(ToString::to_string).collect();
    m.tcp_ports
        .iter()
        .map(|port| {
            let mut r = models::Rule::new(rule::Direction::In, rule::Protocol::Tcp);
            r.port = Some(Some(port.to_string()));
            r.source_ips = Some(sources.clone());
            r.description = Some(Some(format!("dayshift: port {port} from the ingress")));
            r
        })
        .collect()
}

/// Addresses written the way dayshift writes them (`2001:db8::1/128`), sorted.
fn normal_ips(ips: &[String]) -> Vec<String> {
    let mut out: Vec<String> = ips
        .iter()
        .map(|s| {
            s.parse::<Cidr>()
                .map(|c| c.to_string())
                .unwrap_or_else(|_| s.clone())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn request_key(r: &models::Rule) -> RuleKey {
    let dir = match r.direction {
        rule::Direction::In => "in",
        rule::Direction::Out => "out",
    };
    let proto = match r.protocol {
        rule::Protocol::Esp => "esp",
        rule::Protocol::Gre => "gre",
        rule::Protocol::Icmp => "icmp",
        rule::Protocol::Tcp => "tcp",
        rule::Protocol::Udp => "udp",
    };
    (
        dir.into(),
        proto.into(),
        r.port.clone().flatten(),
        normal_ips(r.source_ips.as_deref().unwrap_or_default()),
        normal_ips(r.destination_ips.as_deref().unwrap_or_default()),
    )
}

fn response_key(r: &models::RuleResponse) -> RuleKey {
    let dir = match r.direction {
        rule_response::Direction::In => "in",
        rule_response::Direction::Out => "out",
    };
    let proto = match r.protocol {
        rule_response::Protocol::Esp => "esp",
        rule_response::Protocol::Gre => "gre",
        rule_response::Protocol::Icmp => "icmp",
        rule_response::Protocol::Tcp => "tcp",
        rule_response::Protocol::Udp => "udp",
    };
    (
        dir.into(),
        proto.into(),
        r.port.clone(),
        normal_ips(&r.source_ips),
        normal_ips(&r.destination_ips),
    )
}

fn sorted(mut v: Vec<RuleKey>) -> Vec<RuleKey> {
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_rules_compare_equal_to_the_answer_however_addresses_are_spelt() {
        let m = ManagedFirewall::new(
            "office",
            vec![
                "2001:db8::1".parse().unwrap(),
                "203.0.113.7/32".parse().unwrap(),
            ],
            vec![8443, 22, 22],
        );
        assert_eq!(m.name, "dayshift-office-nodes");
        let want = wanted_rules(&m);
        assert_eq!(want.len(), 2);
        let answer: Vec<models::RuleResponse> = want
            .iter()
            .map(|r| {
                models::RuleResponse::new(
                    vec![],
                    rule_response::Direction::In,
                    r.port.clone().flatten(),
                    rule_response::Protocol::Tcp,
                    vec!["203.0.113.7/32".into(), "2001:0db8::1/128".into()],
                )
            })
            .rev()
            .collect();
        assert_eq!(
            sorted(answer.iter().map(response_key).collect()),
            sorted(want.iter().map(request_key).collect())
        );
        let mut wider = answer.clone();
        wider[0].source_ips = vec!["0.0.0.0/0".into()];
        assert_ne!(
            sorted(wider.iter().map(response_key).collect()),
            sorted(want.iter().map(request_key).collect())
        );
    }
}
