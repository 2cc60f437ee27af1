//! UDP socket state beyond addresses, checked from inside the restored process (the `socks`
//! workload): the shutdown state, UDP_CORK (a pending corked datagram refused at dump),
//! IP_FREEBIND binds to an address the host lacks, and one test per option an application
//! sets (SOL_SOCKET, IPPROTO_IP, IPPROTO_IPV6, IPPROTO_UDP), the byte options (IP_OPTIONS,
//! the IPv6 sticky extension headers, SO_TXTIME) among them.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::socks::{shut_for_reading_survives_restore, shut_for_writing_survives_restore};
use cryo_tests::{cryo_bin, Workload};

/// A UDP socket of family `fam` (inet | inet6) in a fresh workload, bound to `addr`.
fn udp(fam: &str, addr: &str) -> (Workload, String) {
    cryo_bin();
    let w = Workload::spawn("socks", &[]);
    let s = w.cmd(&format!("socket {fam} dgram 17"));
    assert_eq!(w.cmd(&format!("bind-inet {s} {addr}")), "ok");
    (w, s)
}

#[test]
fn a_udp_socket_shut_for_writing_still_refuses_to_send() {
    let (mut w, s) = udp("inet", "127.0.0.1:0");
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = peer.local_addr().unwrap();
    assert_eq!(w.cmd(&format!("connect-inet {s} {to}")), "ok");
    shut_for_writing_survives_restore(&mut w, &s);
}

#[test]
fn an_unconnected_udp_socket_shut_for_reading_stays_shut() {
    let (mut w, s) = udp("inet", "127.0.0.1:0");
    shut_for_reading_survives_restore(&mut w, &s);
}

#[test]
fn a_corked_udp_socket_without_pending_data_stays_corked() {
    let (mut w, s) = udp("inet", "127.0.0.1:0");
    let cork = format!("{} {}", libc::IPPROTO_UDP, libc::UDP_CORK);
    assert_eq!(w.cmd(&format!("setopt {s} {cork} 1")), "ok");
    w.dump_and_restore();
    assert_eq!(w.cmd(&format!("getopt {s} {cork}")), "1");
    w.kill_restored();
}

#[test]
fn a_corked_udp_datagram_pending_is_refused_naming_pid_and_fd() {
    let (w, s) = udp("inet", "127.0.0.1:0");
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = peer.local_addr().unwrap();
    assert_eq!(w.cmd(&format!("connect-inet {s} {to}")), "ok");
    assert_eq!(w.cmd(&format!("send-more {s} held")), "ok");
    w.assert_dump_refused(&s, "UDP_CORK or MSG_MORE");
}

#[test]
fn a_freebind_udp_socket_on_an_address_the_host_lacks_comes_back() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let s = w.cmd("socket inet dgram 17");
    let freebind = format!("{} {}", libc::IPPROTO_IP, libc::IP_FREEBIND);
    assert_eq!(w.cmd(&format!("setopt {s} {freebind} 1")), "ok");
    assert_eq!(w.cmd(&format!("bind-inet {s} 192.0.2.77:0")), "ok");
    let name = w.cmd(&format!("name {s}"));
    assert!(name.starts_with("192.0.2.77:"), "{name}");
    w.dump_and_restore();
    assert_eq!(
        w.cmd(&format!("name {s}")),
        name,
        "bound to the same address"
    );
    assert_eq!(w.cmd(&format!("getopt {s} {freebind}")), "1");
    w.kill_restored();
}

/// `IPV6_FREEBIND` (not in libc for every target).
const IPV6_FREEBIND: i32 = 78;

/// A socket of family `fam`, type `ty` bound to `addr` (an address the host lacks) while
/// option (`level`, `flag`) was on, the flag cleared since: the restored socket has the same
/// name and the flag still off.
fn bound_with_flag_since_cleared(fam: &str, ty: &str, addr: &str, level: i32, flag: i32) {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let s = w.cmd(&format!("socket {fam} {ty} 0"));
    let flag = format!("{level} {flag}");
    assert_eq!(w.cmd(&format!("setopt {s} {flag} 1")), "ok");
    assert_eq!(w.cmd(&format!("bind-inet {s} {addr}")), "ok");
    assert_eq!(w.cmd(&format!("setopt {s} {flag} 0")), "ok");
    let name = w.cmd(&format!("name {s}"));
    w.dump_and_restore();
    assert_eq!(
        w.cmd(&format!("name {s}")),
        name,
        "bound to the same address"
    );
    assert_eq!(
        w.cmd(&format!("getopt {s} {flag}")),
        "0",
        "the flag stays off"
    );
    w.kill_restored();
}

#[test]
fn a_udp6_socket_bound_with_freebind_since_cleared_comes_back_without_it() {
    bound_with_flag_since_cleared(
        "inet6",
        "dgram",
        "[2001:db8::ff00:42:8329]:0",
        libc::IPPROTO_IPV6,
        IPV6_FREEBIND,
    );
}

#[test]
fn a_udp_socket_bound_with_ip_transparent_since_cleared_comes_back_without_it() {
    bound_with_flag_since_cleared(
        "inet",
        "dgram",
        "192.0.2.78:0",
        libc::IPPROTO_IP,
        libc::IP_TRANSPARENT,
    );
}

#[test]
fn a_tcp_socket_bound_with_freebind_since_cleared_comes_back_without_it() {
    bound_with_flag_since_cleared(
        "inet",
        "stream",
        "192.0.2.79:0",
        libc::IPPROTO_IP,
        libc::IP_FREEBIND,
    );
}

/// Sets option (`level`, `opt`) of a UDP socket of family `fam` to `value`, then checks the
/// restored process reads `value` back.
fn option_round_trip(fam: &str, level: i32, opt: i32, value: i32) {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let s = w.cmd(&format!("socket {fam} dgram 17"));
    // Before bind, as IPV6_V6ONLY must be.
    assert_eq!(w.cmd(&format!("setopt {s} {level} {opt} {value}")), "ok");
    let addr = if fam == "inet" {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    assert_eq!(w.cmd(&format!("bind-inet {s} {addr}")), "ok");
    let before = w.cmd(&format!("getopt {s} {level} {opt}"));
    w.dump_and_restore();
    assert_eq!(
        w.cmd(&format!("getopt {s} {level} {opt}")),
        before,
        "option {level}/{opt} of a {fam} UDP socket"
    );
    w.kill_restored();
}

macro_rules! option_tests {
    ($($name:ident: $fam:literal, $level:expr, $opt:expr, $value:expr;)*) => {
        $(
            #[test]
            fn $name() {
                option_round_trip($fam, $level, $opt, $value);
            }
        )*
    };
}

option_tests! {
    so_broadcast: "inet", libc::SOL_SOCKET, libc::SO_BROADCAST, 1;
    so_priority: "inet", libc::SOL_SOCKET, libc::SO_PRIORITY, 5;
    so_mark: "inet", libc::SOL_SOCKET, libc::SO_MARK, 7;
    so_rcvbuf: "inet", libc::SOL_SOCKET, libc::SO_RCVBUF, 300_000;
    so_sndbuf: "inet", libc::SOL_SOCKET, libc::SO_SNDBUF, 300_000;
    so_timestamp: "inet", libc::SOL_SOCKET, libc::SO_TIMESTAMP, 1;
    so_timestampns: "inet", libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1;
    so_rcvlowat: "inet", libc::SOL_SOCKET, libc::SO_RCVLOWAT, 4;
    so_rxq_ovfl: "inet", libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1;
    so_timestamping: "inet", libc::SOL_SOCKET, libc::SO_TIMESTAMPING, 0x18;
    so_busy_poll: "inet", libc::SOL_SOCKET, libc::SO_BUSY_POLL, 50;
    so_prefer_busy_poll: "inet", libc::SOL_SOCKET, 69, 1;
    so_rcvmark: "inet", libc::SOL_SOCKET, 75, 1;
    so_max_pacing_rate: "inet", libc::SOL_SOCKET, libc::SO_MAX_PACING_RATE, 1_000_000;
    so_incoming_cpu: "inet", libc::SOL_SOCKET, libc::SO_INCOMING_CPU, 1;
    so_zerocopy: "inet", libc::SOL_SOCKET, libc::SO_ZEROCOPY, 1;
    so_dontroute: "inet", libc::SOL_SOCKET, libc::SO_DONTROUTE, 1;
    so_no_check: "inet", libc::SOL_SOCKET, libc::SO_NO_CHECK, 1;
    so_keepalive: "inet", libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1;
    so_oobinline: "inet", libc::SOL_SOCKET, libc::SO_OOBINLINE, 1;
    so_wifi_status: "inet", libc::SOL_SOCKET, libc::SO_WIFI_STATUS, 1;
    so_nofcs: "inet", libc::SOL_SOCKET, libc::SO_NOFCS, 1;
    ip_tos: "inet", libc::IPPROTO_IP, libc::IP_TOS, 0x10;
    ip_ttl: "inet", libc::IPPROTO_IP, libc::IP_TTL, 33;
    ip_multicast_ttl: "inet", libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, 5;
    ip_multicast_loop: "inet", libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, 0;
    ip_multicast_all: "inet", libc::IPPROTO_IP, libc::IP_MULTICAST_ALL, 0;
    ip_pktinfo: "inet", libc::IPPROTO_IP, libc::IP_PKTINFO, 1;
    ip_recverr: "inet", libc::IPPROTO_IP, libc::IP_RECVERR, 1;
    ip_recvttl: "inet", libc::IPPROTO_IP, libc::IP_RECVTTL, 1;
    ip_recvtos: "inet", libc::IPPROTO_IP, libc::IP_RECVTOS, 1;
    ip_mtu_discover: "inet", libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DO;
    ip_recvorigdstaddr: "inet", libc::IPPROTO_IP, libc::IP_RECVORIGDSTADDR, 1;
    udp_segment: "inet", libc::IPPROTO_UDP, 103, 1200;
    udp_gro: "inet", libc::IPPROTO_UDP, 104, 1;
    udp_encap_espinudp: "inet", libc::IPPROTO_UDP, libc::UDP_ENCAP, 2;
    ipv6_v6only: "inet6", libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1;
    ipv6_unicast_hops: "inet6", libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, 9;
    ipv6_multicast_hops: "inet6", libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, 3;
    ipv6_multicast_loop: "inet6", libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, 0;
    ipv6_recvpktinfo: "inet6", libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1;
    ipv6_recverr: "inet6", libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1;
    ipv6_tclass: "inet6", libc::IPPROTO_IPV6, libc::IPV6_TCLASS, 0x20;
    ipv6_dontfrag: "inet6", libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1;
    so_select_err_queue: "inet", libc::SOL_SOCKET, libc::SO_SELECT_ERR_QUEUE, 1;
    ip_transparent: "inet", libc::IPPROTO_IP, libc::IP_TRANSPARENT, 1;
    ip_bind_address_no_port: "inet", libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1;
    ip_recvopts: "inet", libc::IPPROTO_IP, libc::IP_RECVOPTS, 1;
    ip_retopts: "inet", libc::IPPROTO_IP, libc::IP_RETOPTS, 1;
    ip_passsec: "inet", libc::IPPROTO_IP, libc::IP_PASSSEC, 1;
    ip_checksum: "inet", libc::IPPROTO_IP, libc::IP_CHECKSUM, 1;
    ipv6_freebind: "inet6", libc::IPPROTO_IPV6, libc::IPV6_FREEBIND, 1;
    ipv6_transparent: "inet6", libc::IPPROTO_IPV6, libc::IPV6_TRANSPARENT, 1;
    ipv6_multicast_if: "inet6", libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, 1;
    ipv6_multicast_all: "inet6", libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_ALL, 0;
    ipv6_recvhoplimit: "inet6", libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1;
    ipv6_recvtclass: "inet6", libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 1;
    ipv6_mtu_discover: "inet6", libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_DO;
    ipv6_recvorigdstaddr: "inet6", libc::IPPROTO_IPV6, libc::IPV6_RECVORIGDSTADDR, 1;
    udp_no_check6_tx: "inet6", libc::IPPROTO_UDP, 101, 1;
    udp_no_check6_rx: "inet6", libc::IPPROTO_UDP, 102, 1;
}

/// Sets byte option (`level`, `opt`) of a bound UDP socket of family `fam` to `hex`, then
/// checks the restored process reads the same bytes back.
fn bytes_round_trip(fam: &str, level: i32, opt: i32, hex: &str) {
    let addr = if fam == "inet" {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let (mut w, s) = udp(fam, addr);
    let option = format!("{level} {opt}");
    assert_eq!(w.cmd(&format!("setopt-raw {s} {option} {hex}")), "ok");
    assert_eq!(w.cmd(&format!("getopt-raw {s} {option} 256")), hex);
    w.dump_and_restore();
    assert_eq!(
        w.cmd(&format!("getopt-raw {s} {option} 256")),
        hex,
        "option {level}/{opt} of a {fam} UDP socket"
    );
    w.kill_restored();
}

/// SO_TXTIME (not in libc for every target).
const SO_TXTIME: i32 = 61;
/// An IPv6 extension header holding one PadN option.
const PADN_HEADER: &str = "0000010400000000";

macro_rules! bytes_tests {
    ($($name:ident: $fam:literal, $level:expr, $opt:expr, $hex:expr;)*) => {
        $(
            #[test]
            fn $name() {
                bytes_round_trip($fam, $level, $opt, $hex);
            }
        )*
    };
}

bytes_tests! {
    // Three no-operations and an end of options.
    ip_options: "inet", libc::IPPROTO_IP, libc::IP_OPTIONS, "01010100";
    // struct sock_txtime {CLOCK_MONOTONIC, SOF_TXTIME_REPORT_ERRORS}.
    so_txtime: "inet", libc::SOL_SOCKET, SO_TXTIME, "0100000002000000";
    so_txtime_ipv6: "inet6", libc::SOL_SOCKET, SO_TXTIME, "0100000002000000";
    // struct timeval {3 s, 500000 us}, {4 s, 0}.
    so_rcvtimeo: "inet", libc::SOL_SOCKET, libc::SO_RCVTIMEO, "030000000000000020a1070000000000";
    so_sndtimeo: "inet", libc::SOL_SOCKET, libc::SO_SNDTIMEO, "04000000000000000000000000000000";
    ip_multicast_if: "inet", libc::IPPROTO_IP, libc::IP_MULTICAST_IF, "7f000001";
    ipv6_hopopts: "inet6", libc::IPPROTO_IPV6, libc::IPV6_HOPOPTS, PADN_HEADER;
    ipv6_dstopts: "inet6", libc::IPPROTO_IPV6, libc::IPV6_DSTOPTS, PADN_HEADER;
    ipv6_rthdrdstopts: "inet6", libc::IPPROTO_IPV6, libc::IPV6_RTHDRDSTOPTS, PADN_HEADER;
    // A segment routing header (type 4) with one segment, none left.
    ipv6_rthdr: "inet6", libc::IPPROTO_IPV6, libc::IPV6_RTHDR,
        "000204000000000020010db8000000000000000000000001";
}

#[test]
fn a_udp_socket_in_an_encapsulation_other_than_esp_is_refused_naming_pid_fd_and_udp_encap() {
    let (w, s) = udp("inet", "127.0.0.1:0");
    // UDP_ENCAP_L2TPINUDP: what a kernel L2TP tunnel sets; setsockopt gives the type alone.
    let encap = format!("{} {}", libc::IPPROTO_UDP, libc::UDP_ENCAP);
    assert_eq!(w.cmd(&format!("setopt {s} {encap} 3")), "ok");
    w.assert_dump_refused(&s, "UDP_ENCAP");
    assert_eq!(w.cmd(&format!("getopt {s} {encap}")), "3", "left as it was");
}

#[test]
fn a_udp_socket_numbering_its_timestamps_is_refused_naming_pid_fd_and_so_timestamping() {
    let (w, s) = udp("inet", "127.0.0.1:0");
    // SOF_TIMESTAMPING_OPT_ID: a counter the kernel does not show.
    let ts = format!("{} {}", libc::SOL_SOCKET, libc::SO_TIMESTAMPING);
    let flags = libc::SOF_TIMESTAMPING_OPT_ID | libc::SOF_TIMESTAMPING_SOFTWARE;
    assert_eq!(w.cmd(&format!("setopt {s} {ts} {flags}")), "ok");
    w.assert_dump_refused(&s, "SO_TIMESTAMPING");
    assert_eq!(
        w.cmd(&format!("getopt {s} {ts}")),
        flags.to_string(),
        "left as it was"
    );
}

#[test]
fn so_bindtodevice_comes_back() {
    let (mut w, s) = udp("inet", "127.0.0.1:0");
    // "lo" as bytes.
    let level = format!("{} {}", libc::SOL_SOCKET, libc::SO_BINDTODEVICE);
    assert_eq!(w.cmd(&format!("setopt-raw {s} {level} 6c6f00")), "ok");
    w.dump_and_restore();
    assert_eq!(w.cmd(&format!("getopt-raw {s} {level} 16")), "6c6f00");
    w.kill_restored();
}

#[test]
fn a_classic_bpf_filter_still_drops_what_it_dropped() {
    let (mut w, s) = udp("inet", "127.0.0.1:0");
    assert_eq!(w.cmd(&format!("filter-drop {s} d")), "ok");
    let to: std::net::SocketAddr = w.cmd(&format!("name {s}")).parse().unwrap();
    let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c.send_to(b"drop me", to).unwrap();
    c.send_to(b"kept", to).unwrap();
    assert_eq!(w.cmd(&format!("recv-wait {s}")), "kept", "filtered before");
    w.dump_and_restore();
    assert_eq!(w.cmd(&format!("filter-len {s}")), "4", "the same program");
    c.send_to(b"dropped", to).unwrap();
    c.send_to(b"kept too", to).unwrap();
    assert_eq!(
        w.cmd(&format!("recv-wait {s}")),
        "kept too",
        "filtered after"
    );
    w.kill_restored();
}

/// `level opt` as the workload's setopt/getopt take them.
fn opt(level: i32, name: i32) -> String {
    format!("{level} {name}")
}

/// A UDP socket of `w` bound to `addr`, sending with option `option` (if any) set first.
fn sender(w: &Workload, fam: &str, addr: &str, option: Option<(String, i32)>) -> (String, String) {
    let c = w.cmd(&format!("socket {fam} dgram 17"));
    if let Some((o, v)) = option {
        assert_eq!(w.cmd(&format!("setopt {c} {o} {v}")), "ok");
    }
    assert_eq!(w.cmd(&format!("bind-inet {c} {addr}")), "ok");
    let name = w.cmd(&format!("name {c}"));
    (c, name)
}

#[test]
fn ipv4_datagrams_queued_come_back_in_order_with_sources_destination_ttl_and_tos() {
    let (mut w, s) = udp("inet", "0.0.0.0:0");
    for o in [libc::IP_PKTINFO, libc::IP_RECVTTL, libc::IP_RECVTOS] {
        assert_eq!(
            w.cmd(&format!("setopt {s} {} 1", opt(libc::IPPROTO_IP, o))),
            "ok"
        );
    }
    let port = w
        .cmd(&format!("name {s}"))
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let ttl = Some((opt(libc::IPPROTO_IP, libc::IP_TTL), 7));
    let (c1, from1) = sender(&w, "inet", "127.0.0.1:0", ttl);
    let tos = Some((opt(libc::IPPROTO_IP, libc::IP_TOS), 0x10));
    let (c2, from2) = sender(&w, "inet", "127.0.0.2:0", tos);
    // To an address of lo the socket is not bound to: IP_PKTINFO shows it.
    let to = format!("127.0.0.3:{port}");
    for (c, msg) in [(&c1, "one"), (&c2, "two"), (&c1, "three")] {
        assert_eq!(w.cmd(&format!("sendto-inet {c} {to} {msg}")), "ok");
    }
    w.dump_and_restore();
    let head = "to 127.0.0.3 if 1";
    assert_eq!(
        w.cmd(&format!("recvfrom {s}")),
        format!(
            "one from {from1} {head} ttl 7 tos 0 | two from {from2} {head} ttl 64 tos 16 | \
             three from {from1} {head} ttl 7 tos 0"
        ),
        "the queue, read from inside the restored process"
    );
    w.kill_restored();
}

#[test]
fn ipv6_datagrams_queued_come_back_in_order_with_sources_destination_and_hop_limit() {
    let (mut w, s) = udp("inet6", "[::]:0");
    for o in [
        libc::IPV6_RECVPKTINFO,
        libc::IPV6_RECVHOPLIMIT,
        libc::IPV6_RECVTCLASS,
    ] {
        assert_eq!(
            w.cmd(&format!("setopt {s} {} 1", opt(libc::IPPROTO_IPV6, o))),
            "ok"
        );
    }
    let port = w
        .cmd(&format!("name {s}"))
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let hops = Some((opt(libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS), 7));
    let (c1, from1) = sender(&w, "inet6", "[::1]:0", hops);
    let class = Some((opt(libc::IPPROTO_IPV6, libc::IPV6_TCLASS), 0x10));
    let (c2, from2) = sender(&w, "inet6", "[::1]:0", class);
    // An IPv4 datagram too, which the IPv6 socket shows v4-mapped.
    let (c3, from3) = sender(&w, "inet", "127.0.0.2:0", None);
    let to = format!("[::1]:{port}");
    for (c, to, msg) in [
        (&c1, to.as_str(), "one"),
        (&c2, to.as_str(), "two"),
        (&c3, &format!("127.0.0.1:{port}"), "four"),
        (&c1, to.as_str(), "three"),
    ] {
        assert_eq!(w.cmd(&format!("sendto-inet {c} {to} {msg}")), "ok");
    }
    w.dump_and_restore();
    let v4 = from3.replace("127.0.0.2", "[::ffff:127.0.0.2]");
    assert_eq!(
        w.cmd(&format!("recvfrom {s}")),
        format!(
            "one from {from1} to ::1 if 1 ttl 7 tos 0 | two from {from2} to ::1 if 1 ttl 64 \
             tos 16 | four from {v4} to ::ffff:127.0.0.1 if 1 | three from {from1} to ::1 if 1 \
             ttl 7 tos 0"
        ),
        "the queue, read from inside the restored process"
    );
    w.kill_restored();
}

#[test]
fn a_connected_udp_socket_keeps_the_datagrams_from_before_and_after_its_connect() {
    let (mut w, s) = udp("inet", "127.0.0.1:0");
    let to = w.cmd(&format!("name {s}"));
    let (early, early_name) = sender(&w, "inet", "127.0.0.2:0", None);
    let (peer, peer_name) = sender(&w, "inet", "127.0.0.3:0", None);
    assert_eq!(w.cmd(&format!("sendto-inet {early} {to} early")), "ok");
    assert_eq!(w.cmd(&format!("connect-inet {s} {peer_name}")), "ok");
    assert_eq!(w.cmd(&format!("sendto-inet {peer} {to} late")), "ok");
    w.dump_and_restore();
    assert_eq!(
        w.cmd(&format!("recvfrom {s}")),
        format!("early from {early_name} | late from {peer_name}")
    );
    assert_eq!(w.cmd(&format!("send {s} back")), "ok");
    assert_eq!(
        w.cmd(&format!("recv-wait {peer}")),
        "back",
        "still connected"
    );
    w.kill_restored();
}

#[test]
fn a_datagram_queued_before_a_filter_that_drops_it_comes_back() {
    let (mut w, s) = udp("inet", "127.0.0.1:0");
    let to = w.cmd(&format!("name {s}"));
    let (c, from) = sender(&w, "inet", "127.0.0.2:0", None);
    assert_eq!(w.cmd(&format!("sendto-inet {c} {to} dropped-later")), "ok");
    assert_eq!(w.cmd(&format!("filter-drop {s} d")), "ok");
    w.dump_and_restore();
    assert_eq!(
        w.cmd(&format!("recvfrom {s}")),
        format!("dropped-later from {from}"),
        "delivered before the filter is attached again"
    );
    assert_eq!(w.cmd(&format!("filter-len {s}")), "4");
    w.kill_restored();
}

#[test]
fn leave_running_leaves_the_queue_and_the_peek_offset_as_they_were() {
    let (mut w, s) = udp("inet", "127.0.0.1:0");
    let to = w.cmd(&format!("name {s}"));
    let peek_off = opt(libc::SOL_SOCKET, libc::SO_PEEK_OFF);
    assert_eq!(w.cmd(&format!("setopt {s} {peek_off} 0")), "ok");
    let (c1, from1) = sender(&w, "inet", "127.0.0.2:0", None);
    let (c2, from2) = sender(&w, "inet", "127.0.0.3:0", None);
    for (c, msg) in [(&c1, "one"), (&c2, "two"), (&c1, "three")] {
        assert_eq!(w.cmd(&format!("sendto-inet {c} {to} {msg}")), "ok");
    }
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    assert_eq!(w.cmd(&format!("getopt {s} {peek_off}")), "0", "SO_PEEK_OFF");
    let queue = format!("one from {from1} | two from {from2} | three from {from1}");
    assert_eq!(
        w.cmd(&format!("recvfrom {s}")),
        queue,
        "the original's queue"
    );
    w.kill_original();
    w.restore_background(&img);
    assert_eq!(
        w.cmd(&format!("getopt {s} {peek_off}")),
        "0",
        "SO_PEEK_OFF restored"
    );
    assert_eq!(w.cmd(&format!("recvfrom {s}")), queue, "the restored queue");
    w.kill_restored();
}

#[test]
fn queued_datagrams_beside_a_raw_udp_socket_that_would_hear_them_are_refused() {
    // Its raw socket hears every UDP datagram of its namespace: none of other tests'.
    cryo_tests::own_netns();
    let (w, s) = udp("inet", "127.0.0.1:0");
    let to = w.cmd(&format!("name {s}"));
    let (c, _) = sender(&w, "inet", "127.0.0.2:0", None);
    assert_eq!(w.cmd(&format!("sendto-inet {c} {to} queued")), "ok");
    // Made after the datagram came: its own queue is empty, but it would hear the delivery.
    let raw = w.cmd("socket inet raw 17");
    w.assert_dump_refused(&s, "would hear them delivered again");
    assert_eq!(w.cmd(&format!("recv {raw}")), "empty");
    assert_eq!(
        w.cmd(&format!("recv {s}")),
        "queued",
        "the datagram still waits"
    );
}

#[test]
fn queued_datagrams_of_a_reuseport_socket_are_refused_naming_pid_fd_and_so_reuseport() {
    cryo_bin();
    let w = Workload::spawn("socks", &[]);
    let s = w.cmd("socket inet dgram 17");
    let reuseport = opt(libc::SOL_SOCKET, libc::SO_REUSEPORT);
    assert_eq!(w.cmd(&format!("setopt {s} {reuseport} 1")), "ok");
    assert_eq!(w.cmd(&format!("bind-inet {s} 127.0.0.1:0")), "ok");
    let to = w.cmd(&format!("name {s}"));
    let (c, _) = sender(&w, "inet", "127.0.0.2:0", None);
    assert_eq!(w.cmd(&format!("sendto-inet {c} {to} queued")), "ok");
    w.assert_dump_refused(&s, "SO_REUSEPORT");
    assert_eq!(
        w.cmd(&format!("recv {s}")),
        "queued",
        "the datagram still waits"
    );
}

#[test]
fn an_empty_datagram_the_process_peeked_comes_back_with_the_rest() {
    let (mut w, s) = udp("inet", "127.0.0.1:0");
    let to = w.cmd(&format!("name {s}"));
    let (c, from) = sender(&w, "inet", "127.0.0.2:0", None);
    assert_eq!(w.cmd(&format!("sendto-inet-empty {c} {to}")), "ok");
    assert_eq!(w.cmd(&format!("sendto-inet {c} {to} second")), "ok");
    // The kernel marks an empty datagram peeked: offset peeks skip it from then on.
    assert_eq!(w.cmd(&format!("peek {s}")), "0");
    w.dump_and_restore();
    assert_eq!(
        w.cmd(&format!("recvfrom {s}")),
        format!("<empty> from {from} | second from {from}")
    );
    w.kill_restored();
}

/// Runs `ip ARGS` in the test's network namespace.
fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

#[test]
fn a_datagram_to_an_address_gone_at_restore_fails_the_restore_and_a_retry_with_it_works() {
    // A network namespace of the test's own (the workload and cryo inherit it).
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare CLONE_NEWNET");
    ip(&["link", "set", "lo", "up"]);
    ip(&["addr", "add", "10.77.0.1/32", "dev", "lo"]);
    let (mut w, s) = udp("inet", "0.0.0.0:0");
    let port = w
        .cmd(&format!("name {s}"))
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let (c, from) = sender(&w, "inet", "127.0.0.2:0", None);
    assert_eq!(
        w.cmd(&format!("sendto-inet {c} 10.77.0.1:{port} kept")),
        "ok"
    );
    let img = w.path("img");
    w.dump_ok(&img);
    ip(&["addr", "del", "10.77.0.1/32", "dev", "lo"]);
    w.cryo(&[
        "restore".as_ref(),
        "-D".as_ref(),
        img.as_os_str(),
        "--detach".as_ref(),
    ])
    .assert_refused()
    .assert_stderr_mentions("10.77.0.1, which is not an address of this host");
    ip(&["addr", "add", "10.77.0.1/32", "dev", "lo"]);
    w.restore_background(&img);
    assert_eq!(w.cmd(&format!("recvfrom {s}")), format!("kept from {from}"));
    w.kill_restored();
}
