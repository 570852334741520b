//! The egress policy: which destinations a sandbox's connections may
//! reach. Plain data, parsed once from rule strings and consulted by the
//! host-side stack for every DNS answer and every new connection.
//!
//! A rule is `HOST[:PORT]`, `*.DOMAIN[:PORT]`, `CIDR[:PORT]` (an address
//! alone is a /32 or /128), or `public[:PORT]` (every address that is not
//! in a [special range](is_special)). Deny rules win over allow rules.
//! Special addresses (the host's loopback, private networks, link-local,
//! CGNAT, ...) are reachable only through a CIDR allow rule that covers
//! them; a host-name rule never opens them, so a name that resolves to one
//! is refused (no DNS rebinding). The host's own services are reached
//! through the name [`HOST_ALIAS`], which an allow rule must list.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The name under which the guest reaches the host's loopback services,
/// when an allow rule lists it (`host.voidbox.internal:11434`).
pub const HOST_ALIAS: &str = "host.voidbox.internal";

/// Most rules in one policy (allow and deny together).
pub const MAX_RULES: usize = 1024;

/// What a rule matches, before its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every non-special address (`public`).
    Public,
    /// Exactly this name (lower case, no trailing dot).
    Host(String),
    /// Every name under this domain (`*.pypi.org` matches
    /// `files.pypi.org`, not `pypi.org` itself).
    Domain(String),
    /// Every address in this network.
    Net(IpNet),
}

/// One allow or deny rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What it matches.
    pub target: Target,
    /// The one port it matches; `None`: every port.
    pub port: Option<u16>,
    /// A `/udp` rule: an allow rule that opens UDP (and not TCP) to what
    /// it matches. Deny rules refuse both, whatever they say.
    pub udp: bool,
}

/// A rule that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network rule `{rule}`: {reason}")]
pub struct RuleError {
    /// The rule as written.
    pub rule: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Rule, RuleError> {
        let fail = |reason: &str| RuleError {
            rule: text.to_string(),
            reason: reason.to_string(),
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(fail("empty"));
        }
        if text.len() > 300 {
            return Err(fail("longer than 300 bytes"));
        }
        let (text, udp) = match text.len().checked_sub(4).and_then(|i| text.get(i..)) {
            Some(tail) if tail.eq_ignore_ascii_case("/udp") => (&text[..text.len() - 4], true),
            _ => (text, false),
        };
        // `[v6]:port`, `v6`, `v6/len`, `v4/len:port`, `name:port`.
        let (body, port) = split_port(text).map_err(|r| fail(&r))?;
        if port == Some(0) {
            return Err(fail("port 0 is not a port"));
        }
        let target = if body.eq_ignore_ascii_case("public") {
            Target::Public
        } else if let Ok(net) = body.parse::<IpNet>() {
            Target::Net(net.trunc())
        } else if let Ok(addr) = body.parse::<IpAddr>() {
            Target::Net(IpNet::from(addr))
        } else if let Some(domain) = body.strip_prefix("*.") {
            Target::Domain(check_name(domain).map_err(|r| fail(&r))?)
        } else {
            Target::Host(check_name(body).map_err(|r| fail(&r))?)
        };
        Ok(Rule { target, port, udp })
    }
}

fn split_port(text: &str) -> Result<(&str, Option<u16>), String> {
    let parse = |p: &str| {
        p.parse::<u16>()
            .map(Some)
            .map_err(|_| format!("`{p}` is not a port (1-65535)"))
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or("`[` without `]`".to_string())?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((addr, parse(p)?)),
            None if after.is_empty() => Ok((addr, None)),
            None => Err(format!("unexpected `{after}` after `]`")),
        };
    }
    // More than one colon and no brackets: a bare IPv6 address or network.
    if text.matches(':').count() > 1 {
        return Ok((text, None));
    }
    match text.rsplit_once(':') {
        Some((body, p)) => Ok((body, parse(p)?)),
        None => Ok((text, None)),
    }
}

/// A host name as rules and DNS compare it: lower case, no trailing dot,
/// labels of letters, digits, `-` and `_`.
fn check_name(name: &str) -> Result<String, String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 {
        return Err("not a host name".into());
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!("`{label}` is not a host name label"));
        }
    }
    Ok(name)
}

/// Normalises a name from the guest (DNS query, TLS SNI, HTTP Host) for
/// matching; `None` when it is not a host name at all.
pub fn normalize_name(name: &str) -> Option<String> {
    check_name(name).ok()
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = matches!(&self.target, Target::Net(IpNet::V6(_)));
        match (&self.target, self.port) {
            (Target::Net(net), Some(port)) if v6 => {
                write!(f, "[{}]:{port}", net_text(net))?;
                return if self.udp {
                    f.write_str("/udp")
                } else {
                    Ok(())
                };
            }
            (Target::Public, _) => f.write_str("public")?,
            (Target::Host(h), _) => f.write_str(h)?,
            (Target::Domain(d), _) => write!(f, "*.{d}")?,
            (Target::Net(net), _) => f.write_str(&net_text(net))?,
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        if self.udp {
            f.write_str("/udp")?;
        }
        Ok(())
    }
}

fn net_text(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rule, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Rule {
    fn port_matches(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    fn name_matches(&self, name: &str) -> bool {
        match &self.target {
            Target::Host(h) => h == name,
            Target::Domain(d) => name
                .strip_suffix(d.as_str())
                .is_some_and(|head| head.ends_with('.') && head.len() > 1),
            _ => false,
        }
    }

    /// Whether the rule names `name` (any port).
    pub fn names(&self, name: &str) -> bool {
        self.name_matches(name)
    }

    /// Whether the rule names `name` at `port`.
    pub fn names_at(&self, name: &str, port: u16) -> bool {
        self.port_matches(port) && self.name_matches(name)
    }

    /// Whether the rule matches a connection to `addr:port` reached by
    /// one of `names`.
    fn matches(&self, addr: IpAddr, port: u16, names: &[String]) -> bool {
        if !self.port_matches(port) {
            return false;
        }
        match &self.target {
            Target::Public => !is_special(addr),
            Target::Net(net) => net.contains(&canonical(addr)),
            Target::Host(_) | Target::Domain(_) => names.iter().any(|n| self.name_matches(n)),
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Addresses no connection reaches unless a CIDR allow rule covers them:
/// loopback, unspecified, private (RFC 1918), link-local (the
/// 169.254.169.254 metadata service among them), CGNAT, the IETF and
/// benchmarking blocks, multicast, broadcast and reserved; IPv6 loopback,
/// unspecified, unique-local, link-local, multicast, and the IPv4-mapped
/// forms of the IPv4 ones.
pub fn is_special(addr: IpAddr) -> bool {
    match canonical(addr) {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(a: Ipv4Addr) -> bool {
    let [b0, b1, b2, _] = a.octets();
    a.is_unspecified()
        || a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_multicast()
        || a.is_broadcast()
        || b0 == 0
        || (b0 == 100 && (b1 & 0xc0) == 64) // 100.64.0.0/10, CGNAT
        || (b0 == 192 && b1 == 0 && b2 == 0) // 192.0.0.0/24, IETF
        || (b0 == 198 && (b1 & 0xfe) == 18) // 198.18.0.0/15, benchmarking
        || b0 >= 240 // reserved
}

fn special_v6(a: Ipv6Addr) -> bool {
    let first = a.segments()[0];
    a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || (first & 0xfe00) == 0xfc00 // fc00::/7, unique local
        || (first & 0xffc0) == 0xfe80 // fe80::/10, link-local
}

/// A decision and what made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the connection (or answer) may go ahead.
    pub allowed: bool,
    /// The rule that decided, as written, or why none did.
    pub reason: String,
    /// Allowed by a host-name rule: the name the connection really
    /// carries (TLS SNI, HTTP Host) must be one the rules allow too.
    #[serde(default)]
    pub by_name: bool,
}

impl Decision {
    fn allow(rule: &Rule) -> Decision {
        Decision {
            allowed: true,
            reason: format!("allow {rule}"),
            by_name: matches!(rule.target, Target::Host(_) | Target::Domain(_)),
        }
    }

    /// A refusal for `reason`.
    pub fn deny(reason: impl Into<String>) -> Decision {
        Decision {
            allowed: false,
            reason: reason.into(),
            by_name: false,
        }
    }
}

/// The rules of one sandbox's network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// What may be reached.
    #[serde(default)]
    pub allow: Vec<Rule>,
    /// What may not, whatever `allow` says.
    #[serde(default)]
    pub deny: Vec<Rule>,
}

impl Rules {
    /// `public`: the public internet and nothing else.
    pub fn public() -> Rules {
        Rules {
            allow: vec![Rule {
                target: Target::Public,
                port: None,
                udp: false,
            }],
            deny: Vec::new(),
        }
    }

    /// Parses allow and deny rule strings.
    pub fn parse<A: AsRef<str>, D: AsRef<str>>(
        allow: &[A],
        deny: &[D],
    ) -> Result<Rules, RuleError> {
        Ok(Rules {
            allow: allow
                .iter()
                .map(|r| r.as_ref().parse())
                .collect::<Result<_, _>>()?,
            deny: deny
                .iter()
                .map(|r| r.as_ref().parse())
                .collect::<Result<_, _>>()?,
        })
    }

    /// The rules for one protocol: the allow rules that open it (`/udp`
    /// ones for UDP, the others for TCP), and every deny rule.
    pub fn for_protocol(&self, udp: bool) -> Rules {
        Rules {
            allow: self
                .allow
                .iter()
                .filter(|r| r.udp == udp)
                .cloned()
                .collect(),
            deny: self.deny.clone(),
        }
    }

    /// Whether a connection to `addr:port` may be made. `names` are the
    /// names that reached it: what the guest's DNS lookups answered with
    /// this address, and the TLS SNI or HTTP Host it sent.
    pub fn decide(&self, addr: IpAddr, port: u16, names: &[String]) -> Decision {
        if let Some(refusal) = self.denied(addr, port, names) {
            return refusal;
        }
        // A CIDR rule opens exactly what it covers, special or not.
        if let Some(rule) = self
            .allow
            .iter()
            .find(|r| matches!(r.target, Target::Net(_)) && r.matches(addr, port, names))
        {
            return Decision::allow(rule);
        }
        if is_special(addr) {
            return Decision::deny(format!(
                "{addr} is a loopback, private or link-local address and no CIDR rule allows it"
            ));
        }
        match self.allow.iter().find(|r| r.matches(addr, port, names)) {
            Some(rule) => Decision::allow(rule),
            None => Decision::deny(match names.first() {
                Some(name) => format!("no rule allows {name} ({addr}) port {port}"),
                None => format!("no rule allows {addr} port {port}"),
            }),
        }
    }

    /// The refusal of the deny rule that matches `addr:port` reached by one
    /// of `names`, if one does.
    pub fn denied(&self, addr: IpAddr, port: u16, names: &[String]) -> Option<Decision> {
        self.deny
            .iter()
            .find(|r| r.matches(addr, port, names))
            .map(|rule| Decision::deny(format!("deny {rule}")))
    }

    /// Whether the guest may learn that `name` has address `addr`: some
    /// port of it would be allowed.
    pub fn may_resolve(&self, name: &str, addr: IpAddr) -> bool {
        let names = [name.to_string()];
        let denied_everywhere = self
            .deny
            .iter()
            .any(|r| r.port.is_none() && r.matches(addr, 0, &names));
        if denied_everywhere {
            return false;
        }
        self.allow.iter().any(|r| {
            let at_some_port = Rule {
                target: r.target.clone(),
                port: None,
                udp: r.udp,
            };
            at_some_port.matches(addr, 0, &names)
                && (matches!(r.target, Target::Net(_)) || !is_special(addr))
        })
    }

    /// Whether a CIDR allow rule covers `addr:port` (which opens even the
    /// host's own addresses).
    pub fn cidr_allows(&self, addr: IpAddr, port: u16) -> bool {
        self.allow
            .iter()
            .any(|r| matches!(r.target, Target::Net(_)) && r.matches(addr, port, &[]))
    }

    /// Whether looking `name` up could ever lead to an allowed
    /// connection. Names that cannot are not sent to the host's resolver,
    /// so a guest cannot use it to carry data out.
    pub fn may_look_up(&self, name: &str) -> bool {
        !self.denies_name(name)
            && self.allow.iter().any(|r| match r.target {
                Target::Public | Target::Net(_) => true,
                Target::Host(_) | Target::Domain(_) => r.name_matches(name),
            })
    }

    /// Whether a rule denies `name` on every port (no lookup is made).
    pub fn denies_name(&self, name: &str) -> bool {
        self.deny
            .iter()
            .any(|r| r.port.is_none() && r.name_matches(name))
    }

    /// Whether an allow rule names [`HOST_ALIAS`] at `port`, and no deny
    /// rule does.
    pub fn host_alias(&self, port: u16) -> Decision {
        let named = |r: &&Rule| r.port_matches(port) && r.name_matches(HOST_ALIAS);
        if let Some(rule) = self.deny.iter().find(named) {
            return Decision::deny(format!("deny {rule}"));
        }
        match self.allow.iter().find(named) {
            // Only the host's loopback port is behind it: no name to check.
            Some(rule) => Decision {
                by_name: false,
                ..Decision::allow(rule)
            },
            None => Decision::deny(format!("no rule allows {HOST_ALIAS}:{port}")),
        }
    }

    /// Whether any allow rule names [`HOST_ALIAS`].
    pub fn mentions_host_alias(&self) -> bool {
        self.allow.iter().any(|r| r.name_matches(HOST_ALIAS))
    }

    /// Every rule, allow then deny.
    pub fn len(&self) -> usize {
        self.allow.len() + self.deny.len()
    }

    /// No rule at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> Rules {
        Rules::parse(allow, deny).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rules_parse_and_print_back() {
        for text in [
            "api.github.com",
            "*.pypi.org:443",
            "203.0.113.0/24",
            "203.0.113.7:8080",
            "::1",
            "[2001:db8::/32]:443",
            "public",
            "public:443",
            "host.voidbox.internal:11434",
            "host.voidbox.internal:5353/udp",
            "[2001:db8::1]:53/udp",
            "203.0.113.0/24/udp",
            "public/udp",
        ] {
            let rule: Rule = text.parse().unwrap();
            assert_eq!(rule.to_string(), text);
        }
        assert_eq!(
            "API.GitHub.com.".parse::<Rule>().unwrap().to_string(),
            "api.github.com"
        );
        assert_eq!(
            "10.1.2.3/8".parse::<Rule>().unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn udp_rules_open_udp_only_and_deny_rules_refuse_both() {
        let rules = Rules::parse(&["public", "198.51.100.9:53/udp"], &["203.0.113.0/24"]).unwrap();
        let (tcp, udp) = (rules.for_protocol(false), rules.for_protocol(true));
        assert!(
            tcp.decide(ip("198.51.100.9"), 53, &[]).allowed,
            "public, for TCP"
        );
        assert!(udp.decide(ip("198.51.100.9"), 53, &[]).allowed);
        assert!(!udp.decide(ip("198.51.100.9"), 54, &[]).allowed);
        assert!(
            !udp.decide(ip("93.184.216.34"), 443, &[]).allowed,
            "public is TCP"
        );
        assert!(!udp.decide(ip("203.0.113.5"), 53, &[]).allowed);
        let alias = Rules::parse(&["host.voidbox.internal:9999/udp"], &[] as &[&str]).unwrap();
        assert!(alias.for_protocol(true).host_alias(9999).allowed);
        assert!(!alias.for_protocol(false).host_alias(9999).allowed);
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (text, says) in [
            ("", "empty"),
            ("example.com:http", "not a port"),
            ("example.com:0", "port 0"),
            ("example.com:70000", "not a port"),
            ("exa mple.com", "label"),
            ("*.", "host name"),
            ("a..b", "label"),
            ("[::1", "without"),
            ("10.0.0.0/33", "label"),
        ] {
            let e = text.parse::<Rule>().unwrap_err();
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn special_ranges_are_special() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_special(ip(a)), "{a}");
        }
        for a in ["8.8.8.8", "140.82.112.6", "100.128.0.1", "2606:4700::1111"] {
            assert!(!is_special(ip(a)), "{a}");
        }
    }

    #[test]
    fn public_reaches_public_addresses_only() {
        let r = Rules::public();
        assert!(r.decide(ip("140.82.112.6"), 443, &[]).allowed);
        for a in ["127.0.0.1", "169.254.169.254", "10.0.2.2", "::1"] {
            let d = r.decide(ip(a), 80, &[]);
            assert!(!d.allowed, "{a}");
            assert!(d.reason.contains("loopback, private"), "{}", d.reason);
        }
    }

    #[test]
    fn names_and_ports_are_matched() {
        let r = rules(&["api.github.com", "*.pypi.org:443"], &[]);
        let gh = names(&["api.github.com"]);
        assert!(r.decide(ip("140.82.112.6"), 443, &gh).allowed);
        assert!(r.decide(ip("140.82.112.6"), 22, &gh).allowed);
        assert!(!r.decide(ip("140.82.112.6"), 443, &[]).allowed);
        let files = names(&["files.pypi.org"]);
        assert!(r.decide(ip("151.101.0.223"), 443, &files).allowed);
        assert!(!r.decide(ip("151.101.0.223"), 80, &files).allowed);
        // `*.pypi.org` is the subdomains, not the domain, and not look-alikes.
        for n in ["pypi.org", "evilpypi.org", "pypi.org.evil.com"] {
            assert!(
                !r.decide(ip("151.101.0.223"), 443, &names(&[n])).allowed,
                "{n}"
            );
        }
    }

    #[test]
    fn deny_wins_and_names_never_open_special_addresses() {
        let r = rules(
            &["public", "internal.example"],
            &["*.evil.com", "8.8.8.8:53"],
        );
        let d = r.decide(ip("1.2.3.4"), 443, &names(&["x.evil.com"]));
        assert_eq!(d, Decision::deny("deny *.evil.com"));
        assert!(!r.decide(ip("8.8.8.8"), 53, &[]).allowed);
        assert!(r.decide(ip("8.8.8.8"), 443, &[]).allowed);
        // DNS rebinding: an allowed name that resolves to loopback.
        assert!(
            !r.decide(ip("127.0.0.1"), 80, &names(&["internal.example"]))
                .allowed
        );
        assert!(!r.may_resolve("internal.example", ip("127.0.0.1")));
        assert!(r.may_resolve("internal.example", ip("1.2.3.4")));
        assert!(!r.may_resolve("a.evil.com", ip("1.2.3.4")));
    }

    #[test]
    fn a_cidr_rule_opens_what_it_covers() {
        let r = rules(&["10.0.0.0/8:5432", "203.0.113.0/24"], &[]);
        assert!(r.decide(ip("10.9.8.7"), 5432, &[]).allowed);
        assert!(!r.decide(ip("10.9.8.7"), 5433, &[]).allowed);
        assert!(r.decide(ip("203.0.113.9"), 1, &[]).allowed);
        assert!(!r.decide(ip("8.8.8.8"), 443, &[]).allowed);
        assert!(r.may_resolve("db.internal", ip("10.1.1.1")));
        assert!(!r.may_resolve("db.internal", ip("192.168.1.1")));
    }

    #[test]
    fn the_host_alias_needs_its_own_rule() {
        let r = rules(&["public", "host.voidbox.internal:11434"], &[]);
        assert!(r.host_alias(11434).allowed);
        assert!(!r.host_alias(22).allowed);
        assert!(!Rules::public().host_alias(11434).allowed);
        let denied = rules(&["host.voidbox.internal"], &["host.voidbox.internal:22"]);
        assert!(denied.host_alias(80).allowed);
        assert!(!denied.host_alias(22).allowed);
    }
}
