//! The real `hcloud` crate, unchanged, against the fake: every endpoint the fake serves
//! decodes into the crate's models.

use std::collections::HashMap;
use std::time::Duration;

use dayshift_tests::fixtures;
use hcloud::apis::configuration::Configuration;
use hcloud::apis::{
    actions_api, images_api, locations_api, pricing_api, server_types_api, servers_api,
    ssh_keys_api,
};
use hcloud::models;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ8x9s5gY1fPz3tB3y7z7rKq0Vq6c1kq0Z0o2mP2b9k op@test";

#[tokio::test]
async fn hcloud_crate_works_against_the_fake() {
    let fake = fixtures::fake_without_hosts().await;
    let mut cfg = Configuration::new();
    cfg.base_path_mapping
        .insert("https://api.hetzner.cloud/v1".into(), fake.endpoint());
    cfg.bearer_access_token = Some("any-token".into());

    // catalog
    let types = server_types_api::list_server_types(&cfg, Default::default())
        .await
        .unwrap();
    assert!(
        types
            .server_types
            .iter()
            .any(|t| t.name == "cx22" && !t.prices.is_empty())
    );
    assert_eq!(types.meta.pagination.page, 1);
    let locs = locations_api::list_locations(&cfg, Default::default())
        .await
        .unwrap();
    assert!(locs.locations.iter().any(|l| l.name == "fsn1"));
    let imgs = images_api::list_images(
        &cfg,
        images_api::ListImagesParams {
            name: Some("debian-12".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(imgs.images.len(), 1);
    let prices = pricing_api::list_prices(&cfg).await.unwrap();
    assert_eq!(prices.pricing.currency, "EUR");

    // ssh keys
    let key = ssh_keys_api::create_ssh_key(
        &cfg,
        ssh_keys_api::CreateSshKeyParams {
            create_ssh_key_request: models::CreateSshKeyRequest::new("op".into(), KEY.into()),
        },
    )
    .await
    .unwrap()
    .ssh_key;
    assert_eq!(key.fingerprint.split(':').count(), 16);
    let keys = ssh_keys_api::list_ssh_keys(&cfg, Default::default())
        .await
        .unwrap();
    assert_eq!(keys.ssh_keys.len(), 1);
    ssh_keys_api::get_ssh_key(&cfg, ssh_keys_api::GetSshKeyParams { id: key.id })
        .await
        .unwrap();

    // servers
    let mut req =
        models::CreateServerRequest::new("ubuntu-24.04".into(), "compat-1".into(), "cpx11".into());
    req.labels = Some(HashMap::from([(
        "dayshift-cluster".to_string(),
        "compat".to_string(),
    )]));
    req.ssh_keys = Some(vec!["op".into()]);
    req.location = Some("ash".into());
    let created = servers_api::create_server(
        &cfg,
        servers_api::CreateServerParams {
            create_server_request: req,
        },
    )
    .await
    .unwrap();
    assert_eq!(created.server.status, models::server::Status::Initializing);
    let mut action = created.action;
    while action.status == models::action::Status::Running {
        tokio::time::sleep(Duration::from_millis(50)).await;
        action = actions_api::get_action(&cfg, actions_api::GetActionParams { id: action.id })
            .await
            .unwrap()
            .action;
    }
    assert_eq!(action.status, models::action::Status::Success);
    let server = servers_api::get_server(
        &cfg,
        servers_api::GetServerParams {
            id: created.server.id,
        },
    )
    .await
    .unwrap()
    .server
    .unwrap();
    assert_eq!(server.status, models::server::Status::Running);
    assert!(server.public_net.ipv4.is_some());
    let listed = servers_api::list_servers(
        &cfg,
        servers_api::ListServersParams {
            label_selector: Some("dayshift-cluster=compat".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(listed.servers.len(), 1);
    let none = servers_api::list_servers(
        &cfg,
        servers_api::ListServersParams {
            label_selector: Some("dayshift-cluster=other".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(none.servers.is_empty());

    // errors decode as the crate expects
    let err = servers_api::get_server(&cfg, servers_api::GetServerParams { id: 999_999 })
        .await
        .unwrap_err();
    match err {
        hcloud::apis::Error::ResponseError(r) => {
            assert_eq!(r.status.as_u16(), 404);
            let body: models::ErrorResponse = serde_json::from_str(&r.content).unwrap();
            assert_eq!(body.error.code, "not_found");
        }
        other => panic!("{other:?}"),
    }

    // delete
    servers_api::delete_server(&cfg, servers_api::DeleteServerParams { id: server.id })
        .await
        .unwrap();
    ssh_keys_api::delete_ssh_key(&cfg, ssh_keys_api::DeleteSshKeyParams { id: key.id })
        .await
        .unwrap();
    let left = servers_api::list_servers(&cfg, Default::default())
        .await
        .unwrap();
    assert!(left.servers.is_empty());
}

#[tokio::test]
async fn pagination_meta_is_consistent() {
    let fake = fixtures::fake_without_hosts().await;
    let mut cfg = Configuration::new();
    cfg.base_path_mapping
        .insert("https://api.hetzner.cloud/v1".into(), fake.endpoint());
    cfg.bearer_access_token = Some("t".into());
    let page = server_types_api::list_server_types(
        &cfg,
        server_types_api::ListServerTypesParams {
            page: Some(2),
            per_page: Some(3),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let p = page.meta.pagination;
    assert_eq!(
        (p.page, p.per_page, p.previous_page, p.next_page),
        (2, 3, Some(1), Some(3))
    );
    assert_eq!(page.server_types.len(), 3);

    // no token: 401 unauthorized
    cfg.bearer_access_token = None;
    let err = locations_api::list_locations(&cfg, Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, hcloud::apis::Error::ResponseError(r) if r.status.as_u16() == 401));
}

#[tokio::test]
async fn references_by_id_work_as_in_the_real_api() {
    // The official CLI (hcloud-go) sends image, server type and location as ids.
    let fake = fixtures::fake_without_hosts().await;
    let c = reqwest12::Client::new();
    let resp = c
        .post(format!("{}/servers", fake.endpoint()))
        .bearer_auth("t")
        .json(&serde_json::json!({ "name": "by-id", "image": 114690387, "server_type": 22, "location": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let body: models::CreateServerResponse = resp.json().await.unwrap();
    assert_eq!(body.server.server_type.name, "cx22");
    assert_eq!(body.server.location.name, "nbg1");
    assert_eq!(
        body.server.image.unwrap().name.as_deref(),
        Some("debian-12")
    );
    let bad = c
        .post(format!("{}/servers", fake.endpoint()))
        .bearer_auth("t")
        .json(&serde_json::json!({ "name": "bad-id", "image": 1, "server_type": 22 }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let err: models::ErrorResponse = bad.json().await.unwrap();
    assert_eq!(err.error.code, "invalid_input");
}

#[tokio::test]
async fn firewalls_decode_into_the_crate_and_apply_at_server_create() {
    use hcloud::apis::firewalls_api;
    use hcloud::models::rule::{Direction, Protocol};

    let fake = fixtures::fake_without_hosts().await;
    let mut cfg = Configuration::new();
    cfg.base_path_mapping
        .insert("https://api.hetzner.cloud/v1".into(), fake.endpoint());
    cfg.bearer_access_token = Some("t".into());
    let rule = |port: &str, from: &str| {
        let mut r = models::Rule::new(Direction::In, Protocol::Tcp);
        r.port = Some(Some(port.into()));
        r.source_ips = Some(vec![from.into()]);
        r
    };
    let mut req = models::CreateFirewallRequest::new("nodes".into());
    req.rules = Some(vec![
        rule("22", "198.51.100.7/32"),
        rule("8443", "198.51.100.7/32"),
    ]);
    req.labels = Some(HashMap::from([("dayshift-cluster".into(), "fw".into())]));
    let fw = firewalls_api::create_firewall(
        &cfg,
        firewalls_api::CreateFirewallParams {
            create_firewall_request: req,
        },
    )
    .await
    .unwrap()
    .firewall
    .unwrap();
    assert_eq!(fw.rules.len(), 2);
    assert_eq!(fw.rules[1].port.as_deref(), Some("8443"));
    assert!(fw.rules[0].destination_ips.is_empty());

    let mut req =
        models::CreateServerRequest::new("ubuntu-24.04".into(), "fw-1".into(), "cx22".into());
    req.firewalls = Some(vec![models::CreateServerRequestFirewalls::new(fw.id)]);
    let created = servers_api::create_server(
        &cfg,
        servers_api::CreateServerParams {
            create_server_request: req,
        },
    )
    .await
    .unwrap();
    let on_server = created
        .server
        .public_net
        .firewalls
        .clone()
        .unwrap_or_default();
    assert_eq!(on_server.len(), 1);
    assert_eq!(on_server[0].id, Some(fw.id));
    assert!(
        created
            .next_actions
            .iter()
            .any(|a| a.command == "apply_firewall")
    );

    // what the server ends up with: exactly the firewall's rules
    let effective = fake.server_firewall(created.server.id).unwrap();
    assert_eq!(effective["firewall_names"], serde_json::json!(["nodes"]));
    let ports: Vec<&str> = effective["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["port"].as_str().unwrap())
        .collect();
    assert_eq!(ports, ["22", "8443"]);

    let listed = firewalls_api::list_firewalls(
        &cfg,
        firewalls_api::ListFirewallsParams {
            name: Some("nodes".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(listed.firewalls.len(), 1);
    assert_eq!(listed.firewalls[0].applied_to.len(), 1);
    assert_eq!(listed.meta.pagination.total_entries, Some(1));

    firewalls_api::set_rules(
        &cfg,
        firewalls_api::SetRulesParams {
            id: fw.id,
            set_rules_request: models::SetRulesRequest::new(vec![rule("8443", "198.51.100.0/24")]),
        },
    )
    .await
    .unwrap();
    let effective = fake.server_firewall(created.server.id).unwrap();
    assert_eq!(
        effective["rules"][0]["source_ips"],
        serde_json::json!(["198.51.100.0/24"])
    );
    assert_eq!(effective["rules"].as_array().unwrap().len(), 1);

    // bad rules and a firewall in use are refused with the API's codes
    let bad = firewalls_api::set_rules(
        &cfg,
        firewalls_api::SetRulesParams {
            id: fw.id,
            set_rules_request: models::SetRulesRequest::new(vec![rule("8443", "198.51.100.1/24")]),
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(bad, hcloud::apis::Error::ResponseError(r) if r.status.as_u16() == 400 && r.content.contains("invalid_input"))
    );
    let in_use =
        firewalls_api::delete_firewall(&cfg, firewalls_api::DeleteFirewallParams { id: fw.id })
            .await
            .unwrap_err();
    assert!(
        matches!(in_use, hcloud::apis::Error::ResponseError(r) if r.status.as_u16() == 422 && r.content.contains("resource_in_use"))
    );
    let mut req =
        models::CreateServerRequest::new("ubuntu-24.04".into(), "fw-2".into(), "cx22".into());
    req.firewalls = Some(vec![models::CreateServerRequestFirewalls::new(999_999)]);
    let unknown = servers_api::create_server(
        &cfg,
        servers_api::CreateServerParams {
            create_server_request: req,
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(unknown, hcloud::apis::Error::ResponseError(r) if r.status.as_u16() == 400 && r.content.contains("firewalls"))
    );

    servers_api::delete_server(
        &cfg,
        servers_api::DeleteServerParams {
            id: created.server.id,
        },
    )
    .await
    .unwrap();
    firewalls_api::delete_firewall(&cfg, firewalls_api::DeleteFirewallParams { id: fw.id })
        .await
        .unwrap();
    assert!(fake.firewall_by_name("nodes").is_none());
}
