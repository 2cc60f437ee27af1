//! Real sockets, as root. Each test makes its own sockets, temp dirs and
//! abstract names (pid + counter), so they run in parallel.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU32, Ordering};

use cryo_unix_sockets::graph::{Binding, Direction, DumpedSocket, PairMethod, SocketGraph};
use cryo_unix_sockets::restore::{self, SocketFileAttrs};
use cryo_unix_sockets::{
    capture_queue, dump_all, query_inode, recv_message, Creds, DiagSocket, QueuedMessage, Shutdown,
    SockState, SockType, UnixName, UnixSockError,
};

fn ino(fd: impl AsFd) -> u32 {
    let f = File::from(fd.as_fd().try_clone_to_owned().unwrap());
    f.metadata().unwrap().ino() as u32
}

fn dev_ino(fd: impl AsFd) -> (u64, u64) {
    let f = File::from(fd.as_fd().try_clone_to_owned().unwrap());
    let m = f.metadata().unwrap();
    (m.dev(), m.ino())
}

fn uniq(tag: &str) -> Vec<u8> {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "cryo-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
    .into_bytes()
}

fn msg(data: &[u8]) -> QueuedMessage {
    QueuedMessage {
        data: data.to_vec(),
        fds: Vec::new(),
        creds: None,
        sender: UnixName::Unnamed,
    }
}

fn read_all_now(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    s.set_nonblocking(true).unwrap();
    s.read_exact(&mut out).unwrap();
    let mut extra = [0u8; 1];
    assert!(s.read(&mut extra).is_err(), "more bytes than expected");
    out
}

#[test]
fn diag_finds_socketpair_with_peers_and_queue_lengths() {
    let (mut a, b) = UnixStream::pair().unwrap();
    a.write_all(&[7u8; 100]).unwrap();
    let (ia, ib) = (ino(&a), ino(&b));
    let all = dump_all().unwrap();
    let da = &all[&ia];
    let db = &all[&ib];
    assert_eq!(da.peer, Some(ib));
    assert_eq!(db.peer, Some(ia));
    assert_eq!(da.sock_type, SockType::Stream);
    assert_eq!(da.state, SockState::Established);
    assert_eq!(db.rqueue, 100);
    assert_eq!(da.rqueue, 0);
    assert!(
        da.wqueue >= 100,
        "send queue accounts the skb: {}",
        da.wqueue
    );
    assert_eq!(da.name, UnixName::Unnamed);
    assert_eq!(da.uid, Some(unsafe_free_uid()));
    // one inode
    let q = query_inode(ib).unwrap().unwrap();
    assert_eq!(q.peer, Some(ia));
    assert_eq!(q.rqueue, 100);
}

fn unsafe_free_uid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}

#[test]
fn diag_query_of_unknown_inode_is_none() {
    let mut d = DiagSocket::new().unwrap();
    // inode 1 is never a socket
    assert!(d.query(1).unwrap().is_none());
}

#[test]
fn diag_listener_with_path_and_pending_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sock");
    let l = UnixListener::bind(&path).unwrap();
    let c1 = UnixStream::connect(&path).unwrap();
    let c2 = UnixStream::connect(&path).unwrap();
    let all = dump_all().unwrap();
    let dl = &all[&ino(&l)];
    assert_eq!(dl.state, SockState::Listen);
    assert_eq!(dl.name, UnixName::Path(path.clone()));
    let md = std::fs::metadata(&path).unwrap();
    let vfs = dl.vfs.expect("vfs of a path-bound socket");
    assert!(
        vfs.matches(md.dev(), md.ino()),
        "{vfs:?} vs {}:{}",
        md.dev(),
        md.ino()
    );
    assert_eq!(dl.pending.len(), 2);
    assert_eq!(dl.rqueue, 2);
    assert!(dl.wqueue >= 128, "backlog of std's listen: {}", dl.wqueue);
    // the accept queue is named by its clients, in order; a waiting
    // client's peer (the embryo) has no inode
    assert_eq!(dl.pending, vec![ino(&c1), ino(&c2)], "accept queue order");
    assert_eq!(all[&ino(&c1)].peer, None);
    assert_eq!(all[&ino(&c1)].state, SockState::Established);
    assert!(!all.contains_key(&0));
}

#[test]
fn abstract_name_reported() {
    let name = uniq("abs");
    let fd = restore::socket(SockType::Dgram).unwrap();
    restore::bind_name(&fd, &UnixName::Abstract(name.clone()), None).unwrap();
    let d = query_inode(ino(&fd)).unwrap().unwrap();
    assert_eq!(d.name, UnixName::Abstract(name));
    assert_eq!(d.state, SockState::Unconnected);
    assert!(d.vfs.is_none());
}

#[test]
fn stream_capture_leaves_queue_and_options_intact() {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    a.write_all(b"hello ").unwrap();
    a.write_all(b"world").unwrap();
    a.write_all(&[1u8; 70_000])
        .unwrap_or_else(|_| panic!("write"));
    let before = restore::read_options(&b).unwrap();
    let q = capture_queue(&b).unwrap();
    assert_eq!(q.sock_type, SockType::Stream);
    assert_eq!(q.total_bytes(), 11 + 70_000);
    let cat: Vec<u8> = q.messages.iter().flat_map(|m| m.data.clone()).collect();
    assert_eq!(restore::read_options(&b).unwrap(), before);
    assert_eq!(before.peek_off, -1);
    assert!(!before.passcred);
    // a second capture sees the same
    let q2 = capture_queue(&b).unwrap();
    let cat2: Vec<u8> = q2.messages.iter().flat_map(|m| m.data.clone()).collect();
    assert_eq!(cat, cat2);
    // the owner reads exactly the same bytes
    let got = read_all_now(&mut b, cat.len());
    assert_eq!(got, cat);
    assert_eq!(&got[..11], b"hello world");
}

#[test]
fn capture_keeps_a_target_peek_offset() {
    let (mut a, b) = UnixStream::pair().unwrap();
    a.write_all(b"0123456789").unwrap();
    let fd = b.as_fd();
    let mut opts = restore::read_options(fd).unwrap();
    opts.peek_off = 3;
    opts.passcred = true;
    restore::apply_options(fd, &opts).unwrap();
    let q = capture_queue(fd).unwrap();
    assert_eq!(q.total_bytes(), 10);
    let after = restore::read_options(fd).unwrap();
    assert_eq!(after.peek_off, 3);
    assert!(after.passcred);
    // and reads the same bytes
    let mut b = b;
    assert_eq!(read_all_now(&mut b, 10), b"0123456789");
}

#[test]
fn seqpacket_capture_keeps_boundaries() {
    let (a, b) = restore::socketpair(SockType::SeqPacket).unwrap();
    let records: [&[u8]; 4] = [b"one", b"", b"three-three", &[9u8; 100_000]];
    for r in records {
        restore::send_message(&a, None, &msg(r)).unwrap();
    }
    let q = capture_queue(&b).unwrap();
    let got: Vec<&[u8]> = q.messages.iter().map(|m| m.data.as_slice()).collect();
    assert_eq!(got, records.to_vec());
    for r in records {
        let m = recv_message(&b, 200_000).unwrap().unwrap();
        assert_eq!(m.data, r);
    }
    assert!(recv_message(&b, 10).unwrap().is_none());
}

#[test]
fn dgram_capture_from_several_senders() {
    let rname = uniq("recv");
    let recv = restore::socket(SockType::Dgram).unwrap();
    restore::bind_name(&recv, &UnixName::Abstract(rname.clone()), None).unwrap();
    let dest = UnixName::Abstract(rname.clone());
    let s1 = restore::socket(SockType::Dgram).unwrap();
    let n1 = UnixName::Abstract(uniq("s1"));
    restore::bind_name(&s1, &n1, None).unwrap();
    let s2 = restore::socket(SockType::Dgram).unwrap(); // unbound
    restore::send_message(&s1, Some(&dest), &msg(b"from s1 #1")).unwrap();
    restore::send_message(&s2, Some(&dest), &msg(b"from s2")).unwrap();
    restore::send_message(&s1, Some(&dest), &msg(b"from s1 #2")).unwrap();
    let q = capture_queue(&recv).unwrap();
    let got: Vec<(&[u8], &UnixName)> = q
        .messages
        .iter()
        .map(|m| (m.data.as_slice(), &m.sender))
        .collect();
    assert_eq!(
        got,
        vec![
            (&b"from s1 #1"[..], &n1),
            (&b"from s2"[..], &UnixName::Unnamed),
            (&b"from s1 #2"[..], &n1)
        ]
    );
    assert!(q.pending_error.is_none());
    // queue intact; refill a fresh receiver from the right senders
    let rname2 = uniq("recv2");
    let recv2 = restore::socket(SockType::Dgram).unwrap();
    let dest2 = UnixName::Abstract(rname2);
    restore::bind_name(&recv2, &dest2, None).unwrap();
    let t1 = restore::socket(SockType::Dgram).unwrap();
    let t1name = UnixName::Abstract(uniq("t1"));
    restore::bind_name(&t1, &t1name, None).unwrap();
    let t2 = restore::socket(SockType::Dgram).unwrap();
    for m in &q.messages {
        let from = if m.sender.is_bound() { &t1 } else { &t2 };
        restore::send_message(from, Some(&dest2), m).unwrap();
    }
    for (data, sender) in [
        (&b"from s1 #1"[..], &n1),
        (b"from s2", &UnixName::Unnamed),
        (b"from s1 #2", &n1),
    ] {
        let m = recv_message(&recv, 100).unwrap().unwrap();
        assert_eq!((m.data.as_slice(), &m.sender), (data, sender));
        let m2 = recv_message(&recv2, 100).unwrap().unwrap();
        assert_eq!(m2.data, data);
        let want = if sender.is_bound() {
            &t1name
        } else {
            &UnixName::Unnamed
        };
        assert_eq!(&m2.sender, want);
    }
}

#[test]
fn dgram_large_message_needs_bigger_buffer() {
    let (a, b) = restore::socketpair(SockType::Dgram).unwrap();
    let mut big = restore::read_options(&a).unwrap();
    big.sndbuf = 400_000;
    restore::apply_options(&a, &big).unwrap();
    let data: Vec<u8> = (0..150_000u32).map(|i| i as u8).collect();
    restore::send_message(&a, None, &msg(&data)).unwrap();
    restore::send_message(&a, None, &msg(b"small")).unwrap();
    let q = capture_queue(&b).unwrap();
    assert_eq!(q.messages.len(), 2);
    assert_eq!(q.messages[0].data, data);
    assert_eq!(q.messages[1].data, b"small");
}

fn temp_file_with(content: &[u8]) -> File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(content).unwrap();
    f
}

#[test]
fn scm_rights_in_stream_captured_at_its_offset_and_restored() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let f1 = temp_file_with(b"file one");
    let f2 = temp_file_with(b"file two");
    restore::send_message(&a, None, &msg(b"head")).unwrap();
    let with_fd = QueuedMessage {
        data: b"carry".to_vec(),
        fds: vec![OwnedFd::from(f1.try_clone().unwrap())],
        creds: None,
        sender: UnixName::Unnamed,
    };
    restore::send_message(&a, None, &with_fd).unwrap();
    restore::send_message(&a, None, &msg(b"mid")).unwrap();
    let with_two = QueuedMessage {
        data: b"XY".to_vec(),
        fds: vec![
            OwnedFd::from(f2.try_clone().unwrap()),
            OwnedFd::from(f1.try_clone().unwrap()),
        ],
        creds: None,
        sender: UnixName::Unnamed,
    };
    restore::send_message(&a, None, &with_two).unwrap();
    restore::send_message(&a, None, &msg(b"tail")).unwrap();

    let q = capture_queue(&b).unwrap();
    let layout: Vec<(&[u8], usize)> = q
        .messages
        .iter()
        .map(|m| (m.data.as_slice(), m.fds.len()))
        .collect();
    // A peek run ends with the skb that carries descriptors; where that skb
    // starts inside the run is invisible to MSG_PEEK (see queue.rs).
    assert_eq!(
        layout,
        vec![
            (&b"headcarry"[..], 1),
            (&b"midXY"[..], 2),
            (&b"tail"[..], 0)
        ]
    );
    assert_eq!(dev_ino(&q.messages[0].fds[0]), dev_ino(&f1));
    assert_eq!(dev_ino(&q.messages[1].fds[0]), dev_ino(&f2));
    assert_eq!(dev_ino(&q.messages[1].fds[1]), dev_ino(&f1));
    assert_eq!(restore::read_options(&b).unwrap().peek_off, -1);

    // the owner still gets everything, descriptors included, where they
    // were sent
    let first = recv_message(&b, 4).unwrap().unwrap();
    assert_eq!(first.data, b"head");
    assert!(first.fds.is_empty());
    let second = recv_message(&b, 100).unwrap().unwrap();
    assert_eq!(second.data, b"carry");
    assert_eq!(second.fds.len(), 1);
    let _ = read_all_now(&mut b, 9);

    // refill a fresh pair: the receiver gets usable descriptors at the
    // start of their runs
    let (c, d) = restore::socketpair(SockType::Stream).unwrap();
    restore::refill_queue(&c, None, &q).unwrap();
    let r1 = recv_message(&d, 100).unwrap().unwrap();
    assert_eq!((r1.data.as_slice(), r1.fds.len()), (&b"headcarry"[..], 1));
    let mut got = File::from(r1.fds.into_iter().next().unwrap());
    got.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    got.read_to_string(&mut s).unwrap();
    assert_eq!(s, "file one");
    let r2 = recv_message(&d, 100).unwrap().unwrap();
    assert_eq!((r2.data.as_slice(), r2.fds.len()), (&b"midXY"[..], 2));
    let r3 = recv_message(&d, 100).unwrap().unwrap();
    assert_eq!(r3.data, b"tail");
}

#[test]
fn scm_rights_in_dgram_and_seqpacket() {
    for ty in [SockType::Dgram, SockType::SeqPacket] {
        let (a, b) = restore::socketpair(ty).unwrap();
        let f = temp_file_with(b"x");
        restore::send_message(&a, None, &msg(b"plain")).unwrap();
        let m = QueuedMessage {
            data: b"fd".to_vec(),
            fds: vec![OwnedFd::from(f.try_clone().unwrap())],
            creds: None,
            sender: UnixName::Unnamed,
        };
        restore::send_message(&a, None, &m).unwrap();
        let q = capture_queue(&b).unwrap();
        assert_eq!(q.messages.len(), 2);
        assert_eq!(q.fd_count(), 1);
        assert_eq!(dev_ino(&q.messages[1].fds[0]), dev_ino(&f));
        let (c, d) = restore::socketpair(ty).unwrap();
        restore::refill_queue(&c, None, &q).unwrap();
        assert!(recv_message(&d, 100).unwrap().unwrap().fds.is_empty());
        let r = recv_message(&d, 100).unwrap().unwrap();
        assert_eq!(dev_ino(&r.fds[0]), dev_ino(&f));
    }
}

#[test]
fn scm_credentials_captured_and_restored() {
    let me = Creds {
        pid: std::process::id() as i32,
        uid: 0,
        gid: 0,
    };
    for ty in [SockType::Stream, SockType::Dgram, SockType::SeqPacket] {
        let (a, b) = restore::socketpair(ty).unwrap();
        // no SO_PASSCRED anywhere, no explicit creds: none recorded
        restore::send_message(&a, None, &msg(b"anon")).unwrap();
        let mut with = msg(b"cred");
        with.creds = Some(me);
        restore::send_message(&a, None, &with).unwrap();
        let q = capture_queue(&b).unwrap();
        assert_eq!(q.messages.len(), 2, "{ty:?}: writers kept apart");
        assert_eq!(q.messages[0].creds, None, "{ty:?}");
        assert_eq!(q.messages[1].creds, Some(me), "{ty:?}");
        assert!(!restore::read_options(&b).unwrap().passcred);
        // refill and read back with SO_PASSCRED on the receiver
        let (c, d) = restore::socketpair(ty).unwrap();
        restore::refill_queue(&c, None, &q).unwrap();
        let mut o = restore::read_options(&d).unwrap();
        o.passcred = true;
        restore::apply_options(&d, &o).unwrap();
        let r1 = recv_message(&d, 100).unwrap().unwrap();
        assert_eq!((r1.data.as_slice(), r1.creds), (&b"anon"[..], None));
        let r2 = recv_message(&d, 100).unwrap().unwrap();
        assert_eq!((r2.data.as_slice(), r2.creds), (&b"cred"[..], Some(me)));
    }
}

#[test]
fn refill_larger_than_sndbuf_keeps_bytes_and_boundaries() {
    // stream: 1.5 MiB in 3 writes, far beyond the default sndbuf
    let (c, d) = restore::socketpair(SockType::Stream).unwrap();
    let before = restore::read_options(&c).unwrap();
    let parts: Vec<Vec<u8>> = (0..3u8)
        .map(|k| (0..512 * 1024u32).map(|i| (i as u8) ^ k).collect())
        .collect();
    let q = cryo_unix_sockets::CapturedQueue {
        sock_type: SockType::Stream,
        messages: parts.iter().map(|p| msg(p)).collect(),
        pending_error: None,
    };
    restore::refill_queue(&c, None, &q).unwrap();
    assert_eq!(restore::read_options(&c).unwrap().sndbuf, before.sndbuf);
    let again = capture_queue(&d).unwrap();
    let cat: Vec<u8> = again.messages.iter().flat_map(|m| m.data.clone()).collect();
    assert_eq!(cat, parts.concat());
    let mut s = UnixStream::from(d);
    assert_eq!(read_all_now(&mut s, cat.len()), cat);

    // seqpacket: 200 records of different sizes
    let (c, d) = restore::socketpair(SockType::SeqPacket).unwrap();
    let recs: Vec<Vec<u8>> = (0..200usize).map(|i| vec![i as u8; i * 37]).collect();
    let q = cryo_unix_sockets::CapturedQueue {
        sock_type: SockType::SeqPacket,
        messages: recs.iter().map(|p| msg(p)).collect(),
        pending_error: None,
    };
    restore::refill_queue(&c, None, &q).unwrap();
    for r in &recs {
        assert_eq!(&recv_message(&d, 10_000).unwrap().unwrap().data, r);
    }
}

#[test]
fn filesystem_bound_socket_recreated_with_mode_and_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("srv.sock");
    let attrs = SocketFileAttrs {
        mode: 0o640,
        uid: 1234,
        gid: 5678,
    };
    // a stale socket file from a dead process, owned as the dump recorded (a socket file of
    // another owner is left alone)
    drop(UnixListener::bind(&path).unwrap());
    std::os::unix::fs::lchown(&path, Some(attrs.uid), Some(attrs.gid)).unwrap();
    assert!(path.exists());
    let l = restore::make_listener(
        SockType::Stream,
        &UnixName::Path(path.clone()),
        Some(attrs),
        7,
    )
    .unwrap();
    assert_eq!(SocketFileAttrs::of_path(&path).unwrap(), attrs);
    let d = query_inode(ino(&l)).unwrap().unwrap();
    assert_eq!(d.state, SockState::Listen);
    assert_eq!(d.wqueue, 7);
    let md = std::fs::metadata(&path).unwrap();
    assert!(d.vfs.unwrap().matches(md.dev(), md.ino()));

    // a regular file is never unlinked
    let file = dir.path().join("plain");
    std::fs::write(&file, b"keep").unwrap();
    let s = restore::socket(SockType::Stream).unwrap();
    let err = restore::bind_name(&s, &UnixName::Path(file.clone()), None).unwrap_err();
    assert!(matches!(err, UnixSockError::NotASocket { .. }), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");

    // a path longer than sun_path
    let deep = dir.path().join("d".repeat(120));
    std::fs::create_dir(&deep).unwrap();
    let long = deep.join("long.sock");
    let s = restore::socket(SockType::Dgram).unwrap();
    restore::bind_name(&s, &UnixName::Path(long.clone()), None).unwrap();
    assert!(std::fs::symlink_metadata(&long)
        .unwrap()
        .file_type()
        .is_socket_like());
}

trait IsSocket {
    fn is_socket_like(&self) -> bool;
}
impl IsSocket for std::fs::FileType {
    fn is_socket_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_socket()
    }
}

#[test]
fn pending_connection_recreated_and_accepted() {
    let name = UnixName::Abstract(uniq("lst"));
    let l = restore::make_listener(SockType::SeqPacket, &name, None, 4).unwrap();
    let client =
        restore::connect_pending(SockType::SeqPacket, &name, &UnixName::Unnamed, None).unwrap();
    let all = dump_all().unwrap();
    let dl = &all[&ino(&l)];
    assert_eq!(dl.pending, vec![ino(&client)]);
    assert_eq!(all[&ino(&client)].peer, None);
    let acc = restore::accept(&l).unwrap();
    assert_eq!(
        query_inode(ino(&acc)).unwrap().unwrap().peer,
        Some(ino(&client))
    );
    restore::send_message(&client, None, &msg(b"hi")).unwrap();
    assert_eq!(recv_message(&acc, 10).unwrap().unwrap().data, b"hi");
    assert_eq!(
        restore::local_name(&acc).unwrap(),
        name,
        "accepted end shows the listener's name"
    );
}

#[test]
fn shutdown_restored_on_both_ends() {
    let (a, b) = UnixStream::pair().unwrap();
    a.shutdown(std::net::Shutdown::Write).unwrap();
    let all = dump_all().unwrap();
    let (sa, sb) = (all[&ino(&a)].shutdown, all[&ino(&b)].shutdown);
    assert_eq!(
        sa,
        Shutdown {
            read: false,
            write: true
        }
    );
    assert_eq!(
        sb,
        Shutdown {
            read: true,
            write: false
        }
    );
    let (c, d) = restore::socketpair(SockType::Stream).unwrap();
    restore::restore_pair_shutdown(&c, sa, &d, sb).unwrap();
    let all = dump_all().unwrap();
    assert_eq!(all[&ino(&c)].shutdown, sa);
    assert_eq!(all[&ino(&d)].shutdown, sb);
}

#[test]
fn graph_of_pairs_listener_dgram_and_external_peer() {
    let pid = std::process::id() as i32;
    let (s1, s2) = UnixStream::pair().unwrap();
    let (q1, q2) = restore::socketpair(SockType::SeqPacket).unwrap();
    let (g1, g2) = restore::socketpair(SockType::Dgram).unwrap();
    let (x1, x2) = UnixStream::pair().unwrap(); // x2 stays outside the dump
    let lname = UnixName::Abstract(uniq("glst"));
    let l = restore::make_listener(SockType::Stream, &lname, None, 5).unwrap();
    let accepted_client =
        restore::connect_pending(SockType::Stream, &lname, &UnixName::Unnamed, None).unwrap();
    let accepted = restore::accept(&l).unwrap();
    let pending_client =
        restore::connect_pending(SockType::Stream, &lname, &UnixName::Unnamed, None).unwrap();
    let rname = UnixName::Abstract(uniq("grcv"));
    let recv = restore::socket(SockType::Dgram).unwrap();
    restore::bind_name(&recv, &rname, None).unwrap();
    let sender = restore::socket(SockType::Dgram).unwrap();
    restore::connect(&sender, &rname).unwrap();
    let outside_sender = restore::socket(SockType::Dgram).unwrap(); // not dumped
    restore::connect(&outside_sender, &rname).unwrap();

    let fds: Vec<&dyn AsFd> = vec![
        &s1,
        &s2,
        &q1,
        &q2,
        &g1,
        &g2,
        &x1,
        &l,
        &pending_client,
        &accepted_client,
        &accepted,
        &recv,
        &sender,
    ];
    let mut dumped: Vec<DumpedSocket> = fds
        .iter()
        .map(|f| DumpedSocket {
            pid,
            fd: f.as_fd().as_raw_fd(),
            inode: ino(f.as_fd()),
        })
        .collect();
    // the same socket held twice (a dup in another process)
    dumped.push(DumpedSocket {
        pid: pid + 1,
        fd: 3,
        inode: ino(&s1),
    });
    dumped.reverse();
    let diag = dump_all().unwrap();
    let g = SocketGraph::build(&dumped, &diag);
    let g_again = SocketGraph::build(&dumped, &diag);
    assert_eq!(g.pairs, g_again.pairs);
    assert_eq!(g.restore_order(), g_again.restore_order());

    let pair_set: Vec<(u32, u32)> = g.pairs.iter().map(|p| (p.creator, p.other)).collect();
    let sorted = |a: u32, b: u32| (a.min(b), a.max(b));
    for (a, b) in [
        (ino(&s1), ino(&s2)),
        (ino(&q1), ino(&q2)),
        (ino(&g1), ino(&g2)),
        (ino(&accepted), ino(&accepted_client)),
    ] {
        assert!(
            pair_set.contains(&sorted(a, b)),
            "pair {a}-{b} in {pair_set:?}"
        );
    }
    assert_eq!(pair_set.len(), 4);
    let mut sorted_pairs = pair_set.clone();
    sorted_pairs.sort();
    assert_eq!(sorted_pairs, pair_set, "deterministic order");
    let acc_pair = g.pair_of(ino(&accepted)).unwrap();
    assert_eq!(
        acc_pair.method,
        PairMethod::ViaListener {
            listener: ino(&l),
            accepted: ino(&accepted),
            connector: ino(&accepted_client)
        }
    );
    assert_eq!(
        g.nodes[&ino(&accepted)].binding,
        Binding::Inherited { listener: ino(&l) }
    );
    assert_eq!(
        g.nodes[&ino(&s1)].holders,
        vec![(pid, s1.as_raw_fd()), (pid + 1, 3)]
    );

    assert_eq!(g.listeners.len(), 1);
    let lst = &g.listeners[0];
    assert_eq!(lst.inode, ino(&l));
    assert_eq!(lst.backlog, 5);
    assert_eq!(lst.pending.len(), 1);
    assert_eq!(lst.pending[0].client, ino(&pending_client));
    assert!(lst.pending[0].client_dumped);

    assert_eq!(g.dgram_links.len(), 1);
    assert_eq!(g.dgram_links[0].sender, ino(&sender));
    assert_eq!(g.dgram_links[0].receiver, ino(&recv));
    assert_eq!(g.dgram_links[0].receiver_name, rname);
    assert_eq!(g.by_name.get(&rname), Some(&ino(&recv)));

    // the external peers: x1 -> x2, and the outside dgram sender -> recv
    assert_eq!(g.external.len(), 2, "{:?}", g.external);
    let ext_x = g.external.iter().find(|e| e.inode == ino(&x1)).unwrap();
    assert_eq!(ext_x.peer, ino(&x2));
    assert_eq!(ext_x.pid, pid);
    assert_eq!(ext_x.fd, x1.as_raw_fd());
    assert_eq!(ext_x.direction, Direction::Outgoing);
    assert!(ext_x.to_string().contains("outside the dump"));
    let ext_r = g.external.iter().find(|e| e.inode == ino(&recv)).unwrap();
    assert_eq!(ext_r.peer, ino(&outside_sender));
    assert_eq!(ext_r.direction, Direction::Incoming);
    assert!(g.problems.is_empty(), "{:?}", g.problems);

    // listeners and bound sockets come first in the restore order
    let order = g.restore_order();
    assert_eq!(order[0], ino(&l));
    assert_eq!(order[1], ino(&recv));
}

#[test]
fn zero_length_datagrams_and_repeated_capture() {
    let (a, b) = restore::socketpair(SockType::Dgram).unwrap();
    restore::send_message(&a, None, &msg(b"")).unwrap();
    restore::send_message(&a, None, &msg(b"x")).unwrap();
    restore::send_message(&a, None, &msg(b"")).unwrap();
    let q1 = capture_queue(&b).unwrap();
    let d1: Vec<&[u8]> = q1.messages.iter().map(|m| m.data.as_slice()).collect();
    let q2 = capture_queue(&b).unwrap();
    let d2: Vec<&[u8]> = q2.messages.iter().map(|m| m.data.as_slice()).collect();
    assert_eq!(d1, vec![&b""[..], b"x", b""]);
    // kernel trap: an offset peek skips a zero-length datagram already
    // peeked; the head one is still seen (peeked without an offset)
    assert_eq!(d2, vec![&b""[..], b"x"]);
    for want in [&b""[..], b"x", b""] {
        assert_eq!(recv_message(&b, 10).unwrap().unwrap().data, want);
    }
}

#[test]
fn listener_and_unconnected_sockets_have_empty_queues() {
    let name = UnixName::Abstract(uniq("emptyl"));
    let l = restore::make_listener(SockType::Stream, &name, None, 3).unwrap();
    let _c = restore::connect_pending(SockType::Stream, &name, &UnixName::Unnamed, None).unwrap();
    assert!(capture_queue(&l).unwrap().is_empty());
    let s = restore::socket(SockType::Stream).unwrap();
    assert!(capture_queue(&s).unwrap().is_empty());
    let d = restore::socket(SockType::Dgram).unwrap();
    assert!(capture_queue(&d).unwrap().is_empty());
}

#[test]
fn capture_of_a_non_socket_names_fd_and_step() {
    let f = tempfile::tempfile().unwrap();
    let err = capture_queue(&f).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("SO_TYPE") && text.contains(&format!("fd {}", f.as_raw_fd())),
        "{text}"
    );
}

#[test]
fn graph_reports_accept_queue_across_the_dump_boundary() {
    let pid = std::process::id() as i32;
    let lname = UnixName::Abstract(uniq("xl"));
    let l = restore::make_listener(SockType::Stream, &lname, None, 5).unwrap();
    let inside =
        restore::connect_pending(SockType::Stream, &lname, &UnixName::Unnamed, None).unwrap();
    let outside =
        restore::connect_pending(SockType::Stream, &lname, &UnixName::Unnamed, None).unwrap();
    restore::send_message(&outside, None, &msg(b"early bytes")).unwrap();
    let diag = dump_all().unwrap();

    // the listener dumped, one client outside that already sent data
    let dumped = [
        DumpedSocket {
            pid,
            fd: l.as_raw_fd(),
            inode: ino(&l),
        },
        DumpedSocket {
            pid,
            fd: inside.as_raw_fd(),
            inode: ino(&inside),
        },
    ];
    let g = SocketGraph::build(&dumped, &diag);
    let lst = &g.listeners[0];
    assert_eq!(
        lst.pending
            .iter()
            .map(|p| (p.client, p.client_dumped))
            .collect::<Vec<_>>(),
        vec![(ino(&inside), true), (ino(&outside), false)]
    );
    assert_eq!(g.external.len(), 1);
    assert_eq!(g.external[0].peer, ino(&outside));
    assert_eq!(g.external[0].direction, Direction::Incoming);
    assert!(matches!(
        g.problems.as_slice(),
        [cryo_unix_sockets::graph::Problem::EmbryoData { client, bytes, .. }]
            if *client == ino(&outside) && *bytes > 0
    ));

    // only the waiting client dumped: its listener is outside
    let dumped = [DumpedSocket {
        pid,
        fd: inside.as_raw_fd(),
        inode: ino(&inside),
    }];
    let g = SocketGraph::build(&dumped, &diag);
    assert_eq!(g.external.len(), 1);
    assert_eq!(g.external[0].peer, ino(&l));
    assert_eq!(g.external[0].peer_name, lname);
    assert_eq!(g.external[0].direction, Direction::Outgoing);
}
