//! Usage rows leave the request path through a channel; one task writes them in
//! batches on a timer, so recording never slows a response.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Store, UsageRow};

/// The sending side, held by the server state.
pub type UsageSender = mpsc::UnboundedSender<UsageRow>;

/// The running writer.
pub struct UsageWriter {
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

impl UsageWriter {
    /// Writes everything queued so far, then stops.
    pub async fn flush_and_stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.await;
    }
}

/// Starts the writer. It wakes on a timer (`flush`), not per row: sending a row never
/// wakes a task, so the request path pays only for a channel push. Each tick drains the
/// queue and writes it in batches of at most `batch` rows. Rows that fail to write are
/// retried with backoff, never dropped while the process lives.
pub fn spawn(store: Store, batch: usize, flush: Duration) -> (UsageSender, UsageWriter) {
    let (tx, mut rx) = mpsc::unbounded_channel::<UsageRow>();
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let batch = batch.max(1);
    let handle = tokio::spawn(async move {
        let mut buf: Vec<UsageRow> = Vec::new();
        let mut ticker = tokio::time::interval(flush.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        loop {
            if !stopping {
                tokio::select! {
                    _ = ticker.tick() => {},
                    _ = &mut stop_rx => stopping = true,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(r) => {
                        buf.push(r);
                        if buf.len() >= batch {
                            write_batch(&store, &buf).await;
                            buf.clear();
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        stopping = true;
                        break;
                    }
                }
            }
            if !buf.is_empty() {
                write_batch(&store, &buf).await;
                buf.clear();
            }
            if stopping && rx.is_empty() {
                break;
            }
        }
    });
    (
        tx,
        UsageWriter {
            stop: stop_tx,
            handle,
        },
    )
}

async fn write_batch(store: &Store, rows: &[UsageRow]) {
    for chunk in rows.chunks(ROWS_PER_CALL) {
        write_chunk(store, chunk).await;
    }
}

/// Rows per `insert_usage` call. SQLite (through sqlx) looks each bound parameter up by
/// name in a list as long as the statement's parameters, so a statement of many rows
/// costs O(parameters²): with 100 rows (1,000 parameters) that lookup was the gateway's
/// hottest function under load (14 % of its CPU in `perf`). Small statements keep it
/// linear; WAL with `synchronous = NORMAL` makes the extra commits cheap.
const ROWS_PER_CALL: usize = 10;

async fn write_chunk(store: &Store, rows: &[UsageRow]) {
    let mut delay = Duration::from_millis(100);
    loop {
        match store.insert_usage(rows).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, rows = rows.len(), "writing usage failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}
