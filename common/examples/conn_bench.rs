//! Loopback throughput of the framing layer alone: 512 data frames of 1 MiB.
use std::time::{Duration, Instant};

use scs_common::auth::ClusterKey;
use scs_common::conn::{Chunk, Connection};
use scs_common::proto::rpc::{Message, Peer};
use scs_common::{ContentHash, NodeId};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() {
    let key = ClusterKey::from_bytes([1; 32]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let k2 = key.clone();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let (mut c, _) = Connection::accept(s, &k2, NodeId(1), scs_common::conn::HANDSHAKE_TIMEOUT).await.unwrap();
        let buf = vec![7u8; 1 << 20];
        for _ in 0..512 {
            c.write_data(&buf).await.unwrap();
        }
        c.write_message(&Message::End { hash: ContentHash::default() }).await.unwrap();
        c.flush().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let (mut c, _) = Connection::connect(&addr, &key, Peer::Client, Duration::from_secs(2)).await.unwrap();
    let t = Instant::now();
    let mut got = 0;
    while let Chunk::Data(b) = c.recv_chunk().await.unwrap() {
        got += b.len();
    }
    println!("{:.0} MB/s", got as f64 / t.elapsed().as_secs_f64() / 1e6);
}
