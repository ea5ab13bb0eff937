//! Kafka's variable-length integers: zigzag, then unsigned LEB128 (protobuf's `sint32`/`sint64`).
//!
//! Zigzag keeps small negative numbers short (-1 takes one byte), which matters because -1 is
//! the null marker of every length field in a record.
//!
//! Decoding rejects encodings longer than the type allows (more than 5 bytes for an `i32`,
//! 10 for an `i64`) and encodings whose last byte carries bits beyond the type's width, so a
//! corrupt length can never wrap into a plausible small value. Padded encodings that fit
//! (`0x80 0x00` for zero) are accepted, as Kafka's reader accepts them.

/// Longest encoding of an `i32` varint.
pub(crate) const MAX_VARINT_LEN: usize = 5;
/// Longest encoding of an `i64` varlong.
pub(crate) const MAX_VARLONG_LEN: usize = 10;

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The input ended before the last byte (one without the continuation bit).
    Truncated,
    /// Longer than the type allows, or the value does not fit the type.
    Overlong,
}

#[inline]
pub(crate) fn zigzag32(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

#[inline]
pub(crate) fn unzigzag32(u: u32) -> i32 {
    ((u >> 1) as i32) ^ -((u & 1) as i32)
}

#[inline]
pub(crate) fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub(crate) fn unzigzag64(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

#[inline]
fn unsigned_len(u: u64) -> usize {
    // Seven payload bits per byte; `| 1` makes zero take one byte.
    let bits = 64 - (u | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Encoded size of `v` as a zigzag varint.
#[inline]
pub(crate) fn varint_len(v: i32) -> usize {
    unsigned_len(u64::from(zigzag32(v)))
}

/// Encoded size of `v` as a zigzag varlong.
#[inline]
pub(crate) fn varlong_len(v: i64) -> usize {
    unsigned_len(zigzag64(v))
}

#[inline]
fn put_unsigned(out: &mut Vec<u8>, mut u: u64) {
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_unsigned(out, u64::from(zigzag32(v)));
}

#[inline]
pub(crate) fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_unsigned(out, zigzag64(v));
}

/// Reads an unsigned LEB128 of at most `max_len` bytes whose value fits in `bits` bits.
/// Returns the value and the number of bytes read.
#[inline]
fn read_unsigned(buf: &[u8], max_len: usize, bits: u32) -> Result<(u64, usize), VarintError> {
    let mut value = 0u64;
    for i in 0..max_len {
        let Some(&byte) = buf.get(i) else {
            return Err(VarintError::Truncated);
        };
        let shift = 7 * i as u32;
        let payload = u64::from(byte & 0x7f);
        if i == max_len - 1 {
            // The last allowed byte must end the number and must not carry bits that fall
            // outside the type.
            let room = bits - shift;
            if byte & 0x80 != 0 || payload >> room != 0 {
                return Err(VarintError::Overlong);
            }
        }
        value |= payload << shift;
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(VarintError::Overlong)
}

/// Reads a zigzag `i32` varint from the start of `buf`; returns it and its encoded length.
#[inline]
pub(crate) fn read_varint(buf: &[u8]) -> Result<(i32, usize), VarintError> {
    let (u, n) = read_unsigned(buf, MAX_VARINT_LEN, 32)?;
    // read_unsigned guarantees u < 2^32.
    Ok((unzigzag32(u as u32), n))
}

/// Reads a zigzag `i64` varlong from the start of `buf`; returns it and its encoded length.
#[inline]
pub(crate) fn read_varlong(buf: &[u8]) -> Result<(i64, usize), VarintError> {
    let (u, n) = read_unsigned(buf, MAX_VARLONG_LEN, 64)?;
    Ok((unzigzag64(u), n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zigzag_matches_kafka_table() {
        // (value, zigzag, encoding) from the protobuf/Kafka zigzag definition.
        let cases: &[(i32, u32, &[u8])] = &[
            (0, 0, &[0x00]),
            (-1, 1, &[0x01]),
            (1, 2, &[0x02]),
            (-2, 3, &[0x03]),
            (63, 126, &[0x7e]),
            (-64, 127, &[0x7f]),
            (64, 128, &[0x80, 0x01]),
            (300, 600, &[0xd8, 0x04]),
            (i32::MAX, u32::MAX - 1, &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i32::MIN, u32::MAX, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for &(v, z, enc) in cases {
            assert_eq!(zigzag32(v), z, "zigzag({v})");
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out, enc, "encoding of {v}");
            assert_eq!(varint_len(v), enc.len());
            assert_eq!(read_varint(enc), Ok((v, enc.len())));
        }
    }

    #[test]
    fn varlong_extremes() {
        let mut out = Vec::new();
        put_varlong(&mut out, i64::MIN);
        assert_eq!(
            out,
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        assert_eq!(read_varlong(&out), Ok((i64::MIN, 10)));
        assert_eq!(varlong_len(i64::MIN), 10);
        assert_eq!(varlong_len(0), 1);
    }

    #[test]
    fn rejects_overlong_and_truncated() {
        // Six bytes for an i32.
        assert_eq!(
            read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            Err(VarintError::Overlong)
        );
        // Five bytes whose last carries bits above bit 31.
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x1f]),
            Err(VarintError::Overlong)
        );
        // Eleven bytes for an i64, and a tenth byte above bit 63.
        assert_eq!(read_varlong(&[0x80; 11]), Err(VarintError::Overlong));
        let mut ten = [0xffu8; 10];
        ten[9] = 0x02;
        assert_eq!(read_varlong(&ten), Err(VarintError::Overlong));
        assert_eq!(read_varint(&[]), Err(VarintError::Truncated));
        assert_eq!(read_varint(&[0x80, 0x80]), Err(VarintError::Truncated));
        // Padding that still fits is accepted, as Kafka does.
        assert_eq!(read_varint(&[0x80, 0x00]), Ok((0, 2)));
    }

    proptest! {
        #[test]
        fn varint_round_trip(v in any::<i32>(), tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            prop_assert_eq!(out.len(), varint_len(v));
            out.extend_from_slice(&tail);
            prop_assert_eq!(read_varint(&out), Ok((v, varint_len(v))));
        }

        #[test]
        fn varlong_round_trip(v in any::<i64>()) {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            prop_assert_eq!(out.len(), varlong_len(v));
            prop_assert_eq!(read_varlong(&out), Ok((v, out.len())));
        }

        #[test]
        fn read_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let _ = read_varint(&bytes);
            let _ = read_varlong(&bytes);
        }
    }
}
