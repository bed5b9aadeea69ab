//! The smallest end-to-end check: the in-memory default answers Put then Get.

mod common;

use common::{Backend, TestServer, v};
use state_service::pb;

#[tokio::test]
async fn memory_default_serves_put_and_get() {
    let server = TestServer::start(Backend::Memory).await;
    let mut c = server.client();
    let put = c
        .put(pb::PutRequest {
            key: "k".into(),
            value: v::int(7),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got = c
        .get(pb::GetRequest {
            key: "k".into(),
            refresh_ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.found);
    assert_eq!(got.entry.as_ref().unwrap().version, put.version);
    assert_eq!(got.entry.unwrap().value, v::int(7));
}
