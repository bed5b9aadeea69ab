//! The `state-service` binary: parse config, set up logging, bind, run.

use std::process::ExitCode;

use clap::Parser;

use state_service::{
    config::{Cli, Command},
    hash_token_cmd, health_cmd, server, shutdown, telemetry,
};

/// mimalloc instead of glibc malloc: −12 % instructions per unary RPC
/// (docs/benchmarks.md), where malloc/free were ≈ 15 % of the service's work.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Health(args)) => return health_cmd::run(args).await,
        Some(Command::HashToken(args)) => return hash_token_cmd::run(args),
        None => {}
    }
    let config = cli.serve;
    telemetry::init(config.log_format);
    if let Err(e) = config.validate() {
        tracing::error!("invalid configuration: {e}");
        return ExitCode::from(2);
    }
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    match server::run(listener, config, shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("server failed: {e}");
            ExitCode::FAILURE
        }
    }
}
