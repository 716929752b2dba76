//! `scs versions`, `scs download --version` and `scs restore --version`:
//! the earlier versions of a file that its overwrites left in the trash.
//! Versions are numbered from 1, the oldest kept, in the order they were
//! replaced.

use super::out::say;
use scs_common::{Error, Inode, Result};

use super::human_bytes;
use crate::client::Client;

/// File `path` and the versions kept of it, the oldest first.
async fn kept(client: &Client, path: &str) -> Result<(Inode, Vec<Inode>)> {
    let file = client.resolve(path, true).await?.ok_or_else(|| Error::NotFound(path.to_string()))?;
    if file.is_dir() {
        return Err(Error::IsDir(format!("{path}: a directory has no versions")));
    }
    let versions = client.versions(file.ino).await?;
    Ok((file, versions))
}

/// File `path` and its version `n`.
pub async fn pick(client: &Client, path: &str, n: u32) -> Result<(Inode, Inode)> {
    let (file, versions) = kept(client, path).await?;
    let found = n.checked_sub(1).and_then(|k| versions.get(k as usize));
    match found {
        Some(v) => Ok((file, v.clone())),
        None if versions.is_empty() => Err(Error::NotFound(format!("no earlier version of {path} is kept"))),
        None => Err(Error::NotFound(format!(
            "{path} has no version {n}: versions 1 to {} are kept (see scs versions {path})",
            versions.len()
        ))),
    }
}

/// `scs versions PATH`: a line per version kept, and the current content
/// last; or a JSON list of the versions kept.
pub async fn list(client: &Client, path: &str, json: bool) -> Result<()> {
    let (file, versions) = kept(client, path).await?;
    if json {
        let rows = versions.iter().enumerate().map(|(k, v)| version_json(k + 1, v)).collect();
        say!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    say!("{:>7}  {:<19}  {:<19}  {:>6}", "VERSION", "REPLACED (UTC)", "MODIFIED (UTC)", "SIZE");
    for (k, v) in versions.iter().enumerate() {
        let replaced = format_secs(replaced_ns(v));
        say!("{:>7}  {replaced:<19}  {:<19}  {:>6}", k + 1, format_secs(v.mtime_ns), human_bytes(v.size));
    }
    say!("{:>7}  {:<19}  {:<19}  {:>6}", "current", "", format_secs(file.mtime_ns), human_bytes(file.size));
    Ok(())
}

fn replaced_ns(v: &Inode) -> i64 {
    v.trashed.as_ref().map_or(0, |t| t.at_ns)
}

/// Version `n` for scripts: `version` is what `--version` takes, times in
/// seconds (as `ls --json` has them) and nanoseconds since the epoch.
fn version_json(n: usize, v: &Inode) -> serde_json::Value {
    let replaced = replaced_ns(v);
    serde_json::json!({
        "version": n.to_string(),
        "size": v.size,
        "mtime": v.mtime_ns.div_euclid(1_000_000_000),
        "mtime_ns": v.mtime_ns,
        "replaced": replaced.div_euclid(1_000_000_000),
        "replaced_ns": replaced,
        "ino": v.ino.0,
    })
}

/// `2026-12-05 19:20:33`: versions a moment apart differ in the seconds.
fn format_secs(ns: i64) -> String {
    let (y, m, d, h, mi, s) = crate::fs::time::utc(ns);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}
