//! One segment file: the batches of a log from `base` up to the next segment's base.
//!
//! A segment is written only at its end and read with positioned reads, so readers need no
//! lock against the writer. Large reads of data in the page cache are mappings of the file
//! (`mapped.rs`), so a cut below a live mapping replaces the file instead of shortening it.
//! The file name is the base offset, zero-padded to 20 digits as in
//! Kafka, so that a directory listing sorts segments in offset order.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::batch::{self, BatchHeader, HEADER_LEN};
use crate::error::{StorageError, Subject, Verb};
use crate::mapped::{self, Mappings, MAP_AT};
use crate::Offset;

pub(crate) const SUFFIX: &str = ".log";

pub(crate) fn file_name(base: Offset) -> String {
    format!("{base:020}{SUFFIX}")
}

/// The base offset a segment file name stands for, or `None` for other files.
pub(crate) fn parse_file_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) struct Segment {
    pub base: Offset,
    pub path: PathBuf,
    pub file: Arc<File>,
    pub size: u64,
    /// Offset after this segment's last batch (`base` when empty).
    pub next_offset: Offset,
    /// Greatest record timestamp in the segment; `None` when empty.
    pub max_timestamp: Option<i64>,
    pub created_ms: i64,
    /// Bytes appended since the last sparse index entry.
    pub unindexed_bytes: u64,
    /// How far the live mappings of this file reach (reads handed out as mappings).
    mappings: Arc<Mappings>,
}

impl Segment {
    fn error(&self, verb: Verb, e: std::io::Error) -> StorageError {
        StorageError::new(Subject::Segment(self.path.clone()), verb, e)
    }

    pub fn create(dir: &Path, base: Offset, created_ms: i64) -> Result<Segment, StorageError> {
        let path = dir.join(file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::new(Subject::Segment(path.clone()), Verb::Create, e))?;
        Ok(Segment {
            base,
            path,
            file: Arc::new(file),
            size: 0,
            next_offset: base,
            max_timestamp: None,
            created_ms,
            unindexed_bytes: 0,
            mappings: Arc::default(),
        })
    }

    /// Opens an existing file; `next_offset` and `max_timestamp` are the caller's to fill in.
    pub fn open(dir: &Path, base: Offset) -> Result<Segment, StorageError> {
        let path = dir.join(file_name(base));
        let subject = || Subject::Segment(path.clone());
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| StorageError::new(subject(), Verb::Open, e))?;
        let size = file
            .metadata()
            .map_err(|e| StorageError::new(subject(), Verb::Open, e))?
            .len();
        Ok(Segment {
            base,
            path,
            file: Arc::new(file),
            size,
            next_offset: base,
            max_timestamp: None,
            created_ms: 0,
            unindexed_bytes: 0,
            mappings: Arc::default(),
        })
    }

    /// Appends `parts` as one write; returns the position it starts at.
    pub fn append(&mut self, parts: &[&[u8]]) -> Result<u64, StorageError> {
        let position = self.size;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut file = &*self.file;
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let n = file
                .write_vectored(rest)
                .map_err(|e| self.error(Verb::Write, e))?;
            if n == 0 {
                let e = std::io::Error::new(std::io::ErrorKind::WriteZero, "segment write");
                return Err(self.error(Verb::Write, e));
            }
            IoSlice::advance_slices(&mut rest, n);
        }
        self.size += total as u64;
        Ok(position)
    }

    /// Reads `len` bytes at `position` into shared memory (no copy when sliced later): a
    /// mapping of the page cache when the range is large and resident, else a new buffer.
    pub fn read(&self, position: u64, len: usize) -> Result<Bytes, StorageError> {
        if len >= MAP_AT && position + len as u64 <= self.size {
            if let Some(mapped) = mapped::map_resident(&self.file, position, len, &self.mappings) {
                return Ok(mapped);
            }
        }
        let buf =
            read_at_uninit(&self.file, len, position).map_err(|e| self.error(Verb::Read, e))?;
        Ok(Bytes::from(buf))
    }

    /// Reads the header of the batch at `position`, or `None` at or past the end.
    pub fn header_at(&self, position: u64) -> Result<Option<BatchHeader>, StorageError> {
        if position + HEADER_LEN as u64 > self.size {
            return Ok(None);
        }
        let mut buf = [0u8; HEADER_LEN];
        self.file
            .read_exact_at(&mut buf, position)
            .map_err(|e| self.error(Verb::Read, e))?;
        Ok(BatchHeader::parse(&buf).ok())
    }

    pub fn sync(&self) -> Result<(), StorageError> {
        self.file.sync_data().map_err(|e| self.error(Verb::Sync, e))
    }

    /// Cuts the file to `len` bytes and makes the cut durable.
    pub fn truncate(&mut self, len: u64) -> Result<(), StorageError> {
        if self.mappings.furthest() > len {
            return self.replace_with_prefix(len);
        }
        self.file
            .set_len(len)
            .map_err(|e| self.error(Verb::Truncate, e))?;
        self.size = len;
        self.sync()
    }

    /// Cuts the file to `len` bytes while mappings reach past `len`: shortening the file
    /// under them would kill the process when they are read, so the first `len` bytes go to
    /// a new file that takes the old one's name. The mappings keep the old file's data.
    fn replace_with_prefix(&mut self, len: u64) -> Result<(), StorageError> {
        let cut = self.path.with_extension("log.cut");
        let fail =
            |e: std::io::Error| StorageError::new(Subject::Segment(cut.clone()), Verb::Truncate, e);
        let mut prefix = File::open(&self.path)
            .map_err(|e| self.error(Verb::Truncate, e))?
            .take(len);
        let mut copy = File::create(&cut).map_err(fail)?;
        std::io::copy(&mut prefix, &mut copy).map_err(fail)?;
        copy.sync_all().map_err(fail)?;
        std::fs::rename(&cut, &self.path).map_err(fail)?;
        sync_dir(&self.path).map_err(|e| self.error(Verb::Truncate, e))?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.error(Verb::Truncate, e))?;
        self.file = Arc::new(file);
        self.mappings = Arc::default();
        self.size = len;
        Ok(())
    }

    pub fn delete(self) -> Result<(), StorageError> {
        std::fs::remove_file(&self.path).map_err(|e| self.error(Verb::Delete, e))
    }

    /// Walks the batches from `position` to the end of the file, reading in large chunks, and
    /// calls `visit` with each batch's position and bytes (verified or not, as `visit` likes).
    /// `visit` returns `false` to stop. Returns the position where the walk stopped and the
    /// bytes read. A batch that runs past the end of the file ends the walk: that is a torn
    /// write, left for the caller to cut.
    pub fn walk(
        &self,
        mut position: u64,
        mut visit: impl FnMut(u64, &[u8]) -> bool,
    ) -> Result<(u64, u64), StorageError> {
        const CHUNK: u64 = 8 << 20;
        let mut scanned = 0u64;
        while position < self.size {
            let want = CHUNK.min(self.size - position);
            let chunk = self.read(position, want as usize)?;
            scanned += want;
            let mut at = 0usize;
            loop {
                let rest = &chunk[at..];
                let Some(total) = whole_batch_len(rest) else {
                    break;
                };
                if !visit(position + at as u64, &rest[..total]) {
                    return Ok((position + at as u64, scanned));
                }
                at += total;
            }
            if at == 0 {
                // The next batch is larger than a chunk, or torn: read exactly it if it fits.
                let Some(total) = declared_len(&chunk) else {
                    return Ok((position, scanned));
                };
                if total as u64 > self.size - position {
                    return Ok((position, scanned));
                }
                let whole = self.read(position, total)?;
                scanned += total as u64;
                if !visit(position, &whole) {
                    return Ok((position, scanned));
                }
                at = total;
            }
            position += at as u64;
        }
        Ok((position, scanned))
    }
}

/// The length a batch at the start of `buf` declares, if its length field is readable.
fn declared_len(buf: &[u8]) -> Option<usize> {
    let field: [u8; 4] = buf.get(8..12)?.try_into().ok()?;
    let len = i32::from_be_bytes(field);
    if len < (HEADER_LEN - 12) as i32 {
        // Shorter than a header: garbage, never a batch. Report a length that cannot fit.
        return Some(usize::MAX);
    }
    Some(len as usize + 12)
}

/// The length of the batch at the start of `buf` if all of it is in `buf`.
fn whole_batch_len(buf: &[u8]) -> Option<usize> {
    let total = declared_len(buf)?;
    (total <= buf.len()).then_some(total)
}

/// Parses a header that `walk` handed over; the walk guarantees the bytes are there.
pub(crate) fn header(bytes: &[u8]) -> Option<BatchHeader> {
    batch::BatchHeader::parse(bytes).ok()
}

/// Makes a rename in the directory of `path` durable.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

/// Reads exactly `len` bytes at `position` into a new buffer that is not zeroed first: fetches
/// read up to megabytes per call, and zeroing them took about 8% of the machine's CPU while
/// three brokers served one consumer (BENCHMARKS.md, backlog read). keeld's allocator
/// (jemalloc) reuses freed buffers; under glibc's, each was fresh pages that faulted in
/// `pread`, which made this slower than zeroing.
fn read_at_uninit(file: &File, len: usize, position: u64) -> std::io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let done = buf.len();
        let spare = &mut buf.spare_capacity_mut()[..len - done];
        let at = libc::off_t::try_from(position + done as u64)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: pread writes at most `spare.len()` bytes into memory the vector owns and has
        // not initialised; only the bytes it reports written are then counted as the vector's.
        let n =
            unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), at) };
        match n {
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            // SAFETY: the first `done + n` bytes are now written (see above).
            n => unsafe { buf.set_len(done + n as usize) },
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_sort_and_parse() {
        assert_eq!(file_name(42), "00000000000000000042.log");
        assert_eq!(parse_file_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_file_name("00000000000000000042.index"), None);
    }

    #[test]
    fn positioned_reads_return_exactly_the_bytes_asked_or_fail_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(
            read_at_uninit(&file, 200_000, 1_000).unwrap(),
            &data[1_000..201_000]
        );
        assert!(read_at_uninit(&file, 0, 5).unwrap().is_empty());
        let past = read_at_uninit(&file, 10, 299_995).unwrap_err();
        assert_eq!(past.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    fn inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn a_cut_below_a_live_mapping_replaces_the_file_and_the_mapping_keeps_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 0, 0).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        seg.append(&[&data]).unwrap();
        let before = inode(&seg.path);

        let small = seg.read(0, 100).unwrap();
        seg.truncate(290_000).unwrap();
        assert_eq!(
            inode(&seg.path),
            before,
            "no mapping: the file is shortened in place"
        );
        assert_eq!(&small[..], &data[..100]);

        let mapped = seg.read(1_000, 200_000).unwrap();
        assert_eq!(
            seg.mappings.furthest(),
            201_000,
            "a large cached read is a mapping"
        );
        seg.truncate(50_000).unwrap();
        assert_ne!(
            inode(&seg.path),
            before,
            "the file under the mapping was replaced"
        );
        assert_eq!(std::fs::metadata(&seg.path).unwrap().len(), 50_000);
        assert_eq!(seg.size, 50_000);
        assert_eq!(
            &mapped[..],
            &data[1_000..201_000],
            "the mapping still reads the old bytes"
        );

        let appended = vec![9u8; 100_000];
        assert_eq!(seg.append(&[&appended]).unwrap(), 50_000);
        let read = seg.read(0, 150_000).unwrap();
        assert_eq!(&read[..50_000], &data[..50_000]);
        assert_eq!(&read[50_000..], &appended[..]);
        drop(mapped);
        assert_eq!(
            seg.mappings.furthest(),
            150_000,
            "only the new file's mapping is counted"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from(file_name(0))],
            "no leftover file"
        );
    }
}
