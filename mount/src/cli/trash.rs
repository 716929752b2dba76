//! `scs trash ls|restore|purge`: what was removed, brought back or let go.

use super::out::say;
use std::io::IsTerminal;
use std::time::Duration;

use clap::Subcommand;

use scs_common::proto::rpc::{PurgeTrash, TrashItem};
use scs_common::{name, Error, Kind, Result};

use super::{format_time, human_bytes};
use crate::client::{now_ns, Client};

#[derive(Subcommand, Debug)]
pub enum TrashCommand {
    /// List what is in the trash: what was removed (at the top, or all of
    /// it at or below PREFIX), when, and its size
    Ls {
        prefix: Option<String>,
        /// Also what was inside the directories removed
        #[arg(short, long)]
        all: bool,
        /// Also the earlier versions of files (see scs versions), by the
        /// path of their file and when they were replaced
        #[arg(long)]
        versions: bool,
        /// Print a JSON list of {path, kind, size, deleted, deleted_ns, items, bytes, ino, inside, version_of}
        #[arg(long)]
        json: bool,
    },
    /// Bring a file, or a directory with everything that was in it, back
    /// where it was (the last one removed of that path); never replaces a
    /// name that exists now
    Restore {
        path: String,
        /// Restore it at this path instead (its directory must exist)
        #[arg(long, value_name = "NEWPATH")]
        to: Option<String>,
    },
    /// Remove from the trash for good: a path (with everything below it,
    /// and the earlier versions kept of the files it names), an age, or all
    #[command(group(clap::ArgGroup::new("what").required(true).args(["path", "older_than", "all"])))]
    Purge {
        path: Option<String>,
        /// Everything removed longer ago than this: 30d, 12h, 90m, 45s, 2w
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        older_than: Option<Duration>,
        /// Everything in the trash
        #[arg(long)]
        all: bool,
    },
}

pub async fn run(client: &Client, cmd: TrashCommand) -> Result<()> {
    match cmd {
        TrashCommand::Ls { prefix, all, versions, json } => {
            let prefix = name::normalize(prefix.as_deref().unwrap_or(""))?;
            let items = client.trash_list().await?;
            let shown: Vec<&TrashItem> = items
                .iter()
                .filter(|i| versions || i.inode.version_of().is_none())
                .filter(|i| listed(i, &prefix, all))
                .collect();
            if json {
                say!("{}", serde_json::Value::Array(shown.iter().map(|i| item_json(i)).collect()));
            } else {
                print_items(&shown);
            }
            Ok(())
        }
        TrashCommand::Restore { path, to } => {
            let path = name::normalize(&path)?;
            let mut items = client.trash_list().await?;
            // An earlier version comes back with scs restore --version.
            items.retain(|i| i.inode.version_of().is_none());
            let ino = match items.iter().filter(|i| i.path == path).max_by_key(|i| deleted_ns(i)) {
                Some(item) => item.inode.ino,
                // A directory back already (a restore cut short) with
                // what was in it still in the trash: the rest of it.
                None if items.iter().any(|i| listed(i, &path, true)) => match client.resolve(&path, false).await {
                    Ok(Some(dir)) if dir.is_dir() => dir.ino,
                    _ => return Err(not_in_trash(&path)),
                },
                None => return Err(not_in_trash(&path)),
            };
            let to = match to {
                None => None,
                Some(t) => {
                    let t = name::normalize(&t)?;
                    let (dir, base) = client.parent_of(&t).await?;
                    if client.lookup(dir.ino, &base).await?.is_some() {
                        return Err(Error::Exists(format!("{t} exists now")));
                    }
                    Some((dir.ino, base))
                }
            };
            let (_, restored, left) = client.trash_restore(ino, to).await?;
            if std::io::stderr().is_terminal() {
                eprintln!("restored {path} ({})", count(restored, "item"));
            }
            if left > 0 {
                eprintln!(
                    "scs: {} stayed in the trash: an older copy of a name, or a name taken meanwhile",
                    count(left, "item")
                );
            }
            Ok(())
        }
        TrashCommand::Purge { path, older_than, all } => {
            let what = if all {
                PurgeTrash::All
            } else if let Some(age) = older_than {
                PurgeTrash::Before(now_ns().saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX)))
            } else {
                let path = name::normalize(path.as_deref().unwrap_or(""))?;
                let items = client.trash_list().await?;
                let inos: Vec<_> = items.iter().filter(|i| i.path == path).map(|i| i.inode.ino).collect();
                if inos.is_empty() {
                    return Err(not_in_trash(&path));
                }
                PurgeTrash::Items(inos)
            };
            let (items, bytes) = client.trash_purge(what).await?;
            if std::io::stderr().is_terminal() {
                eprintln!("purged {}, {}", count(items, "item"), human_bytes(bytes));
            }
            Ok(())
        }
    }
}

/// Whether `ls` shows the item: without a prefix, what was removed at the
/// top (not what was inside a directory removed with it, unless `all`);
/// with one, all of it at or below the prefix.
fn listed(i: &TrashItem, prefix: &str, all: bool) -> bool {
    if prefix.is_empty() {
        return all || !i.inside;
    }
    i.path == prefix || i.path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

fn not_in_trash(path: &str) -> Error {
    Error::NotFound(format!("{path} is not in the trash (see scs trash ls)"))
}

fn deleted_ns(i: &TrashItem) -> i64 {
    i.inode.trashed.as_ref().map_or(0, |t| t.at_ns)
}

fn count(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn print_items(items: &[&TrashItem]) {
    if items.is_empty() {
        return;
    }
    say!("{:<16}  {:>6}  PATH", "DELETED (UTC)", "SIZE");
    for i in items {
        let what = if i.inode.kind == Kind::Dir {
            format!("{}/  ({} inside)", i.path, count(i.items.saturating_sub(1), "item"))
        } else if i.inode.version_of().is_some() {
            format!("{}  (an earlier version)", i.path)
        } else {
            i.path.clone()
        };
        say!("{:<16}  {:>6}  {what}", format_time(deleted_ns(i)), human_bytes(i.bytes));
    }
}

fn item_json(i: &TrashItem) -> serde_json::Value {
    serde_json::json!({
        "path": i.path,
        "kind": i.inode.kind.as_str(),
        "size": i.inode.st_size(),
        "deleted": format_time(deleted_ns(i)),
        "deleted_ns": deleted_ns(i),
        "items": i.items,
        "bytes": i.bytes,
        "ino": i.inode.ino.0,
        "inside": i.inside,
        "version_of": i.inode.version_of().map(|f| f.0),
    })
}

/// `30d`, `12h`, `90m`, `45s`, `2w`, or a plain number of seconds.
fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 30d, 12h, 90m or 45s"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(format!("{s:?}: the unit must be s, m, h, d or w")),
    };
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(|| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999w").is_err());
    }
}
