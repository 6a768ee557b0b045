//! `signet-init run | probe`; see the library docs for the environment and
//! the exit codes.

fn main() -> std::process::ExitCode {
    signet_init::cli::main(std::env::args().skip(1))
}
