//! `signet-rotator`; see the library docs for what it does and its exit codes.

fn main() -> std::process::ExitCode {
    signet_rotator::cli::main()
}
