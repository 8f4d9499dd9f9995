//! The unit-test binary's global allocator: the system allocator, counting the bytes each
//! thread allocates.
//!
//! Tests must never be decided by timing (STYLE.md section 7), yet some regressions are only
//! about cost: copying a long run once per batch is quadratic, but produces the right batches.
//! Bytes allocated are a deterministic stand-in for that cost. The count is per thread, so
//! tests running in parallel on other threads do not disturb it.
//!
//! Only compiled for the crate's own unit tests (`#[cfg(test)]`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Bytes allocated by this thread so far (allocations and the new size of reallocations).
    static ALLOCATED_BYTES: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting allocated bytes per thread.
#[derive(Debug)]
pub(crate) struct CountingAllocator;

impl CountingAllocator {
    fn count(bytes: usize) {
        // `try_with`: the thread-local may already be gone while a thread exits, and a const
        // initialised `Cell` has no destructor and never allocates, so this cannot recurse.
        let _ = ALLOCATED_BYTES.try_with(|allocated| {
            allocated.set(allocated.get().saturating_add(bytes as u64));
        });
    }
}

#[allow(unsafe_code)]
// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so it upholds
// `GlobalAlloc`'s contract exactly as `System` does; counting touches only a thread-local `Cell`.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count(new_size);
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// The bytes the current thread allocated while running `f`, with `f`'s result.
pub(crate) fn allocated_bytes_during<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let before = ALLOCATED_BYTES.with(Cell::get);
    let result = f();
    let after = ALLOCATED_BYTES.with(Cell::get);
    (after - before, result)
}

#[cfg(test)]
mod tests {
    use super::allocated_bytes_during;

    #[test]
    fn counts_what_this_thread_allocates() {
        let (bytes, kept) = allocated_bytes_during(|| Vec::<u64>::with_capacity(1_000));
        assert!(bytes >= 8_000, "{bytes}");
        assert_eq!(kept.capacity(), 1_000);
        let (bytes, ()) = allocated_bytes_during(|| {});
        assert_eq!(bytes, 0);
    }
}
