//! `tether export`: a task and its whole stream as JSON lines.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use tether_types::TaskId;

use super::connect::ConnectArgs;
use super::exit::{Exit, UsageError};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The task id (tsk_...).
    pub id: TaskId,
    /// Write to this file instead of stdout.
    #[arg(short = 'o', long = "output-file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Overwrite FILE if it exists.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub async fn run(args: ExportArgs) -> anyhow::Result<Exit> {
    let client = args.connect.client()?;
    match &args.file {
        None => {
            let mut chunks = client.export(&args.id).await?;
            let mut out = std::io::stdout();
            while let Some(chunk) = chunks.next().await {
                out.write_all(&chunk?)?;
            }
            out.flush()?;
        }
        Some(path) => {
            refuse_to_clobber(path, args.force)?;
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            // Written beside the target and renamed into place when complete, so a failed
            // export leaves no half-written file behind and never damages an existing one.
            let mut file = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot create a file in {}", dir.display()))?;
            let mut chunks = client.export(&args.id).await?;
            while let Some(chunk) = chunks.next().await {
                file.write_all(&chunk?)?;
            }
            file.as_file().sync_all()?;
            if args.force {
                file.persist(path)?;
            } else {
                file.persist_noclobber(path)
                    .map_err(|_| clobber_error(path))?;
            }
            eprintln!("exported {} to {}", args.id, path.display());
        }
    }
    Ok(Exit::OK)
}

fn refuse_to_clobber(path: &Path, force: bool) -> anyhow::Result<()> {
    if !force && path.exists() {
        return Err(clobber_error(path).into());
    }
    Ok(())
}

fn clobber_error(path: &Path) -> UsageError {
    UsageError(format!(
        "{} already exists; pass --force to overwrite it",
        path.display()
    ))
}
