//! The `state-service` binary: parse config, set up logging, bind, run.

use std::process::ExitCode;

use clap::Parser;

use state_service::{
    admin,
    config::{Cli, Command},
    hash_token_cmd, health_cmd, server, shutdown, telemetry,
};

/// mimalloc instead of glibc malloc: −12 % instructions per unary RPC
/// (docs/benchmarks.md), where malloc/free were ≈ 15 % of the service's work.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only the server honours --worker-threads; the one-shot subcommands keep
    // tokio's default.
    let runtime = match cli.command {
        None => runtime(
            cli.serve
                .server
                .worker_threads
                .unwrap_or_else(default_worker_threads),
        ),
        Some(_) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    match runtime {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => {
            eprintln!("state-service: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One thread on machines with at most two CPUs, else one per CPU. Measured
/// on two cores shared with Redis and the load generator (docs/benchmarks.md):
/// with one thread a unary RPC costs about a third less service CPU than with
/// two workers, because no request wakes a task on the other thread, and
/// throughput does not drop. Above two CPUs one thread would cap the service
/// at one core.
fn default_worker_threads() -> usize {
    match std::thread::available_parallelism().map_or(1, |n| n.get()) {
        0..=2 => 1,
        n => n,
    }
}

/// `workers` = 1: a current-thread runtime (everything on the main thread);
/// more: a multi-thread runtime with that many workers.
fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Some(Command::Health(args)) => return health_cmd::run(args).await,
        Some(Command::HashToken(args)) => return hash_token_cmd::run(args),
        Some(Command::Export(args)) => return admin::cli::export(args).await,
        Some(Command::Import(args)) => return admin::cli::import(args).await,
        Some(Command::Purge(args)) => return admin::cli::purge(args).await,
        Some(Command::Stats(args)) => return admin::cli::stats(args).await,
        None => {}
    }
    let config = cli.serve;
    telemetry::init(config.server.log_format);
    if let Err(e) = config.validate() {
        tracing::error!("invalid configuration: {e}");
        return ExitCode::from(2);
    }
    let listener = match tokio::net::TcpListener::bind(config.server.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {}: {e}", config.server.listen);
            return ExitCode::FAILURE;
        }
    };
    match server::run(listener, config, shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ server::ServeError::Config(_)) => {
            tracing::error!("{e}");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!("server failed: {e}");
            ExitCode::FAILURE
        }
    }
}
