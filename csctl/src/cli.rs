//! The command line: one `Command` variant per subcommand, each with its own module in `commands/`.
use clap::{Parser, Subcommand};

use crate::commands::{create::CreateArgs, validate::ValidateArgs};
use crate::commands::{
    diff::DiffArgs, inspect::InspectArgs, list::ListArgs, publish::PublishArgs, pull::PullArgs,
};
use crate::output::Format;

/// Exit codes, shown in `--help` and README.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (also: stable mode found nothing to release, or the release already exists byte for byte)
  1  failure (I/O, remote, internal error)
  2  usage error (unknown flag, missing argument)
  3  invalid input: the stack (or release) has problems; all of them are listed";

/// Build, validate, version and publish cluster stacks.
///
/// A cluster stack is a directory `providers/<provider>/<name>/<k8s-major>-<k8s-minor>/` holding
/// `csctl.yaml`, a `cluster-class/` Helm chart, cluster addons and node-image definitions. csctl turns it
/// into a versioned, reproducible release that Sovereign Cloud Stack's cluster-stack-operator consumes.
/// The Kubernetes minors of one stack may share files through relative symlinks inside
/// `providers/<provider>/<name>/` (packaged as the files they lead to).
#[derive(Debug, Parser)]
#[command(name = "csctl", version, after_long_help = EXIT_CODES_HELP, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Result format on stdout: human-readable text, or one JSON document for scripts.
    /// (`--output` is not used for this because `create -o/--output` is the output directory upstream.)
    #[arg(long, global = true, value_enum, default_value_t = Format::Text, env = "CSCTL_FORMAT")]
    pub format: Format,

    /// No progress lines on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build releases from stack directories (several stacks and Kubernetes minors in one run).
    #[command(after_long_help = EXIT_CODES_HELP)]
    Create(CreateArgs),
    /// Check stack directories offline and report every problem with file:line:column.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Validate(ValidateArgs),
    /// Push release directories to an OCI registry or the local OCI layout (reproducible digests).
    Publish(PublishArgs),
    /// Download a published release into a directory, verifying every digest.
    Pull(PullArgs),
    /// List the releases in a repository, sorted by stack and version.
    List(ListArgs),
    /// Show a published release: versions, layers, sizes, digests.
    Inspect(InspectArgs),
    /// Compare two releases (refs or directories): versions, files, chart contents.
    Diff(DiffArgs),
    /// Print the csctl version.
    Version,
}
