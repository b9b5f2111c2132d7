//! `glance-gateway registry copy`: moves a sled catalogue into PostgreSQL, every record (deleted
//! ones too, so their ids stay reserved) with its members, and the registry id the stores'
//! ownership markers name. Images already in the target are skipped, so an interrupted copy can
//! be run again. Afterwards the counts of both sides are compared.

use std::path::Path;

use anyhow::{bail, Context};

use super::query::{Filters, SortDir, SortKey};
use super::{Audience, PageRequest, PostgresRegistry, PostgresSettings, Registry, RegistryEngine};
use crate::model::Timestamp;

/// What a copy did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    pub images: u64,
    pub skipped: u64,
    pub members: u64,
}

/// Copies the sled registry under `from` (no gateway may have it open) into `to`.
pub async fn sled_to_postgres(from: &Path, to: &PostgresSettings) -> anyhow::Result<Copied> {
    let path = from.to_path_buf();
    let source = tokio::task::spawn_blocking(move || Registry::open(&path))
        .await?
        .with_context(|| format!("cannot open the sled registry at {}", from.display()))?;
    let target = PostgresRegistry::open(to)
        .await
        .with_context(|| format!("cannot open the registry database {}", to.url))?;
    target
        .adopt_id(source.id())
        .await
        .context("the target registry")?;
    let mut copied = Copied::default();
    let mut after = None;
    loop {
        // By id, deleted images included: one page of records at a time.
        let page = source
            .list_page(PageRequest {
                audience: Audience::Everything,
                filters: Filters {
                    changes_since: Some(Timestamp::from_datetime(
                        time::macros::datetime!(1000-01-01 0:00 UTC),
                    )),
                    ..Filters::default()
                },
                sort_key: SortKey::Id,
                sort_dir: SortDir::Asc,
                after,
                limit: 1000,
            })
            .await?;
        let Some(last) = page.last().cloned() else {
            break;
        };
        for record in page {
            let Some(image) = source.get(&record.id).await? else {
                continue;
            };
            copied.members += image.members.len() as u64;
            if target.copy_in(image).await? {
                copied.images += 1;
            } else {
                copied.skipped += 1;
            }
        }
        after = Some(last);
    }
    let want = source.status_counts().await?;
    let got = target.status_counts().await?;
    let want_total: u64 = want.iter().map(|(_, n)| n).sum();
    let (images, members) = target.totals().await?;
    if want != got || images != want_total || members != copied.members {
        bail!(
            "the counts differ after the copy: source {want:?} ({} members), target {got:?} \
             ({images} images, {members} members)",
            copied.members
        );
    }
    Ok(copied)
}
