//! Packet rings (PACKET_RX_RING, PACKET_TX_RING): their geometry, their frames as the process
//! sees them through its mapping, and the kernel's next RX frame, which the process cannot read
//! but must find where its own index says.
//!
//! ```text
//! dump:    packet_diag RX_RING/TX_RING: the request (block size/nr, frame size/nr, V3's
//!          retire_blk_tov, sizeof_priv, features); the rings mapped read-only from a
//!          duplicate and copied until two copies agree (frames arriving meanwhile);
//!          RX head (TPACKET_V1/V2): the frame after the last one the kernel filled, told by
//!          the frames' timestamps (the kernel fills frames in ring order, each stamped; the
//!          process hands a frame back by its status word only, the stamp stays)
//!          refused: a V3 ring that received a frame (its current block and fill offset are
//!          not shown), a TX ring that was used (frames pending send: temporary), an RX head
//!          the stamps do not tell
//! restore: before the socket's own bind: bound to lo with an ethertype nothing else uses
//!          (no frame of the network reaches the ring), its queue drained, the rings set
//!          with the same request, the RX head moved to its place by as many frames sent on
//!          lo, the dumped bytes written back whole (statuses too); then the socket's bind
//! ```
//!
//! The process's mapping of the rings is a VMA of kind PACKET_RING, mapped again by the memory
//! restore through the process's own fd on the socket (memory/restore.rs).

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use cryo_proto::image as pb;
pub(crate) use cryo_unix_sockets::family_diag::PacketRing as Ring;

use crate::sys::mmap::Mapping;
use crate::sys::sockopt;

/// `SOL_PACKET`, `PACKET_RX_RING`, `PACKET_TX_RING`.
const SOL_PACKET: i32 = 263;
const PACKET_RX_RING: i32 = 5;
const PACKET_TX_RING: i32 = 13;
/// `PACKET_VERSION`'s values.
pub(crate) const TPACKET_V1: i32 = 0;
const TPACKET_V2: i32 = 1;
const TPACKET_V3: i32 = 2;
/// `TP_STATUS_USER` (RX: the frame is the process's); TX: `TP_STATUS_SEND_REQUEST`,
/// `TP_STATUS_SENDING`.
const TP_STATUS_USER: u32 = 1;
/// `TP_STATUS_COPY`: the frame was too long for its slot; the whole of it waits in the
/// socket's receive queue.
const TP_STATUS_COPY: u32 = 1 << 1;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_SENDING: u32 = 2;
/// The ethertype of the frames that move a restored ring's head (IEEE 802 local
/// experimental ethertype 1): only a socket hooked to every protocol on lo sees them.
const FEED_PROTOCOL: u16 = 0x88b5;
/// Frames sent before waiting for them to land (lo's backlog holds 1000 by default).
const FEED_BATCH: u32 = 256;
/// How long the frames fed through lo may take to land.
const FEED_WAIT: Duration = Duration::from_secs(2);
/// A ring larger than this in an image is refused (1 GiB).
const MAX_RING: u64 = 1 << 30;
use crate::memory::PAGE;

/// A packet socket's rings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Rings {
    /// PACKET_RX_RING's request.
    pub rx: Option<Ring>,
    /// PACKET_TX_RING's request.
    pub tx: Option<Ring>,
    /// The mapped bytes (RX ring, then TX ring), trailing zeroes left out.
    pub frames: Vec<u8>,
    /// The kernel's next RX frame (V1/V2).
    pub rx_head: u32,
}

/// Bytes of one ring.
fn size(r: &Ring) -> u64 {
    u64::from(r.block_size) * u64::from(r.block_nr)
}

/// Bytes the rings take in a mapping: RX ring first, TX ring after it.
pub(crate) fn mapped_len(rx: Option<&Ring>, tx: Option<&Ring>) -> u64 {
    rx.map_or(0, size) + tx.map_or(0, size)
}

/// The mapped length of the rings of packet socket record `p` (0: none).
pub(crate) fn record_len(p: &pb::PacketSocket) -> u64 {
    let ring = |r: &pb::PacketRing| u64::from(r.block_size) * u64::from(r.block_nr);
    p.rx_ring.as_ref().map_or(0, ring) + p.tx_ring.as_ref().map_or(0, ring)
}

/// Where frame `i` of ring `r` starts in it (frames do not cross blocks).
fn frame_at(r: &Ring, i: u32) -> usize {
    let per_block = r.block_size / r.frame_size;
    ((i / per_block) as usize) * r.block_size as usize + ((i % per_block) * r.frame_size) as usize
}

/// The native u32 at `at` of `b` (0 past its end: trailing zeroes are left out of images).
fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|w| w.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

/// The version's name, for messages.
fn version_name(version: i32) -> String {
    match version {
        TPACKET_V1 => "TPACKET_V1".into(),
        TPACKET_V2 => "TPACKET_V2".into(),
        TPACKET_V3 => "TPACKET_V3".into(),
        v => format!("tpacket version {v}"),
    }
}

/// Whether ring `r` is one the kernel could have made (as packet_set_ring checks it), its
/// size bounded: what is wrong otherwise.
pub(crate) fn check_geometry(r: &Ring) -> Result<(), String> {
    if r.block_size == 0 || !u64::from(r.block_size).is_multiple_of(PAGE) || r.block_nr == 0 {
        return Err(format!(
            "block size {} x {} is no whole number of pages",
            r.block_size, r.block_nr
        ));
    }
    if r.frame_size < 16 || !r.frame_size.is_multiple_of(16) || r.frame_size > r.block_size {
        return Err(format!("frame size {}", r.frame_size));
    }
    let per_block = r.block_size / r.frame_size;
    if u64::from(per_block) * u64::from(r.block_nr) != u64::from(r.frame_nr) {
        return Err(format!(
            "{} frames, not {per_block} per block of {}",
            r.frame_nr, r.block_nr
        ));
    }
    if size(r) > MAX_RING {
        return Err(format!("{} bytes, more than {MAX_RING}", size(r)));
    }
    Ok(())
}

/// Checks the rings of an image's record: geometry, frames inside them, the head a frame.
pub(crate) fn check(r: &Rings) -> Result<(), String> {
    for ring in r.rx.iter().chain(&r.tx) {
        check_geometry(ring)?;
    }
    let len = mapped_len(r.rx.as_ref(), r.tx.as_ref());
    if r.frames.len() as u64 > len {
        return Err(format!(
            "{} bytes of frames for rings of {len}",
            r.frames.len()
        ));
    }
    if r.rx_head != 0 && r.rx.is_none_or(|rx| r.rx_head >= rx.frame_nr) {
        return Err(format!("RX head {} outside the ring", r.rx_head));
    }
    Ok(())
}

/// Reads the rings of `dup` (a duplicate of the process's fd; `version` its PACKET_VERSION):
/// `Err` says why they cannot come back exactly (with "a temporary state" when a retry may
/// pass). Touches nothing of the socket (cryo's mapping of it goes with the function).
pub(crate) fn capture(
    dup: BorrowedFd<'_>,
    version: i32,
    rx: Option<Ring>,
    tx: Option<Ring>,
) -> Result<Rings, String> {
    for ring in rx.iter().chain(&tx) {
        check_geometry(ring).map_err(|e| format!("packet ring of an unexpected shape: {e}"))?;
    }
    let len = mapped_len(rx.as_ref(), tx.as_ref());
    let map = Mapping::map_fd(dup, len as usize, false)
        .map_err(|e| format!("packet ring: cannot map it to read it ({e})"))?;
    // The kernel may fill RX frames while they are read: two copies that agree hold no
    // frame half written.
    let mut frames = map.copy_out();
    let mut agreed = false;
    for _ in 0..5 {
        let again = map.copy_out();
        if again == frames {
            agreed = true;
            break;
        }
        frames = again;
    }
    drop(map);
    if !agreed {
        return Err(
            "packet ring: frames kept arriving while it was read: a temporary state, retry later"
                .into(),
        );
    }
    let mut rx_head = 0;
    if let Some(rx) = &rx {
        let ring = &frames[..size(rx) as usize];
        rx_head = match version {
            TPACKET_V3 => {
                v3_unused(rx, ring)?;
                0
            }
            _ => {
                no_copies_waiting(rx, ring)?;
                rx_head_of(rx, version, ring)?
            }
        };
    }
    if let Some(tx) = &tx {
        let start = rx.as_ref().map_or(0, size) as usize;
        tx_unused(tx, version, &frames[start..])?;
    }
    let used = frames.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    frames.truncate(used);
    Ok(Rings {
        rx,
        tx,
        frames,
        rx_head,
    })
}

/// The kernel's next frame of V1/V2 RX ring `ring`: the one after the frame stamped last.
fn rx_head_of(rx: &Ring, version: i32, ring: &[u8]) -> Result<u32, String> {
    // tpacket_hdr: tp_sec at 20, tp_usec at 24; tpacket2_hdr: tp_sec at 16, tp_nsec at 20.
    let stamp = |i: u32| {
        let h = frame_at(rx, i);
        if version == TPACKET_V1 {
            u64::from(u32_at(ring, h + 20)) * 1_000_000_000 + u64::from(u32_at(ring, h + 24)) * 1000
        } else {
            u64::from(u32_at(ring, h + 16)) * 1_000_000_000 + u64::from(u32_at(ring, h + 20))
        }
    };
    let stamps: Vec<u64> = (0..rx.frame_nr).map(stamp).collect();
    head_from_stamps(&stamps).ok_or_else(|| {
        format!(
            "packet ring ({}): the kernel's next RX frame cannot be told from the frames' \
             timestamps (several frames are the latest, or they are out of ring order)",
            version_name(version)
        )
    })
}

/// The index after the frame stamped last, when exactly one such index leaves the stamps
/// in ring order (0 for none stamped: a ring never filled).
fn head_from_stamps(stamps: &[u64]) -> Option<u32> {
    let n = stamps.len();
    if stamps.iter().all(|&s| s == 0) || n == 1 {
        return Some(0);
    }
    // From the head on, round the ring, the stamps never go back (frames never filled, 0,
    // first, then the oldest fill to the latest): the ring goes back once, from the frame
    // stamped last to the head. Never (all alike) or more than once: no head is certain.
    let mut back = (0..n).filter(|&i| stamps[i] > stamps[(i + 1) % n]);
    let last = back.next()?;
    if back.next().is_some() {
        return None;
    }
    u32::try_from((last + 1) % n).ok()
}

/// Refuses a V1/V2 RX ring with a frame the process has not read whose whole copy waits in
/// the receive queue (TP_STATUS_COPY): the queue is not carried, the process would read
/// another frame there, or none.
fn no_copies_waiting(rx: &Ring, ring: &[u8]) -> Result<(), String> {
    let copies = (0..rx.frame_nr)
        .filter(|&i| {
            let s = u32_at(ring, frame_at(rx, i));
            s & TP_STATUS_USER != 0 && s & TP_STATUS_COPY != 0
        })
        .count();
    if copies == 0 {
        return Ok(());
    }
    Err(format!(
        "packet ring: {copies} unread frames whose whole copy waits in the receive queue \
         (TP_STATUS_COPY), which is not carried: a temporary state, retry later"
    ))
}

/// Refuses a V3 RX ring that has received a frame: only the ring as packet_set_ring leaves
/// it (block 0 open, empty, sequence 1; the others untouched) comes back exactly.
fn v3_unused(rx: &Ring, ring: &[u8]) -> Result<(), String> {
    for b in 0..rx.block_nr {
        let h = b as usize * rx.block_size as usize;
        // tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1: block_status at
        // 8, num_pkts at 12, seq_num (u64) at 24.
        let (status, pkts) = (u32_at(ring, h + 8), u32_at(ring, h + 12));
        let seq = u64::from(u32_at(ring, h + 24)) | u64::from(u32_at(ring, h + 28)) << 32;
        let fresh = status == 0 && pkts == 0 && seq == u64::from(b == 0);
        if !fresh {
            return Err(format!(
                "packet ring (TPACKET_V3): block {b} has been used (status {status:#x}, \
                 {pkts} frames, sequence {seq}): the kernel's current block and its fill \
                 offset are not shown"
            ));
        }
    }
    Ok(())
}

/// Refuses a TX ring that was used: the kernel's next TX frame is not shown, and frames
/// pending send would be sent again, or lost.
fn tx_unused(tx: &Ring, version: i32, ring: &[u8]) -> Result<(), String> {
    if ring.iter().all(|&b| b == 0) {
        return Ok(());
    }
    // tp_status: at 0 (V1's low half, V2), at 20 in V3's tpacket3_hdr.
    let at = if version == TPACKET_V3 { 20 } else { 0 };
    let pending = (0..tx.frame_nr)
        .filter(|&i| {
            let s = u32_at(ring, frame_at(tx, i) + at);
            s & (TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING) != 0
        })
        .count();
    if pending > 0 {
        return Err(format!(
            "packet ring: {pending} TX frames wait to be sent (TP_STATUS_SEND_REQUEST/SENDING): \
             a temporary state, retry later"
        ));
    }
    Err("packet ring: its TX ring has been used (the kernel's next TX frame is not shown)".into())
}

/// The tpacket_req (V1/V2) or tpacket_req3 (V3) of ring `r`.
fn request(r: &Ring, version: i32) -> Vec<u8> {
    let mut words = vec![r.block_size, r.block_nr, r.frame_size, r.frame_nr];
    if version == TPACKET_V3 {
        words.extend([r.retire_blk_tov, r.sizeof_priv, r.features]);
    }
    words.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

/// Makes the rings of `fd` again (PACKET_VERSION set, not bound yet: the caller binds it
/// after), their RX head where it was and their bytes as dumped. `hooked`: the socket was
/// made with a protocol, or will be bound to one (frames may reach it: it is held on lo
/// meanwhile). Errors name the step.
pub(crate) fn restore(
    fd: BorrowedFd<'_>,
    version: i32,
    r: &Rings,
    hooked: bool,
) -> Result<(), (&'static str, std::io::Error)> {
    let lo = if hooked && r.rx.is_some() {
        // No frame of the network may land in the ring before its bytes are back: the hook
        // moves to lo and an ethertype nothing else uses, and what queued since socket() is
        // dropped (no ring yet: it went to the receive queue).
        let lo = nix::net::if_::if_nametoindex("lo")
            .map_err(|e| ("find lo", std::io::Error::from(e)))? as i32;
        sockopt::bind_packet(fd, lo, FEED_PROTOCOL).map_err(|e| ("bind to lo", e))?;
        // lo down: the hook stays out and the kernel left ENETDOWN pending; SO_ERROR takes it.
        let err = sockopt::get_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)
            .map_err(|e| ("getsockopt SO_ERROR", e))?;
        sockopt::drain(fd).map_err(|e| ("drain the receive queue", e))?;
        (err == 0).then_some(lo)
    } else {
        None
    };
    if let Some(rx) = &r.rx {
        sockopt::set_bytes(fd, SOL_PACKET, PACKET_RX_RING, &request(rx, version))
            .map_err(|e| ("PACKET_RX_RING", e))?;
    }
    if let Some(tx) = &r.tx {
        sockopt::set_bytes(fd, SOL_PACKET, PACKET_TX_RING, &request(tx, version))
            .map_err(|e| ("PACKET_TX_RING", e))?;
    }
    let len = mapped_len(r.rx.as_ref(), r.tx.as_ref()) as usize;
    let mut map = Mapping::map_fd(fd, len, true).map_err(|e| ("map the rings", e))?;
    if let (Some(rx), true) = (&r.rx, r.rx_head != 0) {
        let lo = lo.ok_or_else(|| {
            (
                "move the RX head",
                std::io::Error::other("lo is down here: no frame can move the ring's head"),
            )
        })?;
        feed(fd, &map, rx, r.rx_head, lo)?;
    }
    map.write_at(0, &r.frames)
        .map_err(|e| ("write the frames back", e))?;
    let zeroes = vec![0u8; len - r.frames.len()];
    map.write_at(r.frames.len(), &zeroes)
        .map_err(|e| ("write the frames back", e))?;
    Ok(())
}

/// Sends `head` frames on `lo` that land in frames 0 to head - 1 of the fresh RX ring of `fd`
/// (mapped at `map`): the kernel's next frame is `head` then.
fn feed(
    fd: BorrowedFd<'_>,
    map: &Mapping,
    rx: &Ring,
    head: u32,
    lo: i32,
) -> Result<(), (&'static str, std::io::Error)> {
    let step = "move the RX head";
    let sender = sockopt::socket(libc::AF_PACKET, libc::SOCK_RAW, 0).map_err(|e| (step, e))?;
    // Ethernet header (to and from 00:00:00:00:00:00, FEED_PROTOCOL), a minimum frame.
    let mut frame = [0u8; 60];
    frame[12..14].copy_from_slice(&FEED_PROTOCOL.to_be_bytes());
    // tp_status: the low half of V1's unsigned long, V2's u32 (V3 has no head to move).
    let filled = |i: u32| {
        map.read_u32(frame_at(rx, i))
            .is_some_and(|s| s & TP_STATUS_USER != 0)
    };
    let mut sent = 0;
    while sent < head {
        let batch = FEED_BATCH.min(head - sent);
        for _ in 0..batch {
            sockopt::send_packet(sender.as_fd(), lo, FEED_PROTOCOL, &frame)
                .map_err(|e| (step, e))?;
        }
        sent += batch;
        let deadline = Instant::now() + FEED_WAIT;
        while !filled(sent - 1) {
            if Instant::now() > deadline {
                return Err((
                    step,
                    std::io::Error::other(format!(
                        "frame {} of the ring still empty after {sent} frames sent on lo",
                        sent - 1
                    )),
                ));
            }
            let mut pfd = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut pfd, 10u16);
        }
    }
    if filled(head) {
        return Err((
            step,
            std::io::Error::other(format!(
                "frame {head} filled too: other frames reached the ring"
            )),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_follows_the_frame_stamped_last() {
        assert_eq!(head_from_stamps(&[0, 0, 0, 0]), Some(0));
        assert_eq!(head_from_stamps(&[10, 20, 0, 0]), Some(2));
        assert_eq!(head_from_stamps(&[10, 20, 30, 40]), Some(0));
        // Wrapped: frames 0 and 1 filled again after 2 and 3.
        assert_eq!(head_from_stamps(&[50, 60, 30, 40]), Some(2));
        // Two frames stamped alike, in order: the later one.
        assert_eq!(head_from_stamps(&[10, 20, 20, 0]), Some(3));
        // Stamps out of ring order (a clock set back, a header the process wrote).
        assert_eq!(head_from_stamps(&[30, 10, 20, 5]), None);
        // All alike: any frame could be the last.
        assert_eq!(head_from_stamps(&[7, 7, 7, 7]), None);
        // A run stamped alike at the end of the fill; a ring of one frame.
        assert_eq!(head_from_stamps(&[9, 9, 5, 7, 9]), Some(2));
        assert_eq!(head_from_stamps(&[5]), Some(0));
    }

    #[test]
    fn frames_sit_in_their_blocks() {
        let r = Ring {
            block_size: 8192,
            block_nr: 2,
            frame_size: 3000,
            frame_nr: 4,
            ..Ring::default()
        };
        assert!(check_geometry(&r).is_err(), "3000 is not 16-aligned");
        let r = Ring {
            frame_size: 2048,
            frame_nr: 8,
            ..r
        };
        check_geometry(&r).unwrap();
        assert_eq!(frame_at(&r, 3), 6144);
        assert_eq!(frame_at(&r, 4), 8192);
        assert_eq!(frame_at(&r, 7), 8192 + 6144);
        assert!(check_geometry(&Ring { frame_nr: 7, ..r }).is_err());
    }

    fn put(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    #[test]
    fn only_a_v3_ring_as_set_up_passes() {
        let r = Ring {
            block_size: 4096,
            block_nr: 2,
            frame_size: 2048,
            frame_nr: 4,
            ..Ring::default()
        };
        let mut ring = vec![0u8; 8192];
        // Block 0 as packet_set_ring opens it: version, offset_to_priv, sequence 1.
        put(&mut ring, 0, 2);
        put(&mut ring, 4, 48);
        put(&mut ring, 24, 1);
        v3_unused(&r, &ring).unwrap();
        // A frame in block 0, or block 1 opened (sequence 2): used.
        let mut filled = ring.clone();
        put(&mut filled, 12, 1);
        assert!(v3_unused(&r, &filled).unwrap_err().contains("block 0"));
        let mut next = ring.clone();
        put(&mut next, 4096 + 24, 2);
        assert!(v3_unused(&r, &next).unwrap_err().contains("block 1"));
    }

    #[test]
    fn a_tx_ring_written_to_is_refused_pending_frames_as_temporary() {
        let r = Ring {
            block_size: 4096,
            block_nr: 1,
            frame_size: 2048,
            frame_nr: 2,
            ..Ring::default()
        };
        let mut ring = vec![0u8; 4096];
        tx_unused(&r, TPACKET_V2, &ring).unwrap();
        put(&mut ring, 2048 + 4, 60);
        let used = tx_unused(&r, TPACKET_V2, &ring).unwrap_err();
        assert!(
            used.contains("has been used") && !used.contains("temporary"),
            "{used}"
        );
        put(&mut ring, 2048, TP_STATUS_SEND_REQUEST);
        let pending = tx_unused(&r, TPACKET_V2, &ring).unwrap_err();
        assert!(pending.contains("1 TX frames wait") && pending.contains("a temporary state"));
        // V3 keeps tp_status at 20.
        assert!(tx_unused(&r, TPACKET_V3, &ring)
            .unwrap_err()
            .contains("has been used"));
    }

    #[test]
    fn an_unread_frame_with_its_copy_queued_is_refused() {
        let r = Ring {
            block_size: 4096,
            block_nr: 1,
            frame_size: 2048,
            frame_nr: 2,
            ..Ring::default()
        };
        let mut ring = vec![0u8; 4096];
        put(&mut ring, 0, TP_STATUS_COPY);
        // Handed back already (no TP_STATUS_USER): nothing waits for it.
        no_copies_waiting(&r, &ring).unwrap();
        put(&mut ring, 2048, TP_STATUS_USER | TP_STATUS_COPY);
        assert!(no_copies_waiting(&r, &ring)
            .unwrap_err()
            .contains("TP_STATUS_COPY"));
    }
}
