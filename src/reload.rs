//! Reloading configuration files without a restart: the tenants file and the
//! server's TLS certificate, key and client CA.
//!
//! Files are re-read on SIGHUP and polled every `--reload-interval` (a
//! Kubernetes Secret update swaps the mounted files without any signal). Each
//! file decides itself whether its contents changed; a broken file keeps the
//! last good configuration, is logged once per distinct problem and counted in
//! `state_config_reloads_total{result="error"}`. Nothing here logs contents.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tracing::{info, warn};

/// The outcome of one reload attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The contents are the ones already in force (or already refused).
    Unchanged,
    /// New contents are in force; the text summarises them for the log.
    Applied(String),
    /// The contents could not be used; the previous configuration stays.
    Failed(String),
}

/// Something backed by files that can be re-read.
pub trait Reloadable: Send + Sync + 'static {
    /// Short name for logs and the metric's `file` label.
    fn name(&self) -> &'static str;
    /// Re-reads the files; with `force`, even when they look unchanged.
    fn reload(&self, force: bool) -> Reload;
}

/// Starts watching `items`. The SIGHUP handler is installed before this
/// returns, so a SIGHUP sent once the server is up can never fall back to the
/// default action (terminating the process).
pub fn spawn(
    items: Vec<Arc<dyn Reloadable>>,
    interval: Duration,
    stopping: watch::Receiver<bool>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    let hangup = Some(tokio::signal::unix::signal(
        tokio::signal::unix::SignalKind::hangup(),
    )?);
    #[cfg(not(unix))]
    let hangup: Option<()> = None;
    Ok(tokio::spawn(run(items, interval, hangup, stopping)))
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

async fn run(
    items: Vec<Arc<dyn Reloadable>>,
    interval: Duration,
    mut hangup: Option<Hangup>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut last_failure: Vec<Option<String>> = vec![None; items.len()];
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let force = tokio::select! {
            _ = tick.tick() => false,
            () = next_hangup(&mut hangup) => {
                if items.is_empty() {
                    info!("SIGHUP received: no tenants file or TLS files to reload");
                } else {
                    info!("SIGHUP received: reloading configuration files");
                }
                true
            }
            _ = stopping.changed() => return,
        };
        for (item, last) in items.iter().zip(last_failure.iter_mut()) {
            let name = item.name();
            let item = item.clone();
            // File reads block; keep them off the request workers.
            let outcome = tokio::task::spawn_blocking(move || item.reload(force))
                .await
                .unwrap_or_else(|e| Reload::Failed(format!("reload task failed: {e}")));
            report(name, outcome, last, force);
        }
    }
}

fn report(name: &'static str, outcome: Reload, last: &mut Option<String>, force: bool) {
    match outcome {
        Reload::Unchanged => {}
        Reload::Applied(summary) => {
            *last = None;
            crate::metrics::config_reload(name, true);
            info!(file = name, "configuration reloaded: {summary}");
        }
        Reload::Failed(e) => {
            // A missing file fails on every poll: report each distinct
            // problem once (and again on every SIGHUP, which asks for it).
            if force || last.as_deref() != Some(&e) {
                crate::metrics::config_reload(name, false);
                warn!(file = name, error = %e, "configuration reload failed");
            }
            *last = Some(e);
        }
    }
}

async fn next_hangup(hangup: &mut Option<Hangup>) {
    match hangup {
        #[cfg(unix)]
        Some(h) => {
            if h.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
