//! `tether up`: the server and a demo worker in one process, the first command to try.
//!
//! The worker talks HTTP to the server's own address, exactly as a remote worker would, with
//! a worker token minted for it at start and revoked when it stops. The token's id is kept in
//! the data dir, so that the token of a run that crashed is revoked at the next start instead
//! of staying valid for good.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tether_client::worker::{run_worker, WorkerConfig};
use tether_client::Client;
use tether_server::auth::{self, ADMIN_USER};
use tether_server::config::DEFAULT_DATA_DIR as CLI_DEFAULT_DATA_DIR;
use tether_server::{AuthMode, ServerConfig};
use tether_store::{ControlStore, NewToken, TaskFilter, UserError};
use tether_types::{Role, TaskSpec};
use tokio::sync::watch;

use crate::worker::demo::DemoRunner;

/// The address the CLI uses when none is configured.
const CLI_DEFAULT_URL: &str = "http://127.0.0.1:4437";
/// The id (not the secret) of the demo worker's current token, in the data dir.
const WORKER_TOKEN_ID_FILE: &str = "up-worker.token-id";

pub async fn run(config: ServerConfig, speed: f64, concurrency: usize) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let socket = crate::cli::bind(config.listen)?;
    let addr = socket.local_addr()?;
    // As for `serve`: the port accepts only once the first admin token exists.
    let stores = tether_server::open_store(&config).await?;
    crate::cli::record_local_server(&config, addr);
    let listener = tether_server::listen(socket)?;
    let control = stores.control.clone();
    let token = match config.auth {
        AuthMode::Token => Some(worker_token(control.as_ref(), &config.data_dir).await?),
        AuthMode::Off => None,
    };
    let url = format!("http://{addr}");
    let first_start = holds_no_task(control.as_ref()).await;
    // Scripts and tests wait for this line; keep its shape (the same as `tether serve`).
    println!("tether listening on {url}");
    println!(
        "{}",
        guide(&url, &config.data_dir.display().to_string(), speed)
    );
    match config.auth {
        AuthMode::Off => println!("web UI: {url}/"),
        AuthMode::Token => match login_link(control.as_ref(), &config.data_dir, &url).await {
            Ok(Some(link)) => println!(
                "web UI: {link}\n  (a one-time login link, valid for {} minutes; `tether ui` \
                 prints a new one)",
                auth::LOGIN_CODE_TTL.num_minutes()
            ),
            Ok(None) => {
                println!("web UI: {url}/ (sign in with a token; `tether ui` prints a login link)")
            }
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "could not make a login link");
                println!("web UI: {url}/ (`tether ui` prints a login link)")
            }
        },
    }

    // The worker stops first, then its token is revoked, then the server (and its store).
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stop_server_tx, stop_server_rx) = watch::channel(false);
    let data_dir = config.data_dir.clone();
    let config_auth = config.auth;
    let mut server = tokio::spawn(tether_server::serve(
        config,
        listener,
        stores,
        stopped(stop_server_rx),
    ));
    if first_start {
        let admin = match config_auth {
            AuthMode::Token => admin_secret(&data_dir),
            AuthMode::Off => None,
        };
        let client = Client::new(&url, admin.as_deref())?;
        tokio::spawn(submit_demo_task(client, url.clone()));
    }
    let client = Client::new(&url, token.as_ref().map(|t| t.1.as_str()))?;
    let worker_config = WorkerConfig {
        name: "up-demo".into(),
        concurrency,
        claim_wait: Duration::from_secs(20),
        drain: Duration::ZERO,
    };
    let runner = Arc::new(DemoRunner {
        speed,
        crash_at: None,
        fail_at: None,
    });
    let mut worker = tokio::spawn(run_worker(client, worker_config, runner, stopped(stop_rx)));

    let early = tokio::select! {
        _ = crate::cli::shutdown_signal() => None,
        joined = &mut server => Some(joined),
        joined = &mut worker => {
            let _ = stop_tx.send(true);
            if let Ok(Err(error)) = joined {
                tracing::error!(%error, "the demo worker stopped");
            }
            None
        }
    };
    if let Some(joined) = early {
        // The server ended on its own: that is an error, whatever it says.
        let _ = stop_tx.send(true);
        let _ = stop_server_tx.send(true);
        return joined?.and_then(|()| Err(anyhow::anyhow!("the server stopped unexpectedly")));
    }
    let _ = stop_tx.send(true);
    if !worker.is_finished() {
        let _ = worker.await;
    }
    if let Some((id, _)) = token {
        match control.revoke_token(&id, Utc::now()).await {
            Ok(()) => {
                let _ = std::fs::remove_file(data_dir.join(WORKER_TOKEN_ID_FILE));
            }
            Err(error) => {
                tracing::warn!(%error, data_dir = %data_dir.display(), "could not revoke the demo worker's token; the next start will")
            }
        }
    }
    let _ = stop_server_tx.send(true);
    server.await?
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A worker token for the built-in worker: its id (to revoke it) and its secret. The token of
/// an earlier run that did not stop cleanly is revoked first.
async fn worker_token(
    control: &dyn ControlStore,
    data_dir: &Path,
) -> anyhow::Result<(String, String)> {
    let id_file = data_dir.join(WORKER_TOKEN_ID_FILE);
    if let Ok(previous) = std::fs::read_to_string(&id_file) {
        let previous = previous.trim();
        match control.revoke_token(previous, Utc::now()).await {
            Ok(()) => tracing::info!(
                token = previous,
                "revoked the demo worker's token left by a run that did not stop cleanly"
            ),
            Err(UserError::TokenNotFound) => {}
            Err(error) => return Err(error.into()),
        }
    }
    let minted = auth::mint();
    control
        .create_token(NewToken {
            id: minted.id.clone(),
            user: ADMIN_USER.to_string(),
            role: Role::Worker,
            hash: auth::hash(&minted.secret),
            now: Utc::now(),
        })
        .await?;
    // Before the worker uses it: a crash from here on leaves the id to revoke behind.
    std::fs::create_dir_all(data_dir)?;
    std::fs::write(&id_file, format!("{}\n", minted.id))
        .with_context(|| format!("cannot write {}", id_file.display()))?;
    Ok((minted.id, minted.secret))
}

/// A one-time login link for the first admin's token (from `<data-dir>/admin.token`); `None`
/// when this data dir has no such token (another node made the first admin).
async fn login_link(
    control: &dyn ControlStore,
    data_dir: &Path,
    url: &str,
) -> anyhow::Result<Option<String>> {
    let Some(secret) = admin_secret(data_dir) else {
        return Ok(None);
    };
    let Some(admin) = control.principal(&auth::hash(&secret)).await? else {
        return Ok(None);
    };
    let (code, _) = auth::mint_login_code(control, &admin.token_id).await?;
    Ok(Some(format!("{url}/login?code={code}")))
}

/// The first admin's token secret, from `<data-dir>/admin.token` (absent when another node
/// made the first admin).
fn admin_secret(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join(auth::ADMIN_TOKEN_FILE)).ok()?;
    Some(text.trim().to_string())
}

/// Whether the store holds no task at all: a first start, which gets a demo task so that
/// the page the login link opens has something running. A store that cannot say is taken as
/// not empty: nothing is submitted behind a user's back on a database in trouble.
async fn holds_no_task(control: &dyn ControlStore) -> bool {
    let filter = TaskFilter {
        owner_id: None,
        state: None,
        before_seq: None,
        search: None,
        limit: 1,
    };
    matches!(control.list_tasks(filter).await, Ok(tasks) if tasks.is_empty())
}

/// Submits the first start's demo task as the first admin, for the demo worker to run.
async fn submit_demo_task(client: Client, url: String) {
    let spec = TaskSpec {
        description: "demo: fix the flaky login test".into(),
        repository: Some("acme/app".into()),
        ..TaskSpec::default()
    };
    // The key makes a repeated submit (none is made today) give back the same task.
    match client
        .submit(&spec, Some("tether-up-first-start-demo"))
        .await
    {
        Ok((task, _)) => println!("demo task running: {url}/tasks/{}", task.id),
        Err(error) => tracing::warn!(%error, "could not submit the demo task"),
    }
}

/// What to do next, with the settings the CLI needs when they are not its defaults.
fn guide(url: &str, data_dir: &str, speed: f64) -> String {
    let mut env = Vec::new();
    if url != CLI_DEFAULT_URL {
        env.push(format!("TETHER_URL={url}"));
    }
    let dir = data_dir.trim_end_matches('/');
    if dir != CLI_DEFAULT_DATA_DIR && Some(dir) != CLI_DEFAULT_DATA_DIR.strip_prefix("./") {
        env.push(format!("TETHER_DATA_DIR={data_dir}"));
    }
    let export = if env.is_empty() {
        String::new()
    } else {
        format!("  export {}\n", env.join(" "))
    };
    format!(
        "a demo worker is running tasks here (speed {speed}). In another terminal:\n\
         {export}  \
         tether run \"fix the flaky test\" --repo org/app    # submit, then watch it live\n  \
         tether submit \"...\"; tether watch tsk_...         # the same in two steps\n\
         Ctrl-C stops the server and the worker."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guide_names_only_the_settings_that_differ_from_the_cli_defaults() {
        let plain = guide(CLI_DEFAULT_URL, "./tether-data", 1.0);
        assert!(
            plain.contains("\n  tether run \"fix the flaky test\""),
            "{plain}"
        );
        assert!(!plain.contains("TETHER_"), "{plain}");
        let other = guide("http://127.0.0.1:5000", "/tmp/t", 100.0);
        assert!(
            other.contains(
                "\n  export TETHER_URL=http://127.0.0.1:5000 TETHER_DATA_DIR=/tmp/t\n  tether run"
            ),
            "{other}"
        );
    }
}
