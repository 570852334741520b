//! What a spec may take from the host beyond what it writes itself. Specs
//! from elsewhere are hostile (a contributed spec in CI, a shared example),
//! so by default a spec cannot copy the host's credentials into the guest,
//! where every command can read them, nor read files outside its own
//! directory into the prompt.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{Spec, SpecError};

/// Host access granted to one spec (`voidbox run --pass-env NAME`,
/// `--allow-host-files`, `--allow RULE`, `--image REF`, `--snapshot NAME`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostAccess {
    /// Host variables the spec may use: `env: {NAME: ""}` may copy them
    /// although their names look like credentials, and secrets (the
    /// spec's and its skills') may send them to the hosts they name; no
    /// secret reads a variable not listed here.
    pub pass_env: BTreeSet<String>,
    /// `file:` skills may name files outside the spec's directory.
    pub files_outside: bool,
    /// Network allow rules added to every sandbox of the spec (a service
    /// on the host: `host.voidbox.internal:8080`); a sandbox without a
    /// network gets one that reaches only these.
    pub allow: Vec<String>,
    /// The image every sandbox runs on instead of the spec's: the spec
    /// says which tools it needs, the host where they come from (a local
    /// registry, a mirror).
    pub image: Option<String>,
    /// The snapshot every sandbox starts from instead of the spec's
    /// (`voidbox run --snapshot NAME`).
    pub snapshot: Option<String>,
}

/// Whether `name` looks like a credential: the provider key variables,
/// `*_API_KEY`, `*_TOKEN`, `*_SECRET`, `*_PASSWORD`, `*_KEY`, `AWS_*` and
/// the like.
pub fn looks_like_credential(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    const SUFFIXES: [&str; 8] = [
        "_API_KEY",
        "_KEY",
        "_TOKEN",
        "_SECRET",
        "_PASSWORD",
        "_PASSWD",
        "_CREDENTIALS",
        "_PAT",
    ];
    const PREFIXES: [&str; 4] = ["AWS_", "AZURE_", "GOOGLE_APPLICATION_", "VOIDBOX_REGISTRY_"];
    const NAMES: [&str; 6] = ["TOKEN", "SECRET", "PASSWORD", "API_KEY", "APIKEY", "NETRC"];
    SUFFIXES.iter().any(|s| upper.ends_with(s))
        || PREFIXES.iter().any(|p| upper.starts_with(p))
        || NAMES.contains(&upper.as_str())
}

/// Refuses `env` entries that copy a credential-like host variable, unless
/// `--pass-env` names it.
pub(super) fn check_env(spec: &Spec, env: &BTreeMap<String, String>) -> Result<(), SpecError> {
    let key_vars = spec.key_vars();
    for (name, value) in env {
        if !value.is_empty() || spec.access.pass_env.contains(name) {
            continue;
        }
        if key_vars.contains(&name.as_str()) || looks_like_credential(name) {
            return Err(spec
                .error(
                    spec.find(&format!("{name}:")),
                    format!(
                        "`env: {{{name}: \"\"}}` would copy the host's {name} into the guest, \
                         where every command (and the model) can read it"
                    ),
                )
                .hint(format!(
                    "model calls are made by the host, so the guest needs no provider key; if \
                     the guest really needs this one, pass `--pass-env {name}` (Rust: \
                     HostAccess::pass_env)"
                )));
        }
    }
    Ok(())
}

/// Why `file` may not be read, when it lies outside the spec's directory
/// (after symlinks) and no `--allow-host-files` was given.
pub(super) fn outside_dir(spec: &Spec, file: &Path) -> Option<String> {
    if spec.access.files_outside {
        return None;
    }
    let dir = std::fs::canonicalize(&spec.dir).ok()?;
    match std::fs::canonicalize(file) {
        Ok(real) if real.starts_with(&dir) => None,
        Ok(real) => Some(format!(
            "skill file `{}` is outside the spec's directory {}",
            real.display(),
            dir.display()
        )),
        Err(e) => Some(format!("skill file `{}`: {e}", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse, parse_with};

    const AGENT: &str = "\
kind: agent
name: a
llm:
  mock: {turns: [{text: hi}]}
agent:
  prompt: go
";

    fn with_sandbox_env(env: &str) -> String {
        format!("{AGENT}sandbox:\n  env:\n    {env}\n")
    }

    #[test]
    fn copying_a_host_credential_into_the_guest_is_refused_with_a_way_out() {
        for name in [
            "ANTHROPIC_API_KEY",
            "GITHUB_TOKEN",
            "AWS_SESSION_TOKEN",
            "DB_PASSWORD",
        ] {
            let text = with_sandbox_env(&format!("{name}: \"\""));
            let e = parse(&text, "spec.yaml").expect_err(name);
            assert!(e.message.contains(name), "{e}");
            assert_eq!(e.line, 9, "{e}");
            assert!(
                e.hint
                    .as_deref()
                    .unwrap()
                    .contains(&format!("--pass-env {name}")),
                "{e}"
            );
            let allowed = HostAccess {
                pass_env: [name.to_string()].into(),
                ..HostAccess::default()
            };
            parse_with(&text, "spec.yaml", allowed).expect("passed on purpose");
        }
    }

    #[test]
    fn ordinary_copies_and_literal_values_stay_allowed() {
        parse(&with_sandbox_env("LANG: \"\""), "spec.yaml").unwrap();
        // A value the spec writes itself is not the host's.
        parse(&with_sandbox_env("SERVICE_TOKEN: placeholder"), "spec.yaml").unwrap();
    }

    #[test]
    fn a_box_and_a_custom_key_variable_are_covered_too() {
        let text = "\
kind: pipeline
name: p
llm:
  provider: anthropic
  api_key_env: MY_LLM
pipeline:
  boxes:
    - name: a
      prompt: one
      sandbox:
        env: {MY_LLM: \"\"}
";
        let e = parse(text, "spec.yaml").unwrap_err();
        assert!(e.message.contains("MY_LLM"), "{e}");
    }

    #[test]
    fn file_skills_stay_in_the_specs_directory_unless_allowed() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("id_rsa");
        std::fs::write(&secret, "PRIVATE").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ok.md"), "# fine").unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("sneaky.md")).unwrap();
        let spec_path = dir.path().join("spec.yaml");
        let text = |skill: &str| format!("{AGENT}  skills: [\"file:{skill}\"]\n");

        parse(&text("ok.md"), &spec_path).expect("a file beside the spec");
        for skill in [
            secret.to_str().unwrap(),
            "sneaky.md",
            "../x/../../etc/hostname",
        ] {
            let e = parse(&text(skill), &spec_path).expect_err(skill);
            assert!(
                e.message.contains("outside the spec's directory")
                    || e.message.contains("not found"),
                "{skill}: {e}"
            );
        }
        let e = parse(&text("sneaky.md"), &spec_path).unwrap_err();
        assert!(e.hint.unwrap().contains("--allow-host-files"));
        let allowed = HostAccess {
            files_outside: true,
            ..HostAccess::default()
        };
        parse_with(&text("sneaky.md"), &spec_path, allowed).expect("allowed on purpose");
    }

    #[test]
    fn credential_names() {
        for yes in [
            "OPENAI_API_KEY",
            "GH_TOKEN",
            "AWS_ACCESS_KEY_ID",
            "SSH_KEY",
            "token",
        ] {
            assert!(looks_like_credential(yes), "{yes}");
        }
        for no in ["PATH", "LANG", "HOME", "TOKENIZERS_PARALLELISM", "KEYBOARD"] {
            assert!(!looks_like_credential(no), "{no}");
        }
    }
}
