//! `provider.firewall` applied on Scaleway (issue 15), the provider against
//! fake-scaleway: the security group a created Instance ends up in, with exactly the
//! expected rules and policies; a second start keeps the one group and sets drifted
//! rules and policies back; a named group that does not exist is a clear error and no
//! Instance is created.

use std::time::Duration;

use dayshift_provisioning::firewall::SetupError;
use dayshift_provisioning::{
    FirewallPolicy, ManagedFirewall, Provider, ScalewayProvider, ScalewaySettings, ServerSpec,
    dayshift_labels,
};
use dayshift_tests::{FakeScaleway, fixtures};
use serde_json::{Value, json};

fn scaleway(fake: &FakeScaleway, firewall: FirewallPolicy) -> ScalewayProvider {
    let mut s = ScalewaySettings::new("test-secret-key")
        .with_endpoint(fake.endpoint())
        .with_zones(&["fr-par-2"])
        .with_firewall(firewall);
    s.poll_interval = Duration::from_millis(25);
    s.action_timeout = Duration::from_secs(60);
    ScalewayProvider::new(s).unwrap()
}

fn scw_spec(name: &str) -> ServerSpec {
    ServerSpec {
        name: name.into(),
        server_type: "L4-1-24G".into(),
        image: "ubuntu_noble".into(),
        location: Some("fr-par-2".into()),
        labels: dayshift_labels("office", name, "chat"),
        ssh_keys: vec![],
        user_data: Some("#cloud-config\n".into()),
        fallbacks: vec![],
    }
}

/// (direction, protocol, action, ip_range, port) of each rule, sorted.
fn scw_rules(rules: &Value) -> Vec<(String, String, String, String, i64)> {
    let mut v: Vec<_> = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["direction"].as_str().unwrap().to_string(),
                // Compared in upper case: the API documents `TCP`.
                r["protocol"].as_str().unwrap().to_ascii_uppercase(),
                r["action"].as_str().unwrap().to_string(),
                r["ip_range"].as_str().unwrap().to_string(),
                r["dest_port_from"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    v.sort();
    v
}

fn scw_expected() -> Vec<(String, String, String, String, i64)> {
    let mut v = Vec::new();
    for range in ["198.51.100.4/32", "2001:db8::1/128"] {
        for port in [22, 8443] {
            v.push((
                "inbound".into(),
                "TCP".into(),
                "accept".into(),
                range.into(),
                port,
            ));
        }
    }
    v.sort();
    v
}

#[tokio::test]
async fn scaleway_instances_go_into_the_managed_security_group_and_it_is_kept() {
    fixtures::init_tracing();
    let fake = fixtures::scaleway_without_hosts().await;
    let managed = ManagedFirewall::new(
        "office",
        vec![
            "2001:db8::1/128".parse().unwrap(),
            "198.51.100.4".parse().unwrap(),
        ],
        vec![8443, 22],
    );
    let p = scaleway(&fake, FirewallPolicy::Managed(managed.clone()));
    p.prepare().await.unwrap();
    let server = p.create(&scw_spec("n1")).await.unwrap();
    let uuid = server.id.split('/').nth(1).unwrap();
    let sg = fake.server_security_group(uuid).unwrap();
    assert_eq!(
        sg["security_group"]["name"], "dayshift-office-nodes",
        "{sg}"
    );
    assert_eq!(
        sg["security_group"]["inbound_default_policy"], "drop",
        "{sg}"
    );
    assert_eq!(
        sg["security_group"]["outbound_default_policy"], "accept",
        "{sg}"
    );
    assert_eq!(sg["security_group"]["stateful"], true, "{sg}");
    assert_eq!(
        sg["security_group"]["tags"],
        json!(["dayshift-cluster=office"]),
        "{sg}"
    );
    assert_eq!(scw_rules(&sg["rules"]), scw_expected(), "{sg}");
    let group_id = sg["security_group"]["id"].as_str().unwrap().to_string();

    // Drift: rules opened to the world and inbound accepted by default.
    let http = reqwest12::Client::new();
    let base = format!(
        "{}/instance/v1/zones/fr-par-2/security_groups/{group_id}",
        fake.endpoint()
    );
    for (method, url, body) in [
        (
            reqwest12::Method::PUT,
            format!("{base}/rules"),
            json!({"rules": [{"protocol": "ANY",
            "direction": "inbound", "action": "accept", "ip_range": "0.0.0.0/0", "position": 1}]}),
        ),
        (
            reqwest12::Method::PATCH,
            base.clone(),
            json!({"inbound_default_policy": "accept"}),
        ),
    ] {
        let r = http
            .request(method, url)
            .header("X-Auth-Token", "test-secret-key")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    // A new start (a new provider) sets it back, and makes no second group.
    let again = scaleway(&fake, FirewallPolicy::Managed(managed));
    again.prepare().await.unwrap();
    let sg = fake.server_security_group(uuid).unwrap();
    assert_eq!(sg["security_group"]["id"], group_id.as_str());
    assert_eq!(
        sg["security_group"]["inbound_default_policy"], "drop",
        "{sg}"
    );
    assert_eq!(scw_rules(&sg["rules"]), scw_expected(), "{sg}");
    let list: Value = http
        .get(format!(
            "{}/instance/v1/zones/fr-par-2/security_groups?name=dayshift-office-nodes",
            fake.endpoint()
        ))
        .header("X-Auth-Token", "test-secret-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["security_groups"].as_array().unwrap().len(),
        1,
        "{list}"
    );
    p.delete(&server.id).await.unwrap();
}

#[tokio::test]
async fn a_missing_named_security_group_is_a_clear_error_and_no_instance() {
    fixtures::init_tracing();
    let fake = fixtures::scaleway_without_hosts().await;
    let p = scaleway(&fake, FirewallPolicy::Named("office-fence".into()));
    let e = p.prepare().await.unwrap_err();
    assert!(matches!(e, SetupError::FirewallMissing { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("no security group of that name at scaleway in zone fr-par-2"),
        "{text}"
    );
    assert!(text.contains("\"auto\""), "{text}");
    let e = p.create(&scw_spec("n2")).await.unwrap_err();
    assert!(e.to_string().contains("office-fence"), "{e}");
    assert_eq!(fake.resource_counts().0, 0, "no Instance may be created");
}

#[tokio::test]
async fn two_replicas_starting_together_end_with_one_security_group() {
    fixtures::init_tracing();
    let fake = fixtures::scaleway_without_hosts().await;
    let managed = ManagedFirewall::new(
        "office",
        vec!["198.51.100.4".parse().unwrap()],
        vec![22, 8443],
    );
    let a = scaleway(&fake, FirewallPolicy::Managed(managed.clone()));
    let b = scaleway(&fake, FirewallPolicy::Managed(managed));
    let (ra, rb) = tokio::join!(a.prepare(), b.prepare());
    ra.unwrap();
    rb.unwrap();
    let list: Value = reqwest12::Client::new()
        .get(format!(
            "{}/instance/v1/zones/fr-par-2/security_groups?name=dayshift-office-nodes",
            fake.endpoint()
        ))
        .header("X-Auth-Token", "test-secret-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["security_groups"].as_array().unwrap().len(),
        1,
        "{list}"
    );
}
