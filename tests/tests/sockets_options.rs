//! Socket options of inet sockets that came back lost or changed (found by the probes of
//! /work/probes/sockets: opts.c, tosprio*.c, behave_opts.c, shut.c, savedsyn.c), checked from
//! inside the restored process (the `socks` workload): the IPv4 and IPv6 options of UDP and
//! TCP sockets of both families, SO_PRIORITY beside IP_TOS, a connection's SO_PEEK_OFF
//! (through a `--leave-running` dump too), a connection shut for reading; and a connection
//! whose saved SYN is unread, refused at dump.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{cryo_bin, Workload};

/// A fresh `socks` workload.
fn socks() -> Workload {
    cryo_bin();
    Workload::spawn("socks", &[])
}

// Options not in libc for every target (linux/in.h, linux/in6.h, linux/tcp.h).
const IP_RECVFRAGSIZE: i32 = 25;
const IP_RECVERR_RFC4884: i32 = 26;
const IP_UNICAST_IF: i32 = 50;
const IP_LOCAL_PORT_RANGE: i32 = 51;
const IPV6_UNICAST_IF: i32 = 76;
const IPV6_FLOWINFO: i32 = 11;
const IPV6_FLOWINFO_SEND: i32 = 33;
const IPV6_RECVERR_RFC4884: i32 = 31;
const IPV6_RECVFRAGSIZE: i32 = 77;
const IPV6_ADDR_PREFERENCES: i32 = 72;
const IPV6_MINHOPCOUNT: i32 = 73;
const IPV6_AUTOFLOWLABEL: i32 = 70;
const TCP_FASTOPEN_KEY: i32 = 33;
const TCP_SAVE_SYN: i32 = 27;
const TCP_SAVED_SYN: i32 = 28;

/// (level, option, value) to set with `setopt`.
type Opt = (i32, i32, i32);

/// Options of the IPv4 family an application sets on any inet socket (an IPv6 one's act on
/// its IPv4-mapped traffic), each unlike a fresh socket's.
fn ipv4_options() -> Vec<Opt> {
    vec![
        // The interface index, in network byte order.
        (libc::SOL_IP, IP_UNICAST_IF, 1i32.to_be()),
        (libc::SOL_IP, IP_LOCAL_PORT_RANGE, 40000 | (50000 << 16)),
        (libc::SOL_IP, IP_RECVERR_RFC4884, 1),
        (libc::SOL_IP, libc::IP_MINTTL, 5),
    ]
}

/// IPv6 options an application sets on an IPv6 socket of any kind.
fn ipv6_options() -> Vec<Opt> {
    let mut v = vec![
        // The interface index, in network byte order.
        (libc::SOL_IPV6, IPV6_UNICAST_IF, 1i32.to_be()),
        (libc::SOL_IPV6, IPV6_FLOWINFO, 1),
        (libc::SOL_IPV6, IPV6_FLOWINFO_SEND, 1),
        (libc::SOL_IPV6, IPV6_RECVERR_RFC4884, 1),
        (libc::SOL_IPV6, IPV6_RECVFRAGSIZE, 1),
        // IPV6_PREFER_SRC_PUBLIC | IPV6_PREFER_SRC_COA.
        (libc::SOL_IPV6, IPV6_ADDR_PREFERENCES, 0x0002 | 0x0004),
        (libc::SOL_IPV6, IPV6_MINHOPCOUNT, 5),
        (libc::SOL_IPV6, IPV6_AUTOFLOWLABEL, 0),
    ];
    for name in [
        libc::IPV6_RECVRTHDR,
        libc::IPV6_RECVHOPOPTS,
        libc::IPV6_RECVDSTOPTS,
        libc::IPV6_RECVPATHMTU,
        libc::IPV6_2292PKTINFO,
        libc::IPV6_2292HOPLIMIT,
        libc::IPV6_2292HOPOPTS,
        libc::IPV6_2292DSTOPTS,
        libc::IPV6_2292RTHDR,
    ] {
        v.push((libc::SOL_IPV6, name, 1));
    }
    v
}

/// IPv4 options of an IPv6 socket (its IPv4-mapped traffic) the IPv4 family keeps elsewhere.
fn ipv4_options_of_ipv6() -> Vec<Opt> {
    vec![
        (libc::SOL_IP, libc::IP_TOS, 0x48),
        (libc::SOL_IP, libc::IP_TTL, 33),
        (libc::SOL_IP, libc::IP_RECVTOS, 1),
        (libc::SOL_IP, libc::IP_PKTINFO, 1),
    ]
}

/// Sets every option of `opts` on socket `s`.
#[track_caller]
fn set_all(w: &Workload, s: &str, opts: &[Opt]) {
    for (level, name, value) in opts {
        assert_eq!(
            w.cmd(&format!("setopt {s} {level} {name} {value}")),
            "ok",
            "setopt {level} {name} {value} on fd {s}"
        );
    }
}

/// "level option = value" of every option of `opts` as socket `s` reads it now.
fn read_all(w: &Workload, s: &str, opts: &[Opt]) -> Vec<String> {
    opts.iter()
        .map(|(level, name, _)| {
            let v = w.cmd(&format!("getopt {s} {level} {name}"));
            format!("{level} {name} = {v}")
        })
        .collect()
}

/// Reads back what `opts` set on `s`: each as set (IP_UNICAST_IF reads as it was given).
#[track_caller]
fn assert_as_set(w: &Workload, s: &str, opts: &[Opt]) {
    let want: Vec<String> = opts
        .iter()
        .map(|(level, name, value)| format!("{level} {name} = {value}"))
        .collect();
    assert_eq!(read_all(w, s, opts), want, "options of fd {s}");
}

/// Sends one datagram from `from` to `to` and returns what receiver `r` heard of it (with
/// the TTL and TOS its IP_RECVTTL and IP_RECVTOS show).
fn heard(w: &Workload, from: &str, to: &str, r: &str, msg: &str) -> String {
    assert_eq!(w.cmd(&format!("sendto-inet {from} {to} {msg}")), "ok");
    assert_eq!(w.cmd(&format!("readable {r}")), "ok");
    w.cmd(&format!("recvfrom {r}"))
}

/// A UDP receiver on 127.0.0.1 that shows the TTL and TOS of what it hears: (fd, address).
fn ttl_tos_receiver(w: &Workload) -> (String, String) {
    let r = w.cmd("socket inet dgram 17");
    assert_eq!(w.cmd(&format!("bind-inet {r} 127.0.0.1:0")), "ok");
    set_all(
        w,
        &r,
        &[
            (libc::SOL_IP, libc::IP_RECVTTL, 1),
            (libc::SOL_IP, libc::IP_RECVTOS, 1),
        ],
    );
    let name = w.cmd(&format!("name {r}"));
    (r, name)
}

/// The IPv4 and IPv6 options of UDP sockets: IP_UNICAST_IF, IP_LOCAL_PORT_RANGE,
/// IP_RECVFRAGSIZE, IP_RECVERR_RFC4884, IP_MINTTL of an IPv4 one; the IPv6 flags and values
/// and the IPv4 options (IP_TOS, IP_TTL, IP_MULTICAST_TTL...) of an IPv6 one, whose datagrams
/// to an IPv4-mapped address carry its IP_TOS and IP_TTL. Before: every one came back as a
/// fresh socket's (the IPv6 socket's datagrams with TOS 0 and TTL 64).
#[test]
fn ip_and_ipv6_options_of_udp_sockets_come_back() {
    let mut w = socks();
    let u4 = w.cmd("socket inet dgram 17");
    let mut v4 = ipv4_options();
    v4.push((libc::SOL_IP, IP_RECVFRAGSIZE, 1));
    set_all(&w, &u4, &v4);
    assert_eq!(w.cmd(&format!("bind-inet {u4} 127.0.0.1:0")), "ok");
    let u6 = w.cmd("socket inet6 dgram 17");
    let mut v6 = ipv6_options();
    v6.extend(ipv4_options());
    v6.extend(ipv4_options_of_ipv6());
    v6.push((libc::SOL_IP, libc::IP_MULTICAST_TTL, 7));
    v6.push((libc::SOL_IP, libc::IP_MULTICAST_LOOP, 0));
    // By address (struct in_addr): lo's.
    let lo_address = i32::from_ne_bytes([127, 0, 0, 1]);
    v6.push((libc::SOL_IP, libc::IP_MULTICAST_IF, lo_address));
    set_all(&w, &u6, &v6);
    assert_eq!(w.cmd(&format!("bind-inet {u6} [::]:0")), "ok");
    assert_as_set(&w, &u4, &v4);
    assert_as_set(&w, &u6, &v6);
    let (r, to) = ttl_tos_receiver(&w);
    let port = to.rsplit(':').next().unwrap();
    let mapped_to = format!("[::ffff:127.0.0.1]:{port}");
    let before = heard(&w, &u6, &mapped_to, &r, "before");
    assert!(
        before.contains(" ttl 33") && before.contains(" tos 72"),
        "{before}"
    );
    w.dump_and_restore();
    assert_as_set(&w, &u4, &v4);
    assert_as_set(&w, &u6, &v6);
    assert_eq!(
        heard(&w, &u6, &mapped_to, &r, "after"),
        before.replace("before", "after"),
        "an IPv4-mapped datagram of the IPv6 socket carries its IP_TTL and IP_TOS"
    );
    w.kill_restored();
}

/// A listener of family `fam` on `addr` with a connection to it, accepted: (listener,
/// client, accepted).
fn connected(w: &Workload, fam: &str, addr: &str) -> (String, String, String) {
    let l = w.cmd(&format!("socket {fam} stream 6"));
    assert_eq!(w.cmd(&format!("bind-inet {l} {addr}")), "ok");
    assert_eq!(w.cmd(&format!("listen {l}")), "ok");
    let at = w.cmd(&format!("name {l}"));
    let c = w.cmd(&format!("socket {fam} stream 6"));
    assert_eq!(w.cmd(&format!("connect-inet {c} {at}")), "ok");
    let s = w.cmd(&format!("accept {l}"));
    (l, c, s)
}

/// Bytes go both ways on connection (`c`, `s`).
#[track_caller]
fn carries_bytes(w: &Workload, c: &str, s: &str) {
    assert_eq!(w.cmd(&format!("send {c} ping")), "ok");
    assert_eq!(w.cmd(&format!("recv-wait {s}")), "ping");
    assert_eq!(w.cmd(&format!("send {s} pong")), "ok");
    assert_eq!(w.cmd(&format!("recv-wait {c}")), "pong");
}

/// The IPv4 options of TCP sockets (listener, client, accepted end), the IPv4 receive flags
/// udp.rs keeps for datagram sockets among them, and on IPv6 ones the IPv6 flags and values
/// and the IPv4 options of their IPv4-mapped traffic; a listener's own TCP_FASTOPEN_KEY.
/// Before: each came back as a fresh socket's.
#[test]
fn ip_and_ipv6_options_of_tcp_sockets_and_a_listeners_fast_open_key_come_back() {
    let mut w = socks();
    let mut v4 = ipv4_options();
    for name in [
        libc::IP_RECVTTL,
        libc::IP_RECVOPTS,
        libc::IP_RETOPTS,
        libc::IP_PASSSEC,
        libc::IP_RECVORIGDSTADDR,
    ] {
        v4.push((libc::SOL_IP, name, 1));
    }
    v4.push((libc::SOL_IP, libc::IP_MULTICAST_LOOP, 0));
    v4.push((libc::SOL_IP, libc::IP_MULTICAST_ALL, 0));
    let mut v6 = ipv6_options();
    v6.extend(ipv4_options());
    v6.extend(ipv4_options_of_ipv6());
    for name in [
        libc::IPV6_RECVPKTINFO,
        libc::IPV6_RECVTCLASS,
        libc::IPV6_RECVHOPLIMIT,
    ] {
        v6.push((libc::SOL_IPV6, name, 1));
    }
    let (l4, c4, s4) = connected(&w, "inet", "127.0.0.1:0");
    let (l6, c6, s6) = connected(&w, "inet6", "[::1]:0");
    for s in [&l4, &c4, &s4] {
        set_all(&w, s, &v4);
    }
    for s in [&l6, &c6, &s6] {
        set_all(&w, s, &v6);
    }
    let key = "0102030405060708090a0b0c0d0e0f10";
    assert_eq!(
        w.cmd(&format!("setopt {l4} 6 {} 5", libc::TCP_FASTOPEN)),
        "ok"
    );
    assert_eq!(
        w.cmd(&format!("setopt-raw {l4} 6 {TCP_FASTOPEN_KEY} {key}")),
        "ok"
    );
    let read_key = format!("getopt-raw {l4} 6 {TCP_FASTOPEN_KEY} 16");
    assert_eq!(w.cmd(&read_key), key);
    w.dump_and_restore_established();
    for s in [&l4, &c4, &s4] {
        assert_as_set(&w, s, &v4);
    }
    for s in [&l6, &c6, &s6] {
        assert_as_set(&w, s, &v6);
    }
    assert_eq!(w.cmd(&read_key), key, "the listener's fast open key");
    carries_bytes(&w, &c4, &s4);
    carries_bytes(&w, &c6, &s6);
    w.kill_restored();
}

/// IP_TOS then SO_PRIORITY 2 on a UDP and a raw socket and on a listener; and a connection
/// accepted from a listener with IP_TOS only, which inherits the TOS but keeps priority 0.
/// Setting IP_TOS sets the priority from it (6 for TOS 0x10): before, the restore's IP_TOS
/// overwrote the priority dumped (2 -> 6, the accepted end's 0 -> 6).
#[test]
fn so_priority_comes_back_as_dumped_beside_ip_tos() {
    let mut w = socks();
    let tos = |s: &str| {
        assert_eq!(
            w.cmd(&format!("setopt {s} {} {} 16", libc::SOL_IP, libc::IP_TOS)),
            "ok"
        )
    };
    let prio = |s: &str| {
        assert_eq!(
            w.cmd(&format!(
                "setopt {s} {} {} 2",
                libc::SOL_SOCKET,
                libc::SO_PRIORITY
            )),
            "ok"
        )
    };
    let u = w.cmd("socket inet dgram 17");
    let raw = w.cmd("socket inet raw 253");
    let l = w.cmd("socket inet stream 6");
    for s in [&u, &raw, &l] {
        tos(s);
        prio(s);
    }
    assert_eq!(w.cmd(&format!("bind-inet {l} 127.0.0.1:0")), "ok");
    assert_eq!(w.cmd(&format!("listen {l}")), "ok");
    // An accepted end of a listener without options (IP_TOS and SO_PRIORITY set on it
    // after), and one of a listener with IP_TOS only.
    let (_l2, _c2, s2) = connected(&w, "inet", "127.0.0.1:0");
    tos(&s2);
    prio(&s2);
    let (l3, _c3, s3) = {
        let l3 = w.cmd("socket inet stream 6");
        tos(&l3);
        assert_eq!(w.cmd(&format!("bind-inet {l3} 127.0.0.1:0")), "ok");
        assert_eq!(w.cmd(&format!("listen {l3}")), "ok");
        let at = w.cmd(&format!("name {l3}"));
        let c3 = w.cmd("socket inet stream 6");
        assert_eq!(w.cmd(&format!("connect-inet {c3} {at}")), "ok");
        let s3 = w.cmd(&format!("accept {l3}"));
        (l3, c3, s3)
    };
    let opts = [
        (libc::SOL_IP, libc::IP_TOS, 0),
        (libc::SOL_SOCKET, libc::SO_PRIORITY, 0),
    ];
    let socks = [&u, &raw, &l, &s2, &l3, &s3];
    let before: Vec<Vec<String>> = socks.iter().map(|s| read_all(&w, s, &opts)).collect();
    assert_eq!(
        read_all(&w, &s3, &opts),
        vec![
            format!("{} {} = 16", libc::SOL_IP, libc::IP_TOS),
            format!("{} {} = 0", libc::SOL_SOCKET, libc::SO_PRIORITY)
        ],
        "the accepted end: the listener's TOS, priority 0"
    );
    assert!(before[0][1].ends_with("= 2"), "{:?}", before[0]);
    w.dump_and_restore_established();
    let after: Vec<Vec<String>> = socks.iter().map(|s| read_all(&w, s, &opts)).collect();
    assert_eq!(
        after, before,
        "IP_TOS and SO_PRIORITY of udp, raw, listener, accepted ends"
    );
    w.kill_restored();
}

/// A connection of the workload whose accepted end `s` holds "0123456789" unread, with
/// SO_PEEK_OFF set and moved to 2 by a peek of "01".
fn peeking_connection(w: &Workload) -> (String, String) {
    let (_l, c, s) = connected(w, "inet", "127.0.0.1:0");
    assert_eq!(w.cmd(&format!("send {c} 0123456789")), "ok");
    assert_eq!(w.cmd(&format!("readable {s}")), "ok");
    let peek_off = format!("{} {}", libc::SOL_SOCKET, libc::SO_PEEK_OFF);
    assert_eq!(w.cmd(&format!("setopt {s} {peek_off} 0")), "ok");
    assert_eq!(w.cmd(&format!("peek-n {s} 2")), "01");
    assert_eq!(w.cmd(&format!("getopt {s} {peek_off}")), "2");
    (c, s)
}

/// A TCP connection's SO_PEEK_OFF: a `--leave-running` dump leaves the running process's
/// offset where it was (before: the capture peeked the queue from the offset, refused as
/// "queues changed", or with the offset at 0 moved it to the end of the queue), and the
/// restored connection has it (before: -1, off), its next peek going on from there.
#[test]
fn a_connections_peek_offset_is_left_by_a_dump_and_comes_back() {
    let mut w = socks();
    let (_c, s) = peeking_connection(&w);
    let peek_off = format!("{} {}", libc::SOL_SOCKET, libc::SO_PEEK_OFF);
    let img = w.path("img-running");
    w.dump(&img, &["--tcp-established", "--leave-running"])
        .assert_success();
    assert_eq!(
        w.cmd(&format!("getopt {s} {peek_off}")),
        "2",
        "the running process's offset"
    );
    assert_eq!(w.cmd(&format!("peek-n {s} 2")), "23");
    assert_eq!(w.cmd(&format!("getopt {s} {peek_off}")), "4");
    w.dump_and_restore_established();
    assert_eq!(w.cmd(&format!("getopt {s} {peek_off}")), "4");
    assert_eq!(
        w.cmd(&format!("peek-n {s} 2")),
        "45",
        "peeks go on from the offset"
    );
    assert_eq!(w.cmd(&format!("recv {s}")), "0123456789", "the queue whole");
    w.kill_restored();
}

/// A connection shut for reading (shutdown(SHUT_RD)) before its peer's FIN: reads return
/// EOF, poll reports it. Before: it came back open for reading (recv EAGAIN).
#[test]
fn a_connection_shut_for_reading_comes_back_shut() {
    let mut w = socks();
    let (_l, c, s) = connected(&w, "inet", "127.0.0.1:0");
    assert_eq!(w.cmd(&format!("shut {s} rd")), "ok");
    let polled = w.cmd(&format!("poll {s}"));
    assert!(polled.contains("rdhup"), "{polled}");
    let peer = w.cmd(&format!("poll {c}"));
    w.dump_and_restore_established();
    assert_eq!(
        w.cmd(&format!("poll {s}")),
        polled,
        "still shut for reading"
    );
    assert_eq!(w.cmd(&format!("poll {c}")), peer, "its peer as it was");
    assert_eq!(w.cmd(&format!("recv {s}")), "<eof>");
    assert_eq!(w.cmd(&format!("send {s} still")), "ok", "it still sends");
    assert_eq!(w.cmd(&format!("recv-wait {c}")), "still");
    w.kill_restored();
}

/// A connection accepted from a listener with TCP_SAVE_SYN keeps the SYN until its owner
/// reads it (TCP_SAVED_SYN, once): no call puts one back, so a dump with one unread is
/// refused naming pid, fd and the option, the SYN left for the process; once read, the
/// connection dumps and comes back. Before: dumped, and the restored connection had none.
#[test]
fn a_connection_with_an_unread_saved_syn_is_refused_naming_it() {
    let mut w = socks();
    let l = w.cmd("socket inet stream 6");
    assert_eq!(w.cmd(&format!("setopt {l} 6 {TCP_SAVE_SYN} 1")), "ok");
    assert_eq!(w.cmd(&format!("bind-inet {l} 127.0.0.1:0")), "ok");
    assert_eq!(w.cmd(&format!("listen {l}")), "ok");
    let at = w.cmd(&format!("name {l}"));
    let c = w.cmd("socket inet stream 6");
    assert_eq!(w.cmd(&format!("connect-inet {c} {at}")), "ok");
    let s = w.cmd(&format!("accept {l}"));
    w.dump(&w.path("img-refused"), &["--tcp-established"])
        .assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_mentions(&format!("fd {s}"))
        .assert_stderr_mentions("TCP_SAVED_SYN");
    w.assert_untouched();
    let syn = w.cmd(&format!("getopt-raw {s} 6 {TCP_SAVED_SYN} 512"));
    // An IPv4 header and a TCP header at least, as hex.
    assert!(
        syn.len() >= 2 * 40,
        "the SYN is still there for the process: {syn:?}"
    );
    w.dump_and_restore_established();
    carries_bytes(&w, &c, &s);
    w.kill_restored();
}
