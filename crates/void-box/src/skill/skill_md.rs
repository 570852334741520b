//! SKILL.md documents: YAML front matter (`name`, `description`, others
//! kept as they are) between `---` lines, then a Markdown body.

use serde::Deserialize;

/// What a SKILL.md's front matter says (other keys are kept in the
/// document as they are).
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct FrontMatter {
    /// The skill's name.
    pub name: Option<String>,
    /// What it is for.
    pub description: Option<String>,
    /// Network allow rules the skill needs (`api.github.com:443`);
    /// declaring the skill adds them to its box's policy.
    #[serde(default)]
    pub network: Vec<String>,
    /// Secrets the skill needs, swapped at the network edge
    /// (`GITHUB_TOKEN: {from_env: GITHUB_TOKEN, hosts: [api.github.com]}`);
    /// declaring the skill gives its box each one.
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, SecretSource>,
}

/// Where a declared secret's value comes from and where it may go (a
/// SKILL.md's, a spec skill entry's, a spec sandbox's `secrets`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// The host environment variable holding the value.
    pub from_env: String,
    /// Host-name rules of the destinations that get it.
    pub hosts: Vec<String>,
}

impl SecretSource {
    /// The secret `name`, its value read with `env`; an unset or empty
    /// variable is an error naming it. With `granted` (what a spec from
    /// elsewhere was given: `voidbox run --pass-env`), a variable it does
    /// not name is refused: the secret would send the host's credential
    /// to hosts of the declarer's choosing.
    pub fn read(
        &self,
        name: &str,
        env: &dyn Fn(&str) -> Option<String>,
        granted: Option<&std::collections::BTreeSet<String>>,
    ) -> Result<crate::net::SecretConfig, String> {
        if granted.is_some_and(|g| !g.contains(&self.from_env)) {
            return Err(format!(
                "secret `{name}` would send the host's `{var}` to {hosts}, which was not \
                 granted: `voidbox run --pass-env {var}` grants it (Rust: VoidBox::secret_env)",
                var = self.from_env,
                hosts = self.hosts.join(", ")
            ));
        }
        let value = env(&self.from_env)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                format!(
                    "secret `{name}`: the host's `{}` is unset or empty",
                    self.from_env
                )
            })?;
        Ok(crate::net::SecretConfig {
            name: name.into(),
            value,
            hosts: self.hosts.clone(),
        })
    }
}

/// `(name, description)` from a SKILL.md's front matter, when present.
pub fn parse_skill_md(text: &str) -> Result<(Option<String>, Option<String>), String> {
    parse_front_matter(text).map(|f| (f.name, f.description))
}

/// A SKILL.md's front matter; empty when it has none.
pub fn parse_front_matter(text: &str) -> Result<FrontMatter, String> {
    let Some(rest) = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
    else {
        return Ok(FrontMatter::default());
    };
    let end = rest
        .find("\n---")
        .ok_or("front matter opened with `---` is never closed")?;
    let yaml = &rest[..end];
    serde_saphyr::from_str(yaml).map_err(|e| format!("front matter: {e}"))
}

/// A usable skill name: `[a-z0-9-_]`, as a directory name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_front_matter() {
        let doc = "---\nname: hn-api\ndescription: HN API via curl\nlicense: MIT\n---\n# Body\n";
        assert_eq!(
            parse_skill_md(doc).unwrap(),
            (Some("hn-api".into()), Some("HN API via curl".into()))
        );
        assert_eq!(parse_skill_md("# just a body").unwrap(), (None, None));
        assert!(parse_skill_md("---\nname: x\n")
            .unwrap_err()
            .contains("never closed"));
        assert!(parse_skill_md("---\nname: [x\n---\n").is_err());
    }

    #[test]
    fn front_matter_declares_secrets() {
        let doc = "---\nname: gh\ndescription: GitHub\nsecrets:\n  GITHUB_TOKEN: {from_env: GH_PAT, hosts: [api.github.com]}\n---\n";
        let front = parse_front_matter(doc).unwrap();
        assert_eq!(
            front.secrets["GITHUB_TOKEN"],
            SecretSource {
                from_env: "GH_PAT".into(),
                hosts: vec!["api.github.com".into()]
            }
        );
        assert!(parse_front_matter("---\nsecrets: {T: {env: X}}\n---\n").is_err());
    }

    #[test]
    fn front_matter_declares_network_rules() {
        let doc = "---\nname: gh\ndescription: GitHub\nnetwork: [api.github.com, \"*.githubusercontent.com:443\"]\n---\n";
        let front = parse_front_matter(doc).unwrap();
        assert_eq!(
            front.network,
            ["api.github.com", "*.githubusercontent.com:443"]
        );
        assert!(parse_front_matter("# none").unwrap().network.is_empty());
    }

    #[test]
    fn names_are_directory_safe() {
        assert!(valid_name("hn-api_2"));
        assert!(!valid_name("../etc"));
        assert!(!valid_name(""));
    }
}
