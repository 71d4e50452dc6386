//! One provider contract suite, run against `hetzner` (on the fake) and `local`.

use std::time::Duration;

use dayshift_provisioning::{
    HetznerProvider, HetznerSettings, LABEL_POOL, LabelSelector, LocalProvider, LocalSettings,
    Provider, ProviderError, ScalewayProvider, ScalewaySettings, ServerSpec, ServerStatus,
    dayshift_labels,
};
use dayshift_tests::fixtures;

/// What a provider needs in a spec to succeed.
struct Subject {
    provider: Box<dyn Provider>,
    server_type: &'static str,
    location: Option<&'static str>,
    image: &'static str,
}

fn spec(s: &Subject, cluster: &str, node: &str, pool: &str) -> ServerSpec {
    ServerSpec {
        name: format!("{cluster}-{node}"),
        server_type: s.server_type.into(),
        image: s.image.into(),
        location: s.location.map(String::from),
        labels: dayshift_labels(cluster, node, pool),
        ssh_keys: vec![],
        user_data: None,
        fallbacks: vec![],
    }
}

async fn contract(s: Subject) {
    let p = s.provider.as_ref();
    let cluster = format!("contract{}", rand::random::<u32>());

    // create → running with an IPv4 and our labels
    let a = p.create(&spec(&s, &cluster, "n1", "chat")).await.unwrap();
    let b = p.create(&spec(&s, &cluster, "n2", "embed")).await.unwrap();
    for (srv, pool) in [(&a, "chat"), (&b, "embed")] {
        assert_eq!(srv.status, ServerStatus::Running, "{srv:?}");
        assert!(srv.ipv4.is_some(), "{srv:?}");
        assert_eq!(srv.labels.get(LABEL_POOL).map(String::as_str), Some(pool));
        assert_eq!(srv.server_type, s.server_type);
    }
    assert_ne!(a.id, b.id);

    // get
    let got = p.get(&a.id).await.unwrap();
    assert_eq!(got.name, a.name);
    assert_eq!(got.labels, a.labels);

    // list by label selector
    let all = p.list(&LabelSelector::cluster(&cluster)).await.unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let chat = p
        .list(&LabelSelector::cluster(&cluster).and_equals(LABEL_POOL, "chat"))
        .await
        .unwrap();
    assert_eq!(chat.len(), 1);
    assert_eq!(chat[0].id, a.id);
    let not_embed = p
        .list(
            &LabelSelector::parse(&format!("dayshift-cluster={cluster},dayshift-pool!=embed"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(not_embed.len(), 1);
    let other = p
        .list(&LabelSelector::cluster("some-other-cluster"))
        .await
        .unwrap();
    assert!(other.is_empty());

    // invalid requests are typed
    let again = p.create(&spec(&s, &cluster, "n1", "chat")).await.unwrap();
    assert_eq!(again.id, a.id, "create is idempotent for the same node");
    let mut clash = spec(&s, &cluster, "n1", "chat");
    clash
        .labels
        .insert("dayshift-node".into(), "someone-else".into());
    let dup = p.create(&clash).await.unwrap_err();
    assert!(matches!(dup, ProviderError::Invalid(_)), "{dup:?}");
    let mut unlabeled = spec(&s, &cluster, "n3", "chat");
    unlabeled.labels.remove(LABEL_POOL);
    let e = p.create(&unlabeled).await.unwrap_err();
    assert!(matches!(e, ProviderError::Invalid(_)), "{e:?}");
    let mut bad_type = spec(&s, &cluster, "n4", "chat");
    bad_type.server_type = "no-such-type".into();
    let e = p.create(&bad_type).await.unwrap_err();
    assert!(matches!(e, ProviderError::Invalid(_)), "{e:?}");

    // unknown ids
    assert!(matches!(
        p.get("987654").await,
        Err(ProviderError::NotFound(_))
    ));
    assert!(matches!(
        p.delete("987654").await,
        Err(ProviderError::NotFound(_))
    ));

    // server types with prices
    let types = p.server_types().await.unwrap();
    let t = types
        .iter()
        .find(|t| t.name == s.server_type)
        .expect("spec's type is listed");
    assert!(!t.prices.is_empty());
    for price in &t.prices {
        assert!(price.hourly <= price.monthly, "{price:?}");
    }
    let _ = p.billing_rule();

    // delete → gone, list empty
    p.delete(&a.id).await.unwrap();
    p.delete(&b.id).await.unwrap();
    assert!(matches!(
        p.get(&a.id).await,
        Err(ProviderError::NotFound(_))
    ));
    assert!(
        p.list(&LabelSelector::cluster(&cluster))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Provider settings for tests: fast polling against the fake.
pub fn hetzner_settings(endpoint: String) -> HetznerSettings {
    let mut s = HetznerSettings::new("test-token").with_endpoint(endpoint);
    s.poll_interval = Duration::from_millis(25);
    s.backoff_base = Duration::from_millis(20);
    s.backoff_max = Duration::from_millis(200);
    s.action_timeout = Duration::from_secs(30);
    s.request_timeout = Duration::from_secs(10);
    s
}

#[tokio::test]
async fn hetzner_provider_passes_the_contract() {
    fixtures::init_tracing();
    let fake = fixtures::fake_without_hosts().await;
    let provider = HetznerProvider::new(hetzner_settings(fake.endpoint())).unwrap();
    contract(Subject {
        provider: Box::new(provider),
        server_type: "cx22",
        location: Some("fsn1"),
        image: "ubuntu-24.04",
    })
    .await;
}

#[tokio::test]
async fn local_provider_passes_the_contract() {
    fixtures::init_tracing();
    let state = tempfile::tempdir().unwrap();
    let _reaper = fixtures::KillLocalChildren(state.path().to_path_buf());
    let settings = LocalSettings::new(
        env!("CARGO_BIN_EXE_tiny-responder"),
        vec![
            "--listen".into(),
            "{host}:{port}".into(),
            "--reply".into(),
            "{name}".into(),
        ],
        state.path(),
    );
    let provider = LocalProvider::new(settings).await.unwrap();
    contract(Subject {
        provider: Box::new(provider),
        server_type: "local",
        location: None,
        image: "any",
    })
    .await;
}

/// Scaleway provider settings for tests: fast polling against the fake.
pub fn scaleway_settings(endpoint: String) -> ScalewaySettings {
    let mut s = ScalewaySettings::new("test-secret-key")
        .with_endpoint(endpoint)
        .with_zones(&["fr-par-2", "nl-ams-1"]);
    s.poll_interval = Duration::from_millis(25);
    s.backoff_base = Duration::from_millis(20);
    s.backoff_max = Duration::from_millis(200);
    s.action_timeout = Duration::from_secs(30);
    s.request_timeout = Duration::from_secs(10);
    s
}

#[tokio::test]
async fn scaleway_provider_passes_the_contract() {
    fixtures::init_tracing();
    let fake = fixtures::scaleway_without_hosts().await;
    let provider = ScalewayProvider::new(scaleway_settings(fake.endpoint())).unwrap();
    contract(Subject {
        provider: Box::new(provider),
        server_type: "L4-1-24G",
        location: Some("fr-par-2"),
        image: "ubuntu_noble",
    })
    .await;
    let (servers, volumes, ips) = fake.resource_counts();
    assert_eq!(
        (servers, volumes, ips),
        (0, 0, 0),
        "nothing left that bills"
    );
}
