//! The `fake-scaleway` binary: starts, speaks the Instance API's JSON and error bodies to
//! a plain HTTP client, refuses a missing `X-Auth-Token`, takes faults through
//! `POST /__admin/faults`, and the scaleway provider works against it unchanged.

use std::time::Duration;

use dayshift_provisioning::{
    LabelSelector, Provider, ProviderError, ScalewayProvider, ScalewaySettings,
};
use dayshift_tests::fixtures::FakeProcess;
use serde_json::{Value, json};

#[tokio::test]
async fn binary_serves_the_instance_api_with_its_errors_and_faults() {
    let fake = FakeProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_fake-scaleway")),
        &[],
    )
    .unwrap();
    let port = fake.port;
    let base = format!("http://127.0.0.1:{port}/instance/v1/zones/fr-par-2");
    let client = reqwest12::Client::new();
    let mut ready = false;
    for _ in 0..500 {
        let r = client
            .get(format!("{base}/products/servers"))
            .header("X-Auth-Token", "any")
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "fake-scaleway did not start");

    let products: Value = client
        .get(format!("{base}/products/servers"))
        .header("X-Auth-Token", "any")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(products["servers"]["L4-1-24G"]["hourly_price"], 0.75);
    assert_eq!(
        products["servers"]["L4-1-24G"]["gpu_info"]["gpu_name"],
        "L4"
    );

    let denied = client.get(format!("{base}/servers")).send().await.unwrap();
    assert_eq!(denied.status().as_u16(), 401);
    let body: Value = denied.json().await.unwrap();
    assert_eq!(body["type"], "denied_authentication");

    let missing = client
        .get(format!(
            "{base}/servers/5ca1e0a7-0000-4000-8000-00000000ffff"
        ))
        .header("X-Auth-Token", "any")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(
        (body["type"].as_str(), body["resource"].as_str()),
        (Some("not_found"), Some("instance_server"))
    );

    let resp = client
        .post(format!("http://127.0.0.1:{port}/__admin/faults"))
        .json(&json!({ "method": "GET", "path": "/instance/v1/zones/{zone}/servers", "count": 1, "fault": { "kind": "rate_limit", "reset_after_secs": 2 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let limited = client
        .get(format!("{base}/servers"))
        .header("X-Auth-Token", "any")
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status().as_u16(), 429);
    assert_eq!(limited.headers()["retry-after"], "2");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["type"], "too_many_requests");

    // The provider against the binary; an empty key is refused before any call.
    assert!(matches!(
        ScalewayProvider::new(ScalewaySettings::new(" ")),
        Err(ProviderError::Auth(_))
    ));
    let p = ScalewayProvider::new(
        ScalewaySettings::new("key").with_endpoint(format!("http://127.0.0.1:{port}")),
    )
    .unwrap();
    assert!(
        p.list(&LabelSelector::cluster("none"))
            .await
            .unwrap()
            .is_empty()
    );
    let types = p.server_types().await.unwrap();
    let l4 = types.iter().find(|t| t.name == "L4-1-24G").unwrap();
    assert!(l4.description.contains("NVIDIA L4"), "{}", l4.description);
    assert_eq!(l4.prices[0].location, "fr-par-2");
}
