//! The bully election as a pure state machine (DESIGN section 3): fed the
//! time and an input, it answers with the datagrams to multicast and the role
//! changes to act on. It owns no socket, reads no clock and draws no
//! randomness but a seeded PRNG for timer jitter; the driver does the IO.
//!
//! Safety rests on two rules: a node accepts at most one leader per term, and
//! a leader acts only while a majority reports having accepted it in its term
//! ([`Election::has_quorum`]). Everything else (timers, bully order, takeover,
//! back-off) is about liveness and about not flapping.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use scs_common::proto::gossip::{Gossip, Heartbeat, Role};
use scs_common::{NodeId, Term};

/// The first anti-flap back-off of a node deposed as flaky; it doubles on
/// every further deposition, up to [`BACKOFF_CAP`].
const BACKOFF_START: Duration = Duration::from_secs(2);
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// Leading with quorum this long without a break proves the link healthy again.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// A member taken (back) in runs in elections once it caught up as a
/// member, or after this long without (no one else could lead meanwhile).
const COMPARE_WAIT: Duration = Duration::from_secs(6);

/// What the machine needs to know about its node and the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionConfig {
    pub id: NodeId,
    /// Every member's id, this node's included.
    pub members: BTreeSet<NodeId>,
    /// How often every node multicasts its heartbeat.
    pub heartbeat: Duration,
    /// Silence after which a member (or the leader) counts as gone.
    pub leader_timeout: Duration,
    /// How long a candidate waits for a higher node to answer.
    pub answer_timeout: Duration,
    /// Seeds the jitter of the leader timer; give each node its own.
    pub seed: u64,
}

impl ElectionConfig {
    /// The default timers (heartbeat 100 ms, leader timeout 600 ms, answer
    /// timeout 200 ms) for node `id` of a cluster of `cluster_size` (ids
    /// 1 to `cluster_size`).
    #[cfg(test)]
    pub fn new(id: NodeId, cluster_size: u32, seed: u64) -> ElectionConfig {
        ElectionConfig {
            id,
            members: (1..=cluster_size).map(NodeId).collect(),
            heartbeat: Duration::from_millis(100),
            leader_timeout: Duration::from_millis(600),
            answer_timeout: Duration::from_millis(200),
            seed,
        }
    }
}

/// What happened, as far as the election is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Time has passed (the driver calls `step` at `next_deadline`).
    Tick,
    /// An authenticated datagram from another member.
    Receive { from: NodeId, msg: Gossip },
    /// A TCP request from a node claiming to lead `term`.
    Claim { term: Term, leader: NodeId },
    /// The shell finished syncing from the leader this node follows.
    CaughtUp,
    /// As leader of `term`, this node can no longer vouch for its own index
    /// (a commit failed here that may have reached followers): lead a new
    /// term, whose catch-up from a majority settles what that commit did.
    Redeclare { term: Term },
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Multicast this to everyone.
    Broadcast(Gossip),
    /// `(role, term, leader)` changed; `leader` is the accepted leader of `term`.
    RoleChanged { role: Role, term: Term, leader: Option<NodeId> },
}

/// What the single election timer is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// Follower: listening for a leader's claims; fires after
    /// `leader_timeout` + jitter without one.
    Leader,
    /// Follower: no majority in sight, so no election; look again.
    Majority,
    /// Candidate: Election sent; no Answer by then means we won.
    Answers,
    /// Candidate: a higher node answered; no Coordinator by then means rerun.
    Coordinator,
}

impl Wait {
    /// The role a timer of this kind belongs to.
    fn role(self) -> Role {
        match self {
            Wait::Leader | Wait::Majority => Role::Follower,
            Wait::Answers | Wait::Coordinator => Role::Candidate,
        }
    }
}

/// A deadline with the generation it was armed in: a timer armed in another
/// term or role does not fire, it is re-armed for the current state.
#[derive(Clone, Copy, Debug)]
struct Timer {
    at: Instant,
    term: Term,
    wait: Wait,
}

/// What we know of another member.
#[derive(Clone, Debug)]
struct Peer {
    heard: Instant,
    heartbeat: Option<Heartbeat>,
}

/// splitmix64: a tiny, good-enough PRNG, so that jitter (and the simulation)
/// is reproducible from a seed without pulling `rand` into the algorithm.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max` (the modulo bias is irrelevant at these sizes).
    pub(crate) fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(n) => self.next_u64() % n,
            None => self.next_u64(),
        }
    }
}

/// One node's view of the bully election. See the module docs.
#[derive(Debug)]
pub struct Election {
    cfg: ElectionConfig,
    rng: SplitMix64,
    role: Role,
    /// The highest term seen (adopted).
    term: Term,
    /// The leader accepted for `term`; never replaced within a term.
    accepted: Option<NodeId>,
    /// We may have accepted a leader in this term before a restart and
    /// forgotten whom, so only later terms can be accepted.
    fence: Term,
    eligible: bool,
    /// Taken (back) in since it last caught up as a member: until it has,
    /// it neither runs nor answers an election (its index may still hold
    /// names deleted while it was out, their tombstones purged since), or
    /// until [`COMPARE_WAIT`] has passed, so that members that all owe it
    /// still elect someone.
    owed_since: Option<Instant>,
    peers: BTreeMap<NodeId, Peer>,
    /// When the accepted leader last claimed `term`.
    leader_heard: Option<Instant>,
    /// When anyone last claimed `term`, accepted or not: a live claimant we
    /// cannot accept still means "someone leads; wait, it will re-declare".
    claim_heard: Option<Instant>,
    timer: Option<Timer>,
    next_heartbeat: Instant,
    /// Leader: when it took the lead or last had quorum.
    quorum_at: Instant,
    /// Leader: when its current unbroken stretch with quorum began.
    quorum_since: Option<Instant>,
    /// Leader: when no live member was last stuck in this term under another leader.
    unanimous_at: Instant,
    /// Set on taking the lead, cleared on accepting a leader: a deposition by
    /// a lower id while set means others thought us dead while we led.
    led: bool,
    /// Leader: the shell asked for a new term ([`Input::Redeclare`]); it is
    /// declared as soon as a majority is in sight.
    redeclare: bool,
    backoff: Duration,
    /// No takeover from a lower leader before this (anti-flap).
    preempt_after: Instant,
    /// The latest `now` seen; time never runs backwards for the machine.
    last_now: Instant,
    /// The `(role, term, leader)` last reported in `RoleChanged`.
    reported: (Role, Term, Option<NodeId>),
}

impl Election {
    /// A follower that knows no leader yet. `initial_term` is the term the
    /// node had persisted (0 for a fresh node); it may have accepted a leader
    /// in it before restarting, so it will only accept leaders of later terms.
    pub fn new(cfg: ElectionConfig, now: Instant, initial_term: Term) -> Election {
        let rng = SplitMix64::new(cfg.seed);
        let mut e = Election {
            rng,
            role: Role::Follower,
            term: initial_term,
            accepted: None,
            fence: initial_term,
            eligible: false,
            owed_since: None,
            peers: BTreeMap::new(),
            leader_heard: None,
            claim_heard: None,
            timer: None,
            next_heartbeat: now + cfg.heartbeat,
            quorum_at: now,
            quorum_since: None,
            unanimous_at: now,
            led: false,
            redeclare: false,
            backoff: Duration::ZERO,
            // A restarted node takes the lead back promptly once caught up.
            preempt_after: now,
            last_now: now,
            reported: (Role::Follower, initial_term, None),
            cfg,
        };
        // Listen first: learn who is alive and who leads before running.
        e.arm(now, Wait::Leader);
        e
    }

    /// Feeds one input at `now` and returns what to do, in order.
    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Action> {
        // A driver that passes an earlier instant gets treated as "no time passed".
        let now = now.max(self.last_now);
        self.last_now = now;
        let mut out = Vec::new();
        match input {
            Input::Tick => {}
            Input::Receive { from, msg } => self.receive(now, from, msg, &mut out),
            Input::Claim { term, leader } => {
                if self.is_member(leader) {
                    // A TCP request is as good a sign of life as a datagram.
                    self.heard(now, leader);
                    self.claim(now, leader, term, &mut out);
                }
            }
            // A non-member's catching up does not count: once taken (back)
            // in, it compares its whole index with the leader's first (the
            // shell does that again then), since deletions whose tombstones
            // were purged while it was out show only there.
            Input::CaughtUp if self.votes() => {
                if !self.eligible {
                    debug!("node {}: caught up, eligible to lead", self.cfg.id);
                }
                self.eligible = true;
                self.owed_since = None;
            }
            Input::CaughtUp => {}
            Input::Redeclare { term } => {
                if self.role == Role::Leader && self.term == term {
                    self.redeclare = true;
                }
            }
        }
        self.on_time(now, &mut out);
        self.report(&mut out);
        out
    }

    /// When to call `step(now, Tick)` at the latest: never more than one
    /// heartbeat interval away, so heartbeats go out on time.
    pub fn next_deadline(&self) -> Instant {
        match self.timer {
            Some(t) => t.at.min(self.next_heartbeat),
            None => self.next_heartbeat,
        }
    }

    /// What this node is doing in the election.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The highest term seen.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The leader accepted for the current term; never changes within a term once set.
    pub fn accepted(&self) -> Option<NodeId> {
        self.accepted
    }

    /// The accepted leader if it is live (claimed within the leader timeout),
    /// or this node while it leads.
    pub fn leader(&self, now: Instant) -> Option<NodeId> {
        if self.role == Role::Leader {
            return Some(self.cfg.id);
        }
        match (self.accepted, self.leader_heard) {
            (Some(l), Some(at)) if self.within_timeout(now, at) => Some(l),
            _ => None,
        }
    }

    /// Leader only: whether self and the members whose latest live heartbeat
    /// says they accepted us in our term form a majority. The shell refuses
    /// writes without it.
    pub fn has_quorum(&self, now: Instant) -> bool {
        if self.role != Role::Leader {
            return false;
        }
        let me = Some(self.cfg.id);
        let supporters = self
            .live_peers(now)
            .filter_map(|(_, p)| p.heartbeat.as_ref())
            .filter(|hb| hb.term == self.term && hb.leader == me)
            .count();
        usize::from(self.votes()) + supporters >= self.majority()
    }

    /// Members heard within the leader timeout, plus self, sorted.
    pub fn alive(&self, now: Instant) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.live_peers(now).map(|(id, _)| *id).collect();
        ids.push(self.cfg.id);
        ids.sort();
        ids
    }

    /// The membership changed (a committed change, or one learnt while
    /// catching up): majorities are counted on `members` from now on. A node
    /// that is not a member follows the leader it hears but never runs,
    /// answers or leads; a leader that was taken out steps down.
    pub fn set_members(&mut self, now: Instant, members: BTreeSet<NodeId>) -> Vec<Action> {
        let mut out = Vec::new();
        if members == self.cfg.members {
            return out;
        }
        info!("node {}: members now {members:?}", self.cfg.id);
        let was_member = self.votes();
        self.cfg.members = members;
        if !was_member && self.votes() {
            self.owed_since = Some(now);
        }
        let cfg = &self.cfg;
        self.peers.retain(|id, _| cfg.members.contains(id));
        if !self.votes() {
            // Should it be taken back in, it must catch up again first.
            self.eligible = false;
        }
        if !self.votes() && self.role != Role::Follower {
            info!("node {}: no longer a member; stepping down", self.cfg.id);
            self.role = Role::Follower;
            self.led = false;
            self.leader_heard = None;
            self.arm(now, Wait::Leader);
        }
        self.on_time(now, &mut out);
        self.report(&mut out);
        out
    }

    /// Whether this node is a member: only members run, answer and lead.
    pub fn votes(&self) -> bool {
        self.cfg.members.contains(&self.cfg.id)
    }

    /// Whether it may run and answer in an election now: a member that
    /// owes no compare with a leader (see `owed_since`), or has for long.
    fn may_run(&self, now: Instant) -> bool {
        self.votes() && self.owed_since.is_none_or(|since| now.saturating_duration_since(since) >= COMPARE_WAIT)
    }

    /// Caught up with the leader, so it may take the lead from a lower id.
    pub fn eligible(&self) -> bool {
        self.eligible
    }

    /// What to put in a heartbeat right now.
    pub fn heartbeat(&self, _now: Instant) -> Heartbeat {
        Heartbeat { term: self.term, leader: self.accepted, role: self.role, eligible: self.eligible }
    }

    // ----- inputs -----

    fn receive(&mut self, now: Instant, from: NodeId, msg: Gossip, out: &mut Vec<Action>) {
        // Our own echo, or a sender outside the configured cluster: not a member.
        if !self.is_member(from) {
            debug!("node {}: ignoring {msg:?} from non-member {from}", self.cfg.id);
            return;
        }
        self.heard(now, from);
        match msg {
            Gossip::Heartbeat(hb) => {
                let claims = hb.role == Role::Leader && hb.leader == Some(from);
                let term = hb.term;
                if let Some(p) = self.peers.get_mut(&from) {
                    p.heartbeat = Some(hb);
                }
                if claims {
                    self.claim(now, from, term, out);
                } else if self.role == Role::Leader && term > self.term {
                    // Others moved on without us. Whoever leads that term will
                    // claim it itself; a third party's word is not enough.
                    self.step_down_stale(now, term, from);
                }
                // A follower just notes that `from` is alive (done above).
            }
            Gossip::Election { .. } => self.handle_election(now, from, out),
            Gossip::Answer { to, .. } => self.handle_answer(now, from, to),
            Gossip::Coordinator { term } => self.claim(now, from, term, out),
        }
    }

    /// `x` claims to lead `t`, by Coordinator, leader heartbeat or TCP claim.
    fn claim(&mut self, now: Instant, x: NodeId, t: Term, out: &mut Vec<Action>) {
        if self.may_accept(x, t) {
            if t != self.term || self.accepted != Some(x) {
                self.accept(now, x, t, out);
            } else if self.role == Role::Candidate {
                // Our leader was only silent, not dead: back to following it.
                self.role = Role::Follower;
            }
            self.leader_heard = Some(now);
            self.claim_heard = Some(now);
            self.arm(now, Wait::Leader);
            return;
        }
        if t != self.term {
            // An older term: its leader learns from our heartbeats.
            return;
        }
        // Same term, and we accepted someone else (or are fenced).
        if self.role == Role::Leader {
            if x < self.cfg.id {
                // The lower one steps down when it hears our claims.
                return;
            }
            // We cannot accept the higher one in this term; stop leading and
            // let it re-declare at term+1 once it notices it lacks our support.
            info!("node {}: node {x} also leads term {t} and is higher; stepping down", self.cfg.id);
            self.role = Role::Follower;
            self.leader_heard = None;
        }
        // Someone live leads our term: do not run against it; it re-declares
        // at term+1 when it sees that we cannot follow it.
        self.claim_heard = Some(now);
        if self.role == Role::Follower {
            self.arm(now, Wait::Leader);
        }
    }

    /// Accepting `x` for `t`: a later term than ours (and than the fence), or
    /// ours while we have accepted nobody else in it.
    fn may_accept(&self, x: NodeId, t: Term) -> bool {
        t > self.fence && (t > self.term || (t == self.term && self.accepted.is_none_or(|a| a == x)))
    }

    fn accept(&mut self, now: Instant, x: NodeId, t: Term, out: &mut Vec<Action>) {
        if self.led && x < self.cfg.id {
            // Deposed by a lower id in a later term: the others declared us
            // dead while we thought we led, so our link is flaky. Back off
            // (doubling) before taking the lead again, and catch up first.
            self.backoff = if self.backoff.is_zero() { BACKOFF_START } else { (self.backoff * 2).min(BACKOFF_CAP) };
            self.preempt_after = now + self.backoff;
            self.eligible = false;
            info!(
                "node {}: deposed by lower node {x} in term {t}; not taking over for {:?}",
                self.cfg.id, self.backoff
            );
        }
        self.led = false;
        self.term = t;
        self.accepted = Some(x);
        self.role = Role::Follower;
        // Tell everyone at once, so the new leader reaches quorum without
        // waiting a heartbeat period.
        self.broadcast_heartbeat(now, out);
    }

    /// A leader that learns of a later term: follower of nobody in that term yet.
    fn step_down_stale(&mut self, now: Instant, t: Term, from: NodeId) {
        info!("node {}: node {from} is in term {t}, beyond ours; stepping down", self.cfg.id);
        self.role = Role::Follower;
        self.term = t;
        self.accepted = None;
        self.leader_heard = None;
        self.claim_heard = None;
        self.arm(now, Wait::Leader);
    }

    fn handle_election(&mut self, now: Instant, from: NodeId, out: &mut Vec<Action>) {
        if from > self.cfg.id || !self.may_run(now) {
            // A higher node runs; bully order says it wins over us anyway.
            return;
        }
        let answer = Action::Broadcast(Gossip::Answer { term: self.term, to: from });
        if self.role == Role::Leader {
            // The candidate missed our claims; repeat one it can accept (same
            // term, since candidates do not bump theirs).
            out.push(answer);
            out.push(Action::Broadcast(Gossip::Coordinator { term: self.term }));
        } else if self.live_claim(now) {
            // Leader stickiness: one node's flaky view must not depose a
            // leader that we still hear.
            debug!("node {}: ignoring election from {from}: the leader is live", self.cfg.id);
        } else if self.role == Role::Candidate {
            out.push(answer);
        } else if self.majority_alive(now) {
            out.push(answer);
            self.start_election(now, out);
        } else {
            // We could not run ourselves, so do not promise to: the candidate
            // decides on its own view.
            debug!("node {}: no majority in sight, not answering {from}", self.cfg.id);
        }
    }

    fn handle_answer(&mut self, now: Instant, from: NodeId, to: NodeId) {
        let waiting = matches!(self.timer, Some(Timer { wait: Wait::Answers, .. }));
        if to == self.cfg.id && from > self.cfg.id && self.role == Role::Candidate && waiting {
            debug!("node {}: node {from} answered; waiting for its coordinator", self.cfg.id);
            self.arm(now, Wait::Coordinator);
        }
    }

    // ----- time -----

    /// Everything that depends on time alone; runs after every input.
    fn on_time(&mut self, now: Instant, out: &mut Vec<Action>) {
        match self.role {
            Role::Leader => self.lead(now, out),
            Role::Follower => self.maybe_take_over(now, out),
            Role::Candidate => {}
        }
        if let Some(t) = self.timer.filter(|t| now >= t.at) {
            self.fire(now, t, out);
        }
        if now >= self.next_heartbeat {
            self.broadcast_heartbeat(now, out);
        }
    }

    fn fire(&mut self, now: Instant, t: Timer, out: &mut Vec<Action>) {
        self.timer = None;
        if t.term != self.term || t.wait.role() != self.role {
            // Armed in another generation: re-evaluate the current state instead.
            self.rearm(now);
            return;
        }
        match t.wait {
            // The leader fell silent, the majority may be back, or the
            // answering node never declared: (re)run.
            Wait::Leader | Wait::Majority | Wait::Coordinator => self.start_election(now, out),
            Wait::Answers => {
                if self.live_claim(now) || !self.majority_alive(now) {
                    self.start_election(now, out);
                } else {
                    debug!("node {}: no answer in term {}; declaring", self.cfg.id, self.term);
                    self.declare_victory(now, out);
                }
            }
        }
        // Whatever happened, a follower or candidate keeps a timer running.
        if self.timer.is_none() {
            self.rearm(now);
        }
    }

    /// Bully: the highest live node declares, lower ones ask the higher.
    fn start_election(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.live_claim(now) || !self.may_run(now) {
            self.role = Role::Follower;
            self.arm(now, Wait::Leader);
        } else if !self.majority_alive(now) {
            // Pre-vote: an isolated node neither inflates terms nor claims anything.
            if self.role != Role::Follower {
                debug!("node {}: no majority in sight; waiting", self.cfg.id);
            }
            self.role = Role::Follower;
            self.arm(now, Wait::Majority);
        } else if !self.higher_alive(now) {
            self.declare_victory(now, out);
        } else {
            debug!("node {}: running in term {}", self.cfg.id, self.term);
            self.role = Role::Candidate;
            out.push(Action::Broadcast(Gossip::Election { term: self.term }));
            self.arm(now, Wait::Answers);
        }
    }

    /// Leader housekeeping: quorum accounting, back-off reset, and re-declaring
    /// when followers cannot support us in this term.
    fn lead(&mut self, now: Instant, out: &mut Vec<Action>) {
        let quorum = self.has_quorum(now);
        if quorum {
            self.quorum_at = now;
            let since = *self.quorum_since.get_or_insert(now);
            if !self.backoff.is_zero() && now.saturating_duration_since(since) >= BACKOFF_RESET_AFTER {
                debug!("node {}: led with quorum for {BACKOFF_RESET_AFTER:?}; back-off reset", self.cfg.id);
                self.backoff = Duration::ZERO;
            }
        } else {
            self.quorum_since = None;
        }
        if !self.any_stuck(now) {
            self.unanimous_at = now;
        }
        // Lost quorum: typically two leaders in one term after a partition,
        // the followers having accepted the other. A member stuck in our term
        // under another leader (or fenced by a restart) can only follow us in
        // a later term. Either way a new term fixes it, if a majority is there.
        let lost = !quorum && now.saturating_duration_since(self.quorum_at) >= self.cfg.leader_timeout;
        let split = now.saturating_duration_since(self.unanimous_at) >= self.cfg.leader_timeout;
        if (lost || split) && self.majority_alive(now) {
            info!("node {}: cannot lead term {} with a majority; re-declaring", self.cfg.id, self.term);
            self.declare_victory(now, out);
        } else if self.redeclare && self.majority_alive(now) {
            info!("node {}: cannot vouch for term {}; re-declaring to catch up again", self.cfg.id, self.term);
            self.declare_victory(now, out);
        }
    }

    /// A caught-up follower of a lower leader takes the lead (bully order),
    /// unless it was deposed as flaky recently.
    fn maybe_take_over(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !self.eligible || now < self.preempt_after || !self.votes() {
            return;
        }
        let Some(l) = self.leader(now) else { return };
        // Only the highest eligible node takes over, so two do not race.
        if l >= self.cfg.id || self.higher_eligible_alive(now) || !self.majority_alive(now) {
            return;
        }
        info!("node {}: caught up; taking over from node {l}", self.cfg.id);
        self.declare_victory(now, out);
    }

    /// Leads a new term: one above ours and above any live member's, so that
    /// everyone can accept it at once.
    fn declare_victory(&mut self, now: Instant, out: &mut Vec<Action>) {
        let seen = self.live_peers(now).filter_map(|(_, p)| p.heartbeat.as_ref()).map(|hb| hb.term).max();
        let base = seen.map_or(self.term, |s| s.max(self.term));
        let Some(term) = base.0.checked_add(1).map(Term) else {
            warn!("node {}: term space exhausted; cannot lead", self.cfg.id);
            return;
        };
        if !self.votes() {
            return;
        }
        self.role = Role::Leader;
        self.term = term;
        self.accepted = Some(self.cfg.id);
        // A leader is the reference others catch up from.
        self.eligible = true;
        self.led = true;
        self.redeclare = false;
        self.timer = None;
        self.leader_heard = Some(now);
        self.claim_heard = None;
        self.quorum_at = now;
        self.quorum_since = None;
        self.unanimous_at = now;
        out.push(Action::Broadcast(Gossip::Coordinator { term }));
        self.broadcast_heartbeat(now, out);
    }

    // ----- helpers -----

    fn arm(&mut self, now: Instant, wait: Wait) {
        let after = match wait {
            Wait::Leader => self.cfg.leader_timeout + self.jitter(),
            Wait::Majority => self.cfg.heartbeat,
            Wait::Answers => self.cfg.answer_timeout,
            Wait::Coordinator => self.cfg.leader_timeout,
        };
        self.timer = Some(Timer { at: now + after, term: self.term, wait });
    }

    /// A fresh timer for whatever the current state waits for.
    fn rearm(&mut self, now: Instant) {
        match self.role {
            Role::Follower => self.arm(now, Wait::Leader),
            Role::Candidate => self.arm(now, Wait::Coordinator),
            Role::Leader => self.timer = None,
        }
    }

    /// Uniform in `[0, leader_timeout / 4]`, drawn anew for every arming, so
    /// that followers of a dead leader do not all run at the same instant.
    fn jitter(&mut self) -> Duration {
        let max = u64::try_from((self.cfg.leader_timeout / 4).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.up_to(max))
    }

    fn broadcast_heartbeat(&mut self, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::Broadcast(Gossip::Heartbeat(self.heartbeat(now))));
        self.next_heartbeat = now + self.cfg.heartbeat;
    }

    /// Emits `RoleChanged` first in the step's actions, so the shell knows
    /// its new role before it sends anything in it.
    fn report(&mut self, out: &mut Vec<Action>) {
        let state = (self.role, self.term, self.accepted);
        if state == self.reported {
            return;
        }
        self.reported = state;
        let id = self.cfg.id;
        match state {
            (Role::Leader, t, _) => info!("node {id}: leader of term {t}"),
            (Role::Candidate, t, _) => info!("node {id}: candidate in term {t}"),
            (Role::Follower, t, Some(l)) if l != id => {
                info!("node {id}: following node {l} in term {t}")
            }
            (Role::Follower, t, _) => info!("node {id}: follower in term {t}, no leader"),
        }
        out.insert(0, Action::RoleChanged { role: self.role, term: self.term, leader: self.accepted });
    }

    fn is_member(&self, id: NodeId) -> bool {
        id != self.cfg.id && self.cfg.members.contains(&id)
    }

    fn heard(&mut self, now: Instant, id: NodeId) {
        self.peers.entry(id).or_insert(Peer { heard: now, heartbeat: None }).heard = now;
    }

    fn within_timeout(&self, now: Instant, at: Instant) -> bool {
        now.saturating_duration_since(at) < self.cfg.leader_timeout
    }

    fn live_peers(&self, now: Instant) -> impl Iterator<Item = (&NodeId, &Peer)> + '_ {
        self.peers.iter().filter(move |(_, p)| self.within_timeout(now, p.heard))
    }

    fn majority(&self) -> usize {
        self.cfg.members.len() / 2 + 1
    }

    fn majority_alive(&self, now: Instant) -> bool {
        usize::from(self.votes()) + self.live_peers(now).count() >= self.majority()
    }

    fn higher_alive(&self, now: Instant) -> bool {
        self.live_peers(now).any(|(id, _)| *id > self.cfg.id)
    }

    fn higher_eligible_alive(&self, now: Instant) -> bool {
        self.live_peers(now).any(|(id, p)| *id > self.cfg.id && p.heartbeat.as_ref().is_some_and(|hb| hb.eligible))
    }

    /// Someone (accepted or not) claimed our term within the leader timeout.
    fn live_claim(&self, now: Instant) -> bool {
        self.claim_heard.is_some_and(|at| self.within_timeout(now, at))
    }

    /// A live member whose latest heartbeat is in our term under another
    /// leader (or none): it cannot accept us before the next term.
    fn any_stuck(&self, now: Instant) -> bool {
        let me = Some(self.cfg.id);
        self.live_peers(now).filter_map(|(_, p)| p.heartbeat.as_ref()).any(|hb| hb.term == self.term && hb.leader != me)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn hb(term: u64, leader: Option<u32>, role: Role, eligible: bool) -> Gossip {
        Gossip::Heartbeat(Heartbeat { term: Term(term), leader: leader.map(NodeId), role, eligible })
    }

    /// What a leader of `term` multicasts every heartbeat.
    fn leading(term: u64, id: u32) -> Gossip {
        hb(term, Some(id), Role::Leader, true)
    }

    /// What a follower (not caught up) multicasts every heartbeat.
    fn following(term: u64, leader: Option<u32>) -> Gossip {
        hb(term, leader, Role::Follower, false)
    }

    fn from(id: u32, msg: Gossip) -> Input {
        Input::Receive { from: NodeId(id), msg }
    }

    fn claim(term: u64, leader: u32) -> Input {
        Input::Claim { term: Term(term), leader: NodeId(leader) }
    }

    fn sends(msg: Gossip) -> Action {
        Action::Broadcast(msg)
    }

    fn changed(role: Role, term: u64, leader: Option<u32>) -> Action {
        Action::RoleChanged { role, term: Term(term), leader: leader.map(NodeId) }
    }

    /// The three actions of taking the lead of `term`.
    fn declares(id: u32, term: u64) -> Vec<Action> {
        vec![
            changed(Role::Leader, term, Some(id)),
            sends(Gossip::Coordinator { term: Term(term) }),
            sends(leading(term, id)),
        ]
    }

    fn is_heartbeat(a: &Action) -> bool {
        matches!(a, Action::Broadcast(Gossip::Heartbeat(_)))
    }

    /// Everything but the periodic heartbeats.
    fn notable(actions: &[Action]) -> Vec<Action> {
        actions.iter().filter(|a| !is_heartbeat(a)).cloned().collect()
    }

    /// One machine on a test bench: a virtual clock, and peers whose current
    /// message ("chatter") is delivered every 100 ms, 50 ms out of phase with
    /// the machine's own heartbeats.
    struct Bench {
        start: Instant,
        now: Instant,
        e: Election,
        chatter: BTreeMap<u32, Gossip>,
        next_chatter: Instant,
    }

    impl Bench {
        fn new(id: u32, size: u32) -> Bench {
            Bench::restarted(id, size, Term(0))
        }

        fn restarted(id: u32, size: u32, term: Term) -> Bench {
            let start = Instant::now();
            let cfg = ElectionConfig::new(NodeId(id), size, u64::from(id));
            Bench {
                start,
                now: start,
                e: Election::new(cfg, start, term),
                chatter: BTreeMap::new(),
                next_chatter: start + ms(50),
            }
        }

        /// Node 3 of three, leading term 1 with nodes 1 and 2 following.
        fn led_by_3() -> Bench {
            let mut b = Bench::new(3, 3);
            b.chat(1, following(0, None));
            b.chat(2, following(0, None));
            b.until_role(Role::Leader, ms(800));
            b.chat(1, following(1, Some(3)));
            b.chat(2, following(1, Some(3)));
            b
        }

        fn elapsed(&self) -> Duration {
            self.now - self.start
        }

        fn chat(&mut self, id: u32, msg: Gossip) {
            self.chatter.insert(id, msg);
        }

        fn hush(&mut self, id: u32) {
            self.chatter.remove(&id);
        }

        /// Steps the machine at its deadlines and the chatter until `stop`
        /// says so after a step or `limit` (since start) is reached. Returns
        /// the actions of the last step and everything before it.
        fn run(&mut self, limit: Duration, stop: impl Fn(&Election) -> bool) -> (Vec<Action>, Vec<Action>) {
            let end = self.start + limit;
            let mut before = Vec::new();
            loop {
                let next = self.e.next_deadline().min(self.next_chatter);
                if next > end {
                    self.now = end;
                    return (Vec::new(), before);
                }
                self.now = next;
                let mut step = Vec::new();
                if next == self.next_chatter {
                    self.next_chatter += ms(100);
                    for (id, msg) in self.chatter.clone() {
                        step.extend(self.e.step(next, from(id, msg)));
                    }
                } else {
                    step = self.e.step(next, Input::Tick);
                }
                if stop(&self.e) {
                    return (step, before);
                }
                before.extend(step);
            }
        }

        /// All actions until `limit` since start.
        fn advance(&mut self, limit: Duration) -> Vec<Action> {
            self.run(limit, |_| false).1
        }

        /// Runs until the role is `role`; returns that step's actions.
        fn until_role(&mut self, role: Role, limit: Duration) -> Vec<Action> {
            let (step, _) = self.run(limit, |e| e.role() == role);
            assert_eq!(self.e.role(), role, "still {:?} at {:?}", self.e.role(), self.elapsed());
            step
        }

        fn input(&mut self, input: Input) -> Vec<Action> {
            self.e.step(self.now, input)
        }
    }

    #[test]
    fn a_lone_node_leads_a_cluster_of_one_after_the_listen_window() {
        let mut b = Bench::new(1, 1);
        let listening = b.advance(ms(599));
        assert_eq!(listening, vec![sends(following(0, None)); 5], "heartbeats only while listening");
        let step = b.until_role(Role::Leader, ms(800));
        assert!(b.elapsed() >= ms(600) && b.elapsed() <= ms(750), "declared at {:?}", b.elapsed());
        assert_eq!(step, declares(1, 1));
        assert!(b.e.has_quorum(b.now), "a cluster of one is its own majority");
        assert_eq!(b.e.leader(b.now), Some(NodeId(1)));
        assert_eq!(b.e.alive(b.now), vec![NodeId(1)]);
        assert!(b.e.eligible());
    }

    #[test]
    fn members_with_any_ids_count_their_own_majority_and_ignore_others() {
        let start = Instant::now();
        let mut cfg = ElectionConfig::new(NodeId(30), 1, 30);
        cfg.members = [10, 20, 30].map(NodeId).into();
        let mut b = Bench {
            start,
            now: start,
            e: Election::new(cfg, start, Term(0)),
            chatter: BTreeMap::new(),
            next_chatter: start + ms(50),
        };
        // Ids 1 and 2 are no members: no majority with them.
        b.chat(1, following(0, None));
        b.chat(2, following(0, None));
        b.advance(ms(1500));
        assert_ne!(b.e.role(), Role::Leader, "led with non-members as its majority");
        assert_eq!(b.e.alive(b.now), vec![NodeId(30)]);
        // Member 10 makes two of three.
        b.chat(10, following(0, None));
        b.until_role(Role::Leader, ms(3000));
        b.chat(10, following(1, Some(30)));
        b.advance(b.elapsed() + ms(200));
        assert!(b.e.has_quorum(b.now), "member 10 follows");
        assert_eq!(b.e.alive(b.now), vec![NodeId(10), NodeId(30)]);
    }

    #[test]
    fn a_node_that_is_not_a_member_follows_but_never_runs_or_leads() {
        // Node 4 of a cluster of three: it waits to be added.
        let mut b = Bench::new(4, 3);
        assert!(!b.e.votes());
        b.chat(3, leading(1, 3));
        b.chat(1, following(1, Some(3)));
        b.advance(ms(1000));
        assert_eq!((b.e.role(), b.e.leader(b.now)), (Role::Follower, Some(NodeId(3))), "it follows the leader");
        assert_eq!(b.input(Input::CaughtUp), vec![]);
        assert_eq!(notable(&b.advance(ms(3000))), vec![], "a caught-up non-member does not take over");
        // The leader goes silent: a member would run; this node does not.
        b.hush(3);
        assert_eq!(notable(&b.advance(ms(6000))), vec![], "no election, answer or claim from a non-member");
        b.chat(2, Gossip::Election { term: Term(1) });
        assert_eq!(notable(&b.advance(ms(7000))), vec![], "it answers nobody");
        // Once added, and caught up again as a member, it is a member like
        // any other: the highest, it leads.
        b.hush(2);
        b.chat(2, following(1, None));
        let now = b.now;
        b.e.set_members(now, [1, 2, 3, 4].map(NodeId).into());
        assert!(b.e.votes());
        assert!(!b.e.eligible(), "its catching up as a non-member does not count");
        b.input(Input::CaughtUp);
        b.until_role(Role::Leader, ms(9000));
    }

    #[test]
    fn a_member_taken_out_and_back_in_must_catch_up_again_before_it_may_lead() {
        // Node 4, the highest, leads...
        let mut b = Bench::new(4, 4);
        for id in 1..=3 {
            b.chat(id, following(0, None));
        }
        b.until_role(Role::Leader, ms(1000));
        assert!(b.e.eligible());
        // ... is taken out, and node 3 leads the others.
        let now = b.now;
        b.e.set_members(now, [1, 2, 3].map(NodeId).into());
        assert_eq!(b.e.role(), Role::Follower);
        assert!(!b.e.eligible(), "taken out");
        b.chat(3, leading(2, 3));
        b.chat(1, following(2, Some(3)));
        b.chat(2, following(2, Some(3)));
        b.advance(b.elapsed() + ms(500));
        b.input(Input::CaughtUp);
        assert!(!b.e.eligible(), "a non-member's catching up does not count");
        // Taken back in, it does not take over from the lower node 3
        // before it caught up again...
        let now = b.now;
        b.e.set_members(now, [1, 2, 3, 4].map(NodeId).into());
        assert!(!b.e.eligible(), "back in, not caught up yet");
        b.advance(b.elapsed() + ms(4000));
        assert_eq!(b.e.role(), Role::Follower, "took over before catching up again");
        // ... and does once it has.
        b.input(Input::CaughtUp);
        b.until_role(Role::Leader, b.elapsed() + ms(5000));
    }

    #[test]
    fn a_member_taken_back_in_neither_runs_nor_answers_before_it_caught_up_again() {
        // Node 4 of four was taken out while node 3 led, and taken back in.
        let mut b = Bench::new(4, 4);
        let now = b.now;
        b.e.set_members(now, [1, 2, 3].map(NodeId).into());
        b.chat(3, leading(2, 3));
        b.chat(1, following(2, Some(3)));
        b.chat(2, following(2, Some(3)));
        b.advance(ms(500));
        let now = b.now;
        b.e.set_members(now, [1, 2, 3, 4].map(NodeId).into());
        // Node 3 dies before node 4 compared its index with it: node 4, the
        // highest, does not run, and does not answer node 2's election, so
        // node 2 may lead.
        b.hush(3);
        let acts = b.advance(ms(3000));
        let runs = |a: &Action| matches!(a, Action::Broadcast(Gossip::Election { .. } | Gossip::Coordinator { .. }));
        assert!(!acts.iter().any(runs), "ran before catching up: {:?}", notable(&acts));
        assert_eq!(b.e.role(), Role::Follower);
        let answered = b.input(from(2, Gossip::Election { term: Term(2) }));
        assert!(!answered.iter().any(|a| matches!(a, Action::Broadcast(Gossip::Answer { .. }))), "{answered:?}");
        // Once caught up (from node 2, say), it runs again.
        b.input(Input::CaughtUp);
        b.until_role(Role::Leader, ms(6000));
    }

    #[test]
    fn a_member_owing_a_compare_runs_after_a_while_if_no_one_else_leads() {
        let mut b = Bench::new(4, 4);
        let now = b.now;
        b.e.set_members(now, [1, 2, 3].map(NodeId).into());
        let now = b.now;
        b.e.set_members(now, [1, 2, 3, 4].map(NodeId).into());
        // Nodes 1 and 2 are alive but lead nobody (they owe a compare too, say).
        b.chat(1, following(0, None));
        b.chat(2, following(0, None));
        b.advance(COMPARE_WAIT - ms(500));
        assert_eq!(b.e.role(), Role::Follower, "ran before {COMPARE_WAIT:?}");
        b.until_role(Role::Leader, COMPARE_WAIT + ms(3000));
    }

    #[test]
    fn a_leader_taken_out_of_the_members_steps_down_and_majorities_follow_the_members() {
        let mut b = Bench::led_by_3();
        b.advance(ms(1500));
        assert!(b.e.has_quorum(b.now));
        // Grown to seven: itself and two followers are no majority.
        let now = b.now;
        assert_eq!(notable(&b.e.set_members(now, (1..=7).map(NodeId).collect())), vec![]);
        assert!(!b.e.has_quorum(b.now), "four of seven are needed");
        b.chat(4, following(1, Some(3)));
        b.advance(ms(1800));
        assert!(b.e.has_quorum(b.now), "with node 4 it has four of seven");
        // Taken out: it steps down at once and never runs again.
        let now = b.now;
        let out = b.e.set_members(now, [1, 2, 4, 5, 6, 7].map(NodeId).into());
        assert_eq!(notable(&out), vec![changed(Role::Follower, 1, Some(3))]);
        assert!(!b.e.has_quorum(b.now));
        b.hush(1);
        b.hush(2);
        b.hush(4);
        assert_eq!(notable(&b.advance(ms(5000))), vec![], "a node taken out never runs");
    }

    #[test]
    fn the_highest_live_id_declares_without_waiting_for_answers() {
        let mut b = Bench::new(3, 3);
        b.chat(1, following(0, None));
        b.chat(2, following(0, None));
        let step = b.until_role(Role::Leader, ms(800));
        assert!(b.elapsed() <= ms(750), "declared at {:?}", b.elapsed());
        assert_eq!(step, declares(3, 1), "no Election, no waiting");
        assert!(!b.e.has_quorum(b.now), "nobody has accepted yet");
        assert_eq!(b.input(from(1, following(1, Some(3)))), vec![]);
        assert!(b.e.has_quorum(b.now), "one follower makes two of three");
    }

    #[test]
    fn a_lower_candidate_waits_when_a_higher_node_answers() {
        let mut b = Bench::new(1, 3);
        b.chat(2, following(0, None));
        b.chat(3, following(0, None));
        let step = b.until_role(Role::Candidate, ms(800));
        assert_eq!(step, vec![changed(Role::Candidate, 0, None), sends(Gossip::Election { term: Term(0) })]);
        let answered = b.elapsed();
        let answer = Gossip::Answer { term: Term(0), to: NodeId(1) };
        assert_eq!(b.input(from(3, answer)), vec![]);
        // Well past the answer timeout: still waiting, not declaring.
        let waiting = b.advance(answered + ms(500));
        assert_eq!(notable(&waiting), vec![]);
        assert_eq!(b.e.role(), Role::Candidate);
        assert_eq!(
            b.input(from(3, Gossip::Coordinator { term: Term(1) })),
            vec![changed(Role::Follower, 1, Some(3)), sends(following(1, Some(3)))]
        );
        assert_eq!(b.e.leader(b.now), Some(NodeId(3)));
    }

    #[test]
    fn an_answered_candidate_runs_again_when_no_coordinator_comes() {
        let mut b = Bench::new(1, 3);
        b.chat(2, following(0, None));
        b.chat(3, following(0, None));
        b.until_role(Role::Candidate, ms(800));
        let answered = b.elapsed();
        b.input(from(3, Gossip::Answer { term: Term(0), to: NodeId(1) }));
        assert_eq!(notable(&b.advance(answered + ms(599))), vec![]);
        let rerun = b.advance(answered + ms(600));
        assert_eq!(notable(&rerun), vec![sends(Gossip::Election { term: Term(0) })]);
    }

    #[test]
    fn a_candidate_that_hears_no_answer_declares_victory() {
        let mut b = Bench::new(1, 3);
        b.chat(2, following(0, None));
        b.chat(3, following(0, None));
        b.until_role(Role::Candidate, ms(800));
        let ran = b.elapsed();
        let step = b.until_role(Role::Leader, ran + ms(300));
        assert_eq!(b.elapsed(), ran + ms(200), "exactly the answer timeout");
        assert_eq!(step, declares(1, 1));
    }

    #[test]
    fn an_answer_to_another_node_or_from_a_lower_one_changes_nothing() {
        let mut b = Bench::new(2, 3);
        b.chat(1, following(0, None));
        b.chat(3, following(0, None));
        b.until_role(Role::Candidate, ms(800));
        let ran = b.elapsed();
        assert_eq!(b.input(from(3, Gossip::Answer { term: Term(0), to: NodeId(1) })), vec![]);
        assert_eq!(b.input(from(1, Gossip::Answer { term: Term(0), to: NodeId(2) })), vec![]);
        b.until_role(Role::Leader, ran + ms(300));
        assert_eq!(b.elapsed(), ran + ms(200));
    }

    #[test]
    fn a_follower_never_accepts_two_leaders_in_one_term() {
        let mut b = Bench::new(1, 3);
        assert_eq!(
            b.input(from(2, Gossip::Coordinator { term: Term(5) })),
            vec![changed(Role::Follower, 5, Some(2)), sends(following(5, Some(2)))]
        );
        assert_eq!(b.input(from(3, Gossip::Coordinator { term: Term(5) })), vec![]);
        assert_eq!(b.input(from(3, leading(5, 3))), vec![]);
        assert_eq!(b.input(claim(5, 3)), vec![]);
        assert_eq!((b.e.term(), b.e.accepted()), (Term(5), Some(NodeId(2))));
        // A later term is a new choice; an older one is history.
        assert_eq!(
            b.input(from(3, Gossip::Coordinator { term: Term(6) })),
            vec![changed(Role::Follower, 6, Some(3)), sends(following(6, Some(3)))]
        );
        assert_eq!(b.input(from(2, Gossip::Coordinator { term: Term(5) })), vec![]);
        assert_eq!(b.input(from(2, leading(5, 2))), vec![]);
        assert_eq!(b.e.accepted(), Some(NodeId(3)));
    }

    #[test]
    fn a_repeated_claim_from_the_accepted_leader_is_quiet() {
        let mut b = Bench::new(1, 3);
        b.input(from(3, leading(2, 3)));
        assert_eq!(b.input(from(3, leading(2, 3))), vec![]);
        assert_eq!(b.input(from(3, Gossip::Coordinator { term: Term(2) })), vec![]);
    }

    #[test]
    fn a_stale_leader_steps_down_on_a_higher_term() {
        let mut b = Bench::new(2, 3);
        b.chat(1, following(0, None));
        b.until_role(Role::Leader, ms(800));
        assert_eq!(b.e.term(), Term(1));
        b.hush(1);
        // A follower of node 3 in term 4: we are stale, but node 1's word
        // does not make node 3 our leader.
        assert_eq!(b.input(from(1, following(4, Some(3)))), vec![changed(Role::Follower, 4, None)]);
        assert_eq!(b.e.accepted(), None);
        assert_eq!(b.e.leader(b.now), None);
        assert!(!b.e.has_quorum(b.now));
        assert_eq!(
            b.input(from(3, Gossip::Coordinator { term: Term(4) })),
            vec![changed(Role::Follower, 4, Some(3)), hb_sent(4, Some(3), true)]
        );
    }

    fn hb_sent(term: u64, leader: Option<u32>, eligible: bool) -> Action {
        sends(hb(term, leader, Role::Follower, eligible))
    }

    #[test]
    fn a_follower_does_not_adopt_a_higher_term_on_hearsay() {
        let mut b = Bench::new(1, 3);
        b.input(from(3, leading(2, 3)));
        assert_eq!(b.input(from(2, following(9, Some(2)))), vec![]);
        assert_eq!((b.e.term(), b.e.accepted()), (Term(2), Some(NodeId(3))));
    }

    #[test]
    fn one_lost_heartbeat_does_not_start_an_election() {
        let mut b = Bench::new(1, 3);
        b.chat(2, following(1, Some(3)));
        b.chat(3, leading(1, 3));
        b.advance(ms(1000));
        assert_eq!(b.e.leader(b.now), Some(NodeId(3)));
        // One heartbeat lost, then five in a row: the timeout spans six.
        b.hush(3);
        b.advance(ms(1100));
        b.chat(3, leading(1, 3));
        b.advance(ms(2000));
        b.hush(3);
        b.advance(ms(2500));
        b.chat(3, leading(1, 3));
        let calm = b.advance(ms(4000));
        assert_eq!(notable(&calm), vec![], "no election, no role change");
        assert_eq!(b.e.leader(b.now), Some(NodeId(3)));
        // Gone for good: the last claim came at 3950 ms.
        b.hush(3);
        let step = b.until_role(Role::Candidate, ms(5000));
        assert!(b.elapsed() >= ms(4550) && b.elapsed() <= ms(4700), "ran at {:?}", b.elapsed());
        assert_eq!(step, vec![changed(Role::Candidate, 1, Some(3)), sends(Gossip::Election { term: Term(1) })]);
    }

    #[test]
    fn a_follower_of_a_live_leader_ignores_elections() {
        let mut b = Bench::new(2, 3);
        b.chat(3, leading(1, 3));
        b.advance(ms(300));
        assert_eq!(b.input(from(1, Gossip::Election { term: Term(1) })), vec![]);
        assert_eq!(b.e.role(), Role::Follower);
    }

    #[test]
    fn a_node_without_a_live_leader_answers_a_lower_candidate_and_runs() {
        let mut b = Bench::new(2, 3);
        b.chat(1, following(0, None));
        b.chat(3, following(0, None));
        b.advance(ms(300));
        assert_eq!(
            b.input(from(1, Gossip::Election { term: Term(0) })),
            vec![
                changed(Role::Candidate, 0, None),
                sends(Gossip::Answer { term: Term(0), to: NodeId(1) }),
                sends(Gossip::Election { term: Term(0) }),
            ]
        );
        assert_eq!(b.input(from(3, Gossip::Election { term: Term(0) })), vec![], "a higher candidate gets no answer");
    }

    #[test]
    fn a_live_leader_answers_a_lower_election_and_repeats_its_claim() {
        let mut b = Bench::new(3, 3);
        b.chat(1, following(0, None));
        b.chat(2, following(0, None));
        b.until_role(Role::Leader, ms(800));
        assert_eq!(
            b.input(from(1, Gossip::Election { term: Term(0) })),
            vec![sends(Gossip::Answer { term: Term(1), to: NodeId(1) }), sends(Gossip::Coordinator { term: Term(1) }),]
        );
    }

    #[test]
    fn a_returning_higher_node_takes_over_only_after_catching_up() {
        let mut b = Bench::new(3, 3);
        b.chat(2, leading(4, 2));
        b.chat(1, following(4, Some(2)));
        let (step, _) = b.run(ms(100), |e| e.accepted().is_some());
        assert_eq!(step, vec![changed(Role::Follower, 4, Some(2)), sends(following(4, Some(2)))]);
        assert_eq!(notable(&b.advance(ms(3000))), vec![], "no takeover before catching up");
        assert_eq!(b.e.role(), Role::Follower);
        assert_eq!(b.input(Input::CaughtUp), declares(3, 5));
    }

    #[test]
    fn a_caught_up_node_leaves_the_takeover_to_a_higher_eligible_one() {
        let mut b = Bench::new(2, 3);
        b.chat(1, leading(4, 1));
        b.chat(3, hb(4, Some(1), Role::Follower, true));
        b.advance(ms(200));
        assert_eq!(b.input(Input::CaughtUp), vec![]);
        assert_eq!(notable(&b.advance(ms(2000))), vec![]);
        // Node 3 is gone: now node 2 is the highest eligible one.
        b.hush(3);
        b.until_role(Role::Leader, ms(3000));
        assert!(b.elapsed() >= ms(2550) && b.elapsed() <= ms(2700), "took over at {:?}", b.elapsed());
    }

    #[test]
    fn a_restarted_node_cannot_accept_a_second_leader_in_its_last_term() {
        // Before the restart it may have accepted someone else in term 4.
        let mut b = Bench::restarted(3, 3, Term(4));
        b.chat(2, leading(4, 2));
        b.chat(1, following(4, Some(2)));
        let waiting = b.advance(ms(3000));
        assert_eq!(notable(&waiting), vec![], "neither accepts nor runs against a live leader");
        assert_eq!(b.e.accepted(), None);
        assert_eq!(Gossip::Heartbeat(b.e.heartbeat(b.now)), following(4, None));
        b.chat(2, leading(5, 2));
        let (step, _) = b.run(ms(3100), |e| e.accepted().is_some());
        assert_eq!(step, vec![changed(Role::Follower, 5, Some(2)), sends(following(5, Some(2)))]);
    }

    #[test]
    fn a_leader_redeclares_when_a_member_cannot_follow_it_in_this_term() {
        let mut b = Bench::new(3, 3);
        b.chat(1, following(0, None));
        b.chat(2, following(0, None));
        b.until_role(Role::Leader, ms(800));
        let led = b.elapsed();
        // Node 2 follows; node 1 restarted fenced in term 1 and cannot.
        b.chat(2, following(1, Some(3)));
        b.chat(1, following(1, None));
        let (step, before) = b.run(led + ms(800), |e| e.term() == Term(2));
        assert!(b.e.has_quorum(b.now - ms(1)) || notable(&before).is_empty());
        assert!(b.elapsed() >= led + ms(600) && b.elapsed() <= led + ms(700), "at {:?}", b.elapsed());
        assert_eq!(step, declares(3, 2));
    }

    #[test]
    fn a_leader_whose_own_commit_failed_leads_a_new_term_once_a_majority_is_in_sight() {
        let mut b = Bench::led_by_3();
        b.advance(b.elapsed() + ms(300));
        assert_eq!(notable(&b.input(Input::Redeclare { term: Term(7) })), vec![], "another term's request is ignored");
        assert_eq!(b.e.term(), Term(1));
        assert_eq!(b.input(Input::Redeclare { term: Term(1) })[..3], declares(3, 2)[..]);
        // Once is enough: the new term is kept.
        b.chat(1, following(2, Some(3)));
        b.chat(2, following(2, Some(3)));
        assert_eq!(notable(&b.advance(b.elapsed() + ms(1000))), vec![]);
        assert_eq!(b.e.term(), Term(2));
    }

    #[test]
    fn a_leader_alone_waits_for_a_majority_before_redeclaring() {
        let mut b = Bench::new(3, 3);
        b.chat(1, following(0, None));
        b.until_role(Role::Leader, ms(800));
        b.chat(1, following(1, Some(3)));
        b.advance(b.elapsed() + ms(300));
        b.chatter.clear();
        b.advance(b.elapsed() + ms(800));
        assert_eq!(notable(&b.input(Input::Redeclare { term: Term(1) })), vec![], "no majority in sight");
        b.chat(1, following(1, Some(3)));
        let (step, _) = b.run(b.elapsed() + ms(300), |e| e.term() == Term(2));
        assert_eq!(step[..3], declares(3, 2)[..]);
    }

    #[test]
    fn a_candidate_does_not_declare_against_a_live_leader_it_cannot_accept() {
        let mut b = Bench::new(1, 3);
        b.input(claim(1, 2));
        b.chat(3, following(1, Some(2)));
        b.until_role(Role::Candidate, ms(800));
        let ran = b.elapsed();
        // Node 3 leads term 1 too (node 2 went silent): we accepted node 2 in
        // term 1, so we cannot follow it, but we must not run against it.
        b.chat(3, leading(1, 3));
        let (step, before) = b.run(ran + ms(300), |e| e.role() != Role::Candidate);
        assert_eq!(notable(&before), vec![]);
        assert_eq!(step, vec![changed(Role::Follower, 1, Some(2))], "no Coordinator");
        assert_eq!(notable(&b.advance(ran + ms(3000))), vec![], "waits for node 3 to re-declare");
        b.chat(3, leading(2, 3));
        let (step, _) = b.run(ran + ms(3200), |e| e.term() == Term(2));
        assert_eq!(step, vec![changed(Role::Follower, 2, Some(3)), sends(following(2, Some(3)))]);
    }

    #[test]
    fn a_leader_steps_down_for_a_higher_leader_of_the_same_term() {
        let mut b = Bench::new(2, 3);
        b.chat(1, following(0, None));
        b.until_role(Role::Leader, ms(800));
        assert_eq!(b.input(from(3, leading(1, 3))), vec![changed(Role::Follower, 1, Some(2))]);
        assert_eq!(b.e.leader(b.now), None, "cannot follow node 3 in this term");
        assert_eq!(b.e.accepted(), Some(NodeId(2)), "and never changes its choice within the term");
        // Node 3 leads: no election against it.
        assert_eq!(b.input(from(1, Gossip::Election { term: Term(1) })), vec![]);
        // It re-declares at term 2, and that we accept.
        assert_eq!(
            b.input(from(3, Gossip::Coordinator { term: Term(2) })),
            vec![changed(Role::Follower, 2, Some(3)), hb_sent(2, Some(3), true)]
        );
    }

    #[test]
    fn a_leader_ignores_a_lower_leader_of_the_same_term() {
        let mut b = Bench::new(3, 3);
        b.chat(1, following(0, None));
        b.until_role(Role::Leader, ms(800));
        assert_eq!(b.input(from(2, Gossip::Coordinator { term: Term(1) })), vec![]);
        assert_eq!(b.input(from(2, leading(1, 2))), vec![]);
        assert_eq!(b.e.role(), Role::Leader);
    }

    #[test]
    fn a_leader_without_majority_reports_no_quorum() {
        let mut b = Bench::led_by_3();
        b.advance(b.elapsed() + ms(200));
        assert!(b.e.has_quorum(b.now));
        b.hush(1);
        b.hush(2);
        let cut = b.elapsed();
        b.advance(cut + ms(450));
        assert!(b.e.has_quorum(b.now), "still within the timeout of the last heartbeats");
        b.advance(cut + ms(650));
        assert!(!b.e.has_quorum(b.now));
        let alone = b.advance(cut + ms(10_000));
        assert_eq!(notable(&alone), vec![], "no re-declaring without a majority in sight");
        assert!(alone.iter().all(|a| *a == sends(leading(1, 3))));
        assert_eq!((b.e.role(), b.e.term()), (Role::Leader, Term(1)));
        assert!(!b.e.has_quorum(b.now));
    }

    #[test]
    fn a_leader_seeing_a_majority_that_follows_another_redeclares() {
        let mut b = Bench::new(3, 3);
        b.chat(1, following(0, None));
        b.until_role(Role::Leader, ms(800));
        // After a partition: node 1 accepted node 2 for the same term.
        b.chat(1, following(1, Some(2)));
        let led = b.elapsed();
        let (step, before) = b.run(led + ms(800), |e| e.term() == Term(2));
        assert_eq!(notable(&before), vec![]);
        assert!(b.elapsed() >= led + ms(600) && b.elapsed() <= led + ms(700), "at {:?}", b.elapsed());
        assert_eq!(step, declares(3, 2));
    }

    #[test]
    fn a_node_that_sees_no_majority_does_not_start_elections() {
        let mut b = Bench::new(2, 5);
        b.chat(1, following(0, None));
        let alone = b.advance(ms(10_000));
        assert!(alone.iter().all(|a| *a == sends(following(0, None))), "{alone:?}");
        assert_eq!((b.e.role(), b.e.term()), (Role::Follower, Term(0)));
        // A third node makes a majority of five; node 3 is higher, so ask it.
        b.chat(3, following(0, None));
        let step = b.until_role(Role::Candidate, ms(10_200));
        assert_eq!(step, vec![changed(Role::Candidate, 0, None), sends(Gossip::Election { term: Term(0) })]);
    }

    #[test]
    fn a_deposed_flaky_leader_backs_off_before_preempting_again() {
        let mut b = Bench::led_by_3();
        b.advance(ms(1500));
        // Nodes 1 and 2 lost us and elected node 2: a lower id, a later term.
        assert_eq!(
            b.input(from(2, Gossip::Coordinator { term: Term(2) })),
            vec![changed(Role::Follower, 2, Some(2)), hb_sent(2, Some(2), false)]
        );
        assert!(!b.e.eligible(), "must catch up again");
        b.chat(1, following(2, Some(2)));
        b.chat(2, leading(2, 2));
        b.advance(ms(1600));
        assert_eq!(b.input(Input::CaughtUp), vec![], "back-off of 2 s first");
        let step = b.until_role(Role::Leader, ms(4000));
        assert!(b.elapsed() >= ms(3500) && b.elapsed() <= ms(3550), "took over at {:?}", b.elapsed());
        assert_eq!(step, declares(3, 3));
        // Deposed again soon after: the back-off doubles to 4 s.
        b.chat(1, following(3, Some(3)));
        b.chat(2, following(3, Some(3)));
        b.advance(ms(5000));
        b.input(from(2, Gossip::Coordinator { term: Term(4) }));
        b.chat(1, following(4, Some(2)));
        b.chat(2, leading(4, 2));
        b.advance(ms(5100));
        b.input(Input::CaughtUp);
        b.until_role(Role::Leader, ms(10_000));
        assert!(b.elapsed() >= ms(9000) && b.elapsed() <= ms(9050), "took over at {:?}", b.elapsed());
    }

    #[test]
    fn a_minute_of_leading_with_quorum_forgets_the_back_off() {
        let mut b = Bench::new(3, 3);
        b.chat(1, following(0, None));
        b.chat(2, following(0, None));
        b.until_role(Role::Leader, ms(800));
        b.input(from(2, Gossip::Coordinator { term: Term(2) }));
        b.chat(1, following(2, Some(2)));
        b.chat(2, leading(2, 2));
        b.input(Input::CaughtUp);
        b.until_role(Role::Leader, ms(4000));
        let retook = b.elapsed();
        b.chat(1, following(3, Some(3)));
        b.chat(2, following(3, Some(3)));
        b.advance(retook + ms(61_000));
        // Deposed once more: the back-off starts again at 2 s, not 4 s.
        let deposed = b.elapsed();
        b.input(from(2, Gossip::Coordinator { term: Term(4) }));
        b.chat(1, following(4, Some(2)));
        b.chat(2, leading(4, 2));
        b.input(Input::CaughtUp);
        b.until_role(Role::Leader, deposed + ms(3000));
        assert!(b.elapsed() <= deposed + ms(2050), "took over at {:?}", b.elapsed() - deposed);
    }

    #[test]
    fn a_claim_over_tcp_counts_like_a_coordinator() {
        let mut b = Bench::new(1, 3);
        assert_eq!(b.input(claim(2, 3)), vec![changed(Role::Follower, 2, Some(3)), sends(following(2, Some(3)))]);
        assert_eq!(b.e.leader(b.now), Some(NodeId(3)));
        assert_eq!(b.e.alive(b.now), vec![NodeId(1), NodeId(3)], "a TCP request is a sign of life");
        assert_eq!(b.input(claim(1, 2)), vec![], "an older term");
        assert_eq!(b.input(claim(2, 2)), vec![], "another leader in the same term");
        // And it deposes a leader like a Coordinator would.
        let mut l = Bench::new(2, 3);
        l.chat(1, following(0, None));
        l.until_role(Role::Leader, ms(800));
        assert_eq!(l.input(claim(2, 3)), vec![changed(Role::Follower, 2, Some(3)), hb_sent(2, Some(3), true)]);
    }

    #[test]
    fn messages_from_unknown_ids_are_ignored() {
        let mut b = Bench::new(1, 3);
        b.advance(ms(50));
        for id in [0, 1, 4, u32::MAX] {
            for msg in [
                Gossip::Coordinator { term: Term(9) },
                leading(9, id),
                following(u64::MAX, Some(id)),
                Gossip::Election { term: Term(9) },
                Gossip::Answer { term: Term(9), to: NodeId(1) },
            ] {
                assert_eq!(b.input(from(id, msg)), vec![]);
            }
            assert_eq!(b.input(claim(9, id)), vec![]);
        }
        assert_eq!((b.e.term(), b.e.accepted()), (Term(0), None));
        assert_eq!(b.e.alive(b.now), vec![NodeId(1)]);
    }

    #[test]
    fn a_leader_at_the_end_of_the_term_space_does_not_panic() {
        let mut b = Bench::new(3, 3);
        b.input(from(2, leading(u64::MAX, 2)));
        b.chat(1, following(u64::MAX, Some(2)));
        b.input(Input::CaughtUp);
        let after = b.advance(ms(2000));
        assert_eq!(notable(&after), vec![]);
        assert_eq!(b.e.term(), Term(u64::MAX));
    }

    #[test]
    fn deadlines_stay_ahead_of_now_by_at_most_a_heartbeat() {
        let mut b = Bench::new(2, 3);
        b.chat(1, following(0, None));
        b.chat(3, following(0, None));
        for limit in (1..200).map(|i| ms(i * 37)) {
            b.advance(limit);
            let d = b.e.next_deadline();
            assert!(d > b.now - ms(1) && d <= b.now + ms(100), "deadline {:?} at {:?}", d - b.start, b.elapsed());
        }
        // An earlier `now` than before is treated as no time passing.
        let now = b.now;
        b.e.step(now - ms(500), Input::Tick);
        assert!(b.e.next_deadline() > now - ms(1));
    }

    /// Machines on a lossless, instant network, for timing whole failovers.
    struct Lan {
        start: Instant,
        now: Instant,
        nodes: Vec<Option<Election>>,
    }

    impl Lan {
        fn new(size: u32) -> Lan {
            let start = Instant::now();
            let nodes = (1..=size)
                .map(|id| {
                    Some(Election::new(ElectionConfig::new(NodeId(id), size, u64::from(id) * 77), start, Term(0)))
                })
                .collect();
            Lan { start, now: start, nodes }
        }

        fn deliver(&mut self, sender: usize, actions: Vec<Action>) {
            let mut queue: Vec<(usize, Action)> = actions.into_iter().map(|a| (sender, a)).collect();
            while let Some((sender, action)) = queue.pop() {
                let Action::Broadcast(msg) = action else {
                    continue;
                };
                for (i, slot) in self.nodes.iter_mut().enumerate() {
                    let Some(e) = slot.as_mut().filter(|_| i != sender) else {
                        continue;
                    };
                    let out = e.step(self.now, from(sender as u32 + 1, msg.clone()));
                    queue.extend(out.into_iter().map(|a| (i, a)));
                }
            }
        }

        /// Runs until `done` holds after some step, or `limit` since start.
        fn run(&mut self, limit: Duration, done: impl Fn(&Lan) -> bool) -> bool {
            while !done(self) {
                let next = self.nodes.iter().flatten().map(Election::next_deadline).min().unwrap();
                if next > self.start + limit {
                    return false;
                }
                self.now = next;
                for i in 0..self.nodes.len() {
                    let Some(e) = self.nodes[i].as_mut().filter(|e| e.next_deadline() <= next) else {
                        continue;
                    };
                    let out = e.step(next, Input::Tick);
                    self.deliver(i, out);
                }
            }
            true
        }

        fn leads_with_quorum(&self, id: u32) -> bool {
            self.nodes[id as usize - 1].as_ref().is_some_and(|e| e.role() == Role::Leader && e.has_quorum(self.now))
        }
    }

    #[test]
    fn a_killed_leader_is_replaced_within_the_timeout_and_its_jitter() {
        let mut lan = Lan::new(3);
        assert!(lan.run(ms(2000), |l| l.leads_with_quorum(3)), "node 3 leads at start");
        lan.run(ms(3000), |_| false);
        let killed = lan.now;
        lan.nodes[2] = None;
        assert!(lan.run(ms(5000), |l| l.leads_with_quorum(2)), "node 2 takes over");
        let failover = lan.now - killed;
        // The last heartbeat came up to 100 ms before the kill.
        assert!(failover <= ms(600 + 150 + 5), "failover took {failover:?}");
        println!("failover with default timers: {failover:?}");
    }
}
