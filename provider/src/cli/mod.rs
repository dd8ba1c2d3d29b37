//! The `beowulf` command line: one module per subcommand.

pub mod standalone;

use clap::{Parser, Subcommand};

pub mod activation;
pub mod bmc;
pub mod boot_services;
pub mod console;
pub mod crds;
pub mod diagnostics;
pub mod inspect;
pub mod manager;
pub mod release;

use crate::telemetry::LogFormat;

/// Beowulf: network-boot and provision bare-metal servers, standalone or as a Cluster API provider.
#[derive(Debug, Parser)]
#[command(name = "beowulf", version, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr (`RUST_LOG` sets the level, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "BEOWULF_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

// One variant per subcommand; each lives in its own module under `cli/`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version.
    Version,
    /// Print the provider's CustomResourceDefinitions as YAML.
    Crds(crds::CrdsArgs),
    /// Run the Cluster API controllers (BeowulfCluster, BeowulfMachine, BeowulfHost) and the boot plane.
    Manager(manager::ManagerArgs),
    /// Write the clusterctl provider repository for one version.
    // `--version` here is the release's version, not "print beowulf's version".
    #[command(disable_version_flag = true)]
    Release(release::ReleaseArgs),
    /// Control one BMC directly: power status/on/off/cycle/reset and the next boot device.
    Bmc(bmc::BmcArgs),
    /// A host's serial console over IPMI Serial-over-LAN (interactive; `~.` leaves), or with --log what a
    /// standalone server captured of it.
    Console(console::ConsoleArgs),
    /// Run the boot plane (DHCP, TFTP, HTTP) from an inventory file, without Kubernetes.
    Standalone(standalone::StandaloneArgs),
    /// Standalone: have hosts boot the inspection image again on their next network boot.
    Inspect(inspect::InspectArgs),
}

/// The `beowulf` binary: parses the command line, runs it, and turns the outcome into the exit status. A
/// returned error is for the user (bad input, a BMC that refused, a missing file): its message and causes
/// on one line, never a backtrace, even with `RUST_BACKTRACE` set. Internal errors panic, and the panic
/// hook keeps their backtraces.
pub async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The binary's entry point: malloc tuned ([`crate::memory`]) before any thread exists, then [`main`] on a
/// multi-threaded runtime.
pub fn entry() -> std::process::ExitCode {
    crate::memory::limit_malloc_arenas();
    crate::open_files::raise_limit();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(main()),
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    crate::telemetry::init(cli.log_format);
    match cli.command {
        Command::Bmc(args) => bmc::run(args).await,
        Command::Console(args) => console::run(args).await,
        Command::Version => {
            println!("beowulf {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Crds(args) => crds::run(args),
        Command::Manager(args) => manager::run(args).await,
        Command::Release(args) => release::run(args).await,
        Command::Standalone(args) => standalone::run(args).await,
        Command::Inspect(args) => inspect::run(args).await,
    }
}
