//! Process-wide allocator tuning. glibc's malloc gives a thread that meets contention an arena of its own (up to
//! eight per core), and memory freed into one arena is not reused by another; with the manager's many short
//! tasks moving across tokio's workers that is where much of its peak RSS went. Two arenas: at 1000 hosts and
//! 1000 machines the peak RSS fell from 46 to 37–38 MiB at the same reconciles per second (one arena: 36 MiB;
//! docs/benchmarks.md). `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES`, when set, win.

/// Arenas glibc's malloc may use.
pub const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`]; call before the program starts its threads. A no-op on
/// other C libraries, or when the environment already tunes malloc.
pub fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var_os("GLIBC_TUNABLES").is_some()
    {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only sets a tuning parameter of glibc's allocator; it touches no Rust-visible memory.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}
