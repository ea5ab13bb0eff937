//! A small disk for one test node: a tmpfs of a given size mounted as its data directory, and
//! a filler file that takes all its free space (needs root and `mount`).
//!
//! The mount's source is named `keel-disk-<test pid>`; [`SmallDisk::mount`] first unmounts
//! those of test processes that no longer run, and `Drop` unmounts this one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs.
pub struct SmallDisk {
    path: PathBuf,
}

const SOURCE_PREFIX: &str = "keel-disk-";
const FILLER: &str = "filler";

fn umount(path: &str) {
    let ok = Command::new("umount")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        // Still busy (a process holding a file open): detach it now, freed when unused.
        let _ = Command::new("umount").args(["-l", path]).status();
    }
}

/// Unmounts small disks of test processes that are gone.
fn sweep_stale() {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(source), Some(target)) = (fields.next(), fields.next()) else {
            continue;
        };
        let pid = source
            .strip_prefix(SOURCE_PREFIX)
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            umount(target);
        }
    }
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB at `path` (created if missing).
    pub fn mount(path: &Path, mib: u64) -> SmallDisk {
        sweep_stale();
        std::fs::create_dir_all(path).expect("mount point");
        let source = format!("{SOURCE_PREFIX}{}", std::process::id());
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), &source])
            .arg(path)
            .output()
            .expect("the mount command runs");
        assert!(
            out.status.success(),
            "mount tmpfs at {}: {} (the disk-full test needs root)",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk {
            path: path.to_owned(),
        }
    }

    /// Bytes free on the disk.
    pub fn free_bytes(&self) -> u64 {
        let path = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: statvfs(3) writes into the zeroed struct we own; the path is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
        assert_eq!(rc, 0, "statvfs {}", self.path.display());
        st.f_bavail * st.f_frsize
    }

    /// Grows the filler file until the disk is full; returns the bytes added.
    pub fn fill(&self) -> u64 {
        self.fill_leaving(0)
    }

    /// Grows the filler file until at most `keep` bytes are free; returns the bytes added.
    pub fn fill_leaving(&self, keep: u64) -> u64 {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path.join(FILLER))
            .expect("filler");
        let mut written = 0u64;
        loop {
            let free = self.free_bytes();
            if free <= keep {
                return written;
            }
            let chunk = vec![0xAAu8; (free - keep).min(1 << 20) as usize];
            match f.write(&chunk) {
                Ok(0) => return written,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return written,
                Err(e) => panic!("filling {}: {e}", self.path.display()),
            }
        }
    }

    /// Deletes the filler: the space is free again.
    pub fn free(&self) {
        std::fs::remove_file(self.path.join(FILLER)).expect("remove the filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        umount(&self.path.to_string_lossy());
    }
}
