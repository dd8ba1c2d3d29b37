//! `csctl validate`: offline checks of stack directories; every problem at once, with file:line:column.
use std::path::PathBuf;

use clap::Args;
use metadata_schema::{Problem, Severity};

use crate::checks;
use crate::crds::CrdSet;
use crate::error::InvalidInput;
use crate::output::Ctx;
use crate::stack::{Stack, expand_stack_dirs};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Stack directories to check (a parent directory stands for its stack subdirectories).
    #[arg(required = true, value_name = "STACK_DIR")]
    pub stacks: Vec<PathBuf>,

    /// Extra CRDs: a YAML file or a directory of them (repeatable), e.g. another infrastructure provider's
    /// CRDs. Built in: the CAPI v1.14.0 CRDs (ClusterClass, KubeadmControlPlaneTemplate,
    /// KubeadmConfigTemplate), the Beowulf provider's CRDs and the Kubernetes 1.33 kinds; CRDs that addon
    /// charts ship are used for their custom resources.
    #[arg(long, value_name = "PATH")]
    pub crd_dir: Vec<PathBuf>,
}

/// What was checked and found.
pub fn validate(ctx: &Ctx, args: &ValidateArgs) -> anyhow::Result<Vec<(PathBuf, Vec<Problem>)>> {
    let mut crds = CrdSet::builtin();
    let mut crd_problems = Vec::new();
    for p in &args.crd_dir {
        if let Err(e) = crds.add_path(p) {
            crd_problems.extend(e);
        }
    }
    if !crd_problems.is_empty() {
        return Err(InvalidInput {
            problems: crd_problems,
        }
        .into());
    }
    let mut out = Vec::new();
    for dir in expand_stack_dirs(&args.stacks) {
        ctx.progress(format!("checking {}", dir.display()));
        let problems = match Stack::load(&dir) {
            Ok(stack) => checks::check_stack(&stack, &crds),
            Err(e) => e.problems,
        };
        out.push((dir, problems));
    }
    Ok(out)
}

pub fn run(ctx: &Ctx, args: &ValidateArgs) -> anyhow::Result<()> {
    let results = validate(ctx, args)?;
    let count = |sev: Severity| {
        results
            .iter()
            .flat_map(|(_, p)| p)
            .filter(|p| p.severity == sev)
            .count()
    };
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    let mut text = String::new();
    for (dir, problems) in &results {
        for p in problems {
            text.push_str(&format!("{p}\n"));
        }
        let e = problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count();
        text.push_str(&format!(
            "{}: {}\n",
            dir.display(),
            if e == 0 {
                "ok".to_string()
            } else {
                format!("{e} error(s)")
            }
        ));
    }
    text.push_str(&format!(
        "{} stack(s) checked: {errors} error(s), {warnings} warning(s)\n",
        results.len()
    ));
    let json = serde_json::json!({
        "stacks": results.iter().map(|(d, p)| serde_json::json!({
            "stack": d.display().to_string(),
            "valid": !p.iter().any(|p| p.severity == Severity::Error),
            "problems": p,
        })).collect::<Vec<_>>(),
        "errors": errors,
        "warnings": warnings,
    });
    ctx.emit(text, &json);
    if errors > 0 {
        // The report is already printed; exit 3 without repeating it.
        return Err(crate::error::Reported(3).into());
    }
    Ok(())
}
