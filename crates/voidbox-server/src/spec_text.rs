//! A spec sent as text (a run's or a session's): parsed as if it lay alone
//! in an empty directory of its own, so its `file:` skills read nothing of
//! the daemon's host, and no host grant (`--pass-env`, host files) applies.

use void_box::spec::{HostAccess, Spec};

/// Why a spec's text was refused.
pub(crate) enum SpecTextError {
    /// The format is neither `yaml` nor `json`.
    Format(String),
    /// The spec itself is wrong (with its place).
    Spec(String),
    /// The empty directory could not be made.
    Io(String),
}

impl SpecTextError {
    /// The message, whatever the kind.
    pub fn message(self) -> String {
        match self {
            SpecTextError::Format(m) | SpecTextError::Spec(m) | SpecTextError::Io(m) => m,
        }
    }
}

/// Parses `text` as `format` (`yaml`, the default, or `json`).
pub(crate) fn parse(text: &str, format: Option<&str>) -> Result<Spec, SpecTextError> {
    let name = match format {
        None | Some("yaml") => "spec.yaml",
        Some("json") => "spec.json",
        Some(other) => {
            return Err(SpecTextError::Format(format!(
                "format `{other}` is neither yaml nor json"
            )))
        }
    };
    let home = tempfile::tempdir().map_err(|e| SpecTextError::Io(e.to_string()))?;
    void_box::spec::parse_with(text, home.path().join(name), HostAccess::default())
        .map_err(|e| SpecTextError::Spec(e.to_string()))
}
