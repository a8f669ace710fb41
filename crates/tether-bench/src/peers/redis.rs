//! Redis Streams through the `redis` crate.
//!
//! How the workloads map onto Redis:
//!
//! - a logical stream is one stream key, `bench:<run>:<workload>:...`; an append is
//!   `XADD key * d <payload>`, acknowledged by the entry id. With `--appendfsync always` Redis
//!   writes and fsyncs its AOF before it replies, once per event-loop turn for every client
//!   served in that turn: the same group commit a Durable Streams server may do;
//! - every client and subscriber has its own connection (a multiplexed connection used by one
//!   task only, so exactly one request is in flight);
//! - fan-out subscribers read with `XREAD BLOCK 0 STREAMS key <last id>`, starting from the id
//!   of the stream's last entry before any append (`0-0` on a fresh key), so nothing can be
//!   missed. They count as live once the server's `blocked_clients` (`INFO clients`) has grown
//!   by their number;
//! - catch-up preloads with pipelined `XADD`s and reads with `XRANGE key (<last id> + COUNT
//!   1000` pages until a short page; `bytes_read` counts the payloads;
//! - idle subscribers block in `XREAD BLOCK 0 STREAMS key $`. Redis refuses clients beyond its
//!   `maxclients` (10,000 by default), so ten thousand idle subscribers need a higher setting.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};

use super::{
    catchup_payload, check_catchup, drive_appends, preload_in_batches, reconnect, run_idle,
    timed_read, Appender, IdleProgress, Peer, Preloader, ReadCount, Wait, Waiting, CONNECT_TIMEOUT,
};
use crate::appends::{AppendsConfig, AppendsResult};
use crate::catchup::{CatchupConfig, CatchupResult};
use crate::fanout::{self, FanoutConfig, FanoutResult, Publisher};
use crate::idle::{IdleConfig, IdleRun};

/// Entries per `XRANGE` page when catching up.
const READ_PAGE: usize = 1000;
/// The field every entry stores its payload under.
const FIELD: &str = "d";
/// How long an append may wait for its reply before it counts as failed.
const APPEND_TIMEOUT: Duration = Duration::from_secs(60);

/// A Redis server, reached by `redis://HOST:PORT`.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    url: String,
}

impl Redis {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            url.starts_with("redis://"),
            "--system redis wants --url redis://HOST:PORT, got {url:?}"
        );
        let client = redis::Client::open(url).with_context(|| format!("parsing {url:?}"))?;
        Ok(Self {
            client,
            url: url.to_string(),
        })
    }

    /// A new connection of its own. `response_timeout` is `None` for blocking reads.
    async fn connect(
        &self,
        response_timeout: Option<Duration>,
    ) -> anyhow::Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(response_timeout);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .with_context(|| format!("connecting to {}", self.url))
    }

    /// How many clients the server holds blocked, e.g. in `XREAD BLOCK`.
    async fn blocked_clients(conn: &mut MultiplexedConnection) -> anyhow::Result<usize> {
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query_async(conn)
            .await
            .context("INFO clients")?;
        info_field(&info, "blocked_clients").context("INFO clients has no blocked_clients")
    }

    /// The id of the last entry of `key`, or `0-0` if it has none: where a reader that must
    /// see every later entry starts.
    async fn last_id(conn: &mut MultiplexedConnection, key: &str) -> anyhow::Result<String> {
        let reply: Value = redis::cmd("XREVRANGE")
            .arg(key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await
            .with_context(|| format!("XREVRANGE {key}"))?;
        match entries(&reply)?.first() {
            Some(e) => Ok(entry_id(e)?.to_string()),
            None => Ok("0-0".to_string()),
        }
    }
}

impl Peer for Redis {
    const SYSTEM: &'static str = "redis";

    fn describe(&self) -> String {
        format!("Redis Streams at {}", self.url)
    }

    async fn appends(&self, cfg: &AppendsConfig, run_id: &str) -> anyhow::Result<AppendsResult> {
        cfg.check()?;
        let keys: Arc<Vec<String>> = Arc::new(
            (0..cfg.streams)
                .map(|i| {
                    format!(
                        "bench:{run_id}:append:s{}:c{}:{i}",
                        cfg.streams, cfg.connections
                    )
                })
                .collect(),
        );
        let body = Bytes::from(vec![b'x'; cfg.message_size]);
        let conns = futures::future::try_join_all(
            (0..cfg.connections).map(|_| self.connect(Some(APPEND_TIMEOUT))),
        )
        .await
        .context("opening the append connections")?;
        let clients = conns
            .into_iter()
            .map(|conn| RedisAppender {
                redis: self.clone(),
                conn: Some(conn),
                keys: keys.clone(),
                body: body.clone(),
            })
            .collect();
        drive_appends(cfg, clients).await
    }

    async fn fanout(&self, cfg: &FanoutConfig, run_id: &str) -> anyhow::Result<FanoutResult> {
        cfg.check()?;
        let key = format!("bench:{run_id}:fanout:s{}", cfg.subscribers);
        let mut conn = self.connect(Some(APPEND_TIMEOUT)).await?;
        let start = Redis::last_id(&mut conn, &key).await?;
        let blocked_before = Redis::blocked_clients(&mut conn).await?;

        let subscribed = fanout::spawn_subscribers(cfg, || FanoutSubscriber {
            redis: self.clone(),
            key: key.clone(),
            last: start.clone(),
        });
        // A subscriber is live once the server holds it blocked; count them for the
        // coordinator until they all are.
        let watcher = {
            let (redis, subscribers) = (self.clone(), cfg.subscribers);
            let progress = subscribed.progress.clone();
            tokio::spawn(async move {
                let mut conn = redis.connect(Some(APPEND_TIMEOUT)).await?;
                loop {
                    let blocked = Redis::blocked_clients(&mut conn).await?;
                    let live = blocked
                        .saturating_sub(blocked_before)
                        .min(progress.accepted.load(Ordering::Relaxed));
                    progress.ready.store(live, Ordering::Relaxed);
                    if live + progress.failed.load(Ordering::Relaxed) >= subscribers {
                        return anyhow::Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        let publisher = RedisPublisher { conn, key };
        let result = fanout::measure(cfg, subscribed, publisher).await;
        watcher.abort();
        result
    }

    async fn catchup(&self, cfg: &CatchupConfig, run_id: &str) -> anyhow::Result<CatchupResult> {
        check_catchup(cfg)?;
        let key = cfg
            .stream
            .clone()
            .unwrap_or_else(|| format!("bench:{run_id}:catchup"));
        let mut conn = self.connect(None).await?;
        let len: usize = redis::cmd("XLEN")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .with_context(|| format!("XLEN {key}"))?;
        let preload_s = match len {
            0 => {
                let start = Instant::now();
                preload_in_batches(cfg, || async {
                    Ok(RedisPreloader {
                        conn: self.connect(None).await?,
                        key: key.clone(),
                        size: cfg.message_size,
                    })
                })
                .await?;
                Some(start.elapsed().as_secs_f64())
            }
            n if n == cfg.messages => None,
            n => bail!(
                "{key} holds {n} entries, not {}; delete it or name another --catchup-stream",
                cfg.messages
            ),
        };

        timed_read(cfg, key.clone(), preload_s, async {
            let mut start = "-".to_string();
            let mut count = ReadCount::default();
            loop {
                let reply: Value = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(READ_PAGE)
                    .query_async(&mut conn)
                    .await
                    .with_context(|| format!("XRANGE {key} {start}"))?;
                count.requests += 1;
                let page = entries(&reply)?;
                for e in page {
                    count.bytes += entry_payload(e)?.len() as u64;
                }
                count.messages += page.len() as u64;
                match page.last() {
                    Some(last) if page.len() == READ_PAGE => start = exclusive(entry_id(last)?),
                    _ => return Ok(count),
                }
            }
        })
        .await
    }

    async fn idle(&self, cfg: &IdleConfig, run_id: &str) -> anyhow::Result<IdleRun> {
        let mut conn = self.connect(Some(APPEND_TIMEOUT)).await?;
        let before = Redis::blocked_clients(&mut conn).await?;
        run_idle(cfg, Blocked { conn, before }, |i| {
            let redis = self.clone();
            let key = format!("bench:{run_id}:idle:{}", i % cfg.streams);
            async move {
                let mut conn = redis.connect(None).await?;
                let wait: Wait = Box::pin(async move {
                    xread_block(&key, "$")
                        .query_async::<Value>(&mut conn)
                        .await
                        .map(drop)
                        .context("XREAD BLOCK")
                });
                Ok(wait)
            }
        })
        .await
    }
}

/// Idle subscribers are waiting once the server holds them blocked.
struct Blocked {
    conn: MultiplexedConnection,
    /// Clients that were blocked before the subscribers connected.
    before: usize,
}

impl Waiting for Blocked {
    async fn count(&mut self, _: &IdleProgress) -> usize {
        Redis::blocked_clients(&mut self.conn)
            .await
            .map_or(0, |n| n.saturating_sub(self.before))
    }
}

struct RedisAppender {
    redis: Redis,
    /// `None` after the connection broke, until the next append reconnects.
    conn: Option<MultiplexedConnection>,
    keys: Arc<Vec<String>>,
    body: Bytes,
}

impl Appender for RedisAppender {
    async fn append(&mut self, stream: usize) -> Result<(), String> {
        let redis = &self.redis;
        let conn = reconnect(&mut self.conn, || redis.connect(Some(APPEND_TIMEOUT))).await?;
        let reply = redis::cmd("XADD")
            .arg(&self.keys[stream])
            .arg("*")
            .arg(FIELD)
            .arg(&self.body[..])
            .query_async::<Value>(conn)
            .await;
        match reply {
            Ok(Value::BulkString(_)) => Ok(()),
            Ok(other) => Err(format!("unexpected XADD reply {other:?}")),
            Err(e) => {
                if e.is_unrecoverable_error() || e.is_connection_dropped() || e.is_timeout() {
                    self.conn = None;
                }
                Err(error_kind(&e))
            }
        }
    }
}

struct RedisPublisher {
    conn: MultiplexedConnection,
    key: String,
}

impl Publisher for RedisPublisher {
    async fn publish(&mut self, body: Bytes) -> Result<(), String> {
        redis::cmd("XADD")
            .arg(&self.key)
            .arg("*")
            .arg(FIELD)
            .arg(&body[..])
            .query_async::<Value>(&mut self.conn)
            .await
            .map(drop)
            .map_err(|e| error_kind(&e))
    }
}

struct RedisPreloader {
    conn: MultiplexedConnection,
    key: String,
    size: usize,
}

impl Preloader for RedisPreloader {
    async fn send(&mut self, range: std::ops::Range<usize>) -> anyhow::Result<()> {
        let mut pipe = redis::pipe();
        for i in range.clone() {
            pipe.cmd("XADD")
                .arg(&self.key)
                .arg("*")
                .arg(FIELD)
                .arg(catchup_payload(i, self.size))
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn)
            .await
            .with_context(|| format!("XADD of messages {}..{}", range.start, range.end))
    }
}

struct FanoutSubscriber {
    redis: Redis,
    key: String,
    /// The id of the last entry seen; the next read returns only later ones.
    last: String,
}

impl fanout::Listener for FanoutSubscriber {
    async fn listen(
        mut self,
        mut shared: fanout::Shared,
        out: &mut fanout::SubscriberOutcome,
    ) -> anyhow::Result<()> {
        let mut conn = {
            let _permit = shared.gate.acquire().await?;
            self.redis.connect(None).await?
        };
        shared.progress.accepted.fetch_add(1, Ordering::Relaxed);
        loop {
            let cmd = xread_block(&self.key, &self.last);
            let read = cmd.query_async::<Value>(&mut conn);
            let reply = tokio::select! {
                reply = read => reply.context("XREAD BLOCK")?,
                _ = shared.stop.changed() => return Ok(()),
            };
            for e in read_entries(&reply)? {
                if shared.deliver(out, entry_payload(e)?) {
                    return Ok(());
                }
                self.last = entry_id(e)?.to_string();
            }
        }
    }
}

/// Waits, however long it takes, for entries of `key` after entry `after` (`$`: after the
/// last one now).
fn xread_block(key: &str, after: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("BLOCK").arg(0).arg("STREAMS").arg(key).arg(after);
    cmd
}

/// The kind of a Redis error, for counting: the server's error code, or the client's kind.
fn error_kind(e: &redis::RedisError) -> String {
    match e.code() {
        Some(code) => code.to_string(),
        None => format!("{:?}", e.kind()),
    }
}

/// The numeric field `name` of an `INFO` section (`name:value` lines).
fn info_field(info: &str, name: &str) -> Option<usize> {
    info.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// The entries of an `XRANGE`/`XREVRANGE` reply.
fn entries(reply: &Value) -> anyhow::Result<&[Value]> {
    match reply {
        Value::Array(entries) => Ok(entries),
        other => bail!("expected an array of entries, got {other:?}"),
    }
}

/// The entries of an `XREAD` reply for one stream: `[[key, [entry, ...]]]`, or nil when the
/// read timed out.
fn read_entries(reply: &Value) -> anyhow::Result<&[Value]> {
    let streams = match reply {
        Value::Nil => return Ok(&[]),
        Value::Array(streams) => streams,
        other => bail!("expected an XREAD reply, got {other:?}"),
    };
    match streams.as_slice() {
        [] => Ok(&[]),
        [Value::Array(stream)] => match stream.as_slice() {
            [_key, list] => entries(list),
            _ => bail!("expected [key, entries] in an XREAD reply"),
        },
        _ => bail!("expected one stream in an XREAD reply"),
    }
}

/// An entry is `[id, [field, value, ...]]`.
fn entry_parts(entry: &Value) -> anyhow::Result<(&[u8], &[Value])> {
    match entry {
        Value::Array(parts) => match parts.as_slice() {
            [Value::BulkString(id), Value::Array(fields)] => Ok((id, fields)),
            _ => bail!("expected [id, fields], got {entry:?}"),
        },
        _ => bail!("expected an entry, got {entry:?}"),
    }
}

fn entry_id(entry: &Value) -> anyhow::Result<&str> {
    std::str::from_utf8(entry_parts(entry)?.0).context("an entry id that is not UTF-8")
}

/// The value of the entry's first field: the payload the bench wrote.
fn entry_payload(entry: &Value) -> anyhow::Result<&[u8]> {
    match entry_parts(entry)?.1 {
        [_field, Value::BulkString(value), ..] => Ok(value),
        fields => bail!("expected a field and its value, got {fields:?}"),
    }
}

/// The `XRANGE` start that excludes entry `id` itself.
fn exclusive(id: &str) -> String {
    format!("({id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, payload: &str) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(vec![bulk(FIELD), bulk(payload)]),
        ])
    }

    #[test]
    fn range_replies_yield_ids_and_payloads_in_order() {
        let reply = Value::Array(vec![entry("5-0", "a"), entry("5-1", "bc")]);
        let page = entries(&reply).unwrap();
        let ids: Vec<_> = page.iter().map(|e| entry_id(e).unwrap()).collect();
        let payloads: Vec<_> = page.iter().map(|e| entry_payload(e).unwrap()).collect();
        assert_eq!(ids, ["5-0", "5-1"]);
        assert_eq!(payloads, [&b"a"[..], &b"bc"[..]]);
    }

    #[test]
    fn read_replies_unwrap_the_one_stream_and_nil_is_empty() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("k"),
            Value::Array(vec![entry("1-0", "0:5;")]),
        ])]);
        let page = read_entries(&reply).unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(entry_payload(&page[0]).unwrap(), b"0:5;");
        assert!(read_entries(&Value::Nil).unwrap().is_empty());
        assert!(read_entries(&Value::Int(3)).is_err());
    }

    #[test]
    fn malformed_entries_are_errors_not_panics() {
        assert!(entry_id(&bulk("1-0")).is_err());
        let no_value = Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk(FIELD)])]);
        assert!(entry_payload(&no_value).is_err());
    }

    #[test]
    fn the_next_page_starts_after_the_last_id() {
        assert_eq!(exclusive("1700000000000-3"), "(1700000000000-3");
    }

    #[test]
    fn info_fields_are_found_by_exact_name() {
        let info =
            "# Clients\r\nconnected_clients:12\r\nblocked_clients:7\r\ntracking_clients:0\r\n";
        assert_eq!(info_field(info, "blocked_clients"), Some(7));
        assert_eq!(info_field(info, "connected_clients"), Some(12));
        assert_eq!(info_field(info, "clients"), None);
    }

    #[test]
    fn only_redis_urls_are_accepted() {
        assert!(Redis::new("redis://127.0.0.1:6390").is_ok());
        assert!(Redis::new("http://127.0.0.1:6390").is_err());
    }
}
