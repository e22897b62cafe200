//! Allocator settings for the mlvault binaries, which stream large I/O
//! buffers (HTTP bodies, 1 MiB segments, 2 MiB blocks).
//!
//! By default glibc serves a freed buffer of 128 KiB or more from a fresh
//! `mmap` and hands freed heap tops back to the kernel, so a stream of such
//! buffers touches new, zeroed pages all the time (and on a VM whose host
//! reclaims free memory, faults in the host too). [`tune`] keeps buffers up
//! to 32 MiB on the heap and up to 64 MiB of free heap mapped, so freed
//! buffers are reused, and caps the number of arenas, so buffers freed on
//! another thread than the one that allocated them stay few. What this
//! saves on the development machine is measured in `docs/performance.md`.

/// Largest allocation served from the heap rather than a fresh `mmap`.
pub const MMAP_THRESHOLD: i32 = 32 << 20;

/// Free heap kept mapped before glibc trims it.
pub const TRIM_THRESHOLD: i32 = 64 << 20;

/// Set glibc's allocator up for streaming, with at most `arenas` arenas if
/// given. Settings given in the environment (`MALLOC_ARENA_MAX`,
/// `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, or any
/// `glibc.malloc` tunable in `GLIBC_TUNABLES`) win. Call first thing in
/// `main`, before other threads start. Does nothing on other C libraries.
#[allow(unsafe_code)]
pub fn tune(arenas: Option<i32>) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if tunables.contains("glibc.malloc") {
            return;
        }
        let set = |var: &str, param: libc::c_int, value: libc::c_int| {
            if std::env::var_os(var).is_none() {
                // SAFETY: mallopt only sets an allocator parameter and is
                // safe to call at any time; the values are in range.
                unsafe {
                    libc::mallopt(param, value);
                }
            }
        };
        if let Some(n) = arenas {
            set("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, n);
        }
        set(
            "MALLOC_MMAP_THRESHOLD_",
            libc::M_MMAP_THRESHOLD,
            MMAP_THRESHOLD,
        );
        set(
            "MALLOC_TRIM_THRESHOLD_",
            libc::M_TRIM_THRESHOLD,
            TRIM_THRESHOLD,
        );
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}
