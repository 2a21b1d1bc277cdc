//! The Redis pub/sub bus: a publisher task (pooled connections, deadpool-redis) and a subscriber
//! task (one dedicated pub/sub connection), both owned by the app and stopped on shutdown.
//!
//! Publishing: messages queued by the ingest path are gathered for at most [`BATCH_DELAY`] (or
//! [`MAX_BATCH`] messages), encoded as one protobuf payload per fleet and kind, and sent as one
//! pipeline of PUBLISH commands, so Redis sees a handful of commands per flush instead of one per
//! fix (the figures are in BENCHMARKS.md).
//!
//! Subscribing: `PSUBSCRIBE trackhub:*:pos trackhub:*:events` plus `SUBSCRIBE trackhub:control`.
//! When the connection drops, the node keeps serving its own drivers and watchers (`/readyz`
//! reports `degraded`) and reconnects with exponential backoff and full jitter (50 ms doubling to
//! 2 s, as in the AWS Architecture Blog "Exponential Backoff and Jitter"); once subscribed again it
//! republishes its own drivers' latest positions and asks the other nodes to do the same, so every
//! live index converges.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use deadpool_redis::{PoolConfig, Runtime, Timeouts};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::codec::{self, CONTROL_CHANNEL, PATTERNS};
use super::{Bus, Incoming, Link, Outgoing};
use crate::metrics as m;
use crate::shutdown::Shutdown;

/// Longest a queued message waits for its batch to fill.
pub const BATCH_DELAY: Duration = Duration::from_millis(2);
/// Most messages in one flush.
pub const MAX_BATCH: usize = 4_096;
/// Messages waiting to be published before the bus sheds (≈ 1 s at 100k fixes/s).
pub const PUBLISH_QUEUE: usize = 131_072;
/// Decoded batches waiting for the hub.
const INCOMING_QUEUE: usize = 4_096;

/// The running bus tasks.
pub struct BusTasks {
    publisher: JoinHandle<()>,
    subscriber: JoinHandle<()>,
}

impl BusTasks {
    /// Waits for both tasks (after shutdown turned true): the publisher flushes what is queued.
    pub async fn join(self) {
        let _ = self.publisher.await;
        let _ = self.subscriber.await;
    }
}

/// Starts the Redis bus on `url` (`redis://host:port/db`). Fails only on a malformed URL: an
/// unreachable Redis is retried in the background while the node serves on its own.
pub fn start(
    url: &str,
    shutdown: Shutdown,
) -> anyhow::Result<(Bus, mpsc::Receiver<Incoming>, BusTasks)> {
    let client = ::redis::Client::open(url)?;
    let pool = deadpool_redis::Config {
        url: Some(url.to_string()),
        connection: None,
        pool: Some(PoolConfig {
            max_size: 4,
            timeouts: Timeouts {
                wait: Some(Duration::from_secs(1)),
                create: Some(Duration::from_secs(1)),
                recycle: Some(Duration::from_secs(1)),
            },
            ..PoolConfig::default()
        }),
    }
    .create_pool(Some(Runtime::Tokio1))?;
    let node_id = uuid::Uuid::new_v4().simple().to_string();
    let connected = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
    let (in_tx, in_rx) = mpsc::channel(INCOMING_QUEUE);
    let publisher = tokio::spawn(publish_loop(
        pool.clone(),
        node_id.clone(),
        rx,
        shutdown.clone(),
    ));
    let subscriber = tokio::spawn(subscribe_loop(
        client,
        pool,
        node_id.clone(),
        in_tx,
        connected.clone(),
        shutdown,
    ));
    tracing::info!(node_id = %node_id, "redis bus started");
    let bus = Bus {
        link: Some(Arc::new(Link {
            node_id,
            tx,
            connected,
        })),
    };
    Ok((
        bus,
        in_rx,
        BusTasks {
            publisher,
            subscriber,
        },
    ))
}

async fn publish_loop(
    pool: deadpool_redis::Pool,
    node_id: String,
    mut rx: mpsc::Receiver<Outgoing>,
    mut shutdown: Shutdown,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => n,
            _ = shutdown.recv() => {
                // Last flush of what the drain left queued, then stop.
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(msg) => batch.push(msg),
                        Err(_) => break,
                    }
                }
                if !batch.is_empty() {
                    flush(&pool, &node_id, std::mem::take(&mut batch)).await;
                }
                return;
            }
        };
        if n == 0 {
            return;
        }
        // Gather what arrives in the next few ms into the same round trip.
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            tokio::select! {
                n = rx.recv_many(&mut batch, room) => if n == 0 { break },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        flush(&pool, &node_id, std::mem::take(&mut batch)).await;
        batch.reserve(MAX_BATCH);
    }
}

/// Publishes one batch as one pipeline. On failure the batch is dropped (counted): positions are
/// superseded by the next fix or the resync, durable events are in the database.
async fn flush(pool: &deadpool_redis::Pool, node_id: &str, batch: Vec<Outgoing>) {
    let messages = batch.len() as u64;
    let payloads = codec::encode_batch(node_id, batch);
    let mut pipe = ::redis::pipe();
    for (channel, bytes) in &payloads {
        pipe.publish(channel, bytes.as_slice()).ignore();
    }
    let started = std::time::Instant::now();
    let result = match pool.get().await {
        Ok(mut conn) => pipe
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(()) => {
            metrics::counter!(m::BUS_PUBLISHED_MESSAGES).increment(messages);
            metrics::counter!(m::BUS_PUBLISH_COMMANDS).increment(payloads.len() as u64);
            metrics::histogram!(m::BUS_FLUSH_SECONDS).record(started.elapsed().as_secs_f64());
        }
        Err(error) => {
            metrics::counter!(m::BUS_DROPPED).increment(messages);
            tracing::debug!(%error, messages, "bus publish failed; batch dropped");
        }
    }
}

async fn subscribe_loop(
    client: ::redis::Client,
    pool: deadpool_redis::Pool,
    node_id: String,
    tx: mpsc::Sender<Incoming>,
    connected: Arc<AtomicBool>,
    mut shutdown: Shutdown,
) {
    let backoff = ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times();
    let subscribe = || async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.psubscribe(&PATTERNS[..]).await?;
        pubsub.subscribe(CONTROL_CHANNEL).await?;
        Ok::<_, ::redis::RedisError>(pubsub)
    };
    loop {
        let pubsub = tokio::select! {
            r = subscribe
                .retry(backoff)
                .sleep(tokio::time::sleep)
                .notify(|e, delay| tracing::debug!(error = %e, ?delay, "redis unreachable; retrying")) => r,
            _ = shutdown.recv() => return,
        };
        let Ok(pubsub) = pubsub else { continue };
        connected.store(true, Ordering::Relaxed);
        metrics::counter!(m::BUS_CONNECTS).increment(1);
        tracing::info!("bus subscribed");
        if tx.send(Incoming::Connected).await.is_err() {
            return;
        }
        announce(&pool, &node_id).await;

        let mut stream = pubsub.into_on_message();
        loop {
            let msg = tokio::select! {
                msg = stream.next() => msg,
                _ = shutdown.recv() => return,
            };
            let Some(msg) = msg else { break };
            match codec::decode(&node_id, msg.get_channel_name(), msg.get_payload_bytes()) {
                Ok(Some(incoming)) => {
                    metrics::counter!(m::BUS_RECEIVED_BATCHES).increment(1);
                    if tx.send(incoming).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    metrics::counter!(m::BUS_DECODE_ERRORS).increment(1);
                    tracing::warn!(error = %e, channel = msg.get_channel_name(), "undecodable bus message");
                }
            }
        }
        connected.store(false, Ordering::Relaxed);
        tracing::warn!("bus connection lost; serving local drivers only until Redis returns");
    }
}

/// Asks every other node to republish its drivers' positions (we just (re)joined).
async fn announce(pool: &deadpool_redis::Pool, node_id: &str) {
    let payload = codec::encode_resync(node_id);
    let sent = match pool.get().await {
        Ok(mut conn) => ::redis::cmd("PUBLISH")
            .arg(CONTROL_CHANNEL)
            .arg(payload)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(error) = sent {
        tracing::warn!(%error, "resync request not published");
    }
}
