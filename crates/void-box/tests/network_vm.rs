//! The guest network in real VMs: real packets through the guest kernel's
//! own TCP/IP stack, across virtio-net to the host's user-mode stack and
//! the policy. curl and python run in the Debian test image (pulled from a
//! registry on loopback); the destinations are test servers on the host's
//! loopback. Needs `scripts/setup.sh --with-test-tools`.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::net::{
    drain, echo_auth_server, find, http_server, ok, python_image, run, silent_server,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use void_box::net::{NetworkEventKind, NetworkPolicy};
use void_box::{Exec, Sandbox};

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_lets_through_what_it_allows_and_refuses_the_rest() {
    let (_registry, image) = python_image().await;
    let allowed = http_server("127.0.0.1:0", "hello from the host").await;
    let unnamed = http_server("127.0.0.1:0", "should not be reached").await;
    // A server on every host address, to show the host's own addresses
    // are not reachable by them either.
    let everywhere = http_server("0.0.0.0:0", "host address reached").await;
    let policy = NetworkPolicy::rules(
        &[
            "public".to_string(),
            format!("host.voidbox.internal:{}", allowed.port()),
        ],
        &[] as &[&str],
    )
    .unwrap();
    let sandbox = Sandbox::builder()
        .image(&image)
        .network(policy)
        .build()
        .await
        .unwrap();
    let mut trail = sandbox.network_events().unwrap();

    // curl and a raw python socket reach the allowed service by name.
    let body = ok(
        &sandbox,
        &format!(
            "curl -sS --max-time 20 http://host.voidbox.internal:{}/hi",
            allowed.port()
        ),
    )
    .await;
    assert_eq!(body, "hello from the host");
    let raw = ok(
        &sandbox,
        &format!(
            "python3 -c \"import socket\ns = socket.create_connection(('host.voidbox.internal', {}), timeout=20)\ns.sendall(b'GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n')\ndata = b''\nwhile True:\n    chunk = s.recv(4096)\n    if not chunk: break\n    data += chunk\nprint(data.split(b'\\r\\n\\r\\n', 1)[1].decode())\"",
            allowed.port()
        ),
    )
    .await;
    assert_eq!(raw.trim(), "hello from the host");

    // A port no rule names: refused at once, as a reset.
    let (code, _, err) = run(
        &sandbox,
        &format!(
            "curl -sS --max-time 20 http://host.voidbox.internal:{}/",
            unnamed.port()
        ),
    )
    .await;
    assert_eq!(code, 7, "curl cannot connect: {err}");
    let refused = ok(
        &sandbox,
        &format!(
            "python3 -c \"import socket\ntry:\n    socket.create_connection(('host.voidbox.internal', {}), timeout=20)\n    print('connected')\nexcept ConnectionRefusedError as e:\n    print('refused')\"",
            unnamed.port()
        ),
    )
    .await;
    assert_eq!(refused.trim(), "refused");

    // The host's loopback under any other name, the gateway, the
    // metadata address, IPv6 loopback and the host's own addresses.
    let host_ip = host_address();
    let port = allowed.port();
    let every = everywhere.port();
    for (url, why) in [
        (
            format!("http://127.0.0.1:{port}/"),
            "the guest's own loopback",
        ),
        (format!("http://10.0.2.2:{port}/"), "the gateway"),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "metadata",
        ),
        (format!("http://[::1]:{port}/"), "IPv6 loopback"),
        (format!("http://{host_ip}:{every}/"), "a host address"),
    ] {
        let (code, out, err) = run(&sandbox, &format!("curl -sS --max-time 10 {url}")).await;
        assert_ne!(code, 0, "{why} ({url}) answered: {out}");
        assert!(!out.contains("reached"), "{why}: {out}{err}");
    }

    // A name the host resolves to its loopback is not answered.
    let dns = ok(
        &sandbox,
        "python3 -c \"import socket, struct\nq = struct.pack('>HHHHHH', 7, 0x100, 1, 0, 0, 0) + b'\\x09localhost\\x00' + struct.pack('>HH', 1, 1)\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(10)\ns.sendto(q, ('10.0.2.2', 53))\nr = s.recv(512)\nprint(r[3] & 15, struct.unpack('>H', r[6:8])[0])\"",
    )
    .await;
    assert_eq!(dns.trim(), "3 0", "NXDOMAIN and no answer");

    // UDP anywhere but the DNS server is refused.
    let udp = ok(
        &sandbox,
        "python3 -c \"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(5)\ns.connect(('93.184.216.34', 9999))\ns.send(b'x')\ntry:\n    s.recv(10)\n    print('answered')\nexcept ConnectionRefusedError:\n    print('refused')\nexcept socket.timeout:\n    print('timeout')\"",
    )
    .await;
    assert_eq!(udp.trim(), "refused");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = drain(&mut trail);
    let lines: Vec<String> = events.iter().map(|e| e.summary()).collect();
    let all = lines.join("\n");
    let ok_event = find(&events, |e| {
        e.kind == NetworkEventKind::Tcp
            && e.allowed
            && e.port == allowed.port()
            && e.error.is_none()
    })
    .unwrap_or_else(|| panic!("no allowed event in:\n{all}"));
    assert_eq!(ok_event.host.as_deref(), Some("host.voidbox.internal"));
    assert!(
        ok_event.bytes_received > 0 && ok_event.bytes_sent > 0,
        "{all}"
    );
    assert_eq!(
        ok_event.reason,
        format!("allow host.voidbox.internal:{}", allowed.port())
    );
    let denied = find(&events, |e| !e.allowed && e.port == unnamed.port())
        .unwrap_or_else(|| panic!("no denied event in:\n{all}"));
    assert!(
        denied
            .reason
            .contains("no rule allows host.voidbox.internal"),
        "{all}"
    );
    // The host's address is refused as a private one where it is private
    // (a cloud VM's 10.x) and as the host's own where it is not.
    let host_says: &[&str] = &["is one of the host's own addresses", "loopback, private"];
    for (addr, says) in [
        ("10.0.2.2", &["own network"][..]),
        ("169.254.169.254", &["link-local"][..]),
        (host_ip.as_str(), host_says),
    ] {
        let addr: IpAddr = addr.parse().unwrap();
        let e = find(&events, |e| !e.allowed && e.address == Some(addr))
            .unwrap_or_else(|| panic!("no denied event for {addr} in:\n{all}"));
        assert!(says.iter().any(|s| e.reason.contains(s)), "{all}");
    }
    assert!(
        find(&events, |e| e.kind == NetworkEventKind::Dns
            && !e.allowed
            && e.reason.contains("127.0.0.1"))
        .is_some(),
        "{all}"
    );
    assert!(
        find(&events, |e| e.kind == NetworkEventKind::Udp
            && !e.allowed
            && e.port == 9999)
        .is_some(),
        "{all}"
    );
    sandbox.shutdown().await.unwrap();
}

/// A non-loopback address of this host.
fn host_address() -> String {
    // The address the host would send from; no packet leaves.
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    match probe.connect("192.0.2.1:9") {
        Ok(()) => probe.local_addr().unwrap().ip().to_string(),
        Err(_) => "127.0.0.2".into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_network_there_is_no_device_and_with_rules_only_what_they_name() {
    // Off (the default): no network device (only the kernel's own
    // loopback and IPv6-in-IPv4 pseudo-devices).
    let sandbox = Sandbox::builder().build().await.unwrap();
    let out = sandbox
        .exec(Exec::shell("ls /sys/class/net"))
        .await
        .unwrap();
    let devices: Vec<String> = out
        .stdout_text()
        .split_whitespace()
        .map(String::from)
        .collect();
    assert!(devices.contains(&"lo".to_string()), "{devices:?}");
    assert!(
        devices.iter().all(|d| d == "lo" || d == "sit0"),
        "{devices:?}"
    );
    assert!(sandbox.network_events().is_none());
    sandbox.shutdown().await.unwrap();

    // Rules without `public`: a named host port answers, nothing else
    // does, not even the public internet (busybox wget, no image).
    let server = http_server("127.0.0.1:0", "named").await;
    let policy = NetworkPolicy::rules(
        &[format!("host.voidbox.internal:{}", server.port())],
        &[] as &[&str],
    )
    .unwrap();
    let sandbox = Sandbox::builder().network(policy).build().await.unwrap();
    let mut trail = sandbox.network_events().unwrap();
    let got = sandbox
        .exec(Exec::shell(format!(
            "wget -q -O - http://host.voidbox.internal:{}/",
            server.port()
        )))
        .await
        .unwrap();
    assert_eq!(got.stdout_text(), "named", "{}", got.stderr_text());
    let public = sandbox
        .exec(Exec::shell(
            "wget -q -O - http://93.184.216.34/ 2>&1; echo rc=$?",
        ))
        .await
        .unwrap();
    assert!(
        public.stdout_text().contains("rc=1"),
        "{}",
        public.stdout_text()
    );
    let dns = sandbox
        .exec(Exec::shell(
            "nslookup example.com 10.0.2.2 2>&1; echo rc=$?",
        ))
        .await
        .unwrap();
    assert!(!dns.stdout_text().contains("rc=0"), "{}", dns.stdout_text());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = drain(&mut trail);
    let all: Vec<String> = events.iter().map(|e| e.summary()).collect();
    assert!(
        events
            .iter()
            .any(|e| !e.allowed && e.address == Some("93.184.216.34".parse().unwrap())),
        "{all:?} {}",
        public.stdout_text()
    );
    sandbox.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_published_port_reaches_the_guest_server_on_loopback_only() {
    let (_registry, image) = python_image().await;
    // Ports alone: a device that reaches nothing, serving one port.
    let sandbox = Sandbox::builder()
        .image(&image)
        .publish(8000, 0)
        .build()
        .await
        .unwrap();
    let ports = sandbox.published_ports();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].guest, 8000);
    assert_ne!(ports[0].host, 0);
    ok(
        &sandbox,
        "mkdir -p /tmp/www && echo published > /tmp/www/index.html && cd /tmp/www && \
         setsid -f python3 -m http.server 8000 --bind 0.0.0.0 >/dev/null 2>&1; \
         for i in $(seq 100); do python3 -c \"import socket; socket.create_connection(('127.0.0.1', 8000), 1)\" 2>/dev/null && exit 0; sleep 0.2; done; exit 1",
    )
    .await;
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", ports[0].host))
        .await
        .unwrap();
    conn.write_all(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut reply))
        .await
        .expect("the guest answers in time")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    assert!(reply.ends_with("published\n"), "{reply}");
    // Only on the host's loopback.
    let elsewhere = tokio::net::TcpStream::connect((host_address().as_str(), ports[0].host)).await;
    assert!(
        elsewhere.is_err(),
        "the port answers on a non-loopback address"
    );
    // And the guest still reaches nothing.
    let (code, out, _) = run(
        &sandbox,
        "python3 -c \"import socket\ntry:\n    socket.create_connection(('93.184.216.34', 80), 5); print('out')\nexcept OSError: print('refused')\"",
    )
    .await;
    assert_eq!((code, out.trim()), (0, "refused"));
    sandbox.shutdown().await.unwrap();
    // The listener goes with the sandbox.
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", ports[0].host))
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_skill_that_declares_a_host_opens_it_for_its_box_only() {
    use serde_json::json;
    use void_box::agent::VoidBox;
    use void_box::llm::{LlmProvider, MockScript, MockTurn};
    use void_box::skill::Skill;

    let server = http_server("127.0.0.1:0", "from the skill's host").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lookup.md");
    std::fs::write(
        &file,
        format!(
            "---\nname: lookup\ndescription: looks things up\nnetwork: [\"host.voidbox.internal:{}\"]\n---\nUse wget.\n",
            server.port()
        ),
    )
    .unwrap();
    let fetch =
        json!({"command": format!("wget -q -O - http://host.voidbox.internal:{}/", server.port())});
    let script = || {
        LlmProvider::mock(MockScript::new(vec![
            MockTurn::default().call("bash", fetch.clone()),
            MockTurn::text("done"),
        ]))
    };
    let with = VoidBox::new("with-skill")
        .skill(Skill::file(&file))
        .llm(script())
        .prompt("fetch it")
        .build()
        .unwrap();
    let result = with.run(None).await.unwrap();
    assert!(
        result.tool_calls[0]
            .summary
            .contains("from the skill's host"),
        "{:?}",
        result.tool_calls[0]
    );
    // The same call in a box that does not declare the skill: no network.
    let without = VoidBox::new("without-skill")
        .llm(script())
        .prompt("fetch it")
        .build()
        .unwrap();
    let result = without.run(None).await.unwrap();
    assert!(
        !result.tool_calls[0]
            .summary
            .contains("from the skill's host"),
        "{:?}",
        result.tool_calls[0]
    );
    // A bad rule in the front matter fails before any VM boots.
    std::fs::write(
        &file,
        "---\nname: lookup\ndescription: x\nnetwork: [\"a b\"]\n---\n",
    )
    .unwrap();
    let bad = VoidBox::new("bad")
        .skill(Skill::file(&file))
        .llm(script())
        .prompt("x")
        .build()
        .unwrap();
    let e = bad.run(None).await.unwrap_err().to_string();
    assert!(e.contains("network rule `a b`"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_name_a_connection_carries_is_checked_against_the_deny_rules() {
    let (_registry, image) = python_image().await;
    let server = http_server("127.0.0.1:0", "served").await;
    let policy = NetworkPolicy::rules(
        &[format!("host.voidbox.internal:{}", server.port())],
        &["evil.example", "*.evil.example"],
    )
    .unwrap();
    let sandbox = Sandbox::builder()
        .image(&image)
        .network(policy)
        .build()
        .await
        .unwrap();
    let mut trail = sandbox.network_events().unwrap();
    let url = format!("http://host.voidbox.internal:{}/", server.port());
    assert_eq!(
        ok(&sandbox, &format!("curl -sS --max-time 20 {url}")).await,
        "served"
    );
    // The same address, a denied name in the Host header: reset, nothing served.
    let (code, out, err) = run(
        &sandbox,
        &format!("curl -sS --max-time 20 -H 'Host: api.evil.example' {url}"),
    )
    .await;
    assert_ne!(code, 0, "{out}{err}");
    assert!(!out.contains("served"), "{out}");
    // And in a TLS ClientHello's SNI (curl --resolve puts it there).
    let (code, _, err) = run(
        &sandbox,
        &format!(
            "curl -sS --max-time 20 -k --resolve evil.example:{port}:10.0.2.254 https://evil.example:{port}/",
            port = server.port()
        ),
    )
    .await;
    assert_ne!(code, 0, "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = drain(&mut trail);
    let all: Vec<String> = events.iter().map(|e| e.summary()).collect();
    for name in ["api.evil.example", "evil.example"] {
        let e = find(&events, |e| !e.allowed && e.host.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no denied event for {name}: {all:#?}"));
        assert!(e.reason.starts_with("deny "), "{all:#?}");
    }
    sandbox.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_and_fragmented_packets_from_guest_root_reach_nothing() {
    let (_registry, image) = python_image().await;
    // Counts the connections the host side makes to it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(conn);
        }
    });
    let policy =
        NetworkPolicy::rules(&[format!("host.voidbox.internal:{port}")], &[] as &[&str]).unwrap();
    let sandbox = Sandbox::builder()
        .image(&image)
        .user("root")
        .network(policy)
        .build()
        .await
        .unwrap();
    // A hand-made SYN to the allowed service, sent on a raw socket by guest
    // root: from a forged source, as a fragment, and (the control) as it is.
    let send = |src: &str, fragment: bool| {
        format!(
            "python3 -c \"
import socket, struct
def csum(b):
    if len(b) % 2: b += b'\\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
src, dst = socket.inet_aton('{src}'), socket.inet_aton('10.0.2.254')
tcp = struct.pack('!HHIIBBHHH', 40000, {port}, 1, 0, 5 << 4, 2, 65535, 0, 0)
tcp = tcp[:16] + struct.pack('!H', csum(src + dst + struct.pack('!BBH', 0, 6, len(tcp)) + tcp)) + tcp[18:]
flags = 0x2000 if {frag} else 0
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(tcp), 7, flags, 64, 6, 0, src, dst)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(ip + tcp, ('10.0.2.254', 0))
print('sent')
\"",
            frag = if fragment { "True" } else { "False" }
        )
    };
    for (src, fragment) in [("10.0.2.99", false), ("10.0.2.15", true)] {
        assert_eq!(ok(&sandbox, &send(src, fragment)).await.trim(), "sent");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a forged or fragmented SYN made a host connection"
    );
    // The same packet from the guest's own address, whole, does.
    assert_eq!(ok(&sandbox, &send("10.0.2.15", false)).await.trim(), "sent");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while accepted.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the control SYN made no connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sandbox.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_is_swapped_only_on_its_host_and_never_enters_the_guest() {
    let (_registry, image) = python_image().await;
    let bound = echo_auth_server().await;
    let other = echo_auth_server().await;
    let real = "ghp_real-value-0123456789abcdef";
    let policy = NetworkPolicy::rules(
        &[format!("host.voidbox.internal:{}", other.port())],
        &[] as &[&str],
    )
    .unwrap();
    let sandbox = Sandbox::builder()
        .image(&image)
        .user("root")
        .network(policy)
        .secret(
            "GITHUB_TOKEN",
            real,
            &[&format!("host.voidbox.internal:{}", bound.port())],
        )
        .build()
        .await
        .unwrap();
    let placeholder = ok(&sandbox, "printf %s \"$GITHUB_TOKEN\"").await;
    assert!(placeholder.starts_with("voidbox-secret-"), "{placeholder}");
    // Two requests on one connection to the secret's host: both swapped.
    let url = |port: u16| format!("http://host.voidbox.internal:{port}/");
    let swapped = ok(
        &sandbox,
        &format!(
            "curl -sS --max-time 20 -H \"Authorization: Bearer $GITHUB_TOKEN\" {u} {u}",
            u = url(bound.port())
        ),
    )
    .await;
    assert_eq!(swapped, format!("Bearer {real}Bearer {real}"));
    // Anywhere else the placeholder stays a placeholder.
    let elsewhere = ok(
        &sandbox,
        &format!(
            "curl -sS --max-time 20 -H \"Authorization: Bearer $GITHUB_TOKEN\" {}",
            url(other.port())
        ),
    )
    .await;
    assert_eq!(elsewhere, format!("Bearer {placeholder}"));
    // The real value is nowhere in the guest: files, every process's
    // environment and command line (searched as guest root, with a pattern
    // that does not match itself, so the search does not bring it in).
    let pattern = format!("{}[{}]", &real[..real.len() - 1], &real[real.len() - 1..]);
    let search = sandbox
        .exec(
            Exec::shell(format!(
                "grep -rslI --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev -e '{pattern}' / ; \
                 for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do tr '\\0' '\\n' < $f 2>/dev/null; done | grep -c -e '{pattern}'"
            ))
            .timeout(Duration::from_secs(300)),
        )
        .await
        .unwrap();
    assert_eq!(
        search.stdout_text().trim(),
        "0",
        "the real value is in the guest: {}{}",
        search.stdout_text(),
        search.stderr_text()
    );
    // The same scan does find what is there: the placeholder.
    let control = ok(
        &sandbox,
        &format!(
            "for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f 2>/dev/null; done | grep -c -e '{}'",
            &placeholder[..placeholder.len() - 1]
        ),
    )
    .await;
    assert!(control.trim().parse::<u32>().unwrap() >= 1, "{control}");
    // Nor in what the host reports.
    let mut trail = sandbox.network_events().unwrap();
    ok(
        &sandbox,
        &format!("curl -sS -H \"X: $GITHUB_TOKEN\" {}", url(bound.port())),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = serde_json::to_string(&drain(&mut trail)).unwrap();
    assert!(!events.contains(real), "{events}");
    assert!(!format!("{:?}", sandbox_config_debug(real)).contains(real));
    sandbox.shutdown().await.unwrap();
}

fn sandbox_config_debug(real: &str) -> String {
    let config = Sandbox::builder().secret("T", real, &["api.example.com"]);
    format!("{config:?} {}", serde_json::to_string(&config).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_goes_where_a_udp_rule_allows_and_nowhere_else() {
    let (_registry, image) = python_image().await;
    let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = echo.send_to(&reply, from).await;
        }
    });
    // A port whose rule opens TCP only.
    let tcp_only = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp_only_port = tcp_only.local_addr().unwrap().port();
    let policy = NetworkPolicy::rules(
        &[
            format!("host.voidbox.internal:{port}/udp"),
            format!("host.voidbox.internal:{tcp_only_port}"),
        ],
        &[] as &[&str],
    )
    .unwrap();
    let sandbox = Sandbox::builder()
        .image(&image)
        .network(policy)
        .build()
        .await
        .unwrap();
    let mut trail = sandbox.network_events().unwrap();
    let out = ok(
        &sandbox,
        &format!(
            "python3 -c \"import socket\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(10)\n\
s.connect(('host.voidbox.internal', {port}))\n\
for i in range(3):\n    s.send(b'ping%d' % i); print(s.recv(100).decode())\n\
t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); t.settimeout(5)\n\
t.connect(('host.voidbox.internal', {tcp_only_port}))\n\
t.send(b'x')\n\
try:\n    t.recv(10); print('answered')\n\
except ConnectionRefusedError:\n    print('refused')\n\
except socket.timeout:\n    print('timeout')\""
        ),
    )
    .await;
    assert_eq!(out, "echo:ping0\necho:ping1\necho:ping2\nrefused\n");
    let mut buf = [0u8; 16];
    let stray =
        tokio::time::timeout(Duration::from_millis(200), tcp_only.recv_from(&mut buf)).await;
    assert!(stray.is_err(), "nothing reached the TCP-only port");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = drain(&mut trail);
    let udp = |allowed: bool, p: u16| {
        find(&events, |e| {
            e.kind == NetworkEventKind::Udp && e.allowed == allowed && e.port == p
        })
        .is_some()
    };
    assert!(udp(true, port), "{events:?}");
    assert!(udp(false, tcp_only_port), "{events:?}");
    sandbox.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_still_open_when_the_sandbox_stops_is_in_the_trail() {
    let (_registry, image) = python_image().await;
    // A server that never closes: the guest's side ends when its process
    // is killed at shutdown (a FIN may still get out), the host's stays
    // open, so the connection is open when the sandbox stops.
    let server = silent_server().await;
    let policy = NetworkPolicy::rules(
        &[format!("host.voidbox.internal:{}", server.port())],
        &[] as &[&str],
    )
    .unwrap();
    let sandbox = Sandbox::builder()
        .image(&image)
        .network(policy)
        .build()
        .await
        .unwrap();
    let mut trail = sandbox.network_events().unwrap();
    // A process that connects, says so, and holds the connection open.
    ok(
        &sandbox,
        &format!(
            "setsid python3 -c 'import socket,time; s=socket.create_connection((\"host.voidbox.internal\",{})); \
             open(\"/tmp/up\",\"w\").close(); time.sleep(600)' </dev/null >/dev/null 2>&1 & \
             for i in $(seq 300); do [ -e /tmp/up ] && exit 0; sleep 0.1; done; exit 1",
            server.port()
        ),
    )
    .await;
    sandbox.shutdown().await.unwrap();
    let events = drain(&mut trail);
    let held = find(&events, |e| {
        e.kind == NetworkEventKind::Tcp && e.port == server.port()
    })
    .unwrap_or_else(|| panic!("no record of the open connection: {events:?}"));
    assert!(held.allowed, "{held:?}");
    assert_eq!(
        held.error.as_deref(),
        Some("the sandbox stopped with the connection open"),
        "{held:?}"
    );
}
