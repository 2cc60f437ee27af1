//! Packet rings (PACKET_RX_RING, PACKET_TX_RING), checked from inside the restored process
//! (the `socks` workload's ring commands, which read and write the ring with the process's own
//! frame index as a PACKET_MMAP program does): the ring comes back mapped where it was, an
//! unread frame is still there, and the kernel's next frame is the one the process expects
//! (a frame sent after the restore is found at the process's index, not elsewhere). What
//! cannot come back exactly is refused naming pid, fd and "packet ring", and the target keeps
//! running as it was.
//!
//! Each test runs in a network namespace of its own (the test thread unshares one; the
//! workload and cryo live there), so the frames on lo are the test's alone.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::net::UdpSocket;
use std::process::Command;

use cryo_tests::{cryo_bin, Workload};

/// `SOL_PACKET`, `PACKET_VERSION`.
const SOL_PACKET: i32 = 263;
const PACKET_VERSION: i32 = 10;
const PACKET_RESERVE: i32 = 12;
/// The ethertype the workload's `ring-send` uses.
const SEND_PROTOCOL: u16 = 0x88b6;

/// Moves the test's thread into a new network namespace with lo up.
fn own_netns() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare CLONE_NEWNET");
    let out = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .output()
        .expect("run ip");
    assert!(out.status.success(), "ip link set lo up");
}

/// UDP datagrams to a socket of the test's on lo: each is one IP frame on lo (a listener
/// is there, so no ICMP error follows).
struct Sender {
    to: UdpSocket,
    from: UdpSocket,
}

impl Sender {
    fn new() -> Self {
        let to = UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = UdpSocket::bind("127.0.0.1:0").unwrap();
        Self { to, from }
    }

    fn send(&self, msg: &str) {
        self.from
            .send_to(msg.as_bytes(), self.to.local_addr().unwrap())
            .unwrap();
    }
}

/// A packet socket of the workload receiving IP frames on lo (SOCK_DGRAM, ETH_P_IP) with an
/// RX ring of `version` (4 KiB blocks of two 2 KiB frames, `blocks` of them; PACKET_RESERVE
/// 32 bytes before each frame's packet): (fd, address).
fn rx_ring_on_lo(w: &Workload, version: u32, blocks: u32) -> (String, String) {
    let p = w.cmd(&format!("socket packet dgram {}", 0x0800u16.to_be()));
    assert_eq!(w.cmd(&format!("bind-packet {p} 1 2048")), "ok");
    assert_eq!(
        w.cmd(&format!("setopt {p} {SOL_PACKET} {PACKET_RESERVE} 32")),
        "ok"
    );
    let at = w.cmd(&format!(
        "ring {p} {version} 4096 {blocks} 2048 {} rx",
        blocks * 2
    ));
    assert!(at.starts_with("0x"), "ring: {at}");
    (p, at)
}

#[test]
fn a_v2_rx_ring_comes_back_with_its_unread_frame_and_the_kernels_next_frame() {
    rx_ring_comes_back_with_its_unread_frame_and_head(1);
}

#[test]
fn a_v1_rx_ring_comes_back_with_its_unread_frame_and_the_kernels_next_frame() {
    rx_ring_comes_back_with_its_unread_frame_and_head(0);
}

/// A TPACKET_V1/V2 (`version`) RX ring that went round once, a frame unread, dumped and
/// restored: the same mapping, options and statuses, the unread frame read, and the frames
/// sent after the restore found at the process's index.
fn rx_ring_comes_back_with_its_unread_frame_and_head(version: u32) {
    cryo_bin();
    own_netns();
    let mut w = Workload::spawn("socks", &[]);
    let (p, _) = rx_ring_on_lo(&w, version, 2);
    let udp = Sender::new();
    // Round the four frames once and a bit: m1..m5 read (frames 0-3, then 0), m6 left
    // unread in frame 1; the kernel's next frame is 2, the process's own index 1.
    for i in 1..=5 {
        udp.send(&format!("m{i}"));
        assert_eq!(
            w.cmd(&format!("ring-read {p} m{i}")),
            format!("frame {}", (i - 1) % 4)
        );
    }
    udp.send("m6");
    let state = w.cmd(&format!("ring-state {p}"));
    assert_eq!(
        state, "next 1 kukk",
        "one frame waiting at the process's index"
    );
    let map = w.cmd(&format!("ring-map {p}"));
    let read_version = w.cmd(&format!("getopt {p} {SOL_PACKET} {PACKET_VERSION}"));
    assert_eq!(read_version, version.to_string());
    let reserve = w.cmd(&format!("getopt {p} {SOL_PACKET} {PACKET_RESERVE}"));
    assert_eq!(reserve, "32");

    w.dump_and_restore();

    assert_eq!(w.cmd(&format!("ring-map {p}")), map, "the ring's mapping");
    assert_eq!(
        w.cmd(&format!("getopt {p} {SOL_PACKET} {PACKET_VERSION}")),
        read_version
    );
    assert_eq!(
        w.cmd(&format!("getopt {p} {SOL_PACKET} {PACKET_RESERVE}")),
        reserve
    );
    assert_eq!(
        w.cmd(&format!("ring-state {p}")),
        state,
        "the frames' statuses"
    );
    assert_eq!(
        w.cmd(&format!("ring-read {p} m6")),
        "frame 1",
        "the frame not read at dump"
    );
    // The kernel fills frame 2 next, where the process looks.
    udp.send("m7");
    assert_eq!(w.cmd(&format!("ring-read {p} m7")), "frame 2");
    udp.send("m8");
    assert_eq!(w.cmd(&format!("ring-read {p} m8")), "frame 3");
    assert_eq!(w.cmd(&format!("name {p}")), "ifindex 1 protocol 0x0800");
}

#[test]
fn a_v3_rx_ring_never_used_comes_back_and_receives_in_its_first_block() {
    cryo_bin();
    own_netns();
    let mut w = Workload::spawn("socks", &[]);
    let (p, _) = rx_ring_on_lo(&w, 2, 4);
    let map = w.cmd(&format!("ring-map {p}"));
    assert_eq!(w.cmd(&format!("ring-state {p}")), "next 0 kkkk");

    w.dump_and_restore();

    assert_eq!(w.cmd(&format!("ring-map {p}")), map);
    assert_eq!(
        w.cmd(&format!("getopt {p} {SOL_PACKET} {PACKET_VERSION}")),
        "2"
    );
    let udp = Sender::new();
    udp.send("v3-after");
    assert_eq!(w.cmd(&format!("ring-read {p} v3-after")), "block 0");
    udp.send("v3-again");
    assert_eq!(w.cmd(&format!("ring-read {p} v3-again")), "block 1");
}

#[test]
fn a_v3_rx_ring_that_received_a_frame_is_refused_and_the_frame_kept() {
    cryo_bin();
    own_netns();
    let w = Workload::spawn("socks", &[]);
    let (p, _) = rx_ring_on_lo(&w, 2, 4);
    let udp = Sender::new();
    udp.send("v3-before");
    // The retire timer (10 ms) hands the block to the process; it is not read yet.
    w.await_reply(&format!("ring-state {p}"), |s| s == "next 0 ukkk");
    w.assert_dump_refused(&p, "packet ring (TPACKET_V3)");
    assert_eq!(w.cmd(&format!("ring-read {p} v3-before")), "block 0");
}

#[test]
fn a_tx_ring_never_used_comes_back_and_sends_from_the_processs_first_frame() {
    cryo_bin();
    own_netns();
    let mut w = Workload::spawn("socks", &[]);
    // The sender: SOCK_RAW on lo, a TX ring of four 2 KiB frames (V2); the receiver a plain
    // packet socket hooked to the sender's ethertype on lo.
    let p = w.cmd("socket packet raw 0");
    assert_eq!(w.cmd(&format!("bind-packet {p} 1 {SEND_PROTOCOL}")), "ok");
    assert!(w
        .cmd(&format!("ring {p} 1 4096 2 2048 4 tx"))
        .starts_with("0x"));
    let q = w.cmd(&format!("socket packet dgram {}", SEND_PROTOCOL.to_be()));
    assert_eq!(w.cmd(&format!("bind-packet {q} 1 {SEND_PROTOCOL}")), "ok");
    let map = w.cmd(&format!("ring-map {p}"));

    w.dump_and_restore();

    assert_eq!(w.cmd(&format!("ring-map {p}")), map);
    assert_eq!(w.cmd(&format!("ring-send {p} tx-after")), "sent 0");
    let got = w.cmd(&format!("frames {q}"));
    assert!(got.contains("tx-after"), "the receiver got {got}");
    assert_eq!(w.cmd(&format!("ring-send {p} tx-again")), "sent 1");
}

#[test]
fn a_tx_ring_that_sent_frames_is_refused_naming_pid_fd_and_packet_ring() {
    cryo_bin();
    own_netns();
    let w = Workload::spawn("socks", &[]);
    let p = w.cmd("socket packet raw 0");
    assert_eq!(w.cmd(&format!("bind-packet {p} 1 {SEND_PROTOCOL}")), "ok");
    assert!(w
        .cmd(&format!("ring {p} 1 4096 2 2048 4 tx"))
        .starts_with("0x"));
    assert_eq!(w.cmd(&format!("ring-send {p} sent-once")), "sent 0");
    w.assert_dump_refused(&p, "packet ring: its TX ring has been used");
    assert_eq!(w.cmd(&format!("ring-send {p} after")), "sent 1");
}

#[test]
fn a_tx_frame_pending_send_is_refused_as_temporary() {
    cryo_bin();
    own_netns();
    let w = Workload::spawn("socks", &[]);
    let p = w.cmd("socket packet raw 0");
    assert_eq!(w.cmd(&format!("bind-packet {p} 1 {SEND_PROTOCOL}")), "ok");
    assert!(w
        .cmd(&format!("ring {p} 1 4096 2 2048 4 tx"))
        .starts_with("0x"));
    assert_eq!(w.cmd(&format!("ring-queue {p} waiting")), "queued 0");
    let out = w.dump(&w.path("img"), &["--check-only"]);
    assert_eq!(out.status.code(), Some(2), "a temporary refusal: {out}");
    out.assert_stderr_mentions("TX frames wait to be sent");
    w.assert_dump_refused(&p, "packet ring: 1 TX frames wait to be sent");
    // Still waiting, and sent by the next send().
    assert_eq!(w.cmd(&format!("ring-send {p} next")), "sent 1");
}

#[test]
fn an_rx_ring_whose_timestamps_do_not_tell_the_next_frame_is_refused() {
    cryo_bin();
    own_netns();
    let w = Workload::spawn("socks", &[]);
    let (p, _) = rx_ring_on_lo(&w, 1, 2);
    let udp = Sender::new();
    udp.send("r1");
    assert_eq!(w.cmd(&format!("ring-read {p} r1")), "frame 0");
    // The process stamps every header alike: any frame could be the last filled.
    assert_eq!(w.cmd(&format!("ring-restamp {p}")), "ok");
    w.assert_dump_refused(&p, "the kernel's next RX frame cannot be told");
    udp.send("r2");
    assert_eq!(w.cmd(&format!("ring-read {p} r2")), "frame 1");
}

#[test]
fn an_unread_frame_whose_copy_waits_in_the_queue_is_refused_as_temporary() {
    cryo_bin();
    own_netns();
    let w = Workload::spawn("socks", &[]);
    let p = w.cmd(&format!("socket packet dgram {}", 0x0800u16.to_be()));
    assert_eq!(w.cmd(&format!("bind-packet {p} 1 2048")), "ok");
    // PACKET_COPY_THRESH: a frame too long for its 2 KiB slot is queued whole as well.
    assert_eq!(w.cmd(&format!("setopt {p} {SOL_PACKET} 7 1")), "ok");
    assert!(w
        .cmd(&format!("ring {p} 1 4096 2 2048 4 rx"))
        .starts_with("0x"));
    let udp = Sender::new();
    udp.send(&format!("long{}", "x".repeat(3000)));
    w.await_reply(&format!("ring-state {p}"), |s| s == "next 0 ukkk");
    w.assert_dump_refused(&p, "(TP_STATUS_COPY)");
    assert_eq!(w.cmd(&format!("ring-read {p} long")), "frame 0");
}

#[test]
fn a_dump_leaving_a_ring_running_leaves_its_frames_and_head_as_they_were() {
    cryo_bin();
    own_netns();
    let w = Workload::spawn("socks", &[]);
    let (p, _) = rx_ring_on_lo(&w, 1, 2);
    let udp = Sender::new();
    udp.send("l1");
    assert_eq!(w.cmd(&format!("ring-read {p} l1")), "frame 0");
    udp.send("l2");
    let state = w.cmd(&format!("ring-state {p}"));
    assert_eq!(state, "next 1 kukk");
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", w.pid())).unwrap();
    w.dump(&w.path("img"), &["--leave-running"])
        .assert_success();
    w.assert_untouched();
    assert_eq!(w.cmd(&format!("ring-state {p}")), state);
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/maps", w.pid())).unwrap(),
        maps
    );
    assert_eq!(w.cmd(&format!("ring-read {p} l2")), "frame 1");
    udp.send("l3");
    assert_eq!(w.cmd(&format!("ring-read {p} l3")), "frame 2");
}

#[test]
fn a_ring_mapped_in_part_is_refused_naming_pid_fd_and_packet_ring() {
    cryo_bin();
    own_netns();
    let w = Workload::spawn("socks", &[]);
    let (p, _) = rx_ring_on_lo(&w, 1, 2);
    assert_eq!(w.cmd(&format!("ring-unmap-tail {p}")), "ok");
    w.assert_dump_refused(&p, "only a whole mapping comes back");
}

#[test]
fn a_ring_mapped_after_its_fd_was_closed_is_refused_naming_pid_and_packet_ring() {
    cryo_bin();
    own_netns();
    let w = Workload::spawn("socks", &[]);
    let (p, _) = rx_ring_on_lo(&w, 1, 2);
    let map = w.cmd(&format!("ring-map {p}"));
    assert_eq!(w.cmd(&format!("close {p}")), "ok");
    let out = w.dump(&w.path("img"), &[]);
    out.assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_mentions("socket:[")
        .assert_stderr_mentions("no packet ring held at an fd");
    w.assert_untouched();
    assert_eq!(w.cmd(&format!("ring-map {p}")), map, "still mapped");
}

#[test]
fn a_ring_mapped_private_comes_back_private_with_the_page_the_process_wrote() {
    cryo_bin();
    own_netns();
    let mut w = Workload::spawn("socks", &[]);
    let (p, _) = rx_ring_on_lo(&w, 1, 2);
    w.cmd(&format!("ring-private {p}"));
    let before = w.cmd(&format!("ring-private-state {p}"));
    assert!(before.ends_with(" rw-p 00000000 cow same"), "{before}");

    w.dump_and_restore();

    assert_eq!(w.cmd(&format!("ring-private-state {p}")), before);
    // The shared mapping is the ring's still: a frame arrives in it.
    let udp = Sender::new();
    udp.send("after-private");
    assert_eq!(w.cmd(&format!("ring-read {p} after-private")), "frame 0");
}
