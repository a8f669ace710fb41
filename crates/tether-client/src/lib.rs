//! A typed async client of Tether's tasks API (docs/api.md).
//!
//! [`Client`] makes the plain calls; [`Client::subscribe`] follows a task's events live and
//! survives network failures and server restarts without showing an event twice or skipping
//! one (DESIGN.md G2, G3); [`Timeline`] applies the rewind rule to what a live stream delivers;
//! [`worker`] claims and runs tasks over the worker protocol.

mod client;
mod error;
mod events;
mod tasks;
mod users;

pub mod backoff;
pub mod sse;
pub mod subscribe;
pub mod timeline;
pub mod worker;

pub use client::Client;
pub use error::Error;
pub use events::EventsQuery;
pub use subscribe::{Item, Subscription, Transport};
pub use timeline::Timeline;

/// Re-exported so that users of the client need not depend on the types crate for the basics.
pub use tether_types as types;
