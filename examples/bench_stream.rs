//! The image stream's throughput beside a plain TCP copy of the same bytes.
//!
//! An image directory in /dev/shm holding one pages file of SIZE_MIB (pseudo-random bytes)
//! and a small inventory is stored on a receiver ([`Server`], its root in /dev/shm) on
//! 127.0.0.1 through the library `cryo dump --to` uses ([`Peer::store`]: handshake, frames,
//! tags, checksums, the receiver's fsyncs, manifest and commit), timed from the connect to
//! the "committed". Two references in the same run, each alternating with the stream:
//!
//! - "file copy": the image's pages file copied over a plain TCP connection on 127.0.0.1 as a
//!   user would without cryo (`nc`, an scp without compression or cipher): read from the
//!   file, sent, written into a file in /dev/shm and fsync'd. The same work as the stream
//!   minus what cryo adds (frames, tags, checks, the manifest): the fair reference for the
//!   issue's "at least 80% of a plain TCP copy of the same bytes";
//! - "tcp copy": the same number of bytes sent from memory and dropped by the reader: no
//!   file read, none written; the bare loopback, an upper bound no file transfer reaches.
//!
//! Beside each rate, the CPU time both ends (all in this process) spent per GB: what the
//! other loads of a shared machine do not change as much as they change the rates.
//!
//! `cargo run --release -p cryo-examples --example bench-stream [-- SIZE_MIB [RUNS]]`
//! (defaults 1024 MiB, 3 runs); with BENCH_STREAM_ONLY=1 the stream alone (to profile it).

use std::io::Write;
use std::time::{Duration, Instant};

use cryo_core::ImageDir;
use cryo_stream::{Peer, Psk, ServeOptions, Server};

/// CPU seconds this process (every thread of it) has used so far, from /proc/self/stat.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which ends with the last ')'): utime is the 14th
    // field of the line, stime the 15th.
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// An image directory under `dir` with a pages file of `bytes` and a small inventory.
fn make_image(dir: &std::path::Path, bytes: u64) -> ImageDir {
    let images = ImageDir::create(dir).expect("image dir");
    let mut f = images.create_raw("pages-1.img").expect("pages file");
    let mut buf = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut left = bytes;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).expect("write pages");
        left -= n as u64;
    }
    images
        .create_raw("inventory.img")
        .expect("inventory")
        .write_all(b"bench inventory")
        .expect("write inventory");
    images
}

/// Seconds to store `images` on a fresh receiver on 127.0.0.1.
fn stream_once(images: &ImageDir, root: &std::path::Path, name: &str) -> Duration {
    let psk = Psk::from_bytes(b"bench-stream-key-bench-stream-key");
    let server = Server::bind(ServeOptions {
        listen: "127.0.0.1:0".into(),
        root: root.to_owned(),
        once: true,
        psk: psk.clone(),
        timeout: Duration::from_secs(60),
        versions: cryo_stream::server::versions(),
        action_script: None,
    })
    .expect("bind the receiver");
    let addr = server.local_addr().expect("address").to_string();
    let receiver = std::thread::spawn(move || server.run().map(|o| o.to_string()));
    let peer = Peer {
        addr,
        psk,
        timeout: Duration::from_secs(60),
    };
    let started = Instant::now();
    peer.store(images, name, "bench").expect("store");
    let took = started.elapsed();
    receiver
        .join()
        .expect("receiver thread")
        .expect("receiver outcome");
    took
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mib: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let runs: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let tmp = tempfile::Builder::new()
        .prefix("bench-stream-")
        .tempdir_in("/dev/shm")
        .expect("tempdir in /dev/shm");
    let images = make_image(&tmp.path().join("src"), mib << 20);
    let bytes = (mib << 20) + b"bench inventory".len() as u64;
    println!(
        "an image of {mib} MiB stored through the stream on 127.0.0.1 (root in /dev/shm), \
         beside a plain TCP copy of the same bytes"
    );
    println!(
        "{:>4} {:>11} {:>11} {:>7} {:>11} {:>7} {:>11} {:>11} {:>11}",
        "run",
        "stream",
        "file copy",
        "ratio",
        "tcp copy",
        "ratio",
        "stream CPU",
        "file CPU",
        "tcp CPU"
    );
    let gb = bytes as f64 / 1e9;
    let (mut ratios, mut streams, mut copies) = (Vec::new(), Vec::new(), Vec::new());
    let (mut file_ratios, mut file_copies) = (Vec::new(), Vec::new());
    // For a profile of the stream alone: no references, no table.
    if std::env::var_os("BENCH_STREAM_ONLY").is_some() {
        for run in 0..runs {
            let c0 = cpu_secs();
            let s = stream_once(&images, &tmp.path().join(format!("root-{run}")), "img");
            println!(
                "stream {:.0} MB/s {:.2} s/GB",
                bytes as f64 / 1e6 / s.as_secs_f64(),
                (cpu_secs() - c0) / (bytes as f64 / 1e9)
            );
        }
        return;
    }
    for run in 0..runs {
        let root = tmp.path().join(format!("root-{run}"));
        let c0 = cpu_secs();
        let s = stream_once(&images, &root, "img");
        let c1 = cpu_secs();
        let _ = std::fs::remove_dir_all(&root);
        let c2 = cpu_secs();
        let t = cryo_examples::tcp_copy(bytes);
        let c3 = cpu_secs();
        let f = cryo_examples::tcp_file_copy(
            &images.path().join("pages-1.img"),
            &tmp.path().join("file-copy"),
        );
        let c4 = cpu_secs();
        let mbs = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
        let (smb, tmb, fmb) = (mbs(s), mbs(t), mbs(f));
        ratios.push(smb / tmb);
        streams.push(smb);
        copies.push(tmb);
        file_ratios.push(smb / fmb);
        file_copies.push(fmb);
        println!(
            "{run:>4} {smb:>6.0} MB/s {fmb:>6.0} MB/s {:>6.0}% {tmb:>6.0} MB/s {:>6.0}% \
             {:>6.2} s/GB {:>6.2} s/GB {:>6.2} s/GB",
            100.0 * smb / fmb,
            100.0 * smb / tmb,
            (c1 - c0) / gb,
            (c4 - c3) / gb,
            (c3 - c2) / gb,
        );
    }
    for v in [
        &mut ratios,
        &mut streams,
        &mut copies,
        &mut file_ratios,
        &mut file_copies,
    ] {
        v.sort_by(f64::total_cmp);
    }
    let mid = runs as usize / 2;
    let spread = |v: &[f64], scale: f64| {
        format!(
            "min {:.0} median {:.0} max {:.0}",
            scale * v[0],
            scale * v[mid],
            scale * v[v.len() - 1]
        )
    };
    println!("stream MB/s:    {}", spread(&streams, 1.0));
    println!("file copy MB/s: {}", spread(&file_copies, 1.0));
    println!("tcp copy MB/s:  {}", spread(&copies, 1.0));
    println!("stream / file copy %: {}", spread(&file_ratios, 100.0));
    println!("stream / tcp copy %:  {}", spread(&ratios, 100.0));
}
