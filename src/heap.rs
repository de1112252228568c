//! Keeping what malloc holds close to what the process uses (issue 11).
//!
//! glibc's malloc keeps what a thread frees in that thread's arena, for the thread to reuse.
//! After a burst of work spread over many threads (the first walk and hash of a large folder:
//! names found, buffers, batches), tens of MiB stay resident that nothing uses, scattered
//! between the allocations that live on (the index), so the heap cannot simply shrink from its
//! top. `malloc_trim` hands every whole free page of every arena back (`MADV_DONTNEED`). It
//! walks malloc's free lists under their locks (every allocation waits meanwhile), so it is
//! called after such bursts, never per request: when a whole walk of the folder ends, when a
//! listing hashed a thousand files or more, when the background hasher empties its queue (and
//! once more a second later), and when a listing that outlived the index is dropped. The index
//! itself is rebuilt in fresh memory after a burst (`Index::settle`), since names allocated
//! between short-lived allocations leave pages partly used that no trim can give back.
//!
//! Freeing is only half of it: glibc gives each thread that meets a busy arena one of its own
//! (up to 8 per core), and memory freed in one arena serves only the threads of that arena.
//! `malloc_trim` can return the top of the main heap, not the top of the others. So the server
//! runs with one arena ([`limit_arenas`]): measured on a folder of 100,000 files after it was
//! first indexed, the server sat at 39.8 MiB with the default arenas and at 30.4 to 31 MiB with
//! one (the same binary; an empty folder: 14.8 MiB). Small allocations rarely take its lock:
//! each thread keeps a cache of small free blocks (glibc's tcache).
//!
//! Not here: bounding what is allocated in the first place (each cache and queue owns its
//! bound). Elsewhere than glibc both calls do nothing.

// The crate's only unsafe code: two calls of C functions that have no preconditions.
#![allow(unsafe_code)]

/// Makes every thread allocate from the one main arena. Called before any thread starts (a
/// thread keeps the arena it was given).
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` takes two integers and has no precondition; an unknown parameter is
    // refused with 0, which changes nothing (and needs no handling: it is only memory).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// [`give_back`] at the end of a burst (a folder first indexed), and once more a second later,
/// for what work ending just after the burst frees meanwhile (the index writer's last
/// commits, a listing in progress). Measured on 100,000 files: one first indexing in three or
/// four left 4.5 MiB more resident without the second call (19.4 to 20.1 MiB of anonymous
/// memory against 14.7 to 15.5), which a trim called from outside (gdb) then gave back. At
/// most one second call is pending at a time.
pub(crate) fn give_back_after_burst() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static PENDING: AtomicBool = AtomicBool::new(false);
    give_back();
    if PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    let later = std::thread::Builder::new()
        .name("barge-heap".into())
        .spawn(|| {
            std::thread::sleep(std::time::Duration::from_secs(1));
            PENDING.store(false, Ordering::Release);
            give_back();
        });
    if later.is_err() {
        // No thread to spare: the next burst tries again.
        PENDING.store(false, Ordering::Release);
    }
}

/// Returns the free pages malloc holds to the system; a no-op where malloc is not glibc's.
pub(crate) fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointer and has no precondition; it only takes malloc's
    // own arena locks, as any allocation does.
    unsafe {
        libc::malloc_trim(0);
    }
}
