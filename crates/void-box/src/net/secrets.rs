//! Secrets at the edge: what the configuration holds, what the guest gets
//! (a placeholder per sandbox) and what the stack swaps in, and where.

use serde::{Deserialize, Serialize};

use super::edge_tls::EdgeTls;
use super::policy::{self, Rule, RuleError};
use super::swap::Swap;
use super::tls_bridge::TlsBridge;

/// A secret as the sandbox's configuration holds it: the guest's
/// environment gets `name` set to a placeholder, and plain-HTTP requests
/// to `hosts` get the placeholder in their headers replaced by `value`.
/// The value is never serialized and never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretConfig {
    /// The guest environment variable.
    pub name: String,
    /// The real value (host side only).
    #[serde(skip_serializing, default)]
    pub value: String,
    /// Host-name rules (`api.github.com`, `*.example.com:8080`) of the
    /// destinations that get the value; they are allowed too.
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for SecretConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretConfig")
            .field("name", &self.name)
            .field("value", &"(redacted)")
            .field("hosts", &self.hosts)
            .finish()
    }
}

impl SecretConfig {
    /// Checks the name, the value (no line breaks: it goes into headers)
    /// and the hosts (host-name rules only); returns the host rules.
    pub fn check(&self) -> Result<Vec<Rule>, String> {
        let name_ok = !self.name.is_empty()
            && !self.name.starts_with(|c: char| c.is_ascii_digit())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            return Err(format!(
                "secret `{}`: not an environment variable name",
                self.name
            ));
        }
        if self.value.is_empty()
            || self
                .value
                .bytes()
                .any(|b| b == b'\r' || b == b'\n' || b == 0)
        {
            return Err(format!(
                "secret `{}`: its value is empty or holds a line break or NUL",
                self.name
            ));
        }
        if self.hosts.is_empty() {
            return Err(format!("secret `{}`: no hosts to send it to", self.name));
        }
        self.hosts
            .iter()
            .map(|h| {
                let rule: Rule = h.parse().map_err(|e: RuleError| e.to_string())?;
                match rule.target {
                    policy::Target::Host(_) | policy::Target::Domain(_) => Ok(rule),
                    _ => Err(format!(
                        "secret `{}`: `{h}` is not a host name (secrets go to names, not addresses)",
                        self.name
                    )),
                }
            })
            .collect()
    }
}

/// A secret as the stack uses it.
#[derive(Clone)]
pub struct EdgeSecret {
    /// What the guest holds.
    pub placeholder: String,
    /// What the secret's hosts get.
    pub value: String,
    /// Where it goes.
    pub hosts: Vec<Rule>,
}

/// A sandbox's secrets as its stack holds them, with the TLS that lets
/// them be swapped into HTTPS requests (present when there are secrets).
#[derive(Default)]
pub struct EdgeSecrets {
    /// The secrets.
    pub secrets: Vec<EdgeSecret>,
    /// The sandbox's edge CA and upstream TLS settings.
    pub tls: Option<EdgeTls>,
}

impl EdgeSecrets {
    /// The swaps for a connection to `name` at `port`.
    pub(super) fn swaps_for(&self, name: &str, port: u16) -> Vec<Swap> {
        self.secrets
            .iter()
            .filter(|s| s.hosts.iter().any(|r| r.names_at(name, port)))
            .map(|s| Swap {
                placeholder: s.placeholder.as_bytes().to_vec(),
                value: s.value.as_bytes().to_vec(),
            })
            .collect()
    }

    /// A TLS bridge for a connection to `name` with `swaps`.
    pub(super) fn bridge(&mut self, name: &str, swaps: Vec<Swap>) -> Result<TlsBridge, String> {
        let tls = self
            .tls
            .as_mut()
            .ok_or_else(|| "the sandbox has no edge TLS".to_string())?;
        let guest = tls.guest_side(name).map_err(|e| e.to_string())?;
        TlsBridge::new(guest, tls.upstream(), name, swaps)
    }
}
