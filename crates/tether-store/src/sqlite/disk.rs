//! Room on the disk: the free space of the data dir, the WAL's size, and a reserve file that
//! lets the store start when the disk is full.
//!
//! When the disk fills, appends fail (503) and nothing acknowledged is lost, but the store
//! still needs room of its own to come back: opening writes the WAL index, and a checkpoint
//! grows the database file by up to the WAL's size before the WAL can shrink. So the data dir
//! holds [`RESERVE_FILE`], space allocated while there was plenty. A store that opens with
//! less free space than the reserve's size deletes it first, and says so: the server starts,
//! checkpoints and truncates its WAL, and the operator has room to act. The reserve comes
//! back at a later start once the disk has room for it twice over.
//!
//! While running, [`Space`] keeps the disk from filling that far: free space must cover the
//! WAL's size (what a checkpoint copies into the database file) plus [`HEADROOM_BYTES`].
//! Writes that add data (appends, stream and task creation, task events) that would go past
//! that are refused with a storage error (503) before they reach the writer; control writes
//! (heartbeats, cancel, finish) still go through, so running tasks can end. If a checkpoint
//! fails all the same for want of room (another program filled the disk while the WAL was
//! large), the checkpointer gives the reserve back at once.

use crate::StoreError;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// The reserve's name inside the data dir.
pub const RESERVE_FILE: &str = "tether.reserve";

/// The default reserve: room for a WAL at its limit to be checkpointed.
pub const DEFAULT_RESERVE_BYTES: u64 = super::WAL_LIMIT_BYTES;

/// Free space kept beyond the WAL's size before writes that add data are refused.
pub const HEADROOM_BYTES: u64 = 4 << 20;

/// What a write that adds data is charged beyond twice its body: pages of index and rows.
const WRITE_OVERHEAD: u64 = 4 << 10;

/// Room for writes that add data, between two looks at the disk: set by the checkpointer
/// from what it measures (free space, less the WAL a checkpoint must copy, less
/// [`HEADROOM_BYTES`]), and drawn down by every such write with one atomic subtraction, so a
/// burst between two looks cannot run past it. A write is charged twice its size: the WAL
/// grows by it, and so does the room the next checkpoint needs.
#[derive(Debug, Default)]
pub struct Space {
    budget: AtomicI64,
    free: AtomicU64,
    low: AtomicBool,
}

impl Space {
    /// Takes room for a write adding about `bytes`; `Err` with a message for the client
    /// when there is not enough until the next look.
    pub fn take(&self, bytes: u64) -> Result<(), StoreError> {
        let cost = bytes.saturating_mul(2).saturating_add(WRITE_OVERHEAD);
        let cost = i64::try_from(cost).unwrap_or(i64::MAX);
        if self.budget.fetch_sub(cost, Ordering::Relaxed) >= cost {
            return Ok(());
        }
        Err(StoreError::unavailable(format!(
            "the disk is nearly full ({} bytes free): writes that add data are refused until \
             there is room to checkpoint; free some space",
            self.free.load(Ordering::Relaxed)
        )))
    }

    /// Whether the last look found too little room for writes that add data.
    pub(crate) fn is_low(&self) -> bool {
        self.low.load(Ordering::Relaxed)
    }

    /// Records a measurement: `free` bytes on the disk, `wal` bytes of WAL to checkpoint.
    pub(crate) fn measured(&self, free: u64, wal: u64) {
        let room = i128::from(free) - i128::from(wal) - i128::from(HEADROOM_BYTES);
        let room = i64::try_from(room).unwrap_or(if room < 0 { i64::MIN } else { i64::MAX });
        self.budget.store(room, Ordering::Relaxed);
        self.free.store(free, Ordering::Relaxed);
        let low = room <= 0;
        let was = self.low.swap(low, Ordering::Relaxed);
        if low && !was {
            tracing::warn!(
                free_bytes = free,
                wal_bytes = wal,
                "the disk is nearly full: refusing writes that add data"
            );
        } else if was && !low {
            tracing::info!(free_bytes = free, "disk space is back: accepting writes");
        }
    }
}

/// Gives the reserve back while running, after a checkpoint failed, if free space does not
/// cover the WAL it must copy. Returns whether it did.
pub(crate) fn release_if_short(dir: &Path) -> bool {
    let path = dir.join(RESERVE_FILE);
    let wal = wal_bytes(dir);
    let free = free_bytes(dir).unwrap_or(0);
    if free >= wal || !path.exists() {
        return false;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::warn!(
                free_bytes = free,
                wal_bytes = wal,
                "the disk is full: released the reserve so the WAL can be checkpointed"
            );
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "could not release the disk reserve");
            false
        }
    }
}

/// Bytes an unprivileged process may still write on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The size of the WAL of the database in `dir` (0 when there is none).
pub fn wal_bytes(dir: &Path) -> u64 {
    let wal = dir.join(format!("{}-wal", super::DATABASE_FILE));
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

/// What [`keep_reserve`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reserve {
    /// The reserve is in place (or no reserve was asked for).
    Held,
    /// Created now.
    Created,
    /// Deleted, because free space was below its size: the store may now start.
    Released,
    /// None, and not enough room to make one without taking what appends need.
    Missing,
}

/// Makes sure `dir` holds a reserve of `size` bytes (at most an eighth of its file system)
/// while there is room, and gives it back when there is not: see the module doc. Called
/// before the database is opened.
pub fn keep_reserve(dir: &Path, size: u64) -> io::Result<Reserve> {
    let path = dir.join(RESERVE_FILE);
    let stat = rustix::fs::statvfs(dir)?;
    let size = size.min(stat.f_blocks.saturating_mul(stat.f_frsize) / 8);
    let held = std::fs::metadata(&path).ok().map(|m| m.len());
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    let plan = plan(held, size, free);
    match plan {
        Reserve::Held => {}
        Reserve::Created => allocate(&path, size)?,
        Reserve::Released => {
            std::fs::remove_file(&path)?;
            if size > 0 {
                tracing::warn!(
                    free_bytes = free,
                    released_bytes = held.unwrap_or(0),
                    path = %path.display(),
                    "the disk is nearly full: released the reserve so the server can start; \
                     free space, or appends will be refused again soon"
                );
            }
        }
        Reserve::Missing => tracing::warn!(
            free_bytes = free,
            reserve_bytes = size,
            "not enough free space to set the disk reserve aside; a full disk may stop \
             the server from starting"
        ),
    }
    Ok(plan)
}

/// What to do with a reserve of `held` bytes (if any) when `size` is wanted and `free`
/// bytes are free.
fn plan(held: Option<u64>, size: u64, free: u64) -> Reserve {
    match held {
        // Not wanted (any more).
        Some(_) if size == 0 => Reserve::Released,
        None if size == 0 => Reserve::Held,
        Some(_) if free < size => Reserve::Released,
        Some(len) if len >= size => Reserve::Held,
        // Missing, or smaller than asked (a changed setting): made while there is plenty.
        _ if free >= size.saturating_mul(2) => Reserve::Created,
        _ => Reserve::Missing,
    }
}

/// Allocates `size` bytes to `path` for real (a sparse file would reserve nothing), written
/// beside it and renamed, so a crash leaves either no reserve or a whole one.
fn allocate(path: &Path, size: u64) -> io::Result<()> {
    let partial = path.with_extension("reserve.partial");
    let file = File::create(&partial)?;
    let allocated = rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size)
        .map_err(io::Error::from)
        .or_else(|_| write_zeros(&file, size));
    if let Err(e) = allocated.and_then(|()| file.sync_all()) {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, path)
}

/// For file systems without `fallocate`.
fn write_zeros(mut file: &File, size: u64) -> io::Result<()> {
    use std::io::Write;
    let block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_made_once_kept_and_removed_when_not_wanted() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(keep_reserve(dir.path(), 1 << 20).unwrap(), Reserve::Created);
        let len = std::fs::metadata(dir.path().join(RESERVE_FILE))
            .unwrap()
            .len();
        assert_eq!(len, 1 << 20);
        assert_eq!(keep_reserve(dir.path(), 1 << 20).unwrap(), Reserve::Held);
        assert_eq!(keep_reserve(dir.path(), 0).unwrap(), Reserve::Released);
        assert!(!dir.path().join(RESERVE_FILE).exists());
        assert_eq!(keep_reserve(dir.path(), 0).unwrap(), Reserve::Held);
    }

    #[test]
    fn a_reserve_is_released_when_free_space_falls_under_its_size_and_made_with_room_twice() {
        const M: u64 = 1 << 20;
        assert_eq!(plan(Some(4 * M), 4 * M, 3 * M), Reserve::Released);
        assert_eq!(plan(Some(4 * M), 4 * M, 4 * M), Reserve::Held);
        assert_eq!(plan(None, 4 * M, 7 * M), Reserve::Missing);
        assert_eq!(plan(None, 4 * M, 8 * M), Reserve::Created);
        // A reserve smaller than wanted is made again to size when there is room.
        assert_eq!(plan(Some(M), 4 * M, 100 * M), Reserve::Created);
    }

    #[test]
    fn writes_draw_on_the_room_measured_and_are_refused_past_it() {
        const M: u64 = 1 << 20;
        let space = Space::default();
        // 20 MiB free, 2 MiB of WAL: 14 MiB of room past the headroom, at twice each write.
        space.measured(20 * M, 2 * M);
        for _ in 0..6 {
            assert!(space.take(M).is_ok());
        }
        let refused = space.take(M).unwrap_err();
        assert!(refused.to_string().contains("nearly full"), "{refused}");
        // The next look finds room again (a checkpoint emptied the WAL).
        space.measured(20 * M, 0);
        assert!(space.take(M).is_ok());
        space.measured(HEADROOM_BYTES, 0);
        assert!(space.take(0).is_err());
    }
}
