//! `tether ui`: a fresh one-time login link to the web UI for the configured server and
//! token, and with `--open`, the link opened in the desktop's browser.

use clap::Args;

use super::{ConnectArgs, Exit, Output};

#[derive(Debug, Args)]
pub struct UiArgs {
    /// Open the link with `xdg-open` as well as printing it.
    #[arg(long)]
    pub open: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub async fn run(args: UiArgs) -> anyhow::Result<Exit> {
    let code = args.connect.client()?.login_code().await?;
    let url = match &code.url {
        Some(url) => url.clone(),
        None => format!(
            "{}/login?code={}",
            args.connect.resolved_url()?.trim_end_matches('/'),
            code.code
        ),
    };
    match args.connect.output {
        Output::Text => {
            println!("{url}");
            eprintln!(
                "The link signs one browser in, once, until {} (UTC).",
                code.expires_at.format("%H:%M")
            );
        }
        Output::Json => println!(
            "{}",
            serde_json::json!({"url": url, "code": code.code, "expires_at": code.expires_at})
        ),
    }
    if args.open {
        open(&url);
    }
    Ok(Exit::OK)
}

/// Hands the link to `xdg-open`, or says why it did not.
fn open(url: &str) {
    match std::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(_) => eprintln!("Opened the link with xdg-open."),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("xdg-open is not installed here: open the link above in a browser.")
        }
        Err(e) => eprintln!("Could not run xdg-open ({e}): open the link above in a browser."),
    }
}
