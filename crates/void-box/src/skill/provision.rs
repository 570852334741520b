//! Putting a box's declared skills into its guest, and nothing else.

use std::time::Duration;

use super::skill_md::{parse_front_matter, valid_name, SecretSource};
use super::{remote, McpSession, Skill, SkillError, SkillKind};
use crate::net::{Rule, SecretConfig};
use crate::{Exec, Sandbox};

/// Where SKILL.md documents live in the guest (Claude Code's project
/// skills directory, so both engines find them).
pub const SKILLS_DIR: &str = "/workspace/.claude/skills";
/// Where uploaded MCP server binaries go.
const MCP_BIN_DIR: &str = "/workspace/.voidbox/bin";

/// A skill document, resolved on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct SkillDoc {
    /// Directory name in the guest.
    pub name: String,
    /// What the model is told it is for.
    pub description: String,
    /// The whole SKILL.md.
    pub content: String,
    /// The network allow rules it declares (front matter `network`, and
    /// the skill's own [`Skill::network`]).
    pub network: Vec<Rule>,
    /// The secrets its front matter declares.
    pub secrets: Vec<(String, SecretSource)>,
}

impl SkillDoc {
    /// Its path in the guest.
    pub fn guest_path(&self) -> String {
        format!("{SKILLS_DIR}/{}/SKILL.md", self.name)
    }
}

/// Reads, fetches and checks every document skill. Runs before any VM
/// boots, so a bad skill fails the run early.
pub async fn resolve_docs(skills: &[Skill]) -> Result<Vec<SkillDoc>, SkillError> {
    let mut docs: Vec<SkillDoc> = Vec::new();
    for skill in skills {
        let (content, fallback_name) = match &skill.kind {
            SkillKind::File(path) => {
                let content = std::fs::read_to_string(path)
                    .map_err(|e| SkillError::new(skill, format!("cannot read: {e}")))?;
                // `skills/foo/SKILL.md` is named `foo`; `skills/foo.md` too.
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                let name = if stem.eq_ignore_ascii_case("skill") {
                    path.parent()
                        .and_then(|p| p.file_name())
                        .and_then(|s| s.to_str())
                        .unwrap_or(stem)
                } else {
                    stem
                };
                (content, name.to_string())
            }
            SkillKind::Inline { name, content } => (content.clone(), name.clone()),
            SkillKind::Remote { url, sha256 } => {
                let sha = sha256.as_deref().ok_or_else(|| {
                    SkillError::new(skill, "a remote skill must pin its hash with .sha256(..)")
                })?;
                let content = remote::fetch(url, sha)
                    .await
                    .map_err(|e| SkillError::new(skill, e))?;
                let name = url
                    .rsplit('/')
                    .find(|s| !s.is_empty())
                    .and_then(|s| s.split('.').next())
                    .unwrap_or("remote")
                    .to_string();
                (content, name)
            }
            _ => continue,
        };
        let front = parse_front_matter(&content).map_err(|e| SkillError::new(skill, e))?;
        let network = declared_rules(skill, &front.network)?;
        let secrets: Vec<(String, SecretSource)> = front.secrets.into_iter().collect();
        let (front_name, front_description) = (front.name, front.description);
        let name = match &skill.kind {
            SkillKind::Inline { name, .. } => name.clone(),
            _ => front_name.unwrap_or(fallback_name),
        };
        if !valid_name(&name) {
            return Err(SkillError::new(
                skill,
                format!("name `{name}` must be 1-64 characters of [A-Za-z0-9_-]"),
            ));
        }
        let description = skill
            .description
            .clone()
            .or(front_description)
            .ok_or_else(|| {
                SkillError::new(
                    skill,
                    "no description: add `description:` to the front matter or call .description(..)",
                )
            })?;
        if docs.iter().any(|d| d.name == name) {
            return Err(SkillError::new(
                skill,
                format!("another skill is already named `{name}`"),
            ));
        }
        docs.push(SkillDoc {
            name,
            description,
            content,
            network,
            secrets,
        });
    }
    Ok(docs)
}

/// The allow rules a skill declares: `front` (its document's) and its own.
fn declared_rules(skill: &Skill, front: &[String]) -> Result<Vec<Rule>, SkillError> {
    front
        .iter()
        .chain(&skill.network)
        .map(|r| {
            r.parse::<Rule>()
                .map_err(|e| SkillError::new(skill, e.to_string()))
        })
        .collect()
}

/// Every network rule `skills` declare (documents already resolved into
/// `docs`): what declaring them adds to the box's policy.
pub fn declared_network(skills: &[Skill], docs: &[SkillDoc]) -> Result<Vec<Rule>, SkillError> {
    let mut rules: Vec<Rule> = docs
        .iter()
        .flat_map(|d| d.network.iter().cloned())
        .collect();
    for skill in skills {
        let has_doc = matches!(
            skill.kind,
            SkillKind::File(_) | SkillKind::Inline { .. } | SkillKind::Remote { .. }
        );
        if !has_doc {
            rules.extend(declared_rules(skill, &[])?);
        }
    }
    Ok(rules)
}

/// Every secret `skills` declare (documents already resolved into `docs`),
/// its value read with `env` from the host's environment, and only from
/// the `granted` variables when there is such a list: what declaring them
/// adds to the box. A name declared twice must say the same thing.
pub fn declared_secrets(
    skills: &[Skill],
    docs: &[SkillDoc],
    env: &dyn Fn(&str) -> Option<String>,
    granted: Option<&std::collections::BTreeSet<String>>,
) -> Result<Vec<SecretConfig>, SkillError> {
    let declared = docs
        .iter()
        .flat_map(|d| d.secrets.iter().map(move |s| (d.name.clone(), s)))
        .chain(
            skills
                .iter()
                .flat_map(|k| k.secrets.iter().map(move |s| (k.label(), s))),
        );
    let mut secrets: Vec<(SecretConfig, &SecretSource)> = Vec::new();
    for (skill, (name, source)) in declared {
        let fail = |message: String| SkillError {
            skill: skill.clone(),
            message,
        };
        if let Some((_, seen)) = secrets.iter().find(|(s, _)| &s.name == name) {
            if *seen != source {
                return Err(fail(format!(
                    "secret `{name}` is declared differently by another skill"
                )));
            }
            continue;
        }
        let config = source.read(name, env, granted).map_err(fail)?;
        config.check().map_err(fail)?;
        secrets.push((config, source));
    }
    Ok(secrets.into_iter().map(|(s, _)| s).collect())
}

/// What a box's guest holds after provisioning.
#[derive(Debug, Default)]
pub struct Provisioned {
    /// Skill documents written to the guest.
    pub docs: Vec<SkillDoc>,
    /// CLI skills found in the guest.
    pub clis: Vec<String>,
    /// Running MCP servers.
    pub mcp: Vec<McpSession>,
    /// Images mounted for the box: `(reference, guest path)`.
    pub images: Vec<(String, String)>,
}

impl Provisioned {
    /// Stops the MCP servers.
    pub async fn close(self) {
        for session in self.mcp {
            session.close().await;
        }
    }

    /// The part of the system prompt that announces the skills.
    pub fn announcement(&self) -> String {
        let mut text = String::new();
        if !self.docs.is_empty() {
            text.push_str(
                "Skills (read a skill's SKILL.md with the `read` tool before using it):\n",
            );
            for doc in &self.docs {
                text.push_str(&format!(
                    "- {}: {} ({})\n",
                    doc.name,
                    doc.description,
                    doc.guest_path()
                ));
            }
        }
        if !self.images.is_empty() {
            text.push_str("Read-only images mounted in the sandbox:\n");
            for (reference, mount) in &self.images {
                text.push_str(&format!("- {mount}: {reference}\n"));
            }
        }
        if !self.clis.is_empty() {
            text.push_str(&format!(
                "Command-line tools available to `bash`: {}\n",
                self.clis.join(", ")
            ));
        }
        text
    }
}

/// Writes the documents, checks CLI skills and starts MCP servers in the
/// guest. On error, servers already started are stopped.
pub async fn provision(
    sandbox: &Sandbox,
    skills: &[Skill],
    docs: Vec<SkillDoc>,
    deadline: Duration,
) -> Result<Provisioned, SkillError> {
    let mut done = Provisioned::default();
    let result = provision_into(&mut done, sandbox, skills, docs, deadline).await;
    match result {
        Ok(()) => Ok(done),
        Err(e) => {
            done.close().await;
            Err(e)
        }
    }
}

async fn provision_into(
    done: &mut Provisioned,
    sandbox: &Sandbox,
    skills: &[Skill],
    docs: Vec<SkillDoc>,
    deadline: Duration,
) -> Result<(), SkillError> {
    let guest_err = |skill: &Skill, e: crate::Error| SkillError::new(skill, e.to_string());
    for doc in docs {
        let path = doc.guest_path();
        let dir = &path[..path.len() - "/SKILL.md".len()];
        let label = Skill::inline(&doc.name, "");
        sandbox.mkdir(dir).await.map_err(|e| guest_err(&label, e))?;
        sandbox
            .write_file(&path, doc.content.as_bytes())
            .await
            .map_err(|e| guest_err(&label, e))?;
        done.docs.push(doc);
    }
    for skill in skills {
        match &skill.kind {
            SkillKind::Cli(program) => {
                let found = sandbox
                    .exec(Exec::new("sh").args(["-c", "command -v \"$1\"", "sh", program]))
                    .await
                    .map_err(|e| guest_err(skill, e))?;
                if !found.status.success() {
                    return Err(SkillError::new(
                        skill,
                        format!("`{program}` is not in the guest image; add it to the image or remove the skill"),
                    ));
                }
                done.clis.push(program.clone());
            }
            SkillKind::Mcp(server) => {
                let command = match &server.upload {
                    None => server.command.clone(),
                    Some(host) => {
                        let binary = std::fs::read(host).map_err(|e| {
                            SkillError::new(skill, format!("cannot read {}: {e}", host.display()))
                        })?;
                        let path = format!("{MCP_BIN_DIR}/{}", server.command);
                        sandbox
                            .mkdir(MCP_BIN_DIR)
                            .await
                            .map_err(|e| guest_err(skill, e))?;
                        sandbox
                            .write_file_mode(&path, &binary, 0o755)
                            .await
                            .map_err(|e| guest_err(skill, e))?;
                        path
                    }
                };
                let session =
                    McpSession::start(sandbox, &server.name, &command, &server.args, deadline)
                        .await
                        .map_err(|e| guest_err(skill, e))?;
                done.mcp.push(session);
            }
            SkillKind::Image { reference, mount } => {
                // Mounted at boot from the box's sandbox configuration (a
                // mount that fails fails the boot); here it is announced.
                done.images.push((reference.clone(), mount.clone()));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn declared_secrets_come_from_the_host_and_only_from_declared_skills() {
        let doc = Skill::inline(
            "gh",
            "---\ndescription: GitHub\nsecrets:\n  GITHUB_TOKEN: {from_env: GH_PAT, hosts: [api.github.com]}\n---\n",
        );
        let own = Skill::cli("jq").secret("JQ_KEY", "JQ_HOST_KEY", &["jq.example"]);
        let skills = vec![doc, own];
        let docs = resolve_docs(&skills).await.unwrap();
        let env = |k: &str| match k {
            "GH_PAT" => Some("ghp_x".to_string()),
            "JQ_HOST_KEY" => Some("jq_y".to_string()),
            _ => None,
        };
        let secrets = declared_secrets(&skills, &docs, &env, None).unwrap();
        let got: Vec<(&str, &str)> = secrets
            .iter()
            .map(|s| (s.name.as_str(), s.value.as_str()))
            .collect();
        assert_eq!(got, [("GITHUB_TOKEN", "ghp_x"), ("JQ_KEY", "jq_y")]);
        assert!(declared_secrets(&[], &[], &env, None).unwrap().is_empty());
        let err = declared_secrets(&skills, &docs, &|_| None, None).unwrap_err();
        assert!(err.message.contains("`GH_PAT` is unset"), "{err:?}");
        let bad = vec![Skill::cli("x").secret("T", "V", &["10.0.0.1"])];
        let err = declared_secrets(&bad, &[], &|_| Some("v".into()), None).unwrap_err();
        assert!(err.message.contains("not a host name"), "{err:?}");
        // With a grant list, only the variables it names are read.
        let only_jq = ["JQ_HOST_KEY".to_string()].into();
        let err = declared_secrets(&skills, &docs, &env, Some(&only_jq)).unwrap_err();
        assert!(
            err.message.contains("`GH_PAT` to api.github.com")
                && err.message.contains("--pass-env GH_PAT"),
            "{err:?}"
        );
        let both = ["JQ_HOST_KEY".to_string(), "GH_PAT".to_string()].into();
        assert_eq!(
            declared_secrets(&skills, &docs, &env, Some(&both))
                .unwrap()
                .len(),
            2
        );
    }
}
