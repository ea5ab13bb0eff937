//! Which partition a record goes to: Kafka's default partitioner, so that keys land where a
//! Kafka client would put them.
//!
//! - A record with an explicit partition goes there.
//! - A keyed record goes to `toPositive(murmur2(key)) % partitions`, exactly as Kafka's
//!   `BuiltInPartitioner.partitionForKey` computes it: murmur2 with Kafka's seed
//!   `0x9747b28c` over the key bytes, the sign bit masked off (`& 0x7fffffff`, Kafka's
//!   `Utils.toPositive`, not `abs`), then the remainder.
//! - An unkeyed record goes to the topic's *sticky* partition ([`Sticky`]): all unkeyed
//!   records of a topic fill one batch, and the partition changes when that batch is closed.
//!   Fuller batches mean fewer, larger requests (Kafka's KIP-480).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

/// Kafka's `Utils.murmur2`: MurmurHash2 (32 bit) of `key` with Kafka's seed, as the signed
/// value Java returns.
pub fn murmur2(key: &[u8]) -> i32 {
    murmur2::murmur2(key, murmur2::KAFKA_SEED) as i32
}

/// The partition of a keyed record among `partitions`: `toPositive(murmur2(key)) %
/// partitions`. `partitions` must be positive.
///
/// ```
/// // From Kafka's UtilsTest.testMurmur2: murmur2("foobar") = -790332482.
/// assert_eq!(keel_client::partition_for_key(b"foobar", 1 << 30), (-790332482i32 & 0x7fffffff) % (1 << 30));
/// ```
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// The sticky partition of each topic for unkeyed records.
#[derive(Debug)]
pub(crate) struct Sticky {
    current: HashMap<String, i32>,
    random: Random,
}

impl Sticky {
    pub(crate) fn new() -> Self {
        Self {
            current: HashMap::new(),
            random: Random::new(),
        }
    }

    /// The partition for the next unkeyed record of `topic`, which has `partitions`
    /// partitions; picks one at random the first time (and after the count changed).
    pub(crate) fn partition(&mut self, topic: &str, partitions: i32) -> i32 {
        if let Some(&p) = self.current.get(topic) {
            if p < partitions {
                return p;
            }
        }
        let p = self.random.below(partitions);
        self.current.insert(topic.to_string(), p);
        p
    }

    /// Moves `topic` off `closed`, whose batch was just closed, to another partition (the same
    /// when the topic has only one). A no-op when the topic already moved on.
    pub(crate) fn batch_closed(&mut self, topic: &str, closed: i32, partitions: i32) {
        if self.current.get(topic) != Some(&closed) {
            return;
        }
        let next = if partitions <= 1 {
            0
        } else {
            // Any partition but `closed`, each equally likely.
            let pick = self.random.below(partitions - 1);
            if pick >= closed {
                pick + 1
            } else {
                pick
            }
        };
        self.current.insert(topic.to_string(), next);
    }
}

/// A small xorshift generator: the sticky partitioner needs spread, not unpredictability,
/// and this keeps a dependency out. Seeded from the standard library's per-process random
/// hasher keys.
#[derive(Debug)]
struct Random(u64);

impl Random {
    fn new() -> Self {
        Self(RandomState::new().hash_one(0u64) | 1)
    }

    /// A number in `0..n`; `n` must be positive.
    fn below(&mut self, n: i32) -> i32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % n as u64) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's own vectors: `UtilsTest.testMurmur2` in
    /// `clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java`.
    const KAFKA_MURMUR2: [(&[u8], i32); 6] = [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58897971,
        ),
        (b"abc", 479470107),
    ];

    #[test]
    fn murmur2_matches_kafkas_test_vectors() {
        for (key, want) in KAFKA_MURMUR2 {
            assert_eq!(murmur2(key), want, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn keyed_partition_masks_the_sign_bit_then_takes_the_remainder() {
        // toPositive(-973932308) = -973932308 & 0x7fffffff = 1173551340, not |x| = 973932308.
        assert_eq!(-973932308i32 & 0x7fff_ffff, 1173551340);
        assert_eq!(partition_for_key(b"21", 3), 1173551340 % 3);
        assert_eq!(partition_for_key(b"21", 3), 0);
        assert_ne!(partition_for_key(b"21", 3), 973932308 % 3);
        // abc: positive already.
        assert_eq!(partition_for_key(b"abc", 10), 479470107 % 10);
        assert_eq!(partition_for_key(b"abc", 10), 7);
        // foobar: 1357151166 after masking.
        assert_eq!(partition_for_key(b"foobar", 6), 1357151166 % 6);
        for (key, _) in KAFKA_MURMUR2 {
            assert_eq!(partition_for_key(key, 1), 0);
        }
    }

    #[test]
    fn the_empty_key_is_hashed_too() {
        // Kafka hashes an empty (non-null) key like any other.
        let p = partition_for_key(b"", 7);
        assert!((0..7).contains(&p));
        assert_eq!(p, partition_for_key(b"", 7));
    }

    #[test]
    fn sticky_stays_until_its_batch_closes_then_moves_elsewhere() {
        let mut s = Sticky::new();
        let first = s.partition("t", 4);
        for _ in 0..10 {
            assert_eq!(s.partition("t", 4), first);
        }
        for _ in 0..50 {
            let before = s.partition("t", 4);
            s.batch_closed("t", before, 4);
            let after = s.partition("t", 4);
            assert_ne!(after, before);
            assert!((0..4).contains(&after));
        }
    }

    #[test]
    fn sticky_ignores_stale_closes_and_handles_one_partition_and_shrinks() {
        let mut s = Sticky::new();
        let p = s.partition("t", 3);
        s.batch_closed("t", (p + 1) % 3, 3);
        assert_eq!(
            s.partition("t", 3),
            p,
            "a close of another partition moves nothing"
        );
        assert_eq!(s.partition("one", 1), 0);
        s.batch_closed("one", 0, 1);
        assert_eq!(s.partition("one", 1), 0);
        // Topics are independent.
        let q = s.partition("u", 1000);
        assert!((0..1000).contains(&q));
        assert_eq!(s.partition("t", 3), p);
    }

    #[test]
    fn sticky_spreads_over_every_partition() {
        let mut s = Sticky::new();
        let mut seen = [false; 5];
        for _ in 0..500 {
            let p = s.partition("t", 5);
            seen[p as usize] = true;
            s.batch_closed("t", p, 5);
        }
        assert!(seen.iter().all(|&b| b), "{seen:?}");
    }
}
