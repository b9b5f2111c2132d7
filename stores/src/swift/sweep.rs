//! Listing and removing: the objects the store manages, a key's removal with its segments, and
//! the sweep of abandoned upload runs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use reqwest::header::ACCEPT;
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::client::{header_str, is_true};
use super::config::valid_container;
use super::{Inner, SEGMENT_MARK};
use crate::{ObjectInfo, ObjectKey, StoreError, SweepReport};

const LISTING_LIMIT: usize = 10_000;
const DELETE_CONCURRENCY: usize = 8;

#[derive(Deserialize)]
pub(super) struct Listed {
    pub name: String,
    #[serde(default)]
    pub last_modified: Option<String>,
}

#[derive(Deserialize)]
struct SloSegment {
    name: String,
}

#[derive(Deserialize)]
struct BulkDeleteReport {
    #[serde(rename = "Response Status")]
    status: String,
    #[serde(rename = "Errors", default)]
    errors: Vec<(String, String)>,
}

/// Swift listings give `2024-05-01T12:34:56.123456` in UTC.
fn parse_listing_time(s: &str) -> Option<SystemTime> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let time = time.trim_end_matches('Z');
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':');
    let hour: i64 = t.next()?.parse().ok()?;
    let minute: i64 = t.next()?.parse().ok()?;
    let second: i64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), counting from 1970-01-01.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()?;
    let digits: String = frac
        .chars()
        .take_while(char::is_ascii_digit)
        .take(9)
        .collect();
    let nanos = if digits.is_empty() {
        0
    } else {
        digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
    };
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Splits a segment name into its key and upload run.
fn parse_segment_name(name: &str) -> Option<(ObjectKey, &str)> {
    let i = name.rfind(SEGMENT_MARK)?;
    let key = ObjectKey::parse(&name[..i])?;
    let (run, _) = name[i + SEGMENT_MARK.len()..].split_once('/')?;
    (!run.is_empty()).then_some((key, run))
}

impl Inner {
    /// Removes the object at `key`: a manifest with its segments, and any segments an earlier
    /// upload of the key left.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let inner = self;
        if let Some(headers) = inner.head(&inner.container, key.as_str()).await? {
            let what = format!("deleting {key}");
            if is_true(&headers, "x-static-large-object") {
                // Removes the manifest and every segment it names, wherever they are.
                let response = inner
                    .send(&what, inner.request_timeout * 5, |s| {
                        inner
                            .request(s, Method::DELETE, &inner.container, Some(key.as_str()))
                            .query(&[("multipart-manifest", "delete")])
                            .header(ACCEPT, "application/json")
                    })
                    .await?;
                match response.status() {
                    StatusCode::NOT_FOUND => {}
                    s if s.is_success() => {
                        let report: BulkDeleteReport = inner.read_json(&what, response).await?;
                        let failed: Vec<_> = report
                            .errors
                            .iter()
                            .filter(|(_, status)| !status.starts_with("404"))
                            .collect();
                        if !failed.is_empty()
                            || !(report.status.starts_with("200")
                                || report.status.starts_with("404"))
                        {
                            return Err(inner.other(format!(
                                "{what}: Swift reported {} ({} segment errors)",
                                report.status,
                                failed.len()
                            )));
                        }
                    }
                    s => return Err(inner.status_error(&what, s)),
                }
            } else {
                inner.delete_object(&inner.container, key.as_str()).await?;
                // A DLO's segments: only when they are ours, never a prefix someone else shares.
                if let Some(manifest) = header_str(&headers, "x-object-manifest") {
                    let ours = format!("{key}{SEGMENT_MARK}");
                    if let Some((container, prefix)) = manifest.split_once('/') {
                        if prefix.starts_with(&ours) && valid_container(container) {
                            inner.delete_prefix(container, prefix).await?;
                        }
                    }
                }
            }
        }
        // Leftovers of any earlier upload of this key: failed, cancelled or overwritten.
        inner
            .delete_prefix(&inner.segment_container, &format!("{key}{SEGMENT_MARK}"))
            .await?;
        Ok(())
    }

    /// The complete objects in the container.
    pub async fn list(&self) -> Result<Vec<ObjectInfo>, StoreError> {
        let inner = self;
        Ok(inner
            .list_objects(&inner.container, "")
            .await?
            .into_iter()
            .filter_map(|l| {
                Some(ObjectInfo {
                    key: ObjectKey::parse(&l.name)?,
                    last_modified: l.last_modified.as_deref().and_then(parse_listing_time),
                })
            })
            .collect())
    }

    /// Removes the segments of upload runs whose newest segment is older than `older_than` and
    /// that no manifest names. `older_than` must exceed the time one segment takes to upload,
    /// since a segment in flight is not listed yet.
    pub async fn sweep_incomplete(&self, older_than: Duration) -> Result<SweepReport, StoreError> {
        let inner = self;
        let now = SystemTime::now();
        let mut runs: std::collections::BTreeMap<(ObjectKey, String), (SystemTime, Vec<String>)> =
            Default::default();
        for listed in inner.list_objects(&inner.segment_container, "").await? {
            let Some((key, run)) = parse_segment_name(&listed.name) else {
                continue; // not ours
            };
            let Some(modified) = listed.last_modified.as_deref().and_then(parse_listing_time)
            else {
                continue;
            };
            let entry = runs
                .entry((key, run.to_owned()))
                .or_insert((UNIX_EPOCH, vec![]));
            entry.0 = entry.0.max(modified);
            entry.1.push(listed.name);
        }
        let mut report = SweepReport::default();
        for ((key, run), (newest, names)) in runs {
            if now.duration_since(newest).unwrap_or_default() < older_than
                || inner.manifest_uses_run(&key, &run).await?
            {
                continue;
            }
            let removed = inner.delete_all(&inner.segment_container, names).await?;
            tracing::info!(store = %inner.name, %key, run, removed, "removed an abandoned upload");
            report.incomplete_removed += 1;
        }
        Ok(report)
    }

    /// Every object under `prefix`, page by page. A missing container lists as empty.
    pub async fn list_objects(
        &self,
        container: &str,
        prefix: &str,
    ) -> Result<Vec<Listed>, StoreError> {
        let what = format!("listing container {container}");
        let mut out: Vec<Listed> = vec![];
        loop {
            let marker = out.last().map(|l| l.name.clone()).unwrap_or_default();
            let response = self
                .send(&what, self.request_timeout, |s| {
                    self.request(s, Method::GET, container, None).query(&[
                        ("format", "json"),
                        ("limit", &LISTING_LIMIT.to_string()),
                        ("prefix", prefix),
                        ("marker", &marker),
                    ])
                })
                .await?;
            match response.status() {
                StatusCode::NOT_FOUND => return Ok(out),
                StatusCode::NO_CONTENT => return Ok(out),
                s if s.is_success() => {}
                s => return Err(self.status_error(&what, s)),
            }
            let page: Vec<Listed> = self.read_json(&what, response).await?;
            let full = page.len() >= LISTING_LIMIT;
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    pub async fn delete_all(
        &self,
        container: &str,
        names: Vec<String>,
    ) -> Result<usize, StoreError> {
        let count = names.len();
        futures::stream::iter(names)
            .map(|name| async move { self.delete_object(container, &name).await })
            .buffer_unordered(DELETE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(count)
    }

    pub async fn delete_prefix(&self, container: &str, prefix: &str) -> Result<usize, StoreError> {
        let names = self
            .list_objects(container, prefix)
            .await?
            .into_iter()
            .map(|l| l.name)
            .collect();
        self.delete_all(container, names).await
    }

    /// Whether the object at `key` is a manifest over segments of upload `run`.
    async fn manifest_uses_run(&self, key: &ObjectKey, run: &str) -> Result<bool, StoreError> {
        let Some(headers) = self.head(&self.container, key.as_str()).await? else {
            return Ok(false);
        };
        let needle = format!("{SEGMENT_MARK}{run}/");
        if let Some(prefix) = header_str(&headers, "x-object-manifest") {
            return Ok(prefix.contains(&needle));
        }
        if !is_true(&headers, "x-static-large-object") {
            return Ok(false);
        }
        let what = format!("reading the manifest of {key}");
        let response = self
            .send(&what, self.request_timeout, |s| {
                self.request(s, Method::GET, &self.container, Some(key.as_str()))
                    .query(&[("multipart-manifest", "get")])
            })
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => return Ok(false),
            s if s.is_success() => {}
            s => return Err(self.status_error(&what, s)),
        }
        let segments: Vec<SloSegment> = self.read_json(&what, response).await?;
        Ok(segments.iter().any(|s| s.name.contains(&needle)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_times() {
        let t = parse_listing_time("2024-05-01T12:34:56.123456").unwrap();
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_714_566_896);
        assert_eq!(d.subsec_micros(), 123_456);
        assert_eq!(
            parse_listing_time("1970-01-01T00:00:00").unwrap(),
            UNIX_EPOCH
        );
        assert_eq!(
            parse_listing_time("2000-02-29T23:59:59.5")
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis(),
            951_868_799_500
        );
        assert!(parse_listing_time("garbage").is_none());
    }

    #[test]
    fn segment_names() {
        let (key, run) = parse_segment_name("a/b/.upload-0123abcd/00000001").unwrap();
        assert_eq!((key.as_str(), run), ("a/b", "0123abcd"));
        assert!(parse_segment_name("a/00000001").is_none());
        assert!(parse_segment_name("../.upload-x/1").is_none());
    }
}
