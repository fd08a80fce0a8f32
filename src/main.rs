//! The `docstream` binary: parses the command line and runs it.

// Streaming builds and drops many small JSON values; mimalloc does that at a fraction of
// glibc malloc's cost (measured with `docstream bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    docstream::cli::main()
}

/// Turns transparent huge pages off for this process. mimalloc asks for them on its arenas,
/// and the kernel then zeroes 2 MiB at the first touch of each: 50 branch processes serving
/// their first page spent 38% of their CPU in `clear_page_erms`, and a head office waited
/// 1 s for its first invoice where it waits 0.2 s without (`docstream bench --only fanin`).
/// The flag holds for mappings made before it too (the kernel checks it at each fault).
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE reads no memory of ours; on failure (an old
    // kernel) the process runs as before.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
