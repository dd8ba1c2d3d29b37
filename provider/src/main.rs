use clap::Parser;

/// Beowulf: network-boot and provision bare-metal servers, standalone or as a Cluster API provider.
#[derive(Parser)]
#[command(name = "beowulf", version)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
