//! SIGTERM and Ctrl-C: the first asks the running command to stop cleanly,
//! a second exits at once (the lake's commit log keeps that safe).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context;

/// How many stop signals arrived.
#[derive(Clone)]
pub struct Signals {
    count: Arc<AtomicU32>,
}

impl Signals {
    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// Exits the process if the clean stop takes longer than `deadline`.
    pub fn exit_after(&self, deadline: Duration) {
        let _ = std::thread::Builder::new().name("shutdown-deadline".to_owned()).spawn(move || {
            std::thread::sleep(deadline);
            tracing::error!(deadline_s = deadline.as_secs(), "shutdown deadline passed; exiting without a clean stop");
            std::process::exit(1);
        });
    }
}

/// Starts listening for SIGTERM and Ctrl-C, once per process: every caller
/// (`demo` runs the pipeline, then the server) shares the same count.
pub fn install() -> anyhow::Result<Signals> {
    static INSTALLED: std::sync::Mutex<Option<Signals>> = std::sync::Mutex::new(None);
    let mut installed = INSTALLED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(signals) = &*installed {
        return Ok(signals.clone());
    }
    let signals = listen()?;
    *installed = Some(signals.clone());
    Ok(signals)
}

fn listen() -> anyhow::Result<Signals> {
    let signals = Signals { count: Arc::new(AtomicU32::new(0)) };
    let count = Arc::clone(&signals.count);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(mut terminate) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = terminate.recv() => {}
                    }
                    if count.fetch_add(1, Ordering::Relaxed) >= 1 {
                        eprintln!("second signal: exiting now");
                        std::process::exit(130);
                    }
                    tracing::info!("stop requested; a second signal exits at once");
                }
            });
        })
        .context("cannot start the signal thread")?;
    Ok(signals)
}
