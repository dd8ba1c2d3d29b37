//! One module per subcommand; `plan` is what `create` and `publish` resolve their flags into, `remote` what
//! the OCI subcommands share.
pub mod create;
pub mod diff;
pub mod inspect;
pub mod list;
pub mod plan;
pub mod publish;
pub mod pull;
pub mod remote;
pub mod validate;

use crate::output::Ctx;
use plan::Plan;

/// Carries out a resolved plan.
pub fn run(ctx: &Ctx, plan: &Plan) -> anyhow::Result<()> {
    match plan {
        Plan::Build(p) => create::run(ctx, p),
        Plan::Publish(p) => publish::run(ctx, p),
    }
}
