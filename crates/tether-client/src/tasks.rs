//! Tasks: submit, read, list, cancel, nudge, export.

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use tether_types::task::{TaskList, Validation};
use tether_types::worker::{NewNudge, NudgeCreated};
use tether_types::{Task, TaskId, TaskSpec, TaskState};

use crate::client::decode;
use crate::{Client, Error};

impl Client {
    /// Creates a task. With an idempotency key, repeating the call gives back the task the
    /// first call created; `replayed` says that happened.
    pub async fn submit(
        &self,
        spec: &TaskSpec,
        idempotency_key: Option<&str>,
    ) -> Result<(Task, bool), Error> {
        let mut request = self.request(Method::POST, "/v1/tasks").json(spec);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = self
            .send(request.timeout(crate::client::CALL_TIMEOUT))
            .await?;
        let replayed = response
            .headers()
            .get("idempotent-replay")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Ok((decode(response).await?, replayed))
    }

    /// Checks a spec the way `submit` would, without creating anything.
    pub async fn validate(&self, spec: &TaskSpec) -> Result<Validation, Error> {
        self.call(self.request(Method::POST, "/v1/tasks/validate").json(spec))
            .await
    }

    /// One task with its status snapshot.
    pub async fn task(&self, id: &TaskId) -> Result<Task, Error> {
        self.call(self.request(Method::GET, &format!("/v1/tasks/{id}")))
            .await
    }

    /// The caller's tasks (an admin's: everyone's), newest first.
    pub async fn list(
        &self,
        status: Option<TaskState>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<TaskList, Error> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(status) = status {
            query.push(("status", status.as_str().to_string()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_string()));
        }
        self.call(self.request(Method::GET, "/v1/tasks").query(&query))
            .await
    }

    /// Asks for the task to stop; answers with the task as it is after the request.
    pub async fn cancel(&self, id: &TaskId) -> Result<Task, Error> {
        self.call(self.request(Method::DELETE, &format!("/v1/tasks/{id}")))
            .await
    }

    /// Sends a message to the task's running agent; the worker gets it at its next heartbeat.
    pub async fn nudge(&self, id: &TaskId, message: &str) -> Result<NudgeCreated, Error> {
        let body = NewNudge {
            message: message.to_string(),
        };
        self.call(
            self.request(Method::POST, &format!("/v1/tasks/{id}/nudges"))
                .json(&body),
        )
        .await
    }

    /// The task and its whole stream as JSON lines, streamed as it arrives: a long task's
    /// export need not fit in memory. Errors about the task itself (404, 401) come before
    /// any byte.
    pub async fn export(
        &self,
        id: &TaskId,
    ) -> Result<BoxStream<'static, Result<Bytes, Error>>, Error> {
        let response = self
            .send(self.request(Method::GET, &format!("/v1/tasks/{id}/export")))
            .await?;
        Ok(response.bytes_stream().map_err(Error::Network).boxed())
    }
}
