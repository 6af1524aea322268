//! What the allocator holds, for `/metrics`: the bytes live objects take and the pages it
//! keeps resident. The binary picks the allocator (jemalloc, `main.rs`) and installs the
//! reader of its statistics here; without one (tests, other platforms) nothing is reported.

use std::sync::OnceLock;

/// The allocator's own statistics, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapStats {
    /// Held by live allocations: the caches, the queues, every per-token structure.
    pub allocated: u64,
    /// Pages the allocator keeps mapped, live or not: `allocated` plus what it retains.
    pub resident: u64,
}

/// Reads the installed allocator's statistics; `None` when they cannot be read.
pub type HeapReader = fn() -> Option<HeapStats>;

static READER: OnceLock<HeapReader> = OnceLock::new();

/// Installs the reader once, at start; a second call changes nothing.
pub fn install(reader: HeapReader) {
    let _ = READER.set(reader);
}

pub(crate) fn read() -> Option<HeapStats> {
    READER.get().and_then(|reader| reader())
}
