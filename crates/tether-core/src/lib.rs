//! Tether's domain logic, pure: no I/O, no clock (timestamps are passed in), no storage.
//!
//! Each backend runs these functions inside its own transaction, so every store applies the
//! same rules: [`machine`] decides task state changes and the events they append, [`steps`]
//! decides step attempts and when a retried step writes a rewind, [`rewind`] decides which
//! events a retried step superseded, and [`status`] folds a task's events into its status
//! snapshot.

pub mod lease;
pub mod machine;
pub mod rewind;
pub mod status;
pub mod steps;

pub use machine::{decide, Current, TaskOp, Transition, TransitionError};
pub use rewind::Rewinds;
pub use status::{project, Projector};
