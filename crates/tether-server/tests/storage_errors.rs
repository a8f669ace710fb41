//! Storage failures answer by what happened: a stored row that does not read back is the
//! server's fault (500 `INTERNAL_ERROR`, its cause logged), not "try again later".

// Each test binary uses only part of the shared helpers.
#[allow(dead_code)]
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use hyper::StatusCode;
use support::{on_both_backends, Backend, Server};

/// What the server logged while a test ran, for the test to read.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes JSON that does not parse into task `id`'s stored spec, behind the server's back.
async fn damage_spec(server: &Server, pg_url: Option<&str>, id: &str) {
    const BROKEN: &str = r#"{"description": "cut off"#;
    match pg_url {
        None => {
            let db = rusqlite::Connection::open(server.dir.path().join("tether.db")).unwrap();
            db.busy_timeout(support::PATIENCE).unwrap();
            let changed = db
                .execute(
                    "UPDATE tasks SET spec = ?1 WHERE id = ?2",
                    rusqlite::params![BROKEN, id],
                )
                .unwrap();
            assert_eq!(changed, 1);
        }
        Some(url) => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            let driver = tokio::spawn(connection);
            let changed = client
                .execute("UPDATE tasks SET spec = $1 WHERE id = $2", &[&BROKEN, &id])
                .await
                .unwrap();
            assert_eq!(changed, 1);
            drop(client);
            let _ = driver.await;
        }
    }
}

async fn a_stored_task_that_does_not_parse_is_an_internal_error_logged_with_its_cause(
    backend: Backend,
) {
    let logs = Logs::default();
    let writer = logs.clone();
    // The test runtime has one thread, which runs the server's request tasks too.
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    );
    let pg_url = match &backend {
        Backend::Sqlite => None,
        Backend::Postgres(db) => Some(db.url().to_string()),
    };
    let server = Server::start_on(backend).await;
    let id = server.submit(&server.admin, "soon damaged").await;
    damage_spec(&server, pg_url.as_deref(), &id).await;

    let read = server.get(&format!("/v1/tasks/{id}"), &server.admin).await;
    assert_eq!(read.status, StatusCode::INTERNAL_SERVER_ERROR, "{read:?}");
    assert_eq!(read.code(), "INTERNAL_ERROR");
    let listed = server.get("/v1/tasks", &server.admin).await;
    assert_eq!(
        listed.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{listed:?}"
    );

    // The log says what broke, down to the JSON parser's own words.
    let logged = logs.text();
    let line = logged
        .lines()
        .find(|l| l.contains("request failed") && l.contains("INTERNAL_ERROR"))
        .unwrap_or_else(|| panic!("no log line for the failure in:\n{logged}"));
    assert!(
        line.contains("EOF while parsing"),
        "the cause chain is not in the log line: {line}"
    );
    server.stop().await;
}

on_both_backends!(a_stored_task_that_does_not_parse_is_an_internal_error_logged_with_its_cause);
