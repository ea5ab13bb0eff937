//! Reads of a segment that hand out the page cache itself instead of a copy.
//!
//! A large read whose pages are all in the page cache (a consumer catching up on recent data,
//! or any read a second time) is mapped, and the answer is a `Bytes` over the mapping: the
//! record data then goes from the page cache to the socket with one copy, the kernel's, where
//! `pread` made a second one into a buffer first (BENCHMARKS.md, backlog read). A read whose
//! pages are not all resident is left to `pread`: a fault on a mapped page that is not in
//! memory would block the async thread sending the answer on the disk.
//!
//! A mapping must never reach past the end of its file: touching such a page kills the
//! process (`SIGBUS`). Segments only grow, are deleted whole (the mapping keeps the inode) or
//! are cut back when a follower's log diverges; [`Mappings`] records how far the live mappings
//! of a segment reach so that a cut below them replaces the file instead of shortening it
//! (`Segment::truncate`).

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use memmap2::{Advice, Mmap, MmapOptions};

/// Reads at least this long are mapped when resident; shorter ones cost less to copy than
/// to map, check and unmap.
pub(crate) const MAP_AT: usize = 64 << 10;

/// The ends (file positions) of a segment's live mappings, each with how many reach it.
#[derive(Debug, Default)]
pub(crate) struct Mappings {
    ends: Mutex<BTreeMap<u64, usize>>,
}

impl Mappings {
    /// The furthest position any live mapping reaches, 0 without one.
    pub fn furthest(&self) -> u64 {
        self.lock().last_key_value().map_or(0, |(end, _)| *end)
    }

    fn add(&self, end: u64) {
        *self.lock().entry(end).or_default() += 1;
    }

    fn remove(&self, end: u64) {
        let mut ends = self.lock();
        if let Some(count) = ends.get_mut(&end) {
            *count -= 1;
            if *count == 0 {
                ends.remove(&end);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, usize>> {
        // Each change is one map update: a panic cannot leave it half done.
        self.ends.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A live mapping of `len` bytes at `skip` into `map`, registered in `registry` until dropped.
struct Mapped {
    map: Mmap,
    skip: usize,
    len: usize,
    end: u64,
    registry: Arc<Mappings>,
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.skip..self.skip + self.len]
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        self.registry.remove(self.end);
    }
}

/// `len` bytes of `file` at `position` as a mapping, if every page of them is in the page
/// cache; `None` otherwise (or when mapping fails), for the caller to `pread` instead. The
/// caller guarantees the range lies within the file and registers nothing itself.
pub(crate) fn map_resident(
    file: &File,
    position: u64,
    len: usize,
    registry: &Arc<Mappings>,
) -> Option<Bytes> {
    let page = page_size();
    let start = position - position % page;
    let skip = (position - start) as usize;
    // SAFETY: the mapping is read-only and private to this process; the segment never
    // shortens its file below a live mapping (module doc), so every mapped byte stays backed.
    let map = unsafe { MmapOptions::new().offset(start).len(skip + len).map(file) }.ok()?;
    if !resident(&map, page as usize) {
        return None;
    }
    // Fault the pages in now, in one call, rather than one fault per few pages while the
    // answer is copied to the socket. A kernel without MADV_POPULATE_READ faults them later.
    let _ = map.advise(Advice::PopulateRead);
    let end = position + len as u64;
    registry.add(end);
    Some(Bytes::from_owner(Mapped {
        map,
        skip,
        len,
        end,
        registry: registry.clone(),
    }))
}

/// Whether every page of `map` is in memory (`mincore`).
fn resident(map: &Mmap, page: usize) -> bool {
    let mut pages = vec![0u8; map.len().div_ceil(page)];
    // SAFETY: the mapping starts on a page boundary (its offset was aligned down) and `pages`
    // has one byte for each of its pages, which is what mincore writes.
    let done = unsafe { libc::mincore(map.as_ptr() as *mut _, map.len(), pages.as_mut_ptr()) };
    done == 0 && pages.iter().all(|p| p & 1 == 1)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    use super::*;

    fn file_with(dir: &std::path::Path, data: &[u8]) -> File {
        let path = dir.join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(data).unwrap();
        f.sync_all().unwrap();
        File::open(&path).unwrap()
    }

    #[test]
    fn a_resident_range_maps_at_any_position_and_is_registered_while_alive() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let file = file_with(dir.path(), &data);
        let registry = Arc::new(Mappings::default());
        let a = map_resident(&file, 1_001, 200_000, &registry).expect("just written: resident");
        let b = map_resident(&file, 5, 100_000, &registry).expect("resident");
        assert_eq!(&a[..], &data[1_001..201_001]);
        assert_eq!(&b[..], &data[5..100_005]);
        assert_eq!(registry.furthest(), 201_001);
        let slice = a.slice(10..20);
        drop(a);
        assert_eq!(
            registry.furthest(),
            201_001,
            "a slice keeps the mapping alive"
        );
        drop(slice);
        assert_eq!(registry.furthest(), 100_005);
        drop(b);
        assert_eq!(registry.furthest(), 0);
    }

    #[test]
    fn a_range_not_in_the_page_cache_is_not_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 1 << 20];
        let file = file_with(dir.path(), &data);
        // SAFETY: plain advice on an open file.
        let dropped =
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(dropped, 0);
        let registry = Arc::new(Mappings::default());
        if map_resident(&file, 0, data.len(), &registry).is_some() {
            // tmpfs keeps every page in memory whatever the advice: nothing to check there.
            let fs_type = nix_fs_type(dir.path());
            assert_eq!(fs_type, TMPFS_MAGIC, "dropped pages were reported resident");
        }
    }

    const TMPFS_MAGIC: i64 = 0x0102_1994;

    fn nix_fs_type(path: &std::path::Path) -> i64 {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: statfs writes into the zeroed struct it is given.
        let mut s: libc::statfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut s) }, 0);
        s.f_type as i64
    }
}
