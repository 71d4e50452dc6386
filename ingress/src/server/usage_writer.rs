//! Usage rows leave the request path through a channel; one task writes them in
//! batches (a transaction per batch), so recording never slows a response.

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

/// Starts the writer. Rows that fail to write are retried with backoff, never dropped
/// while the process lives.
pub fn spawn(store: Store, batch: usize, flush: Duration) -> (UsageSender, UsageWriter) {
    let (tx, mut rx) = mpsc::unbounded_channel::<UsageRow>();
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let mut buf: Vec<UsageRow> = Vec::new();
        let mut stopping = false;
        loop {
            if !stopping {
                tokio::select! {
                    r = rx.recv() => match r {
                        Some(row) => buf.push(row),
                        None => stopping = true,
                    },
                    _ = tokio::time::sleep(flush) => {},
                    _ = &mut stop_rx => stopping = true,
                }
            }
            while buf.len() < batch {
                match rx.try_recv() {
                    Ok(r) => buf.push(r),
                    Err(_) => break,
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
