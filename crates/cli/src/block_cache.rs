//! The binary's global allocator: mimalloc for small blocks; while enabled,
//! large blocks mapped straight from the OS, with a few freed ones kept for
//! reuse.
//!
//! A forward pass allocates the same activation sizes layer after layer (a
//! prefill chunk's (T, C) and (T, intermediate) buffers, the KV cache's
//! per-layer buffers). Served from mimalloc's arena, such blocks leave freed
//! pages resident until its purge delay returns them, and a new block of the
//! same size often lands on other, untouched memory: on SmolLM2 Q4_0 the
//! heap held 10–15 MiB at the end of a 128-token prefill for under 7 MiB
//! live (`docs/performance.md`). While enabled, a block of [`MIN_BYTES`]
//! or more (and alignment up to a page) is its own anonymous map, rounded
//! up to a size class ([`class_bytes`]); freed, it is kept for the next
//! request of its class, and unmapped once the cache is full, so the memory
//! held for large blocks is what is live plus what is cached. A map's pages
//! become resident only when written, so the rounding costs address space,
//! not memory.
//!
//! It is off until [`BlockCache::enable`], which the CLI calls for the
//! commands that run a model (where it was measured). The cache is bounded
//! ([`SLOTS`] blocks, [`MAX_CACHED_BYTES`] in all; the oldest block is
//! unmapped when either is exceeded) and [`BlockCache::release`] empties
//! it, which the CLI does wherever it asks mimalloc to return freed memory.
//! Where there is no `mmap` (not Unix), every block goes to mimalloc.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// Blocks smaller than this go to mimalloc.
pub const MIN_BYTES: usize = 64 * 1024;
/// Most freed blocks kept at once.
pub const SLOTS: usize = 64;
/// Most bytes kept at once.
pub const MAX_CACHED_BYTES: usize = 32 << 20;
/// Blocks at least this large are asked not to be backed by transparent
/// huge pages, which would make a partly written block wholly resident.
const NO_HUGE_PAGES_FROM: usize = 2 << 20;

/// The bytes mapped for a large block of `size` bytes: `size` rounded up to
/// a multiple of the page size and of 1/16 of its highest power of two, so
/// sizes within about 6% share a class (a reused block serves them all).
/// `None` when that overflows.
pub fn class_bytes(size: usize) -> Option<usize> {
    let highest_power_of_two = 1usize.checked_shl(size.checked_ilog2()?)?;
    let granule = (highest_power_of_two / 16).max(os::page_size());
    size.checked_next_multiple_of(granule)
}

/// One kept block: its address and the bytes mapped.
#[derive(Clone, Copy)]
struct Slot {
    ptr: *mut u8,
    bytes: usize,
}

const EMPTY: Slot = Slot {
    ptr: std::ptr::null_mut(),
    bytes: 0,
};

/// The kept blocks, oldest first.
struct Held {
    slots: [Slot; SLOTS],
    len: usize,
    bytes: usize,
}

/// mimalloc, with large blocks mapped from the OS and a bounded cache of
/// freed ones (see the module docs).
pub struct BlockCache {
    /// Off until [`BlockCache::enable`]: every block goes to mimalloc.
    enabled: AtomicBool,
    locked: AtomicBool,
    held: UnsafeCell<Held>,
}

// SAFETY: `held` is read and written only between `lock` and `unlock`, which
// give one thread at a time exclusive access; the raw pointers it stores are
// blocks this cache owns, not shared with any other thread while held.
unsafe impl Sync for BlockCache {}

impl BlockCache {
    /// An empty cache, off until [`BlockCache::enable`].
    pub const fn new() -> Self {
        Self {
            enabled: AtomicBool::new(false),
            locked: AtomicBool::new(false),
            held: UnsafeCell::new(Held {
                slots: [EMPTY; SLOTS],
                len: 0,
                bytes: 0,
            }),
        }
    }

    /// Starts mapping large blocks and keeping freed ones. The CLI does so
    /// for the commands that run a model, whose peaks it was measured on.
    pub fn enable(&self) {
        self.enabled.store(os::AVAILABLE, Ordering::Relaxed);
    }

    /// Whether a new block of `layout` is mapped rather than taken from
    /// mimalloc, and if so, the bytes to map.
    fn mapped_bytes(&self, layout: Layout) -> Option<usize> {
        if layout.size() < MIN_BYTES
            || layout.align() > os::page_size()
            || !self.enabled.load(Ordering::Relaxed)
        {
            return None;
        }
        class_bytes(layout.size())
    }

    /// Whether the live block `ptr` of `layout` is one of ours (a map), and
    /// if so its mapped bytes. Decided by the pointer, not by whether the
    /// cache is enabled now: blocks from mimalloc stay with it.
    fn owned_bytes(ptr: *mut u8, layout: Layout) -> Option<usize> {
        if layout.size() < MIN_BYTES || !os::AVAILABLE {
            return None;
        }
        // SAFETY: a lookup in mimalloc's page map; it reads no memory at `ptr`.
        let in_mimalloc = unsafe { libmimalloc_sys::mi_is_in_heap_region(ptr.cast()) };
        if in_mimalloc {
            None
        } else {
            class_bytes(layout.size())
        }
    }

    /// Runs `f` on the kept blocks with the lock taken. `f` must not
    /// allocate (the allocator would wait on itself).
    fn with_held<R>(&self, f: impl FnOnce(&mut Held) -> R) -> R {
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        // SAFETY: the lock is held (taken above, released below), so this is
        // the only reference to `held` (see `unsafe impl Sync`).
        let result = f(unsafe { &mut *self.held.get() });
        self.locked.store(false, Ordering::Release);
        result
    }

    /// A kept block of exactly `bytes` mapped bytes, removed from the
    /// cache (the newest such, whose pages are likeliest resident).
    fn take(&self, bytes: usize) -> Option<*mut u8> {
        self.with_held(|held| {
            let index = held.slots[..held.len]
                .iter()
                .rposition(|s| s.bytes == bytes)?;
            let slot = held.slots[index];
            held.slots.copy_within(index + 1..held.len, index);
            held.len -= 1;
            held.bytes -= slot.bytes;
            Some(slot.ptr)
        })
    }

    /// Keeps the freed map `ptr` of `bytes`; returns the maps that no
    /// longer fit (the oldest ones, or `ptr` itself), at most three, for
    /// the caller to unmap outside the lock.
    fn put(&self, ptr: *mut u8, bytes: usize) -> [Option<Slot>; 3] {
        let freed = Slot { ptr, bytes };
        if bytes > MAX_CACHED_BYTES {
            return [Some(freed), None, None];
        }
        self.with_held(|held| {
            let mut evicted = [None, None, None];
            let mut count = 0;
            while (held.len == SLOTS || held.bytes + bytes > MAX_CACHED_BYTES)
                && held.len > 0
                && count < 2
            {
                let oldest = held.slots[0];
                held.slots.copy_within(1..held.len, 0);
                held.len -= 1;
                held.bytes -= oldest.bytes;
                evicted[count] = Some(oldest);
                count += 1;
            }
            if held.len == SLOTS || held.bytes + bytes > MAX_CACHED_BYTES {
                // Still no room (two evictions were not enough): unmap it.
                evicted[2] = Some(freed);
                return evicted;
            }
            held.slots[held.len] = freed;
            held.len += 1;
            held.bytes += bytes;
            evicted
        })
    }

    /// Unmaps every kept block.
    pub fn release(&self) {
        loop {
            let next = self.with_held(|held| {
                if held.len == 0 {
                    return None;
                }
                held.len -= 1;
                let slot = held.slots[held.len];
                held.bytes -= slot.bytes;
                Some(slot)
            });
            let Some(slot) = next else { break };
            // SAFETY: the cache owned this map and nothing else refers to it.
            unsafe { os::unmap(slot.ptr, slot.bytes) };
        }
    }

    /// Bytes kept now.
    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        self.with_held(|held| held.bytes)
    }

    /// A block of `bytes` mapped bytes: a kept one, or a new map (whose
    /// pages are zero); with whether it came from the cache.
    fn map_block(&self, bytes: usize) -> (*mut u8, bool) {
        match self.take(bytes) {
            Some(ptr) => (ptr, true),
            None => (os::map(bytes), false),
        }
    }
}

impl Default for BlockCache {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every block handed out is fresh from mimalloc for the requested
// layout, or a map of at least `layout.size()` bytes at page alignment
// (which `mapped_bytes` checked covers `layout.align()`), new or given up by
// its previous owner; a block is held by at most one party at a time (the
// cache removes it before handing it out). Whether a freed block goes back
// to mimalloc or is a map is decided by mimalloc's own page map.
unsafe impl GlobalAlloc for BlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.mapped_bytes(layout) {
            Some(bytes) => self.map_block(bytes).0,
            // SAFETY: forwarded with the caller's (non-zero-size) layout.
            None => unsafe { mimalloc::MiMalloc.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match self.mapped_bytes(layout) {
            Some(bytes) => {
                let (ptr, reused) = self.map_block(bytes);
                if reused {
                    // SAFETY: the block is at least `layout.size()` bytes,
                    // writable, and now owned by this call. (A new map is
                    // zero already, and stays unwritten, so not resident.)
                    unsafe { std::ptr::write_bytes(ptr, 0, layout.size()) };
                }
                ptr
            }
            // SAFETY: as in `alloc`.
            None => unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match Self::owned_bytes(ptr, layout) {
            Some(bytes) => {
                for slot in self.put(ptr, bytes).into_iter().flatten() {
                    // SAFETY: a map this cache owned (evicted) or the caller
                    // gave up (`ptr`); nothing else refers to it.
                    unsafe { os::unmap(slot.ptr, slot.bytes) };
                }
            }
            // SAFETY: mimalloc allocated it with this layout.
            None => unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let old_bytes = Self::owned_bytes(ptr, layout);
        let new_bytes = self.mapped_bytes(new_layout);
        match (old_bytes, new_bytes) {
            // SAFETY: mimalloc allocated `ptr` with `layout` and keeps it.
            (None, None) => return unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) },
            (Some(old), Some(new)) if old == new => return ptr,
            (Some(old), Some(new)) => {
                // SAFETY: `ptr` is our map of `old` bytes, given up by the
                // caller in exchange for the result.
                if let Some(moved) = unsafe { os::remap(ptr, old, new) } {
                    return moved;
                }
            }
            _ => {}
        }
        // Between mimalloc and a map: a new block, the contents, the old one freed.
        // SAFETY: `new_layout` has a non-zero size (realloc's contract).
        let new_ptr = unsafe { self.alloc(new_layout) };
        if !new_ptr.is_null() {
            // SAFETY: both blocks are valid for the smaller size and do not
            // overlap (the old one is still owned by the caller).
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new_ptr
    }
}

/// Anonymous maps from the OS.
#[cfg(unix)]
mod os {
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Whether large blocks can be mapped here.
    pub const AVAILABLE: bool = true;

    /// The OS page size (4 KiB where it cannot be read).
    pub fn page_size() -> usize {
        static PAGE: AtomicUsize = AtomicUsize::new(0);
        match PAGE.load(Ordering::Relaxed) {
            0 => {
                // SAFETY: sysconf reads a system constant; no pointers.
                let read = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
                let page = usize::try_from(read)
                    .ok()
                    .filter(|p| p.is_power_of_two())
                    .unwrap_or(4096);
                PAGE.store(page, Ordering::Relaxed);
                page
            }
            page => page,
        }
    }

    /// A new private, zero-filled, read-write map of `bytes` bytes, or null.
    pub fn map(bytes: usize) -> *mut u8 {
        // SAFETY: an anonymous map at an address of the kernel's choosing;
        // it touches no existing memory.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        no_huge_pages(ptr, bytes);
        ptr.cast()
    }

    /// Asks that a large map not be backed by transparent huge pages (a
    /// hint: nothing to do when it is refused).
    fn no_huge_pages(ptr: *mut libc::c_void, bytes: usize) {
        #[cfg(target_os = "linux")]
        if bytes >= super::NO_HUGE_PAGES_FROM {
            // SAFETY: `ptr..ptr + bytes` is a map this module just made or
            // moved; the advice changes no contents.
            unsafe { libc::madvise(ptr, bytes, libc::MADV_NOHUGEPAGE) };
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (ptr, bytes);
    }

    /// Unmaps a map of `bytes` bytes that [`map`] or [`remap`] made.
    ///
    /// # Safety
    ///
    /// Nothing may use the map afterwards.
    pub unsafe fn unmap(ptr: *mut u8, bytes: usize) {
        // SAFETY: the caller gives up the whole map, made by this module.
        unsafe { libc::munmap(ptr.cast(), bytes) };
    }

    /// The map `ptr` of `old` bytes resized to `new` bytes (moved if need
    /// be, contents kept), or `None` (and `ptr` untouched) where it cannot be.
    ///
    /// # Safety
    ///
    /// `ptr` must be a map of `old` bytes made by this module; when `Some`
    /// is returned, `ptr` must no longer be used.
    pub unsafe fn remap(ptr: *mut u8, old: usize, new: usize) -> Option<*mut u8> {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: per the caller's contract, the whole map is ours to move.
            let moved = unsafe { libc::mremap(ptr.cast(), old, new, libc::MREMAP_MAYMOVE) };
            if moved == libc::MAP_FAILED {
                return None;
            }
            no_huge_pages(moved, new);
            Some(moved.cast())
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (ptr, old, new);
            None
        }
    }
}

/// No maps where there is no `mmap`: every block goes to mimalloc.
#[cfg(not(unix))]
mod os {
    pub const AVAILABLE: bool = false;

    pub fn page_size() -> usize {
        4096
    }

    pub fn map(_bytes: usize) -> *mut u8 {
        std::ptr::null_mut()
    }

    pub unsafe fn unmap(_ptr: *mut u8, _bytes: usize) {}

    pub unsafe fn remap(_ptr: *mut u8, _old: usize, _new: usize) -> Option<*mut u8> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 64).expect("valid layout")
    }

    #[test]
    fn size_classes_round_up_by_at_most_a_sixteenth_and_a_page() {
        let page = os::page_size();
        for size in [
            MIN_BYTES,
            73_728,
            98_304,
            300 * 1024,
            786_432,
            (5 << 20) + 3,
        ] {
            let bytes = class_bytes(size).expect("no overflow");
            assert!(
                bytes >= size && bytes.is_multiple_of(page),
                "{size} -> {bytes}"
            );
            assert!(bytes - size < (size / 16).max(page), "{size} -> {bytes}");
        }
        assert_eq!(class_bytes(usize::MAX), None);
    }

    #[test]
    fn a_freed_large_block_serves_the_next_request_of_its_class_and_zeroes() {
        let cache = BlockCache::new();
        cache.enable();
        let big = layout(300 * 1024);
        // SAFETY: layouts are non-zero; each block is freed once with its layout.
        unsafe {
            let a = cache.alloc(big);
            assert!(!a.is_null());
            assert!(!libmimalloc_sys::mi_is_in_heap_region(a.cast()), "a map");
            std::ptr::write_bytes(a, 0xAB, big.size());
            cache.dealloc(a, big);
            assert_eq!(Some(cache.held_bytes()), class_bytes(big.size()));
            // Another class does not take it.
            let other = cache.alloc(layout(400 * 1024));
            assert_ne!(other, a);
            cache.dealloc(other, layout(400 * 1024));
            // A size in the same class does, zeroed.
            let near = layout(300 * 1024 + 100);
            let z = cache.alloc_zeroed(near);
            assert_eq!(z, a, "the kept block is reused");
            let bytes = std::slice::from_raw_parts(z, near.size());
            assert!(
                bytes.iter().all(|&b| b == 0),
                "alloc_zeroed zeroes a reused block"
            );
            cache.dealloc(z, near);
            cache.release();
            assert_eq!(cache.held_bytes(), 0);
        }
    }

    #[test]
    fn small_blocks_go_to_mimalloc_and_the_cache_stays_bounded() {
        let cache = BlockCache::new();
        cache.enable();
        // SAFETY: as above.
        unsafe {
            let small = layout(1024);
            let s = cache.alloc(small);
            assert!(libmimalloc_sys::mi_is_in_heap_region(s.cast()));
            cache.dealloc(s, small);
            assert_eq!(cache.held_bytes(), 0);
            // More blocks than slots, and more bytes than the bound.
            let big = layout(2 << 20);
            let blocks: Vec<*mut u8> = (0..SLOTS + 8).map(|_| cache.alloc(big)).collect();
            for &b in &blocks {
                assert!(!b.is_null());
                cache.dealloc(b, big);
            }
            assert!(cache.held_bytes() <= MAX_CACHED_BYTES);
            assert_eq!(cache.held_bytes() % big.size(), 0);
            cache.release();
            assert_eq!(cache.held_bytes(), 0);
        }
    }

    #[test]
    fn realloc_keeps_the_contents_across_mimalloc_and_maps() {
        let cache = BlockCache::new();
        cache.enable();
        // SAFETY: as above; each pointer is used only until it is reallocated.
        unsafe {
            // Small (mimalloc) -> large (map) -> larger map -> same class -> small.
            let mut size = 1000;
            let mut p = cache.alloc(layout(size));
            for (i, byte) in std::slice::from_raw_parts_mut(p, size)
                .iter_mut()
                .enumerate()
            {
                *byte = (i % 251) as u8;
            }
            for new_size in [200 * 1024, 5 << 20, (5 << 20) + 10, 1000] {
                p = cache.realloc(p, layout(size), new_size);
                assert!(!p.is_null());
                let kept = std::slice::from_raw_parts(p, 1000);
                assert!(kept.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
                size = new_size;
            }
            assert!(libmimalloc_sys::mi_is_in_heap_region(p.cast()));
            cache.dealloc(p, layout(size));
            cache.release();
        }
    }

    #[test]
    fn blocks_from_before_enable_go_back_to_mimalloc() {
        let cache = BlockCache::new();
        let big = layout(300 * 1024);
        let huge = layout(64 << 20);
        // SAFETY: as above.
        unsafe {
            let a = cache.alloc(big);
            let h = cache.alloc(huge);
            assert!(libmimalloc_sys::mi_is_in_heap_region(a.cast()));
            assert!(libmimalloc_sys::mi_is_in_heap_region(h.cast()));
            cache.enable();
            cache.dealloc(a, big);
            cache.dealloc(h, huge);
            assert_eq!(cache.held_bytes(), 0);
        }
    }
}
