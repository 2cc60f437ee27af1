//! The seeds are what they claim: each parser accepts its valid ones and reads what they hold,
//! so the mutations start from inputs that reach deep into the parser.

use std::path::Path;

use cryo_fuzz::seeds;
use cryo_proto::frame::{decode, ImageKind};
use cryo_proto::image::{FileDesc, ProcessEntry};
use cryo_unix_sockets::diag::{parse_answer, Answer};
use cryo_unix_sockets::{SockState, UnixName};

#[test]
fn image_seeds_decode() {
    let frames = seeds::image_frames();
    let pstree: Vec<ProcessEntry> =
        decode(Path::new("pstree.img"), ImageKind::Pstree, &frames[1]).unwrap();
    assert_eq!(pstree.len(), 3);
    let files: Vec<FileDesc> =
        decode(Path::new("files.img"), ImageKind::Files, &frames[4]).unwrap();
    assert_eq!(files[1].pos, 4096);
}

#[test]
fn unix_diag_seeds_read_as_sockets() {
    let answers = seeds::unix_diag_answers();
    let mut sockets = Vec::new();
    let end = parse_answer(&answers[0], 7, false, |s| sockets.push(s)).unwrap();
    assert!(matches!(end, Answer::Done));
    assert_eq!(sockets.len(), 5);
    let listener = &sockets[0];
    assert_eq!(listener.state, SockState::Listen);
    assert_eq!(listener.name, UnixName::Path("/run/app.sock".into()));
    assert_eq!(listener.pending, [201, 202]);
    assert_eq!(
        (listener.rqueue, listener.wqueue, listener.uid),
        (2, 128, Some(1000))
    );
    assert_eq!(listener.vfs.map(|v| v.ino), Some(555));
    assert_eq!(
        sockets[1].peer, None,
        "a pending client's peer is the embryo"
    );
    assert!(sockets[1].shutdown.read);
    assert_eq!(sockets[2].name, UnixName::Abstract(b"abstract".to_vec()));
    assert_eq!(sockets[3].peer, Some(300));
    let refused = parse_answer(&answers[2], 7, true, |_| {}).unwrap();
    assert!(matches!(refused, Answer::Refused(e) if e.raw_os_error() == Some(2)));
    // an answer to another request is skipped
    let end = parse_answer(&answers[3], 7, false, |_| {}).unwrap();
    assert!(matches!(end, Answer::Done));
}

#[test]
fn inet_diag_seeds_find_the_listener() {
    let answers = seeds::inet_diag_answers();
    let mut found = None;
    assert!(cryo_tcp_repair::parse_listener_answer(&answers[0], 9002, &mut found).unwrap());
    let found = found.unwrap();
    assert_eq!((found.accept_queue, found.backlog), (3, 4096));
    let mut none = None;
    assert!(cryo_tcp_repair::parse_listener_answer(&answers[2], 9002, &mut none).unwrap());
    assert!(none.is_none());
    assert!(cryo_tcp_repair::parse_listener_answer(&answers[3], 1, &mut none).is_err());
}

#[test]
fn netlink_ack_seeds_read_as_acks() {
    let acks = cryo_netns::replies::parse_acks(&seeds::netlink_acks()[1]).unwrap();
    assert_eq!(acks.len(), 2);
    assert_eq!((acks[0].seq, acks[0].errno), (3, None));
    assert_eq!(acks[1].errno.map(|e| e as i32), Some(17), "EEXIST");
    assert_eq!(
        acks[1].message.as_deref(),
        Some("Could not process rule: No such file or directory")
    );
}

#[test]
fn nft_dump_seeds_name_their_tables() {
    let dumps = seeds::nft_dumps();
    let mut answers = Vec::new();
    assert!(cryo_netns::replies::parse_dump_part(&dumps[0], 7, &mut answers).unwrap());
    let tables: Vec<_> = answers
        .iter()
        .filter_map(|(ty, p)| cryo_netns::replies::parse_table(*ty, p))
        .collect();
    assert_eq!(
        tables,
        [(1, "cryo-7".to_string()), (2, "filter".to_string())]
    );
    let mut more = Vec::new();
    assert!(!cryo_netns::replies::parse_dump_part(&dumps[1], 7, &mut more).unwrap());
    assert!(cryo_netns::replies::parse_dump_part(&dumps[2], 7, &mut more).is_err());
}

#[test]
fn resume_seeds_parse() {
    let lines = seeds::resume_lines();
    let ev = cryo_resume::parse_record(&lines[0]).unwrap();
    assert_eq!(ev.broken[0].reason, cryo_resume::BrokenReason::Reset);
    let ev = cryo_resume::parse_record(&lines[2]).unwrap();
    assert_eq!(ev.broken[0].reason, cryo_resume::BrokenReason::Other);
    assert_eq!(
        cryo_resume::marker_channel(std::str::from_utf8(&lines[3]).unwrap()),
        Some(7)
    );
}

#[test]
fn family_diag_seeds_read_as_packet_and_netlink_sockets() {
    use cryo_unix_sockets::family_diag::{parse_netlink_answer, parse_packet_answer};
    let answers = seeds::family_diag_answers();
    let mut packets = Vec::new();
    assert!(parse_packet_answer(&answers[0], |d| packets.push(d)).unwrap());
    assert_eq!(packets.len(), 2);
    assert_eq!(
        (packets[0].ino, packets[0].ifindex, packets[0].protocol),
        (500, 1, 0x0800)
    );
    assert!(packets[0].running && packets[0].rx_ring.is_some() && packets[0].tx_ring.is_none());
    assert_eq!(packets[0].memberships.len(), 2);
    assert_eq!(packets[0].memberships[0].count, 2);
    assert_eq!(packets[0].memberships[1].address, [1, 0, 0x5e, 0, 0, 1]);
    assert!(!packets[1].running && packets[1].memberships.is_empty());
    let mut netlinks = Vec::new();
    assert!(parse_netlink_answer(&answers[1], |d| netlinks.push(d)).unwrap());
    assert_eq!(netlinks.len(), 2);
    assert!(netlinks[0].connected && netlinks[0].cb_running);
    assert_eq!(
        (
            netlinks[0].portid,
            netlinks[0].dst_group,
            netlinks[0].rmem_alloc
        ),
        (4242, 1, 768)
    );
    assert!(!netlinks[1].connected && netlinks[1].rmem_alloc == 0);
    assert!(parse_netlink_answer(&answers[2], |_| ()).is_err());
}

#[test]
fn stream_seeds_are_whole_frames() {
    for (i, f) in seeds::stream_frames().iter().enumerate() {
        let (_, _, used) = cryo_stream::frame::decode(f, i as u64).unwrap();
        assert_eq!(used, f.len());
    }
}

#[test]
fn the_address_space_seeds_pass_the_checks() {
    use cryo_proto::image::MmCore;
    use cryo_proto::sanity::{check_mm, Limits};
    let limits = Limits {
        pid_max: 4_194_304,
        nofile: 1024,
        max_map_count: 65530,
    };
    let mut rings = 0;
    for seed in seeds::image_check_seeds() {
        let Ok(mms) = decode::<MmCore>(Path::new("mm.img"), ImageKind::Mm, &seed) else {
            continue;
        };
        for mm in &mms {
            let pages_size = mm.pages_file.as_ref().map_or(0, |f| f.size);
            check_mm(mm, pages_size, &limits).unwrap();
            rings += mm.aio_rings.len();
        }
    }
    assert_eq!(rings, 1, "the seed with an AIO ring");
}
