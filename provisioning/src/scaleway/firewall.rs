//! The security group created Instances are put in (security groups live in a zone):
//! one the operator named, looked up by name, or the one dayshift keeps
//! (`firewall = "auto"`): stateful, inbound drop, outbound accept, inbound TCP to the
//! node port and SSH from the ingress only, set back whenever it drifts.

use dayshift_config::firewall::Cidr;
use reqwest12::Method;
use serde_json::json;

use super::ScalewayProvider;
use super::client::Body;
use super::model::{RuleList, ScwRule, ScwSecurityGroup, SecurityGroupEnvelope, SecurityGroupList};
use crate::firewall::{FirewallPolicy, ManagedFirewall, SetupError};
use crate::labels::LABEL_CLUSTER;

/// A rule reduced to what decides its effect.
type RuleKey = (String, String, String, String, Option<u32>, Option<u32>);

impl ScalewayProvider {
    /// The security group for a server in `zone`: `None` without `provider.firewall`;
    /// a named one is looked up once per zone; the managed one checked each time.
    pub(super) async fn security_group_for(
        &self,
        zone: &str,
    ) -> Result<Option<String>, SetupError> {
        match &self.settings().firewall {
            None => Ok(None),
            Some(FirewallPolicy::Named(name)) => {
                let mut cached = self.setup.lock().await;
                if let Some(id) = cached.get(zone) {
                    return Ok(Some(id.clone()));
                }
                let id = self.named_group(zone, name).await?;
                cached.insert(zone.to_string(), id.clone());
                Ok(Some(id))
            }
            Some(FirewallPolicy::Managed(m)) => {
                let _one_at_a_time = self.setup.lock().await;
                self.ensure_managed_group(zone, m).await.map(Some)
            }
        }
    }

    async fn groups_named(
        &self,
        zone: &str,
        name: &str,
    ) -> Result<Vec<ScwSecurityGroup>, SetupError> {
        let mut path = format!("/security_groups?per_page=100&name={}", super::encode(name));
        if let Some(p) = &self.settings().project {
            path.push_str(&format!("&project={}", super::encode(p)));
        }
        let list: SecurityGroupList = self.client.get(zone, &path).await?;
        // Sorted by id, so replicas that raced to create one all settle on the same.
        let mut found: Vec<ScwSecurityGroup> = list
            .security_groups
            .into_iter()
            .filter(|g| g.name == name)
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    async fn named_group(&self, zone: &str, name: &str) -> Result<String, SetupError> {
        let mut found = self.groups_named(zone, name).await?;
        match found.len() {
            1 => {
                let g = found.remove(0);
                tracing::info!(zone, security_group = name, id = %g.id, "created Instances go into this security group");
                Ok(g.id)
            }
            0 => Err(SetupError::FirewallMissing {
                provider: "scaleway",
                name: name.to_string(),
                what: "security group",
                scope: format!(" in zone {zone}"),
                how: "console: Instances → Security groups → Create security group, in that zone",
            }),
            count => Err(SetupError::FirewallAmbiguous {
                provider: "scaleway",
                name: name.to_string(),
                what: "security group",
                scope: format!(" in zone {zone}"),
                count,
            }),
        }
    }

    /// Creates the managed group in `zone`, or sets its policies and rules back.
    async fn ensure_managed_group(
        &self,
        zone: &str,
        m: &ManagedFirewall,
    ) -> Result<String, SetupError> {
        let policy = json!({
            "stateful": true,
            "inbound_default_policy": "drop",
            "outbound_default_policy": "accept",
        });
        let found = self.groups_named(zone, &m.name).await?;
        let group = match found.into_iter().next() {
            Some(g) => {
                let tag = format!("{LABEL_CLUSTER}={}", m.cluster);
                if !(g.stateful
                    && g.inbound_default_policy == "drop"
                    && g.outbound_default_policy == "accept"
                    && g.tags.contains(&tag))
                {
                    tracing::warn!(zone, security_group = %m.name, id = %g.id,
                        "the security group's policies or tags differ from what dayshift set; setting them back");
                    let mut patch = policy.clone();
                    let mut tags = g.tags.clone();
                    if !tags.contains(&tag) {
                        tags.push(tag);
                    }
                    patch["tags"] = json!(tags);
                    let _: SecurityGroupEnvelope = self
                        .client
                        .send_json(
                            Method::PATCH,
                            zone,
                            &format!("/security_groups/{}", g.id),
                            &patch,
                        )
                        .await?;
                }
                g
            }
            None => {
                let mut body = policy.clone();
                body["name"] = json!(m.name);
                body["description"] =
                    json!("dayshift: only the ingress reaches the nodes (node port and SSH)");
                body["tags"] = json!([format!("{LABEL_CLUSTER}={}", m.cluster)]);
                body["enable_default_security"] = json!(true);
                if let Some(p) = &self.settings().project {
                    body["project"] = json!(p);
                }
                let created: SecurityGroupEnvelope = self
                    .client
                    .send_json(Method::POST, zone, "/security_groups", &body)
                    .await?;
                tracing::info!(zone, security_group = %m.name, id = %created.security_group.id,
                    sources = ?m.sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    ports = ?m.tcp_ports, "created the security group for the nodes");
                self.settle_duplicate(zone, m, created.security_group)
                    .await?
            }
        };
        let rules_path = format!("/security_groups/{}/rules", group.id);
        let have: RuleList = self.client.get(zone, &rules_path).await?;
        let wanted = wanted_rules(m);
        let mut have_keys: Vec<RuleKey> =
            have.rules.iter().filter(|r| r.editable).map(key).collect();
        have_keys.sort();
        let mut want_keys: Vec<RuleKey> = wanted.iter().map(key).collect();
        want_keys.sort();
        if have_keys != want_keys {
            if !have_keys.is_empty() {
                tracing::warn!(zone, security_group = %m.name, id = %group.id,
                    "the security group's rules differ from what dayshift set; setting them back");
            }
            self.client
                .call(
                    Method::PUT,
                    zone,
                    &rules_path,
                    Body::Json(json!({ "rules": wanted })),
                )
                .await?;
        }
        Ok(group.id)
    }
}

impl ScalewayProvider {
    /// Names are not unique at Scaleway: when another replica created the group at the
    /// same time, keep the one with the lowest id and delete ours (best effort).
    async fn settle_duplicate(
        &self,
        zone: &str,
        m: &ManagedFirewall,
        ours: ScwSecurityGroup,
    ) -> Result<ScwSecurityGroup, SetupError> {
        let all = self.groups_named(zone, &m.name).await?;
        let Some(first) = all.into_iter().next() else {
            return Ok(ours);
        };
        if first.id == ours.id {
            return Ok(ours);
        }
        tracing::info!(zone, security_group = %m.name, kept = %first.id, removed = %ours.id,
            "another dayshift created the same security group; keeping the older one");
        if let Err(e) = self
            .client
            .call(
                Method::DELETE,
                zone,
                &format!("/security_groups/{}", ours.id),
                Body::None,
            )
            .await
        {
            tracing::warn!(zone, id = %ours.id, error = %e, "could not delete the duplicate security group; delete it by hand");
        }
        Ok(first)
    }
}

/// One inbound TCP accept rule per source and port.
fn wanted_rules(m: &ManagedFirewall) -> Vec<ScwRule> {
    let mut out = Vec::new();
    for source in &m.sources {
        for port in &m.tcp_ports {
            out.push(ScwRule {
                protocol: "TCP".into(),
                direction: "inbound".into(),
                action: "accept".into(),
                ip_range: source.to_string(),
                dest_port_from: Some(u32::from(*port)),
                dest_port_to: None,
                position: out.len() as u32 + 1,
                editable: true,
            });
        }
    }
    out
}

fn key(r: &ScwRule) -> RuleKey {
    let range = r
        .ip_range
        .parse::<Cidr>()
        .map(|c| c.to_string())
        .unwrap_or_else(|_| r.ip_range.clone());
    let to = r.dest_port_to.filter(|to| Some(*to) != r.dest_port_from);
    (
        r.direction.to_ascii_lowercase(),
        r.protocol.to_ascii_uppercase(),
        r.action.to_ascii_lowercase(),
        range,
        r.dest_port_from,
        to,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_per_source_and_port_and_spellings_compare_equal() {
        let m = ManagedFirewall::new(
            "office",
            vec![
                "203.0.113.7".parse().unwrap(),
                "2001:db8::1/128".parse().unwrap(),
            ],
            vec![22, 8443],
        );
        let rules = wanted_rules(&m);
        assert_eq!(rules.len(), 4);
        assert!(
            rules
                .iter()
                .all(|r| r.direction == "inbound" && r.action == "accept")
        );
        let mut read_back = rules[0].clone();
        read_back.ip_range = "203.0.113.7".into();
        read_back.dest_port_to = read_back.dest_port_from;
        assert_eq!(key(&read_back), key(&rules[0]));
    }
}
