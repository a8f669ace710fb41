//! Ctrl-C for the commands that wait.

use std::future::Future;
use std::pin::Pin;

pub type Interrupt = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Resolves on Ctrl-C. The handler is registered when this is called, not when the future is
/// first polled: a Ctrl-C that comes right after the first line is printed must still end the
/// command with exit code 130 rather than kill it outright.
pub fn on_ctrl_c() -> Interrupt {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut sigint) = signal(SignalKind::interrupt()) {
            return Box::pin(async move {
                sigint.recv().await;
            });
        }
    }
    Box::pin(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
