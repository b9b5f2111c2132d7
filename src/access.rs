//! Identity and tenancy: who the caller is (from the configured auth mode) and every rule about
//! which images it may see, list, change and share. No other module decides these.

use axum::http::HeaderMap;

use crate::config::{AuthMode, Config, PublicizeImage};
use crate::error::{ApiError, ApiResult};
use crate::model::ImageRecord;
use crate::registry::StoredImage;

/// The identity a request acts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: Option<String>,
    pub user: Option<String>,
    pub roles: Vec<String>,
    pub is_admin: bool,
    pub read_only: bool,
    /// The identity used for ownership and membership: tenant or user per `owner_is_tenant`.
    pub owner: Option<String>,
}

/// Identity headers an authenticating proxy sets. Only these exact names count.
const IDENTITY_HEADERS: &[&str] = &[
    "x-identity-status",
    "x-tenant-id",
    "x-project-id",
    "x-tenant",
    "x-user-id",
    "x-user",
    "x-roles",
];

fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> ApiResult<Option<&'a str>> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad_request(format!(
            "Repeated identity header {name}"
        )));
    }
    let text = first
        .to_str()
        .map_err(|_| ApiError::bad_request(format!("Invalid identity header {name}")))?
        .trim();
    Ok((!text.is_empty()).then_some(text))
}

/// The one value several alias headers agree on; aliases that disagree are refused, so a
/// client-sent alias can never override the one the proxy set.
fn aliased<'a>(headers: &'a HeaderMap, aliases: &[&str]) -> ApiResult<Option<&'a str>> {
    let mut found: Option<&str> = None;
    for name in aliases {
        if let Some(value) = single_header(headers, name)? {
            match found {
                Some(seen) if seen != value => {
                    return Err(ApiError::bad_request(format!(
                        "Conflicting identity headers: {}",
                        aliases.join(", ")
                    )))
                }
                _ => found = Some(value),
            }
        }
    }
    Ok(found)
}

impl Caller {
    /// Builds the caller for a request; 401 when identity is required and missing.
    pub fn identify(headers: &HeaderMap, config: &Config) -> ApiResult<Self> {
        match config.auth {
            AuthMode::Noauth => Ok(Self {
                tenant: None,
                user: None,
                roles: vec![],
                is_admin: true,
                read_only: false,
                owner: None,
            }),
            AuthMode::TrustedHeaders => {
                for name in IDENTITY_HEADERS {
                    single_header(headers, name)?;
                }
                let confirmed = single_header(headers, "x-identity-status")? == Some("Confirmed");
                if !confirmed {
                    if config.allow_anonymous_access {
                        return Ok(Self {
                            tenant: None,
                            user: None,
                            roles: vec![],
                            is_admin: false,
                            read_only: true,
                            owner: None,
                        });
                    }
                    return Err(ApiError::unauthorized(
                        "This server could not verify that you are authorized to access the document you requested.",
                    ));
                }
                let tenant = aliased(headers, &["x-tenant-id", "x-project-id", "x-tenant"])?
                    .map(str::to_owned);
                let user = aliased(headers, &["x-user-id", "x-user"])?.map(str::to_owned);
                let roles: Vec<String> = single_header(headers, "x-roles")?
                    .unwrap_or("")
                    .split(',')
                    .map(|r| r.trim().to_lowercase())
                    .filter(|r| !r.is_empty())
                    .collect();
                let is_admin = roles.contains(&config.admin_role);
                let owner = if config.owner_is_tenant {
                    tenant.clone()
                } else {
                    user.clone()
                };
                Ok(Self {
                    tenant,
                    user,
                    roles,
                    is_admin,
                    read_only: false,
                    owner,
                })
            }
        }
    }

    fn owns(&self, record: &ImageRecord) -> bool {
        matches!((&self.owner, &record.owner), (Some(a), Some(b)) if a == b)
    }

    fn is_member(&self, image: &StoredImage) -> bool {
        self.owner
            .as_deref()
            .is_some_and(|o| image.membership(o).is_some())
    }

    /// May the caller see this image by id? Invisible images answer 404, never 403.
    pub fn can_see(&self, image: &StoredImage) -> bool {
        let r = &image.record;
        if r.status.is_deleted() {
            return self.is_admin;
        }
        self.is_admin || r.owner.is_none() || r.is_public || self.owns(r) || self.is_member(image)
    }

    /// Refuses a read-only (anonymous) caller's change.
    pub fn check_writable(&self) -> ApiResult<()> {
        if self.read_only {
            return Err(ApiError::forbidden("Read-only access"));
        }
        Ok(())
    }

    /// Making an image public needs the `publicize_image` policy: admins only by default.
    pub fn check_publicize(&self, makes_public: bool, policy: PublicizeImage) -> ApiResult<()> {
        if makes_public && policy == PublicizeImage::Admin && !self.is_admin {
            return Err(ApiError::forbidden(
                "You are not authorized to make images public.",
            ));
        }
        Ok(())
    }

    /// Update and delete need admin or ownership. A public image one does not own → 403; any
    /// other visible image one does not own → 404.
    pub fn check_modify(&self, image: &StoredImage) -> ApiResult<()> {
        if self.is_admin || self.owns(&image.record) {
            return Ok(());
        }
        if image.record.is_public {
            return Err(ApiError::forbidden(
                "You are not permitted to modify this image.",
            ));
        }
        Err(ApiError::image_not_found(image.record.id.as_str()))
    }

    /// Member changes need an identity (401), then admin, owner, or a member with `can_share`.
    pub fn check_member_identity(&self) -> ApiResult<()> {
        if !self.is_admin && self.owner.is_none() {
            return Err(ApiError::unauthorized("No authenticated user"));
        }
        Ok(())
    }

    pub fn can_manage_members(&self, image: &StoredImage) -> bool {
        self.is_admin
            || self.owns(&image.record)
            || self
                .owner
                .as_deref()
                .and_then(|o| image.membership(o))
                .is_some_and(|m| m.can_share)
    }

    /// Which memberships of an image the caller may see listed.
    pub fn sees_all_members(&self, image: &StoredImage) -> bool {
        self.is_admin || self.owns(&image.record)
    }

    /// Is a membership of `image` shown to the caller in `/shared-images/{member}`?
    pub fn sees_shared(&self, image: &StoredImage, member: &str) -> bool {
        self.is_admin || self.owns(&image.record) || self.owner.as_deref() == Some(member)
    }

    /// Whether the caller's list includes the image, given the `is_public` scope.
    pub fn lists(&self, image: &StoredImage, scope: ListScope) -> bool {
        let r = &image.record;
        match scope {
            ListScope::All if self.is_admin => true,
            ListScope::NonPublic if self.is_admin => !r.is_public,
            _ => r.is_public || (self.owner.is_some() && (self.owns(r) || self.is_member(image))),
        }
    }
}

/// The `is_public` list parameter as admins use it; for others it is validated and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListScope {
    /// Absent, `true` or `1`: public ∪ own ∪ shared with the caller.
    Caller,
    /// `none`: every image (admins).
    All,
    /// `false` or `0`: every non-public image (admins).
    NonPublic,
}
