//! NATS JetStream through the `async-nats` crate.
//!
//! How the workloads map onto JetStream:
//!
//! - the logical streams of a workload are subjects of one JetStream stream with file storage:
//!   `bench.<run>.append.c<connections>.<i>` in stream `BENCH_<run>_APPEND_C<connections>`.
//!   Thousands of JetStream streams, one per progress stream, is not how JetStream is used:
//!   a stream is a store with its own files and state, and subjects are how it is divided;
//! - an append is a JetStream publish whose `PubAck` is awaited before the next one, so every
//!   client (each its own NATS connection) has exactly one append in flight. What the ack
//!   means on disk depends on the server's fsync policy (see the bench README);
//! - fan-out subscribers each have their own connection and an ordered push consumer that
//!   starts at the sequence after the stream's last one, so nothing can be missed; a
//!   subscriber counts as live once its consumer exists and its subscription has been
//!   flushed to the server;
//! - catch-up preloads with pipelined publishes (every ack awaited per batch) and reads with
//!   an ephemeral pull consumer without acks, in `fetch` batches of 1000 until an empty one;
//!   `bytes_read` counts the payloads;
//! - idle subscribers are ordered push consumers too, each on its own connection, waiting at
//!   the tail of one of `--idle-streams` subjects: what a reader that must not miss a message
//!   would hold.

use std::future::IntoFuture;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use async_nats::jetstream::consumer::{pull, push, AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::Subject;
use bytes::Bytes;
use futures::StreamExt;

use super::{
    catchup_payload, check_catchup, drive_appends, preload_in_batches, run_idle, timed_read,
    Appender, IdleProgress, Peer, Preloader, ReadCount, Wait, Waiting, CONNECT_TIMEOUT,
};
use crate::appends::{AppendsConfig, AppendsResult};
use crate::catchup::{CatchupConfig, CatchupResult};
use crate::fanout::{self, FanoutConfig, FanoutResult, Publisher};
use crate::idle::{IdleConfig, IdleRun};

/// Messages per `fetch` when catching up.
const READ_BATCH: usize = 1000;

/// A NATS server with JetStream enabled, reached by `nats://HOST:PORT`.
#[derive(Clone)]
pub struct Nats {
    url: String,
}

impl Nats {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            url.starts_with("nats://"),
            "--system nats wants --url nats://HOST:PORT, got {url:?}"
        );
        Ok(Self {
            url: url.to_string(),
        })
    }

    /// A new client on a connection of its own.
    async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        async_nats::ConnectOptions::new()
            .connection_timeout(CONNECT_TIMEOUT)
            .connect(self.url.as_str())
            .await
            .with_context(|| format!("connecting to {}", self.url))
    }

    /// Creates stream `name` holding `subjects`, on disk.
    async fn create_stream(
        &self,
        js: &jetstream::Context,
        name: &str,
        subjects: Vec<String>,
    ) -> anyhow::Result<stream::Stream> {
        js.create_stream(stream::Config {
            name: name.to_string(),
            subjects,
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating JetStream stream {name}"))
    }
}

/// A stream name from the run id (stream names may not hold `.`, `*`, `>` or spaces; the run
/// id is base-36 digits).
fn stream_name(run_id: &str, workload: &str) -> String {
    format!("BENCH_{run_id}_{workload}").to_uppercase()
}

impl Peer for Nats {
    const SYSTEM: &'static str = "nats";

    fn describe(&self) -> String {
        format!("NATS JetStream at {}", self.url)
    }

    async fn appends(&self, cfg: &AppendsConfig, run_id: &str) -> anyhow::Result<AppendsResult> {
        cfg.check()?;
        let load = format!("s{}_c{}", cfg.streams, cfg.connections);
        let prefix = format!("bench.{run_id}.append.{load}");
        let js = jetstream::new(self.connect().await?);
        let name = stream_name(run_id, &format!("append_{load}"));
        self.create_stream(&js, &name, vec![format!("{prefix}.*")])
            .await?;
        let subjects: Arc<Vec<Subject>> = Arc::new(
            (0..cfg.streams)
                .map(|i| Subject::from(format!("{prefix}.{i}")))
                .collect(),
        );
        let body = Bytes::from(vec![b'x'; cfg.message_size]);
        let clients = futures::future::try_join_all((0..cfg.connections).map(|_| async {
            Ok::<_, anyhow::Error>(NatsAppender {
                js: jetstream::new(self.connect().await?),
                subjects: subjects.clone(),
                body: body.clone(),
            })
        }))
        .await
        .context("opening the append connections")?;
        drive_appends(cfg, clients).await
    }

    async fn fanout(&self, cfg: &FanoutConfig, run_id: &str) -> anyhow::Result<FanoutResult> {
        cfg.check()?;
        let subject = format!("bench.{run_id}.fanout.s{}", cfg.subscribers);
        let name = stream_name(run_id, &format!("fanout_s{}", cfg.subscribers));
        let js = jetstream::new(self.connect().await?);
        let mut stream = self
            .create_stream(&js, &name, vec![subject.clone()])
            .await?;
        let start = stream.info().await?.state.last_sequence + 1;

        let subscribed = fanout::spawn_subscribers(cfg, || FanoutSubscriber {
            nats: self.clone(),
            stream: name.clone(),
            subject: subject.clone(),
            start,
        });
        let publisher = NatsPublisher {
            js,
            subject: Subject::from(subject),
        };
        fanout::measure(cfg, subscribed, publisher).await
    }

    async fn catchup(&self, cfg: &CatchupConfig, run_id: &str) -> anyhow::Result<CatchupResult> {
        check_catchup(cfg)?;
        let name = cfg
            .stream
            .clone()
            .unwrap_or_else(|| stream_name(run_id, "catchup"));
        let subject = Subject::from(format!("bench.catchup.{name}"));
        let js = jetstream::new(self.connect().await?);
        let (stream, preload_s) = match js.get_stream(&name).await {
            Ok(stream) => match stream.cached_info().state.messages {
                n if n == cfg.messages as u64 => (stream, None),
                n => bail!(
                    "stream {name} holds {n} messages, not {}; delete it or name another \
                     --catchup-stream",
                    cfg.messages
                ),
            },
            Err(e) if is_stream_not_found(e.kind()) => {
                let stream = self
                    .create_stream(&js, &name, vec![subject.to_string()])
                    .await?;
                let start = Instant::now();
                preload_in_batches(cfg, || async {
                    // Room for a whole batch of unacknowledged publishes.
                    let js = jetstream::ContextBuilder::new()
                        .max_ack_inflight(cfg.batch)
                        .build(self.connect().await?);
                    Ok(NatsPreloader {
                        js,
                        subject: subject.clone(),
                        size: cfg.message_size,
                    })
                })
                .await?;
                (stream, Some(start.elapsed().as_secs_f64()))
            }
            Err(e) => return Err(e).with_context(|| format!("looking up stream {name}")),
        };

        let consumer = stream
            .create_consumer(pull::Config {
                ack_policy: AckPolicy::None,
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .context("creating the catch-up consumer")?;
        timed_read(cfg, name, preload_s, async {
            let mut count = ReadCount::default();
            loop {
                let mut batch = consumer
                    .fetch()
                    .max_messages(READ_BATCH)
                    .messages()
                    .await
                    .context("fetching a catch-up batch")?;
                count.requests += 1;
                let before = count.messages;
                while let Some(message) = batch.next().await {
                    let message = message.map_err(|e| anyhow::anyhow!(e))?;
                    count.messages += 1;
                    count.bytes += message.payload.len() as u64;
                }
                if count.messages == before {
                    return Ok(count);
                }
            }
        })
        .await
    }

    async fn idle(&self, cfg: &IdleConfig, run_id: &str) -> anyhow::Result<IdleRun> {
        let prefix = format!("bench.{run_id}.idle");
        let name = stream_name(run_id, "idle");
        let js = jetstream::new(self.connect().await?);
        self.create_stream(&js, &name, vec![format!("{prefix}.*")])
            .await?;
        run_idle(cfg, Subscribed, |i| {
            let (nats, name) = (self.clone(), name.clone());
            let subject = format!("{prefix}.{}", i % cfg.streams);
            async move {
                let (client, mut messages) =
                    tail_consumer(&nats, &name, subject, DeliverPolicy::New).await?;
                // Polling the messages keeps answering the consumer's heartbeats and flow
                // control, as a waiting reader would.
                let wait: Wait = Box::pin(async move {
                    let _client = client;
                    loop {
                        match messages.next().await {
                            Some(Ok(_)) => {}
                            Some(Err(e)) => return Err(anyhow::anyhow!(e)),
                            None => bail!("the consumer's messages ended"),
                        }
                    }
                });
                Ok(wait)
            }
        })
        .await
    }
}

/// Idle subscribers are waiting once their consumer exists and their subscription reached the
/// server.
struct Subscribed;

impl Waiting for Subscribed {
    async fn count(&mut self, progress: &IdleProgress) -> usize {
        progress.subscribed.load(Ordering::Relaxed)
    }
}

fn is_stream_not_found(kind: GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// Connects a client of its own and gives it an ordered push consumer on `subject` of
/// `stream`, starting where `deliver` says. Returns once the server holds the consumer and the
/// client's subscription to it, so a message published afterwards reaches it. The client is
/// returned too: it must live as long as the messages are read.
async fn tail_consumer(
    nats: &Nats,
    stream: &str,
    subject: String,
    deliver: DeliverPolicy,
) -> anyhow::Result<(async_nats::Client, push::Ordered)> {
    let client = nats.connect().await?;
    let js = jetstream::new(client.clone());
    let consumer = js
        .get_stream_no_info(stream)
        .await?
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: subject,
            deliver_policy: deliver,
            ..Default::default()
        })
        .await
        .context("creating an ordered consumer")?;
    let messages = consumer
        .messages()
        .await
        .context("subscribing to the consumer")?;
    client.flush().await.context("flushing the subscription")?;
    Ok((client, messages))
}

struct NatsAppender {
    js: jetstream::Context,
    subjects: Arc<Vec<Subject>>,
    body: Bytes,
}

impl Appender for NatsAppender {
    async fn append(&mut self, stream: usize) -> Result<(), String> {
        publish(&self.js, self.subjects[stream].clone(), self.body.clone()).await
    }
}

/// Publishes and waits for the stream's acknowledgement.
async fn publish(js: &jetstream::Context, subject: Subject, body: Bytes) -> Result<(), String> {
    let ack = js
        .publish(subject, body)
        .await
        .map_err(|e| format!("publish: {:?}", e.kind()))?;
    ack.await
        .map(drop)
        .map_err(|e| format!("ack: {:?}", e.kind()))
}

struct NatsPublisher {
    js: jetstream::Context,
    subject: Subject,
}

impl Publisher for NatsPublisher {
    async fn publish(&mut self, body: Bytes) -> Result<(), String> {
        publish(&self.js, self.subject.clone(), body).await
    }
}

struct NatsPreloader {
    js: jetstream::Context,
    subject: Subject,
    size: usize,
}

impl Preloader for NatsPreloader {
    async fn send(&mut self, range: std::ops::Range<usize>) -> anyhow::Result<()> {
        let mut acks = Vec::with_capacity(range.len());
        for i in range.clone() {
            let payload = Bytes::from(catchup_payload(i, self.size));
            acks.push(self.js.publish(self.subject.clone(), payload).await?);
        }
        futures::future::try_join_all(acks.into_iter().map(IntoFuture::into_future))
            .await
            .with_context(|| format!("publishing messages {}..{}", range.start, range.end))?;
        Ok(())
    }
}

struct FanoutSubscriber {
    nats: Nats,
    stream: String,
    subject: String,
    /// The first sequence to deliver: the one after the stream's last before any append.
    start: u64,
}

impl fanout::Listener for FanoutSubscriber {
    async fn listen(
        self,
        mut shared: fanout::Shared,
        out: &mut fanout::SubscriberOutcome,
    ) -> anyhow::Result<()> {
        let from = DeliverPolicy::ByStartSequence {
            start_sequence: self.start,
        };
        let (_client, mut messages) = {
            let _permit = shared.gate.acquire().await?;
            tail_consumer(&self.nats, &self.stream, self.subject, from).await?
        };
        shared.progress.accepted.fetch_add(1, Ordering::Relaxed);
        shared.progress.ready.fetch_add(1, Ordering::Relaxed);
        loop {
            let message = tokio::select! {
                m = messages.next() => m,
                _ = shared.stop.changed() => return Ok(()),
            };
            let message = match message {
                Some(m) => m.map_err(|e| anyhow::anyhow!(e))?,
                None => bail!("the consumer's messages ended"),
            };
            if shared.deliver(out, &message.payload) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_valid_jetstream_names() {
        let name = stream_name("k3x9a", "append_c64");
        assert_eq!(name, "BENCH_K3X9A_APPEND_C64");
        assert!(!name.contains(['.', '*', '>', ' ']));
    }

    #[test]
    fn only_nats_urls_are_accepted() {
        assert!(Nats::new("nats://127.0.0.1:4300").is_ok());
        assert!(Nats::new("redis://127.0.0.1:4300").is_err());
    }
}
