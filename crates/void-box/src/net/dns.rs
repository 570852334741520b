//! The guest's DNS server: questions are answered from the host's resolver
//! (`getaddrinfo`, so `/etc/hosts` and the host's `resolv.conf` apply) and
//! filtered by the policy. Only A questions get addresses (the guest has no
//! IPv6); AAAA gets an empty answer so clients fall back at once; every other
//! type is refused, and so is every name no rule could ever let the guest
//! reach, without asking the host (a guest cannot tunnel data out in
//! look-ups of made-up names).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

use super::audit::{NetworkEvent, NetworkEventKind};
use super::policy::{normalize_name, Rules, HOST_ALIAS};
use super::HOST_ALIAS_ADDR;

/// How long the host's resolver may take.
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(5);
/// Most questions being resolved at once; more are dropped (the guest's
/// resolver asks again).
pub const MAX_IN_FLIGHT: usize = 32;
/// TTL of every answer: short, so a changed address is seen soon.
const TTL: u32 = 30;
/// Addresses remembered with the names that resolved to them.
const MAX_NAMES: usize = 4096;

/// What one question came to.
pub struct Answer {
    /// The reply to send; `None`: the question could not be read at all.
    pub reply: Option<Vec<u8>>,
    /// Addresses the guest now knows under a name.
    pub learned: Vec<(Ipv4Addr, String)>,
    /// The audit record (A questions only: AAAA always comes in pairs).
    pub event: Option<NetworkEvent>,
}

/// Answers one DNS question from the guest.
pub async fn answer(query: &[u8], rules: Arc<Rules>) -> Answer {
    let started = Instant::now();
    let Ok(request) = Message::from_vec(query) else {
        return Answer {
            reply: None,
            learned: Vec::new(),
            event: None,
        };
    };
    let mut reply = Message::new();
    reply
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true);
    let question = match (request.message_type(), request.op_code(), request.queries()) {
        (MessageType::Query, OpCode::Query, [q]) => q.clone(),
        _ => {
            reply.set_response_code(ResponseCode::FormErr);
            return finish(reply, Vec::new(), None);
        }
    };
    reply.add_query(question.clone());
    let raw_name = question.name().to_ascii();
    let Some(name) = normalize_name(&raw_name) else {
        reply.set_response_code(ResponseCode::NXDomain);
        return finish(reply, Vec::new(), None);
    };
    let event = |allowed: bool, reason: String, address: Option<IpAddr>, error: Option<String>| {
        Some(NetworkEvent {
            kind: NetworkEventKind::Dns,
            allowed,
            reason,
            host: Some(name.clone()),
            address,
            port: 0,
            bytes_sent: 0,
            bytes_received: 0,
            duration: started.elapsed(),
            error,
        })
    };
    let qtype = question.query_type();
    if qtype != RecordType::A && qtype != RecordType::AAAA {
        reply.set_response_code(ResponseCode::Refused);
        let why = format!("only A and AAAA questions are answered, not {qtype}");
        return finish(reply, Vec::new(), event(false, why, None, None));
    }
    if name == HOST_ALIAS {
        if !rules.mentions_host_alias() {
            reply.set_response_code(ResponseCode::NXDomain);
            let why = format!("no rule allows {HOST_ALIAS}");
            return finish(
                reply,
                Vec::new(),
                a_only(qtype, event(false, why, None, None)),
            );
        }
        if qtype == RecordType::A {
            reply.add_answer(record(&question, HOST_ALIAS_ADDR));
        }
        let learned = vec![(HOST_ALIAS_ADDR, name.clone())];
        let why = "the host's loopback, by an allow rule".to_string();
        let ev = event(true, why, Some(IpAddr::V4(HOST_ALIAS_ADDR)), None);
        return finish(reply, learned, a_only(qtype, ev));
    }
    if !rules.may_look_up(&name) {
        reply.set_response_code(ResponseCode::NXDomain);
        let why = if rules.denies_name(&name) {
            "a deny rule names it".to_string()
        } else {
            "no rule allows this name".to_string()
        };
        return finish(
            reply,
            Vec::new(),
            a_only(qtype, event(false, why, None, None)),
        );
    }
    if qtype == RecordType::AAAA {
        return finish(reply, Vec::new(), None);
    }
    let looked_up =
        tokio::time::timeout(LOOKUP_DEADLINE, tokio::net::lookup_host((name.as_str(), 0))).await;
    let addrs: Vec<Ipv4Addr> = match looked_up {
        Err(_) => {
            reply.set_response_code(ResponseCode::ServFail);
            let error = format!("the host's resolver did not answer in {LOOKUP_DEADLINE:?}");
            let why = "lookup failed".to_string();
            return finish(reply, Vec::new(), event(true, why, None, Some(error)));
        }
        Ok(Err(e)) => {
            reply.set_response_code(ResponseCode::NXDomain);
            let why = "lookup failed".to_string();
            return finish(
                reply,
                Vec::new(),
                event(true, why, None, Some(e.to_string())),
            );
        }
        Ok(Ok(found)) => {
            let mut v4: Vec<Ipv4Addr> = Vec::new();
            for a in found {
                if let IpAddr::V4(ip) = a.ip() {
                    if !v4.contains(&ip) {
                        v4.push(ip);
                    }
                }
            }
            v4
        }
    };
    let (kept, refused): (Vec<Ipv4Addr>, Vec<Ipv4Addr>) = addrs
        .iter()
        .partition(|a| rules.may_resolve(&name, IpAddr::V4(**a)));
    if kept.is_empty() {
        reply.set_response_code(ResponseCode::NXDomain);
        let why = if refused.is_empty() {
            "no IPv4 address".to_string()
        } else {
            let list: Vec<String> = refused.iter().map(|a| a.to_string()).collect();
            format!(
                "resolves only to addresses no rule allows ({})",
                list.join(", ")
            )
        };
        let first = refused.first().map(|a| IpAddr::V4(*a));
        return finish(reply, Vec::new(), event(false, why, first, None));
    }
    for a in &kept {
        reply.add_answer(record(&question, *a));
    }
    let learned = kept.iter().map(|a| (*a, name.clone())).collect();
    let why = format!("{} address(es) answered", kept.len());
    finish(
        reply,
        learned,
        event(true, why, Some(IpAddr::V4(kept[0])), None),
    )
}

fn a_only(qtype: RecordType, event: Option<NetworkEvent>) -> Option<NetworkEvent> {
    event.filter(|_| qtype == RecordType::A)
}

fn record(question: &hickory_proto::op::Query, addr: Ipv4Addr) -> Record {
    Record::from_rdata(question.name().clone(), TTL, RData::A(A(addr)))
}

fn finish(reply: Message, learned: Vec<(Ipv4Addr, String)>, event: Option<NetworkEvent>) -> Answer {
    Answer {
        reply: reply.to_vec().ok(),
        learned,
        event,
    }
}

/// The names the guest resolved each address with, newest last; the
/// oldest addresses are forgotten past [`MAX_NAMES`].
#[derive(Debug, Default)]
pub struct Names {
    by_addr: HashMap<Ipv4Addr, Vec<String>>,
    order: VecDeque<Ipv4Addr>,
}

impl Names {
    /// Remembers that `name` resolved to `addr`.
    pub fn learn(&mut self, addr: Ipv4Addr, name: String) {
        let names = self.by_addr.entry(addr).or_default();
        if names.contains(&name) {
            return;
        }
        if names.is_empty() {
            self.order.push_back(addr);
        }
        // A few names per address is plenty (CDNs share addresses).
        if names.len() >= 16 {
            names.remove(0);
        }
        names.push(name);
        while self.order.len() > MAX_NAMES {
            if let Some(old) = self.order.pop_front() {
                self.by_addr.remove(&old);
            }
        }
    }

    /// The names `addr` was learned under.
    pub fn of(&self, addr: Ipv4Addr) -> &[String] {
        self.by_addr.get(&addr).map_or(&[], |v| v.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use std::str::FromStr;

    fn ask(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(7).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_str(name).unwrap(), qtype));
        m.to_vec().unwrap()
    }

    async fn reply(rules: &Rules, name: &str, qtype: RecordType) -> (Message, Answer) {
        let answer = answer(&ask(name, qtype), Arc::new(rules.clone())).await;
        let msg = Message::from_vec(answer.reply.as_ref().unwrap()).unwrap();
        (msg, answer)
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused() {
        let (msg, answer) = reply(&Rules::public(), "localhost.", RecordType::A).await;
        assert_eq!(msg.id(), 7);
        assert_eq!(msg.response_code(), ResponseCode::NXDomain);
        assert!(msg.answers().is_empty());
        let event = answer.event.unwrap();
        assert!(!event.allowed);
        assert!(event.reason.contains("127.0.0.1"), "{}", event.reason);
        assert!(answer.learned.is_empty());
    }

    #[tokio::test]
    async fn an_allowed_cidr_opens_the_name_that_resolves_into_it() {
        let rules = Rules::parse(&["127.0.0.0/8"], &[] as &[&str]).unwrap();
        let (msg, answer) = reply(&rules, "localhost", RecordType::A).await;
        assert_eq!(msg.response_code(), ResponseCode::NoError);
        assert_eq!(msg.answers().len(), 1);
        assert_eq!(
            answer.learned,
            vec![(Ipv4Addr::LOCALHOST, "localhost".into())]
        );
    }

    #[tokio::test]
    async fn names_no_rule_names_are_not_looked_up() {
        let rules = Rules::parse(&["api.github.com"], &[] as &[&str]).unwrap();
        let started = Instant::now();
        let (msg, answer) = reply(&rules, "data-to-smuggle.evil.example", RecordType::A).await;
        assert_eq!(msg.response_code(), ResponseCode::NXDomain);
        assert!(answer.event.unwrap().reason.contains("no rule"));
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn the_host_alias_resolves_only_when_a_rule_lists_it() {
        let (msg, _) = reply(&Rules::public(), HOST_ALIAS, RecordType::A).await;
        assert_eq!(msg.response_code(), ResponseCode::NXDomain);
        let rules = Rules::parse(&["host.voidbox.internal:8080"], &[] as &[&str]).unwrap();
        let (msg, answer) = reply(&rules, HOST_ALIAS, RecordType::A).await;
        assert_eq!(msg.answers().len(), 1);
        assert_eq!(answer.learned[0].0, HOST_ALIAS_ADDR);
        let (msg, answer) = reply(&rules, HOST_ALIAS, RecordType::AAAA).await;
        assert_eq!(msg.response_code(), ResponseCode::NoError);
        assert!(msg.answers().is_empty() && answer.event.is_none());
    }

    #[tokio::test]
    async fn other_types_and_garbage_are_refused() {
        let (msg, answer) = reply(&Rules::public(), "example.com", RecordType::TXT).await;
        assert_eq!(msg.response_code(), ResponseCode::Refused);
        assert!(!answer.event.unwrap().allowed);
        let garbage = answer_of(&[1, 2, 3]).await;
        assert!(garbage.reply.is_none());
    }

    async fn answer_of(bytes: &[u8]) -> Answer {
        answer(bytes, Arc::new(Rules::public())).await
    }

    #[test]
    fn names_are_bounded() {
        let mut names = Names::default();
        for i in 0..(MAX_NAMES as u32 + 10) {
            names.learn(Ipv4Addr::from(i), format!("n{i}"));
        }
        assert_eq!(names.by_addr.len(), MAX_NAMES);
        assert!(names.of(Ipv4Addr::from(0)).is_empty());
        let last = Ipv4Addr::from(MAX_NAMES as u32 + 9);
        assert_eq!(names.of(last), ["n4105".to_string()]);
    }
}
