//! Which batch of a partition may go next, and with which producer id, epoch and sequence:
//! the bookkeeping of batches in flight, without I/O (the driver executes what it decides).
//!
//! # Several batches in flight, in order
//!
//! A partition may have up to `max_in_flight` batches (5 with idempotence, Kafka's bound)
//! sent from its oldest unresolved one on, answered or not: brokers remember a producer's
//! last five batches per partition, so a retry must always find its first write among them.
//! Counting only unanswered batches is not enough here, because answers come back in any
//! order: after batch 2's answer, a sixth batch could be written while batch 1's answer is
//! lost, and batch 1's resend would be refused (seen in `t23` under a lossy proxy). Each new
//! batch gets the partition's next base
//! sequence. Answers can come back in any order, and a broker handles concurrent requests
//! concurrently, so a batch can reach the log before the one ahead of it and be refused with
//! `OUT_OF_ORDER_SEQUENCE`. The rules (Kafka's, `RecordAccumulator.shouldStopDrainBatches`):
//!
//! - A batch answered with a retriable error, or with `OUT_OF_ORDER_SEQUENCE` that an earlier
//!   batch explains, is **queued** in sequence order. An earlier batch explains the refusal
//!   when it is unanswered, queued or failed, or when it was unanswered as the refused batch
//!   was sent: answers come back in any order, so the earlier batch may have been written
//!   (and its answer read) after the broker refused the later one.
//! - A partition with a queued batch sends nothing new. Once its in-flight batches are
//!   answered, it resends the queue **one batch at a time**, oldest first, each only after
//!   the one before it was answered (sent together they could overtake each other again),
//!   and goes back to sending new batches when the queue is empty. A resend carries the same
//!   bytes (id, epoch, sequence), so a batch that was written already is answered with its
//!   first write's offset: a duplicate is a success.
//! - A partition's first batch of an epoch goes alone: a broker that does not know the
//!   producer accepts any sequence, so a second batch overtaking the first would be written
//!   ahead of it. Pipelining starts once one batch of the epoch was written.
//! - `OUT_OF_ORDER_SEQUENCE` that nothing explains means the broker lost the producer's
//!   state: the batch fails for good.
//!
//! A known gap, shared with Kafka: a broker that drops an idle producer's state
//! (`producer_id_expiration_ms`, a day by default) while that producer has several batches of
//! the partition on their way takes the first to arrive at any sequence, which may not be the
//! oldest.
//!
//! # A batch that fails for good (the epoch-bump rule, KIP-360)
//!
//! A batch fails for good when its retries or delivery timeout run out or its error is not
//! retriable. It may or may not be in the log, so its partition's sequence is broken: no later
//! sequence of this epoch will ever be accepted there. As Kafka's idempotent producer does
//! (KIP-360), the producer then **bumps its epoch** at once (a new producer id when the epoch
//! is spent, fetched by the driver), and every partition **restarts at sequence 0** under the
//! new epoch, each only once nothing of the old epoch is in flight or queued for it — a batch
//! of the new epoch written before an old one is retried would fence the old one, and reorder.
//!
//! The later batches of the partition that broke are **not failed**. Each keeps its course
//! under the old epoch until its fate is known: written (the failed batch was written after
//! all, its answer was only lost), or refused with `OUT_OF_ORDER_SEQUENCE` (it was not
//! written). Once the partition has nothing in flight and the oldest queued batch is one of
//! the refused ones, the partition moves to the new epoch and the queued batches get **new
//! sequences** from 0, in their order, and are sent again one at a time (the driver encodes
//! them again). A queued batch whose last try lost its answer is resent with its old fields
//! first, because it may have been written. Other partitions move to the new epoch without
//! renumbering anything: their queues, if any, are resent under the old epoch first, which
//! their brokers have not seen superseded.
//!
//! Without idempotence there are no sequences; the same queueing keeps a partition's retries
//! in order, but with more than one batch in flight a batch written after a failed one may
//! overtake it when that one is retried (as in Kafka), hence the default of one.
//!
//! Sequences wrap past `i32::MAX` to 0, as Kafka's broker expects.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::record_batch::ProducerFields;
use crate::TopicPartition;

/// The most batches of one partition an idempotent producer keeps in flight: brokers remember
/// a producer's last five batches per partition (Kafka's `NUM_BATCHES_TO_RETAIN`).
pub(crate) const MAX_IN_FLIGHT_IDEMPOTENT: usize = 5;

/// An idempotent producer's id and epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub producer_id: i64,
    pub epoch: i16,
}

/// How a sent batch was answered, as the driver classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Written, now or by an earlier try (a duplicate, answered with the first offset).
    Written,
    /// `OUT_OF_ORDER_SEQUENCE`: not written. `retry_at` is `None` once the batch's delivery
    /// timeout has passed.
    OutOfOrder { retry_at: Option<Instant> },
    /// Any other failure. `retry_at` is `None` when the error is not retriable or the batch's
    /// retries or delivery timeout are spent.
    Failed { retry_at: Option<Instant> },
}

/// What the driver does with an answered batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Answer its records with the offsets.
    Complete,
    /// Answer its records with the error.
    Fail,
    /// Keep it: it is queued and comes back from [`Sequences::resend`].
    Retry,
}

/// A queued batch to send again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resend {
    pub id: u64,
    /// The batch's new header fields when its partition moved to a new epoch: it must be
    /// encoded again. `None`: send the same bytes.
    pub renumbered: Option<ProducerFields>,
}

/// Counters of what the producer's batches went through, for tests and monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// The most batches of one partition that were in flight at once.
    pub max_in_flight_per_partition: usize,
    /// Batches sent again after a retriable failure or an out-of-order refusal.
    pub resent_batches: u64,
    /// `OUT_OF_ORDER_SEQUENCE` answers explained by an earlier batch still on its way (queued
    /// and resent, not failed).
    pub out_of_order_answers: u64,
    /// Times the producer started a new epoch (or took a new producer id) after a batch
    /// failed for good.
    pub epoch_bumps: u64,
    /// Batches given new sequences in a new epoch, behind a batch that failed for good.
    pub renumbered_batches: u64,
}

/// See the module doc.
#[derive(Debug)]
pub(crate) struct Sequences {
    /// The producer's current id and epoch; `None` without idempotence.
    identity: Option<Identity>,
    /// The epoch is spent: the driver must fetch a new producer id ([`Sequences::renew`]).
    wants_new_id: bool,
    max_in_flight: usize,
    partitions: BTreeMap<TopicPartition, Partition>,
    stats: ProducerStats,
}

#[derive(Debug)]
struct Partition {
    /// The id and epoch its sequences belong to; older than the producer's after a bump, until
    /// the partition moves.
    identity: Option<Identity>,
    next: i32,
    /// Batches sent and not yet answered, by batch id (ids grow with sequences).
    in_flight: BTreeMap<u64, Sent>,
    /// Batches to send again, by batch id (so in sequence order).
    queued: BTreeMap<u64, Queued>,
    /// A batch of `identity` was written here (until then, one batch at a time).
    confirmed: bool,
    /// The first batch of `identity` that failed for good.
    broken_at: Option<u64>,
    /// Batches written while an older batch of the partition was still unresolved (in flight
    /// or queued); they count towards the window (see [`Partition::window`]).
    done_ahead: std::collections::BTreeSet<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    records: usize,
    /// An earlier batch of the partition was unanswered when this one was sent.
    behind: bool,
}

#[derive(Debug)]
struct Queued {
    records: usize,
    not_before: Instant,
    /// Its last answer was `OUT_OF_ORDER_SEQUENCE`: known not to be written.
    refused: bool,
    /// New fields given when the partition moved to a new epoch.
    renumbered: Option<ProducerFields>,
}

impl Sequences {
    /// `identity` is `None` without idempotence. `max_in_flight` is per partition.
    pub fn new(identity: Option<Identity>, max_in_flight: usize) -> Self {
        Self {
            identity,
            wants_new_id: false,
            max_in_flight: max_in_flight.max(1),
            partitions: BTreeMap::new(),
            stats: ProducerStats::default(),
        }
    }

    pub fn stats(&self) -> ProducerStats {
        self.stats
    }

    /// Whether `tp` may send a new batch now (see the module doc).
    pub fn may_send(&self, tp: &TopicPartition) -> bool {
        if self.wants_new_id {
            return false;
        }
        let Some(p) = self.partitions.get(tp) else {
            return true;
        };
        if !p.queued.is_empty() {
            return false;
        }
        let alone = p.identity != self.identity || (p.identity.is_some() && !p.confirmed);
        let limit = if alone { 1 } else { self.max_in_flight };
        p.window() < limit
    }

    /// Records batch `id` of `tp` (`records` records, the partition's next batch) as sent
    /// and returns its header fields. Call only when [`Sequences::may_send`] allows it.
    pub fn send(&mut self, tp: &TopicPartition, id: u64, records: usize) -> ProducerFields {
        let current = self.identity;
        let p = self
            .partitions
            .entry(tp.clone())
            .or_insert_with(|| Partition::new(current));
        if p.identity != current && p.is_idle() {
            p.restart(current);
        }
        let fields = p.assign(records);
        p.put_in_flight(id, records);
        self.note_in_flight(tp);
        fields
    }

    /// The partitions whose oldest queued batch may be sent again at `now`.
    pub fn resends_due(&self, now: Instant) -> Vec<TopicPartition> {
        if self.wants_new_id {
            return Vec::new();
        }
        self.partitions
            .iter()
            .filter(|(_, p)| p.resend_at().is_some_and(|at| at <= now))
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// The earliest time after `now` a queued batch becomes due.
    pub fn next_resend_at(&self, now: Instant) -> Option<Instant> {
        self.partitions
            .values()
            .filter_map(Partition::resend_at)
            .filter(|&at| at > now)
            .min()
    }

    /// Takes `tp`'s oldest queued batch to send again, if it is due at `now`. When only the
    /// new epoch can take it (see the module doc), the partition moves there first and every
    /// queued batch gets new fields.
    pub fn resend(&mut self, tp: &TopicPartition, now: Instant) -> Option<Resend> {
        if self.wants_new_id {
            return None;
        }
        let current = self.identity;
        let p = self.partitions.get_mut(tp)?;
        if p.resend_at().is_none_or(|at| at > now) {
            return None;
        }
        if p.identity != current && p.must_renumber() {
            self.stats.renumbered_batches += p.restart(current);
        }
        let (id, q) = p.queued.pop_first()?;
        p.put_in_flight(id, q.records);
        self.stats.resent_batches += 1;
        self.note_in_flight(tp);
        Some(Resend {
            id,
            renumbered: q.renumbered,
        })
    }

    /// Batch `id` of `tp` was answered; what to do with it (see the module doc).
    pub fn answered(&mut self, tp: &TopicPartition, id: u64, answer: Answer) -> Verdict {
        let Some(p) = self.partitions.get_mut(tp) else {
            return Verdict::Fail;
        };
        let Some(sent) = p.in_flight.remove(&id) else {
            return Verdict::Fail;
        };
        let records = sent.records;
        let verdict = match answer {
            Answer::Written => {
                p.confirmed = true;
                p.done_ahead.insert(id);
                Verdict::Complete
            }
            Answer::Failed { retry_at: Some(at) } => {
                p.queue(id, records, at, false);
                Verdict::Retry
            }
            Answer::OutOfOrder { retry_at: Some(at) } if sent.behind || p.explains_gap(id) => {
                p.queue(id, records, at, true);
                self.stats.out_of_order_answers += 1;
                Verdict::Retry
            }
            Answer::Failed { retry_at: None } | Answer::OutOfOrder { .. } => {
                self.failed_for_good(tp, id);
                Verdict::Fail
            }
        };
        if let Some(p) = self.partitions.get_mut(tp) {
            p.prune_done_ahead();
        }
        verdict
    }

    /// True when the epoch is spent and the driver must fetch a new producer id.
    pub fn wants_new_id(&self) -> bool {
        self.wants_new_id
    }

    /// The new producer id (epoch 0) the driver fetched, or `None` when it could not get one:
    /// idempotence is then off for new sends.
    pub fn renew(&mut self, identity: Option<Identity>) {
        self.identity = identity;
        self.wants_new_id = false;
        self.stats.epoch_bumps += 1;
    }

    /// Batch `id` of `tp` will not be written by this producer: its partition's sequence is
    /// broken under its epoch, so the producer moves to a new one (once per broken epoch).
    fn failed_for_good(&mut self, tp: &TopicPartition, id: u64) {
        let Some(p) = self.partitions.get_mut(tp) else {
            return;
        };
        if p.identity.is_none() {
            return;
        }
        p.broken_at = Some(p.broken_at.map_or(id, |b| b.min(id)));
        if p.identity == self.identity && !self.wants_new_id {
            self.bump();
        }
    }

    fn bump(&mut self) {
        let Some(current) = self.identity else {
            return;
        };
        match current.epoch.checked_add(1) {
            Some(epoch) => {
                self.identity = Some(Identity { epoch, ..current });
                self.stats.epoch_bumps += 1;
            }
            None => self.wants_new_id = true,
        }
    }

    fn note_in_flight(&mut self, tp: &TopicPartition) {
        let n = self.partitions.get(tp).map_or(0, |p| p.in_flight.len());
        let max = &mut self.stats.max_in_flight_per_partition;
        *max = (*max).max(n);
    }
}

impl Partition {
    fn new(identity: Option<Identity>) -> Self {
        Self {
            identity,
            next: 0,
            in_flight: BTreeMap::new(),
            queued: BTreeMap::new(),
            confirmed: false,
            broken_at: None,
            done_ahead: std::collections::BTreeSet::new(),
        }
    }

    /// The oldest batch still unresolved: in flight or queued.
    fn oldest_unresolved(&self) -> Option<u64> {
        let flying = self.in_flight.keys().next();
        let queued = self.queued.keys().next();
        flying.into_iter().chain(queued).min().copied()
    }

    /// Batches from the oldest unresolved one on, answered or not. A broker keeps the last
    /// five batches of a producer to recognise a retry; if more than five were written from
    /// the oldest unresolved batch on, a resend of it would no longer be recognised and would
    /// be refused as out of order. Answers of one connection may come back in any order (a
    /// broker serves a producer's requests concurrently), so a later batch's success does not
    /// resolve an earlier one: the window, not the in-flight count, is bounded.
    fn window(&self) -> usize {
        match self.oldest_unresolved() {
            None => 0,
            Some(oldest) => {
                self.in_flight.len() + self.queued.len() + self.done_ahead.range(oldest..).count()
            }
        }
    }

    /// Forgets written batches no unresolved batch precedes.
    fn prune_done_ahead(&mut self) {
        match self.oldest_unresolved() {
            None => self.done_ahead.clear(),
            Some(oldest) => self.done_ahead.retain(|id| *id > oldest),
        }
    }

    fn put_in_flight(&mut self, id: u64, records: usize) {
        let behind = !self.in_flight.is_empty();
        self.in_flight.insert(id, Sent { records, behind });
    }

    fn is_idle(&self) -> bool {
        self.in_flight.is_empty() && self.queued.is_empty()
    }

    /// The fields of the next batch of `records` records; moves the sequence past them.
    fn assign(&mut self, records: usize) -> ProducerFields {
        let Some(identity) = self.identity else {
            return ProducerFields::NONE;
        };
        let base_sequence = self.next;
        self.next = wrapping_add(base_sequence, i32::try_from(records).unwrap_or(i32::MAX));
        ProducerFields {
            producer_id: identity.producer_id,
            producer_epoch: identity.epoch,
            base_sequence,
        }
    }

    /// Moves to `identity` at sequence 0; queued batches get new fields in their order.
    /// Returns how many did.
    fn restart(&mut self, identity: Option<Identity>) -> u64 {
        self.identity = identity;
        self.next = 0;
        self.confirmed = false;
        self.broken_at = None;
        let counts: Vec<(u64, usize)> =
            self.queued.iter().map(|(id, q)| (*id, q.records)).collect();
        for &(id, records) in &counts {
            let fields = self.assign(records);
            if let Some(q) = self.queued.get_mut(&id) {
                q.renumbered = Some(fields);
                q.refused = false;
            }
        }
        counts.len() as u64
    }

    /// When the oldest queued batch may go: nothing of the partition is in flight.
    fn resend_at(&self) -> Option<Instant> {
        if !self.in_flight.is_empty() {
            return None;
        }
        self.queued.values().next().map(|q| q.not_before)
    }

    /// The oldest queued batch was refused behind a batch that failed for good: no sequence
    /// of this epoch can take it.
    fn must_renumber(&self) -> bool {
        let Some((id, q)) = self.queued.first_key_value() else {
            return false;
        };
        q.refused && self.broken_at.is_some_and(|b| b < *id)
    }

    /// Whether an `OUT_OF_ORDER_SEQUENCE` for batch `id` is explained by an earlier batch
    /// that is unanswered, queued, or failed for good now (see also [`Sent::behind`]).
    fn explains_gap(&self, id: u64) -> bool {
        self.in_flight.range(..id).next().is_some()
            || self.queued.range(..id).next().is_some()
            || self.broken_at.is_some_and(|b| b < id)
    }

    fn queue(&mut self, id: u64, records: usize, not_before: Instant, refused: bool) {
        let q = Queued {
            records,
            not_before,
            refused,
            renumbered: None,
        };
        self.queued.insert(id, q);
    }
}

/// `seq + n` wrapping past `i32::MAX` to 0.
fn wrapping_add(seq: i32, n: i32) -> i32 {
    let sum = i64::from(seq) + i64::from(n);
    (sum % (i64::from(i32::MAX) + 1)) as i32
}

#[cfg(test)]
#[path = "sequences_test.rs"]
mod tests;
