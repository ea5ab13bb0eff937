//! A partition log: an append-only sequence of record batches in segment files, with a sparse
//! offset index and a time index in the data directory's [`OffsetIndex`].
//!
//! # Life of a batch
//! 1. [`Log::append`] (leader) checks the batch ([`batch::validate`]: CRC, length, codec,
//!    `max.message.bytes`) before anything changes, stamps the base offset and the leader epoch
//!    (both outside the CRC, so the produced bytes stay as they were otherwise), rolls the
//!    segment if it is full or old, and writes the batch with one `write`. Followers use
//!    [`Log::append_replicated`], which keeps the leader's offsets.
//! 2. Every `index.interval.bytes` a batch gets an offset-index entry and, when the log's
//!    greatest timestamp grew, a time-index entry.
//! 3. [`Log::flush`] (or the split [`Log::begin_flush`] / [`FlushJob::sync`] /
//!    [`Log::finish_flush`] for group commit off the caller's thread) fsyncs everything written
//!    so far and moves the *recovery point*: everything before it is durable and indexed.
//! 4. [`Log::read`] finds the batch holding an offset with the index and returns whole stored
//!    batches, byte for byte, below an upper bound (the high watermark).
//!
//! # Recovery
//! [`Log::close`] flushes and writes a clean-shutdown checkpoint; an open that finds it trusts
//! the files and the index and reads no segment data. Without it (a crash), the open rescans
//! only what lies after the recovery point: it verifies each batch's CRC and offset, cuts the
//! file at the first torn or corrupt batch, drops later segments, and re-indexes the tail.
//!
//! # Producer state
//! The log keeps the idempotent producers' state ([`crate::producers`]): [`Log::append`]
//! checks each batch against it (a duplicate is answered with its original offsets and not
//! written; a gap or a stale epoch is refused) and every write records into it. Snapshots
//! (`producers/<log end>` checkpoints, the latest [`PRODUCER_SNAPSHOTS_KEPT`]) are taken by
//! [`Log::snapshot_producers`] and at close; an open or a truncation starts from the latest
//! snapshot at or below the log end and reads only the batch headers after it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::batch::{self, BatchHeader};
use crate::config::LogConfig;
use crate::epochs::{EpochCache, EpochEntry};
use crate::error::{LogError, StorageError, Subject, Verb};
use crate::index::{IndexOp, OffsetEntry, OffsetIndex, TimeEntry};
use crate::producers::{ProducerStates, SequenceCheck};
use crate::segment::{self, Segment};
use crate::Offset;

/// Milliseconds since the Unix epoch; injectable so tests control segment age and retention.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

const META_RECOVERY: &str = "recovery";
const META_CLEAN: &str = "clean";
const META_LOG_START: &str = "log_start";
const META_SEGMENT: &str = "segment/";
const META_EPOCH: &str = "epoch/";
const META_HW: &str = "high_watermark";
const META_PRODUCERS: &str = "producers/";

/// Producer-state snapshots kept per log: the latest serves an open, an older one a
/// truncation that cuts below the latest.
pub const PRODUCER_SNAPSHOTS_KEPT: usize = 2;

/// Where appended data is known to be durable: the offset, and the segment and position that
/// hold it. `max_timestamp` is the segment's greatest timestamp before that position, so
/// recovery need not rescan the segment's head to learn it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlushPoint {
    offset: Offset,
    segment: Offset,
    position: u64,
    max_timestamp: Option<i64>,
}

impl FlushPoint {
    fn encode(&self) -> Vec<u8> {
        encode_i64s(&[
            self.offset,
            self.segment,
            self.position as i64,
            self.max_timestamp.unwrap_or(i64::MIN),
            self.max_timestamp.is_some() as i64,
        ])
    }

    fn decode(bytes: &[u8]) -> Option<FlushPoint> {
        let [offset, segment, position, ts, has_ts] = decode_i64s(bytes)?;
        Some(FlushPoint {
            offset,
            segment,
            position: position as u64,
            max_timestamp: (has_ts == 1).then_some(ts),
        })
    }
}

/// The in-memory state a write changes before its index entries are stored.
struct BeforeWrite {
    next_offset: Offset,
    segment_max_timestamp: Option<i64>,
    unindexed_bytes: u64,
    max_timestamp: Option<i64>,
    last_time_entry: Option<i64>,
    /// A copy of the epoch cache when the write starts a new epoch.
    epochs: Option<EpochCache>,
}

/// The facts of a segment that an open needs without reading the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SegmentMeta {
    created_ms: i64,
    /// Known once the segment is closed (rolled).
    closed: Option<(Offset, Option<i64>)>,
}

impl SegmentMeta {
    fn encode(&self) -> Vec<u8> {
        match self.closed {
            None => encode_i64s(&[self.created_ms]),
            Some((next, ts)) => encode_i64s(&[
                self.created_ms,
                next,
                ts.unwrap_or(i64::MIN),
                ts.is_some() as i64,
            ]),
        }
    }

    fn decode(bytes: &[u8]) -> Option<SegmentMeta> {
        if let Some([created_ms]) = decode_i64s(bytes) {
            return Some(SegmentMeta {
                created_ms,
                closed: None,
            });
        }
        let [created_ms, next, ts, has_ts] = decode_i64s(bytes)?;
        Some(SegmentMeta {
            created_ms,
            closed: Some((next, (has_ts == 1).then_some(ts))),
        })
    }
}

fn encode_i64s(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn decode_i64s<const N: usize>(bytes: &[u8]) -> Option<[i64; N]> {
    if bytes.len() != N * 8 {
        return None;
    }
    let mut out = [0i64; N];
    for (slot, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *slot = i64::from_be_bytes(chunk.try_into().ok()?);
    }
    Some(out)
}

fn segment_key(base: Offset) -> String {
    format!("{META_SEGMENT}{base:020}")
}

fn producers_key(offset: Offset) -> String {
    format!("{META_PRODUCERS}{offset:020}")
}

fn epoch_key(epoch: i32) -> String {
    format!("{META_EPOCH}{epoch:010}")
}

fn put_epoch(e: EpochEntry) -> IndexOp {
    IndexOp::PutMeta {
        key: epoch_key(e.epoch),
        value: encode_i64s(&[e.start_offset]),
    }
}

fn delete_epochs(removed: &[EpochEntry], ops: &mut Vec<IndexOp>) {
    ops.extend(removed.iter().map(|e| IndexOp::DeleteMeta {
        key: epoch_key(e.epoch),
    }));
}

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub max_timestamp: i64,
    /// The batch repeated one of its producer's latest batches: nothing was written and the
    /// offsets are where it was written first.
    pub duplicate: bool,
}

/// What opening a log had to do. After a clean shutdown every count is zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// The log was closed cleanly, so nothing was rescanned.
    pub clean: bool,
    /// Segment bytes read to verify the tail.
    pub bytes_scanned: u64,
    /// Batches verified and re-indexed.
    pub batches_recovered: u64,
    /// Bytes cut off: torn or corrupt tails and segments after them.
    pub bytes_truncated: u64,
    pub segments_removed: usize,
    /// Batch headers read to rebuild the producer state after its latest snapshot.
    pub producer_batches_scanned: u64,
}

/// What a retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start: Offset,
}

/// An fsync to run away from the log's owner (for example on a blocking thread) while the
/// owner keeps appending; see [`Log::begin_flush`].
pub struct FlushJob {
    files: Vec<(PathBuf, Arc<std::fs::File>)>,
    point: FlushPoint,
    generation: u64,
}

impl FlushJob {
    /// Fsyncs the files. Blocking.
    pub fn sync(&self) -> Result<(), StorageError> {
        for (path, file) in &self.files {
            file.sync_data()
                .map_err(|e| StorageError::new(Subject::Segment(path.clone()), Verb::Sync, e))?;
        }
        Ok(())
    }

    /// The log end offset this job makes durable.
    pub fn offset(&self) -> Offset {
        self.point.offset
    }
}

pub struct Log {
    name: String,
    dir: PathBuf,
    config: LogConfig,
    index: Arc<dyn OffsetIndex>,
    clock: Clock,
    segments: BTreeMap<Offset, Segment>,
    log_start: Offset,
    recovery_point: FlushPoint,
    /// Greatest timestamp in the log, and the greatest one in the time index.
    max_timestamp: Option<i64>,
    last_time_entry: Option<i64>,
    /// Bumped by truncation, so a flush that started before it cannot move the recovery
    /// point past the new end.
    generation: u64,
    poisoned: bool,
    /// Where each leader epoch starts; see [`crate::epochs`].
    epochs: EpochCache,
    /// The high watermark last checkpointed by the owner.
    checkpointed_hw: Option<Offset>,
    /// The idempotent producers' state; see [`crate::producers`].
    producers: ProducerStates,
}

/// Kafka's topic name rule, which partition log names (`topic-N`) also satisfy.
pub(crate) fn validate_name(name: &str) -> Result<(), LogError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(LogError::InvalidName {
            name: name.to_owned(),
        })
    }
}

fn list_segment_bases(dir: &Path) -> Result<Vec<Offset>, StorageError> {
    let err = |e| StorageError::new(Subject::LogDir(dir.to_owned()), Verb::List, e);
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        if let Some(base) = entry
            .file_name()
            .to_str()
            .and_then(segment::parse_file_name)
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

impl Log {
    pub(crate) fn open(
        name: &str,
        dir: PathBuf,
        config: LogConfig,
        index: Arc<dyn OffsetIndex>,
        clock: Clock,
    ) -> Result<(Log, RecoveryStats), LogError> {
        validate_name(name)?;
        config.validate()?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| StorageError::new(Subject::LogDir(dir.clone()), Verb::Create, e))?;
        let stored_start = index
            .meta(name, META_LOG_START)?
            .and_then(|b| decode_i64s::<1>(&b))
            .map(|[o]| o);
        let mut log = Log {
            name: name.to_owned(),
            dir,
            config,
            index,
            clock,
            segments: BTreeMap::new(),
            log_start: stored_start.unwrap_or(0),
            recovery_point: FlushPoint {
                offset: 0,
                segment: 0,
                position: 0,
                max_timestamp: None,
            },
            max_timestamp: None,
            last_time_entry: None,
            generation: 0,
            poisoned: false,
            epochs: EpochCache::default(),
            checkpointed_hw: None,
            producers: ProducerStates::default(),
        };
        log.epochs = log.stored_epochs()?;
        log.checkpointed_hw = log
            .index
            .meta(name, META_HW)?
            .and_then(|b| decode_i64s::<1>(&b))
            .map(|[o]| o);
        let mut stats = log.load(stored_start)?;
        log.trim_epochs_to_log()?;
        stats.producer_batches_scanned = log.rebuild_producers()?;
        log.index.apply(
            &log.name,
            &[IndexOp::DeleteMeta {
                key: META_CLEAN.into(),
            }],
            true,
        )?;
        Ok((log, stats))
    }

    fn load(&mut self, stored_start: Option<Offset>) -> Result<RecoveryStats, LogError> {
        let mut bases = list_segment_bases(&self.dir)?;
        self.remove_segments_below_start(&mut bases, stored_start)?;
        if bases.is_empty() {
            self.start_empty_at(self.log_start)?;
            return Ok(RecoveryStats {
                clean: true,
                ..Default::default()
            });
        }
        self.log_start = self.log_start.max(bases[0]);
        let metas = self.segment_metas()?;
        for &base in &bases {
            let mut seg = Segment::open(&self.dir, base)?;
            seg.created_ms = metas.get(&base).map_or(0, |m| m.created_ms);
            self.segments.insert(base, seg);
        }
        let clean = self
            .index
            .meta(&self.name, META_CLEAN)?
            .and_then(|b| FlushPoint::decode(&b));
        let active = self.active();
        let stats = match clean {
            Some(point) if point.segment == active.base && point.position == active.size => {
                self.fill_closed_segments(&metas, point.segment)?;
                let active = self.active_mut();
                active.next_offset = point.offset;
                active.max_timestamp = point.max_timestamp;
                self.recovery_point = point;
                RecoveryStats {
                    clean: true,
                    ..Default::default()
                }
            }
            _ => self.recover(&metas)?,
        };
        self.max_timestamp = self.segments.values().filter_map(|s| s.max_timestamp).max();
        self.last_time_entry = self
            .index
            .last_time_before(&self.name, i64::MAX)?
            .map(|e| e.timestamp);
        Ok(stats)
    }

    /// Segment files wholly below the stored log start are left over from a retention pass
    /// that crashed between its checkpoint and its unlinks.
    fn remove_segments_below_start(
        &self,
        bases: &mut Vec<Offset>,
        stored_start: Option<Offset>,
    ) -> Result<(), StorageError> {
        let Some(start) = stored_start else {
            return Ok(());
        };
        while bases.len() > 1 && bases[1] <= start {
            Segment::open(&self.dir, bases[0])?.delete()?;
            bases.remove(0);
        }
        Ok(())
    }

    fn start_empty_at(&mut self, start: Offset) -> Result<(), LogError> {
        self.log_start = start;
        let now = (self.clock)();
        self.segments
            .insert(start, Segment::create(&self.dir, start, now)?);
        self.recovery_point = FlushPoint {
            offset: start,
            segment: start,
            position: 0,
            max_timestamp: None,
        };
        let meta = SegmentMeta {
            created_ms: now,
            closed: None,
        };
        let ops = [
            IndexOp::PutMeta {
                key: segment_key(start),
                value: meta.encode(),
            },
            IndexOp::PutMeta {
                key: META_LOG_START.into(),
                value: encode_i64s(&[start]),
            },
            IndexOp::PutMeta {
                key: META_RECOVERY.into(),
                value: self.recovery_point.encode(),
            },
        ];
        self.index.apply(&self.name, &ops, true)?;
        Ok(())
    }

    fn segment_metas(&self) -> Result<BTreeMap<Offset, SegmentMeta>, LogError> {
        let mut metas = BTreeMap::new();
        for (key, value) in self.index.meta_with_prefix(&self.name, META_SEGMENT)? {
            let base = key[META_SEGMENT.len()..].parse::<Offset>().ok();
            if let (Some(base), Some(meta)) = (base, SegmentMeta::decode(&value)) {
                metas.insert(base, meta);
            }
        }
        Ok(metas)
    }

    /// Fills in the end offset and greatest timestamp of every segment before `upto` from
    /// their checkpoints, walking batch headers only where a checkpoint is missing.
    fn fill_closed_segments(
        &mut self,
        metas: &BTreeMap<Offset, SegmentMeta>,
        upto: Offset,
    ) -> Result<(), LogError> {
        let bases: Vec<Offset> = self.segments.range(..upto).map(|(b, _)| *b).collect();
        for base in bases {
            let next_base = self.segments.range(base + 1..).next().map(|(b, _)| *b);
            let seg = self.segments.get_mut(&base).expect("listed above");
            match metas.get(&base).and_then(|m| m.closed) {
                Some((next, ts)) => {
                    seg.next_offset = next;
                    seg.max_timestamp = ts;
                }
                None => {
                    let (next, ts) = summarize(seg)?;
                    seg.next_offset = next_base.unwrap_or(next).max(next);
                    seg.max_timestamp = ts;
                }
            }
        }
        Ok(())
    }

    /// Verifies and re-indexes everything after the recovery point; cuts what is torn.
    fn recover(
        &mut self,
        metas: &BTreeMap<Offset, SegmentMeta>,
    ) -> Result<RecoveryStats, LogError> {
        let first = *self.segments.keys().next().expect("at least one segment");
        let stored = self
            .index
            .meta(&self.name, META_RECOVERY)?
            .and_then(|b| FlushPoint::decode(&b));
        let start = match stored {
            Some(p) if self.segments.contains_key(&p.segment) => p,
            _ => FlushPoint {
                offset: first,
                segment: first,
                position: 0,
                max_timestamp: None,
            },
        };
        self.recovery_point = start;
        self.fill_closed_segments(metas, start.segment)?;
        let mut stats = RecoveryStats::default();
        // Index entries past the recovery point may describe bytes that are gone: drop them
        // now, so the time-index state read next is what survives.
        self.index
            .apply(&self.name, &[IndexOp::TruncateFrom(start.offset)], false)?;
        let mut ops = Vec::new();
        // Epoch entries past the recovery point are rebuilt from the batches that survive.
        delete_epochs(&self.epochs.truncate_from_end(start.offset), &mut ops);
        let mut expected = start.offset;
        self.max_timestamp = self.segments.values().filter_map(|s| s.max_timestamp).max();
        self.max_timestamp = max_ts(self.max_timestamp, start.max_timestamp);
        self.last_time_entry = self
            .index
            .last_time_before(&self.name, i64::MAX)?
            .map(|e| e.timestamp);
        let bases: Vec<Offset> = self
            .segments
            .range(start.segment..)
            .map(|(b, _)| *b)
            .collect();
        let mut cut: Option<(Offset, u64)> = None;
        for (i, &base) in bases.iter().enumerate() {
            let from = if i == 0 { start.position } else { 0 };
            if i > 0 && base != expected {
                cut = Some((base, 0));
                break;
            }
            let mut seg_max = if i == 0 { start.max_timestamp } else { None };
            let mut found = Vec::new();
            let seg = &self.segments[&base];
            let (end, scanned) = seg.walk(from, |position, bytes| {
                match batch::validate(bytes, usize::MAX) {
                    Ok(h) if h.base_offset == expected => {
                        expected = h.last_offset() + 1;
                        found.push((position, h));
                        true
                    }
                    _ => false,
                }
            })?;
            stats.bytes_scanned += scanned;
            stats.batches_recovered += found.len() as u64;
            let seg = self.segments.get_mut(&base).expect("listed above");
            seg.unindexed_bytes = u64::MAX;
            for (position, h) in &found {
                let (changed, removed) =
                    self.epochs.assign(h.partition_leader_epoch, h.base_offset);
                delete_epochs(&removed, &mut ops);
                if changed {
                    ops.extend(self.epochs.latest().map(put_epoch));
                }
                seg_max = max_ts(seg_max, Some(h.max_timestamp));
                self.max_timestamp = max_ts(self.max_timestamp, Some(h.max_timestamp));
                index_batch(
                    self.config.index_interval_bytes,
                    seg,
                    &mut self.last_time_entry,
                    self.max_timestamp,
                    h,
                    *position,
                    &mut ops,
                );
            }
            seg.next_offset = expected;
            seg.max_timestamp = seg_max;
            if end < seg.size {
                cut = Some((base, end));
                break;
            }
        }
        if let Some((base, position)) = cut {
            self.cut_at(base, position, &mut stats, &mut ops)?;
        }
        self.finish_recovery(ops)?;
        Ok(stats)
    }

    /// Cuts the log at `position` of segment `base` and drops every later segment.
    fn cut_at(
        &mut self,
        base: Offset,
        position: u64,
        stats: &mut RecoveryStats,
        ops: &mut Vec<IndexOp>,
    ) -> Result<(), LogError> {
        let later: Vec<Offset> = self.segments.range(base + 1..).map(|(b, _)| *b).collect();
        for b in later {
            let seg = self.segments.remove(&b).expect("listed above");
            stats.bytes_truncated += seg.size;
            stats.segments_removed += 1;
            ops.push(IndexOp::DeleteMeta {
                key: segment_key(b),
            });
            seg.delete()?;
        }
        let only_segment = self.segments.len() == 1;
        let seg = self.segments.get_mut(&base).expect("cut segment exists");
        stats.bytes_truncated += seg.size - position;
        if position == 0 && !only_segment && seg.next_offset != seg.base {
            // A segment that does not start where its predecessor ends cannot be trusted.
            let seg = self.segments.remove(&base).expect("checked above");
            stats.segments_removed += 1;
            ops.push(IndexOp::DeleteMeta {
                key: segment_key(base),
            });
            seg.delete()?;
        } else {
            seg.truncate(position)?;
        }
        Ok(())
    }

    /// Makes the recovered state durable and records it as the new recovery point.
    fn finish_recovery(&mut self, mut ops: Vec<IndexOp>) -> Result<(), LogError> {
        let recovered: Vec<Offset> = self
            .segments
            .range(self.recovery_point_segment_floor()..)
            .map(|(b, _)| *b)
            .collect();
        for base in &recovered {
            self.segments[base].sync()?;
        }
        let active_base = self.active().base;
        for base in recovered {
            let seg = &self.segments[&base];
            let closed = (base != active_base).then_some((seg.next_offset, seg.max_timestamp));
            ops.push(IndexOp::PutMeta {
                key: segment_key(base),
                value: SegmentMeta {
                    created_ms: seg.created_ms,
                    closed,
                }
                .encode(),
            });
        }
        self.recovery_point = self.end_point();
        ops.push(IndexOp::PutMeta {
            key: META_RECOVERY.into(),
            value: self.recovery_point.encode(),
        });
        self.index.apply(&self.name, &ops, true)?;
        Ok(())
    }

    fn recovery_point_segment_floor(&self) -> Offset {
        self.segments
            .range(..=self.recovery_point.segment)
            .next_back()
            .map_or(self.log_start, |(b, _)| *b)
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log has a segment")
    }

    fn end_point(&self) -> FlushPoint {
        let active = self.active();
        FlushPoint {
            offset: active.next_offset,
            segment: active.base,
            position: active.size,
            max_timestamp: active.max_timestamp,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the config (a topic's settings changed). Takes effect from the next append,
    /// roll or retention pass; existing segments and index entries stay as they are.
    pub fn set_config(&mut self, config: LogConfig) -> Result<(), LogError> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// The first offset the log holds.
    pub fn log_start_offset(&self) -> Offset {
        self.log_start
    }

    /// The offset the next appended record gets (Kafka's log end offset).
    pub fn log_end_offset(&self) -> Offset {
        self.active().next_offset
    }

    /// Everything below this offset is fsynced.
    pub fn flushed_offset(&self) -> Offset {
        self.recovery_point.offset
    }

    /// Bytes written but not yet fsynced.
    pub fn unflushed_bytes(&self) -> u64 {
        let rp = &self.recovery_point;
        self.segments
            .range(rp.segment..)
            .map(|(b, s)| {
                if *b == rp.segment {
                    s.size.saturating_sub(rp.position)
                } else {
                    s.size
                }
            })
            .sum()
    }

    /// Bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Greatest record timestamp in the log.
    pub fn max_timestamp(&self) -> Option<i64> {
        self.max_timestamp
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn check_writable(&self) -> Result<(), LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned {
                log: self.name.clone(),
            });
        }
        Ok(())
    }

    /// Appends one produced batch as the leader: assigns offsets from the log end and stamps
    /// `leader_epoch`. An invalid batch changes nothing. A batch of an idempotent producer is
    /// checked against the producer state first: a duplicate comes back with its original
    /// offsets (`duplicate`) and is not written; a gap or stale epoch is refused
    /// ([`LogError::Sequence`]).
    pub fn append(&mut self, batch: &[u8], leader_epoch: i32) -> Result<AppendInfo, LogError> {
        self.check_writable()?;
        let mut header = batch::validate(batch, self.config.max_message_bytes)?;
        if let SequenceCheck::Duplicate(first) = self.producers.check(&header)? {
            return Ok(AppendInfo {
                base_offset: first.base_offset,
                last_offset: first.last_offset,
                max_timestamp: header.max_timestamp,
                duplicate: true,
            });
        }
        header.base_offset = self.log_end_offset();
        header.partition_leader_epoch = leader_epoch;
        // Base offset (bytes 0..8) and leader epoch (12..16) lie outside the CRC: rewrite them in
        // a small copy of the prefix and write the rest of the caller's bytes untouched.
        let mut prefix = [0u8; 17];
        prefix.copy_from_slice(&batch[..17]);
        prefix[..8].copy_from_slice(&header.base_offset.to_be_bytes());
        prefix[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
        self.write_batch(&header, &[&prefix, &batch[17..]])
    }

    /// Appends batches fetched from the leader, keeping their offsets. They must continue the
    /// log exactly; if any is invalid or out of place, nothing is written. Returns `None` for
    /// an empty input.
    pub fn append_replicated(&mut self, batches: &[u8]) -> Result<Option<AppendInfo>, LogError> {
        self.check_writable()?;
        let mut checked = Vec::new();
        let mut expected = self.log_end_offset();
        let mut at = 0;
        while at < batches.len() {
            let rest = &batches[at..];
            let declared = BatchHeader::parse(rest)
                .map(|h| h.total_len())
                .unwrap_or(rest.len());
            let header = batch::validate(&rest[..declared.min(rest.len())], usize::MAX)?;
            if header.base_offset != expected {
                return Err(LogError::NonContiguous {
                    expected,
                    got: header.base_offset,
                });
            }
            expected = header.last_offset() + 1;
            checked.push((at, header));
            at += header.total_len();
        }
        let mut info: Option<AppendInfo> = None;
        for (at, header) in checked {
            let written = self.write_batch(&header, &[&batches[at..at + header.total_len()]])?;
            info = Some(match info {
                None => written,
                Some(first) => AppendInfo {
                    last_offset: written.last_offset,
                    max_timestamp: first.max_timestamp.max(written.max_timestamp),
                    ..first
                },
            });
        }
        Ok(info)
    }

    /// Writes one checked batch at the log end. A write the disk refuses (a full disk: the
    /// segment write or the index entries after it) changes nothing: the bytes are cut off
    /// again and the in-memory state restored, so the caller gets the error and the offsets go
    /// to the next batch. Only when the cut itself fails is the log poisoned.
    fn write_batch(
        &mut self,
        header: &BatchHeader,
        parts: &[&[u8]],
    ) -> Result<AppendInfo, LogError> {
        self.maybe_roll(header.total_len() as u64)?;
        let before = self.before_write(header);
        let position = self.active().size;
        if let Err(e) = self.active_mut().append(parts) {
            self.cut_back(position);
            return Err(e.into());
        }
        let ops = self.note_written(header, position);
        if !ops.is_empty() {
            if let Err(e) = self.index.apply(&self.name, &ops, false) {
                self.undo_write(before, position);
                return Err(e.into());
            }
        }
        self.producers.record(header);
        Ok(AppendInfo {
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
            duplicate: false,
        })
    }

    /// What [`Log::note_written`] changes, to put back if the index refuses the write.
    fn before_write(&self, header: &BatchHeader) -> BeforeWrite {
        let active = self.active();
        // Only a batch that starts a new leader epoch changes the epoch cache; copy it then.
        let epoch_unchanged = header.partition_leader_epoch < 0
            || self
                .epochs
                .latest()
                .is_some_and(|e| e.epoch == header.partition_leader_epoch);
        BeforeWrite {
            next_offset: active.next_offset,
            segment_max_timestamp: active.max_timestamp,
            unindexed_bytes: active.unindexed_bytes,
            max_timestamp: self.max_timestamp,
            last_time_entry: self.last_time_entry,
            epochs: (!epoch_unchanged).then(|| self.epochs.clone()),
        }
    }

    /// Accounts for a batch written at `position` of the active segment; returns the index
    /// entries it needs.
    fn note_written(&mut self, header: &BatchHeader, position: u64) -> Vec<IndexOp> {
        let interval = self.config.index_interval_bytes;
        self.max_timestamp = max_ts(self.max_timestamp, Some(header.max_timestamp));
        let max_timestamp = self.max_timestamp;
        let mut last_time_entry = self.last_time_entry;
        let seg = self.active_mut();
        seg.next_offset = header.last_offset() + 1;
        seg.max_timestamp = max_ts(seg.max_timestamp, Some(header.max_timestamp));
        let mut ops = Vec::new();
        index_batch(
            interval,
            seg,
            &mut last_time_entry,
            max_timestamp,
            header,
            position,
            &mut ops,
        );
        self.last_time_entry = last_time_entry;
        let (changed, removed) = self
            .epochs
            .assign(header.partition_leader_epoch, header.base_offset);
        delete_epochs(&removed, &mut ops);
        if changed {
            ops.extend(self.epochs.latest().map(put_epoch));
        }
        ops
    }

    /// Takes a written batch back out: restores the state [`Log::before_write`] saved and
    /// cuts the segment at `position`.
    fn undo_write(&mut self, before: BeforeWrite, position: u64) {
        let seg = self.active_mut();
        seg.next_offset = before.next_offset;
        seg.max_timestamp = before.segment_max_timestamp;
        seg.unindexed_bytes = before.unindexed_bytes;
        self.max_timestamp = before.max_timestamp;
        self.last_time_entry = before.last_time_entry;
        if let Some(epochs) = before.epochs {
            self.epochs = epochs;
        }
        self.cut_back(position);
    }

    /// Cuts the active segment back to `position` after a failed or refused write. If even
    /// that fails, the file may hold bytes the log does not account for: stop writing for good.
    fn cut_back(&mut self, position: u64) {
        if let Err(e) = self.active_mut().truncate(position) {
            self.poisoned = true;
            tracing::error!(log = %self.name, error = %e, "could not cut a failed write off; log poisoned");
        }
    }

    fn maybe_roll(&mut self, incoming: u64) -> Result<(), LogError> {
        let now = (self.clock)();
        let active = self.active();
        let full = active.size > 0 && active.size + incoming > self.config.segment_bytes;
        let old = active.size > 0 && now - active.created_ms >= self.config.segment_ms;
        if full || old {
            self.roll(now)?;
        }
        Ok(())
    }

    /// Closes the active segment and starts a new one at the log end offset.
    pub fn roll(&mut self, now: i64) -> Result<(), LogError> {
        let active = self.active();
        let next = active.next_offset;
        let closed = SegmentMeta {
            created_ms: active.created_ms,
            closed: Some((next, active.max_timestamp)),
        };
        let opened = SegmentMeta {
            created_ms: now,
            closed: None,
        };
        let ops = [
            IndexOp::PutMeta {
                key: segment_key(active.base),
                value: closed.encode(),
            },
            IndexOp::PutMeta {
                key: segment_key(next),
                value: opened.encode(),
            },
        ];
        self.index.apply(&self.name, &ops, true)?;
        let seg = Segment::create(&self.dir, next, now)?;
        self.segments.insert(next, seg);
        Ok(())
    }

    /// Finds the segment and position of the batch that holds `offset` (or the first batch
    /// after it), or `None` when `offset` is at the log end.
    fn locate(&self, offset: Offset) -> Result<Option<(&Segment, u64)>, LogError> {
        let Some((_, mut seg)) = self.segments.range(..=offset).next_back() else {
            return Ok(None);
        };
        let mut position = match self.index.floor_offset(&self.name, offset)? {
            Some(e) if e.segment == seg.base => e.position,
            _ => 0,
        };
        loop {
            match seg.header_at(position)? {
                Some(h) if h.last_offset() < offset => position += h.total_len() as u64,
                Some(_) => return Ok(Some((seg, position))),
                None => match self.segments.range(seg.base + 1..).next() {
                    Some((_, next)) => {
                        seg = next;
                        position = 0;
                    }
                    None => return Ok(None),
                },
            }
        }
    }

    /// Whole stored batches from the one holding `from`, about `max_bytes` of them but at
    /// least one, and none starting at or above `upper` (the high watermark).
    pub fn read(&self, from: Offset, max_bytes: usize, upper: Offset) -> Result<Bytes, LogError> {
        let end = self.log_end_offset();
        if from < self.log_start || from > end {
            return Err(LogError::OffsetOutOfRange {
                offset: from,
                log_start: self.log_start,
                log_end: end,
            });
        }
        if from >= upper.min(end) {
            return Ok(Bytes::new());
        }
        let Some((seg, position)) = self.locate(from)? else {
            return Ok(Bytes::new());
        };
        let available = seg.size - position;
        let first = seg.header_at(position)?.map_or(0, |h| h.total_len() as u64);
        let want = available.min((max_bytes as u64).max(first));
        let chunk = seg.read(position, want as usize)?;
        let mut taken = 0;
        while let Ok(h) = BatchHeader::parse(&chunk[taken..]) {
            if h.base_offset >= upper || taken + h.total_len() > chunk.len() {
                break;
            }
            taken += h.total_len();
        }
        Ok(chunk.slice(..taken))
    }

    /// The first record whose timestamp is at or after `timestamp`: its offset and timestamp
    /// (Kafka's ListOffsets by time). `None` if every record is older.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(Offset, i64)>, LogError> {
        if self.max_timestamp.is_none_or(|m| m < timestamp) {
            return Ok(None);
        }
        let from = self
            .index
            .last_time_before(&self.name, timestamp)?
            .map_or(self.log_start, |e| e.offset.max(self.log_start));
        let Some((first_seg, first_pos)) = self.locate(from)? else {
            return Ok(None);
        };
        for (base, seg) in self.segments.range(first_seg.base..) {
            let start = if *base == first_seg.base {
                first_pos
            } else {
                0
            };
            let mut found = None;
            let mut failure = None;
            seg.walk(start, |_, bytes| {
                let Some(h) = segment::header(bytes) else {
                    return false;
                };
                if h.max_timestamp < timestamp {
                    return true;
                }
                match batch::decode(bytes) {
                    Ok(decoded) => {
                        found = decoded
                            .records
                            .iter()
                            .find(|r| r.timestamp >= timestamp)
                            .map(|r| (r.offset, r.timestamp));
                    }
                    Err(e) => failure = Some(e),
                }
                found.is_none() && failure.is_none()
            })?;
            if let Some(e) = failure {
                return Err(e.into());
            }
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Captures what an fsync must cover now; run [`FlushJob::sync`] anywhere, then hand the
    /// job and its result to [`Log::finish_flush`]. Appends may go on meanwhile: the job makes
    /// durable only what was written before it began (group commit: one fsync for every
    /// append before it).
    pub fn begin_flush(&self) -> FlushJob {
        let files = self
            .segments
            .range(self.recovery_point_segment_floor()..)
            .map(|(_, s)| (s.path.clone(), s.file.clone()))
            .collect();
        FlushJob {
            files,
            point: self.end_point(),
            generation: self.generation,
        }
    }

    /// Records a finished fsync. A failed one poisons the log: the kernel may have dropped the
    /// dirty pages, so a retry could report success for data that is gone.
    pub fn finish_flush(
        &mut self,
        job: FlushJob,
        result: Result<(), StorageError>,
    ) -> Result<Offset, LogError> {
        if let Err(e) = result {
            self.poisoned = true;
            tracing::error!(log = %self.name, error = %e, "fsync failed; log poisoned");
            return Err(e.into());
        }
        let current = job.generation == self.generation;
        if current && job.point.offset > self.recovery_point.offset {
            self.recovery_point = job.point;
            let op = IndexOp::PutMeta {
                key: META_RECOVERY.into(),
                value: job.point.encode(),
            };
            self.index.apply(&self.name, &[op], false)?;
        }
        Ok(self.recovery_point.offset)
    }

    /// Fsyncs everything appended so far; returns the durable log end offset.
    pub fn flush(&mut self) -> Result<Offset, LogError> {
        self.check_writable()?;
        let job = self.begin_flush();
        let result = job.sync();
        self.finish_flush(job, result)
    }

    /// Removes every record at or above `offset` (a follower diverging from its new leader).
    /// Kafka's rule: the batch holding `offset` goes too, so the new end may be below it.
    /// Returns the new log end offset.
    pub fn truncate_to(&mut self, offset: Offset) -> Result<Offset, LogError> {
        self.check_writable()?;
        if offset >= self.log_end_offset() {
            // No records go, but an epoch begun at the end (a leader that wrote nothing in
            // it) does: the log must not claim an epoch its new leader says it never had.
            let mut ops = Vec::new();
            delete_epochs(&self.epochs.truncate_from_end(offset), &mut ops);
            if !ops.is_empty() {
                self.index.apply(&self.name, &ops, true)?;
            }
            return Ok(self.log_end_offset());
        }
        if offset <= self.log_start {
            self.truncate_fully_and_start_at(offset)?;
            return Ok(offset);
        }
        let (base, position) = match self.locate(offset)? {
            Some((seg, position)) => (seg.base, position),
            None => return Ok(self.log_end_offset()),
        };
        let cut = self.cut_tail(base, position);
        if cut.is_err() {
            // Files, memory and index may disagree now: write nothing more until a restart
            // recovers the log from its files.
            self.poisoned = true;
        }
        cut
    }

    /// Removes everything from `position` of segment `base` on (see [`Log::truncate_to`]).
    fn cut_tail(&mut self, base: Offset, position: u64) -> Result<Offset, LogError> {
        self.generation += 1;
        let mut ops = Vec::new();
        for b in self
            .segments
            .range(base + 1..)
            .map(|(b, _)| *b)
            .collect::<Vec<_>>()
        {
            ops.push(IndexOp::DeleteMeta {
                key: segment_key(b),
            });
            self.segments.remove(&b).expect("listed above").delete()?;
        }
        let seg = self.segments.get_mut(&base).expect("located above");
        let new_end = match seg.header_at(position)? {
            Some(h) => h.base_offset,
            None => seg.next_offset,
        };
        seg.truncate(position)?;
        let (next, ts) = summarize(seg)?;
        seg.next_offset = next.max(new_end);
        seg.max_timestamp = ts;
        seg.unindexed_bytes = u64::MAX;
        self.max_timestamp = self.segments.values().filter_map(|s| s.max_timestamp).max();
        ops.push(IndexOp::TruncateFrom(new_end));
        delete_epochs(&self.epochs.truncate_from_end(new_end), &mut ops);
        if self.recovery_point.offset > new_end || self.recovery_point.segment > base {
            self.recovery_point = self.end_point();
        }
        ops.push(IndexOp::PutMeta {
            key: segment_key(base),
            value: SegmentMeta {
                created_ms: self.active().created_ms,
                closed: None,
            }
            .encode(),
        });
        ops.push(IndexOp::PutMeta {
            key: META_RECOVERY.into(),
            value: self.recovery_point.encode(),
        });
        self.index.apply(&self.name, &ops, true)?;
        self.last_time_entry = self
            .index
            .last_time_before(&self.name, i64::MAX)?
            .map(|e| e.timestamp);
        self.rebuild_producers()?;
        Ok(new_end)
    }

    /// Drops every record and starts the log empty at `offset` (a follower whose fetch
    /// offset fell outside the leader's log).
    pub fn truncate_fully_and_start_at(&mut self, offset: Offset) -> Result<(), LogError> {
        self.check_writable()?;
        self.generation += 1;
        self.index.apply(&self.name, &[IndexOp::DropLog], true)?;
        for (_, seg) in std::mem::take(&mut self.segments) {
            seg.delete()?;
        }
        self.max_timestamp = None;
        self.last_time_entry = None;
        self.epochs.clear();
        self.checkpointed_hw = None;
        self.producers = ProducerStates::default();
        self.start_empty_at(offset)
    }

    /// Deletes whole segments past `retention.ms` (by their newest record) or beyond
    /// `retention.bytes` (oldest first). Only data wholly below `upper` (the high watermark)
    /// is deleted. An expired active segment is rolled first, as Kafka does, so a quiet topic
    /// still ages out.
    pub fn apply_retention(&mut self, upper: Offset) -> Result<RetentionOutcome, LogError> {
        self.check_writable()?;
        let now = (self.clock)();
        let expired = |ts: Option<i64>, ms: Option<i64>| match (ts, ms) {
            (Some(ts), Some(ms)) => ts < now.saturating_sub(ms),
            _ => false,
        };
        let active = self.active();
        if active.size > 0
            && active.next_offset <= upper
            && expired(active.max_timestamp, self.config.retention_ms)
        {
            self.roll(now)?;
        }
        let mut total = self.size_bytes();
        let mut doomed = Vec::new();
        for (base, seg) in &self.segments {
            let is_active = *base == self.active().base;
            if is_active || seg.next_offset > upper {
                break;
            }
            let by_time = expired(seg.max_timestamp, self.config.retention_ms);
            let by_size = self
                .config
                .retention_bytes
                .is_some_and(|limit| total - seg.size >= limit);
            if !(by_time || by_size) {
                break;
            }
            total -= seg.size;
            doomed.push(*base);
        }
        self.delete_segments(doomed)
    }

    /// Deletes the whole segments that lie entirely below `offset` (never the active one), as
    /// Kafka's log-start-offset increments do: the log start becomes the first kept segment's
    /// base. A group coordinator calls it below its latest durable snapshot; a follower calls
    /// it to follow its leader's log start.
    pub fn delete_before(&mut self, offset: Offset) -> Result<RetentionOutcome, LogError> {
        self.check_writable()?;
        let active = self.active().base;
        let doomed: Vec<Offset> = self
            .segments
            .iter()
            .take_while(|(base, seg)| **base != active && seg.next_offset <= offset)
            .map(|(base, _)| *base)
            .collect();
        self.delete_segments(doomed)
    }

    /// Deletes the oldest segments `doomed` (bases in order, from the first), moving the log
    /// start past them.
    fn delete_segments(&mut self, doomed: Vec<Offset>) -> Result<RetentionOutcome, LogError> {
        let mut outcome = RetentionOutcome {
            log_start: self.log_start,
            ..Default::default()
        };
        let Some(&last) = doomed.last() else {
            return Ok(outcome);
        };
        let new_start = self.segments[&last].next_offset;
        // Checkpoint first: a crash before the unlinks leaves files that the next open removes.
        let mut ops = vec![
            IndexOp::DeleteBefore(new_start),
            IndexOp::PutMeta {
                key: META_LOG_START.into(),
                value: encode_i64s(&[new_start]),
            },
        ];
        ops.extend(doomed.iter().map(|b| IndexOp::DeleteMeta {
            key: segment_key(*b),
        }));
        let (removed, moved) = self.epochs.truncate_from_start(new_start);
        delete_epochs(&removed, &mut ops);
        ops.extend(moved.map(put_epoch));
        self.index.apply(&self.name, &ops, true)?;
        for base in doomed {
            let seg = self.segments.remove(&base).expect("listed above");
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += seg.size;
            seg.delete()?;
        }
        self.log_start = new_start;
        outcome.log_start = new_start;
        Ok(outcome)
    }

    /// The latest leader epoch in the log (the epoch of its last batch, or the epoch it was
    /// last told to lead in with [`Log::assign_epoch`]).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest().map(|e| e.epoch)
    }

    /// Where each leader epoch starts.
    pub fn epochs(&self) -> &[EpochEntry] {
        self.epochs.entries()
    }

    /// The largest epoch at most `epoch` and the offset where it ends in this log (Kafka's
    /// OffsetsForLeaderEpoch); see [`EpochCache::end_offset_for`].
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, Offset)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Records that this log's leader starts `epoch` at the log end, before it appends anything
    /// in it, so that followers asking for the previous epoch's end learn it exactly.
    pub fn assign_epoch(&mut self, epoch: i32) -> Result<(), LogError> {
        self.check_writable()?;
        let (changed, removed) = self.epochs.assign(epoch, self.log_end_offset());
        let mut ops = Vec::new();
        delete_epochs(&removed, &mut ops);
        if changed {
            ops.extend(self.epochs.latest().map(put_epoch));
        }
        if !ops.is_empty() {
            self.index.apply(&self.name, &ops, false)?;
        }
        Ok(())
    }

    /// The high watermark last saved with [`Log::checkpoint_high_watermark`], never above the
    /// log end.
    pub fn checkpointed_high_watermark(&self) -> Option<Offset> {
        self.checkpointed_hw.map(|hw| hw.min(self.log_end_offset()))
    }

    /// Saves the owner's high watermark, so that a restart exposes what was exposed before
    /// (not durable by itself: a later flush or close makes it so).
    pub fn checkpoint_high_watermark(&mut self, hw: Offset) -> Result<(), LogError> {
        if self.checkpointed_hw == Some(hw) {
            return Ok(());
        }
        let op = IndexOp::PutMeta {
            key: META_HW.into(),
            value: encode_i64s(&[hw]),
        };
        self.index.apply(&self.name, &[op], false)?;
        self.checkpointed_hw = Some(hw);
        Ok(())
    }

    fn stored_epochs(&self) -> Result<EpochCache, LogError> {
        let mut entries = Vec::new();
        for (key, value) in self.index.meta_with_prefix(&self.name, META_EPOCH)? {
            let epoch = key[META_EPOCH.len()..].parse::<i32>().ok();
            if let (Some(epoch), Some([start_offset])) = (epoch, decode_i64s::<1>(&value)) {
                entries.push(EpochEntry {
                    epoch,
                    start_offset,
                });
            }
        }
        Ok(EpochCache::from_entries(entries))
    }

    /// Drops epoch entries outside the log after an open (a crash may have cut its tail; a
    /// retention pass may have crashed before its checkpoint).
    fn trim_epochs_to_log(&mut self) -> Result<(), LogError> {
        let mut ops = Vec::new();
        delete_epochs(
            &self.epochs.truncate_from_end(self.log_end_offset()),
            &mut ops,
        );
        let (removed, moved) = self.epochs.truncate_from_start(self.log_start);
        delete_epochs(&removed, &mut ops);
        ops.extend(moved.map(put_epoch));
        if !ops.is_empty() {
            self.index.apply(&self.name, &ops, true)?;
        }
        Ok(())
    }

    /// The idempotent producers' state.
    pub fn producers(&self) -> &ProducerStates {
        &self.producers
    }

    /// Drops producers idle for `max_idle_ms` by their latest batch's timestamp (Kafka's
    /// `producer.id.expiration.ms`); returns how many went. The next snapshot leaves them out.
    pub fn expire_producers(&mut self, max_idle_ms: i64) -> usize {
        self.producers.expire((self.clock)(), max_idle_ms)
    }

    /// Saves the producer state as of the log end (when it is not saved there yet) and drops
    /// all but the latest [`PRODUCER_SNAPSHOTS_KEPT`] snapshots. Not durable by itself: a
    /// snapshot above the log end after a crash is ignored and deleted at open.
    pub fn snapshot_producers(&mut self) -> Result<(), LogError> {
        let end = self.log_end_offset();
        let mut offsets = self.producer_snapshots()?;
        if offsets.last() == Some(&end) {
            return Ok(());
        }
        offsets.push(end);
        let mut ops = vec![IndexOp::PutMeta {
            key: producers_key(end),
            value: self.producers.encode(),
        }];
        let stale = offsets.len().saturating_sub(PRODUCER_SNAPSHOTS_KEPT);
        ops.extend(offsets[..stale].iter().map(|o| IndexOp::DeleteMeta {
            key: producers_key(*o),
        }));
        self.index.apply(&self.name, &ops, false)?;
        Ok(())
    }

    /// The offsets of the stored producer snapshots, ascending.
    fn producer_snapshots(&self) -> Result<Vec<Offset>, LogError> {
        Ok(self
            .index
            .meta_with_prefix(&self.name, META_PRODUCERS)?
            .iter()
            .filter_map(|(key, _)| key[META_PRODUCERS.len()..].parse::<Offset>().ok())
            .collect())
    }

    /// Rebuilds the producer state: the latest snapshot at or below the log end (snapshots
    /// above it describe batches that are gone and are deleted), then the batch headers after
    /// it. Returns how many headers were read.
    fn rebuild_producers(&mut self) -> Result<u64, LogError> {
        let end = self.log_end_offset();
        let mut ops = Vec::new();
        let mut base = None;
        for offset in self.producer_snapshots()?.into_iter().rev() {
            let key = producers_key(offset);
            if base.is_none() && offset <= end {
                let bytes = self.index.meta(&self.name, &key)?;
                if let Some(states) = bytes.and_then(|b| ProducerStates::decode(&b)) {
                    base = Some((offset, states));
                    continue;
                }
            }
            if offset > end || base.is_none() {
                ops.push(IndexOp::DeleteMeta { key });
            }
        }
        if !ops.is_empty() {
            self.index.apply(&self.name, &ops, true)?;
        }
        let (from, states) = base.unwrap_or((self.log_start, ProducerStates::default()));
        self.producers = states;
        self.scan_producers_from(from.max(self.log_start))
    }

    /// Records the batches from the one holding `from` to the log end into the producer
    /// state, reading only their headers.
    fn scan_producers_from(&mut self, from: Offset) -> Result<u64, LogError> {
        let Some((first, position)) = self.locate(from)?.map(|(s, p)| (s.base, p)) else {
            return Ok(0);
        };
        let mut scanned = 0;
        for (base, seg) in self.segments.range(first..) {
            let mut at = if *base == first { position } else { 0 };
            while let Some(h) = seg.header_at(at)? {
                self.producers.record(&h);
                scanned += 1;
                at += h.total_len() as u64;
            }
        }
        Ok(scanned)
    }

    /// Flushes and records a clean shutdown, so the next open reads no segment data.
    pub fn close(mut self) -> Result<(), LogError> {
        self.flush()?;
        self.snapshot_producers()?;
        let op = IndexOp::PutMeta {
            key: META_CLEAN.into(),
            value: self.end_point().encode(),
        };
        self.index.apply(&self.name, &[op], true)?;
        Ok(())
    }

    /// Deletes the log's files and index entries.
    pub(crate) fn delete(self) -> Result<(), LogError> {
        self.index.apply(&self.name, &[IndexOp::DropLog], true)?;
        std::fs::remove_dir_all(&self.dir)
            .map_err(|e| StorageError::new(Subject::LogDir(self.dir.clone()), Verb::Delete, e))?;
        Ok(())
    }
}

fn max_ts(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.max(b)
}

/// Adds the sparse index entries due for a batch just written at `position` of `seg`.
fn index_batch(
    interval: u64,
    seg: &mut Segment,
    last_time_entry: &mut Option<i64>,
    log_max_timestamp: Option<i64>,
    header: &BatchHeader,
    position: u64,
    ops: &mut Vec<IndexOp>,
) {
    if position == 0 || seg.unindexed_bytes >= interval {
        ops.push(IndexOp::PutOffset(OffsetEntry {
            offset: header.base_offset,
            segment: seg.base,
            position,
        }));
        seg.unindexed_bytes = 0;
        if let Some(ts) = log_max_timestamp.filter(|ts| last_time_entry.is_none_or(|t| *ts > t)) {
            ops.push(IndexOp::PutTime(TimeEntry {
                timestamp: ts,
                offset: header.base_offset,
            }));
            *last_time_entry = Some(ts);
        }
    }
    seg.unindexed_bytes = seg
        .unindexed_bytes
        .saturating_add(header.total_len() as u64);
}

/// End offset and greatest timestamp of a segment, from its batch headers.
fn summarize(seg: &Segment) -> Result<(Offset, Option<i64>), StorageError> {
    let mut next = seg.base;
    let mut ts = None;
    let mut position = 0;
    while let Some(h) = seg.header_at(position)? {
        next = h.last_offset() + 1;
        ts = max_ts(ts, Some(h.max_timestamp));
        position += h.total_len() as u64;
    }
    Ok((next, ts))
}

#[cfg(test)]
#[path = "log_test.rs"]
mod tests;

#[cfg(test)]
#[path = "log_model_test.rs"]
mod model_tests;

#[cfg(test)]
#[path = "log_producers_test.rs"]
mod producers_tests;

#[cfg(test)]
#[path = "log_write_errors_test.rs"]
mod write_errors_tests;
