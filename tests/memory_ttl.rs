//! The memory backend's expiry under paused Tokio time: long TTLs expire at
//! exactly the right moment without the test waiting for them.

use std::time::Duration;

use state_service::{
    pb::{self, value::Kind},
    store::{
        Condition, Expiry, Idempotency, Keyspace, MemoryStore, Namespace, PageLimits, PutOp, Store,
    },
};

const BUDGET: usize = 64 * 1024 * 1024;
const IDEMPOTENCY: Idempotency = Idempotency {
    window: Duration::from_secs(600),
    max_ids: 16,
};

fn ns() -> Namespace {
    Keyspace::new("state").namespace("t")
}

fn put(key: &str, ttl: Option<Duration>) -> PutOp {
    PutOp {
        key: key.into(),
        value: pb::Value {
            kind: Some(Kind::IntValue(1)),
        },
        expiry: ttl.map_or(Expiry::Never, Expiry::After),
        condition: Condition::None,
        request_id: None,
    }
}

#[tokio::test(start_paused = true)]
async fn an_hour_long_ttl_expires_after_an_hour() {
    let store = MemoryStore::new(BUDGET, IDEMPOTENCY);
    let ns = ns();
    store
        .put(&ns, put("k", Some(Duration::from_secs(3600))))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(3599)).await;
    let e = store
        .get(&ns, "k", None)
        .await
        .unwrap()
        .expect("expired early");
    assert_eq!(e.ttl, Some(Duration::from_secs(1)));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(
        store.get(&ns, "k", None).await.unwrap().is_none(),
        "outlived its TTL"
    );
    let limits = PageLimits {
        max_keys: 10,
        max_bytes: 1 << 20,
    };
    let page = store.list(&ns, "", limits, None, false).await.unwrap();
    assert!(page.keys.is_empty());
    // An expired key counts as absent for conditions.
    let mut create = put("k", None);
    create.condition = Condition::IfAbsent;
    store.put(&ns, create).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn refresh_on_read_keeps_a_session_alive() {
    let store = MemoryStore::new(BUDGET, IDEMPOTENCY);
    let ns = ns();
    store
        .put(&ns, put("s", Some(Duration::from_secs(60))))
        .await
        .unwrap();
    for _ in 0..10 {
        tokio::time::advance(Duration::from_secs(50)).await;
        assert!(
            store
                .get(&ns, "s", Some(Duration::from_secs(60)))
                .await
                .unwrap()
                .is_some()
        );
    }
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(store.get(&ns, "s", None).await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_frees_expired_keys() {
    let store = MemoryStore::new(BUDGET, IDEMPOTENCY);
    let ns = ns();
    for i in 0..100 {
        store
            .put(&ns, put(&format!("k{i}"), Some(Duration::from_secs(5))))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    // The sweeper ran: expired keys are gone from memory, not just hidden.
    assert_eq!(store.len(), 0);
}
