//! The five codecs of the v2 format, framed the way Kafka's Java client frames them.
//!
//! The whole records section of a batch is compressed as one stream:
//! - gzip: a gzip stream (RFC 1952); several members are accepted when reading, as Java's
//!   `GZIPInputStream` accepts them.
//! - snappy: NOT the standard snappy framing format but xerial's `SnappyOutputStream` framing,
//!   which Kafka has used since 0.8: an 8-byte magic `82 'SNAPPY' 00`, two big-endian i32
//!   (version 1, compatible version 1), then chunks of `[u32 BE length][raw snappy block]`, each
//!   block at most 32 KiB uncompressed. Readers also accept a bare raw snappy block, as xerial's
//!   `SnappyInputStream` does.
//! - lz4: the standard LZ4 frame format, with independent 64 KiB blocks and no checksums, which
//!   is what Kafka writes. Kafka's reader refuses linked blocks, so we never write them.
//! - zstd: a standard zstd frame, level 3 (Kafka's default).
//!
//! Decompression is capped (see [`decompress`]) because a few kilobytes of zstd or gzip can
//! expand to gigabytes.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use super::error::BatchError;

/// Compression codec of a record batch: bits 0-2 of the batch attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

pub(crate) const CODEC_MASK: i16 = 0x07;

impl Compression {
    /// Every codec, in attribute-code order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec's number in the batch attributes.
    pub fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec named by bits 0-2 of batch `attributes`; codes 5-7 are unknown.
    pub fn from_attributes(attributes: i16) -> Result<Compression, BatchError> {
        let code = (attributes & CODEC_MASK) as u8;
        match code {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            _ => Err(BatchError::UnknownCompression { code }),
        }
    }

    /// Kafka's name for the codec, as used by `compression.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A codec name that is not one of `none`, `gzip`, `snappy`, `lz4`, `zstd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression codec name: expected one of none, gzip, snappy, lz4, zstd")]
pub struct ParseCompressionError;

impl FromStr for Compression {
    type Err = ParseCompressionError;

    /// Parses Kafka's lowercase codec names, exactly as Kafka's `CompressionType.forName` does.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Compression::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or(ParseCompressionError)
    }
}

/// Kafka's default zstd level (`compression.zstd.level`).
const ZSTD_LEVEL: i32 = 3;
/// xerial's default chunk size, which Kafka keeps.
const SNAPPY_CHUNK: usize = 32 * 1024;
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Magic, then version 1 and minimum compatible version 1 as big-endian i32.
const XERIAL_HEADER: [u8; 16] = [
    0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
];

/// A capacity that holds `codec`'s output for `raw_len` input bytes in all but pathological
/// cases (snappy's worst case is n + n/6 + 32 per chunk).
pub(crate) fn compressed_len_hint(raw_len: usize) -> usize {
    raw_len + raw_len / 6 + 64
}

/// Appends the compressed form of `raw` to `out`.
pub(crate) fn compress(
    codec: Compression,
    raw: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), BatchError> {
    let err = |source: io::Error| BatchError::Compression { codec, source };
    match codec {
        Compression::None => out.extend_from_slice(raw),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            enc.write_all(raw).map_err(err)?;
            enc.finish().map_err(err)?;
        }
        Compression::Snappy => snappy_xerial_compress(raw, out).map_err(err)?,
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            enc.write_all(raw).map_err(err)?;
            enc.finish().map_err(|e| err(e.into()))?;
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL).map_err(err)?;
            enc.write_all(raw).map_err(err)?;
            enc.finish().map_err(err)?;
        }
    }
    Ok(())
}

fn snappy_xerial_compress(raw: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    out.extend_from_slice(&XERIAL_HEADER);
    let mut encoder = snap::raw::Encoder::new();
    for chunk in raw.chunks(SNAPPY_CHUNK) {
        let len_at = out.len();
        let data_at = len_at + 4;
        out.resize(data_at + snap::raw::max_compress_len(chunk.len()), 0);
        let n = encoder.compress(chunk, &mut out[data_at..])?;
        out.truncate(data_at + n);
        let n = u32::try_from(n).map_err(|_| io::Error::other("snappy chunk over 4 GiB"))?;
        out[len_at..data_at].copy_from_slice(&n.to_be_bytes());
    }
    Ok(())
}

/// Decompresses `data`, refusing output longer than `limit` bytes.
///
/// The limit is checked while decompressing, so a bomb costs at most `limit` bytes of memory
/// (plus the codec's window, at most 128 MiB for zstd), never its full expansion.
pub(crate) fn decompress(
    codec: Compression,
    data: &[u8],
    limit: usize,
) -> Result<Vec<u8>, BatchError> {
    let err = |source: io::Error| BatchError::Decompression { codec, source };
    match codec {
        Compression::None => {
            if data.len() > limit {
                return Err(BatchError::DecompressedTooLarge { codec, limit });
            }
            Ok(data.to_vec())
        }
        Compression::Gzip => read_capped(
            codec,
            flate2::read::MultiGzDecoder::new(data),
            data.len(),
            limit,
        ),
        Compression::Snappy => snappy_xerial_decompress(data, limit),
        Compression::Lz4 => read_capped(
            codec,
            lz4_flex::frame::FrameDecoder::new(data),
            data.len(),
            limit,
        ),
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(data).map_err(err)?;
            read_capped(codec, dec, data.len(), limit)
        }
    }
}

fn read_capped<R: Read>(
    codec: Compression,
    reader: R,
    compressed_len: usize,
    limit: usize,
) -> Result<Vec<u8>, BatchError> {
    // A guess at the ratio saves most regrowth without trusting the input for the size.
    let mut out = Vec::with_capacity(compressed_len.saturating_mul(4).min(limit));
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|source| BatchError::Decompression { codec, source })?;
    if out.len() > limit {
        return Err(BatchError::DecompressedTooLarge { codec, limit });
    }
    Ok(out)
}

fn snappy_xerial_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    let codec = Compression::Snappy;
    let invalid = |msg: &'static str| BatchError::Decompression {
        codec,
        source: io::Error::new(io::ErrorKind::InvalidData, msg),
    };
    let snap_err = |e: snap::Error| BatchError::Decompression {
        codec,
        source: e.into(),
    };
    let mut decoder = snap::raw::Decoder::new();

    if !data.starts_with(&XERIAL_MAGIC) {
        let n = snap::raw::decompress_len(data).map_err(snap_err)?;
        if n > limit {
            return Err(BatchError::DecompressedTooLarge { codec, limit });
        }
        let mut out = vec![0; n];
        decoder.decompress(data, &mut out).map_err(snap_err)?;
        return Ok(out);
    }

    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        // xerial's reader accepts streams concatenated header and all, so do we.
        if rest.starts_with(&XERIAL_MAGIC) {
            rest = rest
                .get(XERIAL_HEADER.len()..)
                .ok_or_else(|| invalid("truncated xerial snappy header"))?;
            continue;
        }
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| invalid("truncated xerial snappy chunk length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > tail.len() {
            return Err(invalid("xerial snappy chunk runs past the end of the data"));
        }
        let (chunk, tail) = tail.split_at(len);
        let n = snap::raw::decompress_len(chunk).map_err(snap_err)?;
        let start = out.len();
        if n > limit - start {
            return Err(BatchError::DecompressedTooLarge { codec, limit });
        }
        out.resize(start + n, 0);
        decoder
            .decompress(chunk, &mut out[start..])
            .map_err(snap_err)?;
        rest = tail;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Compression::ALL {
            assert_eq!(c.as_str().parse::<Compression>(), Ok(c));
            assert_eq!(
                Compression::from_attributes(i16::from(c.code())).ok(),
                Some(c)
            );
            assert_eq!(c.to_string(), c.as_str());
        }
        assert_eq!("GZIP".parse::<Compression>(), Err(ParseCompressionError));
        assert_eq!(
            "producer".parse::<Compression>(),
            Err(ParseCompressionError)
        );
        for code in 5..=7 {
            assert!(matches!(
                Compression::from_attributes(code),
                Err(BatchError::UnknownCompression { code: c }) if i16::from(c) == code
            ));
        }
        // Bits above the codec are other flags, not part of the code.
        assert_eq!(
            Compression::from_attributes(0x7f8 | 3).ok(),
            Some(Compression::Lz4)
        );
    }

    #[test]
    fn every_codec_round_trips_across_chunk_boundaries() {
        let raw: Vec<u8> = (0..200_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 7) as u8)
            .collect();
        for codec in Compression::ALL {
            let mut out = Vec::new();
            compress(codec, &raw, &mut out).expect("compress");
            let back = decompress(codec, &out, raw.len()).expect("decompress");
            assert!(back == raw, "{codec} round trip");
            assert!(matches!(
                decompress(codec, &out, raw.len() - 1),
                Err(BatchError::DecompressedTooLarge { .. })
            ));
        }
    }

    #[test]
    fn snappy_uses_xerial_framing() {
        let raw = vec![b'a'; 70_000];
        let mut out = Vec::new();
        compress(Compression::Snappy, &raw, &mut out).expect("compress");
        assert_eq!(out[..16], XERIAL_HEADER);
        // 70 000 bytes make three chunks of at most 32 KiB.
        let mut rest = &out[16..];
        let mut chunks = 0;
        while !rest.is_empty() {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let n = snap::raw::decompress_len(&rest[4..4 + len]).expect("chunk");
            assert!(n <= SNAPPY_CHUNK);
            rest = &rest[4 + len..];
            chunks += 1;
        }
        assert_eq!(chunks, 3);
    }

    #[test]
    fn snappy_reads_raw_blocks_and_concatenated_streams() {
        let raw = b"hello hello hello hello".to_vec();
        let block = snap::raw::Encoder::new().compress_vec(&raw).expect("raw");
        assert_eq!(
            decompress(Compression::Snappy, &block, 1024).expect("raw"),
            raw
        );

        let mut twice = Vec::new();
        compress(Compression::Snappy, &raw, &mut twice).expect("compress");
        let one = twice.clone();
        twice.extend_from_slice(&one);
        let mut expect = raw.clone();
        expect.extend_from_slice(&raw);
        assert_eq!(
            decompress(Compression::Snappy, &twice, 1024).expect("concat"),
            expect
        );
    }

    #[test]
    fn lz4_frame_matches_what_kafka_writes() {
        let mut out = Vec::new();
        compress(Compression::Lz4, b"some records", &mut out).expect("compress");
        // Magic 0x184D2204 (little endian), FLG 0x60 = version 01 + block independence, no
        // checksums or content size; BD 0x40 = 64 KiB blocks. Kafka's reader refuses FLG
        // without the independence bit.
        assert_eq!(out[..6], [0x04, 0x22, 0x4d, 0x18, 0x60, 0x40]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let garbage = [0x5au8; 64];
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert!(matches!(
                decompress(codec, &garbage, 1 << 20),
                Err(BatchError::Decompression { .. })
            ));
        }
        let mut truncated = XERIAL_HEADER.to_vec();
        truncated.extend_from_slice(&[0, 0, 0, 9, 1, 2]);
        assert!(matches!(
            decompress(Compression::Snappy, &truncated, 1 << 20),
            Err(BatchError::Decompression { .. })
        ));
    }
}
