//! Topology-specific behaviour (issue 12) beyond the conformance suite:
//! batches spanning every slot of a cluster, CROSS_SLOT transactions, and
//! the health reasons for a misconfigured topology (a standalone URL naming
//! a cluster node or a replica, an unknown Sentinel master name).

mod common;

use std::time::Duration;

use common::{
    Backend, RedisServer, TestServer,
    api::{put_op, reason},
    topology::{self, cli},
    v, wait_health,
};
use state_service::{
    config::{Config, RedisMode},
    pb::{BatchGetRequest, BatchPutItem, BatchPutRequest, TransactRequest},
};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_put_and_get_of_1000_keys_spread_over_every_master() {
    let prefix = topology::unique_key_prefix();
    let p = prefix.clone();
    let s = TestServer::start_with(Backend::Cluster, move |c| c.storage.key_prefix = p).await;
    let mut c = s.client();
    let keys: Vec<String> = (0..1000).map(|i| format!("bulk-{i}")).collect();
    let items = keys
        .iter()
        .enumerate()
        .map(|(i, k)| BatchPutItem {
            key: k.clone(),
            value: v::int(i as i64),
            ..Default::default()
        })
        .collect();
    let put = c
        .batch_put(BatchPutRequest { items })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(put.results.len(), 1000);
    // Read back in an order other than the write order.
    let mut shuffled = keys.clone();
    shuffled.reverse();
    let got = c
        .batch_get(BatchGetRequest {
            keys: shuffled.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    for (k, r) in shuffled.iter().zip(&got.results) {
        let i: i64 = k.trim_start_matches("bulk-").parse().unwrap();
        assert!(r.found, "{k} missing");
        assert_eq!(r.entry.as_ref().unwrap().value, v::int(i), "{k}");
    }
    // The keys live on every master: the tenant prefix holds no hash tag.
    let cluster = topology::shared_cluster();
    let per_master: Vec<usize> = cluster
        .masters()
        .iter()
        .map(|m| {
            cli(
                *m,
                &["--scan", "--pattern", &format!("{prefix}:default:bulk-*")],
            )
            .lines()
            .count()
        })
        .collect();
    assert_eq!(per_master.len(), 3);
    assert!(per_master.iter().all(|n| *n > 200), "{per_master:?}");
    assert_eq!(per_master.iter().sum::<usize>(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transact_across_slots_is_cross_slot_and_same_tag_is_atomic() {
    let s = TestServer::start(Backend::Cluster).await;
    let mut c = s.client();
    let err = c
        .transact(TransactRequest {
            ops: vec![put_op("a", v::int(1), None), put_op("b", v::int(2), None)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err).0, "CROSS_SLOT");
    assert!(err.message().contains("{tag}"), "{}", err.message());
    let ok = c
        .transact(TransactRequest {
            ops: vec![
                put_op("{order-7}a", v::int(1), None),
                put_op("{order-7}b", v::int(2), None),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.results.len(), 2);
    let got = c
        .batch_get(BatchGetRequest {
            keys: vec!["a".into(), "{order-7}a".into(), "{order-7}b".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let found: Vec<bool> = got.results.iter().map(|r| r.found).collect();
    assert_eq!(found, vec![false, true, true]);
}

/// Starts the service without waiting for SERVING.
async fn start_raw(tweak: impl FnOnce(&mut Config)) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = Config::for_tests(addr, None);
    cfg.server.health_check_interval = Duration::from_millis(100);
    tweak(&mut cfg);
    tokio::spawn(state_service::server::run(
        listener,
        cfg,
        futures::future::pending(),
    ));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_url_naming_a_cluster_node_is_not_serving() {
    let cluster = topology::shared_cluster();
    let addr = start_raw(|c| {
        c.redis.redis_url = Some(format!("redis://127.0.0.1:{}", cluster.0[0]));
    })
    .await;
    wait_health(addr, ServingStatus::NotServing, Duration::from_secs(10)).await;
    // It stays so: the misconfiguration does not fix itself.
    wait_health(addr, ServingStatus::NotServing, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_url_naming_a_replica_is_not_serving_until_it_is_promoted() {
    let master = RedisServer::start();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let addr = start_raw(|c| c.redis.redis_url = Some(replica.url())).await;
    wait_health(addr, ServingStatus::NotServing, Duration::from_secs(10)).await;
    assert!(cli(replica.port, &["REPLICAOF", "NO", "ONE"]).contains("OK"));
    wait_health(addr, ServingStatus::Serving, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_sentinel_master_name_is_not_serving() {
    let sentinels = topology::shared_sentinel();
    let addr = start_raw(|c| {
        c.redis.redis_mode = RedisMode::Sentinel;
        c.redis.redis_url = Some(sentinels);
        c.redis.redis_master_name = Some("no-such-master".into());
    })
    .await;
    wait_health(addr, ServingStatus::NotServing, Duration::from_secs(10)).await;
}

#[test]
fn topology_flags_are_checked() {
    let base = || Config::for_tests("127.0.0.1:0".parse().unwrap(), None);
    let err = |cfg: Config| cfg.validate().unwrap_err().to_string();

    let mut c = base();
    c.redis.redis_url = Some("redis://a:1,redis://b:2".into());
    assert!(err(c).contains("--redis-mode cluster"));

    let mut c = base();
    c.redis.redis_mode = RedisMode::Sentinel;
    c.redis.redis_url = Some("redis://a:26379".into());
    assert!(err(c).contains("--redis-master-name"));

    let mut c = base();
    c.redis.redis_mode = RedisMode::Cluster;
    assert!(err(c).contains("--redis-mode"));

    let mut c = base();
    c.redis.redis_master_name = Some("m".into());
    c.redis.redis_url = Some("redis://a:1".into());
    assert!(err(c).contains("only used with --redis-mode sentinel"));

    let mut c = base();
    c.redis.redis_mode = RedisMode::Cluster;
    c.redis.redis_url = Some(" redis://a:1 , redis://b:2 ".into());
    c.validate().unwrap();
    assert_eq!(
        state_service::config::split_urls(" redis://a:1 , redis://b:2 "),
        vec!["redis://a:1".to_string(), "redis://b:2".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_through_every_master() {
    use state_service::pb::ListRequest;
    let s = TestServer::start(Backend::Cluster).await;
    let mut c = s.client();
    let keys: Vec<String> = (0..300).map(|i| format!("item-{i}")).collect();
    c.batch_put(BatchPutRequest {
        items: keys
            .iter()
            .map(|k| BatchPutItem {
                key: k.clone(),
                value: v::int(1),
                ..Default::default()
            })
            .collect(),
    })
    .await
    .unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let r = c
            .list(ListRequest {
                prefix: "item-".into(),
                page_size: 20,
                page_token: token,
                include_values: false,
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        for k in r.keys {
            assert!(seen.insert(k.clone()), "{k} repeated without a failover");
        }
        token = r.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let missing: Vec<&String> = keys.iter().filter(|k| !seen.contains(*k)).collect();
    assert!(missing.is_empty(), "{pages} pages skipped {missing:?}");
}
