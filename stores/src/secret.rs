//! Credentials in store configuration: a string whose `Debug` never shows it, and the reader of
//! the `*_file` settings the S3 and Swift stores offer instead of inline secrets.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// A credential (a secret key, a token, an access key id). `Debug` prints `<redacted>`, so a
/// config or store that holds one can derive `Debug`; [`expose`](Secret::expose) reads it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// Reads the secret a `*_file` setting (`field`) names. A trailing line break, as editors and
/// `echo` leave, is not part of it. Errors name the setting, never the path or the content.
pub(crate) async fn read_file(field: &str, path: &Path) -> Result<Secret, String> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("cannot read {field}: {}", e.kind()))?;
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return Err(format!("{field} is empty"));
    }
    Ok(Secret(secret.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_lose_their_trailing_line_break_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        for (written, read) in [("abc\n", "abc"), ("abc\r\n", "abc"), (" a b ", " a b ")] {
            std::fs::write(&path, written).unwrap();
            assert_eq!(read_file("key_file", &path).await.unwrap().expose(), read);
        }
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(
            read_file("key_file", &path).await.unwrap_err(),
            "key_file is empty"
        );
        let missing = dir.path().join("missing-file-name");
        let err = read_file("key_file", &missing).await.unwrap_err();
        assert!(err.starts_with("cannot read key_file"), "{err}");
        assert!(!err.contains("missing-file-name"), "{err}");
    }

    #[test]
    fn debug_hides_the_value() {
        let secret = Secret::from("hunter2");
        assert_eq!(format!("{:?}", Some(secret)), "Some(<redacted>)");
    }
}
