//! Publishing an artifact: tag check first (same digest → nothing to do; other digest → refuse unless
//! forced), then blobs (skip what is there, mount, upload), then the manifest.
use futures::StreamExt as _;

use super::artifact::Artifact;
use super::client::BlobPush;
use super::digest::Digest;
use super::error::OciError;
use super::manifest::{ARTIFACT_TYPE, EMPTY_CONFIG};
use super::store::Store;

/// Blobs uploaded at the same time.
const BLOBS_IN_FLIGHT: usize = 3;

#[derive(Debug)]
pub enum PublishOutcome {
    /// The tag already points at this exact manifest: nothing was sent.
    Unchanged { digest: Digest },
    Published {
        digest: Digest,
        replaced: Option<Digest>,
        report: BlobReport,
    },
}

#[derive(Debug, Default)]
pub struct BlobReport {
    pub uploaded: usize,
    pub uploaded_bytes: u64,
    pub existed: usize,
    pub mounted: usize,
    pub resumed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "tag {tag} in {store} already points to {existing}, not to this release ({ours}); a published release should not change. Build a new version, or pass --force to move the tag"
    )]
    TagConflict {
        store: String,
        tag: String,
        existing: Digest,
        ours: Digest,
    },
    #[error(transparent)]
    Oci(#[from] OciError),
}

pub async fn publish(
    store: &Store,
    artifact: &Artifact,
    force: bool,
) -> Result<PublishOutcome, PublishError> {
    let manifest = artifact.manifest().to_bytes();
    let ours = Digest::of_bytes(&manifest);
    let existing = store.resolve(&artifact.tag).await?;
    match &existing {
        Some(d) if *d == ours => return Ok(PublishOutcome::Unchanged { digest: ours }),
        Some(d) if !force => {
            return Err(PublishError::TagConflict {
                store: store.describe(),
                tag: artifact.tag.clone(),
                existing: d.clone(),
                ours,
            });
        }
        _ => {}
    }
    let mut report = BlobReport::default();
    let mut count = |r: BlobPush| match r {
        BlobPush::Existed => report.existed += 1,
        BlobPush::Mounted { .. } => report.mounted += 1,
        BlobPush::Uploaded {
            bytes_sent,
            resumed_at,
        } => {
            report.uploaded += 1;
            report.uploaded_bytes += bytes_sent;
            if resumed_at > 0 {
                report.resumed += 1;
            }
        }
    };
    count(store.push_blob_bytes(EMPTY_CONFIG).await?);
    // Small files first: an interruption during a big node image then leaves all small layers done. A few
    // distinct blobs move at once (latency of many small requests, several node images on a fast link); on
    // the first error the others stop where they are, and their sessions are resumed by the next run.
    let mut order: Vec<_> = artifact.files.iter().collect();
    order.sort_by_key(|f| (f.size, f.name.clone()));
    let mut uploads = futures::stream::iter(order)
        .map(|f| async move {
            tracing::debug!(file = %f.name, digest = %f.digest, size = f.size, "pushing layer");
            store.push_blob(&f.path, &f.digest, f.size, &f.name).await
        })
        .buffer_unordered(BLOBS_IN_FLIGHT);
    while let Some(pushed) = uploads.next().await {
        count(pushed?);
    }
    let digest = store
        .push_manifest(&artifact.tag, &manifest, Some(ARTIFACT_TYPE))
        .await?;
    Ok(PublishOutcome::Published {
        digest,
        replaced: existing,
        report,
    })
}
