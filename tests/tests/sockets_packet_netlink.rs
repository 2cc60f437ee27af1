//! Packet and netlink sockets, checked from inside the restored process (the `socks`
//! workload): a packet socket bound to lo with its options, membership and fanout receives a
//! frame after the restore; netlink sockets keep their port ids (kernel-assigned too), groups,
//! peer and options, and an rtnetlink socket hears of a link added after the restore; unread
//! netlink messages are refused at dump. (Packet rings: sockets_packet_ring.rs.)
//!
//! Each test runs in a network namespace of its own: the test thread unshares one, and every
//! process it starts (the workload, cryo) lives there, so the frames and link events are the
//! test's alone.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::process::Command;

use cryo_tests::{cryo_bin, Workload};

/// `SOL_PACKET` and `SOL_NETLINK`.
const SOL_PACKET: i32 = 263;
const SOL_NETLINK: i32 = 270;

/// Moves the test's thread into a new network namespace with lo up.
fn own_netns() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare CLONE_NEWNET");
    ip(&["link", "set", "lo", "up"]);
}

/// Runs `ip ARGS` (in the test's network namespace).
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `getopt` of every (level, name) of `opts` on socket `s`.
fn read_options(w: &Workload, s: &str, opts: &[(i32, i32)]) -> Vec<String> {
    opts.iter()
        .map(|(level, name)| {
            format!(
                "{level} {name} = {}",
                w.cmd(&format!("getopt {s} {level} {name}"))
            )
        })
        .collect()
}

/// lo's promiscuity count (`ip -d link show lo`).
fn promiscuity() -> u32 {
    let out = Command::new("ip")
        .args(["-d", "link", "show", "lo"])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    words
        .find(|w| *w == "promiscuity")
        .and_then(|_| words.next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no promiscuity in {text}"))
}

/// A packet_mreq for membership `mr_type` on interface 1 (lo), no address, as hex.
fn mreq_hex(mr_type: u16) -> String {
    let mut b = Vec::new();
    b.extend_from_slice(&1i32.to_ne_bytes());
    b.extend_from_slice(&mr_type.to_ne_bytes());
    b.extend_from_slice(&[0u8; 10]);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn a_packet_socket_on_lo_receives_a_frame_after_restore_with_its_options() {
    cryo_bin();
    own_netns();
    let mut w = Workload::spawn("socks", &[]);
    // SOCK_DGRAM, ETH_P_IP (socket() takes it in network order), bound to lo.
    let p = w.cmd(&format!("socket packet dgram {}", 0x0800u16.to_be()));
    assert_eq!(w.cmd(&format!("bind-packet {p} 1 2048")), "ok");
    let options: &[(i32, i32, i32)] = &[
        (SOL_PACKET, 23, 1),  // PACKET_IGNORE_OUTGOING: lo's frames arrive once
        (SOL_PACKET, 8, 1),   // PACKET_AUXDATA
        (SOL_PACKET, 9, 1),   // PACKET_ORIGDEV
        (SOL_PACKET, 10, 1),  // PACKET_VERSION (TPACKET_V2)
        (SOL_PACKET, 12, 64), // PACKET_RESERVE
        (SOL_PACKET, 14, 1),  // PACKET_LOSS
        (SOL_PACKET, 17, 16), // PACKET_TIMESTAMP
        (SOL_PACKET, 20, 1),  // PACKET_QDISC_BYPASS
        (SOL_PACKET, 7, 100), // PACKET_COPY_THRESH
        (SOL_PACKET, 19, 1),  // PACKET_TX_HAS_OFF
        (libc::SOL_SOCKET, libc::SO_PRIORITY, 5),
        (libc::SOL_SOCKET, libc::SO_MARK, 7),
        (libc::SOL_SOCKET, libc::SO_RCVBUF, 65536),
    ];
    for (level, name, value) in options {
        assert_eq!(w.cmd(&format!("setopt {p} {level} {name} {value}")), "ok");
    }
    // PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC on lo, twice (a count of 2).
    for _ in 0..2 {
        assert_eq!(
            w.cmd(&format!("setopt-raw {p} {SOL_PACKET} 1 {}", mreq_hex(1))),
            "ok"
        );
    }
    // A second socket in fanout group 77 (PACKET_FANOUT_LB with PACKET_FANOUT_FLAG_ROLLOVER).
    let q = w.cmd(&format!("socket packet raw {}", 0x0003u16.to_be()));
    assert_eq!(w.cmd(&format!("bind-packet {q} 1 3")), "ok");
    let fanout = 77 | (0x1001 << 16);
    assert_eq!(w.cmd(&format!("setopt {q} {SOL_PACKET} 18 {fanout}")), "ok");
    // PACKET_VNET_HDR (SOCK_RAW only), read back as PACKET_VNET_HDR_SZ too.
    assert_eq!(w.cmd(&format!("setopt {q} {SOL_PACKET} 15 1")), "ok");
    let q_opts = [(SOL_PACKET, 15), (SOL_PACKET, 24)];
    let q_before = read_options(&w, &q, &q_opts);
    assert_eq!(
        q_before[1],
        format!("{SOL_PACKET} 24 = 10"),
        "a virtio header"
    );
    // And a classic BPF filter (four instructions).
    assert_eq!(w.cmd(&format!("filter-drop {q} x")), "ok");
    let mut opts: Vec<(i32, i32)> = options.iter().map(|&(l, n, _)| (l, n)).collect();
    opts.push((libc::SOL_SOCKET, libc::SO_PROTOCOL));
    opts.push((libc::SOL_SOCKET, libc::SO_TYPE));
    let before = read_options(&w, &p, &opts);
    let name_before = w.cmd(&format!("name {p}"));
    assert_eq!(name_before, "ifindex 1 protocol 0x0800");
    let fanout_before = w.cmd(&format!("getopt {q} {SOL_PACKET} 18"));
    assert_eq!(fanout_before, fanout.to_string());
    let q_name = w.cmd(&format!("name {q}"));
    assert_eq!(promiscuity(), 1, "lo's promiscuity before the dump");

    w.dump_and_restore();

    assert_eq!(read_options(&w, &p, &opts), before, "options after restore");
    assert_eq!(w.cmd(&format!("name {p}")), name_before);
    assert_eq!(w.cmd(&format!("getopt {q} {SOL_PACKET} 18")), fanout_before);
    assert_eq!(read_options(&w, &q, &q_opts), q_before, "PACKET_VNET_HDR");
    assert_eq!(w.cmd(&format!("name {q}")), q_name);
    assert_eq!(
        w.cmd(&format!("filter-len {q}")),
        "4",
        "the filter after restore"
    );
    // PACKET_MR_PROMISC makes lo promiscuous once however many times it was added; the
    // membership's count shows in how many drops it takes to end it.
    assert_eq!(promiscuity(), 1, "lo's promiscuity after restore");
    assert_eq!(
        w.cmd(&format!("setopt-raw {p} {SOL_PACKET} 2 {}", mreq_hex(1))),
        "ok"
    );
    assert_eq!(promiscuity(), 1, "added twice: one drop leaves it");
    assert_eq!(
        w.cmd(&format!("setopt-raw {p} {SOL_PACKET} 2 {}", mreq_hex(1))),
        "ok"
    );
    assert_eq!(promiscuity(), 0, "the second drop ends it");
    // A UDP datagram on lo (to a socket of ours: no ICMP error comes back) arrives once,
    // as an IP packet.
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let payload = "frame-after-restore";
    sink.send_to(payload.as_bytes(), sink.local_addr().unwrap())
        .unwrap();
    let frames = w.cmd(&format!("frames {p}"));
    let want = format!("{}:", 20 + 8 + payload.len());
    assert!(
        frames.starts_with(&want) && frames.ends_with(payload) && !frames.contains(' '),
        "one frame of the datagram: {frames}"
    );
    w.kill_restored();
}

#[test]
fn netlink_sockets_keep_port_ids_groups_and_options_and_hear_a_new_link() {
    cryo_bin();
    own_netns();
    let mut w = Workload::spawn("socks", &[]);
    // rtnetlink, kernel-assigned port id, RTMGRP_LINK, and group 33 (past the bind mask).
    let a = w.cmd("socket netlink raw 0");
    assert_eq!(w.cmd(&format!("bind-netlink {a} 0 1")), "ok");
    assert_eq!(w.cmd(&format!("setopt {a} {SOL_NETLINK} 1 33")), "ok");
    let options: &[(i32, i32, i32)] = &[
        (SOL_NETLINK, 3, 1),  // NETLINK_PKTINFO
        (SOL_NETLINK, 5, 1),  // NETLINK_NO_ENOBUFS
        (SOL_NETLINK, 10, 1), // NETLINK_CAP_ACK
        (SOL_NETLINK, 11, 1), // NETLINK_EXT_ACK
        (SOL_NETLINK, 12, 1), // NETLINK_GET_STRICT_CHK
        (SOL_NETLINK, 4, 1),  // NETLINK_BROADCAST_ERROR
        (SOL_NETLINK, 8, 1),  // NETLINK_LISTEN_ALL_NSID
        (libc::SOL_SOCKET, libc::SO_PASSSEC, 1),
        (libc::SOL_SOCKET, libc::SO_PASSCRED, 1),
        (libc::SOL_SOCKET, libc::SO_RCVBUF, 300000),
    ];
    for (level, name, value) in options {
        assert_eq!(w.cmd(&format!("setopt {a} {level} {name} {value}")), "ok");
    }
    // A second kernel-assigned port id: not the pid, a number the kernel picked.
    let b = w.cmd("socket netlink raw 0");
    assert_eq!(w.cmd(&format!("bind-netlink {b} 0 0")), "ok");
    // Generic netlink, connected to the kernel (which binds it), datagram type.
    let c = w.cmd("socket netlink dgram 16");
    assert_eq!(w.cmd(&format!("connect-netlink {c} 0 0")), "ok");
    // Unbound.
    let d = w.cmd("socket netlink raw 0");
    let opts: Vec<(i32, i32)> = options.iter().map(|&(l, n, _)| (l, n)).collect();
    let before = read_options(&w, &a, &opts);
    let names: Vec<String> = [&a, &b, &c, &d]
        .iter()
        .map(|s| w.cmd(&format!("name {s}")))
        .collect();
    assert_eq!(names[3], "pid 0 groups 0", "unbound");
    assert_ne!(names[1], format!("pid {} groups 0", w.pid()));
    let groups = w.cmd(&format!("getopt-raw {a} {SOL_NETLINK} 9 8"));
    assert_eq!(groups, "0100000001000000", "groups 1 and 33");
    // Connected to the kernel, c takes no unicast from another generic netlink socket
    // (ECONNREFUSED).
    let e = w.cmd("socket netlink raw 16");
    assert_eq!(w.cmd(&format!("bind-netlink {e} 0 0")), "ok");
    let c_port = names[2].split_whitespace().nth(1).unwrap().to_string();
    let refused = w.cmd(&format!("sendto-netlink {e} {c_port} hello"));
    assert!(refused.contains("os error 111"), "{refused}");
    let c_type = w.cmd(&format!("getopt {c} 1 {}", libc::SO_TYPE));
    let c_proto = w.cmd(&format!("getopt {c} 1 {}", libc::SO_PROTOCOL));

    w.dump_and_restore();

    let after: Vec<String> = [&a, &b, &c, &d]
        .iter()
        .map(|s| w.cmd(&format!("name {s}")))
        .collect();
    assert_eq!(after, names, "port ids after restore");
    assert_eq!(read_options(&w, &a, &opts), before, "options after restore");
    assert_eq!(w.cmd(&format!("getopt-raw {a} {SOL_NETLINK} 9 8")), groups);
    assert_eq!(w.cmd(&format!("getopt {c} 1 {}", libc::SO_TYPE)), c_type);
    assert_eq!(
        w.cmd(&format!("getopt {c} 1 {}", libc::SO_PROTOCOL)),
        c_proto
    );
    assert_eq!(w.cmd(&format!("peer {c}")), "0 0");
    let refused = w.cmd(&format!("sendto-netlink {e} {c_port} hello"));
    assert!(
        refused.contains("os error 111"),
        "c still connected to the kernel after restore: {refused}"
    );
    // The link added now reaches the restored socket through RTMGRP_LINK.
    ip(&["link", "add", "cryonl0", "type", "bridge"]);
    let heard = w.cmd(&format!("frames {a}"));
    assert!(heard.contains("cryonl0"), "RTM_NEWLINK of cryonl0: {heard}");
    assert_eq!(w.cmd(&format!("recv {b}")), "empty", "b is in no group");
    w.kill_restored();
}

#[test]
fn unread_netlink_messages_are_refused_naming_pid_fd_and_the_target_keeps_them() {
    cryo_bin();
    own_netns();
    let w = Workload::spawn("socks", &[]);
    let a = w.cmd("socket netlink raw 0");
    assert_eq!(w.cmd(&format!("bind-netlink {a} 0 1")), "ok");
    ip(&["link", "add", "cryonl1", "type", "bridge"]);
    let img = w.path("img");
    w.dump(&img, &[])
        .assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_has_word(&a)
        .assert_stderr_mentions("unread netlink messages");
    assert!(w.original_alive(), "the refused dump killed the target");
    w.assert_untouched();
    let heard = w.cmd(&format!("frames {a}"));
    assert!(
        heard.contains("cryonl1"),
        "the message is still there after the refused dump: {heard}"
    );
}

/// The `cryo dump` of `w` refused naming its pid, fd `fd` and `attribute`; `w` runs on.
fn refused(w: &Workload, fd: &str, attribute: &str) {
    w.assert_dump_refused(fd, attribute);
}

/// The obsolete SOCK_PACKET sockets (zdtm packet_sock_spkt): one bound to lo by name, one
/// not bound, each with its protocol and a socket option, come back as they were; the bound
/// one hears a frame on lo after the restore (before: refused, "of type 10 (SOCK_PACKET): not
/// supported").
#[test]
fn obsolete_sock_packet_sockets_come_back_bound_or_not_and_hear_frames() {
    cryo_bin();
    own_netns();
    let mut w = Workload::spawn("socks", &[]);
    let bound = w.cmd(&format!("socket packet packet {}", 0x0003u16.to_be()));
    assert_eq!(w.cmd(&format!("bind-spkt {bound} lo")), "ok");
    let unbound = w.cmd(&format!("socket packet packet {}", 0x0800u16.to_be()));
    let rcvbuf = (libc::SOL_SOCKET, libc::SO_RCVBUF);
    assert_eq!(
        w.cmd(&format!(
            "setopt {unbound} {} {} 300000",
            rcvbuf.0, rcvbuf.1
        )),
        "ok"
    );
    let opts = [
        (libc::SOL_SOCKET, libc::SO_TYPE),
        (libc::SOL_SOCKET, libc::SO_PROTOCOL),
        rcvbuf,
    ];
    let before: Vec<Vec<String>> = [&bound, &unbound]
        .iter()
        .map(|s| read_options(&w, s, &opts))
        .collect();
    assert_eq!(w.cmd(&format!("spkt-name {bound}")), "lo");
    assert_eq!(w.cmd(&format!("spkt-name {unbound}")), "<none>");
    // SO_PROTOCOL reads 0 for them: the protocol hooked shows in /proc/net/packet.
    let hooked = || {
        let table = std::fs::read_to_string("/proc/thread-self/net/packet").unwrap();
        let mut rows: Vec<String> = table
            .lines()
            .skip(1)
            .map(|l| {
                l.split_whitespace()
                    .skip(2)
                    .take(4)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        rows.sort();
        rows
    };
    let hooked_before = hooked();
    assert_eq!(
        hooked_before,
        ["10 0003 1 1", "10 0800 0 1"],
        "type proto iface running"
    );

    w.dump_and_restore();

    assert_eq!(hooked(), hooked_before, "the hooks after restore");

    assert_eq!(w.cmd(&format!("spkt-name {bound}")), "lo");
    assert_eq!(w.cmd(&format!("spkt-name {unbound}")), "<none>");
    let after: Vec<Vec<String>> = [&bound, &unbound]
        .iter()
        .map(|s| read_options(&w, s, &opts))
        .collect();
    assert_eq!(after, before, "type, protocol and buffer after restore");
    // A UDP datagram on lo reaches the bound one as a whole Ethernet frame.
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let payload = "spkt-after-restore";
    sink.send_to(payload.as_bytes(), sink.local_addr().unwrap())
        .unwrap();
    let frames = w.cmd(&format!("frames {bound}"));
    assert!(
        frames.contains(payload),
        "a frame of the datagram: {frames}"
    );
    w.kill_restored();
}

#[test]
fn a_packet_socket_bound_to_an_interface_that_is_down_is_refused_naming_pid_and_fd() {
    cryo_bin();
    own_netns();
    // A veth pair (this kernel has no dummy links), in the test's own namespace.
    ip(&[
        "link", "add", "cryo-v0", "type", "veth", "peer", "name", "cryo-v1",
    ]);
    ip(&["link", "set", "cryo-v0", "up"]);
    let out = Command::new("ip")
        .args(["-o", "link", "show", "cryo-v0"])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let ifindex = text.split(':').next().unwrap().trim().to_string();
    let w = Workload::spawn("socks", &[]);
    let s = w.cmd(&format!("socket packet raw {}", 0x0003u16.to_be()));
    assert_eq!(w.cmd(&format!("bind-packet {s} {ifindex} 3")), "ok");
    ip(&["link", "set", "cryo-v0", "down"]);
    refused(&w, &s, "interface is down or gone");
}

#[test]
fn a_packet_fanout_steered_by_a_classic_program_is_refused_naming_pid_and_fd() {
    cryo_bin();
    own_netns();
    let w = Workload::spawn("socks", &[]);
    let s = w.cmd(&format!("socket packet raw {}", 0x0003u16.to_be()));
    assert_eq!(w.cmd(&format!("bind-packet {s} 1 3")), "ok");
    // PACKET_FANOUT_CBPF (mode 6), group 91: joined before its program is given.
    let fanout = 91 | (6 << 16);
    assert_eq!(w.cmd(&format!("setopt {s} {SOL_PACKET} 18 {fanout}")), "ok");
    refused(&w, &s, "packet fanout steered by a BPF program");
}
