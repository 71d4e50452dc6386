//! The `fake-hcloud` binary: starts, serves the API to the `hcloud` crate, takes faults
//! through `POST /__admin/faults`.

use std::time::Duration;

use dayshift_tests::fixtures::FakeProcess;
use hcloud::apis::configuration::Configuration;
use hcloud::apis::locations_api;

#[tokio::test]
async fn binary_serves_the_api_and_admin_faults() {
    let fake =
        FakeProcess::start(std::path::Path::new(env!("CARGO_BIN_EXE_fake-hcloud")), &[]).unwrap();
    let port = fake.port;
    let mut cfg = Configuration::new();
    cfg.base_path_mapping.insert(
        "https://api.hetzner.cloud/v1".into(),
        format!("http://127.0.0.1:{port}/v1"),
    );
    cfg.bearer_access_token = Some("token".into());
    let mut ready = false;
    for _ in 0..500 {
        if locations_api::list_locations(&cfg, Default::default())
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "fake-hcloud did not start");

    let client = reqwest12::Client::new();
    let resp = client
        .post(format!("http://127.0.0.1:{port}/__admin/faults"))
        .json(&serde_json::json!({ "method": "GET", "path": "/v1/locations", "count": 1, "fault": { "kind": "rate_limit", "reset_after_secs": 3 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let limited = client
        .get(format!("http://127.0.0.1:{port}/v1/locations"))
        .bearer_auth("token")
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status().as_u16(), 429);
    assert_eq!(limited.headers()["ratelimit-remaining"], "0");
    assert!(limited.headers().contains_key("ratelimit-reset"));
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["details"].is_object());
    assert!(
        locations_api::list_locations(&cfg, Default::default())
            .await
            .is_ok()
    );

    let bad = client
        .post(format!("http://127.0.0.1:{port}/__admin/faults"))
        .json(&serde_json::json!({"nope": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
}
