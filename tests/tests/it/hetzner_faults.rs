//! The hetzner provider against the fake with injected faults: rate limits, 5xx,
//! `resource_unavailable` with fallback, slow actions, delays.

use std::time::Duration;

use dayshift_provisioning::{
    HetznerProvider, HetznerSettings, LabelSelector, Placement, Provider, ProviderError,
    ServerSpec, ServerStatus, dayshift_labels,
};
use dayshift_tests::{FakeHcloud, Fault, FaultKind, fixtures};

fn settings(fake: &FakeHcloud) -> HetznerSettings {
    let mut s = HetznerSettings::new("test-token").with_endpoint(fake.endpoint());
    s.poll_interval = Duration::from_millis(25);
    s.backoff_base = Duration::from_millis(20);
    s.backoff_max = Duration::from_millis(200);
    s.action_timeout = Duration::from_secs(30);
    s.request_timeout = Duration::from_secs(10);
    s
}

fn spec(name: &str) -> ServerSpec {
    ServerSpec {
        name: name.into(),
        server_type: "cx22".into(),
        image: "ubuntu-24.04".into(),
        location: Some("fsn1".into()),
        labels: dayshift_labels("faults", name, "chat"),
        ssh_keys: vec![],
        user_data: None,
        fallbacks: vec![],
    }
}

fn fault(method: &str, path: &str, count: u32, fault: FaultKind) -> Fault {
    Fault {
        method: method.into(),
        path: path.into(),
        count,
        fault,
    }
}

#[tokio::test]
async fn rate_limit_is_waited_out_and_retried() {
    fixtures::init_tracing();
    let fake = fixtures::fake_without_hosts().await;
    let p = HetznerProvider::new(settings(&fake)).unwrap();
    fake.inject(fault(
        "POST",
        "/v1/servers",
        1,
        FaultKind::RateLimit {
            reset_after_secs: 1,
            retry_after_secs: None,
        },
    ));
    let s = p.create(&spec("rl1")).await.unwrap();
    assert_eq!(s.status, ServerStatus::Running);
    assert_eq!(fake.count_calls("POST", "/v1/servers", 429), 1);
    assert_eq!(fake.count_calls("POST", "/v1/servers", 201), 1);
}

#[tokio::test]
async fn rate_limit_longer_than_allowed_surfaces_as_rate_limited() {
    let fake = fixtures::fake_without_hosts().await;
    let mut st = settings(&fake);
    st.max_rate_limit_wait = Duration::from_secs(5);
    let p = HetznerProvider::new(st).unwrap();
    fake.inject(fault(
        "GET",
        "/v1/servers",
        1,
        FaultKind::RateLimit {
            reset_after_secs: 600,
            retry_after_secs: Some(600),
        },
    ));
    match p.list(&LabelSelector::all()).await {
        Err(ProviderError::RateLimited { retry_after }) => {
            assert!(retry_after > Duration::from_secs(500), "{retry_after:?}")
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let fake = fixtures::fake_without_hosts().await;
    let p = HetznerProvider::new(settings(&fake)).unwrap();
    fake.inject(fault(
        "POST",
        "/v1/servers",
        1,
        FaultKind::ServerError { status: 503 },
    ));
    fake.inject(fault(
        "GET",
        "/v1/actions/{id}",
        2,
        FaultKind::ServerError { status: 502 },
    ));
    fake.inject(fault(
        "GET",
        "/v1/servers/{id}",
        1,
        FaultKind::ServerError { status: 500 },
    ));
    let s = p.create(&spec("e5xx")).await.unwrap();
    assert_eq!(s.status, ServerStatus::Running);
    assert_eq!(fake.count_calls("POST", "/v1/servers", 503), 1);
    assert_eq!(fake.count_calls("POST", "/v1/servers", 201), 1);
    assert_eq!(fake.count_calls("GET", "/v1/actions/{id}", 502), 2);
    assert_eq!(fake.count_calls("GET", "/v1/servers/{id}", 500), 1);
    fake.inject(fault(
        "DELETE",
        "/v1/servers/{id}",
        1,
        FaultKind::ServerError { status: 500 },
    ));
    p.delete(&s.id).await.unwrap();
    assert!(
        p.list(&LabelSelector::cluster("faults"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn persistent_server_errors_end_as_transient() {
    let fake = fixtures::fake_without_hosts().await;
    let mut st = settings(&fake);
    st.max_retries = 2;
    let p = HetznerProvider::new(st).unwrap();
    fake.inject(fault(
        "GET",
        "/v1/server_types",
        10,
        FaultKind::ServerError { status: 503 },
    ));
    let e = p.server_types().await.unwrap_err();
    assert!(matches!(e, ProviderError::Transient(_)), "{e:?}");
    assert_eq!(fake.count_calls("GET", "/v1/server_types", 503), 3);
}

#[tokio::test]
async fn resource_unavailable_falls_back_to_the_next_location() {
    let fake = fixtures::fake_without_hosts().await;
    let p = HetznerProvider::new(settings(&fake)).unwrap();
    fake.inject(fault(
        "POST",
        "/v1/servers",
        1,
        FaultKind::ResourceUnavailable,
    ));
    let mut sp = spec("fb1");
    sp.fallbacks = vec![
        Placement {
            server_type: "cx22".into(),
            location: Some("nbg1".into()),
        },
        Placement {
            server_type: "cx32".into(),
            location: Some("hel1".into()),
        },
    ];
    let s = p.create(&sp).await.unwrap();
    assert_eq!(s.location.as_deref(), Some("nbg1"));
    assert_eq!(s.server_type, "cx22");
    assert_eq!(fake.count_calls("POST", "/v1/servers", 412), 1);

    // Capacity missing for a type in two locations: the next server type is used.
    fake.set_unavailable("cx22", "fsn1");
    fake.set_unavailable("cx22", "nbg1");
    let mut sp = spec("fb2");
    sp.fallbacks = vec![
        Placement {
            server_type: "cx22".into(),
            location: Some("nbg1".into()),
        },
        Placement {
            server_type: "cx32".into(),
            location: Some("hel1".into()),
        },
    ];
    let s = p.create(&sp).await.unwrap();
    assert_eq!(
        (s.server_type.as_str(), s.location.as_deref()),
        ("cx32", Some("hel1"))
    );

    // Nothing left to try: Capacity, naming what was tried.
    let e = p.create(&spec("fb3")).await.unwrap_err();
    match e {
        ProviderError::Capacity(msg) => assert!(msg.contains("cx22 in fsn1"), "{msg}"),
        other => panic!("expected Capacity, got {other:?}"),
    }
}

#[tokio::test]
async fn slow_actions_are_waited_for_and_time_out_cleanly() {
    let fake = fixtures::fake_without_hosts().await;
    let p = HetznerProvider::new(settings(&fake)).unwrap();
    fake.inject(fault(
        "POST",
        "/v1/servers",
        1,
        FaultKind::SlowAction { ms: 800 },
    ));
    let s = p.create(&spec("slow1")).await.unwrap();
    assert_eq!(s.status, ServerStatus::Running);
    assert!(fake.count_calls("GET", "/v1/actions/{id}", 200) >= 2);

    // An action slower than the provider's patience: Transient, and the server (with its
    // labels) is still listed so the caller can adopt or delete it.
    let mut st = settings(&fake);
    st.action_timeout = Duration::from_millis(200);
    let impatient = HetznerProvider::new(st).unwrap();
    fake.inject(fault(
        "POST",
        "/v1/servers",
        1,
        FaultKind::SlowAction { ms: 60_000 },
    ));
    let e = impatient.create(&spec("slow2")).await.unwrap_err();
    assert!(matches!(e, ProviderError::Transient(_)), "{e:?}");
    let left = p
        .list(&LabelSelector::cluster("faults").and_equals("dayshift-node", "slow2"))
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    p.delete(&left[0].id).await.unwrap();
}

#[tokio::test]
async fn slow_responses_hit_the_request_timeout_and_are_retried() {
    let fake = fixtures::fake_without_hosts().await;
    let mut st = settings(&fake);
    st.request_timeout = Duration::from_millis(300);
    let p = HetznerProvider::new(st).unwrap();
    fake.inject(fault(
        "GET",
        "/v1/servers",
        1,
        FaultKind::Delay { ms: 1500 },
    ));
    let list = p.list(&LabelSelector::all()).await.unwrap();
    assert!(list.is_empty());
    // The delayed call was given up (never answered in time), the retry answered.
    assert_eq!(fake.count_calls("GET", "/v1/servers", 0), 1);
    assert_eq!(fake.count_calls("GET", "/v1/servers", 200), 1);
}

#[tokio::test]
async fn errors_are_typed() {
    let fake = fixtures::fake_without_hosts().await;
    assert!(matches!(
        HetznerProvider::new(HetznerSettings::new("")),
        Err(ProviderError::Auth(_))
    ));
    let p = HetznerProvider::new(settings(&fake)).unwrap();
    assert!(matches!(
        p.get("424242").await,
        Err(ProviderError::NotFound(_))
    ));
    let mut bad = spec("bad-image");
    bad.image = "windows-95".into();
    assert!(matches!(
        p.create(&bad).await,
        Err(ProviderError::Invalid(_))
    ));
    let unreachable = HetznerProvider::new({
        let mut s = settings(&fake);
        s.endpoint = "http://127.0.0.1:1/v1".into();
        s.max_retries = 1;
        s
    })
    .unwrap();
    assert!(matches!(
        unreachable.list(&LabelSelector::all()).await,
        Err(ProviderError::Transient(_))
    ));
}

#[tokio::test]
async fn rate_limit_headers_are_honoured_before_a_429() {
    let fake = fixtures::fake_without_hosts().await;
    // A budget of 2 requests refilled at 10 per second: a client ignoring the headers
    // gets 429s; one honouring `RateLimit-Remaining: 0` waits and never does.
    fake.set_rate_limit(2, 10.0);
    let p = HetznerProvider::new(settings(&fake)).unwrap();
    for _ in 0..8 {
        p.list(&LabelSelector::all()).await.unwrap();
    }
    assert_eq!(fake.count_calls("GET", "/v1/servers", 200), 8);
    assert_eq!(fake.count_calls("GET", "/v1/servers", 429), 0);
}

#[tokio::test]
async fn an_exhausted_budget_is_waited_out() {
    let fake = fixtures::fake_without_hosts().await;
    fake.set_rate_limit(1, 10.0);
    // Two providers share the budget (like two ingress replicas): 429s happen and each
    // is retried after the wait the headers give.
    let a = HetznerProvider::new(settings(&fake)).unwrap();
    let b = HetznerProvider::new(settings(&fake)).unwrap();
    for _ in 0..3 {
        a.list(&LabelSelector::all()).await.unwrap();
        b.list(&LabelSelector::all()).await.unwrap();
    }
    assert_eq!(fake.count_calls("GET", "/v1/servers", 200), 6);
    assert!(fake.count_calls("GET", "/v1/servers", 429) >= 1);
}

#[tokio::test]
async fn a_create_action_failing_deletes_the_server_and_falls_back() {
    let fake = fixtures::fake_without_hosts().await;
    let p = HetznerProvider::new(settings(&fake)).unwrap();
    fake.inject(fault(
        "POST",
        "/v1/servers",
        1,
        FaultKind::ActionError {
            code: "resource_unavailable".into(),
        },
    ));
    let mut sp = spec("afail");
    sp.fallbacks = vec![Placement {
        server_type: "cx22".into(),
        location: Some("hel1".into()),
    }];
    let s = p.create(&sp).await.unwrap();
    assert_eq!(s.location.as_deref(), Some("hel1"));
    let left = p.list(&LabelSelector::cluster("faults")).await.unwrap();
    assert_eq!(left.len(), 1, "the failed server was not deleted: {left:?}");
    assert_eq!(fake.count_calls("DELETE", "/v1/servers/{id}", 200), 1);

    // Any other action failure is Transient, and the broken server is gone too.
    fake.inject(fault(
        "POST",
        "/v1/servers",
        1,
        FaultKind::ActionError {
            code: "server_create_failed".into(),
        },
    ));
    let e = p.create(&spec("afail2")).await.unwrap_err();
    assert!(matches!(e, ProviderError::Transient(_)), "{e:?}");
    assert_eq!(
        p.list(&LabelSelector::cluster("faults"))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn list_follows_pagination() {
    let fake = dayshift_tests::FakeHcloud::start(dayshift_tests::FakeOptions {
        hosts: false,
        action_duration: Duration::ZERO,
        ..Default::default()
    })
    .await
    .unwrap();
    let p = dayshift_provisioning::build_provider(
        dayshift_provisioning::ProviderSettings::Hetzner(settings(&fake)),
    )
    .await
    .unwrap();
    for i in 0..57 {
        p.create(&spec(&format!("page{i}"))).await.unwrap();
    }
    let all = p.list(&LabelSelector::cluster("faults")).await.unwrap();
    assert_eq!(all.len(), 57);
    let mut names: Vec<_> = all.iter().map(|s| s.name.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 57);
    assert_eq!(
        fake.count_calls("GET", "/v1/servers", 200),
        2,
        "two pages of 50"
    );
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_adopted_not_duplicated() {
    let fake = fixtures::fake_without_hosts().await;
    let p = HetznerProvider::new(settings(&fake)).unwrap();
    fake.inject(fault("POST", "/v1/servers", 1, FaultKind::LoseResponse));
    let s = p.create(&spec("lost-answer")).await.unwrap();
    assert_eq!(s.status, ServerStatus::Running);
    assert_eq!(fake.count_calls("POST", "/v1/servers", 504), 1);
    assert_eq!(
        fake.count_calls("POST", "/v1/servers", 409),
        1,
        "the retry met uniqueness_error"
    );
    let all = p.list(&LabelSelector::cluster("faults")).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, s.id);
}

#[tokio::test]
async fn a_delete_whose_answer_was_lost_still_succeeds() {
    let fake = fixtures::fake_without_hosts().await;
    let p = HetznerProvider::new(settings(&fake)).unwrap();
    let s = p.create(&spec("lost-delete")).await.unwrap();
    fake.inject(fault(
        "DELETE",
        "/v1/servers/{id}",
        1,
        FaultKind::LoseResponse,
    ));
    p.delete(&s.id).await.unwrap();
    assert_eq!(fake.count_calls("DELETE", "/v1/servers/{id}", 504), 1);
    assert_eq!(fake.count_calls("DELETE", "/v1/servers/{id}", 404), 1);
    assert!(
        p.list(&LabelSelector::cluster("faults"))
            .await
            .unwrap()
            .is_empty()
    );
    // A plain delete of an unknown server is still NotFound.
    assert!(matches!(
        p.delete(&s.id).await,
        Err(ProviderError::NotFound(_))
    ));
}
