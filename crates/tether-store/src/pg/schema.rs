//! The PostgreSQL schema and its migrations.
//!
//! PERSISTED: these tables are the on-disk format of every PostgreSQL-backed deployment.
//! Change them only by adding a migration at the end of [`MIGRATIONS`]; never edit one that
//! has shipped. Times are milliseconds since the epoch, as in the SQLite schema, so both
//! backends compare and compute them the same way.

use tokio_postgres::Client;

/// Held (per transaction) while migrating, so nodes starting together migrate one at a time.
const MIGRATION_LOCK: i64 = 0x7465_7468_6572_0001;

const MIGRATIONS: &[&str] = &[
    // 1: streams, their data and producer state; the control plane; execution.
    r#"
    CREATE TABLE streams (
        id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        path               TEXT NOT NULL UNIQUE,
        content_type       TEXT NOT NULL,
        ttl_secs           BIGINT,
        expires_at_ms      BIGINT,
        created_at_ms      BIGINT NOT NULL,
        last_access_ms     BIGINT NOT NULL,
        start_pos          BIGINT NOT NULL,
        tail               BIGINT NOT NULL,
        closed             BOOLEAN NOT NULL DEFAULT false,
        closed_by_producer TEXT,
        closed_by_epoch    BIGINT,
        closed_by_seq      BIGINT,
        last_stream_seq    TEXT,
        fork_source_id     BIGINT,
        fork_source_path   TEXT,
        fork_anchor        BIGINT,
        fork_sub           BIGINT,
        refcount           BIGINT NOT NULL DEFAULT 0,
        soft_deleted       BOOLEAN NOT NULL DEFAULT false
    );
    -- One row per append: its bytes, or for JSON streams its messages joined by commas,
    -- covering positions [pos, end_pos). A stream's chunks are contiguous and never empty, so
    -- ordering by end_pos is ordering by position, and `end_pos > from` finds the chunk that
    -- holds `from` with one index probe.
    CREATE TABLE chunks (
        stream_id BIGINT NOT NULL,
        end_pos   BIGINT NOT NULL,
        pos       BIGINT NOT NULL,
        data      BYTEA NOT NULL,
        PRIMARY KEY (stream_id, end_pos)
    );
    CREATE TABLE producers (
        stream_id   BIGINT NOT NULL,
        producer_id TEXT NOT NULL,
        epoch       BIGINT NOT NULL,
        last_seq    BIGINT NOT NULL,
        PRIMARY KEY (stream_id, producer_id)
    );

    CREATE TABLE users (
        id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name           TEXT NOT NULL UNIQUE,
        created_at_ms  BIGINT NOT NULL,
        max_concurrent BIGINT
    );
    CREATE TABLE tokens (
        id            TEXT PRIMARY KEY,
        user_id       BIGINT NOT NULL,
        role          TEXT NOT NULL,
        hash          BYTEA NOT NULL UNIQUE,
        created_at_ms BIGINT NOT NULL,
        revoked_at_ms BIGINT
    );
    CREATE TABLE tasks (
        seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id               TEXT NOT NULL UNIQUE,
        owner_id         BIGINT NOT NULL,
        state            TEXT NOT NULL,
        attempt          INTEGER NOT NULL,
        spec             TEXT NOT NULL,
        created_at_ms    BIGINT NOT NULL,
        updated_at_ms    BIGINT NOT NULL,
        idem_key         TEXT,
        idem_hash        BYTEA,
        max_attempts     INTEGER NOT NULL DEFAULT 3,
        lease_id         TEXT,
        lease_expires_ms BIGINT,
        worker           TEXT
    );
    CREATE UNIQUE INDEX tasks_by_idempotency_key ON tasks (owner_id, idem_key)
        WHERE idem_key IS NOT NULL;
    CREATE INDEX tasks_by_owner ON tasks (owner_id, seq);
    CREATE INDEX tasks_by_state ON tasks (state, seq);
    CREATE INDEX tasks_by_lease_expiry ON tasks (lease_expires_ms)
        WHERE state IN ('RUNNING', 'FINALIZING');
    CREATE INDEX tasks_running_by_owner ON tasks (owner_id, state)
        WHERE state IN ('RUNNING', 'FINALIZING');
    CREATE TABLE steps (
        task_id         TEXT NOT NULL,
        name            TEXT NOT NULL,
        epoch           INTEGER NOT NULL,
        lease_id        TEXT NOT NULL,
        completed_epoch INTEGER,
        checkpoint      TEXT,
        first_event_pos BIGINT,
        PRIMARY KEY (task_id, name)
    );
    CREATE TABLE nudges (
        id         TEXT PRIMARY KEY,
        task_id    TEXT NOT NULL,
        message    TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        acked_ms   BIGINT
    );
    CREATE INDEX nudges_by_task ON nudges (task_id, created_ms);
    "#,
    // 2: when each token was last used (stored about once a minute, not per request).
    r#"
    ALTER TABLE tokens ADD COLUMN last_used_ms BIGINT;
    "#,
    // 3: a plain stream's owner, the user who created it: others do not see it. NULL for
    // streams created before owners existed and for task streams (which follow their task's
    // visibility): such a stream is seen by admins only.
    r#"
    ALTER TABLE streams ADD COLUMN owner_id BIGINT;
    "#,
    // 4: one-time login codes and browser sessions, each stored as a hash and bound to the
    // token it acts as.
    r#"
    CREATE TABLE login_codes (
        hash          BYTEA PRIMARY KEY,
        token_id      TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL
    );
    CREATE TABLE sessions (
        hash          BYTEA PRIMARY KEY,
        token_id      TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL
    );
    CREATE INDEX sessions_by_expiry ON sessions (expires_at_ms);
    "#,
];

/// Applies the migrations the database has not seen yet, all in one transaction taken under
/// an advisory lock: of several nodes starting at once, one migrates and the others then find
/// nothing left to do. Returns the version the database was at before.
pub async fn migrate(client: &mut Client) -> Result<usize, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS tether_schema_version (version INTEGER NOT NULL)")
        .await?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM tether_schema_version",
            &[],
        )
        .await?
        .get(0);
    let current = current.max(0) as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.batch_execute(sql).await?;
        let version = i as i32 + 1;
        tx.execute(
            "INSERT INTO tether_schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(current)
}

/// How many migrations this build knows; a database at a higher version was written by a
/// newer Tether.
pub fn latest() -> usize {
    MIGRATIONS.len()
}
