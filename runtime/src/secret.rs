//! Secrets read from files or the environment, and URL redaction.
//!
//! A [`Secret`] holds a password, token or seed. Its `Debug` prints `Secret(***)` and it has no
//! `Display`, so formatting a configuration or an error that holds one cannot print the value.
//! [`redact_url`] removes the user-info part (`user:password@`) of URLs before they are logged
//! or put into an error.

use std::path::Path;

/// A secret value (password, bearer token, nkey seed). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from a file. Trailing whitespace (the newline editors and `echo` add) is
    /// removed; an empty result is refused. Errors name `field` and the path, never the content.
    pub fn from_file(path: &Path, field: &str) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|e| SecretError {
            field: field.to_owned(),
            detail: format!("cannot read {}: {e}", path.display()),
        })?;
        let value = text.trim_end();
        if value.is_empty() {
            return Err(SecretError {
                field: field.to_owned(),
                detail: format!("{} is empty", path.display()),
            });
        }
        Ok(Self(value.to_owned()))
    }

    /// Reads a secret from the environment variable `name`. Errors name `field` and the
    /// variable, never the content.
    pub fn from_env(name: &str, field: &str) -> Result<Self, SecretError> {
        match std::env::var(name) {
            Ok(v) if !v.trim_end().is_empty() => Ok(Self(v.trim_end().to_owned())),
            Ok(_) => Err(SecretError {
                field: field.to_owned(),
                detail: format!("environment variable {name} is empty"),
            }),
            Err(std::env::VarError::NotPresent) => Err(SecretError {
                field: field.to_owned(),
                detail: format!("environment variable {name} is not set"),
            }),
            Err(std::env::VarError::NotUnicode(_)) => Err(SecretError {
                field: field.to_owned(),
                detail: format!("environment variable {name} is not UTF-8"),
            }),
        }
    }

    /// Replaces every occurrence of this secret in `text` by `***` (for error texts that come
    /// from libraries and might quote what they were given).
    pub fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.0, "***")
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration, {field}: {detail}")]
pub struct SecretError {
    /// The configuration key that names the file or variable.
    pub field: String,
    /// What went wrong (never the secret).
    pub detail: String,
}

/// Returns `url` with the user-info of every comma-separated URL replaced by `***`
/// (`nats://user:pw@host:4222` → `nats://***@host:4222`). URLs without user-info are returned
/// unchanged.
pub fn redact_url(url: &str) -> String {
    url.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &rest[at..]),
        None => url.to_owned(),
    }
}

/// Whether any comma-separated URL in `url` carries user-info (`user[:password]@`).
pub fn url_has_userinfo(url: &str) -> bool {
    redact_url(url) != url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_userinfo() {
        assert_eq!(
            redact_url("nats://u:p@h:4222"),
            "nats://***@h:4222".to_owned()
        );
        assert_eq!(
            redact_url("nats://a:b@h1:1, tls://tok@h2:2/x@y,h3:3"),
            "nats://***@h1:1, tls://***@h2:2/x@y,h3:3"
        );
        assert_eq!(redact_url("u:p@h:1"), "***@h:1");
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
        assert!(url_has_userinfo("nats://tok@h"));
        assert!(!url_has_userinfo("nats://h/a@b"));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.scrub("bad hunter2!"), "bad ***!");
    }

    #[test]
    fn files_are_trimmed_and_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(
            Secret::from_file(&p, "nats.password_file")
                .unwrap()
                .expose(),
            "s3cret"
        );
        std::fs::write(&p, "\n").unwrap();
        assert_eq!(
            Secret::from_file(&p, "nats.password_file")
                .unwrap_err()
                .to_string(),
            format!(
                "configuration, nats.password_file: {} is empty",
                p.display()
            )
        );
        let err = Secret::from_env("PROXBALANCE_TEST_UNSET_VARIABLE", "nats.password_env")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "configuration, nats.password_env: environment variable PROXBALANCE_TEST_UNSET_VARIABLE is not set"
        );
    }
}
