//! A rust-rule-engine stream job's state moved into state-service by changing
//! its constructor (feature `rule-engine`):
//! `cargo run -p state-client --features rule-engine --example rule_engine_store [host:port]`

use std::time::Duration;

use rust_rule_engine::{RuleEngineError, types::Value};
use state_client::{ClientConfig, StateStore};

/// rust-rule-engine's `streaming::state::StateResult` (that module needs its
/// `streaming` feature, which this example does not).
type StateResult<T> = Result<T, RuleEngineError>;

/// Unchanged job code, written against rust-rule-engine's StateStore API.
fn count_event(state: &StateStore<Value>, user: &str) -> StateResult<i64> {
    let key = format!("events:{user}");
    let n = match state.get(&key)? {
        Some(Value::Integer(n)) => n + 1,
        _ => 1,
    };
    state.put(key, Value::Integer(n))?;
    state.put_with_ttl(
        format!("last_seen:{user}"),
        Value::String("now".into()),
        Duration::from_secs(60),
    )?;
    Ok(n)
}

fn main() -> StateResult<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".into());
    // Before: let state = StateStore::new(StateBackend::Memory);
    let state: StateStore<Value> =
        StateStore::connect(ClientConfig::new(addr).tenant("rules"), "job-7")?;
    for user in ["ada", "bob", "ada"] {
        println!("{user}: {}", count_event(&state, user)?);
    }
    let checkpoint = state.checkpoint("after-3-events")?;
    state.put("events:ada", Value::Integer(100))?;
    state.restore(&checkpoint)?;
    println!(
        "restored {checkpoint}: ada = {:?}, keys = {}",
        state.get("events:ada")?,
        state.len()
    );
    // An Expression is engine code, not data: refused with a clear error.
    if let Err(e) = state.put("rule", Value::Expression("Order.qty * 2".into())) {
        println!("refused: {e}");
    }
    Ok(())
}
