use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn tp(p: i32) -> TopicPartition {
    TopicPartition::new("t", p)
}

const ID: Identity = Identity {
    producer_id: 7,
    epoch: 0,
};

fn idempotent() -> Sequences {
    Sequences::new(Some(ID), MAX_IN_FLIGHT_IDEMPOTENT)
}

/// (epoch, base sequence) of a batch's fields.
fn es(f: ProducerFields) -> (i16, i32) {
    (f.producer_epoch, f.base_sequence)
}

fn lost(now: Instant) -> Answer {
    Answer::Failed {
        retry_at: Some(now),
    }
}

fn out_of_order(now: Instant) -> Answer {
    Answer::OutOfOrder {
        retry_at: Some(now),
    }
}

const GAVE_UP: Answer = Answer::Failed { retry_at: None };

/// Sends batches `ids` of `tp`, 2 records each, after confirming the partition with batch 0.
fn pipeline(s: &mut Sequences, tp: &TopicPartition, ids: std::ops::Range<u64>) {
    for id in ids {
        assert!(s.may_send(tp), "batch {id} may go");
        s.send(tp, id, 2);
    }
}

#[test]
fn each_partition_counts_its_own_records() {
    let mut s = idempotent();
    assert_eq!(es(s.send(&tp(0), 0, 3)), (0, 0));
    assert_eq!(es(s.send(&tp(1), 1, 2)), (0, 0));
    assert_eq!(s.answered(&tp(0), 0, Answer::Written), Verdict::Complete);
    let f = s.send(&tp(0), 2, 1);
    assert_eq!(
        (f.producer_id, f.producer_epoch, f.base_sequence),
        (7, 0, 3)
    );
    assert_eq!(es(s.send(&tp(0), 3, 5)), (0, 4));
}

#[test]
fn the_first_batch_of_an_epoch_goes_alone_then_up_to_five() {
    let mut s = idempotent();
    s.send(&tp(0), 0, 1);
    assert!(!s.may_send(&tp(0)), "unconfirmed: one at a time");
    assert!(s.may_send(&tp(1)), "partitions are independent");
    s.answered(&tp(0), 0, Answer::Written);
    pipeline(&mut s, &tp(0), 1..6);
    assert!(!s.may_send(&tp(0)), "five in flight");
    assert_eq!(s.stats().max_in_flight_per_partition, 5);
    s.answered(&tp(0), 3, Answer::Written);
    assert!(
        !s.may_send(&tp(0)),
        "batch 1 is unresolved: the window is still 1..=5"
    );
    s.answered(&tp(0), 1, Answer::Written);
    assert!(s.may_send(&tp(0)), "the window moved past 1");
}

/// The broker recognises a retry only among a producer's last five batches. Answers may come
/// back out of order, so batch 2's success must not let a sixth batch go while batch 1 is
/// unanswered: if 1's answer is then lost, its resend must still be among the last five.
#[test]
fn the_window_counts_from_the_oldest_unanswered_batch() {
    let now = Instant::now();
    let mut s = idempotent();
    s.send(&tp(0), 0, 2);
    s.answered(&tp(0), 0, Answer::Written);
    pipeline(&mut s, &tp(0), 1..6);
    for id in 2..6 {
        assert_eq!(s.answered(&tp(0), id, Answer::Written), Verdict::Complete);
        assert!(
            !s.may_send(&tp(0)),
            "batch 1 still holds the window ({id} answered)"
        );
    }
    assert_eq!(s.answered(&tp(0), 1, lost(now)), Verdict::Retry);
    let resend = s.resend(&tp(0), now).expect("batch 1 goes again");
    assert_eq!(resend.id, 1);
    assert_eq!(s.answered(&tp(0), 1, Answer::Written), Verdict::Complete);
    pipeline(&mut s, &tp(0), 6..11);
}

#[test]
fn a_lost_answer_mid_window_resends_in_order_one_at_a_time() {
    let now = Instant::now();
    let mut s = idempotent();
    s.send(&tp(0), 0, 2);
    s.answered(&tp(0), 0, Answer::Written);
    pipeline(&mut s, &tp(0), 1..6); // sequences 2, 4, 6, 8, 10
                                    // Batch 2's answer is lost; 3 and 4 reach the broker before 2's resend: refused.
    assert_eq!(s.answered(&tp(0), 2, lost(now)), Verdict::Retry);
    assert!(!s.may_send(&tp(0)), "nothing new while a batch waits");
    assert_eq!(s.answered(&tp(0), 1, Answer::Written), Verdict::Complete);
    assert_eq!(s.answered(&tp(0), 4, out_of_order(now)), Verdict::Retry);
    assert_eq!(s.answered(&tp(0), 3, out_of_order(now)), Verdict::Retry);
    assert!(s.resends_due(now).is_empty(), "batch 5 is still in flight");
    assert_eq!(s.answered(&tp(0), 5, out_of_order(now)), Verdict::Retry);

    for id in 2..6 {
        assert_eq!(s.resends_due(now), vec![tp(0)]);
        let r = s.resend(&tp(0), now).expect("due");
        assert_eq!(
            r,
            Resend {
                id,
                renumbered: None
            },
            "same bytes, in order"
        );
        assert!(s.resends_due(now).is_empty(), "one at a time");
        // New batches wait for the queue; they may follow its last batch (later sequences).
        assert_eq!(s.may_send(&tp(0)), id == 5);
        assert_eq!(s.answered(&tp(0), id, Answer::Written), Verdict::Complete);
    }
    assert!(s.may_send(&tp(0)), "the queue is empty: pipelining again");
    assert_eq!(es(s.send(&tp(0), 6, 1)), (0, 12));
    let stats = s.stats();
    assert_eq!((stats.resent_batches, stats.out_of_order_answers), (4, 3));
    assert_eq!(stats.epoch_bumps, 0);
}

#[test]
fn out_of_order_without_anything_ahead_fails_and_bumps_the_epoch() {
    let now = Instant::now();
    let mut s = idempotent();
    s.send(&tp(0), 0, 2);
    s.answered(&tp(0), 0, Answer::Written);
    s.send(&tp(0), 1, 2);
    s.send(&tp(1), 2, 2);
    assert_eq!(s.answered(&tp(0), 1, out_of_order(now)), Verdict::Fail);
    assert_eq!(s.stats().epoch_bumps, 1);
    assert!(s.may_send(&tp(0)), "nothing of epoch 0 left on tp 0");
    assert_eq!(es(s.send(&tp(0), 3, 1)), (1, 0));
    // tp 1 keeps its epoch-0 batch in flight: nothing of epoch 1 may overtake it.
    assert!(!s.may_send(&tp(1)));
    assert_eq!(s.answered(&tp(1), 2, Answer::Written), Verdict::Complete);
    assert!(s.may_send(&tp(1)));
    assert_eq!(es(s.send(&tp(1), 4, 1)), (1, 0));
}

#[test]
fn a_refusal_read_after_the_batch_ahead_was_written_is_retried() {
    let now = Instant::now();
    let mut s = idempotent();
    s.send(&tp(0), 0, 2);
    s.answered(&tp(0), 0, Answer::Written);
    s.send(&tp(0), 1, 2);
    s.send(&tp(0), 2, 2);
    // The broker took 2 before 1 (a gap: refused), then wrote 1; the client reads 1's
    // answer first, so when it reads 2's nothing is ahead of 2 any more.
    assert_eq!(s.answered(&tp(0), 1, Answer::Written), Verdict::Complete);
    assert_eq!(s.answered(&tp(0), 2, out_of_order(now)), Verdict::Retry);
    assert_eq!(s.resend(&tp(0), now).map(|r| r.id), Some(2));
    // Sent with nothing ahead, a second refusal has no explanation: it fails for good.
    assert_eq!(s.answered(&tp(0), 2, out_of_order(now)), Verdict::Fail);
    assert_eq!(s.stats().epoch_bumps, 1);
}

#[test]
fn later_batches_of_a_broken_partition_get_new_sequences_in_the_new_epoch() {
    let now = Instant::now();
    let mut s = idempotent();
    s.send(&tp(0), 0, 2);
    s.answered(&tp(0), 0, Answer::Written);
    pipeline(&mut s, &tp(0), 1..5); // sequences 2, 4, 6, 8
    s.send(&tp(1), 9, 2);

    // Batch 1 runs out of retries: its fate is unknown, and so is epoch 0's sequence.
    assert_eq!(s.answered(&tp(0), 1, GAVE_UP), Verdict::Fail);
    assert_eq!(s.stats().epoch_bumps, 1);
    // Batch 2 was refused (1 is not in the log); 3 lost its answer; 4 was refused too.
    assert_eq!(s.answered(&tp(0), 2, out_of_order(now)), Verdict::Retry);
    assert_eq!(s.answered(&tp(0), 3, lost(now)), Verdict::Retry);
    assert_eq!(s.answered(&tp(0), 4, out_of_order(now)), Verdict::Retry);

    // Batch 2 can only be written in the new epoch: the partition moves, renumbering 2..=4
    // from sequence 0; they go one at a time.
    let r = s.resend(&tp(0), now).unwrap();
    assert_eq!((r.id, r.renumbered.map(es)), (2, Some((1, 0))));
    assert!(s.resend(&tp(0), now).is_none());
    s.answered(&tp(0), 2, Answer::Written);
    let r = s.resend(&tp(0), now).unwrap();
    assert_eq!((r.id, r.renumbered.map(es)), (3, Some((1, 2))));
    s.answered(&tp(0), 3, Answer::Written);
    let r = s.resend(&tp(0), now).unwrap();
    assert_eq!((r.id, r.renumbered.map(es)), (4, Some((1, 4))));
    // Not yet confirmed... it is: batch 2 was written in epoch 1, so pipelining may resume
    // once the queue is empty.
    s.answered(&tp(0), 4, Answer::Written);
    assert_eq!(es(s.send(&tp(0), 5, 1)), (1, 6));
    assert_eq!(s.stats().renumbered_batches, 3);
    // The other partition finishes its epoch-0 batch before moving, from sequence 0.
    assert!(!s.may_send(&tp(1)));
    s.answered(&tp(1), 9, Answer::Written);
    assert_eq!(es(s.send(&tp(1), 10, 1)), (1, 0));
}

#[test]
fn a_lost_answer_behind_a_broken_batch_is_resent_in_the_old_epoch_first() {
    let now = Instant::now();
    let mut s = idempotent();
    s.send(&tp(0), 0, 2);
    s.answered(&tp(0), 0, Answer::Written);
    pipeline(&mut s, &tp(0), 1..4);
    assert_eq!(s.answered(&tp(0), 1, GAVE_UP), Verdict::Fail);
    // Batch 2 may have been written (if 1 was): it goes again with its epoch-0 bytes.
    assert_eq!(s.answered(&tp(0), 2, lost(now)), Verdict::Retry);
    assert_eq!(s.answered(&tp(0), 3, out_of_order(now)), Verdict::Retry);
    let r = s.resend(&tp(0), now).unwrap();
    assert_eq!(
        r,
        Resend {
            id: 2,
            renumbered: None
        }
    );
    // Refused: 1 was not written. Now both queued batches move to epoch 1.
    assert_eq!(s.answered(&tp(0), 2, out_of_order(now)), Verdict::Retry);
    let r = s.resend(&tp(0), now).unwrap();
    assert_eq!((r.id, r.renumbered.map(es)), (2, Some((1, 0))));
    s.answered(&tp(0), 2, Answer::Written);
    let r = s.resend(&tp(0), now).unwrap();
    assert_eq!((r.id, r.renumbered.map(es)), (3, Some((1, 2))));
}

#[test]
fn a_stale_partition_resends_its_queue_in_the_old_epoch_before_moving() {
    let now = Instant::now();
    let mut s = idempotent();
    for p in 0..2 {
        s.send(&tp(p), p as u64, 2);
        s.answered(&tp(p), p as u64, Answer::Written);
    }
    s.send(&tp(0), 2, 2);
    s.send(&tp(1), 3, 2);
    assert_eq!(s.answered(&tp(1), 3, lost(now)), Verdict::Retry);
    assert_eq!(s.answered(&tp(0), 2, GAVE_UP), Verdict::Fail); // epoch 1 from now
    let r = s.resend(&tp(1), now).unwrap();
    assert_eq!(
        r,
        Resend {
            id: 3,
            renumbered: None
        },
        "epoch 0 on tp 1 still"
    );
    s.answered(&tp(1), 3, Answer::Written);
    assert_eq!(es(s.send(&tp(1), 4, 1)), (1, 0));
}

#[test]
fn resends_wait_for_their_backoff() {
    let now = Instant::now();
    let later = now + Duration::from_millis(100);
    let mut s = idempotent();
    s.send(&tp(0), 0, 1);
    s.answered(&tp(0), 0, Answer::Written);
    s.send(&tp(0), 1, 1);
    s.answered(
        &tp(0),
        1,
        Answer::Failed {
            retry_at: Some(later),
        },
    );
    assert!(s.resends_due(now).is_empty());
    assert!(s.resend(&tp(0), now).is_none());
    assert_eq!(s.next_resend_at(now), Some(later));
    assert_eq!(s.resends_due(later), vec![tp(0)]);
    assert_eq!(s.resend(&tp(0), later).map(|r| r.id), Some(1));
    assert_eq!(s.next_resend_at(later), None);
}

#[test]
fn a_spent_epoch_asks_for_a_new_producer_id() {
    let now = Instant::now();
    let mut s = Sequences::new(
        Some(Identity {
            producer_id: 7,
            epoch: i16::MAX,
        }),
        5,
    );
    s.send(&tp(0), 0, 1);
    assert_eq!(s.answered(&tp(0), 0, out_of_order(now)), Verdict::Fail);
    assert!(s.wants_new_id());
    assert!(
        !s.may_send(&tp(0)),
        "nothing goes until the new id is there"
    );
    s.renew(Some(Identity {
        producer_id: 8,
        epoch: 0,
    }));
    let f = s.send(&tp(0), 1, 1);
    assert_eq!(
        (f.producer_id, f.producer_epoch, f.base_sequence),
        (8, 0, 0)
    );
    // Without a new id, idempotence is off from then on.
    s.answered(&tp(0), 1, GAVE_UP);
    s.renew(None);
    assert_eq!(s.send(&tp(0), 2, 1), ProducerFields::NONE);
}

#[test]
fn without_idempotence_retries_keep_their_order_and_nothing_is_numbered() {
    let now = Instant::now();
    let mut s = Sequences::new(None, 1);
    assert_eq!(s.send(&tp(0), 0, 3), ProducerFields::NONE);
    assert!(!s.may_send(&tp(0)), "one in flight by default");
    assert_eq!(s.answered(&tp(0), 0, lost(now)), Verdict::Retry);
    assert!(!s.may_send(&tp(0)));
    assert_eq!(s.resend(&tp(0), now).map(|r| r.id), Some(0));
    assert_eq!(s.answered(&tp(0), 0, GAVE_UP), Verdict::Fail);
    assert_eq!(s.stats().epoch_bumps, 0);
    assert!(s.may_send(&tp(0)));
    let mut five = Sequences::new(None, 5);
    pipeline(&mut five, &tp(0), 0..5);
    assert!(!five.may_send(&tp(0)));
}

#[test]
fn sequences_wrap_at_i32_max() {
    assert_eq!(wrapping_add(i32::MAX - 1, 1), i32::MAX);
    assert_eq!(wrapping_add(i32::MAX, 1), 0);
    assert_eq!(wrapping_add(i32::MAX - 1, 3), 1);
}

// A model of the whole loop: the bookkeeping drives sends and resends; a model broker with
// the rules of `keel_storage::producers` (duplicates among the last five batches, gaps
// refused, a new epoch from 0, an unknown producer at any sequence) takes the attempts in any
// order; answers come back in any order; attempts lose their request or their answer, give
// up, or fail at the client while the broker still holds them and writes them later (a cut
// connection whose request is being appended). Whatever happens, the log holds each batch at
// most once and in order, every completed batch is in it, and only batches that gave up
// fail.

/// What happens to the attempt taken off the wire.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Answered,
    LostRequest,
    LostAnswer,
    /// The client sees a failure at once; the broker takes the request later.
    Late,
    /// Reaches the broker, but the answer is lost and the batch's retries are spent.
    WrittenGaveUp,
    /// Never reaches the broker, and the batch's retries are spent.
    LostGaveUp,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Send,
    /// The broker takes an attempt off the wire.
    Deliver(usize, Fate),
    /// The client reads an answer.
    Answer(usize),
    /// The broker takes a late request.
    Late(usize),
    /// A millisecond passes (a lost attempt's backoff).
    Tick,
}

/// `late`: whether requests may be written after the client saw them fail.
fn step(late: bool) -> impl Strategy<Value = Step> {
    let fate = prop_oneof![
        12 => Just(Fate::Answered),
        2 => Just(Fate::LostRequest),
        2 => Just(Fate::LostAnswer),
        u32::from(late) => Just(Fate::Late),
        1 => Just(Fate::WrittenGaveUp),
        1 => Just(Fate::LostGaveUp),
    ];
    prop_oneof![
        2 => Just(Step::Send),
        6 => (any::<usize>(), fate).prop_map(|(i, f)| Step::Deliver(i, f)),
        6 => any::<usize>().prop_map(Step::Answer),
        1 => any::<usize>().prop_map(Step::Late),
        1 => Just(Step::Tick),
    ]
}

/// One batch as encoded for the wire.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    tp: i32,
    id: u64,
    fields: ProducerFields,
    records: usize,
}

/// A producer id's state on one partition of the model broker.
#[derive(Debug)]
struct Known {
    epoch: i16,
    /// (first sequence, last sequence, batch id) of its last five batches.
    batches: VecDeque<(i32, i32, u64)>,
}

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// Written now, or earlier by the batch with this id.
    Written(u64),
    OutOfOrder,
    Fenced,
}

#[derive(Debug, Default)]
struct Broker {
    /// By (partition, producer id).
    state: BTreeMap<(i32, i64), Known>,
    /// Batch ids in log order, per partition.
    log: BTreeMap<i32, Vec<u64>>,
}

impl Broker {
    fn produce(&mut self, a: Attempt) -> Reply {
        let f = a.fields;
        if f == ProducerFields::NONE {
            self.log.entry(a.tp).or_default().push(a.id);
            return Reply::Written(a.id);
        }
        let first = f.base_sequence;
        let last = first + a.records as i32 - 1;
        match self.state.get_mut(&(a.tp, f.producer_id)) {
            Some(k) if f.producer_epoch < k.epoch => return Reply::Fenced,
            Some(k) if f.producer_epoch > k.epoch => {
                if first != 0 {
                    return Reply::OutOfOrder;
                }
                k.epoch = f.producer_epoch;
                k.batches.clear();
            }
            Some(k) => {
                if let Some(dup) = k.batches.iter().find(|b| (b.0, b.1) == (first, last)) {
                    return Reply::Written(dup.2);
                }
                if k.batches.back().is_some_and(|b| b.1 + 1 != first) {
                    return Reply::OutOfOrder;
                }
            }
            None => {
                let k = Known {
                    epoch: f.producer_epoch,
                    batches: VecDeque::new(),
                };
                self.state.insert((a.tp, f.producer_id), k);
            }
        }
        let k = self.state.get_mut(&(a.tp, f.producer_id)).unwrap();
        k.batches.push_back((first, last, a.id));
        if k.batches.len() > 5 {
            k.batches.pop_front();
        }
        self.log.entry(a.tp).or_default().push(a.id);
        Reply::Written(a.id)
    }
}

/// The driver's side of the model.
struct Model {
    s: Sequences,
    broker: Broker,
    now: Instant,
    wire: Vec<Attempt>,
    /// Answers on their way back.
    replies: Vec<(Attempt, Answer)>,
    /// Requests the client has given up on that the broker has yet to take.
    late: Vec<Attempt>,
    /// Per partition, the batches not yet sent, oldest first: (id, records).
    unsent: BTreeMap<i32, VecDeque<(u64, usize)>>,
    /// The latest encoding of every batch sent.
    encoded: BTreeMap<u64, Attempt>,
    completed: Vec<u64>,
    failed: Vec<u64>,
    gave_up: Vec<u64>,
    next_producer_id: i64,
}

impl Model {
    fn new(s: Sequences, batches: &[(i32, usize)]) -> Self {
        let mut unsent: BTreeMap<i32, VecDeque<(u64, usize)>> = BTreeMap::new();
        for (id, &(p, records)) in batches.iter().enumerate() {
            unsent.entry(p).or_default().push_back((id as u64, records));
        }
        Self {
            s,
            broker: Broker::default(),
            now: Instant::now(),
            wire: Vec::new(),
            replies: Vec::new(),
            late: Vec::new(),
            unsent,
            encoded: BTreeMap::new(),
            completed: Vec::new(),
            failed: Vec::new(),
            gave_up: Vec::new(),
            next_producer_id: 8,
        }
    }

    /// One dispatch: due resends, then new batches while their partition allows.
    fn send(&mut self) {
        for t in self.s.resends_due(self.now) {
            let r = self.s.resend(&t, self.now).expect("due");
            let a = self.encoded.get_mut(&r.id).expect("sent before");
            if let Some(f) = r.renumbered {
                a.fields = f;
            }
            self.wire.push(*a);
        }
        for (&p, queue) in &mut self.unsent {
            while self.s.may_send(&tp(p)) {
                let Some((id, records)) = queue.pop_front() else {
                    break;
                };
                let fields = self.s.send(&tp(p), id, records);
                let a = Attempt {
                    tp: p,
                    id,
                    fields,
                    records,
                };
                self.encoded.insert(id, a);
                self.wire.push(a);
            }
        }
        for p in self.unsent.keys() {
            let wire = self.wire.iter().filter(|a| a.tp == *p).count();
            let replies = self.replies.iter().filter(|(a, _)| a.tp == *p).count();
            let n = wire + replies;
            assert!(n <= MAX_IN_FLIGHT_IDEMPOTENT, "{n} in flight on {p}");
        }
    }

    /// The broker takes attempt `pick` (as `fate` says); its answer goes on its way back.
    fn deliver(&mut self, pick: usize, fate: Fate) {
        if self.wire.is_empty() {
            return;
        }
        let a = self.wire.remove(pick % self.wire.len());
        let retry_at = Some(self.now);
        let backoff = Some(self.now + Duration::from_millis(1));
        let reply = match fate {
            Fate::LostRequest | Fate::LostGaveUp | Fate::Late => None,
            _ => Some(self.broker.produce(a)),
        };
        if let Some(Reply::Written(by)) = reply {
            assert_eq!(by, a.id, "a duplicate answer names the batch's own write");
        }
        let answer = match (fate, reply) {
            (Fate::LostRequest | Fate::LostAnswer, _) => Answer::Failed { retry_at: backoff },
            (Fate::Late, _) => {
                self.late.push(a);
                Answer::Failed { retry_at: backoff }
            }
            (Fate::WrittenGaveUp | Fate::LostGaveUp, _) => {
                self.gave_up.push(a.id);
                Answer::Failed { retry_at: None }
            }
            (_, Some(Reply::Written(_))) => Answer::Written,
            (_, Some(Reply::OutOfOrder)) => Answer::OutOfOrder { retry_at },
            (_, _) => Answer::Failed { retry_at: None },
        };
        self.replies.push((a, answer));
    }

    /// The broker takes late request `pick`; nobody hears the answer.
    fn late(&mut self, pick: usize) {
        if !self.late.is_empty() {
            let a = self.late.remove(pick % self.late.len());
            self.broker.produce(a);
        }
    }

    /// The client reads answer `pick`.
    fn answer(&mut self, pick: usize) {
        if self.replies.is_empty() {
            return;
        }
        let (a, answer) = self.replies.remove(pick % self.replies.len());
        match self.s.answered(&tp(a.tp), a.id, answer) {
            Verdict::Complete => self.completed.push(a.id),
            Verdict::Fail => self.failed.push(a.id),
            Verdict::Retry => {}
        }
        if self.s.wants_new_id() {
            self.s.renew(Some(Identity {
                producer_id: self.next_producer_id,
                epoch: 0,
            }));
            self.next_producer_id += 1;
        }
    }

    fn run(&mut self, steps: &[Step]) {
        for s in steps {
            match *s {
                Step::Send => self.send(),
                Step::Deliver(i, fate) => self.deliver(i, fate),
                Step::Answer(i) => self.answer(i),
                Step::Late(i) => self.late(i),
                Step::Tick => self.now += Duration::from_millis(1),
            }
        }
        self.drain(self.encoded.len() + self.unsent.values().map(VecDeque::len).sum::<usize>());
    }

    /// Delivers everything left without faults.
    fn drain(&mut self, batches: usize) {
        for _ in 0..20 * batches + 20 {
            self.now += Duration::from_millis(1);
            self.send();
            if !self.late.is_empty() {
                self.late(0);
            } else if !self.wire.is_empty() {
                self.deliver(0, Fate::Answered);
            } else if !self.replies.is_empty() {
                self.answer(0);
            } else {
                break;
            }
        }
    }

    /// `idempotent`: no batch twice in the log (without, a lost answer's retry writes it
    /// again, next to the first copy).
    fn check(&self, batches: usize, idempotent: bool) {
        for (p, log) in &self.broker.log {
            let ordered = match idempotent {
                true => log.windows(2).all(|w| w[0] < w[1]),
                false => log.windows(2).all(|w| w[0] <= w[1]),
            };
            assert!(
                ordered,
                "partition {p}: log {log:?} out of order or with a duplicate"
            );
        }
        for id in &self.completed {
            let present = self.broker.log.values().flatten().filter(|i| *i == id);
            let n = present.count();
            assert!(
                n == 1 || (!idempotent && n > 1),
                "completed batch {id} is in the log {n} times"
            );
        }
        let mut done: Vec<u64> = self.completed.iter().chain(&self.failed).copied().collect();
        done.sort_unstable();
        assert_eq!(
            done,
            (0..batches as u64).collect::<Vec<_>>(),
            "every batch answered once"
        );
        for id in &self.failed {
            assert!(
                self.gave_up.contains(id),
                "batch {id} failed without giving up"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_interleaving_writes_each_batch_at_most_once_in_order(
        batches in prop::collection::vec((0..2i32, 1..4usize), 1..24),
        steps in prop::collection::vec(step(true), 0..120),
    ) {
        let mut m = Model::new(idempotent(), &batches);
        m.run(&steps);
        m.check(batches.len(), true);
    }

    /// Without sequences, nothing can keep a request written late (after the client saw it
    /// fail and resent it) from landing behind later records: that case is left out.
    #[test]
    fn without_idempotence_one_in_flight_keeps_the_order(
        batches in prop::collection::vec((0..2i32, 1..4usize), 1..24),
        steps in prop::collection::vec(step(false), 0..120),
    ) {
        let mut m = Model::new(Sequences::new(None, 1), &batches);
        m.run(&steps);
        m.check(batches.len(), false);
    }
}
