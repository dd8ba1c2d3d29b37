//! `csctl list`: the releases in a repository (all tags, paginated), sorted by stack and version.
use std::cmp::Ordering;

use anyhow::Context;
use clap::Args;

use super::remote::{RegistryArgs, default_location, parse_location, runtime};
use crate::output::Ctx;
use crate::release::ReleaseName;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Repository: oci://HOST[:PORT]/REPOSITORY or oci:DIR. Default: $OCI_REPOSITORY, else the local layout.
    #[arg(value_name = "REPOSITORY")]
    pub repository: Option<String>,

    /// Only releases of this provider (e.g. beowulf).
    #[arg(long)]
    pub provider: Option<String>,

    /// Only releases of this stack name (e.g. hpc).
    #[arg(long)]
    pub name: Option<String>,

    /// Only releases for this Kubernetes minor, e.g. 1.33.
    #[arg(long, value_name = "MAJOR.MINOR")]
    pub k8s: Option<String>,

    /// Tags asked for per request (the registry pages longer lists; all pages are read).
    #[arg(long, default_value_t = 1000)]
    pub page_size: u32,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Stack, Kubernetes minor, then version (major numerically; hash/custom versions before the stable one of
/// the same major).
pub fn compare(a: &ReleaseName, b: &ReleaseName) -> Ordering {
    (
        &a.provider,
        &a.name,
        a.k8s_major,
        a.k8s_minor,
        a.version.major,
        a.version.pre.is_none(),
        &a.version.pre,
    )
        .cmp(&(
            &b.provider,
            &b.name,
            b.k8s_major,
            b.k8s_minor,
            b.version.major,
            b.version.pre.is_none(),
            &b.version.pre,
        ))
}

pub fn parse_k8s(s: &str) -> anyhow::Result<(u64, u64)> {
    let t = s.trim_start_matches('v');
    let mut parts = t.split(['.', '-']);
    let (Some(maj), Some(min)) = (parts.next(), parts.next()) else {
        anyhow::bail!("--k8s {s:?}: expected MAJOR.MINOR, e.g. 1.33");
    };
    Ok((
        maj.parse()
            .with_context(|| format!("--k8s {s:?}: expected MAJOR.MINOR, e.g. 1.33"))?,
        min.parse()
            .with_context(|| format!("--k8s {s:?}: expected MAJOR.MINOR, e.g. 1.33"))?,
    ))
}

pub fn run(ctx: &Ctx, args: &ListArgs) -> anyhow::Result<()> {
    let location = match &args.repository {
        Some(r) => parse_location(r)?,
        None => default_location()?,
    };
    let k8s = args.k8s.as_deref().map(parse_k8s).transpose()?;
    runtime()?.block_on(async {
        let mut registry = args.registry.clone();
        registry.tags_page_size = Some(args.page_size);
        let store = registry.open(&location, false, false).await.with_context(|| format!("cannot list {location}"))?;
        let tags = store.tags().await.with_context(|| format!("cannot list {location}"))?;
        let total = tags.len();
        let mut other = Vec::new();
        let mut releases = Vec::new();
        for t in tags {
            match t.parse::<ReleaseName>() {
                Ok(r) => releases.push(r),
                Err(_) => other.push(t),
            }
        }
        releases.retain(|r| {
            args.provider.as_ref().is_none_or(|p| &r.provider == p)
                && args.name.as_ref().is_none_or(|n| &r.name == n)
                && k8s.is_none_or(|(maj, min)| r.k8s_major == maj && r.k8s_minor == min)
        });
        releases.sort_by(compare);
        let mut text = String::new();
        for r in &releases {
            text.push_str(&format!("{r}\n"));
        }
        if !other.is_empty() {
            ctx.progress(format!("{} of {total} tag(s) are not release names and were left out", other.len()));
        }
        ctx.emit(
            text,
            &serde_json::json!({
                "repository": location.to_string(),
                "releases": releases.iter().map(|r| serde_json::json!({
                    "tag": r.to_string(), "provider": r.provider, "name": r.name,
                    "kubernetes": format!("{}.{}", r.k8s_major, r.k8s_minor), "version": r.version.dash(),
                })).collect::<Vec<_>>(),
                "otherTags": other,
            }),
        );
        Ok(())
    })
}
