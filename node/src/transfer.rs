//! Moving file bytes between a socket and the disk with the two overlapped:
//! a blocking thread reads or writes the blob while the async side talks to
//! the network, with a small bounded queue between them (memory stays at a
//! few chunks per transfer, whatever the file size).

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use scs_common::conn::{Chunk, Connection};
use scs_common::proto::rpc::{Message, Response};
use scs_common::{ContentHash, Error, Inode, Result, CHUNK_SIZE};

use crate::store::{BlobReader, BlobWriter};

/// Chunks queued between the network and the disk thread.
const QUEUE: usize = 4;

enum WriteOp {
    Data(Bytes),
    Finish(Option<ContentHash>),
}

/// A blob being written by a blocking thread.
pub struct BlobSink {
    tx: Option<mpsc::Sender<WriteOp>>,
    /// Taken when its result is.
    task: Option<JoinHandle<Result<ContentHash>>>,
}

impl BlobSink {
    /// Writes the blob that `open` starts, on a blocking thread. Chunks can
    /// be queued at once: opening (a file create, slow on a busy disk) runs
    /// alongside whatever the caller does next. If it fails, the first
    /// write that finds the sink stopped fails, and `finish` says why.
    pub fn spawn(open: impl FnOnce() -> Result<BlobWriter> + Send + 'static) -> BlobSink {
        let (tx, mut rx) = mpsc::channel::<WriteOp>(QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            let mut writer = open()?;
            while let Some(op) = rx.blocking_recv() {
                match op {
                    WriteOp::Data(b) => writer.write(&b)?,
                    WriteOp::Finish(expected) => return writer.finish(expected),
                }
            }
            // The sender went away without finishing: the upload was abandoned.
            Err(Error::Unavailable("upload abandoned".into()))
        });
        BlobSink { tx: Some(tx), task: Some(task) }
    }

    /// Queues a chunk.
    ///
    /// # Errors
    /// Why the writer stopped (it could not open or write the blob); once
    /// stopped, every later call fails.
    pub async fn write(&mut self, data: Bytes) -> Result<()> {
        let tx = self.tx.as_ref().ok_or_else(stopped)?;
        if tx.send(WriteOp::Data(data)).await.is_err() {
            self.tx = None;
            return match self.outcome().await {
                Err(e) => Err(e),
                Ok(_) => Err(Error::Internal("the blob writer finished early".into())),
            };
        }
        Ok(())
    }

    /// Finishes the blob: size and hash checked, fsynced, renamed into place.
    pub async fn finish(mut self, expected: Option<ContentHash>) -> Result<ContentHash> {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(WriteOp::Finish(expected)).await;
        }
        self.outcome().await
    }

    /// The writer's result, waited for once.
    async fn outcome(&mut self) -> Result<ContentHash> {
        let Some(task) = self.task.take() else { return Err(stopped()) };
        task.await.map_err(|e| Error::Internal(format!("blob writer: {e}")))?
    }
}

fn stopped() -> Error {
    Error::Io("the blob writer stopped".into())
}

/// Receives a data stream into `sink` (exactly `size` bytes when known),
/// returning the sender's hash from `End` and the byte count. Dropping the
/// sink on error removes the temp file.
pub async fn receive_into(conn: &mut Connection, sink: &mut BlobSink, size: Option<u64>) -> Result<(ContentHash, u64)> {
    let mut received = 0u64;
    loop {
        match conn.recv_chunk().await? {
            Chunk::Data(b) => {
                received += b.len() as u64;
                if let Some(size) = size.filter(|&s| received > s) {
                    return Err(Error::Invalid(format!("more than the announced {size} bytes arrived")));
                }
                sink.write(b).await?;
            }
            Chunk::End(hash) => {
                if let Some(size) = size.filter(|&s| received != s) {
                    return Err(Error::Invalid(format!("{received} bytes arrived, {size} were announced")));
                }
                return Ok((hash, received));
            }
        }
    }
}

/// Streams `len` bytes of a local blob from `offset` as `Content` + data +
/// `End` (which carries the whole file's hash; the receiver checks whole
/// reads against it). A read error ends the stream with an error response.
pub async fn send_blob(conn: &mut Connection, inode: Inode, reader: BlobReader, offset: u64, len: u64) -> Result<()> {
    let hash = inode.hash;
    let (tx, mut rx) = mpsc::channel::<Result<Vec<u8>>>(QUEUE);
    let task = tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        while reader.remaining() > 0 {
            let chunk = reader.next_chunk(CHUNK_SIZE);
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    conn.write_message(&Message::Response(Response::Content { inode, offset, len })).await?;
    while let Some(chunk) = rx.recv().await {
        match chunk {
            Ok(c) => conn.write_data(&c).await?,
            Err(e) => {
                conn.send_response(Response::error(&e)).await?;
                return Err(e);
            }
        }
    }
    task.await.map_err(|e| Error::Internal(format!("blob reader: {e}")))?;
    conn.write_message(&Message::End { hash }).await?;
    conn.flush().await
}

/// Skips the rest of a data stream up to its `End`. False if the stream
/// broke instead (the session must be closed).
pub async fn drain(conn: &mut Connection) -> bool {
    loop {
        match conn.recv_chunk().await {
            Ok(Chunk::Data(_)) => continue,
            Ok(Chunk::End(_)) => return true,
            Err(_) => return false,
        }
    }
}
