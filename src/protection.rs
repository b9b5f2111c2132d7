//! Property protection (optional): a rules file maps property-name patterns to the roles allowed
//! to create, read, update and delete matching properties, in the format glance-api used
//! (`property-protections-roles.conf`): INI sections named by a regular expression, tried in
//! file order, each with `create`, `read`, `update` and `delete` lists of roles, `@` for every
//! caller and `!` for none. A property no section matches is refused to everyone.
//!
//! Every property-protection decision is made here: what a create or update may send, what a
//! purge keeps, which properties a caller is shown and which list filters it may use.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use regex::Regex;

use crate::access::Caller;
use crate::error::{ApiError, ApiResult};
use crate::model::ImageRecord;

/// Image properties as a request sends them or the registry keeps them.
pub type Properties = BTreeMap<String, Option<String>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Read,
    Update,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    Everyone,
    Nobody,
    Roles(Vec<String>),
}

impl Allowed {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let items: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        Ok(match items.as_slice() {
            ["@"] => Self::Everyone,
            ["!"] => Self::Nobody,
            roles if roles.iter().any(|r| *r == "@" || *r == "!") => {
                bail!("`@` and `!` must stand alone, not in a list of roles")
            }
            [] => Self::Nobody,
            roles => Self::Roles(roles.iter().map(|r| r.to_lowercase()).collect()),
        })
    }

    fn admits(&self, caller: &Caller) -> bool {
        match self {
            Self::Everyone => true,
            Self::Nobody => false,
            Self::Roles(roles) => caller.roles.iter().any(|r| roles.contains(r)),
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    pattern: Regex,
    create: Allowed,
    read: Allowed,
    update: Allowed,
    delete: Allowed,
}

/// The loaded rules; without a file every property is open to every operation.
#[derive(Debug, Clone, Default)]
pub struct PropertyRules {
    rules: Option<Vec<Rule>>,
}

impl PropertyRules {
    /// The rules of `property_protection_file`, or none (everything open) when it is not set.
    pub async fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = tokio::fs::read_to_string(path)
            .await
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid rules in {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let ini = ini::Ini::load_from_str_noescape(text)?;
        let mut rules = vec![];
        for (section, props) in ini.iter() {
            let Some(section) = section else {
                if props.iter().next().is_some() {
                    bail!("settings outside a [pattern] section");
                }
                continue;
            };
            let pattern =
                Regex::new(section).with_context(|| format!("section [{section}]: bad pattern"))?;
            let op = |name: &str| -> anyhow::Result<Allowed> {
                let text = props
                    .get(name)
                    .with_context(|| format!("section [{section}]: `{name}` is missing"))?;
                Allowed::parse(text).with_context(|| format!("section [{section}]: `{name}`"))
            };
            for (key, _) in props.iter() {
                if !["create", "read", "update", "delete"].contains(&key) {
                    bail!("section [{section}]: unknown key `{key}`");
                }
            }
            rules.push(Rule {
                pattern,
                create: op("create")?,
                read: op("read")?,
                update: op("update")?,
                delete: op("delete")?,
            });
        }
        Ok(Self { rules: Some(rules) })
    }

    pub fn is_active(&self) -> bool {
        self.rules.is_some()
    }

    /// May `caller` perform `op` on the property `key`?
    pub fn allows(&self, caller: &Caller, key: &str, op: Op) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        let Some(rule) = rules.iter().find(|r| r.pattern.is_match(key)) else {
            return false;
        };
        match op {
            Op::Create => &rule.create,
            Op::Read => &rule.read,
            Op::Update => &rule.update,
            Op::Delete => &rule.delete,
        }
        .admits(caller)
    }

    /// POST: every property sent must be one the caller may create.
    pub fn check_create(&self, caller: &Caller, sent: &Properties) -> ApiResult<()> {
        match sent.keys().find(|k| !self.allows(caller, k, Op::Create)) {
            Some(key) => Err(protected(key)),
            None => Ok(()),
        }
    }

    /// PUT. Sending a property needs read access (and update access to change its value, create
    /// access when it is new); a purge keeps the properties the caller cannot read (adding them
    /// to `sent`) and refuses to drop one it may read but not delete.
    pub fn check_update(
        &self,
        caller: &Caller,
        stored: &Properties,
        sent: &mut Properties,
        purge: bool,
    ) -> ApiResult<()> {
        if !self.is_active() {
            return Ok(());
        }
        for (key, value) in sent.iter() {
            let allowed = match stored.get(key) {
                None => self.allows(caller, key, Op::Create),
                Some(old) => {
                    self.allows(caller, key, Op::Read)
                        && (old == value || self.allows(caller, key, Op::Update))
                }
            };
            if !allowed {
                return Err(protected(key));
            }
        }
        if purge {
            for (key, value) in stored {
                if sent.contains_key(key) {
                    continue;
                }
                if !self.allows(caller, key, Op::Read) {
                    sent.insert(key.clone(), value.clone());
                } else if !self.allows(caller, key, Op::Delete) {
                    return Err(protected(key));
                }
            }
        }
        Ok(())
    }

    /// The record as the caller may see it: properties it may not read left out.
    pub fn readable<'a>(&self, caller: &Caller, record: &'a ImageRecord) -> Cow<'a, ImageRecord> {
        if !self.is_active() {
            return Cow::Borrowed(record);
        }
        let mut shown = record.clone();
        shown
            .properties
            .retain(|k, _| self.allows(caller, k, Op::Read));
        Cow::Owned(shown)
    }

    /// Filtering a list on a property the caller may not read would reveal its values.
    pub fn may_filter_on<'a>(
        &self,
        caller: &Caller,
        mut keys: impl Iterator<Item = &'a String>,
    ) -> bool {
        keys.all(|k| self.allows(caller, k, Op::Read))
    }
}

fn protected(key: &str) -> ApiError {
    ApiError::forbidden(format!("Property '{key}' is protected"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r"
[^x_owner_.*]
create = admin,member
read = admin,member
update = admin
delete = admin

[^x_none_.*]
create = !
read = !
update = !
delete = !

[.*]
create = @
read = @
update = @
delete = @
";

    fn caller(roles: &[&str]) -> Caller {
        Caller {
            tenant: Some("t".into()),
            user: None,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            is_admin: roles.contains(&"admin"),
            read_only: false,
            owner: Some("t".into()),
        }
    }

    #[test]
    fn first_matching_section_decides() {
        let rules = PropertyRules::parse(RULES).unwrap();
        let member = caller(&["member"]);
        let admin = caller(&["admin"]);
        let other = caller(&["reader"]);
        assert!(rules.allows(&member, "x_owner_a", Op::Create));
        assert!(!rules.allows(&member, "x_owner_a", Op::Update));
        assert!(rules.allows(&admin, "x_owner_a", Op::Delete));
        assert!(!rules.allows(&other, "x_owner_a", Op::Read));
        assert!(!rules.allows(&admin, "x_none_a", Op::Read));
        assert!(rules.allows(&other, "os_distro", Op::Update));
    }

    #[test]
    fn unmatched_properties_are_refused_and_no_file_allows_all() {
        let rules =
            PropertyRules::parse("[^only$]\ncreate=@\nread=@\nupdate=@\ndelete=@\n").unwrap();
        assert!(!rules.allows(&caller(&[]), "other", Op::Read));
        assert!(PropertyRules::default().allows(&caller(&[]), "other", Op::Delete));
    }

    #[test]
    fn updates_keep_what_the_caller_cannot_read() {
        let rules = PropertyRules::parse(RULES).unwrap();
        let member = caller(&["member"]);
        let props = |pairs: &[(&str, &str)]| -> Properties {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.to_string())))
                .collect()
        };
        let stored = props(&[("x_none_secret", "s"), ("os_distro", "u")]);
        // A purge keeps the unreadable property and drops the readable, deletable one.
        let mut sent = props(&[]);
        rules
            .check_update(&member, &stored, &mut sent, true)
            .unwrap();
        assert_eq!(sent, props(&[("x_none_secret", "s")]));
        // Changing a value needs update access; resending it unchanged does not.
        let stored = props(&[("x_owner_a", "1")]);
        let mut same = props(&[("x_owner_a", "1")]);
        rules
            .check_update(&member, &stored, &mut same, false)
            .unwrap();
        let mut changed = props(&[("x_owner_a", "2")]);
        let err = rules.check_update(&member, &stored, &mut changed, false);
        assert_eq!(
            err.unwrap_err().message,
            "Property 'x_owner_a' is protected"
        );
        // A purge may not drop a readable property the caller may not delete.
        let mut sent = props(&[]);
        assert!(rules
            .check_update(&member, &stored, &mut sent, true)
            .is_err());
        assert!(rules
            .check_create(&member, &props(&[("x_none_b", "1")]))
            .is_err());
    }

    #[test]
    fn readers_see_only_readable_properties() {
        let rules = PropertyRules::parse(RULES).unwrap();
        let mut record = ImageRecord::new(
            crate::model::ImageId::random(),
            crate::model::Timestamp::now(),
        );
        record
            .properties
            .insert("x_none_a".into(), Some("1".into()));
        record
            .properties
            .insert("os_distro".into(), Some("u".into()));
        let shown = rules.readable(&caller(&["reader"]), &record);
        assert_eq!(shown.properties.keys().collect::<Vec<_>>(), ["os_distro"]);
        let keys = ["x_none_a".to_string()];
        assert!(!rules.may_filter_on(&caller(&["admin"]), keys.iter()));
        assert!(PropertyRules::default().may_filter_on(&caller(&[]), keys.iter()));
    }

    #[test]
    fn bad_files_are_refused() {
        for bad in [
            "[(]\ncreate=@\nread=@\nupdate=@\ndelete=@\n",
            "[.*]\ncreate=@\nread=@\nupdate=@\n",
            "[.*]\ncreate=@,admin\nread=@\nupdate=@\ndelete=@\n",
            "[.*]\ncreate=@\nread=@\nupdate=@\ndelete=@\nbogus=1\n",
        ] {
            assert!(PropertyRules::parse(bad).is_err(), "{bad:?}");
        }
    }
}
