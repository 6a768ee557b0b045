//! `signet-vault`: wires the process; the library holds the logic.

use clap::Parser as _;
use signet_vault::cli::{self, Cli, Command, ROOT_KEY_ENV};
use zeroize::Zeroizing;

/// mimalloc instead of glibc's malloc: a signed read allocates a few dozen
/// small buffers across threads, and glibc's arenas cost about 6% of the
/// vault's CPU under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli::init_logging(cli.log_format);
    // The root key is read (and its environment variable removed) while the
    // process still has one thread, before the runtime starts.
    let root = match &cli.command {
        Command::Serve(args) => Some(cli::load_root_key(&args.root_key, take_root_key_env())?),
        Command::AuditVerify(args) => {
            Some(cli::load_root_key(&args.root_key, take_root_key_env())?)
        }
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(cli::run(cli.command, root))
}

/// Reads and removes `SIGNET_ROOT_KEY`, so no child process inherits it and
/// nothing later in the process reads it back. The kernel's copy of the
/// initial environment (`/proc/<pid>/environ`, readable by the same user)
/// is not erased by this; `--root-key-file` or `--root-key-stdin` avoid it.
#[allow(unsafe_code)]
fn take_root_key_env() -> Option<Zeroizing<String>> {
    let value = std::env::var(ROOT_KEY_ENV).ok().map(Zeroizing::new);
    if value.is_some() {
        // SAFETY: called from `main` before any other thread exists (the
        // tokio runtime is built afterwards), so nothing reads the
        // environment concurrently.
        unsafe { std::env::remove_var(ROOT_KEY_ENV) };
    }
    value
}
