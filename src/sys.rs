//! The libc calls smimed makes itself (everything else goes through std, rustix or
//! [`crate::ossl`]): [`ignore_file_size_signal`] and [`tune_allocator`]; and [`proc_stat`],
//! the one reader of a process's /proc status line.
//!
//! A write past the file-size limit (`ulimit -f`, systemd's `LimitFSIZE=`) raises SIGXFSZ,
//! whose default action kills the process: a watcher would die on the first large message
//! every time it met it, leaving part of a decrypted copy in tmp/, and a filter would be
//! killed instead of exiting 75. Ignored, the write fails with EFBIG, an I/O error like any
//! other (the message is deferred, the filter exits 75).
//!
//! The long-running, multi-threaded commands (`watch`, `agent`) allocate and free buffers of tens
//! of kilobytes per message from several threads. glibc gives each thread its own arena and, by
//! default, hands the top of an arena back to the kernel with `madvise` as soon as more than
//! 128 KiB is free; in a multi-threaded process every such call is a TLB shoot-down on all
//! cores. Measured on `smimed watch --once` (2,000 messages of 38 KB, 2 cores): about 10% of the
//! wall time and a third of the system time. [`tune_allocator`] raises the trim threshold to
//! 8 MiB per arena and fixes the mmap threshold at 1 MiB, so that very large messages still get
//! mappings of their own that go back to the kernel when freed.
#![allow(unsafe_code)]

/// Bytes an arena may keep free at its top before glibc gives them back.
const TRIM_THRESHOLD: i32 = 8 << 20;
/// Allocations from this size up get a mapping of their own.
const MMAP_THRESHOLD: i32 = 1 << 20;

/// Makes a write past the file-size limit fail with EFBIG instead of killing the process.
/// Children (the MTA, a passphrase command) inherit the ignored signal and get EFBIG too.
pub fn ignore_file_size_signal() {
    // SAFETY: signal() with SIG_IGN installs no handler (no code runs on delivery), takes no
    // pointers, and is called before any thread is started.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Tunes glibc's allocator for a long-running, multi-threaded process. Does nothing on other C
/// libraries. Returns whether both settings took.
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; it takes two plain integers, has no
        // pointer arguments and is safe to call at any time (glibc serialises it internally).
        // Both values are within the ranges glibc documents (trim: any; mmap: <= 32 MiB on
        // 64-bit).
        let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) };
        // SAFETY: as above.
        let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        trim == 1 && mmap == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Field `n` (as proc(5) numbers them, from 3: state, 4: parent pid, 22: start time in clock
/// ticks after boot) of `/proc/PID/stat`, counted after the command name, which may hold blanks
/// and parentheses.
pub fn proc_stat(pid: u32, n: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_settings() {
        let took = super::tune_allocator();
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(took);
        }
        // The allocator still works after the change, for small and mapped sizes.
        let small = vec![7u8; 100_000];
        let big = vec![9u8; 3 << 20];
        assert_eq!(small[99_999] as usize + big[(3 << 20) - 1] as usize, 16);
    }
}
