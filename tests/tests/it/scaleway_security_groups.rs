//! fake-scaleway's security groups as a plain HTTP client sees them: a server created
//! with a group carries it and ends up with exactly its rules (what
//! `FakeScaleway::server_security_group` and `/__admin/servers/{id}/security_group`
//! show); one created without gets the project's default group; the API's errors.

use dayshift_tests::fixtures;
use serde_json::{Value, json};

#[tokio::test]
async fn a_server_ends_up_with_its_security_groups_rules() {
    let fake = fixtures::scaleway_without_hosts().await;
    let base = format!("{}/instance/v1/zones/fr-par-2", fake.endpoint());
    let c = reqwest12::Client::new();
    let call = |method: reqwest12::Method, path: &str, body: Option<Value>| {
        let mut r = c
            .request(method, format!("{base}{path}"))
            .header("X-Auth-Token", "t");
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send()
    };

    let sg: Value = call(
        reqwest12::Method::POST,
        "/security_groups",
        Some(
            json!({"name": "dayshift-nodes", "description": "d", "stateful": true,
                     "inbound_default_policy": "drop", "outbound_default_policy": "accept",
                     "project": "00000000-0000-4000-8000-0000000da75f", "tags": ["dayshift"]}),
        ),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let sg_id = sg["security_group"]["id"].as_str().unwrap().to_string();
    assert_eq!(sg["security_group"]["project_default"], false);
    assert_eq!(sg["security_group"]["inbound_default_policy"], "drop");

    // Older clients send upper-case enums; the API answers in lower case.
    let set = call(
        reqwest12::Method::PUT,
        &format!("/security_groups/{sg_id}/rules"),
        Some(json!({"rules": [
            {"protocol": "TCP", "direction": "inbound", "action": "accept",
             "ip_range": "198.51.100.7/32", "dest_port_from": 22, "position": 1},
            {"protocol": "tcp", "direction": "inbound", "action": "accept",
             "ip_range": "198.51.100.7", "dest_port_from": 8443, "position": 2}]})),
    )
    .await
    .unwrap();
    assert_eq!(set.status().as_u16(), 200);
    let rules: Value = set.json().await.unwrap();
    assert_eq!(rules["rules"][0]["protocol"], "tcp");
    assert_eq!(rules["rules"][1]["ip_range"], "198.51.100.7/32");

    let created: Value = call(
        reqwest12::Method::POST,
        "/servers",
        Some(
            json!({"name": "n1", "commercial_type": "DEV1-S", "image": "ubuntu_noble",
                     "security_group": sg_id, "tags": ["dayshift-cluster=sg"]}),
        ),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let server_id = created["server"]["id"].as_str().unwrap().to_string();
    assert_eq!(created["server"]["security_group"]["id"], sg_id.as_str());
    assert_eq!(
        created["server"]["security_group"]["name"],
        "dayshift-nodes"
    );

    let effective = fake.server_security_group(&server_id).unwrap();
    let summary: Vec<(String, u64)> = effective["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["ip_range"].as_str().unwrap().to_string(),
                r["dest_port_from"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("198.51.100.7/32".to_string(), 22),
            ("198.51.100.7/32".to_string(), 8443)
        ]
    );
    assert_eq!(
        effective["security_group"]["inbound_default_policy"],
        "drop"
    );
    let admin: Value = c
        .get(format!(
            "{}/__admin/servers/{server_id}/security_group",
            fake.endpoint()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(admin, effective);

    // no group given: the project's default one
    let plain: Value = call(
        reqwest12::Method::POST,
        "/servers",
        Some(json!({"name": "n2", "commercial_type": "DEV1-S", "image": "ubuntu_noble"})),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let default_id = plain["server"]["security_group"]["id"].as_str().unwrap();
    let default: Value = call(
        reqwest12::Method::GET,
        &format!("/security_groups/{default_id}"),
        None,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(default["security_group"]["project_default"], true);

    // errors
    let unknown = call(
        reqwest12::Method::POST,
        "/servers",
        Some(
            json!({"name": "n3", "commercial_type": "DEV1-S", "image": "ubuntu_noble",
                     "security_group": "5ca1e0a7-0000-4000-8000-00000000ffff"}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["resource"], "instance_security_group");
    let bad_port = call(
        reqwest12::Method::POST,
        &format!("/security_groups/{sg_id}/rules"),
        Some(
            json!({"protocol": "icmp", "direction": "inbound", "action": "accept",
                     "ip_range": "0.0.0.0/0", "dest_port_from": 22}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(bad_port.status().as_u16(), 400);
    let in_use = call(
        reqwest12::Method::DELETE,
        &format!("/security_groups/{sg_id}"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(in_use.status().as_u16(), 400);
    let body: Value = in_use.json().await.unwrap();
    assert_eq!(body["type"], "invalid_request_error");
    let listed: Value = call(
        reqwest12::Method::GET,
        "/security_groups?tags=dayshift",
        None,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(listed["total_count"], 1);
    assert_eq!(listed["security_groups"][0]["servers"][0]["name"], "n1");
}
