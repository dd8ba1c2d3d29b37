//! csctl binary: parse the command line, run the command, map the outcome to an exit code.
use std::process::ExitCode;

use clap::Parser;
use csctl::cli::{Cli, Command};
use csctl::commands;
use csctl::error::{InvalidInput, Reported, UsageError};
use csctl::output::Ctx;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Ctx {
        format: cli.format,
        quiet: cli.quiet,
    };
    let result = match &cli.command {
        Command::Create(args) => args.resolve().and_then(|plan| commands::run(&ctx, &plan)),
        Command::Validate(args) => commands::validate::run(&ctx, args),
        Command::Publish(args) => args.resolve().and_then(|plan| commands::run(&ctx, &plan)),
        Command::Pull(args) => commands::pull::run(&ctx, args),
        Command::List(args) => commands::list::run(&ctx, args),
        Command::Inspect(args) => commands::inspect::run(&ctx, args),
        Command::Diff(args) => commands::diff::run(&ctx, args),
        Command::Version => {
            ctx.emit(
                format!("csctl version: {}\n", env!("CARGO_PKG_VERSION")),
                &serde_json::json!({ "version": env!("CARGO_PKG_VERSION") }),
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.downcast_ref::<Reported>().is_some() => {
            ExitCode::from(err.downcast_ref::<Reported>().map(|r| r.0).unwrap_or(1))
        }
        Err(err) => {
            let code = if err.downcast_ref::<InvalidInput>().is_some() {
                3
            } else if err.downcast_ref::<UsageError>().is_some() {
                2
            } else {
                1
            };
            if ctx.json() {
                let problems = err
                    .downcast_ref::<InvalidInput>()
                    .map(|i| serde_json::to_value(&i.problems).unwrap_or_default());
                ctx.emit(
                    "",
                    &serde_json::json!({ "error": format!("{err:#}"), "exitCode": code, "problems": problems }),
                );
            }
            eprintln!("error: {err:#}");
            ExitCode::from(code)
        }
    }
}
