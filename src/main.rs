//! The `state-service` binary: parse config, set up logging, bind, run.

use std::process::ExitCode;

use clap::Parser;
use state_service::{
    config::{Cli, Command},
    health_cmd, server, shutdown, telemetry,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Health(args)) = cli.command {
        return health_cmd::run(args).await;
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
