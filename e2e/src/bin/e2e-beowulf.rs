//! `beowulf`, built inside the e2e crate so its tests can run it as a child process: the same code as
//! `provider/src/main.rs` (the CLI lives in the library).
fn main() -> std::process::ExitCode {
    beowulf::cli::entry()
}
