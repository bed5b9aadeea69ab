//! Quick start: `cargo run -p state-client --example quickstart [host:port]`

use std::time::Duration;

use futures::TryStreamExt;
use state_client::{ClientConfig, ErrorKind, StateClient, Value, WriteOptions};

#[tokio::main]
async fn main() -> Result<(), state_client::Error> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".into());
    let client = StateClient::connect(ClientConfig::new(addr).tenant("quickstart")).await?;
    let user = Value::map([("name", Value::from("Ada")), ("visits", Value::Int(1))]);
    let version = client.put("user:42", user).await?;
    println!("{:?}", client.get("user:42").await?);
    client
        .update("user:42", |u| bump_visits(u.cloned()))
        .await?; // read, modify, compare-and-set, retry
    println!("{}", client.increment("hits", 5).await?.value); // exact int64 counter
    client
        .put_with_ttl(
            "session:9",
            Value::map([("step", 3)]),
            Duration::from_secs(30),
        )
        .await?;
    println!("{:?}", client.list("user:").try_collect::<Vec<_>>().await?); // pages through List
    match client
        .put_with("user:42", "stale write", WriteOptions::if_version(version))
        .await
    {
        Err(e) if e.kind() == ErrorKind::VersionMismatch => {
            println!("lost the race: now {:?}", e.current_version())
        }
        other => println!("{other:?}"),
    }
    Ok(())
}

fn bump_visits(user: Option<Value>) -> Value {
    let Some(Value::Map(mut m)) = user else {
        return Value::map([("visits", 1)]);
    };
    let visits = m.get("visits").and_then(Value::as_int).unwrap_or(0);
    m.insert("visits".into(), Value::Int(visits + 1));
    Value::Map(m)
}
