//! The worker protocol's calls (docs/api.md, "Workers"), one method each, no policy: the
//! runtime in this module's siblings decides what to retry and when to stop.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use tether_types::event::Appended;
use tether_types::worker::{
    ClaimRequest, Claimed, Finish, Heartbeat, LeaseRef, StepBegun, StepComplete, StepCompleted,
    WorkerEvents,
};
use tether_types::{Task, TaskId};

use crate::client::{decode, encode_segment, CALL_TIMEOUT};
use crate::{Client, Error};

/// An idempotent producer's stamp on an event batch (Durable Streams `Producer-*` headers):
/// the server stores a batch once per `(id, epoch, seq)`, so a retry after a lost answer
/// cannot duplicate it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerStamp {
    pub id: String,
    pub epoch: u64,
    pub seq: u64,
}

impl Client {
    /// Waits up to `wait_ms` (the server's long-poll timeout when `None`) for a task to run.
    /// `None` when none came in time.
    pub async fn claim(&self, request: &ClaimRequest) -> Result<Option<Claimed>, Error> {
        // The server holds the request for the wait; the call timeout covers the rest.
        let wait = Duration::from_millis(request.wait_ms.unwrap_or(30_000));
        let response = self
            .send(
                self.request(Method::POST, "/v1/worker/claim")
                    .json(request)
                    .timeout(wait + CALL_TIMEOUT),
            )
            .await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        decode(response).await.map(Some)
    }

    /// Extends the lease; says whether the task was cancelled and carries pending nudges.
    pub async fn heartbeat(&self, task: &TaskId, lease: &str) -> Result<Heartbeat, Error> {
        let body = LeaseRef {
            lease: lease.to_string(),
        };
        let path = format!("/v1/worker/tasks/{task}/heartbeat");
        self.call(self.request(Method::POST, &path).json(&body))
            .await
    }

    /// Begins a step: the epoch to run it as, or the checkpoint of an earlier attempt that
    /// completed it.
    pub async fn begin_step(
        &self,
        task: &TaskId,
        step: &str,
        lease: &str,
    ) -> Result<StepBegun, Error> {
        let body = LeaseRef {
            lease: lease.to_string(),
        };
        let path = format!(
            "/v1/worker/tasks/{task}/steps/{}/begin",
            encode_segment(step)
        );
        self.call(self.request(Method::POST, &path).json(&body))
            .await
    }

    /// Stores a step's checkpoint; the server appends `step_completed`.
    pub async fn complete_step(
        &self,
        task: &TaskId,
        step: &str,
        body: &StepComplete,
    ) -> Result<StepCompleted, Error> {
        let path = format!(
            "/v1/worker/tasks/{task}/steps/{}/complete",
            encode_segment(step)
        );
        self.call(self.request(Method::POST, &path).json(body))
            .await
    }

    /// Appends a batch of events under the lease; with a stamp, a repeated batch is stored
    /// once (`appended: false` the second time).
    pub async fn append_worker_events(
        &self,
        task: &TaskId,
        body: &WorkerEvents,
        stamp: Option<&ProducerStamp>,
    ) -> Result<Appended, Error> {
        let path = format!("/v1/worker/tasks/{task}/events");
        let mut request = self.request(Method::POST, &path).json(body);
        if let Some(stamp) = stamp {
            request = request
                .header("Producer-Id", &stamp.id)
                .header("Producer-Epoch", stamp.epoch)
                .header("Producer-Seq", stamp.seq);
        }
        self.call(request).await
    }

    /// Acknowledges a nudge the task's runner received; the server appends
    /// `nudge_acknowledged` once however often this is repeated.
    pub async fn ack_nudge(&self, task: &TaskId, nudge: &str, lease: &str) -> Result<(), Error> {
        let body = LeaseRef {
            lease: lease.to_string(),
        };
        let path = format!(
            "/v1/worker/tasks/{task}/nudges/{}/ack",
            encode_segment(nudge)
        );
        self.send(
            self.request(Method::POST, &path)
                .json(&body)
                .timeout(CALL_TIMEOUT),
        )
        .await?;
        Ok(())
    }

    /// Ends the task. Idempotent: repeating the same finish answers the same task.
    pub async fn finish(&self, task: &TaskId, body: &Finish) -> Result<Task, Error> {
        let path = format!("/v1/worker/tasks/{task}/finish");
        self.call(self.request(Method::POST, &path).json(body))
            .await
    }
}
