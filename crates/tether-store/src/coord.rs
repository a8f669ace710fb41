//! Coordination between the nodes that share one database: which node runs a singleton
//! background job, and how a node learns that another one made work available.
//!
//! With the embedded SQLite store there is one node (the data dir is locked to one process),
//! so it leads every job and never hears from others. With PostgreSQL, a job is led by the
//! node holding its advisory lock, and work notifications come over LISTEN/NOTIFY.

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::StoreError;

/// Proof that this node runs a singleton job, for as long as it is held and not lost.
pub trait Held: Send + Sync {
    /// The node can no longer be sure it is the only one (for example, its connection to the
    /// database, which held the lock, went away). Stop, and try to lead again.
    fn is_lost(&self) -> bool;
}

/// Dropping the leadership gives the job up.
pub type Leadership = Box<dyn Held>;

#[async_trait]
pub trait Coordinator: Send + Sync + 'static {
    /// Tries to become the one node that runs `job`: `Ok(None)` while another node leads it.
    async fn try_lead(&self, job: &str) -> Result<Option<Leadership>, StoreError>;

    /// Notified when another node created work that a claim waiting here could take (a task
    /// submitted or requeued, a concurrency slot freed). `None`: there are no other nodes.
    fn remote_work(&self) -> Option<&Notify>;
}

/// The leadership of the only node there is.
pub struct Sole;

impl Held for Sole {
    fn is_lost(&self) -> bool {
        false
    }
}
