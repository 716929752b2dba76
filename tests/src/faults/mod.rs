//! The Jepsen-style fault suite: five nodes in network namespaces of their
//! own, concurrent clients, a nemesis on a seeded schedule, and a checker of
//! the recorded history. [`run_seed`] runs one seed end to end.
//!
//! # Layout
//!
//! - [`cluster`]: [`cluster::NsCluster`], nodes and the CLI in namespaces
//!   (built on [`crate::netns`]), a tmpfs data dir for one node.
//! - [`workload`]: the clients and the operation history.
//! - [`nemesis`]: the fault schedule, injection and heal.
//! - [`action`]: what a client asks for and what a read sees.
//! - [`world`]: one possible state of a client's names, and what each
//!   command does to it.
//! - [`check`]: the sets of possible states, the reads and the final views.
//! - [`views`]: the final state through the CLI, each node and a mount.
//! - [`disk`]: replica target, versions and bytes on every node's disk.
//! - [`logs`]: leaders and acknowledged writes from the node logs.
//! - [`summary`]: per-seed lines and the report of a run of many seeds.
//! - [`rng`]: the seeded generator.

pub mod action;
pub mod check;
pub mod cluster;
pub mod disk;
pub mod logs;
pub mod nemesis;
pub mod rng;
pub mod summary;
pub mod views;
pub mod workload;
pub mod world;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use action::{Action, Seen};
use check::{Model, Violation};
use cluster::{NsCluster, NsConfig};
use nemesis::{FaultEvent, FaultKind, Nemesis};
use rng::Rng;
use workload::{Op, Outcome, WorkloadConfig};

/// Numbers the clusters of this process (namespace names, subnets).
static RUNS: AtomicU32 = AtomicU32::new(0);

/// The node config of the suite: repair, scrub and tombstone purge all
/// happen within a seed's run, so they are exercised under faults too.
/// Every node holds every file (the checks compare the disks): `replicas`
/// is the cluster size, not the default three.
pub const NODE_TOML: &str = "replicas = 5\nrepair_delay_ms = 2000\nscrub_interval_ms = 3000\ntombstone_ttl_ms = 5000\n";

/// How a seed runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long the clients and the nemesis run.
    pub workload: Duration,
    pub clients: u32,
    pub names_per_client: u32,
    /// Hard links, directory renames and rmdir in the workload too.
    pub namespace_ops: bool,
    /// Restores of earlier versions in the workload too
    /// (`SCS_FAULTS_VERSIONS`).
    pub version_restores: bool,
    /// How long the cluster may take to heal after the last fault: a leader
    /// over all nodes, every file at its target on every disk.
    pub settle: Duration,
    pub kinds: Vec<FaultKind>,
    /// Whether to read everything through a `scs-mount` too.
    pub mount_view: bool,
    /// Where a failing seed's history and logs are kept.
    pub keep_dir: Option<std::path::PathBuf>,
    /// Whether warnings (see [`check::WARNING_KINDS`]) fail the seed too.
    pub strict: bool,
    /// Gossip by unicast (`peers`) with multicast dropped at the bridge,
    /// clients by `--node`.
    pub unicast: bool,
}

/// Figures of one seed.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub ops: usize,
    /// Writes acknowledged (exit 0).
    pub acknowledged: usize,
    /// Of those, restores from the trash.
    pub restores: usize,
    /// Of those, restores of an earlier version (`scs restore --version`).
    pub reverts: usize,
    /// Writes that failed: they may or may not have taken effect.
    pub failed: usize,
    /// Commands killed at the deadline.
    pub hung: usize,
    pub reads: usize,
    /// Names whose final state lost an acknowledged write.
    pub lost: usize,
    /// Names or reads showing bytes no upload wrote.
    pub corrupt: usize,
    /// Names back after an acknowledged delete or rename away.
    pub resurrected: usize,
    /// Reads during the run that saw a state the name could no longer be in
    /// (an older content after an acknowledged overwrite, say).
    pub stale_reads: usize,
}

/// Everything a seed produced.
#[derive(Debug)]
pub struct SeedResult {
    pub seed: u64,
    pub ops: Vec<Op>,
    pub faults: Vec<FaultEvent>,
    /// Broken promises: the seed fails.
    pub violations: Vec<Violation>,
    /// Reported, not failing (unless strict): see [`check::WARNING_KINDS`].
    pub warnings: Vec<Violation>,
    pub counts: Counts,
    /// Per injected fault: ms from the fault to the first acknowledged write
    /// begun after it (`None`: none before the workload ended).
    pub unavailability: Vec<(FaultKind, Option<i64>)>,
    /// From the heal to every file at its target, as the status shows it
    /// (ms; `None` if the disks never agreed).
    pub settle_ms: Option<i64>,
    pub wall: Duration,
    pub notes: Vec<String>,
    pub terms: usize,
}

impl SeedResult {
    fn failed_setup(seed: u64, wall: Duration, e: String) -> SeedResult {
        SeedResult {
            seed,
            ops: Vec::new(),
            faults: Vec::new(),
            violations: vec![Violation {
                kind: "setup",
                subject: "cluster".into(),
                what: format!("the cluster did not come up: {e}"),
                history: Vec::new(),
            }],
            warnings: Vec::new(),
            counts: Counts::default(),
            unavailability: Vec::new(),
            settle_ms: None,
            wall,
            notes: Vec::new(),
            terms: 0,
        }
    }
}

/// Runs one seed: start, workload with nemesis, heal, check.
pub fn run_seed(seed: u64, s: &Settings) -> SeedResult {
    let wall = Instant::now();
    let mut rng = Rng::fork(seed, 0);
    let cfg = NsConfig {
        run: RUNS.fetch_add(1, Ordering::Relaxed),
        nodes: 5,
        members: 5,
        node_toml: NODE_TOML.into(),
        tmpfs_node: Some(rng.between(1, 5) as u32),
        tmpfs_mib: 64,
        hard_limit: s.workload + s.settle + Duration::from_secs(300),
        unicast: s.unicast,
    };
    let mut c = match NsCluster::start(&cfg) {
        Ok(c) => c,
        Err(e) => return SeedResult::failed_setup(seed, wall.elapsed(), e),
    };
    let wcfg = WorkloadConfig {
        seed,
        clients: s.clients,
        names_per_client: s.names_per_client,
        namespace_ops: s.namespace_ops,
        version_restores: s.version_restores,
    };
    let workload_ms = s.workload.as_millis() as i64;
    let plan = nemesis::schedule(seed, workload_ms, &s.kinds);
    let stop = AtomicBool::new(false);
    let t0 = c.clock().now_ms();
    let (mut ops, mut faults) = thread::scope(|sc| {
        let clients: Vec<_> = (1..=s.clients)
            .map(|k| {
                let (c, wcfg, stop) = (&c, &wcfg, &stop);
                sc.spawn(move || workload::run_client(c, wcfg, k, stop))
            })
            .collect();
        // The nemesis runs on this thread: nodes it restarts die with it.
        let mut nem = Nemesis::new(&c);
        let mut events = Vec::new();
        let mut crashes = Vec::new();
        for p in &plan {
            nem.sleep_until(t0 + p.at_ms, &mut crashes);
            let mut ev = nem.inject(p);
            nem.sleep_until(ev.start_ms + p.hold_ms, &mut crashes);
            nem.heal(&mut ev);
            events.push(ev);
        }
        nem.sleep_until(t0 + workload_ms, &mut crashes);
        stop.store(true, Ordering::Relaxed);
        let ops: Vec<Op> = clients.into_iter().flat_map(|h| h.join().expect("a client thread")).collect();
        nem.heal_all();
        crashes.extend(nem.catch_crashes());
        events.extend(crashes);
        (ops, events)
    });
    ops.sort_by_key(|o| (o.start_ms, o.client));
    // The history first, so that a checker that never ends still leaves it
    // to replay (`SCS_FAULTS_CHECK`).
    let kept =
        s.keep_dir.as_ref().map(|dir| dir.join(format!("seed-{seed}{}", if s.unicast { "-unicast" } else { "" })));
    if let Some(dest) = &kept {
        let _ = std::fs::create_dir_all(dest);
        let _ = std::fs::write(dest.join("history.txt"), summary::history_text(&ops, &faults));
    }

    let mut violations = Vec::new();
    let mut notes = Vec::new();
    let checked = Instant::now();
    let model = Model::replay(&ops, &mut violations);
    if checked.elapsed() > Duration::from_secs(1) {
        notes.push(format!("the checker took {:?} to replay the history", checked.elapsed()));
    }
    let settle_start = c.clock().now_ms();
    let all: Vec<u32> = (1..=c.size()).collect();
    if let Err(e) = c.wait_for(s.settle, |st| st.leader.is_some() && st.quorum && st.alive_ids() == all) {
        violations.push(Violation {
            kind: "not-settled",
            subject: "cluster".into(),
            what: format!("no leader over all nodes {:?} after the heal: {e}", s.settle),
            history: Vec::new(),
        });
    }
    // Repair seen from the status: no file below target, nothing wanted,
    // every node holding as many files (replicas = cluster size).
    let repaired = c.wait_for(s.settle, |st| {
        st.under_replicated == 0
            && st.nodes.iter().all(|n| n.alive && n.wanted == 0)
            && st.nodes.windows(2).all(|w| w[0].files == w[1].files)
    });
    let repaired_ms = repaired.ok().map(|_| c.clock().now_ms() - settle_start);
    // Every name a client may use, and every name a directory rename may
    // have moved a file to.
    let names: Vec<String> = (1..=s.clients)
        .flat_map(|k| (0..s.names_per_client).map(move |i| workload::name_of(k, i)))
        .chain(model.names().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let cli = views::cli_view(&c, &names);
    let bad = check::check_view(&model, &ops, "cli", &cli, &mut violations);
    let mut counted: BTreeMap<String, &'static str> = bad.clone();
    // The state the disks must reach: what the CLI read, where that is right.
    let expected: BTreeMap<String, Seen> = cli
        .iter()
        .filter(|(n, _)| !bad.contains_key(*n))
        .filter_map(|(n, s)| s.as_ref().ok().map(|s| (n.clone(), s.clone())))
        .collect();
    // The disks confirm the status (or say what is wrong).
    let settle_ms = settle_disks(&c, &expected, settle_start, s.settle, &mut violations).and(repaired_ms);
    if s.mount_view {
        match views::mount_unavailable() {
            Some(why) => notes.push(format!("mount view skipped: {why}")),
            None => match views::mount_view(&c, &names, s.clients) {
                Ok((view, listed)) => {
                    for (n, k) in check::check_view(&model, &ops, "mount", &view, &mut violations) {
                        counted.entry(n).or_insert(k);
                    }
                    compare_listing("mount", &listed, &expected, &bad, &mut violations);
                }
                Err(e) => violations.push(Violation {
                    kind: "mount",
                    subject: "scs-mount".into(),
                    what: format!("the mount view failed: {e}"),
                    history: Vec::new(),
                }),
            },
        }
    }
    for via in std::iter::once(None).chain((1..=c.size()).map(Some)) {
        let label = via.map_or("ls via discovery".to_string(), |id| format!("ls via node {id}"));
        match views::listing(&c, s.clients, via) {
            Ok(listed) => compare_listing(&label, &listed, &expected, &bad, &mut violations),
            Err(e) => violations.push(Violation { kind: "listing", subject: label, what: e, history: Vec::new() }),
        }
    }
    for (id, status) in c.take_exited() {
        violations.push(Violation {
            kind: "crash",
            subject: format!("node {id}"),
            what: format!("exited on its own after the heal: {status}"),
            history: Vec::new(),
        });
    }
    for f in faults.iter().filter(|f| f.kind == FaultKind::Crash) {
        violations.push(Violation {
            kind: "crash",
            subject: format!("node {:?}", f.targets),
            what: f.detail.clone(),
            history: vec![f.to_string()],
        });
    }
    for op in ops.iter().filter(|o| o.outcome == Outcome::Hung) {
        violations.push(Violation {
            kind: "hang",
            subject: format!("c{}#{}", op.client, op.seq),
            what: format!("a command ran past {:?}", workload::OP_DEADLINE),
            history: vec![op.to_string()],
        });
    }
    let lines: Vec<logs::Line> = (1..=c.size())
        .flat_map(|id| logs::parse(id, &std::fs::read_to_string(c.log_path(id)).unwrap_or_default(), &c.clock()))
        .collect();
    let stats = logs::check(&lines, &faults, &mut violations);

    faults.sort_by_key(|f| f.start_ms);
    let counts = count(&ops, &violations, &counted);
    let unavailability = unavailability(&ops, &faults);
    let (warnings, violations): (Vec<Violation>, Vec<Violation>) =
        violations.into_iter().partition(|v| !s.strict && check::WARNING_KINDS.contains(&v.kind));
    if !violations.is_empty() || !warnings.is_empty() {
        if let Some(dest) = &kept {
            c.keep_logs(dest);
            let text: String = violations.iter().chain(&warnings).map(|v| v.to_string()).collect();
            let _ = std::fs::write(dest.join("violations.txt"), text);
            notes.push(format!("history, violations and node logs kept in {}", dest.display()));
        }
        if std::env::var_os("SCS_KEEP_TEST_DIR").is_some() {
            if let Some(dir) = c.keep_dir() {
                notes.push(format!("data dirs kept in {} (SCS_KEEP_TEST_DIR)", dir.display()));
            }
        }
    }
    SeedResult {
        seed,
        ops,
        faults,
        violations,
        warnings,
        counts,
        unavailability,
        settle_ms,
        wall: wall.elapsed(),
        notes,
        terms: stats.terms,
    }
}

/// How long blobs left over may stay once every file is at its target
/// before they count: several scrub passes (`scrub_interval_ms` = 3 s).
const STRAY_GRACE: Duration = Duration::from_secs(12);

/// Polls the disks until they agree with `expected`. Returns when every
/// file was at its target on every disk (ms after `since_ms`); after
/// `settle`, or [`STRAY_GRACE`] after the target with only left-over blobs,
/// a violation for what remains of each kind of problem (20 lines at most).
fn settle_disks(
    c: &NsCluster,
    expected: &BTreeMap<String, Seen>,
    since_ms: i64,
    settle: Duration,
    out: &mut Vec<Violation>,
) -> Option<i64> {
    let mut cache = disk::HashCache::default();
    let deadline = Instant::now() + settle;
    let mut at_target: Option<(Instant, i64)> = None;
    loop {
        let problems = disk::problems(c, expected, &mut cache);
        let replicas_ok = problems.iter().all(|p| matches!(p, disk::Problem::Stray(_)));
        if !replicas_ok {
            at_target = None;
        } else if at_target.is_none() {
            at_target = Some((Instant::now(), c.clock().now_ms() - since_ms));
        }
        let strays_stayed = at_target.is_some_and(|(t, _)| t.elapsed() >= STRAY_GRACE);
        if problems.is_empty() || strays_stayed || Instant::now() >= deadline || c.expired() {
            report_disk_problems(problems, settle, out);
            return at_target.map(|(_, ms)| ms);
        }
        thread::sleep(Duration::from_secs(1));
    }
}

fn report_disk_problems(problems: Vec<disk::Problem>, settle: Duration, out: &mut Vec<Violation>) {
    let (mut replicas, mut stray) = (Vec::new(), Vec::new());
    for p in problems {
        match p {
            disk::Problem::Replicas(s) => replicas.push(s),
            disk::Problem::Stray(s) => stray.push(s),
        }
    }
    for (kind, lines, what) in [
        ("replicas", replicas, format!("{settle:?} after the heal, below the replica target or disagreeing")),
        ("stray-blob", stray, format!("blobs left over on disk {STRAY_GRACE:?} after every file was at its target")),
    ] {
        if lines.is_empty() {
            continue;
        }
        let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
        for l in &lines {
            *per_node.entry(l.get(..6).filter(|p| p.starts_with("node ")).unwrap_or("other")).or_default() += 1;
        }
        let per_node: Vec<String> = per_node.iter().map(|(n, k)| format!("{n}: {k}")).collect();
        out.push(Violation {
            kind,
            subject: "disks".into(),
            what: format!("{} problem(s) ({}): {what}", lines.len(), per_node.join(", ")),
            history: lines.into_iter().take(20).collect(),
        });
    }
}

/// Checks a listing against the final state: every name that reads as a
/// file is listed, and nothing else is, save names already reported (`bad`).
fn compare_listing(
    label: &str,
    listed: &std::collections::BTreeSet<String>,
    expected: &BTreeMap<String, Seen>,
    bad: &BTreeMap<String, &'static str>,
    out: &mut Vec<Violation>,
) {
    let want: std::collections::BTreeSet<&String> =
        expected.iter().filter(|(_, s)| matches!(s, Seen::Present(_))).map(|(n, _)| n).collect();
    // A listed name the run may not have made at all is as wrong as one it deleted.
    let extra: Vec<&String> = listed.iter().filter(|n| !want.contains(n) && !bad.contains_key(*n)).collect();
    let missing: Vec<&&String> = want.iter().filter(|n| !listed.contains(**n)).collect();
    if !extra.is_empty() || !missing.is_empty() {
        out.push(Violation {
            kind: "listing",
            subject: label.to_string(),
            what: format!(
                "lists {} name(s) that are gone or never were and misses {} that exist",
                extra.len(),
                missing.len()
            ),
            history: vec![format!("extra: {extra:?}"), format!("missing: {missing:?}")],
        });
    }
}

fn count(ops: &[Op], violations: &[Violation], names: &BTreeMap<String, &'static str>) -> Counts {
    let writes = ops.iter().filter(|o| o.action.is_write());
    let mut c = Counts { ops: ops.len(), ..Counts::default() };
    for o in writes {
        match o.outcome {
            Outcome::Ok => {
                c.acknowledged += 1;
                match o.action {
                    Action::Restore { .. } => c.restores += 1,
                    Action::Revert { .. } => c.reverts += 1,
                    _ => {}
                }
            }
            Outcome::Failed => c.failed += 1,
            Outcome::Hung => c.hung += 1,
        }
    }
    c.reads = ops.iter().filter(|o| !o.action.is_write() && o.outcome == Outcome::Ok).count();
    for kind in names.values() {
        match *kind {
            "lost" => c.lost += 1,
            "corrupt" => c.corrupt += 1,
            "resurrected" => c.resurrected += 1,
            _ => {}
        }
    }
    c.corrupt += violations.iter().filter(|v| v.kind == "corrupt" && !names.contains_key(&v.subject)).count();
    c.stale_reads = violations.iter().filter(|v| v.kind == "stale-read").count();
    c
}

/// Per injected fault: ms to the first acknowledged write begun after it.
fn unavailability(ops: &[Op], faults: &[FaultEvent]) -> Vec<(FaultKind, Option<i64>)> {
    faults
        .iter()
        .filter(|f| f.kind != FaultKind::Crash && f.error.is_none())
        .map(|f| {
            let first = ops
                .iter()
                .filter(|o| o.action.is_write() && o.outcome == Outcome::Ok && o.start_ms >= f.start_ms)
                .map(|o| o.end_ms)
                .min();
            (f.kind, first.map(|end| end - f.start_ms))
        })
        .collect()
}
