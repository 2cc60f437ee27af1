//! Inet sockets beyond connections, listeners and plain UDP (issue 14), checked from inside
//! the restored process (the `socks` workload): TCP sockets not connected (unbound, bound,
//! after a failed connect), ICMP ping sockets, raw sockets, UDP-lite sockets and multicast
//! memberships; and the closed TCP sockets refused at dump.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cryo_tests::socks::{shut_for_reading_survives_restore, shut_for_writing_survives_restore};
use cryo_tests::tcp_peer::ConnectInProgress;
use cryo_tests::{cryo_bin, Workload};

/// A fresh `socks` workload.
fn socks() -> Workload {
    cryo_bin();
    Workload::spawn("socks", &[])
}

/// "LEVEL OPT" of an option, for `getopt` / `setopt`.
fn opt(level: i32, name: i32) -> String {
    format!("{level} {name}")
}

/// Every option of `list` as the workload reads it on socket `s`.
fn read_opts(w: &Workload, s: &str, list: &[(i32, i32)]) -> Vec<String> {
    list.iter()
        .map(|&(l, n)| w.cmd(&format!("getopt {s} {}", opt(l, n))))
        .collect()
}

/// Accepts one connection on `l` (blocking, bounded by a timeout) and reads what it sends.
fn accept_one(l: &TcpListener) -> String {
    l.set_nonblocking(false).unwrap();
    let (mut c, _) = l.accept().unwrap();
    c.set_read_timeout(Some(cryo_tests::CMD_TIMEOUT)).unwrap();
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Options set on the TCP sockets below (each differs from a fresh socket's).
fn tcp_options() -> Vec<(i32, i32, i32)> {
    vec![
        (libc::SOL_SOCKET, libc::SO_REUSEADDR, 1),
        (libc::SOL_SOCKET, libc::SO_REUSEPORT, 1),
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::SOL_SOCKET, libc::SO_PRIORITY, 3),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 77),
        (libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 5),
        (libc::IPPROTO_TCP, libc::TCP_FASTOPEN_CONNECT, 1),
    ]
}

fn set_tcp_options(w: &Workload, s: &str) -> Vec<(i32, i32)> {
    tcp_options()
        .into_iter()
        .map(|(l, n, v)| {
            assert_eq!(w.cmd(&format!("setopt {s} {} {v}", opt(l, n))), "ok");
            (l, n)
        })
        .collect()
}

#[test]
fn an_unbound_tcp_socket_comes_back_unbound_with_its_options_and_connects() {
    let mut w = socks();
    let s = w.cmd("socket inet stream 6");
    let list = set_tcp_options(&w, &s);
    let before = read_opts(&w, &s, &list);
    assert_eq!(w.cmd(&format!("name {s}")), "0.0.0.0:0");
    w.dump_and_restore();
    assert_eq!(w.cmd(&format!("name {s}")), "0.0.0.0:0", "still unbound");
    assert_eq!(read_opts(&w, &s, &list), before, "options");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = l.local_addr().unwrap();
    assert_eq!(w.cmd(&format!("connect-inet {s} {to}")), "ok");
    assert_eq!(w.cmd(&format!("send {s} hello")), "ok");
    assert_eq!(accept_one(&l), "hello", "the restored socket connected");
    w.kill_restored();
}

/// A connection made by a socket with TCP_FASTOPEN_CONNECT keeps the flag, which the kernel
/// takes only before a connect: refused at dump naming pid, fd and the option (it came back
/// without it before).
#[test]
fn a_connection_with_tcp_fastopen_connect_is_refused_naming_the_option() {
    let w = socks();
    let s = w.cmd("socket inet stream 6");
    let tfo = opt(libc::IPPROTO_TCP, libc::TCP_FASTOPEN_CONNECT);
    assert_eq!(w.cmd(&format!("setopt {s} {tfo} 1")), "ok");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = l.local_addr().unwrap();
    assert_eq!(w.cmd(&format!("connect-inet {s} {to}")), "ok");
    assert_eq!(w.cmd(&format!("send {s} hello")), "ok");
    // The test's end stays open: the workload's is an established connection.
    let (mut peer, _) = l.accept().unwrap();
    let mut hello = [0u8; 5];
    peer.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"hello");
    w.dump(&w.path("img"), &["--tcp-established"])
        .assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_mentions(&format!("fd {s}"))
        .assert_stderr_mentions("TCP_FASTOPEN_CONNECT");
    w.assert_untouched();
    assert_eq!(w.cmd(&format!("send {s} again")), "ok");
    let mut again = [0u8; 5];
    peer.read_exact(&mut again).unwrap();
    assert_eq!(&again, b"again", "the connection still carries bytes");
}

/// A TCP socket of family `fam` bound to `addr` (with the options of [`tcp_options`], and
/// IPV6_V6ONLY for inet6), dumped, restored, then listening: its name and options are
/// checked from inside, and a client connects to it.
fn bound_then_listening(fam: &str, addr: &str) {
    let mut w = socks();
    let s = w.cmd(&format!("socket {fam} stream 6"));
    let mut list = set_tcp_options(&w, &s);
    if fam == "inet6" {
        let v6only = opt(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY);
        assert_eq!(w.cmd(&format!("setopt {s} {v6only} 1")), "ok");
        list.push((libc::IPPROTO_IPV6, libc::IPV6_V6ONLY));
    }
    assert_eq!(w.cmd(&format!("bind-inet {s} {addr}")), "ok");
    let name = w.cmd(&format!("name {s}"));
    let before = read_opts(&w, &s, &list);
    assert!(!name.ends_with(":0"), "{name}");
    w.dump_and_restore();
    assert_eq!(w.cmd(&format!("name {s}")), name, "same address and port");
    assert_eq!(read_opts(&w, &s, &list), before, "options");
    assert_eq!(w.cmd(&format!("listen {s}")), "ok");
    let mut c = TcpStream::connect(name.as_str()).unwrap();
    std::io::Write::write_all(&mut c, b"x").unwrap();
    let a = w.cmd(&format!("accept {s}"));
    assert_eq!(
        w.cmd(&format!("recv-wait {a}")),
        "x",
        "accepted on the port"
    );
    w.kill_restored();
}

#[test]
fn a_bound_ipv4_tcp_socket_keeps_its_port_and_options_and_listens_after_restore() {
    bound_then_listening("inet", "127.0.0.1:0");
}

#[test]
fn a_bound_ipv6_only_tcp_socket_keeps_its_port_and_options_and_listens_after_restore() {
    bound_then_listening("inet6", "[::1]:0");
}

/// A socket of the workload bound to loopback and not listening: its address refuses
/// connections. Returns (fd, address).
fn refusing_port(w: &Workload, fam: &str) -> (String, String) {
    let r = w.cmd(&format!("socket {fam} stream 6"));
    let addr = if fam == "inet" {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    assert_eq!(w.cmd(&format!("bind-inet {r} {addr}")), "ok");
    let name = w.cmd(&format!("name {r}"));
    (r, name)
}

fn after_a_failed_connect(fam: &str) {
    let mut w = socks();
    let (_r, refusing) = refusing_port(&w, fam);
    let s = w.cmd(&format!("socket {fam} stream 6"));
    assert!(
        w.cmd(&format!("connect-inet {s} {refusing}"))
            .contains("os error 111"),
        "ECONNREFUSED"
    );
    // The port the connect took stays in the name, no longer held.
    let name = w.cmd(&format!("name {s}"));
    assert!(!name.ends_with(":0"), "{name}");
    assert_eq!(w.cmd(&format!("error {s}")), "0");
    w.dump_and_restore();
    assert_eq!(w.cmd(&format!("name {s}")), name, "the same name");
    assert_eq!(w.cmd(&format!("error {s}")), "0", "no pending error");
    assert!(
        w.cmd(&format!("connect-inet {s} {refusing}"))
            .contains("os error 111"),
        "the bound socket still refuses"
    );
    let l = TcpListener::bind(if fam == "inet" {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    })
    .unwrap();
    let to = l.local_addr().unwrap();
    assert_eq!(w.cmd(&format!("connect-inet {s} {to}")), "ok");
    assert_eq!(w.cmd(&format!("send {s} again")), "ok");
    assert_eq!(accept_one(&l), "again", "connect works again");
    w.kill_restored();
}

#[test]
fn an_ipv4_tcp_socket_whose_connect_failed_keeps_its_name_and_connects_again() {
    after_a_failed_connect("inet");
}

#[test]
fn an_ipv6_tcp_socket_whose_connect_failed_keeps_its_name_and_connects_again() {
    after_a_failed_connect("inet6");
}

/// A non-blocking connect of `s` to `refusing`, until its failure shows (poll: err).
fn connect_and_fail_in_background(w: &Workload, s: &str, refusing: &str) {
    assert_eq!(w.cmd(&format!("nonblock {s}")), "ok");
    let r = w.cmd(&format!("connect-inet {s} {refusing}"));
    assert!(
        r.contains("os error 115") || r.contains("os error 111"),
        "{r}"
    );
    // The reset comes over loopback at once; the poll is bounded anyway.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w.cmd(&format!("poll {s}")).contains("err") {
        assert!(Instant::now() < deadline, "the connect did not fail");
    }
}

#[test]
fn a_closed_tcp_socket_with_a_pending_error_is_refused_naming_pid_fd_and_so_error() {
    let w = socks();
    let (_r, refusing) = refusing_port(&w, "inet");
    let s = w.cmd("socket inet stream 6");
    connect_and_fail_in_background(&w, &s, &refusing);
    w.assert_dump_refused(&s, "pending error (SO_ERROR");
    assert_eq!(
        w.cmd(&format!("error {s}")),
        libc::ECONNREFUSED.to_string(),
        "the error is still pending after the failed dump"
    );
}

#[test]
fn a_tcp_socket_whose_failed_connect_was_not_reported_is_refused_and_left_as_it_was() {
    let w = socks();
    let (_r, refusing) = refusing_port(&w, "inet");
    let s = w.cmd("socket inet stream 6");
    connect_and_fail_in_background(&w, &s, &refusing);
    // SO_ERROR read: no error left, but the socket is still "connecting": its next
    // connect() fails with ECONNABORTED.
    assert_eq!(w.cmd(&format!("error {s}")), libc::ECONNREFUSED.to_string());
    w.assert_dump_refused(&s, "connect attempt");
    assert!(
        w.cmd(&format!("connect-inet {s} {refusing}"))
            .contains("os error 103"),
        "the socket was left connecting (ECONNABORTED)"
    );
}

/// Lets this host's root make ICMP ping sockets (net.ipv4.ping_group_range, which covers
/// ICMPv6 too) while it lives, then puts the range back. One at a time: the tests that use
/// it run one after the other.
struct PingGroups {
    original: String,
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static PING_TESTS: Mutex<()> = Mutex::new(());
const PING_RANGE_FILE: &str = "/proc/sys/net/ipv4/ping_group_range";

impl PingGroups {
    fn allow() -> Self {
        let guard = PING_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let original = std::fs::read_to_string(PING_RANGE_FILE).unwrap();
        std::fs::write(PING_RANGE_FILE, "0 0").unwrap();
        PingGroups {
            original,
            _one_at_a_time: guard,
        }
    }

    /// Back to the range no group is in.
    fn forbid(&self) {
        std::fs::write(PING_RANGE_FILE, "1 0").unwrap();
    }
}

impl Drop for PingGroups {
    fn drop(&mut self) {
        let _ = std::fs::write(PING_RANGE_FILE, self.original.trim());
    }
}

fn ping_socket_pings(fam: &str, proto: i32, to: &str) {
    let _allowed = PingGroups::allow();
    let mut w = socks();
    let s = w.cmd(&format!("socket {fam} dgram {proto}"));
    let ttl = if fam == "inet" {
        opt(libc::IPPROTO_IP, libc::IP_TTL)
    } else {
        opt(libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS)
    };
    assert_eq!(w.cmd(&format!("setopt {s} {ttl} 9")), "ok");
    assert_eq!(w.cmd(&format!("ping-echo {s} {to}")), "reply seq 7");
    // The first send gave it an identifier: the port of its name.
    let name = w.cmd(&format!("name {s}"));
    w.dump_and_restore();
    assert_eq!(w.cmd(&format!("name {s}")), name, "the same identifier");
    assert_eq!(w.cmd(&format!("getopt {s} {ttl}")), "9");
    assert_eq!(
        w.cmd(&format!(
            "getopt {s} {}",
            opt(libc::SOL_SOCKET, libc::SO_PROTOCOL)
        )),
        proto.to_string()
    );
    assert_eq!(
        w.cmd(&format!("ping-echo {s} {to}")),
        "reply seq 7",
        "the restored ping socket pings"
    );
    w.kill_restored();
}

#[test]
fn an_icmp_ping_socket_still_pings_after_restore() {
    ping_socket_pings("inet", libc::IPPROTO_ICMP, "127.0.0.1:0");
}

#[test]
fn an_icmpv6_ping_socket_still_pings_after_restore() {
    ping_socket_pings("inet6", libc::IPPROTO_ICMPV6, "[::1]:0");
}

/// SOL_RAW / ICMP_FILTER.
const ICMP_FILTER: (i32, i32) = (255, 1);

#[test]
fn a_raw_icmp_socket_keeps_its_filter_and_hears_echo_replies_after_restore() {
    // Its raw sockets hear every ICMP and UDP packet of their namespace: none of other tests'.
    cryo_tests::own_netns();
    let mut w = socks();
    let s = w.cmd(&format!("socket inet raw {}", libc::IPPROTO_ICMP));
    let filter = opt(ICMP_FILTER.0, ICMP_FILTER.1);
    // Echo requests (type 8) filtered out: the socket reads the replies only.
    assert_eq!(w.cmd(&format!("setopt {s} {filter} {}", 1 << 8)), "ok");
    let hdr = w.cmd("socket inet raw 17");
    let hdrincl = opt(libc::IPPROTO_IP, libc::IP_HDRINCL);
    assert_eq!(w.cmd(&format!("setopt {hdr} {hdrincl} 1")), "ok");
    assert_eq!(w.cmd(&format!("bind-inet {hdr} 127.0.0.1:0")), "ok");
    let hdr_name = w.cmd(&format!("name {hdr}"));
    assert_eq!(w.cmd(&format!("ping-echo {s} 127.0.0.1:0")), "reply seq 7");
    w.dump_and_restore();
    assert_eq!(w.cmd(&format!("getopt {s} {filter}")), (1 << 8).to_string());
    assert_eq!(
        w.cmd(&format!(
            "getopt {s} {}",
            opt(libc::SOL_SOCKET, libc::SO_TYPE)
        )),
        libc::SOCK_RAW.to_string()
    );
    assert_eq!(
        w.cmd(&format!("ping-echo {s} 127.0.0.1:0")),
        "reply seq 7",
        "the restored raw socket hears the reply"
    );
    assert_eq!(w.cmd(&format!("getopt {hdr} {hdrincl}")), "1");
    assert_eq!(w.cmd(&format!("name {hdr}")), hdr_name);
    assert_eq!(
        w.cmd(&format!(
            "getopt {hdr} {}",
            opt(libc::SOL_SOCKET, libc::SO_PROTOCOL)
        )),
        "17"
    );
    w.kill_restored();
}

/// SOL_UDPLITE and its checksum coverage options.
const SOL_UDPLITE: i32 = 136;
const UDPLITE_SEND_CSCOV: i32 = 10;
const UDPLITE_RECV_CSCOV: i32 = 11;

#[test]
fn a_udp_lite_socket_keeps_its_coverage_and_receives_after_restore() {
    let mut w = socks();
    let s = w.cmd(&format!("socket inet dgram {}", libc::IPPROTO_UDPLITE));
    let send = opt(SOL_UDPLITE, UDPLITE_SEND_CSCOV);
    let recv = opt(SOL_UDPLITE, UDPLITE_RECV_CSCOV);
    assert_eq!(w.cmd(&format!("setopt {s} {send} 12")), "ok");
    assert_eq!(w.cmd(&format!("setopt {s} {recv} 20")), "ok");
    assert_eq!(w.cmd(&format!("bind-inet {s} 127.0.0.1:0")), "ok");
    let name = w.cmd(&format!("name {s}"));
    w.dump_and_restore();
    assert_eq!(w.cmd(&format!("name {s}")), name);
    assert_eq!(w.cmd(&format!("getopt {s} {send}")), "12");
    assert_eq!(w.cmd(&format!("getopt {s} {recv}")), "20");
    assert_eq!(
        w.cmd(&format!(
            "getopt {s} {}",
            opt(libc::SOL_SOCKET, libc::SO_PROTOCOL)
        )),
        libc::IPPROTO_UDPLITE.to_string()
    );
    // A sender covering all of its datagram (coverage 0) passes the receiver's minimum.
    let c = w.cmd(&format!("socket inet dgram {}", libc::IPPROTO_UDPLITE));
    assert_eq!(w.cmd(&format!("sendto-inet {c} {name} lite")), "ok");
    assert_eq!(w.cmd(&format!("recv-wait {s}")), "lite");
    w.kill_restored();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The index of `lo`.
fn lo_index() -> u32 {
    std::fs::read_to_string("/sys/class/net/lo/ifindex")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A sockaddr_in of `ip` (port 0) in a sockaddr_storage, as bytes.
fn storage(ip: [u8; 4]) -> Vec<u8> {
    let mut b = vec![0u8; 128];
    b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    b[4..8].copy_from_slice(&ip);
    b
}

/// From inside the workload: a UDP socket bound to `from`, sending `msg` to `group:port`
/// over lo.
fn send_to_group(w: &Workload, from: &str, group: &str, port: &str, msg: &str) {
    let c = w.cmd("socket inet dgram 17");
    assert_eq!(w.cmd(&format!("bind-inet {c} {from}:0")), "ok");
    let mcast_if = opt(libc::IPPROTO_IP, libc::IP_MULTICAST_IF);
    assert_eq!(
        w.cmd(&format!(
            "setopt-raw {c} {mcast_if} {}",
            hex(&[127, 0, 0, 1])
        )),
        "ok"
    );
    assert_eq!(
        w.cmd(&format!("sendto-inet {c} {group}:{port} {msg}")),
        "ok"
    );
    assert_eq!(w.cmd(&format!("close {c}")), "ok");
}

/// A UDP socket of the workload bound to the wildcard address; (fd, port).
fn udp_receiver(w: &Workload) -> (String, String) {
    let r = w.cmd("socket inet dgram 17");
    assert_eq!(w.cmd(&format!("bind-inet {r} 0.0.0.0:0")), "ok");
    let port = w.cmd(&format!("name {r}"));
    let port = port.rsplit(':').next().unwrap().to_string();
    (r, port)
}

#[test]
fn a_udp_socket_joined_to_a_group_on_lo_receives_the_group_after_restore() {
    let mut w = socks();
    let (r, port) = udp_receiver(&w);
    let group = [239, 77, 14, 1];
    // struct ip_mreqn: the group, no address, the interface index.
    let mut mreqn = group.to_vec();
    mreqn.extend_from_slice(&[0; 4]);
    mreqn.extend_from_slice(&(lo_index() as i32).to_ne_bytes());
    let add = opt(libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP);
    assert_eq!(
        w.cmd(&format!("setopt-raw {r} {add} {}", hex(&mreqn))),
        "ok"
    );
    send_to_group(&w, "127.0.0.1", "239.77.14.1", &port, "before");
    assert_eq!(w.cmd(&format!("recv-wait {r}")), "before");
    w.dump_and_restore();
    send_to_group(&w, "127.0.0.1", "239.77.14.1", &port, "after");
    assert_eq!(
        w.cmd(&format!("recv-wait {r}")),
        "after",
        "the restored socket is still a member"
    );
    w.kill_restored();
}

#[test]
fn a_source_specific_membership_keeps_its_source_filter_after_restore() {
    let mut w = socks();
    let (r, port) = udp_receiver(&w);
    let group = [239, 77, 14, 2];
    // struct group_source_req: the interface, then the group and the source as
    // sockaddr_storage (at offsets 8 and 136).
    let mut req = vec![0u8; 8];
    req[..4].copy_from_slice(&lo_index().to_ne_bytes());
    req.extend(storage(group));
    req.extend(storage([127, 0, 0, 2]));
    let join = opt(libc::IPPROTO_IP, libc::MCAST_JOIN_SOURCE_GROUP);
    assert_eq!(w.cmd(&format!("setopt-raw {r} {join} {}", hex(&req))), "ok");
    send_to_group(&w, "127.0.0.1", "239.77.14.2", &port, "other");
    send_to_group(&w, "127.0.0.2", "239.77.14.2", &port, "source");
    assert_eq!(w.cmd(&format!("recv-wait {r}")), "source");
    w.dump_and_restore();
    send_to_group(&w, "127.0.0.1", "239.77.14.2", &port, "other");
    send_to_group(&w, "127.0.0.2", "239.77.14.2", &port, "source");
    assert_eq!(
        w.cmd(&format!("recv-wait {r}")),
        "source",
        "only the included source is heard"
    );
    w.kill_restored();
}

#[test]
fn a_raw_icmpv6_socket_keeps_its_type_filter_and_hears_echo_replies_after_restore() {
    let mut w = socks();
    let s = w.cmd(&format!("socket inet6 raw {}", libc::IPPROTO_ICMPV6));
    // ICMP6_FILTER (IPPROTO_ICMPV6 1): echo requests (type 128) blocked, so the socket reads
    // the replies to its own pings only.
    let mut filter = [0u8; 32];
    filter[128 / 8] = 1;
    let option = opt(libc::IPPROTO_ICMPV6, 1);
    let set = format!("setopt-raw {s} {option} {}", hex(&filter));
    assert_eq!(w.cmd(&set), "ok");
    let get = format!("getopt-raw {s} {option} 32");
    let before = w.cmd(&get);
    assert_eq!(w.cmd(&format!("ping-echo {s} [::1]:0")), "reply seq 7");
    w.dump_and_restore();
    assert_eq!(w.cmd(&get), before, "the filter read from inside");
    assert_eq!(
        w.cmd(&format!("ping-echo {s} [::1]:0")),
        "reply seq 7",
        "the restored raw socket hears the reply, not its request"
    );
    w.kill_restored();
}

#[test]
fn a_bound_tcp_socket_shut_down_before_any_connection_is_refused() {
    let w = socks();
    let s = w.cmd("socket inet stream 6");
    assert_eq!(w.cmd(&format!("bind-inet {s} 127.0.0.1:0")), "ok");
    // ENOTCONN, but the socket is marked shut all the same.
    assert!(w.cmd(&format!("shut {s} wr")).contains("os error 107"));
    w.assert_dump_refused(&s, "shut down");
}

#[test]
fn a_bound_tcp_socket_shut_for_reading_only_before_any_connection_is_refused() {
    let w = socks();
    let s = w.cmd("socket inet stream 6");
    assert_eq!(w.cmd(&format!("bind-inet {s} 127.0.0.1:0")), "ok");
    assert!(w.cmd(&format!("shut {s} rd")).contains("os error 107"));
    // Not the closed socket a restore with --tcp-close leaves (shut both ways).
    w.assert_dump_refused(&s, "shut one way only");
}

#[test]
fn a_ping_socket_cryo_could_not_make_again_is_refused_at_dump() {
    let allowed = PingGroups::allow();
    let w = socks();
    let s = w.cmd(&format!("socket inet dgram {}", libc::IPPROTO_ICMP));
    assert_eq!(w.cmd(&format!("ping-echo {s} 127.0.0.1:0")), "reply seq 7");
    allowed.forbid();
    w.assert_dump_refused(&s, "ping_group_range");
    assert_eq!(
        w.cmd(&format!("ping-echo {s} 127.0.0.1:0")),
        "reply seq 7",
        "the original still pings"
    );
}

#[test]
fn leave_running_leaves_memberships_and_sockets_not_connected_as_they_were() {
    let w = socks();
    let (r, port) = udp_receiver(&w);
    let mut mreqn = vec![239, 77, 14, 3, 0, 0, 0, 0];
    mreqn.extend_from_slice(&(lo_index() as i32).to_ne_bytes());
    let add = opt(libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP);
    assert_eq!(
        w.cmd(&format!("setopt-raw {r} {add} {}", hex(&mreqn))),
        "ok"
    );
    let (_refusing_fd, refusing) = refusing_port(&w, "inet");
    let failed = w.cmd("socket inet stream 6");
    assert!(w
        .cmd(&format!("connect-inet {failed} {refusing}"))
        .contains("os error 111"));
    let names = |w: &Workload| {
        [&r, &failed]
            .iter()
            .map(|s| w.cmd(&format!("name {s}")))
            .collect::<Vec<_>>()
    };
    let before = names(&w);
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    assert_eq!(names(&w), before);
    send_to_group(&w, "127.0.0.1", "239.77.14.3", &port, "still");
    assert_eq!(w.cmd(&format!("recv-wait {r}")), "still", "still a member");
    assert_eq!(w.cmd(&format!("error {failed}")), "0");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = l.local_addr().unwrap();
    assert_eq!(w.cmd(&format!("connect-inet {failed} {to}")), "ok");
}

#[test]
fn an_ipv6_socket_keeps_its_ipv6_and_ipv4_memberships_with_their_filters() {
    let mut w = socks();
    let s = w.cmd("socket inet6 dgram 17");
    assert_eq!(w.cmd(&format!("bind-inet {s} [::]:0")), "ok");
    let lo = lo_index();
    // struct ipv6_mreq: the group, then the interface index.
    let mut mreq: Vec<u8> = "ff02::77:14"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec();
    mreq.extend_from_slice(&lo.to_ne_bytes());
    let join6 = opt(libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP);
    assert_eq!(
        w.cmd(&format!("setopt-raw {s} {join6} {}", hex(&mreq))),
        "ok"
    );
    // An IPv4 group too, excluding one source (IPv4 options of an IPv6 socket).
    let mut mreqn = vec![239, 77, 14, 4, 0, 0, 0, 0];
    mreqn.extend_from_slice(&(lo as i32).to_ne_bytes());
    let add = opt(libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP);
    assert_eq!(
        w.cmd(&format!("setopt-raw {s} {add} {}", hex(&mreqn))),
        "ok"
    );
    // struct ip_mreq_source: group, interface address, source.
    let block = opt(libc::IPPROTO_IP, libc::IP_BLOCK_SOURCE);
    let req = hex(&[239, 77, 14, 4, 127, 0, 0, 1, 127, 0, 0, 9]);
    assert_eq!(w.cmd(&format!("setopt-raw {s} {block} {req}")), "ok");
    let v6 = format!("msfilter {s} {lo} ff02::77:14");
    let v4 = format!("msfilter {s} {lo} 239.77.14.4");
    assert_eq!(w.cmd(&v6), "exclude");
    assert_eq!(w.cmd(&v4), "exclude 127.0.0.9");
    w.dump_and_restore();
    assert_eq!(w.cmd(&v6), "exclude", "the IPv6 group, joined again");
    assert_eq!(
        w.cmd(&v4),
        "exclude 127.0.0.9",
        "the IPv4 group, its source blocked"
    );
    w.kill_restored();
}

#[test]
fn a_udp_lite_socket_shut_for_writing_still_refuses_to_send() {
    let mut w = socks();
    let s = w.cmd(&format!("socket inet dgram {}", libc::IPPROTO_UDPLITE));
    assert_eq!(w.cmd(&format!("bind-inet {s} 127.0.0.1:0")), "ok");
    let name = w.cmd(&format!("name {s}"));
    assert_eq!(w.cmd(&format!("connect-inet {s} {name}")), "ok");
    shut_for_writing_survives_restore(&mut w, &s);
}

#[test]
fn a_raw_socket_shut_for_reading_stays_shut() {
    let mut w = socks();
    let s = w.cmd(&format!("socket inet raw {}", libc::IPPROTO_ICMP));
    shut_for_reading_survives_restore(&mut w, &s);
}

/// An IPv4 raw socket of protocol 58 (ICMPv6's number, zdtm's socket-raw makes one of each
/// protocol): it has no ICMPv6 type filter to read. Before: the dump failed on it
/// (`getsockopt ICMP6_FILTER: EOPNOTSUPP`).
#[test]
fn an_ipv4_raw_socket_of_protocol_icmpv6_comes_back_with_its_protocol() {
    let mut w = socks();
    let s = w.cmd(&format!("socket inet raw {}", libc::IPPROTO_ICMPV6));
    let protocol = opt(libc::SOL_SOCKET, libc::SO_PROTOCOL);
    let domain = opt(libc::SOL_SOCKET, libc::SO_DOMAIN);
    assert_eq!(w.cmd(&format!("getopt {s} {protocol}")), "58");
    w.dump_and_restore();
    assert_eq!(w.cmd(&format!("getopt {s} {protocol}")), "58");
    assert_eq!(
        w.cmd(&format!("getopt {s} {domain}")),
        libc::AF_INET.to_string()
    );
    w.kill_restored();
}

#[test]
fn a_connect_in_progress_comes_back_from_the_same_port_and_completes() {
    cryo_bin();
    let mut w = Workload::spawn("tcp", &["127.0.0.1:0"]);
    let connect = ConnectInProgress::start(&w);
    let local = connect.local.clone();
    w.dump_and_restore_established();
    assert_eq!(w.cmd("state 0"), "SYN_SENT", "still connecting");
    assert_eq!(w.cmd("local 0"), local, "from the same port");
    // Room in the queue: the next SYN is answered.
    let mut accepted = connect.complete(&w);
    assert_eq!(w.cmd("write 0 5 1"), "5");
    let mut got = [0u8; 5];
    accepted.read_exact(&mut got).unwrap();
    assert_eq!(got.to_vec(), cryo_tests::protocol::pattern(5, 1));
    w.kill_restored();
}

/// A connected UDP socket that got an ICMP port unreachable: its error (SO_ERROR
/// ECONNREFUSED) pending, which poll shows (POLLERR) and the next call returns. Refused,
/// naming pid, fd and the error, which the process still reads. Before: dumped and restored
/// without it (POLLERR 0x8 -> 0, the send that should fail succeeding).
#[test]
fn a_udp_socket_with_an_error_pending_is_refused_and_keeps_it() {
    let w = socks();
    let gone = w.cmd("socket inet dgram 0");
    assert_eq!(w.cmd(&format!("bind-inet {gone} 127.0.0.1:0")), "ok");
    let closed = w.cmd(&format!("name {gone}"));
    assert_eq!(w.cmd(&format!("close {gone}")), "ok");
    let s = w.cmd("socket inet dgram 0");
    assert_eq!(w.cmd(&format!("connect-inet {s} {closed}")), "ok");
    assert_eq!(w.cmd(&format!("send {s} x")), "ok");
    assert_eq!(w.cmd(&format!("error-wait {s}")), "0x8", "POLLERR");
    w.dump(&w.path("img"), &[])
        .assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_mentions(&format!("fd {s}"))
        .assert_stderr_mentions("error pending (SO_ERROR");
    w.assert_untouched();
    let so_error = opt(libc::SOL_SOCKET, libc::SO_ERROR);
    assert_eq!(
        w.cmd(&format!("getopt {s} {so_error}")),
        libc::ECONNREFUSED.to_string(),
        "still pending"
    );
}

/// A listener with TCP_DEFER_ACCEPT and a client whose handshake completed, its first data
/// not sent yet: the connection waits as a request socket, not in the accept queue, and a
/// restored listener would not know it (the client's data would go unanswered). Refused as a
/// temporary state naming pid, fd and TCP_DEFER_ACCEPT; the listener accepts the connection
/// once the data came. Before: dumped, the connection silently lost.
#[test]
fn a_deferred_accept_connection_waiting_for_data_is_refused_as_temporary() {
    use std::io::{Read, Write};
    let w = socks();
    let listener = w.cmd("socket inet stream 0");
    assert_eq!(w.cmd(&format!("bind-inet {listener} 127.0.0.1:0")), "ok");
    let defer = opt(libc::SOL_TCP, libc::TCP_DEFER_ACCEPT);
    assert_eq!(w.cmd(&format!("setopt {listener} {defer} 30")), "ok");
    assert_eq!(w.cmd(&format!("listen {listener}")), "ok");
    let at = w.cmd(&format!("name {listener}"));
    let mut client = std::net::TcpStream::connect(&at).unwrap();
    w.dump(&w.path("img"), &["--tcp-established"])
        .assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_mentions(&format!("fd {listener}"))
        .assert_stderr_mentions("wait for their first data (TCP_DEFER_ACCEPT)");
    w.assert_untouched();
    client.write_all(b"first").unwrap();
    assert_eq!(w.cmd(&format!("readable {listener}")), "ok");
    let accepted = w.cmd(&format!("accept {listener}"));
    assert_eq!(w.cmd(&format!("recv-wait {accepted}")), "first");
    assert_eq!(w.cmd(&format!("send {accepted} back")), "ok");
    let mut got = [0u8; 4];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"back");
}

/// Urgent data (MSG_OOB) in a connection's receive queue, its byte unread or read out of
/// band already: a peek stops at its mark, and restored the queue would hold it as ordinary
/// bytes. Refused, naming pid, fd and the urgent data, the connection left as it was (the
/// bytes before the mark, the urgent byte, the bytes after). Before: dumped with the 3 bytes
/// before the mark only, the rest lost, recv(MSG_OOB) EINVAL after restore.
#[test]
fn urgent_data_in_a_receive_queue_is_refused_naming_it_and_left_as_it_was() {
    let w = socks();
    let listener = w.cmd("socket inet stream 0");
    assert_eq!(w.cmd(&format!("bind-inet {listener} 127.0.0.1:0")), "ok");
    assert_eq!(w.cmd(&format!("listen {listener}")), "ok");
    let at = w.cmd(&format!("name {listener}"));
    let client = w.cmd("socket inet stream 0");
    assert_eq!(w.cmd(&format!("connect-inet {client} {at}")), "ok");
    let server = w.cmd(&format!("accept {listener}"));
    assert_eq!(w.cmd(&format!("send {client} abc")), "ok");
    assert_eq!(w.cmd(&format!("send-oob {client} X")), "ok");
    assert_eq!(w.cmd(&format!("send {client} def")), "ok");
    for read_first in [false, true] {
        // First with the urgent byte unread, then read out of band.
        w.dump(&w.path("img"), &["--tcp-established"])
            .assert_refused()
            .assert_stderr_has_word(&w.pid().to_string())
            .assert_stderr_mentions(&format!("fd {server}"))
            .assert_stderr_mentions("urgent data (MSG_OOB)");
        w.assert_untouched();
        if !read_first {
            assert_eq!(w.cmd(&format!("recv-oob {server}")), "X", "the urgent byte");
        }
    }
    // A read stops at the mark, the next goes on after it (the urgent byte was read).
    let mut read = w.cmd(&format!("recv {server}"));
    while read != "abc|def" {
        assert!(["abc", "empty"].contains(&read.as_str()), "{read:?}");
        std::thread::yield_now();
        let more = w.cmd(&format!("recv {server}"));
        if more != "empty" {
            read = if read == "empty" {
                more
            } else {
                format!("{read}|{more}")
            };
        }
    }
}

#[test]
fn a_connected_raw_socket_still_sends_without_an_address() {
    let mut w = socks();
    // IPPROTO_RAW's peer is not in getpeername: the restore reads it from /proc/net/raw.
    let s = w.cmd("socket inet raw 253");
    // Bound and connected to an address of lo of this test's own: a raw socket hears every
    // packet of its protocol, and other tests send some from 127.0.0.1; connected, it hears
    // only its peer's (the kernel matches both addresses).
    let pid = std::process::id();
    let own = format!(
        "127.{}.{}.{}",
        100 + pid % 100,
        (pid >> 8) % 256,
        1 + pid % 250
    );
    assert_eq!(w.cmd(&format!("bind-inet {s} {own}:0")), "ok");
    assert_eq!(w.cmd(&format!("connect-inet {s} {own}:0")), "ok");
    let name = w.cmd(&format!("name {s}"));
    assert_eq!(w.cmd(&format!("send {s} experiment")), "ok");
    // Over lo the socket hears its own packet: read it, a raw socket's queue with datagrams
    // waiting is refused.
    let heard = w.cmd(&format!("recv-wait {s}"));
    assert!(heard.ends_with("experiment"), "{heard:?}");
    let unconnected = w.cmd("socket inet raw 253");
    assert!(
        w.cmd(&format!("send {unconnected} x"))
            .contains("os error 89"),
        "EDESTADDRREQ without a peer"
    );
    w.dump_and_restore();
    assert_eq!(w.cmd(&format!("name {s}")), name);
    assert_eq!(
        w.cmd(&format!("send {s} experiment")),
        "ok",
        "still connected"
    );
    assert!(w
        .cmd(&format!("send {unconnected} x"))
        .contains("os error 89"));
    w.kill_restored();
}

#[test]
fn a_udp_lite_socket_keeps_its_queued_datagrams_after_restore() {
    let mut w = socks();
    let lite = libc::IPPROTO_UDPLITE;
    let s = w.cmd(&format!("socket inet dgram {lite}"));
    let recv = opt(SOL_UDPLITE, UDPLITE_RECV_CSCOV);
    assert_eq!(w.cmd(&format!("setopt {s} {recv} 20")), "ok");
    assert_eq!(w.cmd(&format!("bind-inet {s} 127.0.0.1:0")), "ok");
    let to = w.cmd(&format!("name {s}"));
    let c = w.cmd(&format!("socket inet dgram {lite}"));
    assert_eq!(w.cmd(&format!("bind-inet {c} 127.0.0.2:0")), "ok");
    let from = w.cmd(&format!("name {c}"));
    assert_eq!(w.cmd(&format!("sendto-inet {c} {to} first-lite")), "ok");
    assert_eq!(w.cmd(&format!("sendto-inet {c} {to} second-lite")), "ok");
    w.dump_and_restore();
    assert_eq!(
        w.cmd(&format!("recvfrom {s}")),
        format!("first-lite from {from} | second-lite from {from}")
    );
    w.kill_restored();
}

#[test]
fn a_ping_socket_with_an_echo_reply_waiting_is_refused_naming_pid_fd_and_the_queue() {
    let _allowed = PingGroups::allow();
    let w = socks();
    let s = w.cmd(&format!("socket inet dgram {}", libc::IPPROTO_ICMP));
    assert_eq!(w.cmd(&format!("ping-send {s} 127.0.0.1:0")), "ok");
    w.assert_dump_refused(&s, "ping socket's receive queue");
    assert_ne!(
        w.cmd(&format!("recv {s}")),
        "empty",
        "the reply still waits"
    );
}

#[test]
fn a_raw_socket_with_datagrams_waiting_is_refused_naming_pid_fd_and_the_queue() {
    let w = socks();
    let s = w.cmd(&format!("socket inet raw {}", libc::IPPROTO_ICMP));
    // The raw ICMP socket hears the echo request and its reply.
    assert_eq!(w.cmd(&format!("ping-send {s} 127.0.0.1:0")), "ok");
    w.assert_dump_refused(&s, "raw socket (protocol 1)'s receive queue");
    let check = w.dump(&w.path("check"), &["--check-only"]);
    assert_eq!(check.status.code(), Some(2), "a temporary state: {check}");
    assert_ne!(
        w.cmd(&format!("recv {s}")),
        "empty",
        "the datagrams still wait"
    );
}

#[test]
fn a_udp_socket_with_a_multicast_datagram_waiting_is_refused_naming_pid_fd_and_the_group() {
    let w = socks();
    let (r, port) = udp_receiver(&w);
    let mut mreqn = vec![239, 77, 14, 9, 0, 0, 0, 0];
    mreqn.extend_from_slice(&(lo_index() as i32).to_ne_bytes());
    let add = opt(libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP);
    assert_eq!(
        w.cmd(&format!("setopt-raw {r} {add} {}", hex(&mreqn))),
        "ok"
    );
    send_to_group(&w, "127.0.0.1", "239.77.14.9", &port, "to-the-group");
    assert_eq!(w.cmd(&format!("readable {r}")), "ok");
    w.assert_dump_refused(&r, &format!("was sent to 239.77.14.9:{port}, a multicast"));
    assert_eq!(
        w.cmd(&format!("recv {r}")),
        "to-the-group",
        "the datagram still waits"
    );
}

/// A listener holding a TCP MD5 signature key (TCP_MD5SIG, as a BGP daemon sets for its
/// peer): no getsockopt reads keys back, so the dump refuses it, naming pid, fd and the keys
/// (it came back without them: its peers' signed segments dropped).
#[test]
fn a_tcp_listener_with_md5_signature_keys_is_refused_naming_pid_fd_and_the_keys() {
    cryo_bin();
    let w = Workload::spawn("socks", &[]);
    let fd = w.cmd("socket inet stream 6");
    // struct tcp_md5sig: the peer's sockaddr_storage (128 bytes), flags, prefix length, key
    // length (u16), ifindex (i32), the key (80 bytes).
    let mut md5 = vec![0u8; 216];
    md5[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    md5[4..8].copy_from_slice(&[127, 0, 0, 1]);
    md5[130..132].copy_from_slice(&4u16.to_ne_bytes());
    md5[136..140].copy_from_slice(b"abcd");
    let hex: String = md5.iter().map(|b| format!("{b:02x}")).collect();
    let set = format!(
        "setopt-raw {fd} {} {} {hex}",
        libc::IPPROTO_TCP,
        libc::TCP_MD5SIG
    );
    assert_eq!(w.cmd(&set), "ok");
    assert_eq!(w.cmd(&format!("bind-inet {fd} 127.0.0.1:0")), "ok");
    assert_eq!(w.cmd(&format!("listen {fd}")), "ok");
    w.assert_dump_refused(&fd, "TCP MD5 signature keys (TCP_MD5SIG)");
}

/// Two listeners on one port in a SO_REUSEPORT group, the option then cleared on the first
/// (zdtm socket-tcp-reuseport): both come back listening on the port, SO_REUSEPORT off on the
/// first and on on the second, and a client connects. Before, the restore bound the first
/// without the option beside the second: EADDRINUSE, after the dump had killed the process.
#[test]
fn a_listener_that_cleared_so_reuseport_after_joining_a_group_comes_back_in_it() {
    let mut w = socks();
    let reuseport = opt(libc::SOL_SOCKET, libc::SO_REUSEPORT);
    let first = w.cmd("socket inet stream 6");
    assert_eq!(w.cmd(&format!("setopt {first} {reuseport} 1")), "ok");
    assert_eq!(w.cmd(&format!("bind-inet {first} 127.0.0.1:0")), "ok");
    assert_eq!(w.cmd(&format!("listen {first}")), "ok");
    let name = w.cmd(&format!("name {first}"));
    let second = w.cmd("socket inet stream 6");
    assert_eq!(w.cmd(&format!("setopt {second} {reuseport} 1")), "ok");
    assert_eq!(w.cmd(&format!("bind-inet {second} {name}")), "ok");
    assert_eq!(w.cmd(&format!("listen {second}")), "ok");
    assert_eq!(w.cmd(&format!("setopt {first} {reuseport} 0")), "ok");
    w.dump_and_restore();
    for (s, flag) in [(&first, "0"), (&second, "1")] {
        assert_eq!(w.cmd(&format!("name {s}")), name, "socket {s} on the port");
        assert_eq!(
            w.cmd(&format!("getopt {s} {reuseport}")),
            flag,
            "socket {s}"
        );
    }
    TcpStream::connect(name.as_str()).expect("the group listens");
    w.kill_restored();
}

/// An MPTCP socket (IPPROTO_MPTCP) is refused at dump naming pid, fd and MPTCP. Before
/// 2026-12-07 the refusal called it "(sctp...)".
#[test]
fn an_mptcp_socket_is_refused_naming_mptcp() {
    cryo_bin();
    let w = Workload::spawn("socks", &[]);
    let fd = w.cmd("socket inet stream 262");
    if fd.contains("os error") {
        eprintln!("no MPTCP here: {fd}");
        return;
    }
    w.assert_dump_refused(&fd, "MPTCP inet socket of type 1 protocol 262");
}
