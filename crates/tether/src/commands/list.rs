//! `tether list`: tasks as a table.

use clap::Args;
use tether_types::{Task, TaskState};

use super::connect::{ConnectArgs, Output};
use super::exit::Exit;
use super::render::{escape_controls, preview};

/// Description column width, in characters.
const DESCRIPTION_CHARS: usize = 50;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only tasks in this state (SUBMITTED, RUNNING, COMPLETED, ...).
    #[arg(long, value_name = "S")]
    pub status: Option<TaskState>,
    /// At most this many (1-100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: Option<u32>,
    /// Continue from a previous page.
    #[arg(long, value_name = "C")]
    pub cursor: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub async fn run(args: ListArgs) -> anyhow::Result<Exit> {
    let client = args.connect.client()?;
    let page = client
        .list(args.status, args.limit, args.cursor.as_deref())
        .await?;
    match args.connect.output {
        Output::Text => print!("{}", table(&page.data)),
        Output::Json => {
            for task in &page.data {
                println!("{}", serde_json::to_string(task)?);
            }
        }
    }
    if let Some(cursor) = page.next_cursor {
        eprintln!("more tasks: --cursor {cursor}");
    }
    Ok(Exit::OK)
}

fn table(tasks: &[Task]) -> String {
    let mut out = format!(
        "{:<24}  {:<10}  {:<16}  DESCRIPTION\n",
        "ID", "STATE", "CREATED"
    );
    for task in tasks {
        let mut description = escape_controls(&preview(&task.spec.description)).into_owned();
        if description.chars().count() > DESCRIPTION_CHARS {
            description = description.chars().take(DESCRIPTION_CHARS - 1).collect();
            description.push('…');
        }
        out.push_str(&format!(
            "{:<24}  {:<10}  {:<16}  {}\n",
            task.id.as_str(),
            task.state.as_str(),
            task.created_at.format("%Y-%m-%d %H:%M"),
            description
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_types::{TaskId, TaskSpec};

    #[test]
    fn the_table_has_one_aligned_row_per_task_with_a_short_description() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let task = Task {
            id: TaskId::from_random(1),
            owner: "local".into(),
            state: TaskState::Running,
            attempt: 1,
            spec: TaskSpec {
                description: "x".repeat(80),
                ..TaskSpec::default()
            },
            stream_url: String::new(),
            created_at: now,
            updated_at: now,
            status: None,
        };
        let text = table(std::slice::from_ref(&task));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID "));
        assert!(lines[1].starts_with(&format!("{}  RUNNING     2026-11-21 10:00  xxx", task.id)));
        assert!(lines[1].ends_with('…'));
        assert_eq!(lines[1].find("xxx"), lines[0].find("DESCRIPTION"));
    }
}
