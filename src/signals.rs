//! SIGTERM and Ctrl-C. The first cancels the root token every command's
//! work hangs from and arms the shutdown deadline: past it the process
//! exits with status 1 (the lake's commit log keeps that safe). A second
//! signal exits at once with status 130.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// The process's stop signals.
#[derive(Clone)]
pub struct Signals {
    count: Arc<AtomicU32>,
    cancel: CancellationToken,
    deadline_ms: Arc<AtomicU64>,
}

impl Signals {
    /// How many stop signals arrived.
    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// The root token, cancelled by the first signal. Commands take child
    /// tokens of it, so that their own failures stop only them.
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// How long the running command may take to stop cleanly after the
    /// first signal (armed when the signal arrives).
    pub fn set_deadline(&self, deadline: Duration) {
        self.deadline_ms.store(u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// Starts listening for SIGTERM and Ctrl-C, once per process: every caller
/// (`demo` runs the pipeline, then the server) shares the same signals.
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
    let signals = Signals {
        count: Arc::new(AtomicU32::new(0)),
        cancel: CancellationToken::new(),
        deadline_ms: Arc::new(AtomicU64::new(30_000)),
    };
    let listener = signals.clone();
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
                    if listener.count.fetch_add(1, Ordering::Relaxed) >= 1 {
                        eprintln!("second signal: exiting now");
                        std::process::exit(130);
                    }
                    let deadline = Duration::from_millis(listener.deadline_ms.load(Ordering::Relaxed));
                    tracing::info!(
                        deadline_s = deadline.as_secs_f64(),
                        "stop requested; a second signal exits at once"
                    );
                    listener.cancel.cancel();
                    arm(deadline);
                }
            });
        })
        .context("cannot start the signal thread")?;
    Ok(signals)
}

/// Exits the process if the clean stop takes longer than `deadline`.
fn arm(deadline: Duration) {
    let _ = std::thread::Builder::new().name("shutdown-deadline".to_owned()).spawn(move || {
        std::thread::sleep(deadline);
        tracing::error!(deadline_s = deadline.as_secs(), "shutdown deadline passed; exiting without a clean stop");
        std::process::exit(1);
    });
}
