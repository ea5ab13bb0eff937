//! Conformance suite for [`OffsetIndex`] implementations.
//!
//! Every implementation must behave alike, so the log above it can be tested once. Call
//! [`Suite::test_all`] from the implementation's tests with a function that builds a fresh,
//! empty index each time.

use crate::index::{IndexOp, OffsetEntry, OffsetIndex, TimeEntry};

pub struct Suite;

fn entry(offset: i64, segment: i64, position: u64) -> IndexOp {
    IndexOp::PutOffset(OffsetEntry {
        offset,
        segment,
        position,
    })
}

fn time(timestamp: i64, offset: i64) -> IndexOp {
    IndexOp::PutTime(TimeEntry { timestamp, offset })
}

impl Suite {
    pub fn test_all<I: OffsetIndex>(build: impl Fn() -> I) {
        Self::floor_finds_greatest_entry_at_or_below(build());
        Self::logs_do_not_see_each_other(build());
        Self::time_lookup_is_strictly_below(build());
        Self::truncate_from_drops_the_tail(build());
        Self::delete_before_drops_the_head(build());
        Self::meta_put_get_delete_and_prefix(build());
        Self::drop_log_removes_everything(build());
    }

    fn floor_finds_greatest_entry_at_or_below(index: impl OffsetIndex) {
        index
            .apply(
                "t-0",
                &[entry(0, 0, 0), entry(10, 0, 4096), entry(25, 20, 0)],
                false,
            )
            .unwrap();
        let floor = |o| index.floor_offset("t-0", o).unwrap().map(|e| e.offset);
        assert_eq!(floor(0), Some(0));
        assert_eq!(floor(9), Some(0));
        assert_eq!(floor(10), Some(10));
        assert_eq!(floor(24), Some(10));
        assert_eq!(floor(i64::MAX), Some(25));
        let e = index.floor_offset("t-0", 30).unwrap().unwrap();
        assert_eq!((e.segment, e.position), (20, 0));
        index.apply("t-1", &[entry(5, 0, 7)], false).unwrap();
        assert_eq!(index.floor_offset("t-1", 4).unwrap(), None);
    }

    fn logs_do_not_see_each_other(index: impl OffsetIndex) {
        // "a" is a prefix of "a.b" and "a-1": their key ranges must still be disjoint.
        index.apply("a", &[entry(100, 0, 1)], false).unwrap();
        index
            .apply("a.b", &[entry(5, 0, 2), time(50, 5)], false)
            .unwrap();
        index.apply("a-1", &[entry(7, 0, 3)], false).unwrap();
        assert_eq!(index.floor_offset("a", 50).unwrap(), None);
        assert_eq!(
            index.floor_offset("a.b", 1000).unwrap().unwrap().position,
            2
        );
        assert_eq!(index.last_time_before("a", 1000).unwrap(), None);
        index.apply("a", &[IndexOp::DropLog], false).unwrap();
        assert!(index.floor_offset("a.b", 5).unwrap().is_some());
        assert!(index.floor_offset("a-1", 7).unwrap().is_some());
    }

    fn time_lookup_is_strictly_below(index: impl OffsetIndex) {
        index
            .apply("t", &[time(-5, 0), time(100, 10), time(200, 20)], false)
            .unwrap();
        let before = |ts| index.last_time_before("t", ts).unwrap().map(|e| e.offset);
        assert_eq!(before(-5), None);
        assert_eq!(before(-4), Some(0));
        assert_eq!(before(100), Some(0));
        assert_eq!(before(101), Some(10));
        assert_eq!(before(i64::MAX), Some(20));
        assert_eq!(before(i64::MIN), None);
    }

    fn truncate_from_drops_the_tail(index: impl OffsetIndex) {
        let ops = [entry(0, 0, 0), entry(10, 0, 10), entry(20, 0, 20)];
        index.apply("t", &ops, false).unwrap();
        index
            .apply("t", &[time(1, 0), time(2, 10), time(3, 20)], false)
            .unwrap();
        index
            .apply("t", &[IndexOp::TruncateFrom(10)], false)
            .unwrap();
        assert_eq!(index.floor_offset("t", 100).unwrap().unwrap().offset, 0);
        assert_eq!(index.last_time_before("t", 100).unwrap().unwrap().offset, 0);
    }

    fn delete_before_drops_the_head(index: impl OffsetIndex) {
        let ops = [entry(0, 0, 0), entry(10, 10, 0), entry(20, 10, 20)];
        index.apply("t", &ops, false).unwrap();
        index
            .apply("t", &[time(1, 0), time(2, 10), time(3, 20)], false)
            .unwrap();
        index
            .apply("t", &[IndexOp::DeleteBefore(10)], false)
            .unwrap();
        assert_eq!(index.floor_offset("t", 9).unwrap(), None);
        assert_eq!(index.floor_offset("t", 15).unwrap().unwrap().offset, 10);
        assert_eq!(index.last_time_before("t", 2).unwrap(), None);
        assert_eq!(index.last_time_before("t", 3).unwrap().unwrap().offset, 10);
    }

    fn meta_put_get_delete_and_prefix(index: impl OffsetIndex) {
        let put = |k: &str, v: &[u8]| IndexOp::PutMeta {
            key: k.into(),
            value: v.to_vec(),
        };
        index
            .apply(
                "t",
                &[
                    put("segment/02", b"b"),
                    put("segment/01", b"a"),
                    put("x", b"x"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(index.meta("t", "x").unwrap().as_deref(), Some(&b"x"[..]));
        let segments = index.meta_with_prefix("t", "segment/").unwrap();
        let keys: Vec<_> = segments.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["segment/01", "segment/02"]);
        index
            .apply("t", &[IndexOp::DeleteMeta { key: "x".into() }], true)
            .unwrap();
        assert_eq!(index.meta("t", "x").unwrap(), None);
        assert_eq!(index.meta("other", "segment/01").unwrap(), None);
    }

    fn drop_log_removes_everything(index: impl OffsetIndex) {
        let meta = IndexOp::PutMeta {
            key: "k".into(),
            value: vec![1],
        };
        index
            .apply("t", &[entry(1, 0, 0), time(5, 1), meta], false)
            .unwrap();
        index.apply("t", &[IndexOp::DropLog], false).unwrap();
        assert_eq!(index.floor_offset("t", 10).unwrap(), None);
        assert_eq!(index.last_time_before("t", 10).unwrap(), None);
        assert_eq!(index.meta("t", "k").unwrap(), None);
    }
}
