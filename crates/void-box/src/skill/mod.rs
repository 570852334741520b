//! Skills: declared capabilities. A skill exists in a box's guest only when
//! the box declares it.
//!
//! - [`Skill::file`], [`Skill::inline`], [`Skill::remote`]: SKILL.md
//!   documents, written to `/workspace/.claude/skills/<name>/SKILL.md` and
//!   announced to the model.
//! - [`Skill::cli`]: a program the guest image must hold; it joins the
//!   box's command allowlist.
//! - [`Skill::mcp`]: an MCP server started over stdio in the guest; its
//!   tools become agent tools.
//! - [`Skill::agent`]: the reasoning engine (`builtin` or `claude-code`).

pub mod mcp;
pub(crate) mod provision;
mod remote;
mod skill_md;
mod stdio;

use std::path::PathBuf;

pub use mcp::{McpCallResult, McpSession};
pub use provision::{declared_network, declared_secrets, Provisioned, SkillDoc, SKILLS_DIR};
pub use skill_md::SecretSource;
pub use skill_md::{parse_front_matter, parse_skill_md, FrontMatter};

/// What a skill is.
#[derive(Debug, Clone, PartialEq)]
pub enum SkillKind {
    /// A SKILL.md on the host.
    File(PathBuf),
    /// A SKILL.md given as text.
    Inline {
        /// Skill name.
        name: String,
        /// The document.
        content: String,
    },
    /// A SKILL.md fetched over HTTPS and pinned by hash.
    Remote {
        /// Where to fetch it.
        url: String,
        /// Expected SHA-256, hex.
        sha256: Option<String>,
    },
    /// A program that must exist in the guest image.
    Cli(String),
    /// An MCP server run over stdio in the guest.
    Mcp(McpServer),
    /// The reasoning engine.
    Agent(String),
    /// An OCI image mounted read-only at a guest path (a toolchain, a
    /// dataset, a tree of SKILL.md files).
    Image {
        /// The image reference.
        reference: String,
        /// Where its root appears in the guest.
        mount: String,
    },
}

/// How to start an MCP server in the guest.
#[derive(Debug, Clone, PartialEq)]
pub struct McpServer {
    /// Skill name; tools appear as `mcp__<name>__<tool>`.
    pub name: String,
    /// Program to run in the guest.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// A host binary uploaded into the guest and run as the command.
    pub upload: Option<PathBuf>,
}

/// A declared capability of a box.
#[derive(Debug, Clone, PartialEq)]
pub struct Skill {
    /// What it is.
    pub kind: SkillKind,
    /// Overrides the description the model sees.
    pub description: Option<String>,
    /// Network allow rules the skill needs, beside any its document
    /// declares; declaring the skill adds them to its box's policy.
    pub network: Vec<String>,
    /// Secrets the skill needs, by guest variable name, beside any its
    /// document declares; declaring the skill gives its box each one.
    pub secrets: Vec<(String, SecretSource)>,
}

impl Skill {
    fn of(kind: SkillKind) -> Skill {
        Skill {
            kind,
            description: None,
            network: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// A SKILL.md file (YAML front matter `name`, `description`, then the body).
    pub fn file(path: impl Into<PathBuf>) -> Skill {
        Skill::of(SkillKind::File(path.into()))
    }

    /// A skill document given inline; front matter is optional.
    pub fn inline(name: &str, content: &str) -> Skill {
        Skill::of(SkillKind::Inline {
            name: name.into(),
            content: content.into(),
        })
    }

    /// A SKILL.md fetched over HTTPS; pin it with [`sha256`](Self::sha256).
    pub fn remote(url: &str) -> Skill {
        Skill::of(SkillKind::Remote {
            url: url.into(),
            sha256: None,
        })
    }

    /// Pins a remote skill's SHA-256 (hex). A mismatch fails the run.
    pub fn sha256(mut self, hex: &str) -> Skill {
        if let SkillKind::Remote { sha256, .. } = &mut self.kind {
            *sha256 = Some(hex.trim().to_ascii_lowercase());
        }
        self
    }

    /// A program the guest image must provide (checked before the run).
    pub fn cli(program: &str) -> Skill {
        Skill::of(SkillKind::Cli(program.into()))
    }

    /// An MCP server started in the guest as `command`.
    pub fn mcp(name: &str, command: &str) -> Skill {
        Skill::of(SkillKind::Mcp(McpServer {
            name: name.into(),
            command: command.into(),
            args: Vec::new(),
            upload: None,
        }))
    }

    /// Adds an argument to an MCP server's command.
    pub fn arg(mut self, arg: &str) -> Skill {
        if let SkillKind::Mcp(server) = &mut self.kind {
            server.args.push(arg.into());
        }
        self
    }

    /// Uploads this host binary into the guest and runs it as the MCP
    /// server (for servers that are not in the image).
    pub fn upload(mut self, host_binary: impl Into<PathBuf>) -> Skill {
        if let SkillKind::Mcp(server) = &mut self.kind {
            server.upload = Some(host_binary.into());
        }
        self
    }

    /// An OCI image whose root is mounted read-only at `mount` in the guest.
    pub fn image(reference: &str, mount: &str) -> Skill {
        Skill::of(SkillKind::Image {
            reference: reference.into(),
            mount: mount.into(),
        })
    }

    /// The reasoning engine: `builtin` (default) or `claude-code`.
    pub fn agent(engine: &str) -> Skill {
        Skill::of(SkillKind::Agent(engine.into()))
    }

    /// Declares that the skill needs `rule` (`api.github.com:443`): the
    /// box's network allows it, and only because the skill is declared.
    pub fn network(mut self, rule: &str) -> Skill {
        self.network.push(rule.into());
        self
    }

    /// Declares that the skill needs the secret `name`: its box's guest
    /// gets a placeholder, and requests to `hosts` get the host's
    /// `from_env` in its place at the network edge.
    pub fn secret(mut self, name: &str, from_env: &str, hosts: &[&str]) -> Skill {
        self.secrets.push((
            name.into(),
            SecretSource {
                from_env: from_env.into(),
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
            },
        ));
        self
    }

    /// Sets the description the model sees.
    pub fn description(mut self, text: &str) -> Skill {
        self.description = Some(text.into());
        self
    }

    /// A short label for messages: `file:skills/x.md`, `cli:jq`, ...
    pub fn label(&self) -> String {
        match &self.kind {
            SkillKind::File(p) => format!("file:{}", p.display()),
            SkillKind::Inline { name, .. } => format!("inline:{name}"),
            SkillKind::Remote { url, .. } => format!("remote:{url}"),
            SkillKind::Cli(p) => format!("cli:{p}"),
            SkillKind::Mcp(s) => format!("mcp:{}", s.name),
            SkillKind::Agent(e) => format!("agent:{e}"),
            SkillKind::Image { reference, mount } => format!("image:{reference}@{mount}"),
        }
    }
}

/// A skill that could not be provisioned.
#[derive(Debug, thiserror::Error)]
#[error("skill `{skill}`: {message}")]
pub struct SkillError {
    /// The skill's label.
    pub skill: String,
    /// What went wrong.
    pub message: String,
}

impl SkillError {
    pub(crate) fn new(skill: &Skill, message: impl Into<String>) -> Self {
        SkillError {
            skill: skill.label(),
            message: message.into(),
        }
    }
}
