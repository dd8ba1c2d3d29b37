use clap::Parser;

/// Build, validate, version and publish cluster stacks.
#[derive(Parser)]
#[command(name = "csctl", version)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
