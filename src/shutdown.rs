//! One shutdown signal for the process. It fires once — on SIGTERM/Ctrl-C, or when a test calls
//! `Running::stop` — and every listener and background task holds a [`Shutdown`] and finishes
//! what it is doing when it fires (graceful drain: in-flight RPCs complete, streams end).

use tokio::sync::watch;

/// Fires the signal.
#[derive(Clone)]
pub struct Trigger(watch::Sender<bool>);

/// Waits for the signal; cheap to clone, one per task.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// Resolves once the signal has fired (or nothing can fire it any more).
    pub async fn fired(&mut self) {
        let _ = self.0.wait_for(|fired| *fired).await;
    }

    /// [`Shutdown::fired`] as an owned future, for APIs that take one (graceful serve).
    pub async fn into_future(mut self) {
        self.fired().await
    }
}
