//! Request builders and answer readers shared by the API suites
//! (conformance, hardening), so every suite speaks the API the same way.

use std::{collections::HashSet, time::Duration};

use state_service::pb::{
    self, Condition, GetRequest, IncrementRequest, ListRequest, PutRequest, TransactOp, condition,
    transact_op::Op,
};
use tonic::Status;
use tonic_types::StatusExt;

use super::Client;

pub fn put_req(key: &str, value: Option<pb::Value>) -> PutRequest {
    PutRequest {
        key: key.into(),
        value,
        ..Default::default()
    }
}

pub async fn put(c: &mut Client, key: &str, value: Option<pb::Value>) -> u64 {
    c.put(put_req(key, value))
        .await
        .unwrap()
        .into_inner()
        .version
}

pub async fn get(c: &mut Client, key: &str) -> Option<pb::Entry> {
    let r = c
        .get(GetRequest {
            key: key.into(),
            refresh_ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.found, r.entry.is_some());
    r.entry
}

pub fn if_absent() -> Option<Condition> {
    Some(Condition {
        kind: Some(condition::Kind::IfAbsent(())),
    })
}
pub fn if_exists() -> Option<Condition> {
    Some(Condition {
        kind: Some(condition::Kind::IfExists(())),
    })
}
pub fn if_version(v: u64) -> Option<Condition> {
    Some(Condition {
        kind: Some(condition::Kind::IfVersion(v)),
    })
}

/// The ErrorInfo reason and metadata of a failed call.
pub fn reason(status: &Status) -> (String, std::collections::HashMap<String, String>) {
    let info = status
        .get_error_details()
        .error_info()
        .cloned()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "stateservice.v1");
    (info.reason, info.metadata)
}

pub fn ttl_of(e: &pb::Entry) -> Option<Duration> {
    e.ttl
        .as_ref()
        .map(|d| Duration::new(d.seconds as u64, d.nanos as u32))
}

pub async fn list_all(c: &mut Client, prefix: &str, page_size: u32) -> Vec<String> {
    let mut token = String::new();
    let mut all = Vec::new();
    loop {
        let page = c
            .list(ListRequest {
                prefix: prefix.into(),
                page_size,
                page_token: token,
                include_values: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            page.keys.len() <= page_size as usize,
            "page larger than page_size"
        );
        let unique: HashSet<_> = page.keys.iter().collect();
        assert_eq!(unique.len(), page.keys.len(), "a page repeated a key");
        all.extend(page.keys);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

pub fn put_op(key: &str, value: Option<pb::Value>, cond: Option<Condition>) -> TransactOp {
    TransactOp {
        op: Some(Op::Put(PutRequest {
            key: key.into(),
            value,
            condition: cond,
            keep_ttl: false,
            ..Default::default()
        })),
    }
}

pub fn incr_op(key: &str, delta: i64) -> TransactOp {
    TransactOp {
        op: Some(Op::Increment(IncrementRequest {
            key: key.into(),
            delta,
            ttl: None,
            ..Default::default()
        })),
    }
}
