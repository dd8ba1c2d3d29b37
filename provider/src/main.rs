use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    beowulf::cli::run(beowulf::cli::Cli::parse()).await
}
