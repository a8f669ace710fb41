//! Opening the PostgreSQL store: migrations, and several nodes starting at once.

use tether_store::pg::scratch::ScratchDatabase;
use tether_store::{PgOptions, PgStore};

#[tokio::test]
async fn nodes_starting_together_migrate_once() {
    let Some(db) = ScratchDatabase::create("migrations").await else {
        return;
    };
    let opens = (0..3).map(|_| PgStore::connect(db.url(), PgOptions::default()));
    let stores = futures::future::join_all(opens).await;
    for store in &stores {
        assert!(
            store.is_ok(),
            "every node opens: {:?}",
            store.as_ref().err()
        );
    }
    drop(stores);
    // Opening again finds nothing to do and keeps the data.
    PgStore::connect(db.url(), PgOptions::default())
        .await
        .expect("reopen");
}

#[tokio::test]
async fn a_bad_url_or_unreachable_server_is_a_clear_error() {
    let err = PgStore::connect("postgres://nobody@127.0.0.1:1/x", PgOptions::default())
        .await
        .err()
        .expect("nothing listens on port 1");
    assert!(
        err.to_string()
            .starts_with("cannot connect to the database"),
        "{err}"
    );
    let err = PgStore::connect("postgres://h:notaport/x", PgOptions::default())
        .await
        .err()
        .expect("a bad port");
    assert!(err.to_string().starts_with("invalid database URL"), "{err}");
}

#[tokio::test]
async fn a_database_that_does_not_exist_is_named_in_the_error() {
    let Some(db) = ScratchDatabase::create("no_such_db").await else {
        return;
    };
    let (server, _) = db.url().rsplit_once('/').expect("a URL with a database");
    let missing = format!("{server}/tether_no_such_database_here");
    let err = PgStore::connect(&missing, PgOptions::default())
        .await
        .err()
        .expect("the database does not exist");
    let text = err.to_string();
    assert!(
        text.starts_with("cannot connect to the database") && text.contains("does not exist"),
        "{text}"
    );
}
