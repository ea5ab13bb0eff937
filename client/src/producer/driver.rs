//! The producer's driver task: the one owner of the accumulator and the sticky partitioner.
//! It takes commands from the inbox, wakes for lingering batches, dispatches ready batches to
//! sender tasks (grouped by leader, within each broker's in-flight bound), and unmutes
//! partitions when their sender finishes. It stops once the inbox is closed and every batch is
//! answered. For an idempotent producer it also owns the sequences (`sequences.rs`): a batch
//! gets its sequence when taken, and a batch that failed for good bumps the epoch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::{Id, JoinSet};
use tracing::error;

use super::accumulator::{Accumulator, Batch};
use super::sender::Sender;
use super::sequences::Sequences;
use super::{Command, Pending, ProducerOptions};
use crate::partitioner::Sticky;
use crate::record_batch::ProducerFields;
use crate::topology::Topology;
use crate::TopicPartition;

type Acc = Accumulator<Pending, oneshot::Sender<()>>;

/// The driver's state besides the accumulator.
struct Driver {
    acc: Acc,
    sticky: Sticky,
    sender: Arc<Sender>,
    /// The idempotent producer's ids and sequences; `None` when idempotence is off.
    sequences: Option<Sequences>,
    tasks: JoinSet<Vec<TopicPartition>>,
    /// The batches each sender task carries, to unmute them when it ends however it ends.
    carried: HashMap<Id, Vec<(TopicPartition, u64)>>,
}

pub(crate) async fn run(
    mut inbox: mpsc::Receiver<Command>,
    topology: Arc<Topology>,
    options: ProducerOptions,
    sequences: Option<Sequences>,
) {
    let mut d = Driver {
        acc: Accumulator::new(options.batch_size, options.linger),
        sticky: Sticky::new(),
        sender: Arc::new(Sender::new(topology, options)),
        sequences,
        tasks: JoinSet::new(),
        carried: HashMap::new(),
    };
    let mut open = true;
    loop {
        let now = Instant::now();
        let linger = d.acc.next_deadline(now);
        tokio::select! {
            command = inbox.recv(), if open => match command {
                Some(command) => d.handle(command),
                None => {
                    open = false;
                    d.flush_all();
                }
            },
            Some(done) = d.tasks.join_next_with_id(), if !d.tasks.is_empty() => {
                let (id, failed) = match done {
                    Ok((id, failed)) => (id, failed),
                    Err(e) => {
                        error!(error = %e, "producer sender task failed");
                        (e.id(), vec![])
                    }
                };
                d.finished(id);
                if !failed.is_empty() {
                    d.reset_sequences().await;
                }
            }
            () = sleep_until(linger), if linger.is_some() => {}
        }
        d.dispatch(Instant::now());
        if !open && d.acc.is_empty() && d.tasks.is_empty() {
            return;
        }
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

    /// Sends what is ready: per leader, one request with every ready batch it leads, when the
    /// leader has a free in-flight slot. Batches whose leader is unknown go alone to a sender
    /// that refreshes the metadata first.
    fn dispatch(&mut self, now: Instant) {
        let mut by_broker: BTreeMap<Option<i32>, Vec<TopicPartition>> = BTreeMap::new();
        for tp in self.acc.ready(now) {
            let broker = self.sender.topology().route(&tp).map(|r| r.broker);
            by_broker.entry(broker).or_default().push(tp);
        }
        for (broker, tps) in by_broker {
            let slot = match broker {
                Some(b) => match self.sender.try_slot(b) {
                    Some(slot) => Some(slot),
                    None => continue, // wait for a request to this broker to finish
                },
                None => None,
            };
            let batches: Vec<(Batch<Pending>, ProducerFields)> = tps
                .iter()
                .filter_map(|tp| self.acc.take(tp))
                .map(|b| {
                    let fields = match &mut self.sequences {
                        Some(s) => s.assign(&b.tp, b.records.len()),
                        None => ProducerFields::NONE,
                    };
                    (b, fields)
                })
                .collect();
            for (b, _) in &batches {
                let partitions = b.records.first().map_or(1, |r| r.partitions);
                self.sticky
                    .batch_closed(&b.tp.topic, b.tp.partition, partitions);
            }
            let carried = batches.iter().map(|(b, _)| (b.tp.clone(), b.id)).collect();
            let sender = self.sender.clone();
            let handle = self
                .tasks
                .spawn(async move { sender.deliver(batches, slot).await });
            self.carried.insert(handle.id(), carried);
        }
    }

    /// A batch failed for good: its partition's next sequence is unknown, so every partition
    /// starts over in a new epoch (or, with the epoch spent, under a new producer id).
    async fn reset_sequences(&mut self) {
        let Some(s) = &mut self.sequences else {
            return;
        };
        if s.bump_epoch() {
            return;
        }
        match self.sender.topology().admin().init_producer_id().await {
            Ok((id, epoch)) => *s = Sequences::new(id, epoch),
            Err(e) => error!(error = %e, "no new producer id; idempotence is off from now"),
        }
    }

    /// Sender task `id` ended: unmute its partitions and wake finished flushes.
    fn finished(&mut self, id: Id) {
        for (tp, batch) in self.carried.remove(&id).unwrap_or_default() {
            for done in self.acc.completed(&tp, batch) {
                let _ = done.send(());
            }
        }
    }
}
