//! The producer's driver task: the one owner of the accumulator, the sticky partitioner and
//! the in-flight bookkeeping (`sequences.rs`). It takes commands from the inbox, wakes for
//! lingering batches and due retries, and dispatches: per leader with a free request slot,
//! one request carrying the next batch of every partition that may send (a queued retry
//! first, else a new batch), repeated while anything may go, so that a partition can have
//! several batches in flight in successive requests. Sender tasks hand every batch back with
//! its outcome; the driver completes it, fails it, or queues it for a retry, as the
//! bookkeeping says. Keeping all retries here, rather than in the sender tasks, is what lets
//! one place order a partition's resends across requests. It stops once the inbox is closed
//! and every batch is answered.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::{Id, JoinError, JoinSet};
use tracing::{debug, error};

use super::accumulator::Accumulator;
use super::sender::{Answered, Outgoing, Sender, Written};
use super::sequences::{Answer, Identity, ProducerStats, Sequences, Verdict};
use super::{Command, Pending, ProducerOptions};
use crate::partitioner::Sticky;
use crate::topology::{Route, Topology};
use crate::{Error, ErrorCode, TopicPartition};

type Acc = Accumulator<Pending, oneshot::Sender<()>>;

/// What a dispatch round sends to one broker (`None`: partitions without a known leader).
type Requests = BTreeMap<Option<i32>, (Option<Route>, Vec<(TopicPartition, bool)>)>;

/// The driver's state besides the accumulator.
struct Driver {
    acc: Acc,
    sticky: Sticky,
    sender: Arc<Sender>,
    options: ProducerOptions,
    seq: Sequences,
    /// Batches queued for a retry, by batch id; `seq` says when each goes.
    queued: HashMap<u64, Outgoing>,
    tasks: JoinSet<Vec<Answered>>,
    /// The batches each sender task carries, to settle them if the task panics.
    carried: HashMap<Id, Vec<(TopicPartition, u64)>>,
    /// Published for [`super::Producer::stats`].
    stats: Arc<Mutex<ProducerStats>>,
}

pub(crate) async fn run(
    mut inbox: mpsc::Receiver<Command>,
    topology: Arc<Topology>,
    options: ProducerOptions,
    seq: Sequences,
    stats: Arc<Mutex<ProducerStats>>,
) {
    let mut d = Driver {
        acc: Accumulator::new(options.batch_size, options.linger),
        sticky: Sticky::new(),
        sender: Arc::new(Sender::new(topology, options.clone())),
        options,
        seq,
        queued: HashMap::new(),
        tasks: JoinSet::new(),
        carried: HashMap::new(),
        stats,
    };
    let mut open = true;
    loop {
        let now = Instant::now();
        let wake = earliest(d.acc.next_deadline(now), d.seq.next_resend_at(now));
        tokio::select! {
            command = inbox.recv(), if open => match command {
                Some(command) => d.handle(command),
                None => {
                    open = false;
                    d.flush_all();
                }
            },
            Some(done) = d.tasks.join_next_with_id(), if !d.tasks.is_empty() => {
                d.finished(done).await;
            }
            () = sleep_until(wake), if wake.is_some() => {}
        }
        d.dispatch(Instant::now());
        d.publish_stats();
        if !open && d.acc.is_empty() && d.tasks.is_empty() {
            return;
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

impl Driver {
    fn handle(&mut self, command: Command) {
        match command {
            Command::Append(pending) => self.append(pending),
            Command::Flush(done) => {
                if let Some(done) = self.acc.flush(done) {
                    let _ = done.send(());
                }
            }
        }
    }

    fn append(&mut self, pending: Pending) {
        let topic = pending.record.topic.clone();
        let partition = match pending.record.partition {
            Some(p) => p,
            None => self.sticky.partition(&topic, pending.partitions),
        };
        let partitions = pending.partitions;
        let size = pending.record.estimated_size();
        let tp = TopicPartition::new(topic, partition);
        if self.acc.append(&tp, pending, size, Instant::now()) {
            self.sticky.batch_closed(&tp.topic, partition, partitions);
        }
    }

    /// Closes every open batch so that it is sent without lingering (the inbox closed).
    fn flush_all(&mut self) {
        let (done, _) = oneshot::channel();
        let _ = self.acc.flush(done);
    }

    /// Sends what may go, in rounds of one request per leader with a free slot (see the
    /// module doc).
    fn dispatch(&mut self, now: Instant) {
        while self.dispatch_round(now) {}
    }

    /// One round; false when it sent nothing.
    fn dispatch_round(&mut self, now: Instant) -> bool {
        let generation = self.sender.topology().generation();
        let mut requests: Requests = BTreeMap::new();
        let resends = self.seq.resends_due(now).into_iter().map(|tp| (tp, true));
        let ready = self.acc.ready(now).into_iter();
        let new = ready
            .filter(|tp| self.seq.may_send(tp))
            .map(|tp| (tp, false));
        for (tp, resend) in resends.chain(new).collect::<Vec<_>>() {
            let route = self.sender.topology().route(&tp);
            let entry = requests.entry(route.as_ref().map(|r| r.broker));
            entry.or_insert((route, vec![])).1.push((tp, resend));
        }
        let mut sent = false;
        for (broker, (route, tps)) in requests {
            let slot = match broker {
                Some(b) => match self.sender.try_slot(b) {
                    Some(slot) => Some(slot),
                    None => continue, // wait for a request to this broker to finish
                },
                None => None,
            };
            let batches: Vec<Outgoing> = tps
                .into_iter()
                .filter_map(|(tp, resend)| match resend {
                    true => self.take_resend(&tp, now),
                    false => self.take_new(&tp),
                })
                .collect();
            if batches.is_empty() {
                continue;
            }
            sent = true;
            let carried = batches.iter().map(|o| (o.tp.clone(), o.id)).collect();
            let sender = self.sender.clone();
            let handle = self
                .tasks
                .spawn(async move { sender.attempt(route, generation, batches, slot).await });
            self.carried.insert(handle.id(), carried);
        }
        sent
    }

    /// `tp`'s next batch from the accumulator, numbered and encoded.
    fn take_new(&mut self, tp: &TopicPartition) -> Option<Outgoing> {
        let batch = self.acc.take(tp)?;
        let partitions = batch.records.first().map_or(1, |r| r.partitions);
        self.sticky
            .batch_closed(&tp.topic, tp.partition, partitions);
        let fields = self.seq.send(tp, batch.id, batch.records.len());
        let mut o = Outgoing::new(batch, self.options.delivery_timeout);
        match o.encode(self.options.compression, fields) {
            Ok(()) => Some(o),
            Err(e) => {
                self.give_up(o, e);
                None
            }
        }
    }

    /// `tp`'s oldest queued batch, encoded again when it got new sequences.
    fn take_resend(&mut self, tp: &TopicPartition, now: Instant) -> Option<Outgoing> {
        let resend = self.seq.resend(tp, now)?;
        let Some(mut o) = self.queued.remove(&resend.id) else {
            error!(
                batch = resend.id,
                "a queued batch is missing; the bookkeeping drops it"
            );
            let gave_up = Answer::Failed { retry_at: None };
            self.seq.answered(tp, resend.id, gave_up);
            return None;
        };
        debug!(topic = %tp.topic, partition = tp.partition, batch = o.id, renumbered = resend.renumbered.is_some(), "resending batch");
        if let Some(fields) = resend.renumbered {
            if let Err(e) = o.encode(self.options.compression, fields) {
                self.give_up(o, e);
                return None;
            }
        }
        Some(o)
    }

    /// A batch that cannot be sent: it fails for good.
    fn give_up(&mut self, o: Outgoing, e: Error) {
        let gave_up = Answer::Failed { retry_at: None };
        self.seq.answered(&o.tp, o.id, gave_up);
        let id = o.id;
        o.fail(e);
        self.settled(id);
    }

    /// A sender task ended: settle every batch it carried, then fetch a new producer id if
    /// the epoch is spent.
    async fn finished(&mut self, done: Result<(Id, Vec<Answered>), JoinError>) {
        match done {
            Ok((id, answered)) => {
                self.carried.remove(&id);
                for (o, result) in answered {
                    self.answered(o, result);
                }
            }
            Err(e) => {
                // The records' futures were dropped with the task: they see `Closed`.
                error!(error = %e, "producer sender task failed");
                for (tp, batch) in self.carried.remove(&e.id()).unwrap_or_default() {
                    self.seq
                        .answered(&tp, batch, Answer::Failed { retry_at: None });
                    self.settled(batch);
                }
            }
        }
        if self.seq.wants_new_id() {
            self.renew_producer_id().await;
        }
    }

    /// Completes, fails or queues one answered batch.
    fn answered(&mut self, mut o: Outgoing, result: Result<Written, Error>) {
        let answer = self.classify(&o, &result, Instant::now());
        match (self.seq.answered(&o.tp, o.id, answer), result) {
            (Verdict::Retry, Err(e)) => {
                debug!(topic = %o.tp.topic, partition = o.tp.partition, batch = o.id, retries = o.retries, error = %e, "retrying batch");
                if !matches!(answer, Answer::OutOfOrder { .. }) {
                    o.retries += 1;
                }
                self.queued.insert(o.id, o);
            }
            (_, Ok(written)) => {
                let id = o.id;
                o.complete(written);
                self.settled(id);
            }
            (_, Err(e)) => {
                let id = o.id;
                o.fail(e);
                self.settled(id);
            }
        }
    }

    /// How `result` counts for the bookkeeping: when a failed batch may be tried again
    /// (retriable error, retries and delivery time left; an out-of-order refusal needs only
    /// time and waits no backoff: it is not the broker's trouble).
    fn classify(&self, o: &Outgoing, result: &Result<Written, Error>, now: Instant) -> Answer {
        let in_time = now < o.deadline;
        match result {
            Ok(_) => Answer::Written,
            Err(e) if e.api_code() == Some(ErrorCode::OutOfOrderSequence) => Answer::OutOfOrder {
                retry_at: in_time.then_some(now),
            },
            Err(e) => {
                let retry = e.is_retriable() && in_time && o.retries < self.options.retries;
                let backoff = self.options.backoff_for(o.retries);
                Answer::Failed {
                    retry_at: retry.then(|| now + backoff),
                }
            }
        }
    }

    /// Batch `id` will not be sent again: wake the flushes it held up.
    fn settled(&mut self, id: u64) {
        for done in self.acc.completed(id) {
            let _ = done.send(());
        }
    }

    /// The epoch is spent: a new producer id, or idempotence off when none can be had.
    async fn renew_producer_id(&mut self) {
        let identity = match self.sender.topology().admin().init_producer_id().await {
            Ok((producer_id, epoch)) => Some(Identity { producer_id, epoch }),
            Err(e) => {
                error!(error = %e, "no new producer id; idempotence is off from now");
                None
            }
        };
        self.seq.renew(identity);
    }

    fn publish_stats(&self) {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner) = self.seq.stats();
    }
}
