//! The target functions: each feeds one parser the bytes it is given and checks its contract.

use std::path::Path;

use cryo_proto::frame::{decode, encode, ImageKind};
use cryo_proto::image::{FileDesc, Inventory, MmCore, ProcessEntry, TaskCore};
use prost::Message;

/// Header and record-header layout of an image frame (proto/src/frame.rs).
const HEADER_LEN: usize = 32;
const RECORD_HEADER_LEN: usize = 8;

/// The netlink sequence number of the first message of `data` (0 if too short), so that
/// the parsers' "answer to my request" filter lets the fuzzer's messages through.
fn first_seq(data: &[u8]) -> u32 {
    data.get(8..12)
        .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decodes `data` as an image of `kind` holding `M`; what decodes must encode and decode
/// back to the same records.
fn frame_of<M: Message + Default + PartialEq>(kind: ImageKind, data: &[u8]) {
    let path = Path::new("fuzz.img");
    if let Ok(records) = decode::<M>(path, kind, data) {
        let again = encode(kind, &records);
        let back = decode::<M>(path, kind, &again).expect("a frame cryo encoded is refused");
        assert!(back == records, "records changed across encode and decode");
    }
}

/// Every image kind with its record type.
fn every_kind(data: &[u8]) {
    frame_of::<Inventory>(ImageKind::Inventory, data);
    frame_of::<ProcessEntry>(ImageKind::Pstree, data);
    frame_of::<TaskCore>(ImageKind::Core, data);
    frame_of::<MmCore>(ImageKind::Mm, data);
    frame_of::<FileDesc>(ImageKind::Files, data);
}

/// `data` with its header checksum and every record checksum it can reach made valid.
fn with_valid_checksums(data: &[u8]) -> Vec<u8> {
    let mut buf = data.to_vec();
    if buf.len() < HEADER_LEN {
        return buf;
    }
    let mut off = HEADER_LEN;
    while let Some(head) = buf.get(off..off + RECORD_HEADER_LEN) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let start = off + RECORD_HEADER_LEN;
        let Some(bytes) = buf.get(start..start.saturating_add(len)) else {
            break;
        };
        let crc = crc32c::crc32c(bytes);
        buf[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
        off = start + len;
    }
    let c = crc32c::crc32c(&buf[..20]);
    let hcrc = crc32c::crc32c_append(c, &buf[24..HEADER_LEN]);
    buf[20..24].copy_from_slice(&hcrc.to_le_bytes());
    buf
}

/// Image frames: as they come (size, magic, version, checksums judged), then with valid
/// checksums (the record walk and the protobuf decode of every record type).
pub fn image_frame(data: &[u8]) {
    every_kind(data);
    every_kind(&with_valid_checksums(data));
}

/// The limits the restore checks records against, as on the machines cryo runs on.
const LIMITS: cryo_proto::sanity::Limits = cryo_proto::sanity::Limits {
    pid_max: 4_194_304,
    nofile: 1 << 20,
    max_map_count: 65_530,
};

/// The semantic checks a restore runs after decoding (cryo_proto::sanity), on valid-framed
/// images (checksums made valid, so every mutation reaches them): never a panic or a hang,
/// and what they accept satisfies what the restore then relies on (page runs inside their
/// VMA and the pages file, with no overflow).
pub fn image_checks(data: &[u8]) {
    use cryo_proto::sanity::{check_core, check_entry, check_mm, PAGE};
    let data = with_valid_checksums(data);
    let path = Path::new("fuzz.img");
    if let Ok(entries) = decode::<ProcessEntry>(path, ImageKind::Pstree, &data) {
        for e in &entries {
            if check_entry(e, &LIMITS).is_ok() {
                assert!(e.pid > 0 && i64::from(e.pid) < LIMITS.pid_max);
            }
        }
    }
    if let Ok(cores) = decode::<TaskCore>(path, ImageKind::Core, &data) {
        for c in &cores {
            if check_core(c, &LIMITS).is_ok() {
                assert!(c
                    .fds
                    .iter()
                    .all(|e| e.fd >= 0 && (e.fd as u64) < LIMITS.nofile));
            }
        }
    }
    if let Ok(mms) = decode::<MmCore>(path, ImageKind::Mm, &data) {
        for mm in &mms {
            let pages_size = mm.pages_file.as_ref().map_or(0, |f| f.size);
            if check_mm(mm, pages_size, &LIMITS).is_ok() {
                for run in &mm.pages {
                    let end = run.offset + run.npages * PAGE;
                    assert!(end <= pages_size, "an accepted run leaves the pages file");
                    let addr_end = run.addr + run.npages * PAGE;
                    assert!(mm
                        .vmas
                        .iter()
                        .any(|v| v.start <= run.addr && addr_end <= v.end));
                }
                for r in &mm.aio_rings {
                    let header = cryo_proto::sanity::AioHeader::parse(&r.ring);
                    assert!(
                        header.is_some_and(|h| h.fault(r.ring.len() as u64).is_none()),
                        "an accepted AIO ring is not sound"
                    );
                }
            }
        }
    }
}

/// unix_diag answers, as a dump and as a query by inode.
pub fn unix_diag(data: &[u8]) {
    let seq = first_seq(data);
    for first_only in [false, true] {
        let mut sockets = Vec::new();
        let _ = cryo_unix_sockets::diag::parse_answer(data, seq, first_only, |s| sockets.push(s));
        assert!(
            !first_only || sockets.len() <= 1,
            "a query by inode took {} sockets",
            sockets.len()
        );
    }
}

/// inet_diag answers of a listener dump.
pub fn inet_diag(data: &[u8]) {
    // The inode the fuzzer most likely wrote: the inode field of the first answer.
    let inode = data
        .get(16 + 68..16 + 72)
        .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    let mut found = None;
    let _ = cryo_tcp_repair::parse_listener_answer(data, u64::from(inode), &mut found);
}

/// NLMSG_ERROR ACKs of an nf_tables batch or an rtnetlink request.
pub fn netlink_acks(data: &[u8]) {
    if let Ok(acks) = cryo_netns::replies::parse_acks(data) {
        assert!(acks.len() <= data.len() / 16, "more ACKs than messages");
    }
}

/// The answer to a GETTABLE dump, and the tables it names.
pub fn nft_dump(data: &[u8]) {
    let mut answers = Vec::new();
    let _ = cryo_netns::replies::parse_dump_part(data, first_seq(data), &mut answers);
    for (ty, payload) in &answers {
        let _ = cryo_netns::replies::parse_table(*ty, payload);
    }
}

/// A line of the resume channel, and the readlink texts the engine matches channels by.
pub fn resume_record(data: &[u8]) {
    if let Ok(event) = cryo_resume::parse_record(data) {
        let line = event.to_line().expect("a parsed record encodes");
        let back = cryo_resume::parse_record(&line[..line.len() - 1]).expect("own line parses");
        // An unknown reason reads as Other, writes as "other" and reads as Other again.
        assert_eq!(
            back, event,
            "a record changed across to_line and parse_record"
        );
    }
    let text = String::from_utf8_lossy(data);
    let _ = cryo_resume::marker_channel(&text);
    let _ = cryo_resume::is_fifo_channel_path(&text);
}

/// packet_diag and netlink_diag answers: the same bytes to both decoders.
pub fn family_diag(data: &[u8]) {
    use cryo_unix_sockets::family_diag::{parse_netlink_answer, parse_packet_answer, MAX_ADDR_LEN};
    let _ = parse_packet_answer(data, |d| {
        for m in &d.memberships {
            assert!(
                m.address.len() <= MAX_ADDR_LEN,
                "a membership address of {} bytes",
                m.address.len()
            );
        }
    });
    let _ = parse_netlink_answer(data, |_| ());
}

/// A frame of the image stream as it arrives (cryo_stream::frame::decode, at the sequence
/// number it carries), then the control message its type says it holds: what parses must
/// encode back to the same bytes (the frame) or the same message.
pub fn stream_frame(data: &[u8]) {
    use cryo_stream::frame::{self, FrameType};
    use cryo_stream::msg;
    let seq = data
        .get(8..16)
        .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
    let Ok((header, payload, used)) = frame::decode(data, seq) else {
        return;
    };
    let again = frame::encode(header.kind, header.seq, payload);
    assert!(
        again[..] == data[..used],
        "a frame changed across decode and encode"
    );
    match header.kind {
        FrameType::Hello => message_round::<msg::Hello>(payload),
        FrameType::ServerHello => message_round::<msg::ServerHello>(payload),
        FrameType::Unsupported => message_round::<msg::Unsupported>(payload),
        FrameType::ClientProof => message_round::<msg::ClientProof>(payload),
        FrameType::Start => message_round::<msg::Start>(payload),
        FrameType::Accept => message_round::<msg::Accept>(payload),
        FrameType::Refuse => message_round::<msg::Refuse>(payload),
        FrameType::FileOpen => message_round::<msg::FileOpen>(payload),
        FrameType::Data => {}
        FrameType::FileClose => message_round::<msg::FileClose>(payload),
        FrameType::End => {
            message_round::<msg::End>(payload);
            if let Ok(end) = msg::End::decode(payload) {
                let m = end.manifest.unwrap_or_default();
                assert_eq!(cryo_stream::manifest::verify(&m, &m.files), Ok(()));
                let _ = cryo_stream::manifest::hash(&m);
            }
        }
        FrameType::Committed => message_round::<msg::Committed>(payload),
        FrameType::Failed => message_round::<msg::Failed>(payload),
        FrameType::Restored => message_round::<msg::Restored>(payload),
        FrameType::Verdict => message_round::<msg::Verdict>(payload),
        FrameType::Go => message_round::<msg::Go>(payload),
        FrameType::Running => message_round::<msg::Running>(payload),
        FrameType::Heard => message_round::<msg::Heard>(payload),
        FrameType::Absorbed => message_round::<msg::Absorbed>(payload),
    }
}

/// What decodes as `M` encodes and decodes back to the same message.
fn message_round<M: Message + Default + PartialEq>(payload: &[u8]) {
    if let Ok(m) = M::decode(payload) {
        let back = M::decode(&m.encode_to_vec()[..]).expect("an encoded message is refused");
        assert!(back == m, "a message changed across encode and decode");
    }
}
