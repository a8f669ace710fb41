//! Throwaway databases for tests.
//!
//! Tests that run against PostgreSQL take the server from `TETHER_TEST_DATABASE_URL`, create a
//! database of their own on it, and drop it when done, so runs never see each other's data.
//! Without the variable they are skipped, and say so.

use std::sync::atomic::{AtomicU32, Ordering};

use rand::Rng;
use tokio_postgres::NoTls;

/// The variable that names the PostgreSQL server tests may use.
pub const TEST_DATABASE_URL: &str = "TETHER_TEST_DATABASE_URL";
/// Set (CI sets it) to make a test fail rather than skip when the URL is missing.
pub const REQUIRE_POSTGRES: &str = "TETHER_REQUIRE_POSTGRES";

/// A database that exists for as long as this value does.
pub struct ScratchDatabase {
    /// The server's maintenance database, where this one is created and dropped from.
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    /// A new, empty database on the server `TETHER_TEST_DATABASE_URL` names, or `None` (after
    /// printing that `what` was skipped) when the variable is not set. A set variable that
    /// does not work is a failure, not a skip: CI sets it so that these tests run.
    pub async fn create(what: &str) -> Option<ScratchDatabase> {
        let Some(admin_url) = std::env::var(TEST_DATABASE_URL)
            .ok()
            .filter(|v| !v.is_empty())
        else {
            assert!(
                std::env::var_os(REQUIRE_POSTGRES).is_none(),
                "{what}: {REQUIRE_POSTGRES} is set, so PostgreSQL tests must run, but \
                 {TEST_DATABASE_URL} is not set"
            );
            eprintln!("skipped on PostgreSQL: {what} ({TEST_DATABASE_URL} is not set)");
            return None;
        };
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tether_test_{}_{}_{:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::thread_rng().gen::<u32>()
        );
        let admin = connect(&admin_url).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("create the scratch database {name}: {e}"));
        let url = with_database(&admin_url, &name);
        Some(ScratchDatabase {
            admin_url,
            name,
            url,
        })
    }

    /// The URL of the scratch database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        // Drop runs outside any runtime guarantee: use a thread with a runtime of its own.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the scratch database");
            runtime.block_on(async move {
                let admin = connect(&admin_url).await;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(_))) {
            eprintln!("could not drop the scratch database {}", self.name);
        }
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {TEST_DATABASE_URL}: {e}"));
    tokio::spawn(connection);
    client
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    // The part after the authority is the database; there may be none.
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_part_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgresql://u:p@h:1/db?sslmode=disable", "x"),
            "postgresql://u:p@h:1/x?sslmode=disable"
        );
    }
}
