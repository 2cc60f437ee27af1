//! Seed corpora: a few valid inputs per target, built with cryo's own encoders (image
//! frames) or laid out field by field after the kernel's uapi headers (netlink answers).

use cryo_proto::frame::{encode, ImageKind};
use cryo_proto::image::{
    file_desc, AioRing, FdEntry, FileDesc, Inventory, MmCore, PageRun, ProcessEntry, RawFileRef,
    TaskCore, ThreadCore, Vma, VmaKind,
};

/// The seeds of target `name` (empty for an unknown name).
pub fn of(name: &str) -> Vec<Vec<u8>> {
    match name {
        "image_frame" => image_frames(),
        "image_checks" => image_check_seeds(),
        "unix_diag" => unix_diag_answers(),
        "inet_diag" => inet_diag_answers(),
        "netlink_acks" => netlink_acks(),
        "nft_dump" => nft_dumps(),
        "resume_record" => resume_lines(),
        "family_diag" => family_diag_answers(),
        "stream_frame" => stream_frames(),
        _ => Vec::new(),
    }
}

/// One valid frame of every image kind, with records that are not all defaults.
pub fn image_frames() -> Vec<Vec<u8>> {
    let pstree: Vec<ProcessEntry> = (1..4)
        .map(|pid| ProcessEntry {
            pid,
            ppid: 1,
            pgid: pid,
            sid: 1,
            tids: vec![pid, pid + 100],
            ..Default::default()
        })
        .collect();
    let inventory = Inventory {
        checkpoint_id: "ck-fuzz".into(),
        created_unix_ms: 1_700_000_000_000,
        kernel_release: "6.18.0".into(),
        ..Default::default()
    };
    let core = TaskCore {
        pid: 42,
        comm: "server".into(),
        cwd: "/srv".into(),
        threads: vec![ThreadCore::default(), ThreadCore::default()],
        ..Default::default()
    };
    let mm = MmCore {
        pid: 42,
        brk: 0x5555_0000,
        auxv: vec![6, 4096, 0, 0],
        vmas: vec![Vma {
            start: 0x40_0000,
            end: 0x40_2000,
            prot: 5,
            name: "/bin/server".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let files = vec![
        FileDesc {
            id: 1,
            flags: 2,
            kind: Some(file_desc::Kind::CharDevice("/dev/null".into())),
            ..Default::default()
        },
        FileDesc {
            id: 2,
            pos: 4096,
            ..Default::default()
        },
    ];
    vec![
        encode(ImageKind::Inventory, &[inventory]),
        encode(ImageKind::Pstree, &pstree),
        encode(ImageKind::Core, &[core]),
        encode(ImageKind::Mm, &[mm]),
        encode(ImageKind::Files, &files),
        encode::<FileDesc>(ImageKind::Files, &[]),
    ]
}

/// Images as a restore checks them: the frames above, and an address space with page runs
/// and a process with fds and threads, all within the limits.
pub fn image_check_seeds() -> Vec<Vec<u8>> {
    let mm = MmCore {
        pid: 42,
        vmas: vec![
            Vma {
                start: 0x40_0000,
                end: 0x40_4000,
                prot: 3,
                ..Default::default()
            },
            Vma {
                start: 0x7ffd_0000_0000,
                end: 0x7ffd_0002_0000,
                prot: 3,
                ..Default::default()
            },
        ],
        pages: vec![
            PageRun {
                addr: 0x40_0000,
                npages: 2,
                offset: 0,
            },
            PageRun {
                addr: 0x7ffd_0001_0000,
                npages: 1,
                offset: 0x2000,
            },
        ],
        pages_file: Some(RawFileRef {
            name: "pages-42.img".into(),
            size: 0x3000,
            crc32c: 0,
        }),
        ..Default::default()
    };
    let core = TaskCore {
        pid: 42,
        comm: "server".into(),
        fds: (0..4)
            .map(|fd| FdEntry {
                fd,
                file_id: 1,
                cloexec: fd > 2,
            })
            .collect(),
        threads: vec![
            ThreadCore {
                tid: 42,
                ..Default::default()
            },
            ThreadCore {
                tid: 43,
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    // An AIO ring as the kernel lays it out: slot 0, 127 events, head 3, tail 5.
    let mut ring = vec![0u8; 4096];
    for (i, w) in [0u32, 127, 3, 5, 0xa10a_10a1, 1, 0, 32].iter().enumerate() {
        ring[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
    }
    let with_ring = MmCore {
        pid: 42,
        vmas: vec![Vma {
            start: 0x7f00_0000_0000,
            end: 0x7f00_0000_1000,
            prot: 3,
            map_flags: 1,
            kind: VmaKind::AioRing as i32,
            ..Default::default()
        }],
        aio_rings: vec![AioRing {
            start: 0x7f00_0000_0000,
            ring,
        }],
        ..Default::default()
    };
    let mut seeds = image_frames();
    seeds.push(encode(ImageKind::Mm, &[mm]));
    seeds.push(encode(ImageKind::Mm, &[with_ring]));
    seeds.push(encode(ImageKind::Core, &[core]));
    seeds
}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SEQ: u32 = 7;

/// One netlink message: `struct nlmsghdr` (native endian), then `payload`, padded to 4.
fn nlmsg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m.resize(m.len().next_multiple_of(4), 0);
    m
}

/// One netlink attribute, padded to 4.
fn nla(ty: u16, value: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
    a.extend_from_slice(&ty.to_ne_bytes());
    a.extend_from_slice(value);
    a.resize(a.len().next_multiple_of(4), 0);
    a
}

fn u32s(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

/// NLMSG_DONE with its int payload.
fn done(seq: u32) -> Vec<u8> {
    nlmsg(NLMSG_DONE, 0x2, seq, &0i32.to_ne_bytes())
}

/// NLMSG_ERROR: the error code, the refused message's header, then extended-ack TLVs.
fn error(seq: u32, code: i32, flags: u16, tlvs: &[u8]) -> Vec<u8> {
    let mut p = code.to_ne_bytes().to_vec();
    p.extend_from_slice(&nlmsg(0x0a00, 0x5, seq, &[])[..16]);
    p.extend_from_slice(tlvs);
    nlmsg(NLMSG_ERROR, flags, seq, &p)
}

/// `struct unix_diag_msg` and its attributes (include/uapi/linux/unix_diag.h).
fn unix_msg(kind: u8, state: u8, inode: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
    let mut p = vec![libc_af_unix(), kind, state, 0];
    p.extend_from_slice(&inode.to_ne_bytes());
    p.extend_from_slice(&u32s(&[0xdead, 0xbeef]));
    for a in attrs {
        p.extend_from_slice(a);
    }
    nlmsg(SOCK_DIAG_BY_FAMILY, 0x2, SEQ, &p)
}

const fn libc_af_unix() -> u8 {
    1
}

/// A dump of a listener with two pending clients, a connected pair and a bound dgram socket;
/// a query answer; a refusal.
pub fn unix_diag_answers() -> Vec<Vec<u8>> {
    // UNIX_DIAG_NAME 0, VFS 1, PEER 2, ICONS 3, RQLEN 4, SHUTDOWN 6, UID 7
    let listener = unix_msg(
        1,
        10,
        100,
        &[
            nla(0, b"/run/app.sock\0"),
            nla(1, &u32s(&[555, (8 << 20) | 3])),
            nla(3, &u32s(&[201, 202])),
            nla(4, &u32s(&[2, 128])),
            nla(7, &u32s(&[1000])),
        ],
    );
    let client = unix_msg(
        1,
        1,
        201,
        &[nla(2, &u32s(&[0])), nla(4, &u32s(&[0, 5])), nla(6, &[1])],
    );
    let pair_a = unix_msg(5, 1, 300, &[nla(2, &u32s(&[301])), nla(0, b"\0abstract")]);
    let pair_b = unix_msg(5, 1, 301, &[nla(2, &u32s(&[300]))]);
    let dgram = unix_msg(2, 7, 400, &[nla(0, b"/tmp/d\0"), nla(4, &u32s(&[64, 0]))]);
    let dump = [listener.clone(), client, pair_a, pair_b, dgram, done(SEQ)].concat();
    vec![
        dump,
        listener,
        error(SEQ, -2, 0x100, &[]),
        [error(SEQ + 1, -2, 0, &[]), done(SEQ)].concat(),
    ]
}

/// A packet_diag dump (a socket bound to ifindex 1 with two memberships and a ring, one
/// unbound), a netlink_diag dump (a connected socket with a dump running, an idle one), a
/// refusal (include/uapi/linux/packet_diag.h, netlink_diag.h).
pub fn family_diag_answers() -> Vec<Vec<u8>> {
    // packet_diag_msg: family, type, num, ino, cookie; INFO 0, MCLIST 1, RX_RING 2.
    let packet = |ino: u32, num: u16, attrs: &[Vec<u8>]| {
        let mut p = vec![17, 3];
        p.extend_from_slice(&num.to_ne_bytes());
        p.extend_from_slice(&u32s(&[ino, 0xdead, 0xbeef]));
        for a in attrs {
            p.extend_from_slice(a);
        }
        nlmsg(SOCK_DIAG_BY_FAMILY, 0x2, SEQ, &p)
    };
    let mclist = |index: u32, count: u32, ty: u16, addr: &[u8]| {
        let mut m = u32s(&[index, count]);
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&(addr.len() as u16).to_ne_bytes());
        m.extend_from_slice(addr);
        m.resize(44, 0);
        m
    };
    let members = [
        mclist(1, 2, 1, &[]),
        mclist(1, 1, 0, &[1, 0, 0x5e, 0, 0, 1]),
    ]
    .concat();
    let bound = packet(
        500,
        0x0800,
        &[
            nla(0, &u32s(&[1, 1, 64, 0, 0, 1])),
            nla(1 | 0x8000, &members),
            nla(2, &u32s(&[4096, 1, 2048, 2, 0, 0, 0])),
        ],
    );
    let idle = packet(501, 0, &[nla(0, &u32s(&[0, 0, 0, 0, 0, 0]))]);
    // netlink_diag_msg: family, type, protocol, state, portid, dst_portid, dst_group, ino,
    // cookie; MEMINFO 0, FLAGS 4.
    let netlink = |ino: u32, state: u8, rmem: u32, flags: u32| {
        let mut p = vec![16, 3, 0, state];
        p.extend_from_slice(&u32s(&[4242, 0, 1, ino, 0xdead, 0xbeef]));
        p.extend_from_slice(&nla(0, &u32s(&[rmem, 212_992, 0, 0, 0, 0, 0, 0, 0])));
        p.extend_from_slice(&nla(4, &u32s(&[flags])));
        nlmsg(SOCK_DIAG_BY_FAMILY, 0x2, SEQ, &p)
    };
    vec![
        [bound, idle, done(SEQ)].concat(),
        [netlink(600, 1, 768, 0x3), netlink(601, 0, 0, 0), done(SEQ)].concat(),
        error(SEQ, -95, 0, &[]),
    ]
}

/// `struct inet_diag_msg` of a listener (include/uapi/linux/inet_diag.h): family, state,
/// timer, retrans, sockid (48 bytes), expires, rqueue, wqueue, uid, inode.
fn inet_msg(family: u8, port: u16, inode: u32, rqueue: u32, wqueue: u32) -> Vec<u8> {
    let mut p = vec![family, 10, 0, 0];
    p.extend_from_slice(&port.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&[127, 0, 0, 1]);
    p.extend_from_slice(&[0; 12]);
    p.extend_from_slice(&[0; 16]);
    p.extend_from_slice(&u32s(&[0, 0xffff_ffff, 0xffff_ffff]));
    p.extend_from_slice(&u32s(&[0, rqueue, wqueue, 0, inode]));
    nlmsg(SOCK_DIAG_BY_FAMILY, 0x2, SEQ, &p)
}

/// Listener dumps: the one looked for among others, IPv6, an empty dump, a refusal.
pub fn inet_diag_answers() -> Vec<Vec<u8>> {
    vec![
        [
            inet_msg(2, 8080, 9001, 0, 128),
            inet_msg(2, 8081, 9002, 3, 4096),
            done(SEQ),
        ]
        .concat(),
        [inet_msg(10, 443, 9003, 1, 511), done(SEQ)].concat(),
        done(SEQ),
        error(SEQ, -22, 0, &[]),
    ]
}

/// ACKs of a batch: plain, refused with an extended-ack message (capped and not), mixed with
/// other messages.
pub fn netlink_acks() -> Vec<Vec<u8>> {
    // NLM_F_CAPPED 0x100, NLM_F_ACK_TLVS 0x200, NLMSGERR_ATTR_MSG 1
    let msg = nla(1, b"Could not process rule: No such file or directory\0");
    vec![
        [error(1, 0, 0x100, &[]), error(2, 0, 0x100, &[])].concat(),
        [error(3, 0, 0x100, &[]), error(4, -17, 0x300, &msg)].concat(),
        error(5, -1, 0x200, &msg),
        [done(6), error(6, -95, 0x100, &[])].concat(),
    ]
}

/// `NEWTABLE` answers of a GETTABLE dump (nfgenmsg, then NFTA_TABLE_NAME and FLAGS), DONE.
pub fn nft_dumps() -> Vec<Vec<u8>> {
    // NFNL_SUBSYS_NFTABLES 10 << 8 | NFT_MSG_NEWTABLE 0; NFTA_TABLE_NAME 1, FLAGS 2
    let table = |family: u8, name: &str| {
        let mut p = vec![family, 0, 0, 0];
        p.extend_from_slice(&nla(1, format!("{name}\0").as_bytes()));
        p.extend_from_slice(&nla(2, &0u32.to_be_bytes()));
        nlmsg(10 << 8, 0x2, SEQ, &p)
    };
    vec![
        [table(1, "cryo-7"), table(2, "filter"), done(SEQ)].concat(),
        [table(1, "cryo-a"), table(10, "x")].concat(),
        error(SEQ, -1, 0x100, &[]),
    ]
}

/// Lines of the resume channel, and readlink texts of markers and FIFOs.
pub fn resume_lines() -> Vec<Vec<u8>> {
    [
        r#"{"checkpoint_id":"c1","downtime_ms":12,"broken":[{"fd":5,"local":"127.0.0.1:80","remote":"127.0.0.1:4000","reason":"reset"}]}"#,
        r#"{"checkpoint_id":"c2","downtime_ms":0,"broken":[],"future_field":1}"#,
        r#"{"checkpoint_id":"c3","downtime_ms":1,"broken":[{"fd":6,"reason":"eaten-by-grue"}]}"#,
        "/memfd:cryo-resume:v1:fd=7 (deleted)",
        "/tmp/cryo-resume-42",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// One valid frame of the image stream per control message, and a data frame.
pub fn stream_frames() -> Vec<Vec<u8>> {
    use cryo_stream::frame::{encode, FrameType};
    use cryo_stream::msg;
    use prost::Message;
    let entry = |name: &str, size, crc32c| msg::ManifestEntry {
        name: name.into(),
        size,
        crc32c,
    };
    vec![
        encode(
            FrameType::Hello,
            0,
            &msg::Hello {
                version: 1,
                nonce: vec![7; 32],
            }
            .encode_to_vec(),
        ),
        encode(
            FrameType::Unsupported,
            1,
            &msg::Unsupported {
                supported: vec![1, 2],
            }
            .encode_to_vec(),
        ),
        encode(
            FrameType::Start,
            2,
            &msg::Start {
                version: 1,
                checkpoint_id: "c1".into(),
                name: "web".into(),
                purpose: msg::Purpose::Store as i32,
            }
            .encode_to_vec(),
        ),
        encode(
            FrameType::FileOpen,
            3,
            &msg::FileOpen {
                name: "pages-1.img".into(),
                size: 4096,
                mode: 0o600,
            }
            .encode_to_vec(),
        ),
        encode(FrameType::Data, 4, &[0xab; 64]),
        encode(
            FrameType::FileClose,
            5,
            &msg::FileClose { crc32c: 0x1234 }.encode_to_vec(),
        ),
        encode(
            FrameType::End,
            6,
            &msg::End {
                manifest: Some(msg::Manifest {
                    checkpoint_id: "c1".into(),
                    files: vec![entry("pages-1.img", 4096, 1), entry("inventory.img", 9, 2)],
                }),
            }
            .encode_to_vec(),
        ),
        encode(
            FrameType::Failed,
            7,
            &msg::Failed { why: "x".into() }.encode_to_vec(),
        ),
        encode(
            FrameType::Restored,
            8,
            &msg::Restored { pids: vec![42] }.encode_to_vec(),
        ),
        encode(
            FrameType::Verdict,
            9,
            &msg::Verdict {
                checkpoint_id: "c1".into(),
                findings: vec![msg::Finding {
                    kind: "permanent".into(),
                    what: "file".into(),
                    subject: "/lib/x.so".into(),
                    reason: "another sha256".into(),
                    action: "install the same file".into(),
                }],
            }
            .encode_to_vec(),
        ),
        encode(FrameType::Go, 10, &msg::Go {}.encode_to_vec()),
        encode(
            FrameType::Running,
            11,
            &msg::Running { pids: vec![42] }.encode_to_vec(),
        ),
        encode(FrameType::Heard, 12, &msg::Heard {}.encode_to_vec()),
    ]
}
