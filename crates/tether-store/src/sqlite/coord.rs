//! One node per data dir: it leads every job.

use crate::StoreError;
use async_trait::async_trait;
use tokio::sync::Notify;

use super::SqliteStore;
use crate::coord::{Coordinator, Leadership, Sole};

#[async_trait]
impl Coordinator for SqliteStore {
    async fn try_lead(&self, _job: &str) -> Result<Option<Leadership>, StoreError> {
        // The data dir's lock file already keeps every other process out.
        Ok(Some(Box::new(Sole)))
    }

    fn remote_work(&self) -> Option<&Notify> {
        None
    }
}
