//! Dump and restore of a tree of 100 processes connected by 1,000 unix socket pairs, each
//! with unread data queued in both directions, printing the figures.
//!
//! The tree is a fork of this process: a root (in a process group of its own) with 9
//! children of 10 children each. The root makes every pair before it forks, so both ends of
//! pair `i` are inherited by everyone; each process then keeps only the ends it owns (end A
//! of pair `i` in process `i % 100`, end B in another one, often in another branch of the
//! tree) and closes the rest. Before the dump, each end has sent its peer 64 bytes that
//! nobody read. After the restore, every process reads what waits on each of its ends and
//! checks it byte for byte, sends one more message on each and reads its peer's, then
//! reports `k` (or `x`) on a FIFO this bench holds.
//!
//! The dump and restore run the `cryo` binary built beside this example (`cargo build
//! --release -p cryo` first).
//!
//! `cargo run --release -p cryo-examples --example bench-unix-tree [-- PAIRS]` (default 1000;
//! CRYO_BENCH_LOG=PATH logs cryo's stages there)

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::path::Path;
use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};

/// Processes in the tree: the root, 9 children, 90 grandchildren.
const PROCESSES: usize = 100;
/// Bytes each end sends its peer before the dump, left unread.
const QUEUED: usize = 64;
/// Where pair `i`'s ends are: fds `FIRST_END + 2i` (A) and `FIRST_END + 2i + 1` (B).
const FIRST_END: RawFd = 100;
/// The FIFOs the tree shares with this bench, at these fds in every process.
const GO_FD: RawFd = 10;
const REPORT_FD: RawFd = 11;

/// The processes holding end A and end B of pair `i`: never the same one.
fn owners(i: usize) -> (usize, usize) {
    let a = i % PROCESSES;
    let b = (i * 37 + 11) % PROCESSES;
    (a, if b == a { (a + 1) % PROCESSES } else { b })
}

/// What end `side` (0 = A, 1 = B) of pair `i` sent before the dump.
fn pattern(i: usize, side: u8) -> [u8; QUEUED] {
    let mut p = [0u8; QUEUED];
    for (k, b) in p.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31) ^ (k as u8).wrapping_mul(7) ^ (side * 0x55);
    }
    p
}

/// Fails the process (and so its report) on an OS error: this code runs in the tree.
fn check(r: libc::c_int, what: &str) -> libc::c_int {
    if r < 0 {
        eprintln!("{what}: {}", std::io::Error::last_os_error());
        // SAFETY: ends this forked process.
        unsafe { libc::_exit(3) };
    }
    r
}

fn move_fd(fd: RawFd, to: RawFd) {
    if fd != to {
        // SAFETY: dup2/close on fds this process owns.
        check(unsafe { libc::dup2(fd, to) }, "dup2");
        // SAFETY: as above.
        unsafe { libc::close(fd) };
    }
}

/// Reads exactly `buf.len()` bytes from `fd` (blocking).
fn read_exact(fd: RawFd, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reads into the unfilled rest of our buffer.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        got += n as usize;
    }
    true
}

fn write_all(fd: RawFd, data: &[u8]) -> bool {
    // SAFETY: writes from our own buffer; small writes to a socket or FIFO are whole.
    unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) == data.len() as isize }
}

/// The life of process `idx` of the tree once it has its ends: ready, wait for the go,
/// check everything, report.
fn member(idx: usize, pairs: usize) -> ! {
    let mut mine = Vec::new();
    for i in 0..pairs {
        let (a, b) = owners(i);
        for (side, owner) in [(0u8, a), (1u8, b)] {
            let fd = FIRST_END + 2 * i as RawFd + side as RawFd;
            if owner == idx {
                mine.push((i, side, fd));
            } else {
                // SAFETY: closing an end another process owns.
                unsafe { libc::close(fd) };
            }
        }
    }
    write_all(REPORT_FD, b"r");
    let mut go = [0u8; 1];
    let mut ok = read_exact(GO_FD, &mut go);
    // What the peer queued before the dump, then one message each way after the restore.
    for &(i, side, fd) in &mine {
        let mut buf = [0u8; QUEUED];
        ok &= read_exact(fd, &mut buf) && buf == pattern(i, 1 - side);
        ok &= write_all(fd, &(i as u64).to_le_bytes());
    }
    for &(i, _, fd) in &mine {
        let mut buf = [0u8; 8];
        ok &= read_exact(fd, &mut buf) && buf == (i as u64).to_le_bytes();
    }
    // A failure reports the process's index (+ 128, clear of 'k' and 'r').
    write_all(REPORT_FD, &[if ok { b'k' } else { 128 + idx as u8 }]);
    loop {
        // SAFETY: waits for the bench to kill the tree.
        unsafe { libc::pause() };
    }
}

/// The root, run in the forked child: makes the pairs and the tree.
fn root(pairs: usize, go: &Path, report: &Path) -> ! {
    // SAFETY: plain syscalls on this new, single-threaded process.
    unsafe {
        // A session of its own: a dump refuses a process whose session leader it lacks.
        libc::setsid();
        libc::close_range(3, u32::MAX, 0);
        let null = CString::new("/dev/null").expect("no NUL");
        let fd = check(libc::open(null.as_ptr(), libc::O_RDWR), "/dev/null");
        for std_fd in 0..3 {
            libc::dup2(fd, std_fd);
        }
        libc::close(fd);
        let limit = libc::rlimit {
            rlim_cur: 4096,
            rlim_max: 4096,
        };
        check(
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit),
            "RLIMIT_NOFILE",
        );
    }
    for (path, at) in [(go, GO_FD), (report, REPORT_FD)] {
        let c = CString::new(path.to_str().expect("utf-8 path")).expect("no NUL");
        // SAFETY: opens a FIFO the bench holds open, so this does not block.
        let fd = check(unsafe { libc::open(c.as_ptr(), libc::O_RDWR) }, "open FIFO");
        move_fd(fd, at);
    }
    for i in 0..pairs {
        let mut sv = [0; 2];
        // SAFETY: socketpair fills our two-int array.
        check(
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) },
            "socketpair",
        );
        let (a, b) = (FIRST_END + 2 * i as RawFd, FIRST_END + 2 * i as RawFd + 1);
        move_fd(sv[0], a);
        move_fd(sv[1], b);
        write_all(a, &pattern(i, 0));
        write_all(b, &pattern(i, 1));
    }
    // 9 children, each with 10 children: indices 1..=9 and 10..=99.
    for child in 1..=9 {
        // SAFETY: single-threaded; the child only makes syscalls and forks.
        if unsafe { libc::fork() } == 0 {
            for k in 0..10 {
                // SAFETY: as above.
                if unsafe { libc::fork() } == 0 {
                    member(10 + (child - 1) * 10 + k, pairs);
                }
            }
            member(child, pairs);
        }
    }
    member(0, pairs)
}

fn make_fifo(path: &Path) -> File {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open FIFO")
}

/// Reads one byte per process from the report FIFO; returns how many said `want`, and the
/// indices of those that reported a failure.
fn collect(report: &mut File, want: u8) -> (usize, Vec<u8>) {
    let mut got = vec![0u8; PROCESSES];
    report.read_exact(&mut got).expect("reports");
    let failed = got.iter().filter(|&&b| b >= 128).map(|b| b - 128).collect();
    (got.iter().filter(|&&b| b == want).count(), failed)
}

fn main() {
    let pairs: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("PAIRS"))
        .unwrap_or(1000);
    // Images in /dev/shm, like the other benches: the figures are cryo's, not the disk's.
    let base = Path::new("/dev/shm").join(format!("cryo-bench-unix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("bench dir");
    let (go_path, report_path) = (base.join("go"), base.join("report"));
    let mut go = make_fifo(&go_path);
    let mut report = make_fifo(&report_path);
    let img = base.join("img");

    // The tree's processes are orphaned when the dump kills them: this bench reaps them (as
    // their subreaper) so their pids are free for the restore, instead of waiting on init.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let t = Instant::now();
    // SAFETY: single-threaded here; the child runs `root`, which never returns.
    let root_pid = match unsafe { fork() }.expect("fork") {
        ForkResult::Child => root(pairs, &go_path, &report_path),
        ForkResult::Parent { child } => child,
    };
    assert_eq!(collect(&mut report, b'r').0, PROCESSES, "tree ready");
    println!(
        "tree of {PROCESSES} processes, {pairs} unix pairs with {QUEUED} bytes queued each way: \
         ready in {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    let cryo = cryo_examples::Cryo::beside_this_example();
    let img_s = img.to_str().expect("utf-8 dir").to_string();
    let root_s = root_pid.to_string();
    let t = Instant::now();
    cryo.run(&["dump", "-t", &root_s, "-D", &img_s]);
    let dump_time = t.elapsed();
    // The dump reaps the children it kills through their frozen parents (no zombie is left
    // to init), so only the root's end comes to this subreaper; anything else that was
    // reparented here is collected too, until there is no child left.
    let mut reaped = 0;
    loop {
        match waitpid(None, None) {
            Ok(_) => reaped += 1,
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::ECHILD) if reaped > 0 => break,
            Err(e) => panic!("reaping the dumped tree: {e} after {reaped}"),
        }
    }
    let t = Instant::now();
    cryo.run(&["restore", "-D", &img_s, "--detach"]);
    let restore_time = t.elapsed();
    let total = dump_time + restore_time;
    let image_bytes: u64 = std::fs::read_dir(&img)
        .expect("image dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "cryo dump {:.1} ms, cryo restore {:.1} ms (whole commands), together {:.1} ms \
         (target: under 1000 ms); image {:.1} MiB",
        dump_time.as_secs_f64() * 1e3,
        restore_time.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3,
        image_bytes as f64 / (1 << 20) as f64
    );

    go.write_all(&[b'g'; PROCESSES]).expect("go");
    let (ok, failed) = collect(&mut report, b'k');
    let _ = kill(Pid::from_raw(-root_pid.as_raw()), Signal::SIGKILL);
    let _ = std::fs::remove_dir_all(&base);
    assert_eq!(
        ok, PROCESSES,
        "processes that found every byte and still talk to their peers (failed: {failed:?})"
    );
    println!("all {PROCESSES} processes read their queued bytes and still talk to their peers");
}
