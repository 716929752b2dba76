//! Benchmark: many small uploads through one client, then a listing.
//!
//! `cargo run --release -p scs-mount --example small_files -- GROUP KEYFILE COUNT SIZE [CONCURRENCY [DIR]]`
//! prints `files_per_sec=… list_ms=… listed=…`. The files go to `DIR/fNNNNN`
//! (`small` by default).

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use scs_common::proto::rpc::{Target, UploadSpec};
use scs_mount::client::{Client, ClientOptions};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: small_files GROUP KEYFILE COUNT SIZE [CONCURRENCY [DIR]]");
        std::process::exit(2);
    }
    let opts = ClientOptions {
        group: args[1].parse().expect("group"),
        iface: "127.0.0.1".parse().expect("iface"),
        nodes: Vec::new(),
        secret_file: args[2].clone().into(),
        retry_window: Duration::from_secs(5),
    };
    let count: usize = args[3].parse().expect("count");
    let size: usize = args[4].parse().expect("size");
    let concurrency: usize = args.get(5).map(|c| c.parse().expect("concurrency")).unwrap_or(1);
    let dir: Arc<str> = args.get(6).map_or("small", String::as_str).into();
    let client = Arc::new(Client::new(opts).expect("client"));
    let data: Arc<Vec<u8>> = Arc::new((0..size).map(|i| (i * 31 % 251) as u8).collect());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (client, data, dir) = (client.clone(), data.clone(), dir.clone());
        tasks.push(tokio::spawn(async move {
            for i in (worker..count).step_by(concurrency) {
                let target = Target::Path(format!("{dir}/f{i:05}"));
                let spec = UploadSpec::new(target, Some(data.len() as u64), 0o644, 0);
                let d = data.clone();
                let open = move || Ok(Box::new(std::io::Cursor::new(d.to_vec())) as Box<dyn Read + Send>);
                client.upload(spec, open, None).await.expect("upload");
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker");
    }
    let upload_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let listed = client.list(&dir).await.expect("list").1.len();
    let list_ms = start.elapsed().as_secs_f64() * 1000.0;
    println!("files_per_sec={:.0} list_ms={list_ms:.1} listed={listed}", count as f64 / upload_secs);
}
