//! `tether watch`: a task's timeline, live until it ends.

use clap::Args;
use futures::StreamExt;
use tether_client::{Client, EventsQuery, Item};
use tether_types::event::kind;
use tether_types::{EventAt, Offset, TaskId};

use super::connect::{ConnectArgs, Output};
use super::exit::Exit;
use super::interrupt::{on_ctrl_c, Interrupt};
use super::printer::EventPrinter;
use super::summary;

/// Most events one catch-up page may hold (the API's upper bound).
const PAGE_LIMIT: u32 = 1000;

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The task id (tsk_...).
    pub id: TaskId,
    /// Start with only the last N events instead of the whole timeline.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub tail: Option<u32>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub async fn run(args: WatchArgs) -> anyhow::Result<Exit> {
    let client = args.connect.client()?;
    follow(&client, &args.id, args.tail, args.connect.output).await
}

/// Prints the task's timeline and follows it to its end. The exit code says how it ended.
pub async fn follow(
    client: &Client,
    id: &TaskId,
    tail: Option<u32>,
    output: Output,
) -> anyhow::Result<Exit> {
    let interrupt = on_ctrl_c();
    let task = client.task(id).await?;
    let mut printer = EventPrinter::new(std::io::stdout(), output);
    let mut after = None;
    if let Some(n) = tail {
        after = print_tail(client, id, n, &mut printer).await?;
    } else if task.state.is_terminal() {
        print_all(client, id, &mut printer).await?;
    }
    let exit = if task.state.is_terminal() {
        Exit::for_state(task.state)
    } else {
        follow_live(client, id, after, &mut printer, interrupt).await?
    };
    // The summary is a courtesy: the events and the exit code already say how it ended.
    if exit != Exit::INTERRUPTED && output == Output::Text {
        match client.task(id).await {
            Ok(task) if task.state.is_terminal() => {
                println!("{}", summary::summary(&task, printer.terminal.as_ref()));
            }
            _ => {}
        }
    }
    Ok(exit)
}

/// The last `n` events of the timeline, oldest first; returns the offset to go on from.
async fn print_tail<W: std::io::Write>(
    client: &Client,
    id: &TaskId,
    n: u32,
    printer: &mut EventPrinter<W>,
) -> anyhow::Result<Option<Offset>> {
    let query = EventsQuery {
        limit: Some(n),
        desc: true,
        timeline: true,
        ..EventsQuery::default()
    };
    let page = client.events(id, &query).await?;
    let mut newest = None;
    for event in page.data.iter().rev() {
        printer.print(event)?;
        newest = newest.max(Some(event.offset));
    }
    Ok(newest)
}

/// A finished task's whole timeline, page by page.
async fn print_all<W: std::io::Write>(
    client: &Client,
    id: &TaskId,
    printer: &mut EventPrinter<W>,
) -> anyhow::Result<()> {
    let mut after = None;
    loop {
        let query = EventsQuery {
            after,
            limit: Some(PAGE_LIMIT),
            timeline: true,
            ..EventsQuery::default()
        };
        let page = client.events(id, &query).await?;
        for event in &page.data {
            printer.print(event)?;
        }
        let last = page.data.last().map(|e| e.offset);
        if page.closed || !page.has_more || last.is_none() {
            return Ok(());
        }
        after = last;
    }
}

/// Follows the subscription until the terminal event, Ctrl-C, or an error retrying cannot fix.
async fn follow_live<W: std::io::Write>(
    client: &Client,
    id: &TaskId,
    after: Option<Offset>,
    printer: &mut EventPrinter<W>,
    mut interrupt: Interrupt,
) -> anyhow::Result<Exit> {
    let mut subscription = client.subscribe(id, after, true);
    let mut last: Option<EventAt> = None;
    loop {
        let item = tokio::select! {
            biased;
            _ = &mut interrupt => return Ok(Exit::INTERRUPTED),
            item = subscription.next() => item,
        };
        match item {
            Some(Ok(Item::Event(event))) => {
                printer.print(&event)?;
                last = Some(event);
            }
            Some(Ok(Item::Reconnecting {
                after,
                attempt,
                cause,
                ..
            })) => {
                // One line per outage, not one per retry.
                if attempt == 1 {
                    let from = after.map_or_else(|| "the start".to_string(), |o| o.to_string());
                    eprintln!("connection lost ({cause}); reconnecting from {from}");
                }
            }
            Some(Ok(Item::FellBackToLongPoll { content_type })) => {
                eprintln!(
                    "the server answered the live stream as {content_type:?}, not an event stream; polling instead"
                );
            }
            Some(Err(error)) => return Err(error.into()),
            None => break,
        }
    }
    match last {
        Some(event) if kind::is_terminal(&event.event.kind) => {
            Ok(Exit::for_terminal_kind(&event.event.kind))
        }
        // The stream closed without a terminal event among what we saw (we started past it).
        _ => Ok(Exit::for_state(client.task(id).await?.state)),
    }
}
