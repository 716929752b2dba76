//! How long the store's durable steps take on this disk: a 4 KiB blob
//! (temp, fsync, rename, fsync dir) and an index commit of its inode.
use std::time::Instant;

use scs_common::{Ino, Inode, Kind, NodeId, Record, Term, Version};
use scs_node::store::Store;

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "target/store-latency".into());
    let _ = std::fs::remove_dir_all(&dir);
    let (s, _) = Store::open(std::path::Path::new(&dir), NodeId(1), None).expect("open");
    let n = 200u64;
    let data = vec![7u8; 4096];
    let (mut blob, mut commit) = (0.0, 0.0);
    for i in 1..=n {
        let v = Version::new(Term(1), i);
        let t = Instant::now();
        let mut w = s.new_blob(Ino(i + 1), v, Some(4096)).expect("blob");
        w.write(&data).expect("write");
        let hash = w.finish(None).expect("finish");
        blob += t.elapsed().as_secs_f64();
        let mut inode = Inode::new(Ino(i + 1), Kind::File, 0o644, 0, 0, 0);
        (inode.version, inode.content, inode.size, inode.hash, inode.holders) = (v, v, 4096, hash, vec![NodeId(1)]);
        let t = Instant::now();
        s.apply(&[Record::Inode(inode.clone())], &[(inode.key(), v)]).expect("apply");
        commit += t.elapsed().as_secs_f64();
    }
    println!("blob {:.2} ms, index commit {:.2} ms", blob * 1000.0 / n as f64, commit * 1000.0 / n as f64);
}
