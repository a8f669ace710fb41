//! `tether events`: a task's raw event log as JSON lines, for scripts.

use clap::Args;
use tether_client::EventsQuery;
use tether_types::{Offset, TaskId};

use super::connect::ConnectArgs;
use super::exit::Exit;

const PAGE_LIMIT: u32 = 1000;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The task id (tsk_...).
    pub id: TaskId,
    /// Only events after this offset.
    #[arg(long, value_name = "OFFSET")]
    pub after: Option<Offset>,
    /// At most this many events [default: all].
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Leave out events superseded by a rewind (the default is the whole audit log).
    #[arg(long)]
    pub timeline: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub async fn run(args: EventsArgs) -> anyhow::Result<Exit> {
    let client = args.connect.client()?;
    let mut after = args.after;
    let mut left = args.limit.unwrap_or(u64::MAX);
    let mut out = std::io::stdout();
    while left > 0 {
        let query = EventsQuery {
            after,
            limit: Some(left.min(u64::from(PAGE_LIMIT)) as u32),
            timeline: args.timeline,
            ..EventsQuery::default()
        };
        let page = client.events(&args.id, &query).await?;
        for event in &page.data {
            serde_json::to_writer(&mut out, event)?;
            std::io::Write::write_all(&mut out, b"\n")?;
        }
        left = left.saturating_sub(page.data.len() as u64);
        match page.data.last() {
            Some(last) if page.has_more => after = Some(last.offset),
            _ => break,
        }
    }
    Ok(Exit::OK)
}
