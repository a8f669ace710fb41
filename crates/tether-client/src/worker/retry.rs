//! Calling the server until it answers, for as long as the task's work may go on.

use std::future::Future;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::Error;

use super::stop::{Stop, StopSignal};
use super::TaskError;

/// Workers retry quickly at first (a restarting server is back within a second) and cap
/// well below any sensible lease, so one outage costs at most a few heartbeats.
pub(crate) fn worker_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_secs(2))
}

/// Makes `call` until it succeeds. A cancel raises [`Stop::Cancelled`] and a fenced answer
/// [`Stop::Fenced`], and either ends the work (a cancel is routine: no warning); an answer that retrying cannot change is returned; a stop raised meanwhile ends the
/// retrying without another call.
pub(crate) async fn retry<T, F, Fut>(
    what: &str,
    stop: &StopSignal,
    mut call: F,
) -> Result<T, TaskError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut backoff = worker_backoff();
    loop {
        if let Some(reason) = stop.get() {
            return Err(TaskError::Stopped(reason));
        }
        let error = match call().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if error.is_cancelled() {
            tracing::info!("{what}: the task was cancelled; stopping its work");
            stop.raise(Stop::Cancelled);
            return Err(TaskError::Stopped(stop.get().unwrap_or(Stop::Cancelled)));
        }
        if error.is_fenced() {
            tracing::warn!(%error, "{what}: fenced; stopping the task's work");
            stop.raise(Stop::Fenced);
            return Err(TaskError::Stopped(Stop::Fenced));
        }
        if !error.is_retryable() {
            return Err(TaskError::Api(error));
        }
        let delay = backoff.next_delay();
        tracing::warn!(%error, attempt = backoff.attempts(), ?delay, "{what} failed; retrying");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            reason = stop.raised() => return Err(TaskError::Stopped(reason)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn api(status: u16, code: &str) -> Error {
        let body = format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
        Error::from_response(status, None, body.as_bytes())
    }

    #[tokio::test(start_paused = true)]
    async fn server_failures_are_retried_until_an_answer() {
        let calls = AtomicU32::new(0);
        let stop = StopSignal::new();
        let value = retry("test", &stop, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Err(api(503, "UNAVAILABLE")),
                n => Ok(n),
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_lease_stops_the_work_and_is_not_retried() {
        let calls = AtomicU32::new(0);
        let stop = StopSignal::new();
        let result: Result<(), _> = retry("test", &stop, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(api(409, "LEASE_LOST"))
        })
        .await;
        assert!(matches!(result, Err(TaskError::Stopped(Stop::Fenced))));
        assert_eq!(stop.get(), Some(Stop::Fenced));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancel_stops_the_work_as_a_cancel_not_as_a_lost_lease() {
        let stop = StopSignal::new();
        let result: Result<(), _> =
            retry("test", &stop, || async { Err(api(409, "TASK_CANCELLED")) }).await;
        assert!(matches!(result, Err(TaskError::Stopped(Stop::Cancelled))));
        assert_eq!(stop.get(), Some(Stop::Cancelled));
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_mistake_is_returned_as_it_is() {
        let stop = StopSignal::new();
        let result: Result<(), _> = retry("test", &stop, || async {
            Err(api(400, "VALIDATION_ERROR"))
        })
        .await;
        assert!(matches!(result, Err(TaskError::Api(e)) if e.status() == Some(400)));
        assert_eq!(stop.get(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_raised_while_waiting_ends_the_retries() {
        let stop = StopSignal::new();
        let raiser = stop.clone();
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry("test", &stop, || {
            if calls.fetch_add(1, Ordering::SeqCst) == 2 {
                raiser.raise(Stop::Cancelled);
            }
            async { Err(api(502, "BAD_GATEWAY")) }
        })
        .await;
        assert!(matches!(result, Err(TaskError::Stopped(Stop::Cancelled))));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
