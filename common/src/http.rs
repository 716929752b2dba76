//! A small HTTP/1.1 endpoint for monitoring (`metrics_listen` on a node,
//! `--metrics-listen` on a mount): one request per connection, `GET` or
//! `HEAD` only, the answer built by the caller's route, then the connection
//! closes. Bounded: a few requests at once, a deadline to send one, only
//! its first 8 KiB read.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Requests served at once; more wait for a slot.
const MAX_SCRAPES: usize = 8;
/// How long a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a request read: its first line is all that counts.
const MAX_REQUEST: usize = 8 << 10;

/// The content type of Prometheus text (format 0.0.4).
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of a plain message.
pub const TEXT: &str = "text/plain; charset=utf-8";

/// An answer: its status line's code and reason, content type and body.
pub struct Page {
    pub status: &'static str,
    pub kind: &'static str,
    pub body: String,
}

impl Page {
    pub fn ok(kind: &'static str, body: String) -> Page {
        Page { status: "200 OK", kind, body }
    }

    pub fn unavailable(body: String) -> Page {
        Page { status: "503 Service Unavailable", kind: TEXT, body }
    }
}

/// Serves `route` on `listener` until `stop` completes. `route` gets the
/// path of a GET or HEAD (without its query) and answers `None` for a path
/// it does not know (404). It runs on a blocking thread: it may wait.
pub async fn serve<R>(listener: TcpListener, stop: impl Future<Output = ()>, route: R)
where
    R: Fn(&str) -> Option<Page> + Send + Sync + 'static,
{
    let route = Arc::new(route);
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut stop => return,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    log::warn!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let route = route.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = answer(stream, route).await {
                log::debug!("metrics endpoint: request: {e}");
            }
        });
    }
}

/// Reads one HTTP request and answers it; the connection then closes.
async fn answer<R>(mut stream: TcpStream, route: Arc<R>) -> std::io::Result<()>
where
    R: Fn(&str) -> Option<Page> + Send + Sync + 'static,
{
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or("").to_string(), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("").to_string();
    let page = match method.as_str() {
        "GET" | "HEAD" => {
            let found = tokio::task::spawn_blocking(move || route(&path)).await.ok().flatten();
            found.unwrap_or(Page { status: "404 Not Found", kind: TEXT, body: "try /metrics or /health\n".into() })
        }
        _ => Page { status: "405 Method Not Allowed", kind: TEXT, body: "only GET\n".into() },
    };
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        page.status,
        page.kind,
        page.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(page.body.as_bytes()).await?;
    }
    stream.shutdown().await
}

/// Appends a Prometheus gauge with its help line to `out`.
pub fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

/// Appends a Prometheus counter with its help line to `out`.
pub fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
}

/// This process's resident memory, from /proc (0 where there is none).
pub fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}
