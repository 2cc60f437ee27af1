//! Diag dump + peek capture of N socketpairs with queued data.
//!
//! `cargo run --release -p cryo-unix-sockets --example bench [N]`

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use cryo_unix_sockets::{capture_queue, restore, DiagSocket, QueuedMessage, SockType, UnixName};

fn ino(fd: impl AsFd) -> u32 {
    std::fs::File::from(fd.as_fd().try_clone_to_owned().unwrap())
        .metadata()
        .unwrap()
        .ino() as u32
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    // 2 fds per pair plus the peeked fds: make room.
    let types = [SockType::Stream, SockType::SeqPacket, SockType::Dgram];
    let mut pairs: Vec<(OwnedFd, OwnedFd)> = Vec::with_capacity(n);
    let mut total_bytes = 0usize;
    for i in 0..n {
        let ty = types[i % types.len()];
        let (a, b) = restore::socketpair(ty).unwrap();
        for k in 0..4 {
            let m = QueuedMessage {
                data: vec![(i + k) as u8; 100 + 50 * k],
                fds: Vec::new(),
                creds: None,
                sender: UnixName::Unnamed,
            };
            total_bytes += m.data.len();
            restore::send_message(&a, None, &m).unwrap();
        }
        pairs.push((a, b));
    }
    let inodes: Vec<u32> = pairs.iter().map(|(_, b)| ino(b)).collect();

    let mut diag = DiagSocket::new().unwrap();
    let t0 = Instant::now();
    let all = diag.dump().unwrap();
    let t_dump = t0.elapsed();
    for i in &inodes {
        assert!(all[i].peer.is_some());
    }

    let t1 = Instant::now();
    let mut captured = 0usize;
    let mut messages = 0usize;
    for (_, b) in &pairs {
        let q = capture_queue(b).unwrap();
        captured += q.total_bytes();
        messages += q.messages.len();
    }
    let t_cap = t1.elapsed();
    assert_eq!(captured, total_bytes);

    let t2 = Instant::now();
    for i in inodes.iter().take(100) {
        diag.query(*i).unwrap().unwrap();
    }
    let t_query = t2.elapsed() / 100;

    println!(
        "{n} socketpairs (stream/seqpacket/dgram), {} sockets in the namespace dump",
        all.len()
    );
    println!(
        "diag dump:      {:>9.3} ms total, {:>6.2} us per socket",
        t_dump.as_secs_f64() * 1e3,
        t_dump.as_secs_f64() * 1e6 / all.len() as f64
    );
    println!(
        "peek capture:   {:>9.3} ms total, {:>6.2} us per socket ({messages} messages, {captured} bytes)",
        t_cap.as_secs_f64() * 1e3,
        t_cap.as_secs_f64() * 1e6 / n as f64
    );
    println!(
        "dump + capture: {:>9.3} ms",
        (t_dump + t_cap).as_secs_f64() * 1e3
    );
    println!("single-inode query: {:.2} us", t_query.as_secs_f64() * 1e6);
}
