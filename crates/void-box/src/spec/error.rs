//! Spec errors: where (file, line, column), what, and a hint.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::MessageFormatter;

/// An invalid spec: the place, what is wrong, and how to fix it.
///
/// Displays as `spec.yaml:12:5: unknown field `memroy_mb` (hint: did you
/// mean `memory_mb`?)`. `line` and `column` are 1-based; 0 means unknown
/// (I/O errors, or a check with no single place).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
pub struct SpecError {
    /// The spec file, as it was named.
    pub file: PathBuf,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when we can tell.
    pub hint: Option<String>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl SpecError {
    pub(crate) fn new(file: &Path, (line, column): (usize, usize), message: String) -> Self {
        SpecError {
            file: file.to_path_buf(),
            line,
            column,
            message,
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// A YAML parse or type error.
    pub(crate) fn from_yaml(file: &Path, err: &serde_saphyr::Error) -> Self {
        let message = serde_saphyr::DefaultMessageFormatter
            .format_message(err)
            .into_owned();
        let at = err
            .location()
            .map_or((0, 0), |l| (l.line() as usize, l.column() as usize));
        Self::from_message(file, at, message)
    }

    /// A JSON parse or type error. serde_json points just past the
    /// offending token; for an unknown name we move to its opening quote.
    pub(crate) fn from_json(file: &Path, text: &str, err: &serde_json::Error) -> Self {
        let full = err.to_string();
        let message = match full.rfind(" at line ") {
            Some(i) => full[..i].to_string(),
            None => full,
        };
        let (line, mut column) = (err.line(), err.column());
        if let Some(name) = backticked(&message) {
            let quoted = format!("\"{name}\"");
            if let Some(row) = text.lines().nth(line.saturating_sub(1)) {
                let end = row.char_indices().nth(column).map_or(row.len(), |(i, _)| i);
                if let Some(start) = row[..end].rfind(&quoted) {
                    column = row[..start].chars().count() + 1;
                }
            }
        }
        Self::from_message(file, (line, column), message)
    }

    /// Rewords serde's messages and adds a hint.
    fn from_message(file: &Path, at: (usize, usize), message: String) -> Self {
        let err = SpecError::new(file, at, message.clone());
        for (prefix, what) in [("unknown field", "field"), ("unknown variant", "value")] {
            if message.starts_with(prefix) {
                let Some(name) = backticked(&message) else {
                    return err;
                };
                let expected = expected_list(&message);
                let err = SpecError::new(file, at, format!("{prefix} `{name}`"));
                return match suggest(&name, &expected) {
                    Some(best) => err.hint(format!("did you mean `{best}`?")),
                    None if expected.is_empty() => err.hint(format!("this place takes no {what}s")),
                    None => err.hint(format!("expected one of {}", expected.join(", "))),
                };
            }
        }
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            let field = field.to_string();
            return err.hint(format!("add `{field}` here"));
        }
        if let Some(hint) = type_hint(&message) {
            return err.hint(hint);
        }
        err
    }
}

/// The first `quoted` name in a serde message.
fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// The names after "expected" in serde's unknown-field/variant messages,
/// in either style: "expected one of a, b" (serde-saphyr) or "expected one
/// of `a`, `b`" / "expected `a` or `b`" (serde_json).
fn expected_list(message: &str) -> Vec<String> {
    let Some(i) = message.find("expected ") else {
        return Vec::new();
    };
    let rest = &message[i + "expected ".len()..];
    let rest = rest.strip_prefix("one of ").unwrap_or(rest);
    rest.split(", ")
        .flat_map(|part| part.split(" or "))
        .map(|s| s.trim().trim_matches('`').to_string())
        .filter(|s| !s.is_empty() && !s.contains(' '))
        .collect()
}

/// Hints for wrong types, in the spec's words rather than Rust's.
fn type_hint(message: &str) -> Option<String> {
    let m = message;
    let hint = if m.starts_with("invalid u") || m.contains("expected u") {
        "expected a whole number of 0 or more"
    } else if m.starts_with("invalid i") && m.len() < 12 {
        "expected a whole number"
    } else if m.contains("expected string scalar") || m.contains("expected a string") {
        "expected text; quote it if it looks like something else"
    } else if m.contains("expected sequence") || m.contains("expected a sequence") {
        "expected a list, like `[a, b]` or one `- item` per line"
    } else if m.contains("expected mapping")
        || m.contains("expected struct")
        || m.contains("expected a map")
    {
        "expected a mapping of `key: value` lines"
    } else if m.contains("bool") {
        "expected true or false"
    } else if let Some(i) = m.find(", expected ") {
        return Some(format!("expected {}", &m[i + ", expected ".len()..]));
    } else {
        return None;
    };
    Some(hint.to_string())
}

/// The closest expected name, when it is close enough to be a typo.
pub(crate) fn suggest(name: &str, expected: &[String]) -> Option<String> {
    let limit = (name.chars().count() / 3).max(1);
    expected
        .iter()
        .map(|e| (edit_distance(name, e), e))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e.clone())
}

/// Levenshtein distance, with a transposition counted as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_and_suggestions() {
        assert_eq!(edit_distance("memroy_mb", "memory_mb"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        let names: Vec<String> = ["memory_mb", "vcpus", "network"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(suggest("memroy_mb", &names).as_deref(), Some("memory_mb"));
        assert_eq!(suggest("vcpu", &names).as_deref(), Some("vcpus"));
        assert_eq!(suggest("gpu", &names), None);
    }

    #[test]
    fn expected_lists_in_both_styles() {
        assert_eq!(
            expected_list("unknown variant `x`, expected one of agent, pipeline"),
            ["agent", "pipeline"]
        );
        assert_eq!(
            expected_list("unknown variant `x`, expected `agent` or `pipeline`"),
            ["agent", "pipeline"]
        );
        assert_eq!(
            expected_list("unknown field `x`, expected one of `a`, `b`, `c`"),
            ["a", "b", "c"]
        );
    }
}
