//! The binary's global allocator: mimalloc, with a few freed large blocks
//! kept for the next allocation of exactly the same size.
//!
//! A forward pass allocates the same activation sizes layer after layer (a
//! prefill chunk's (T, C) and (T, intermediate) buffers). mimalloc gives
//! each such block back to its arena when freed, and the next one of the
//! same size often lands on other, untouched memory; until the purge delay
//! returns the old pages (250 ms while a model runs: shorter slows long
//! prefills), the process holds both. On SmolLM2 Q4_0 that was 5 MiB of a
//! 12 MiB heap at the end of a 128-token prefill, for 7 MiB live
//! (`docs/performance.md`). Handing a freed block of 128 KiB or more
//! straight to the next request of its exact size and alignment keeps the
//! same pages in use and skips the allocator (and any page faults) for it.
//!
//! It is off until [`BlockCache::enable`], which the CLI calls for the
//! commands that run a model (where it was measured). The cache is bounded ([`SLOTS`] blocks, [`MAX_CACHED_BYTES`] in all; the
//! oldest block goes back to mimalloc when either is exceeded) and
//! [`BlockCache::release`] empties it, which the CLI does wherever it asks
//! mimalloc to return freed memory.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// Blocks smaller than this go straight to mimalloc.
pub const MIN_BYTES: usize = 128 * 1024;
/// Most blocks held at once.
pub const SLOTS: usize = 32;
/// Most bytes held at once.
pub const MAX_CACHED_BYTES: usize = 32 << 20;

/// One held block: its address and the layout it was allocated with.
#[derive(Clone, Copy)]
struct Slot {
    ptr: *mut u8,
    size: usize,
    align: usize,
}

const EMPTY: Slot = Slot {
    ptr: std::ptr::null_mut(),
    size: 0,
    align: 0,
};

/// The held blocks, oldest first.
struct Held {
    slots: [Slot; SLOTS],
    len: usize,
    bytes: usize,
}

/// mimalloc behind a bounded cache of freed large blocks (see the module
/// docs).
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

    /// Starts holding freed large blocks. The CLI does so for the commands
    /// that run a model, whose peaks it was measured on.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Runs `f` on the held blocks with the lock taken. `f` must not
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

    /// A held block of exactly `layout`, removed from the cache.
    fn take(&self, layout: Layout) -> Option<*mut u8> {
        if layout.size() < MIN_BYTES || !self.is_enabled() {
            return None;
        }
        self.with_held(|held| {
            let index = held.slots[..held.len]
                .iter()
                .rposition(|s| s.size == layout.size() && s.align == layout.align())?;
            let slot = held.slots[index];
            held.slots.copy_within(index + 1..held.len, index);
            held.len -= 1;
            held.bytes -= slot.size;
            Some(slot.ptr)
        })
    }

    /// Holds the freed block `ptr` of `layout`; returns the blocks that no
    /// longer fit (the oldest ones, or `ptr` itself when it is too large)
    /// for the caller to free, at most three, as (pointer, layout) pairs.
    fn put(&self, ptr: *mut u8, layout: Layout) -> [Option<(*mut u8, Layout)>; 3] {
        if layout.size() < MIN_BYTES || layout.size() > MAX_CACHED_BYTES || !self.is_enabled() {
            return [Some((ptr, layout)), None, None];
        }
        self.with_held(|held| {
            let mut evicted = [None, None, None];
            let mut count = 0;
            while (held.len == SLOTS || held.bytes + layout.size() > MAX_CACHED_BYTES)
                && held.len > 0
                && count < 2
            {
                let oldest = held.slots[0];
                held.slots.copy_within(1..held.len, 0);
                held.len -= 1;
                held.bytes -= oldest.size;
                // The layout was valid when the block was allocated.
                evicted[count] = Layout::from_size_align(oldest.size, oldest.align)
                    .ok()
                    .map(|l| (oldest.ptr, l));
                count += 1;
            }
            if held.len == SLOTS || held.bytes + layout.size() > MAX_CACHED_BYTES {
                // Still no room (two evictions were not enough): free it.
                evicted[2] = Some((ptr, layout));
                return evicted;
            }
            held.slots[held.len] = Slot {
                ptr,
                size: layout.size(),
                align: layout.align(),
            };
            held.len += 1;
            held.bytes += layout.size();
            evicted
        })
    }

    /// Returns every held block to mimalloc.
    pub fn release(&self) {
        loop {
            let next = self.with_held(|held| {
                if held.len == 0 {
                    return None;
                }
                held.len -= 1;
                let slot = held.slots[held.len];
                held.bytes -= slot.size;
                Some(slot)
            });
            let Some(slot) = next else { break };
            if let Ok(layout) = Layout::from_size_align(slot.size, slot.align) {
                // SAFETY: the block came from mimalloc with this layout and
                // the cache owned it until now.
                unsafe { mimalloc::MiMalloc.dealloc(slot.ptr, layout) };
            }
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        self.with_held(|held| held.bytes)
    }

    /// Frees blocks [`put`](Self::put) could not hold.
    fn free_all(pairs: [Option<(*mut u8, Layout)>; 3]) {
        for (ptr, layout) in pairs.into_iter().flatten() {
            // SAFETY: each pair is a block mimalloc allocated with that
            // layout, given up by its owner (dealloc) or by the cache.
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        }
    }
}

impl Default for BlockCache {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every block handed out is either fresh from mimalloc for the
// requested layout or a held block that was allocated with exactly that
// size and alignment and given up by its previous owner; a block is held by
// at most one party at a time (the cache removes it before handing it out).
unsafe impl GlobalAlloc for BlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.take(layout) {
            Some(ptr) => ptr,
            // SAFETY: forwarded with the caller's (non-zero-size) layout.
            None => unsafe { mimalloc::MiMalloc.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match self.take(layout) {
            Some(ptr) => {
                // SAFETY: the block is `layout.size()` bytes, writable, and
                // now owned by this call.
                unsafe { std::ptr::write_bytes(ptr, 0, layout.size()) };
                ptr
            }
            // SAFETY: as in `alloc`.
            None => unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::free_all(self.put(ptr, layout));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() < MIN_BYTES && new_size < MIN_BYTES {
            // SAFETY: forwarded unchanged; small blocks never enter the cache.
            return unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 64).expect("valid layout")
    }

    #[test]
    fn a_freed_large_block_serves_the_next_request_of_its_size_and_zeroes() {
        let cache = BlockCache::new();
        cache.enable();
        let big = layout(300 * 1024);
        // SAFETY: layouts are non-zero; each block is freed once with its layout.
        unsafe {
            let a = cache.alloc(big);
            std::ptr::write_bytes(a, 0xAB, big.size());
            cache.dealloc(a, big);
            assert_eq!(cache.held_bytes(), big.size());
            // Another size or alignment does not take it.
            let other = cache.alloc(layout(301 * 1024));
            assert_ne!(other, a);
            cache.dealloc(other, layout(301 * 1024));
            let z = cache.alloc_zeroed(big);
            assert_eq!(z, a, "the held block is reused");
            let bytes = std::slice::from_raw_parts(z, big.size());
            assert!(
                bytes.iter().all(|&b| b == 0),
                "alloc_zeroed zeroes a reused block"
            );
            cache.dealloc(z, big);
            cache.release();
            assert_eq!(cache.held_bytes(), 0);
        }
    }

    #[test]
    fn small_blocks_bypass_and_the_cache_stays_bounded() {
        let cache = BlockCache::new();
        cache.enable();
        // SAFETY: as above.
        unsafe {
            let small = layout(1024);
            let s = cache.alloc(small);
            cache.dealloc(s, small);
            assert_eq!(cache.held_bytes(), 0);
            // More blocks than slots, and more bytes than the bound.
            let big = layout(2 << 20);
            let blocks: Vec<*mut u8> = (0..SLOTS + 8).map(|_| cache.alloc(big)).collect();
            for &b in &blocks {
                cache.dealloc(b, big);
            }
            assert!(cache.held_bytes() <= MAX_CACHED_BYTES);
            assert_eq!(cache.held_bytes() % big.size(), 0);
            // Growing through realloc keeps the contents.
            let mut p = cache.alloc(layout(200 * 1024));
            std::ptr::write_bytes(p, 7, 200 * 1024);
            p = cache.realloc(p, layout(200 * 1024), 500 * 1024);
            let kept = std::slice::from_raw_parts(p, 200 * 1024);
            assert!(kept.iter().all(|&b| b == 7));
            cache.dealloc(p, layout(500 * 1024));
            cache.release();
            assert_eq!(cache.held_bytes(), 0);
        }
    }

    #[test]
    fn a_cache_not_enabled_holds_nothing() {
        let cache = BlockCache::new();
        let big = layout(300 * 1024);
        // SAFETY: as above.
        unsafe {
            let a = cache.alloc(big);
            cache.dealloc(a, big);
            assert_eq!(cache.held_bytes(), 0);
        }
    }
}
