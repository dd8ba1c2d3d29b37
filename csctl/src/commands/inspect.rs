//! `csctl inspect`: what a published release is made of — versions, layers, sizes, digests.
use anyhow::Context;
use clap::Args;

use super::remote::{RegistryArgs, parse_location, runtime};
use crate::oci::Location;
use crate::oci::pull::release_manifest;
use crate::output::Ctx;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// oci://HOST[:PORT]/REPOSITORY:TAG (or @sha256:…), or oci:DIR:TAG.
    #[arg(value_name = "REF")]
    pub reference: String,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// The versions in a release's metadata.yaml, read leniently (inspect and diff must work on odd releases).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataVersions {
    pub cluster_stack: Option<String>,
    pub kubernetes: Option<String>,
    pub cluster_addon: Option<String>,
    pub node_image: Option<String>,
}

pub fn metadata_versions(yaml: &[u8]) -> MetadataVersions {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Meta {
        versions: Option<V>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct V {
        cluster_stack: Option<String>,
        kubernetes: Option<String>,
        components: Option<C>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct C {
        cluster_addon: Option<String>,
        node_image: Option<String>,
    }
    let Ok(text) = std::str::from_utf8(yaml) else {
        return MetadataVersions::default();
    };
    let Ok(Meta { versions: Some(v) }) = serde_saphyr::from_str::<Meta>(text) else {
        return MetadataVersions::default();
    };
    let (cluster_addon, node_image) = v
        .components
        .map(|c| (c.cluster_addon, c.node_image))
        .unwrap_or_default();
    MetadataVersions {
        cluster_stack: v.cluster_stack,
        kubernetes: v.kubernetes,
        cluster_addon,
        node_image,
    }
}

pub fn run(ctx: &Ctx, args: &InspectArgs) -> anyhow::Result<()> {
    let location = parse_location(&args.reference)?;
    let reference = match &location {
        Location::Registry(r) => r.reference(),
        Location::Layout { tag, .. } => tag.clone(),
    }
    .with_context(|| format!("{} has no tag or digest", args.reference))?;
    runtime()?.block_on(async {
        let store = args.registry.open(&location, false, false).await.with_context(|| format!("cannot inspect {}", args.reference))?;
        let (manifest, digest) =
            release_manifest(&store, &reference).await.with_context(|| format!("cannot inspect {}", args.reference))?;
        let meta_layer = manifest.layers.iter().find(|l| l.title() == Some("metadata.yaml"));
        let versions = match meta_layer {
            Some(l) => metadata_versions(&store.fetch_blob_bytes(&l.digest).await?),
            None => MetadataVersions::default(),
        };
        let total: u64 = manifest.layers.iter().map(|l| l.size).sum();
        let mut text = format!("{}\n  digest:       {digest}\n", args.reference);
        text.push_str(&format!("  artifactType: {}\n", manifest.artifact_type.as_deref().unwrap_or("(none)")));
        for (k, v) in &manifest.annotations {
            text.push_str(&format!("  annotation:   {k}={v}\n"));
        }
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        text.push_str(&format!(
            "  versions:     clusterStack {}  kubernetes {}  clusterAddon {}  nodeImage {}\n",
            show(&versions.cluster_stack),
            show(&versions.kubernetes),
            show(&versions.cluster_addon),
            show(&versions.node_image)
        ));
        text.push_str(&format!("  layers ({}, {total} bytes):\n", manifest.layers.len()));
        for l in &manifest.layers {
            text.push_str(&format!(
                "    {:<50} {:>12}  {}  {}\n",
                l.title().unwrap_or("(untitled)"),
                l.size,
                l.digest,
                l.media_type
            ));
        }
        ctx.emit(
            text,
            &serde_json::json!({
                "reference": args.reference, "digest": digest, "artifactType": manifest.artifact_type,
                "annotations": manifest.annotations, "versions": versions, "totalSize": total,
                "layers": manifest.layers.iter().map(|l| serde_json::json!({
                    "title": l.title(), "mediaType": l.media_type, "size": l.size, "digest": l.digest,
                })).collect::<Vec<_>>(),
            }),
        );
        Ok(())
    })
}
