//! Reading a task's events page by page: catch-up reads and long-polls.

use std::time::Duration;

use reqwest::Method;
use tether_types::{EventPage, Offset, TaskId};

use crate::{Client, Error};

/// A long-poll waits on the server (30 s by default, configurable there); this bounds the
/// whole exchange well above any sensible server setting.
pub(crate) const LONG_POLL_TIMEOUT: Duration = Duration::from_secs(120);

/// The parameters of `GET /v1/tasks/{id}/events`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventsQuery {
    /// Events after this offset; `None` reads from the start.
    pub after: Option<Offset>,
    /// 1 to 1000; the server's default (100) when `None`.
    pub limit: Option<u32>,
    /// Newest first; page on with `before`.
    pub desc: bool,
    pub before: Option<Offset>,
    /// Leave out events superseded by a later `stream_rewind`.
    pub timeline: bool,
}

impl EventsQuery {
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(after) = self.after {
            pairs.push(("after", after.to_string()));
        }
        if let Some(limit) = self.limit {
            pairs.push(("limit", limit.to_string()));
        }
        if self.desc {
            pairs.push(("desc", "true".to_string()));
        }
        if let Some(before) = self.before {
            pairs.push(("before", before.to_string()));
        }
        if self.timeline {
            pairs.push(("view", "timeline".to_string()));
        }
        pairs
    }
}

impl Client {
    /// One page of events, as they are now.
    pub async fn events(&self, id: &TaskId, query: &EventsQuery) -> Result<EventPage, Error> {
        let path = format!("/v1/tasks/{id}/events");
        self.call(self.request(Method::GET, &path).query(&query.pairs()))
            .await
    }

    /// One page of events that waits on the server until there is at least one event after
    /// `query.after`, or answers with an empty page at the server's timeout.
    pub async fn long_poll_events(
        &self,
        id: &TaskId,
        query: &EventsQuery,
    ) -> Result<EventPage, Error> {
        let path = format!("/v1/tasks/{id}/events");
        let request = self
            .request(Method::GET, &path)
            .query(&query.pairs())
            .query(&[("live", "long-poll")])
            .timeout(LONG_POLL_TIMEOUT);
        crate::client::decode(self.send(request).await?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_parameters_given_are_sent() {
        assert!(EventsQuery::default().pairs().is_empty());
        let query = EventsQuery {
            after: Some(Offset(5)),
            limit: Some(10),
            desc: true,
            before: Some(Offset(9)),
            timeline: true,
        };
        assert_eq!(
            query.pairs(),
            [
                ("after", "0000000000000000_0000000000000005".to_string()),
                ("limit", "10".to_string()),
                ("desc", "true".to_string()),
                ("before", "0000000000000000_0000000000000009".to_string()),
                ("view", "timeline".to_string()),
            ]
        );
    }
}
