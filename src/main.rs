use std::process::ExitCode;

// glibc's malloc was about 40 % of a watch pass's CPU at 1,000 tenants (perf: `_int_malloc`,
// `malloc_consolidate`, `unlink_chunk` under serde_json's many small maps) and kept freed
// pages resident; mimalloc's thread-local free lists do less work per allocation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ofctl::cli::main()
}
