//! The answer side of a connection: how much work one client can have the daemon do, and
//! how much memory it can make the daemon hold, before it reads its answers.
//!
//! - **Room first.** A request reserves a place for its answer in the connection's outgoing
//!   queue ([`Outbox::reserve`]) before it runs. At most [`MAX_IN_FLIGHT`] answers are
//!   running or waiting to be written; when none is left the reader stops reading, so a
//!   client that does not read gets no more work done and the kernel's socket buffer pushes
//!   back on it.
//! - **Bytes.** A queued answer holds a share of [`MAX_QUEUED_BYTES`] until it is written
//!   (an answer larger than the whole budget takes all of it). With the heavy-request limit
//!   below, this bounds what a client that does not read makes the daemon hold: one heavy
//!   answer (an export: up to the session's size), and cheap answers, which are small, up to
//!   the budget plus the few built and waiting for it. A cheap answer waits only behind a
//!   large one, which the writer would put first anyway.
//! - **Heavy requests** ([`Weight`]: a whole session in or out, the session list, a delete)
//!   are storage jobs whose cost grows with the data, and the storage thread serves jobs first
//!   come, first served. One connection has at most [`HEAVY_PER_CONN`] of them from the
//!   moment one starts until its answer is written, and the daemon runs at most
//!   [`HEAVY_RUNNING`] at once, whoever sent them. So a client that pipelines exports and
//!   reads nothing gets one done beyond what its socket buffer takes, and the storage queue
//!   never holds more than a few heavy jobs ahead of anyone's `status` or peer lookup. Cheap
//!   requests (peers, update state, DC options…) are limited by [`MAX_IN_FLIGHT`] here: many
//!   tasks of one bot pipeline them on one connection. Limits across a uid's connections
//!   (one heavy request per uid, requests running, memory) are [`crate::server::limits`]'.
//! - **One writer** task writes answers in order. Once the client is gone (a write fails) or
//!   given up on ([`Writer::give_up`]), it drops the answers unwritten instead, which gives
//!   back their budget. Every request that changes something still runs to its end; a heavy
//!   read not started by then is skipped ([`Slot::client_gone`]), since its answer was all
//!   it would do.
//!
//! [`Weight`]: crate::server::cmd::Weight

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use interprocess::local_socket::tokio::Stream;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

/// Answers of one connection running or waiting to be written.
pub const MAX_IN_FLIGHT: usize = 64;
/// Bytes of answers one connection may have waiting to be written.
pub const MAX_QUEUED_BYTES: usize = 1 << 20;
/// Heavy requests of one connection running or waiting to be written. One: the next starts
/// once the answer before it is written, which for a client that reads takes a moment next
/// to building it, while a client that does not read holds up the storage thread for one
/// heavy job at most.
pub const HEAVY_PER_CONN: usize = 1;
/// Heavy requests running at once in the daemon, over all connections.
pub const HEAVY_RUNNING: usize = 4;

/// A frame for the writer, with the budget it holds until written (or dropped).
pub struct Answer {
    frame: Zeroizing<Vec<u8>>,
    _bytes: Option<OwnedSemaphorePermit>,
    _heavy: Option<OwnedSemaphorePermit>,
    _also: Option<OwnedSemaphorePermit>,
}

/// The sending side of a connection's outgoing queue.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Answer>,
    bytes: Arc<Semaphore>,
    heavy: Arc<Semaphore>,
    gone: Arc<AtomicBool>,
}

/// Room for one answer, reserved before its request runs.
pub struct Slot {
    permit: mpsc::OwnedPermit<Answer>,
    bytes: Arc<Semaphore>,
    heavy: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
    also: Option<OwnedSemaphorePermit>,
    gone: Arc<AtomicBool>,
}

impl Outbox {
    /// A queue and the writer that empties it onto `stream`.
    pub fn new(stream: Arc<Stream>) -> (Outbox, Writer) {
        let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
        let gone = Arc::new(AtomicBool::new(false));
        let writer = Writer::spawn(stream, rx, Arc::clone(&gone));
        let outbox = Outbox {
            tx,
            bytes: Arc::new(Semaphore::new(MAX_QUEUED_BYTES)),
            heavy: Arc::new(Semaphore::new(HEAVY_PER_CONN)),
            gone,
        };
        (outbox, writer)
    }

    /// Waits for room for one answer; `None` once the writer is gone.
    pub async fn reserve(&self) -> Option<Slot> {
        let permit = self.tx.clone().reserve_owned().await.ok()?;
        Some(Slot {
            permit,
            bytes: Arc::clone(&self.bytes),
            heavy: Arc::clone(&self.heavy),
            held: None,
            also: None,
            gone: Arc::clone(&self.gone),
        })
    }

    /// Queues a small frame of the daemon's own (an event, a protocol error) outside the byte
    /// budget; waits for room. False once the writer is gone.
    pub async fn send_small(&self, frame: Zeroizing<Vec<u8>>) -> bool {
        self.tx
            .send(Answer {
                frame,
                _bytes: None,
                _heavy: None,
                _also: None,
            })
            .await
            .is_ok()
    }
}

impl Slot {
    /// Waits until this connection may start one more heavy request; the permit stays with
    /// the answer until it is written.
    pub async fn hold_heavy(&mut self) {
        let permit = Arc::clone(&self.heavy)
            .acquire_owned()
            .await
            .expect("the heavy-request semaphore is never closed");
        self.held = Some(permit);
    }

    /// Keeps `permit` (e.g. the uid's heavy-request slot, see [`crate::server::limits`]) with
    /// the answer until it is written or dropped.
    pub fn hold_also(&mut self, permit: OwnedSemaphorePermit) {
        self.also = Some(permit);
    }

    /// Whether the answer can no longer reach the client: it has gone (a write failed), or
    /// was given up on.
    pub fn client_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// Queues the answer once its bytes fit in the budget.
    pub async fn send(self, frame: Zeroizing<Vec<u8>>) {
        let share = frame.len().min(MAX_QUEUED_BYTES);
        let share = u32::try_from(share).expect("MAX_QUEUED_BYTES (1 MiB) fits in u32");
        let bytes = Arc::clone(&self.bytes)
            .acquire_many_owned(share)
            .await
            .expect("the byte-budget semaphore is never closed");
        // Goes through even if the writer has ended: the writer drops what it receives
        // unwritten, and a queue nobody receives from any more is freed with its last sender.
        self.permit.send(Answer {
            frame,
            _bytes: Some(bytes),
            _heavy: self.held,
            _also: self.also,
        });
    }
}

/// The task that writes a connection's answers.
pub struct Writer {
    task: JoinHandle<()>,
    give_up: Arc<Notify>,
    gone: Arc<AtomicBool>,
}

impl Writer {
    /// Starts writing what `rx` receives to `stream`, in order; sets `gone` when it stops.
    fn spawn(stream: Arc<Stream>, mut rx: mpsc::Receiver<Answer>, gone: Arc<AtomicBool>) -> Writer {
        let give_up = Arc::new(Notify::new());
        let stop = Arc::clone(&give_up);
        let gone_flag = Arc::clone(&gone);
        let task = tokio::spawn(async move {
            let mut w = &*stream;
            let mut live = true;
            while let Some(answer) = rx.recv().await {
                // Given up on (see `give_up`): nothing more is written.
                live &= !gone_flag.load(Ordering::Relaxed);
                if live {
                    live = tokio::select! {
                        r = w.write_all(&answer.frame) => r.is_ok(),
                        () = stop.notified() => false,
                    };
                    if !live {
                        gone_flag.store(true, Ordering::Relaxed);
                    }
                }
                // Dropping the answer, written or not, gives its budget back.
                drop(answer);
            }
        });
        Writer {
            task,
            give_up,
            gone,
        }
    }

    /// Stops writing to a client that does not read: answers still queued, and those still
    /// to come, are dropped unwritten.
    pub fn give_up(&self) {
        self.gone.store(true, Ordering::Relaxed);
        self.give_up.notify_one();
    }

    /// Waits up to `grace` for the last answers to be written (every sender must be gone),
    /// then drops whatever is left.
    pub async fn finish(mut self, grace: Duration) {
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::transport;
    use interprocess::local_socket::GenericFilePath;
    use interprocess::local_socket::tokio::prelude::*;
    use tokio::io::AsyncReadExt;
    use tokio::task::JoinSet;

    /// A connected pair: the daemon's end and the client's.
    async fn pair(dir: &std::path::Path) -> (Arc<Stream>, Stream) {
        let path = dir.join("a.sock");
        let listener = transport::bind(&path).expect("bind");
        let name = path.to_fs_name::<GenericFilePath>().expect("name");
        let (client, accepted) = tokio::join!(Stream::connect(name), listener.accept());
        (
            Arc::new(accepted.expect("accept").0),
            client.expect("connect"),
        )
    }

    /// Queues `n` answers of `len` bytes, each from its own task, as requests do.
    async fn queue(outbox: &Outbox, n: usize, len: usize) -> JoinSet<()> {
        let mut tasks = JoinSet::new();
        for _ in 0..n {
            let slot = outbox.reserve().await.expect("room");
            tasks.spawn(slot.send(Zeroizing::new(vec![7; len])));
        }
        tasks
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    #[tokio::test]
    async fn queued_answers_are_bounded_by_bytes_until_the_client_reads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (daemon_end, mut client) = pair(dir.path()).await;
        let (outbox, writer) = Outbox::new(daemon_end);
        // Each answer is the whole byte budget and more than a socket buffer: the writer
        // blocks on the first, which holds the budget until written, so the second waits.
        let mut tasks = queue(&outbox, 4, MAX_QUEUED_BYTES).await;
        settle().await;
        let mut done = 0;
        while tasks.try_join_next().is_some() {
            done += 1;
        }
        assert_eq!(done, 1, "answers queued past the byte budget");

        // Once the client reads, every answer goes through, whole and in order.
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.expect("read");
            all.len()
        });
        while tasks.join_next().await.is_some() {}
        drop(outbox);
        writer.finish(Duration::from_secs(10)).await;
        assert_eq!(reader.await.expect("reader"), 4 * MAX_QUEUED_BYTES);
    }

    #[tokio::test]
    async fn giving_up_on_a_client_that_does_not_read_drops_its_answers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (daemon_end, _client) = pair(dir.path()).await;
        let (outbox, writer) = Outbox::new(daemon_end);
        let mut heavy = outbox.reserve().await.expect("room");
        heavy.hold_heavy().await;
        let mut tasks = queue(&outbox, 3, MAX_QUEUED_BYTES).await;
        tasks.spawn(heavy.send(Zeroizing::new(vec![1; 10])));
        settle().await;
        assert!(!outbox.reserve().await.expect("room").client_gone());

        writer.give_up();
        // Every task ends: the answers are dropped unwritten and give their budget back.
        tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .expect("every send ends once the writer gives up");
        let slot = outbox.reserve().await.expect("room");
        assert!(slot.client_gone());
        // The heavy permit came back with its dropped answer.
        let mut next = slot;
        tokio::time::timeout(Duration::from_secs(1), next.hold_heavy())
            .await
            .expect("the heavy permit is free again");
        drop(next);
        drop(outbox);
        writer.finish(Duration::from_secs(10)).await;
    }
}
