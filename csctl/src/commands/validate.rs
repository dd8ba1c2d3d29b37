//! `csctl validate`: offline checks of stack directories; every problem at once, with file:line:column.
use std::path::PathBuf;

use clap::Args;

use crate::output::Ctx;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Stack directories to check.
    #[arg(required = true, value_name = "STACK_DIR")]
    pub stacks: Vec<PathBuf>,

    /// Extra CRD files or directories of CRD YAML (repeatable), e.g. the infrastructure provider's own CRDs.
    /// The CAPI v1.14.0 CRDs are built in.
    #[arg(long, value_name = "DIR")]
    pub crd_dir: Vec<PathBuf>,
}

pub fn run(ctx: &Ctx, args: &ValidateArgs) -> anyhow::Result<()> {
    let _ = (ctx, args);
    anyhow::bail!("csctl validate is not implemented yet")
}
