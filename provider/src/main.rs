fn main() -> std::process::ExitCode {
    beowulf::cli::entry()
}
