#[tokio::main]
async fn main() -> std::process::ExitCode {
    beowulf::cli::main().await
}
