//! `beowulf crds`: print the provider's CustomResourceDefinitions.

use std::io::Write;

use anyhow::Context;

/// Print the CRDs (BeowulfHost, BeowulfImage, BeowulfCluster[Template], BeowulfMachine[Template]) as one
/// multi-document YAML stream, ready for `kubectl apply -f -`.
#[derive(Debug, clap::Args)]
pub struct CrdsArgs {}

pub fn run(_args: CrdsArgs) -> anyhow::Result<()> {
    let yaml = crate::api::crds::to_yaml().context("rendering the CRDs as YAML")?;
    std::io::stdout()
        .lock()
        .write_all(yaml.as_bytes())
        .context("writing the CRDs to stdout")
}
