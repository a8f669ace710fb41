//! The SQLite schema and its migrations.
//!
//! PERSISTED: these tables are the on-disk format of every Tether data dir. Change them only by
//! adding a migration at the end of [`MIGRATIONS`]; never edit one that has shipped.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: streams, their data, and idempotent-producer state.
    r#"
    CREATE TABLE streams (
        id                 INTEGER PRIMARY KEY AUTOINCREMENT,
        path               TEXT NOT NULL UNIQUE,
        content_type       TEXT NOT NULL,
        ttl_secs           INTEGER,
        expires_at_ms      INTEGER,
        created_at_ms      INTEGER NOT NULL,
        last_access_ms     INTEGER NOT NULL,
        start_pos          INTEGER NOT NULL,
        tail               INTEGER NOT NULL,
        closed             INTEGER NOT NULL DEFAULT 0,
        closed_by_producer TEXT,
        closed_by_epoch    INTEGER,
        closed_by_seq      INTEGER,
        last_stream_seq    TEXT,
        fork_source_id     INTEGER,
        fork_source_path   TEXT,
        fork_anchor        INTEGER,
        fork_sub           INTEGER,
        refcount           INTEGER NOT NULL DEFAULT 0,
        soft_deleted       INTEGER NOT NULL DEFAULT 0
    );
    -- One row per append, in commit order: the bytes of the append, or for JSON streams its
    -- messages joined by commas. [pos, end_pos) is the range of positions it covers. Rows are
    -- only ever added at the end of this table, so an append dirties few pages.
    CREATE TABLE chunks (
        seq       INTEGER PRIMARY KEY,
        stream_id INTEGER NOT NULL,
        pos       INTEGER NOT NULL,
        end_pos   INTEGER NOT NULL,
        data      BLOB NOT NULL
    );
    -- Where each stream's chunks are: one row per stream per index flush, listing that run
    -- of its chunks (see segments.rs). Chunks newer than `indexed_seq` are found in memory
    -- until the next flush, and re-indexed from `chunks` at start after a crash.
    CREATE TABLE chunk_index (
        stream_id INTEGER NOT NULL,
        pos       INTEGER NOT NULL,
        chunks    BLOB NOT NULL,
        PRIMARY KEY (stream_id, pos)
    ) WITHOUT ROWID;
    CREATE TABLE producers (
        stream_id   INTEGER NOT NULL,
        producer_id TEXT NOT NULL,
        epoch       INTEGER NOT NULL,
        last_seq    INTEGER NOT NULL,
        PRIMARY KEY (stream_id, producer_id)
    ) WITHOUT ROWID;
    CREATE TABLE store_meta (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    INSERT INTO store_meta (key, value) VALUES ('indexed_seq', 0);
    "#,
    // 2: the control plane: users, their tokens (hashes only), and tasks. A task's events
    // live in the stream `tasks/<id>`; its row holds what state changes compare and set.
    r#"
    CREATE TABLE users (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        name          TEXT NOT NULL UNIQUE,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE tokens (
        id            TEXT PRIMARY KEY,
        user_id       INTEGER NOT NULL,
        role          TEXT NOT NULL,
        hash          BLOB NOT NULL UNIQUE,
        created_at_ms INTEGER NOT NULL,
        revoked_at_ms INTEGER
    );
    CREATE TABLE tasks (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        id            TEXT NOT NULL UNIQUE,
        owner_id      INTEGER NOT NULL,
        state         TEXT NOT NULL,
        attempt       INTEGER NOT NULL,
        spec          TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        idem_key      TEXT,
        idem_hash     BLOB
    );
    CREATE UNIQUE INDEX tasks_by_idempotency_key ON tasks (owner_id, idem_key)
        WHERE idem_key IS NOT NULL;
    CREATE INDEX tasks_by_owner ON tasks (owner_id, seq);
    CREATE INDEX tasks_by_state ON tasks (state, seq);
    "#,
    // 3: execution. A running task holds one lease; each named step of a task has its newest
    // attempt (epoch), its checkpoint once completed, and where its events are in the stream
    // (to know whether a retry must write a rewind). Nudges wait for the worker's heartbeat.
    r#"
    ALTER TABLE tasks ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 3;
    ALTER TABLE tasks ADD COLUMN lease_id TEXT;
    ALTER TABLE tasks ADD COLUMN lease_expires_ms INTEGER;
    ALTER TABLE tasks ADD COLUMN worker TEXT;
    ALTER TABLE users ADD COLUMN max_concurrent INTEGER;
    CREATE INDEX tasks_by_lease_expiry ON tasks (lease_expires_ms)
        WHERE state IN ('RUNNING', 'FINALIZING');
    -- Admission counts an owner's running tasks in every claim: without this it would walk
    -- all of the owner's tasks, finished ones included.
    CREATE INDEX tasks_running_by_owner ON tasks (owner_id, state)
        WHERE state IN ('RUNNING', 'FINALIZING');
    CREATE TABLE steps (
        task_id         TEXT NOT NULL,
        name            TEXT NOT NULL,
        epoch           INTEGER NOT NULL,
        lease_id        TEXT NOT NULL,
        completed_epoch INTEGER,
        checkpoint      TEXT,
        first_event_pos INTEGER,
        PRIMARY KEY (task_id, name)
    ) WITHOUT ROWID;
    CREATE TABLE nudges (
        id         TEXT PRIMARY KEY,
        task_id    TEXT NOT NULL,
        message    TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        acked_ms   INTEGER
    );
    CREATE INDEX nudges_by_task ON nudges (task_id, created_ms);
    "#,
    // 4: when each token was last used (stored about once a minute, not per request).
    r#"
    ALTER TABLE tokens ADD COLUMN last_used_ms INTEGER;
    "#,
    // 5: a plain stream's owner, the user who created it: others do not see it. NULL for
    // streams created before owners existed and for task streams (which follow their task's
    // visibility): such a stream is seen by admins only.
    r#"
    ALTER TABLE streams ADD COLUMN owner_id INTEGER;
    "#,
    // 6: one-time login codes and browser sessions, each stored as a hash and bound to the
    // token it acts as.
    r#"
    CREATE TABLE login_codes (
        hash          BLOB PRIMARY KEY,
        token_id      TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        hash          BLOB PRIMARY KEY,
        token_id      TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL
    );
    CREATE INDEX sessions_by_expiry ON sessions (expires_at_ms);
    "#,
];

/// Applies the migrations this file has not yet seen, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let current: i64 = conn.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [i as i64 + 1],
        )?;
        tx.commit()?;
    }
    Ok(())
}

/// Connection settings. `synchronous = FULL` makes every commit fsync the WAL before it
/// returns: that fsync is what an acknowledgement stands on (G1). Group commit amortises it.
pub fn configure(conn: &Connection, writer: bool) -> rusqlite::Result<()> {
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = OFF;
         PRAGMA temp_store = MEMORY;",
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    if writer {
        // Checkpoints mostly run on their own thread (see `checkpoint.rs`). This is the
        // safety net that lets the WAL restart when that thread cannot catch up.
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = 8000; PRAGMA journal_size_limit = {};",
            super::WAL_LIMIT_BYTES
        ))?;
    } else {
        // Readers scan; the writer keeps the default cache, because SQLite walks its whole
        // page-cache hash at the end of every write transaction, a cost that grows with it.
        // Catch-up reads walk long runs of overflow pages; reading them through a memory
        // map saves a copy per page.
        conn.execute_batch("PRAGMA cache_size = -32768; PRAGMA mmap_size = 1073741824;")?;
    }
    Ok(())
}
