//! Which tool calls a box may make: `allow`, `deny` and `ask` rules (deny
//! wins), a hook that answers `ask` (human in the loop), and explicit
//! defaults for unattended runs.

use std::sync::Arc;

use futures::future::BoxFuture;
use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::tools::primary_argument;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The call runs.
    Allow,
    /// The call is refused and the model is told.
    Deny,
}

/// A tool call waiting for a decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolRequest {
    /// The box asking.
    pub box_name: String,
    /// Tool name.
    pub tool: String,
    /// Arguments.
    pub arguments: Value,
}

/// Answers `ask` rules, e.g. by prompting a person.
pub type AskHook = Arc<dyn Fn(ToolRequest) -> BoxFuture<'static, Decision> + Send + Sync>;

/// One rule: `tool` or `tool(argument-glob)`; the tool part may be a glob
/// (`mcp__*`). The argument is the command for `bash`, the path for file
/// tools, the pattern for `grep`/`glob`.
#[derive(Debug, Clone)]
pub struct Rule {
    text: String,
    tool: GlobMatcher,
    argument: Option<GlobMatcher>,
}

impl Rule {
    /// Parses a rule.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let (tool, argument) = match text.split_once('(') {
            Some((tool, rest)) => {
                let arg = rest
                    .strip_suffix(')')
                    .ok_or_else(|| format!("permission rule `{text}`: missing `)`"))?;
                (tool, Some(arg))
            }
            None => (text, None),
        };
        let glob = |g: &str| {
            Glob::new(g)
                .map(|g| g.compile_matcher())
                .map_err(|e| format!("permission rule `{text}`: {e}"))
        };
        if tool.trim().is_empty() {
            return Err(format!("permission rule `{text}`: no tool name"));
        }
        Ok(Rule {
            text: text.to_string(),
            tool: glob(tool.trim())?,
            argument: argument.map(glob).transpose()?,
        })
    }

    fn matches(&self, tool: &str, args: &Value) -> bool {
        self.tool.is_match(tool)
            && match &self.argument {
                None => true,
                Some(arg) => primary_argument(tool, args).is_some_and(|a| arg.is_match(a)),
            }
    }
}

/// What the policy says about a call before any hook is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Run it.
    Allow,
    /// Refuse it; the text says which rule.
    Deny(String),
    /// Ask the hook (or apply the unattended default).
    Ask(String),
}

/// A box's permission policy.
#[derive(Debug, Clone)]
pub struct PermissionPolicy {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
    ask: Vec<Rule>,
    /// What an unmatched call gets.
    pub default: Decision,
    /// What an `ask` call gets when no hook answers (unattended runs).
    pub unattended: Decision,
}

impl Default for PermissionPolicy {
    /// Everything allowed: the VM is the isolation boundary.
    fn default() -> Self {
        PermissionPolicy {
            allow: Vec::new(),
            deny: Vec::new(),
            ask: Vec::new(),
            default: Decision::Allow,
            unattended: Decision::Deny,
        }
    }
}

impl PermissionPolicy {
    /// Adds an `allow` rule.
    pub fn allow(mut self, rule: &str) -> Result<Self, String> {
        self.allow.push(Rule::parse(rule)?);
        Ok(self)
    }

    /// Adds a `deny` rule.
    pub fn deny(mut self, rule: &str) -> Result<Self, String> {
        self.deny.push(Rule::parse(rule)?);
        Ok(self)
    }

    /// Adds an `ask` rule.
    pub fn ask(mut self, rule: &str) -> Result<Self, String> {
        self.ask.push(Rule::parse(rule)?);
        Ok(self)
    }

    /// The `allow` rules as written.
    pub fn allow_rules(&self) -> impl Iterator<Item = &str> {
        self.allow.iter().map(|r| r.text.as_str())
    }

    /// The `deny` rules as written.
    pub fn deny_rules(&self) -> impl Iterator<Item = &str> {
        self.deny.iter().map(|r| r.text.as_str())
    }

    /// Deny wins, then ask, then allow, then the default.
    pub fn check(&self, tool: &str, args: &Value) -> Verdict {
        let first = |rules: &[Rule]| {
            rules
                .iter()
                .find(|r| r.matches(tool, args))
                .map(|r| r.text.clone())
        };
        if let Some(rule) = first(&self.deny) {
            return Verdict::Deny(format!("matches deny rule `{rule}`"));
        }
        if let Some(rule) = first(&self.ask) {
            return Verdict::Ask(rule);
        }
        if first(&self.allow).is_some() {
            return Verdict::Allow;
        }
        match self.default {
            Decision::Allow => Verdict::Allow,
            Decision::Deny => Verdict::Deny("is not on the allow list".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deny_wins_over_allow_and_ask() {
        let p = PermissionPolicy::default()
            .allow("bash")
            .unwrap()
            .ask("bash(git *)")
            .unwrap()
            .deny("bash(rm *)")
            .unwrap();
        let bash = |c: &str| json!({ "command": c });
        assert_eq!(p.check("bash", &bash("ls")), Verdict::Allow);
        assert!(
            matches!(p.check("bash", &bash("rm -rf /")), Verdict::Deny(r) if r.contains("rm *"))
        );
        assert_eq!(
            p.check("bash", &bash("git push")),
            Verdict::Ask("bash(git *)".into())
        );
    }

    #[test]
    fn default_deny_and_tool_globs() {
        let mut p = PermissionPolicy::default().allow("mcp__calc__*").unwrap();
        p.default = Decision::Deny;
        assert_eq!(p.check("mcp__calc__add", &json!({})), Verdict::Allow);
        assert!(matches!(
            p.check("write", &json!({"path": "x"})),
            Verdict::Deny(_)
        ));
        let p = PermissionPolicy::default().deny("write(/etc/*)").unwrap();
        assert!(matches!(
            p.check("write", &json!({"path": "/etc/passwd"})),
            Verdict::Deny(_)
        ));
        assert_eq!(
            p.check("write", &json!({"path": "/workspace/a"})),
            Verdict::Allow
        );
    }

    #[test]
    fn bad_rules_are_errors() {
        assert!(Rule::parse("bash(ls").unwrap_err().contains("missing `)`"));
        assert!(Rule::parse("(x)").is_err());
    }
}
