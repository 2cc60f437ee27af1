//! The process the integration tests checkpoint and restore.
//!
//! ```text
//! cryo-workload DIR MODE [ARGS...]
//! ```
//!
//! DIR is the test's control directory, holding two FIFOs the harness made:
//! `cmd` (opened O_RDWR once at start and kept: the workload then blocks in
//! read() on it, which is where a dump finds it) and `out` (opened O_WRONLY
//! for each reply, one line written, closed: no fd to the test stays open).
//! Stdin is /dev/null, stdout and stderr go to `DIR/workload.log`.
//!
//! Every mode answers `ping` (`pong`), `pid`, `ppid`, `tick` (counter += 1,
//! replies it), `get`, `fds` (`N=target` for every open fd, sorted, tab-separated),
//! `exit CODE` (replies `bye`, then exits) and the broken-peer commands of
//! `tests/src/workload_peers.rs` (`sigwatch`, `signext`, `resume-open`, `resume-next`,
//! `reader FD`, `reader-result FD`). A command may start with `#TAG`;
//! its reply then starts with `#TAG ` too. Mode commands:
//!
//! ```text
//! counter                    (only the common commands)
//! memory SIZE_MIB [SEED]     verify -> ok <checksum> <pages> | bad <offset> <found> <want>
//!                            touch  -> touched <pages>      addr -> <hex address>
//! file PATH                  next   -> <offset> <byte> | eof <offset>     pos -> <offset>
//! deleted-file [LEN] [SEED]  read   -> <len> <checksum>                   pos -> <offset>
//! pipe [LEN] [SEED]          drain  -> <len> <checksum>   take N -> <len> <checksum>
//! signal                     count  -> SIGUSR1 handler runs   pending -> 1|0 (SIGUSR2)
//! threads N                  counts -> ok <shared> <wakeups> | bad <shared> <sum>
//!                            (N threads each counting under one mutex, notifying a
//!                            condition variable a waiter thread sleeps on)
//! timers                     ticks  -> alarm <SIGALRM count> rt <timer signals> id <timer id>
//!                            (setitimer ITIMER_REAL every 20 ms; a POSIX timer on
//!                            CLOCK_MONOTONIC every 15 ms signalling SIGRTMIN with value 0x1234)
//! tree                       kids -> <child> <grandchild> <zombie>   ask MSG -> got MSG
//!                            ask reap -> reaped <status of the zombie>
//!                            (a child in a process group of its own, talking to this
//!                            process over two inherited pipes; its own child; a zombie
//!                            child of it that exited with 7)
//! mappings                   check  -> ok | bad <region>     bump -> <byte 0 of shared.dat>
//!                            (shared anonymous, shared file DIR/shared.dat, private file
//!                            DIR/private.dat with one page written, a PROT_NONE region)
//! unsupported KIND [FD]      fd     -> FD   (KIND: io_uring | packet)
//! events                     wait   -> ready <data,...> (one epoll_wait, timeout 20 ms)
//!                            count  -> <eventfd counter>    add N -> ok
//!                            timer  -> <expirations read so far> (reads the timerfd)
//!                            sig    -> <signo> | none       (reads the signalfd)
//!                            memfd  -> <contents> <seals>
//!                            touch  -> <wd>:<mask hex>,...  (writes DIR/watched, reads inotify)
//!                            (fd 40 epoll watching 41 eventfd (count 5, semaphore), 42
//!                            timerfd (CLOCK_MONOTONIC, every 10 ms), 43 signalfd (SIGUSR1,
//!                            blocked), data = fd number; 44 memfd "cryo-test" sealed
//!                            SHRINK|GROW; 45 inotify: wd 1 on DIR, wd 3 on DIR/watched)
//! tcp ADDR                   listens on ADDR (e.g. 127.0.0.1:0, [::1]:0); connections O_NONBLOCK
//!                            port -> <port>   accept -> <index>   conns -> <count>
//!                            echo I N -> <len> <checksum> (reads N bytes of conn I, writes them back)
//!                            blast I N SEED -> <bytes> (writes pattern(N, SEED) without waiting)
//!                            peer I -> <peer address>
//!                            accept-n N -> <count> (accepts N more)   echo-all N -> <count>
//!                            (reads N bytes of every connection, in order, writes them back)
//!                            connect ADDR -> <index> (non-blocking connect, kept as connection I)
//!                            connected I -> ok | <error> (waits until the connect completes)
//!                            local I -> <local address>   fd I -> <fd>   state I -> <TCP state name> (TCP_INFO)
//!                            shutdown I -> ok (shuts the write side: sends a FIN)
//!                            take I N -> <len> <checksum> (reads N bytes, writes nothing)
//!                            write I N SEED -> <len> (writes all of pattern(N, SEED), waiting)
//!                            eof I -> eof | data <len> (waits for the peer's FIN)
//!                            close I -> ok (closes it: later indices shift down)
//! udp ADDR                   port -> <port>   recv -> <len> <checksum> <from> (one datagram)
//! unix-pair TYPE             (TYPE: stream | seqpacket | dgram) a socketpair at fds 50 and 51
//!                            send SIDE MSG -> ok (writes MSG on end SIDE, 0 or 1, one message)
//!                            recv SIDE -> <msg>|<msg>|... | empty (reads every message waiting
//!                            on end SIDE, one read each, without blocking)
//!                            pass SIDE WHAT... -> ok (one message "fds" on end SIDE carrying a
//!                            descriptor per WHAT, closed here after: pipe:DATA the read end of a
//!                            new pipe holding DATA, its write end kept at fd 60; file:PATH:OFF
//!                            PATH read-only at offset OFF; sock:DATA one end of a new stream
//!                            socketpair with DATA waiting in it, the other end kept at fd 61)
//!                            take SIDE -> <msg> <item>... (one recvmsg; per descriptor
//!                            pipe:<data> (kept at 63) | file:<offset>:<rest> (kept at 64) |
//!                            sock:<what waits> (kept at 62))
//!                            pipe-write DATA -> ok (fd 60)   pipe-read -> <data> (fd 63)
//!                            sock-send DATA -> ok (from 61)  sock-recv -> <msgs> | empty (62)
//!                            shut SIDE -> ok (SHUT_WR)   send-nosig SIDE MSG -> ok | err ...
//!                            send-creds SIDE MSG UID GID [PID] -> ok (with SCM_CREDENTIALS,
//!                            PID defaults to its own)   passcred SIDE -> ok (SO_PASSCRED on)
//!                            recv-creds SIDE -> <msg> <pid> <uid> <gid> | <msg> none | empty
//!                            (SO_PASSCRED on, then one message)
//! unix-tree                  a child talking over a stream socketpair: this process holds
//!                            only end 50, the child only end 51 (both closed the other)
//!                            push MSG -> ok (the child answers "got MSG", left unread)
//!                            recv -> <what waits on 50> | empty   kid -> <child pid>
//!                            recv-wait -> <what waits on 50> (waits up to 10 s for something)
//!                            ready -> ready (waits up to 10 s for something, reads nothing)
//! unix-listen NAME           a stream listener at fd 50 on NAME (a path, or @name: abstract)
//!                            accept -> got <first message of the accepted connection>
//!                            connect MSG -> ok (a client of its own listener at fd 52, MSG sent,
//!                            not accepted)   accept-keep -> got <first message> (kept at fd 53)
//!                            say client|conn MSG -> ok   hear client|conn -> <msgs> | empty
//! pipe-split                 a pipe split between this process (read end only) and a child
//!                            (write end only) that writes "early" at once, "late" on SIGUSR1
//!                            read-wait -> <what the pipe holds> (waits up to 10 s)
//!                            kid -> <child pid>
//! unix-split                 a stream socketpair split between two trees: this process holds
//!                            end 50; a child forks a grandchild D holding end 51 and exits, so
//!                            D is no descendant. D sends "hello-from-D" at once, then answers
//!                            every waiting message with "got MSG" each time it gets SIGUSR1,
//!                            then reads one byte of DIR/split.txt (fd 54 in both: one offset)
//!                            and writes "p" into a pipe (fd 53; this process reads fd 52).
//!                            push MSG -> ok   recv -> <what waits on 50> | empty
//!                            recv-wait, ready (as unix-tree)   kid -> <D's pid>
//!                            pipe-read -> <what the pipe holds> (waits up to 10 s)
//!                            file-pos -> <offset of fd 54>
//! unix-ext PATH              connects to the unix listener at PATH (held by the test)
//! unix-pass                  a stream socketpair: this process holds end 50, a child only end
//!                            51; the child takes one message each time it gets SIGUSR1 (as
//!                            `take` of unix-pair) and answers with what it took
//!                            pass WHAT... -> ok (as unix-pair's, from end 50)
//!                            pipe-write DATA -> ok   kid -> <child pid>
//!                            ask -> <the child's answer> (SIGUSR1, then waits up to 10 s)
//! shared-memory              one object seen through several views, and a child seeing them too:
//!                            memfd fd 60 (4 pages, sealed SHRINK|GROW) as `fd` (pread/pwrite),
//!                            `a` (shared map of all of it), `b` (shared map of pages 1-3: b[0] is
//!                            a[4096]), `p` (private map, page 3 written after mapping); `o1`, `o2`
//!                            (two shared maps of a 2-page memfd whose fd was closed, sealed
//!                            FUTURE_WRITE after mapping); `anon` (4 pages MAP_SHARED|MAP_ANONYMOUS).
//!                            The child (forked last, fd 60 closed) answers `kid ...` over pipes.
//!                            w VIEW OFF BYTE -> ok   r VIEW OFF -> <byte>   addr VIEW -> <hex>
//!                            kid w|r|addr ... -> the child's answer   kid pid -> <child pid>
//!                            seals -> <F_GET_SEALS of fd 60>   size -> <st_size of fd 60>
//! tty [ctty]                 stdio on a terminal (ctty: made the controlling terminal first)
//!                            line -> ok LINE (reads one line from fd 0, writes "got LINE" to fd 1)
//!                            tty -> <tty_nr> <pgid> <sid> <tpgid> (of /proc/self/stat)
//! job-shell MODE [ARGS...]   a tiny shell (not a mode: it never reads the FIFOs): the
//!                            controlling terminal is its stdin, it runs `cryo-workload DIR MODE
//!                            ARGS` as a job in a group of its own in the foreground, waits for
//!                            it and dies the way it died
//! ```
//!
//! A failed read() of the command FIFO is fatal (exit 3, logged): with only
//! SA_RESTART handlers installed it never fails, so a blocking syscall that
//! does not resume after a restore shows up as a dead workload.

#[path = "../protocol.rs"]
#[allow(dead_code)]
mod protocol;
#[path = "../workload_peers.rs"]
mod workload_peers;

use std::ffi::{CStr, CString};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use protocol::{DEFAULT_SEED, TOUCH_STRIDE};

#[path = "../workload/unix_msg.rs"]
mod unix_msg;

const PAGE: usize = 4096;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: cryo-workload DIR MODE [ARGS...]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[1]);
    // Whatever the test process inherited and leaked (a jobserver pipe...)
    // must not follow the workload into its images.
    // SAFETY: close_range takes no pointers; nothing in this process uses fds above 2 yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    // Own session and process group: the workload is a tree of its own.
    // SAFETY: setsid takes no pointers; failure (already a group leader) is harmless.
    unsafe { libc::setsid() };
    if args[2] == "job-shell" {
        job_shell(&args[1], &args[3..]);
    }
    let cmd_fd = match sys::open(&dir.join(protocol::CMD_FIFO), libc::O_RDWR) {
        Ok(fd) => fd,
        Err(e) => fatal(&format!("open cmd fifo: {e}")),
    };
    let mut mode = match Mode::new(&args[2], &args[3..], &dir) {
        Ok(m) => m,
        Err(e) => fatal(&format!("mode {}: {e}", args[2])),
    };
    let out = dir.join(protocol::OUT_FIFO);
    let mut counter: u64 = 0;
    let mut peers = workload_peers::Peers::default();
    let mut lines = LineReader::new(cmd_fd);
    loop {
        let line = match lines.next_line() {
            Ok(l) => l,
            Err(e) => fatal(&format!("read cmd fifo: {e}")),
        };
        let mut words: Vec<&str> = line.split_whitespace().collect();
        // An optional leading `#TAG` is echoed in front of the reply, so the
        // test can tell its reply from a late one to an earlier command.
        let tag = match words.first() {
            Some(w) if w.starts_with('#') => Some(words.remove(0).to_string()),
            _ => None,
        };
        let out_line = |reply: &str| match &tag {
            Some(t) => format!("{t} {reply}"),
            None => reply.to_string(),
        };
        let Some(&verb) = words.first() else { continue };
        let reply = match (verb, &words[1..]) {
            ("ping", []) => "pong".to_string(),
            ("pid", []) => std::process::id().to_string(),
            // SAFETY: getppid takes no arguments.
            ("ppid", []) => unsafe { libc::getppid() }.to_string(),
            ("tick", []) => {
                counter += 1;
                counter.to_string()
            }
            ("get", []) => counter.to_string(),
            ("fds", []) => fds().unwrap_or_else(|e| format!("err fds: {e}")),
            ("exit", [code]) => {
                let code: i32 = code.parse().unwrap_or(1);
                reply_line(&out, &out_line("bye"));
                std::process::exit(code);
            }
            _ => peers
                .command(verb, &words[1..])
                .unwrap_or_else(|| mode.command(verb, &words[1..]))
                .unwrap_or_else(|e| format!("err {e}")),
        };
        reply_line(&out, &out_line(&reply));
    }
}

fn fatal(msg: &str) -> ! {
    eprintln!("cryo-workload {}: {msg}", std::process::id());
    std::process::exit(3);
}

/// Writes one reply line into the `out` FIFO, then closes it. If no test
/// listens (it gave up), the reply is dropped instead of blocking forever.
fn reply_line(out: &Path, reply: &str) {
    let fd = match sys::open(out, libc::O_WRONLY | libc::O_NONBLOCK) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("reply {reply:?} dropped: open out fifo: {e}");
            return;
        }
    };
    let mut line = reply.as_bytes().to_vec();
    line.push(b'\n');
    if let Err(e) = sys::write_all(fd, &line) {
        eprintln!("reply {reply:?} dropped: write: {e}");
    }
    sys::close(fd);
    let _ = io::stderr().flush();
}

/// Reads newline-terminated commands from a fd, keeping what follows a line.
struct LineReader {
    fd: i32,
    buf: Vec<u8>,
}

impl LineReader {
    fn new(fd: i32) -> Self {
        Self {
            fd,
            buf: Vec::new(),
        }
    }

    fn next_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                return Ok(String::from_utf8_lossy(&line[..nl]).into_owned());
            }
            let mut chunk = [0u8; 512];
            // Deliberately no EINTR retry: see the module docs.
            let n = sys::read(self.fd, &mut chunk)?;
            if n == 0 {
                // Cannot happen while we hold the FIFO O_RDWR ourselves.
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// `N=target` for every open fd, sorted by number.
fn fds() -> io::Result<String> {
    let mut entries = Vec::new();
    let (dir_fd, names) = sys::list_dir(c"/proc/self/fd")?;
    for name in names {
        let Ok(n) = name.parse::<i32>() else { continue };
        if n == dir_fd {
            continue;
        }
        let target = std::fs::read_link(format!("/proc/self/fd/{n}"))?;
        entries.push((n, target.to_string_lossy().into_owned()));
    }
    entries.sort();
    Ok(entries
        .iter()
        .map(|(n, t)| format!("{n}={t}"))
        .collect::<Vec<_>>()
        .join("\t"))
}

static SIGUSR1_COUNT: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sigusr1(_sig: libc::c_int) {
    SIGUSR1_COUNT.fetch_add(1, Ordering::SeqCst);
}

static ALARMS: AtomicU64 = AtomicU64::new(0);
static RT_TICKS: AtomicU64 = AtomicU64::new(0);
static RT_BAD_VALUE: AtomicU64 = AtomicU64::new(0);
const TIMER_VALUE: usize = 0x1234;

extern "C" fn on_alarm(_sig: libc::c_int) {
    ALARMS.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn on_timer(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let value = unsafe { (*info).si_value().sival_ptr } as usize;
    if value == TIMER_VALUE {
        RT_TICKS.fetch_add(1, Ordering::SeqCst);
    } else {
        RT_BAD_VALUE.fetch_add(1, Ordering::SeqCst);
    }
}

enum Mode {
    Counter,
    Memory(Memory),
    File { fd: i32 },
    DeletedFile { fd: i32, len: usize },
    Pipe { rd: i32 },
    Signal,
    Unsupported { fd: i32 },
    Mappings(Mappings),
    Tree(Tree),
    Timers { id: i32 },
    Threads(std::sync::Arc<Counters>),
    Events { timer_total: u64, dir: PathBuf },
    Tcp(Tcp),
    Udp(std::net::UdpSocket),
    UnixPair,
    UnixTree { kid: i32 },
    UnixSplit { kid: i32 },
    PipeSplit { kid: i32, rd: i32 },
    UnixExt,
    UnixListen(std::os::unix::net::UnixListener),
    UnixPass { kid: i32 },
    SharedMemory(SharedMemory),
    Tty,
}

/// The fds `unix-split` shares between its two trees besides the pair: a pipe, a file.
const SPLIT_PIPE_RD: i32 = 52;
const SPLIT_PIPE_WR: i32 = 53;
const SPLIT_FILE: i32 = 54;

/// The fds of the unix modes.
const UNIX_A: i32 = 50;
const UNIX_B: i32 = 51;

fn unix_socketpair(ty: i32) -> io::Result<(i32, i32)> {
    let mut sv = [0i32; 2];
    // SAFETY: socketpair fills our two-int array.
    if unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, sv.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((sys::move_fd(sv[0], UNIX_A)?, sys::move_fd(sv[1], UNIX_B)?))
}

/// Every message waiting on `fd`, one non-blocking recv each, joined with '|'.
fn unix_recv_all(fd: i32) -> io::Result<String> {
    let msgs = unix_recv_all_raw(fd)?;
    Ok(if msgs.is_empty() {
        "empty".into()
    } else {
        msgs.join("|")
    })
}

/// Every message waiting on `fd`, one non-blocking recv each ("<eof>" for an end of stream).
fn unix_recv_all_raw(fd: i32) -> io::Result<Vec<String>> {
    let mut msgs = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        // SAFETY: recv into our own buffer.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                break;
            }
            return Err(e);
        }
        if n == 0 {
            msgs.push("<eof>".to_string());
            break;
        }
        msgs.push(String::from_utf8_lossy(&buf[..n as usize]).into_owned());
    }
    Ok(msgs)
}

/// Waits up to 10 s for something to read on `fd`, reading nothing.
fn unix_wait_readable(fd: i32) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on our one pollfd.
    match unsafe { libc::poll(&mut p, 1, 10_000) } {
        n if n < 0 => Err(io::Error::last_os_error()),
        0 => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "nothing to read after 10 s",
        )),
        _ => Ok(()),
    }
}

/// What `fd` holds once something is there (waits up to 10 s), as text.
fn read_when_readable(fd: i32) -> io::Result<String> {
    unix_wait_readable(fd)?;
    let data = sys::read_available(fd, usize::MAX)?;
    Ok(String::from_utf8_lossy(&data).into_owned())
}

fn unix_send(fd: i32, msg: &[u8]) -> io::Result<()> {
    // SAFETY: send from our own buffer.
    let n = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Forks a child that runs `child` with fd `theirs` (closing `ours`), while this process keeps
/// `ours` (closing `theirs`). Returns the child's pid.
fn fork_holding(ours: i32, theirs: i32, child: fn(i32) -> !) -> io::Result<libc::pid_t> {
    // SAFETY: the workload is single-threaded here; the child only makes syscalls.
    let kid = unsafe { libc::fork() };
    if kid < 0 {
        return Err(io::Error::last_os_error());
    }
    if kid == 0 {
        sys::close(ours);
        child(theirs);
    }
    sys::close(theirs);
    Ok(kid)
}

/// The `unix-tree` child: answers every message on `fd` with "got MSG".
fn unix_tree_child(fd: i32) -> ! {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: recv into our own buffer.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            // SAFETY: ends the forked child.
            unsafe { libc::_exit(3) };
        }
        let reply = format!("got {}", String::from_utf8_lossy(&buf[..n as usize]));
        let _ = unix_send(fd, reply.as_bytes());
    }
}

/// Ends a forked child: status 0 when `result` is Ok, else 3 with the error on stderr
/// (`what` names the child).
fn exit_child(what: &str, result: io::Result<()>) -> ! {
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{what}: {e}");
            3
        }
    };
    // SAFETY: ends the forked process.
    unsafe { libc::_exit(code) };
}

/// The `pipe-split` child: holds only the write end of its parent's pipe; writes "early" at
/// once, then "late" each time SIGUSR1 arrives (blocked outside sigsuspend, none lost).
fn pipe_split_child(wr: i32) -> ! {
    let run = || -> io::Result<()> {
        sys::install_sigusr1(on_sigusr1)?;
        sys::block_signal(libc::SIGUSR1)?;
        sys::write_all(wr, b"early")?;
        loop {
            sys::await_sigusr1();
            sys::write_all(wr, b"late")?;
        }
    };
    exit_child("pipe-split child", run())
}

/// The `unix-split` grandchild: says hello on `fd`, reports its pid on `report`, then answers
/// what waits on `fd` each time SIGUSR1 arrives (blocked outside sigsuspend, so none is lost).
fn unix_split_grandchild(fd: i32, report: i32) -> ! {
    let run = || -> io::Result<()> {
        sys::install_sigusr1(on_sigusr1)?;
        sys::block_signal(libc::SIGUSR1)?;
        unix_send(fd, b"hello-from-D")?;
        sys::write_all(report, std::process::id().to_string().as_bytes())?;
        sys::close(report);
        loop {
            sys::await_sigusr1();
            let waiting = unix_recv_all_raw(fd)?;
            for msg in waiting {
                unix_send(fd, format!("got {msg}").as_bytes())?;
            }
            // The file and the pipe it shares with the other tree; the file first, so that
            // "p" in the pipe tells the reader the offset has moved already.
            sys::read(SPLIT_FILE, &mut [0u8; 1])?;
            sys::write_all(SPLIT_PIPE_WR, b"p")?;
        }
    };
    exit_child("unix-split grandchild", run())
}

/// The fds of the `events` mode.
mod ev {
    pub const EPOLL: i32 = 40;
    pub const EVENTFD: i32 = 41;
    pub const TIMERFD: i32 = 42;
    pub const SIGNALFD: i32 = 43;
    pub const MEMFD: i32 = 44;
    pub const INOTIFY: i32 = 45;
}

/// Sets up the fds of the `events` mode.
fn events_setup(dir: &Path) -> io::Result<()> {
    let place = |fd: io::Result<i32>, want: i32| sys::move_fd(fd?, want);
    place(sys::epoll(), ev::EPOLL)?;
    place(
        sys::eventfd(5, libc::EFD_SEMAPHORE | libc::EFD_NONBLOCK),
        ev::EVENTFD,
    )?;
    place(sys::timerfd(10_000_000), ev::TIMERFD)?;
    sys::block_signal(libc::SIGUSR1)?;
    place(sys::signalfd(libc::SIGUSR1), ev::SIGNALFD)?;
    for fd in [ev::EVENTFD, ev::TIMERFD, ev::SIGNALFD] {
        sys::epoll_add(ev::EPOLL, fd, libc::EPOLLIN as u32, fd as u64)?;
    }
    place(sys::memfd("cryo-test"), ev::MEMFD)?;
    sys::write_all(ev::MEMFD, b"memfd-contents")?;
    sys::add_seals(ev::MEMFD, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW)?;
    place(sys::inotify(), ev::INOTIFY)?;
    let watched = dir.join("watched");
    let gap = dir.join("gap");
    std::fs::write(&watched, b"")?;
    std::fs::write(&gap, b"")?;
    let mask = libc::IN_MODIFY | libc::IN_CLOSE_WRITE;
    assert_eq!(sys::add_watch(ev::INOTIFY, dir, mask)?, 1);
    let g = sys::add_watch(ev::INOTIFY, &gap, mask)?;
    sys::rm_watch(ev::INOTIFY, g)?;
    assert_eq!(sys::add_watch(ev::INOTIFY, &watched, mask)?, 3);
    // Drop the IN_IGNORED of the removed watch.
    let _ = sys::read_available(ev::INOTIFY, usize::MAX);
    Ok(())
}

/// The `events` mode commands.
fn events_command(
    timer_total: &mut u64,
    verb: &str,
    args: &[&str],
    dir: &Path,
) -> Result<String, String> {
    let io = |err: io::Error| err.to_string();
    match (verb, args) {
        ("wait", []) => {
            let mut ready = sys::epoll_wait(ev::EPOLL, 20).map_err(io)?;
            ready.sort_unstable();
            let list: Vec<String> = ready.iter().map(u64::to_string).collect();
            Ok(format!("ready {}", list.join(",")))
        }
        ("count", []) => {
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", ev::EVENTFD))
                .map_err(io)?;
            let hex = info
                .lines()
                .find_map(|l| l.strip_prefix("eventfd-count:"))
                .ok_or("no eventfd-count")?;
            Ok(u64::from_str_radix(hex.trim(), 16)
                .map_err(|e| e.to_string())?
                .to_string())
        }
        ("add", [n]) => {
            let n: u64 = n.parse().map_err(|_| format!("bad number {n:?}"))?;
            sys::write_all(ev::EVENTFD, &n.to_ne_bytes()).map_err(io)?;
            Ok("ok".into())
        }
        ("timer", []) => {
            let data = sys::read_available(ev::TIMERFD, 8).map_err(io)?;
            if data.len() == 8 {
                *timer_total += u64::from_ne_bytes(data.try_into().expect("8 bytes"));
            }
            Ok(timer_total.to_string())
        }
        ("sig", []) => {
            let data = sys::read_available(ev::SIGNALFD, 128).map_err(io)?;
            if data.len() < 4 {
                return Ok("none".into());
            }
            Ok(u32::from_ne_bytes(data[..4].try_into().expect("4 bytes")).to_string())
        }
        ("memfd", []) => {
            let mut buf = vec![0u8; 256];
            let n = sys::pread_all(ev::MEMFD, &mut buf).map_err(io)?;
            let seals = sys::get_seals(ev::MEMFD).map_err(io)?;
            Ok(format!("{} {seals}", String::from_utf8_lossy(&buf[..n])))
        }
        ("touch", []) => {
            std::fs::write(dir.join("watched"), b"x").map_err(io)?;
            let data = sys::read_available(ev::INOTIFY, 4096).map_err(io)?;
            let mut out = Vec::new();
            let mut off = 0;
            while off + 16 <= data.len() {
                let wd = i32::from_ne_bytes(data[off..off + 4].try_into().expect("4"));
                let mask = u32::from_ne_bytes(data[off + 4..off + 8].try_into().expect("4"));
                let len = u32::from_ne_bytes(data[off + 12..off + 16].try_into().expect("4"));
                out.push(format!("{wd}:{mask:x}"));
                off += 16 + len as usize;
            }
            Ok(out.join(","))
        }
        _ => Err(format!("unknown command {verb:?}")),
    }
}

/// What the counting threads share: every increment of `shared` is matched by one of a
/// thread's own counter, under the same lock.
#[derive(Default)]
struct Counters {
    state: std::sync::Mutex<(u64, Vec<u64>, u64)>,
    changed: std::sync::Condvar,
}

impl Counters {
    fn start(n: usize) -> std::sync::Arc<Self> {
        let c = std::sync::Arc::new(Counters {
            state: std::sync::Mutex::new((0, vec![0; n], 0)),
            changed: std::sync::Condvar::new(),
        });
        for i in 0..n {
            let c = c.clone();
            std::thread::Builder::new()
                .name(format!("counter-{i}"))
                .spawn(move || loop {
                    if let Ok(mut s) = c.state.lock() {
                        s.0 += 1;
                        s.1[i] += 1;
                    }
                    c.changed.notify_all();
                    std::thread::sleep(std::time::Duration::from_millis(1));
                })
                .expect("spawn a counting thread");
        }
        let waiter = c.clone();
        std::thread::Builder::new()
            .name("waiter".into())
            .spawn(move || {
                let Ok(mut s) = waiter.state.lock() else {
                    return;
                };
                loop {
                    s.2 += 1;
                    s = match waiter.changed.wait(s) {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                }
            })
            .expect("spawn the waiter thread");
        c
    }

    fn counts(&self) -> String {
        match self.state.lock() {
            Ok(s) => {
                let sum: u64 = s.1.iter().sum();
                if sum == s.0 {
                    format!("ok {} {}", s.0, s.2)
                } else {
                    format!("bad {} {sum}", s.0)
                }
            }
            Err(_) => "bad poisoned".into(),
        }
    }
}

/// The tcp mode: a listener and the connections it accepted.
struct Tcp {
    listener: std::net::TcpListener,
    conns: Vec<std::net::TcpStream>,
}

impl Tcp {
    fn conn(&mut self, i: &str) -> Result<&mut std::net::TcpStream, String> {
        let i: usize = i.parse().map_err(|_| format!("bad index {i:?}"))?;
        self.conns.get_mut(i).ok_or(format!("no connection {i}"))
    }
}

/// Waits until `s` is readable (`events` POLLIN) or writable (POLLOUT).
fn wait_for(s: &std::net::TcpStream, events: libc::c_short) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: s.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call.
    let r = unsafe { libc::poll(&mut pfd, 1, -1) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(format!("poll: {e}"));
        }
    }
    Ok(())
}

fn echo(s: &mut std::net::TcpStream, n: usize) -> Result<String, String> {
    use std::io::Read;
    let mut data = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match s.read(&mut data[got..]) {
            Ok(0) => return Err(format!("eof after {got} bytes")),
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_for(s, libc::POLLIN)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read after {got} bytes: {e}")),
        }
    }
    let mut sent = 0;
    while sent < n {
        match s.write(&data[sent..]) {
            Ok(k) => sent += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_for(s, libc::POLLOUT)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write after {sent} bytes: {e}")),
        }
    }
    Ok(protocol::len_and_checksum(&data))
}

/// The tcp mode's commands for handshakes and closing states.
mod tcp_extra {
    use super::{protocol, wait_for};
    use std::io::{self, Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::os::fd::{AsRawFd, FromRawFd};

    /// A TCP socket whose connect to `addr` was started, not waited for.
    pub fn connect_nonblocking(addr: SocketAddr) -> io::Result<TcpStream> {
        let (family, storage, len) = sockaddr(addr);
        // SAFETY: socket takes no pointers.
        let fd = unsafe {
            libc::socket(
                family,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh socket we own, handed over whole (closed on error).
        let s = unsafe { TcpStream::from_raw_fd(fd) };
        // SAFETY: storage holds a sockaddr of `len` bytes.
        let r = unsafe { libc::connect(fd, (&raw const storage).cast(), len) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(s)
    }

    fn sockaddr(addr: SocketAddr) -> (i32, libc::sockaddr_storage, libc::socklen_t) {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_in fits in sockaddr_storage.
                unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
                (
                    libc::AF_INET,
                    storage,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: sockaddr_in6 fits in sockaddr_storage.
                unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
                (
                    libc::AF_INET6,
                    storage,
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    }

    /// The socket's TCP state, by its kernel name.
    pub fn state(s: &TcpStream) -> io::Result<String> {
        // SAFETY: all-zero is a valid tcp_info.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: info and len are valid for the call.
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&raw mut info).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let names = [
            "0",
            "ESTABLISHED",
            "SYN_SENT",
            "SYN_RECV",
            "FIN_WAIT1",
            "FIN_WAIT2",
            "TIME_WAIT",
            "CLOSE",
            "CLOSE_WAIT",
            "LAST_ACK",
            "LISTEN",
            "CLOSING",
        ];
        Ok(names
            .get(usize::from(info.tcpi_state))
            .map_or_else(|| info.tcpi_state.to_string(), |n| (*n).to_string()))
    }

    /// Reads exactly `n` bytes (waiting for them) and sums them up.
    pub fn take(s: &mut TcpStream, n: usize) -> Result<String, String> {
        let mut data = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match s.read(&mut data[got..]) {
                Ok(0) => return Err(format!("eof after {got} bytes")),
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_for(s, libc::POLLIN)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read after {got} bytes: {e}")),
            }
        }
        Ok(protocol::len_and_checksum(&data))
    }

    /// Writes all of `data`, waiting whenever the send queue is full.
    pub fn write_all(s: &mut TcpStream, data: &[u8]) -> Result<(), String> {
        let mut sent = 0;
        while sent < data.len() {
            match s.write(&data[sent..]) {
                Ok(k) => sent += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_for(s, libc::POLLOUT)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write after {sent} bytes: {e}")),
            }
        }
        Ok(())
    }

    /// Waits for the end of the stream: `eof`, or `data N` if N bytes came first.
    pub fn eof(s: &mut TcpStream) -> Result<String, String> {
        let mut buf = [0u8; 4096];
        let mut extra = 0usize;
        loop {
            match s.read(&mut buf) {
                Ok(0) if extra == 0 => return Ok("eof".into()),
                Ok(0) => return Ok(format!("data {extra}")),
                Ok(k) => extra += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_for(s, libc::POLLIN)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

fn blast(s: &mut std::net::TcpStream, n: usize, seed: u64) -> Result<String, String> {
    let data = protocol::pattern(n, seed);
    let mut sent = 0;
    while sent < n {
        match s.write(&data[sent..]) {
            Ok(k) => sent += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write after {sent} bytes: {e}")),
        }
    }
    Ok(sent.to_string())
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> Result<T, String> {
    match args.get(i) {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| format!("bad argument {s:?}")),
    }
}

fn parse_seed(args: &[String], i: usize) -> Result<u64, String> {
    match args.get(i) {
        None => Ok(DEFAULT_SEED),
        Some(s) => parse_u64(s),
    }
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("bad number {s:?}"))
}

impl Mode {
    fn new(mode: &str, args: &[String], dir: &Path) -> Result<Self, String> {
        let e = |what: &str, err: io::Error| format!("{what}: {err}");
        Ok(match mode {
            "counter" => Mode::Counter,
            "memory" => {
                let mib: usize = arg(args, 0, 16)?;
                let seed = parse_seed(args, 1)?;
                Mode::Memory(Memory::new(mib << 20, seed).map_err(|err| e("mmap", err))?)
            }
            "file" => {
                let path = args.first().ok_or("file mode needs a PATH")?;
                let fd = sys::open(Path::new(path), libc::O_RDONLY).map_err(|err| e(path, err))?;
                Mode::File { fd }
            }
            "deleted-file" => {
                let len: usize = arg(args, 0, 100_000)?;
                let seed = parse_seed(args, 1)?;
                let path = dir.join(protocol::DELETED_FILE);
                let fd = sys::open_mode(&path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o600)
                    .map_err(|err| e("create deleted file", err))?;
                sys::write_all(fd, &protocol::pattern(len, seed)).map_err(|err| e("write", err))?;
                std::fs::remove_file(&path).map_err(|err| e("unlink", err))?;
                Mode::DeletedFile { fd, len }
            }
            "pipe" => {
                let len: usize = arg(args, 0, 40_000)?;
                if len > 65536 {
                    return Err("pipe mode holds at most 65536 bytes".into());
                }
                let seed = parse_seed(args, 1)?;
                let (rd, wr) = sys::pipe().map_err(|err| e("pipe", err))?;
                sys::write_all(wr, &protocol::pattern(len, seed)).map_err(|err| e("write", err))?;
                // Both ends stay open: the write end too, so the pipe is whole.
                Mode::Pipe { rd }
            }
            "signal" => {
                sys::install_sigusr1(on_sigusr1).map_err(|err| e("sigaction", err))?;
                sys::block_sigusr2().map_err(|err| e("sigprocmask", err))?;
                Mode::Signal
            }
            "unsupported" => {
                let kind = args.first().map(String::as_str).unwrap_or("io_uring");
                let want: i32 = arg(args, 1, 47)?;
                let fd = match kind {
                    "io_uring" => sys::io_uring().map_err(|err| e("io_uring_setup", err))?,
                    "packet" => sys::packet_socket().map_err(|err| e("socket", err))?,
                    other => return Err(format!("unknown unsupported kind {other:?}")),
                };
                let fd = sys::move_fd(fd, want).map_err(|err| e("dup2", err))?;
                Mode::Unsupported { fd }
            }
            "tree" => Mode::Tree(Tree::start().map_err(|err| e("tree", err))?),
            "timers" => Mode::Timers {
                id: sys::start_timers(on_alarm, on_timer, TIMER_VALUE)
                    .map_err(|err| e("timers", err))?,
            },
            "threads" => Mode::Threads(Counters::start(arg(args, 0, 8)?)),
            "mappings" => Mode::Mappings(Mappings::new(dir).map_err(|err| e("mappings", err))?),
            "events" => {
                events_setup(dir).map_err(|err| e("events", err))?;
                Mode::Events {
                    timer_total: 0,
                    dir: dir.to_owned(),
                }
            }
            "tcp" => {
                let addr = args.first().map(String::as_str).unwrap_or("127.0.0.1:0");
                let listener = std::net::TcpListener::bind(addr).map_err(|err| e(addr, err))?;
                Mode::Tcp(Tcp {
                    listener,
                    conns: Vec::new(),
                })
            }
            "udp" => {
                let addr = args.first().map(String::as_str).unwrap_or("127.0.0.1:0");
                Mode::Udp(std::net::UdpSocket::bind(addr).map_err(|err| e(addr, err))?)
            }
            "unix-pair" => {
                let ty = match args.first().map(String::as_str).unwrap_or("stream") {
                    "stream" => libc::SOCK_STREAM,
                    "seqpacket" => libc::SOCK_SEQPACKET,
                    "dgram" => libc::SOCK_DGRAM,
                    other => return Err(format!("unknown socket type {other:?}")),
                };
                unix_socketpair(ty).map_err(|err| e("socketpair", err))?;
                Mode::UnixPair
            }
            "unix-tree" => {
                let (a, b) =
                    unix_socketpair(libc::SOCK_STREAM).map_err(|err| e("socketpair", err))?;
                let kid = fork_holding(a, b, unix_tree_child).map_err(|err| e("fork", err))?;
                Mode::UnixTree { kid }
            }
            "pipe-split" => {
                let (rd, wr) = sys::pipe().map_err(|err| e("pipe", err))?;
                let kid = fork_holding(rd, wr, pipe_split_child).map_err(|err| e("fork", err))?;
                Mode::PipeSplit { kid, rd }
            }
            "unix-split" => {
                let (a, b) =
                    unix_socketpair(libc::SOCK_STREAM).map_err(|err| e("socketpair", err))?;
                // Shared with D too: a pipe (D writes, this process reads) and a file (one
                // offset for both).
                let (prd, pwr) = sys::pipe().map_err(|err| e("pipe", err))?;
                let prd = sys::move_fd(prd, SPLIT_PIPE_RD).map_err(|err| e("dup2", err))?;
                let pwr = sys::move_fd(pwr, SPLIT_PIPE_WR).map_err(|err| e("dup2", err))?;
                let path = dir.join("split.txt");
                std::fs::write(&path, b"abcdefgh").map_err(|err| e("split.txt", err))?;
                let file = sys::open(&path, libc::O_RDONLY).map_err(|err| e("split.txt", err))?;
                let file = sys::move_fd(file, SPLIT_FILE).map_err(|err| e("dup2", err))?;
                let (rd, wr) = sys::pipe().map_err(|err| e("pipe", err))?;
                // SAFETY: single-threaded here; the child only makes syscalls.
                let child = unsafe { libc::fork() };
                if child < 0 {
                    return Err(e("fork", io::Error::last_os_error()));
                }
                if child == 0 {
                    // SAFETY: still single-threaded in the child.
                    let grandchild = unsafe { libc::fork() };
                    if grandchild == 0 {
                        // D keeps only stdio, its end and the report pipe: nothing else
                        // of this tree (the command FIFO stays the root's alone).
                        for fd in 3..1024 {
                            if ![b, wr, pwr, file].contains(&fd) {
                                // SAFETY: closing fds this new process does not use.
                                unsafe { libc::close(fd) };
                            }
                        }
                        unix_split_grandchild(b, wr);
                    }
                    // SAFETY: ends the child; D is reparented away from this tree.
                    unsafe { libc::_exit(if grandchild < 0 { 3 } else { 0 }) };
                }
                sys::close(b);
                sys::close(wr);
                sys::close(pwr);
                let _ = prd;
                let mut status = 0;
                // SAFETY: reaps our own child.
                if unsafe { libc::waitpid(child, &mut status, 0) } != child || status != 0 {
                    return Err(format!("the unix-split child failed: status {status}"));
                }
                // D reports once its hello is sent; the pipe ends when it closes its end.
                let mut report = Vec::new();
                let mut chunk = [0u8; 64];
                loop {
                    match sys::read(rd, &mut chunk).map_err(|err| e("report pipe", err))? {
                        0 => break,
                        n => report.extend_from_slice(&chunk[..n]),
                    }
                }
                sys::close(rd);
                let kid = String::from_utf8_lossy(&report)
                    .parse()
                    .map_err(|_| "the grandchild did not report its pid".to_string())?;
                debug_assert_eq!(a, UNIX_A);
                Mode::UnixSplit { kid }
            }
            "unix-listen" => {
                use std::os::fd::{FromRawFd, IntoRawFd};
                use std::os::linux::net::SocketAddrExt;
                let name = args.first().ok_or("unix-listen mode needs a NAME")?;
                let l = match name.strip_prefix('@') {
                    Some(abs) => {
                        let addr = std::os::unix::net::SocketAddr::from_abstract_name(abs)
                            .map_err(|err| e(name, err))?;
                        std::os::unix::net::UnixListener::bind_addr(&addr)
                    }
                    None => std::os::unix::net::UnixListener::bind(name),
                }
                .map_err(|err| e(name, err))?;
                let fd = sys::move_fd(l.into_raw_fd(), UNIX_A).map_err(|err| e("dup2", err))?;
                // SAFETY: fd is the listener just moved there, owned by nobody else.
                Mode::UnixListen(unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) })
            }
            "unix-pass" => Mode::UnixPass {
                kid: unix_msg::start_pass_child().map_err(|err| e("unix-pass", err))?,
            },
            "unix-ext" => {
                let path = args.first().ok_or("unix-ext mode needs a PATH")?;
                let s =
                    std::os::unix::net::UnixStream::connect(path).map_err(|err| e(path, err))?;
                sys::move_fd(std::os::fd::IntoRawFd::into_raw_fd(s), UNIX_A)
                    .map_err(|err| e("dup2", err))?;
                Mode::UnixExt
            }
            "shared-memory" => {
                Mode::SharedMemory(SharedMemory::start().map_err(|err| e("shared-memory", err))?)
            }
            "tty" => {
                if args.first().map(String::as_str) == Some("ctty") {
                    sys::set_ctty(0).map_err(|err| e("TIOCSCTTY", err))?;
                }
                Mode::Tty
            }
            other => return Err(format!("unknown mode {other:?}")),
        })
    }

    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        let io = |err: io::Error| err.to_string();
        match (self, verb, args) {
            (Mode::Memory(m), "verify", []) => Ok(m.verify()),
            (Mode::Memory(m), "touch", []) => Ok(format!("touched {}", m.touch())),
            (Mode::Memory(m), "addr", []) => Ok(format!("{:#x}", m.base as usize)),
            (Mode::File { fd }, "next", []) => {
                let off = sys::tell(*fd).map_err(io)?;
                let mut b = [0u8; 1];
                match sys::read(*fd, &mut b).map_err(io)? {
                    0 => Ok(format!("eof {off}")),
                    _ => Ok(format!("{off} {}", b[0])),
                }
            }
            (Mode::File { fd } | Mode::DeletedFile { fd, .. }, "pos", []) => {
                Ok(sys::tell(*fd).map_err(io)?.to_string())
            }
            (Mode::DeletedFile { fd, len }, "read", []) => {
                let mut data = vec![0u8; *len + 1];
                let n = sys::pread_all(*fd, &mut data).map_err(io)?;
                Ok(protocol::len_and_checksum(&data[..n]))
            }
            (Mode::Pipe { rd }, "drain", []) => {
                let data = sys::read_available(*rd, usize::MAX).map_err(io)?;
                Ok(protocol::len_and_checksum(&data))
            }
            (Mode::Pipe { rd }, "take", [n]) => {
                let n: usize = n.parse().map_err(|_| format!("bad count {n:?}"))?;
                let data = sys::read_available(*rd, n).map_err(io)?;
                Ok(protocol::len_and_checksum(&data))
            }
            (Mode::Signal, "count", []) => Ok(SIGUSR1_COUNT.load(Ordering::SeqCst).to_string()),
            (Mode::Signal, "pending", []) => Ok(u8::from(sys::sigusr2_pending()).to_string()),
            (Mode::Unsupported { fd }, "fd", []) => Ok(fd.to_string()),
            (Mode::Mappings(m), "check", []) => Ok(m.check()),
            (Mode::Threads(c), "counts", []) => Ok(c.counts()),
            (Mode::Tree(t), "kids", []) => Ok(format!("{} {} {}", t.kids[0], t.kids[1], t.kids[2])),
            (Mode::Tree(t), "ask", [msg]) => t.ask(msg).map_err(io),
            (Mode::Timers { id }, "ticks", []) => Ok(format!(
                "alarm {} rt {} id {id} bad {}",
                ALARMS.load(Ordering::SeqCst),
                RT_TICKS.load(Ordering::SeqCst),
                RT_BAD_VALUE.load(Ordering::SeqCst)
            )),
            (Mode::Mappings(m), "bump", []) => Ok(m.bump().to_string()),
            (Mode::Events { timer_total, dir }, verb, args) => {
                events_command(timer_total, verb, args, dir)
            }
            (Mode::UnixPair, "send", [side, msg]) => {
                let fd = if *side == "0" { UNIX_A } else { UNIX_B };
                unix_send(fd, msg.as_bytes()).map_err(io)?;
                Ok("ok".into())
            }
            (Mode::UnixPair, "recv", [side]) => {
                unix_recv_all(if *side == "0" { UNIX_A } else { UNIX_B }).map_err(io)
            }
            (Mode::UnixTree { .. }, "push", [msg]) => {
                unix_send(UNIX_A, msg.as_bytes()).map_err(io)?;
                Ok("ok".into())
            }
            (Mode::UnixTree { .. }, "recv", []) => unix_recv_all(UNIX_A).map_err(io),
            (
                Mode::UnixTree { kid } | Mode::UnixSplit { kid } | Mode::PipeSplit { kid, .. },
                "kid",
                [],
            ) => Ok(kid.to_string()),
            (Mode::PipeSplit { rd, .. }, "read-wait", []) => read_when_readable(*rd).map_err(io),
            (Mode::UnixSplit { .. }, "push", [msg]) => {
                unix_send(UNIX_A, msg.as_bytes()).map_err(io)?;
                Ok("ok".into())
            }
            (Mode::UnixSplit { .. }, "recv", []) => unix_recv_all(UNIX_A).map_err(io),
            (Mode::UnixSplit { .. }, "pipe-read", []) => {
                read_when_readable(SPLIT_PIPE_RD).map_err(io)
            }
            (Mode::UnixSplit { .. }, "file-pos", []) => {
                Ok(sys::tell(SPLIT_FILE).map_err(io)?.to_string())
            }
            (Mode::UnixTree { .. } | Mode::UnixSplit { .. }, "recv-wait", []) => {
                unix_wait_readable(UNIX_A).map_err(io)?;
                unix_recv_all(UNIX_A).map_err(io)
            }
            (Mode::UnixTree { .. } | Mode::UnixSplit { .. }, "ready", []) => {
                unix_wait_readable(UNIX_A).map_err(io)?;
                Ok("ready".into())
            }
            (Mode::UnixListen(l), "accept", []) => {
                use std::io::Read;
                let (mut c, _) = l.accept().map_err(io)?;
                let mut buf = [0u8; 256];
                let n = c.read(&mut buf).map_err(io)?;
                Ok(format!("got {}", String::from_utf8_lossy(&buf[..n])))
            }
            (Mode::UnixListen(l), verb, args) => {
                use std::os::fd::AsRawFd;
                unix_msg::listen_command(l.as_raw_fd(), verb, args)
                    .unwrap_or_else(|| Err(format!("unknown command {verb:?}")))
            }
            (Mode::UnixPass { kid }, verb, args) => unix_msg::pass_command(*kid, verb, args)
                .unwrap_or_else(|| Err(format!("unknown command {verb:?}"))),
            (Mode::UnixPair, verb, args) => unix_msg::pair_command(verb, args)
                .unwrap_or_else(|| Err(format!("unknown command {verb:?}"))),
            (Mode::Udp(u), "port", []) => Ok(u.local_addr().map_err(io)?.port().to_string()),
            (Mode::Udp(u), "recv", []) => {
                let mut buf = vec![0u8; 65536];
                let (n, from) = u.recv_from(&mut buf).map_err(io)?;
                Ok(format!("{} {from}", protocol::len_and_checksum(&buf[..n])))
            }
            (Mode::Tcp(t), "port", []) => {
                Ok(t.listener.local_addr().map_err(io)?.port().to_string())
            }
            (Mode::Tcp(t), "conns", []) => Ok(t.conns.len().to_string()),
            (Mode::Tcp(t), "accept", []) => {
                let (s, _) = t.listener.accept().map_err(io)?;
                s.set_nonblocking(true).map_err(io)?;
                t.conns.push(s);
                Ok((t.conns.len() - 1).to_string())
            }
            (Mode::Tcp(t), "accept-n", [n]) => {
                let n: usize = n.parse().map_err(|_| format!("bad count {n:?}"))?;
                for _ in 0..n {
                    let (s, _) = t.listener.accept().map_err(io)?;
                    s.set_nonblocking(true).map_err(io)?;
                    t.conns.push(s);
                }
                Ok(t.conns.len().to_string())
            }
            (Mode::Tcp(t), "echo-all", [n]) => {
                let n: usize = n.parse().map_err(|_| format!("bad count {n:?}"))?;
                for (i, s) in t.conns.iter_mut().enumerate() {
                    echo(s, n).map_err(|e| format!("connection {i}: {e}"))?;
                }
                Ok(t.conns.len().to_string())
            }
            (Mode::Tcp(t), "peer", [i]) => Ok(t.conn(i)?.peer_addr().map_err(io)?.to_string()),
            (Mode::Tcp(t), "echo", [i, n]) => {
                let n: usize = n.parse().map_err(|_| format!("bad count {n:?}"))?;
                echo(t.conn(i)?, n)
            }
            (Mode::Tcp(t), "connect", [addr]) => {
                let addr: std::net::SocketAddr =
                    addr.parse().map_err(|_| format!("bad address {addr:?}"))?;
                let s = tcp_extra::connect_nonblocking(addr).map_err(io)?;
                t.conns.push(s);
                Ok((t.conns.len() - 1).to_string())
            }
            (Mode::Tcp(t), "connected", [i]) => {
                let s = t.conn(i)?;
                wait_for(s, libc::POLLOUT)?;
                match s.take_error().map_err(io)? {
                    None => Ok("ok".into()),
                    Some(e) => Ok(e.to_string()),
                }
            }
            (Mode::Tcp(t), "local", [i]) => Ok(t.conn(i)?.local_addr().map_err(io)?.to_string()),
            (Mode::Tcp(t), "fd", [i]) => {
                use std::os::fd::AsRawFd;
                Ok(t.conn(i)?.as_raw_fd().to_string())
            }
            (Mode::Tcp(t), "state", [i]) => tcp_extra::state(t.conn(i)?).map_err(io),
            (Mode::Tcp(t), "shutdown", [i]) => {
                t.conn(i)?.shutdown(std::net::Shutdown::Write).map_err(io)?;
                Ok("ok".into())
            }
            (Mode::Tcp(t), "take", [i, n]) => {
                let n: usize = n.parse().map_err(|_| format!("bad count {n:?}"))?;
                tcp_extra::take(t.conn(i)?, n)
            }
            (Mode::Tcp(t), "write", [i, n, seed]) => {
                let n: usize = n.parse().map_err(|_| format!("bad count {n:?}"))?;
                let seed = parse_u64(seed)?;
                tcp_extra::write_all(t.conn(i)?, &protocol::pattern(n, seed))?;
                Ok(n.to_string())
            }
            (Mode::Tcp(t), "eof", [i]) => tcp_extra::eof(t.conn(i)?),
            (Mode::Tcp(t), "close", [i]) => {
                t.conn(i)?;
                let i: usize = i.parse().map_err(|_| format!("bad index {i:?}"))?;
                drop(t.conns.remove(i));
                Ok("ok".into())
            }
            (Mode::Tcp(t), "blast", [i, n, seed]) => {
                let n: usize = n.parse().map_err(|_| format!("bad count {n:?}"))?;
                let seed = parse_u64(seed)?;
                blast(t.conn(i)?, n, seed)
            }
            (Mode::SharedMemory(s), "kid", rest) => s.ask(&rest.join(" ")).map_err(io),
            (Mode::SharedMemory(_), "seals", []) => {
                Ok(sys::get_seals(SHM_FD).map_err(io)?.to_string())
            }
            (Mode::SharedMemory(_), "size", []) => {
                Ok(sys::fd_size(SHM_FD).map_err(io)?.to_string())
            }
            (Mode::SharedMemory(s), verb, args) => Ok(s.answer(verb, args)),
            (Mode::Tty, "line", []) => {
                let line = sys::read_line(0).map_err(io)?;
                sys::write_all(1, format!("got {line}\n").as_bytes()).map_err(io)?;
                Ok(format!("ok {line}"))
            }
            (Mode::Tty, "tty", []) => {
                let stat = std::fs::read_to_string("/proc/self/stat").map_err(io)?;
                let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
                let f: Vec<&str> = rest.split(' ').collect();
                // Fields 5 (pgrp), 6 (session), 7 (tty_nr), 8 (tpgid); f[0] is field 3.
                Ok(format!("{} {} {} {}", f[4], f[2], f[3], f[5]))
            }
            _ => Err(format!("unknown command {verb:?}")),
        }
    }
}

/// The fd of the `shared-memory` mode's memfd, its length and the orphan memfd's.
const SHM_FD: i32 = 60;
const SHM_LEN: usize = 4 * PAGE;
const ORPHAN_LEN: usize = 2 * PAGE;

/// The `shared-memory` mode (see the module doc).
struct SharedMemory {
    views: Vec<(&'static str, *mut u8, usize)>,
    to_child: i32,
    from_child: i32,
}

impl SharedMemory {
    fn start() -> io::Result<Self> {
        let fd = sys::move_fd(sys::memfd("cryo-shm")?, SHM_FD)?;
        sys::write_all(fd, &protocol::pattern(SHM_LEN, 11))?;
        sys::add_seals(fd, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW)?;
        let a = sys::map_at(SHM_LEN, libc::MAP_SHARED, fd, 0)?;
        let b = sys::map_at(SHM_LEN - PAGE, libc::MAP_SHARED, fd, PAGE)?;
        let p = sys::map_at(SHM_LEN, libc::MAP_PRIVATE, fd, 0)?;
        p[3 * PAGE] = 0xee;
        let orphan = sys::memfd("cryo-orphan")?;
        sys::write_all(orphan, &protocol::pattern(ORPHAN_LEN, 12))?;
        let o1 = sys::map_at(ORPHAN_LEN, libc::MAP_SHARED, orphan, 0)?;
        let o2 = sys::map_at(ORPHAN_LEN, libc::MAP_SHARED, orphan, 0)?;
        // After the mappings: they stay writable, new writable ones are refused.
        sys::add_seals(orphan, libc::F_SEAL_FUTURE_WRITE)?;
        sys::close(orphan);
        let anon = sys::map(SHM_LEN, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1)?;
        anon.copy_from_slice(&protocol::pattern(SHM_LEN, 13));
        let mut views = Vec::new();
        for (name, v) in [
            ("a", a),
            ("b", b),
            ("p", p),
            ("o1", o1),
            ("o2", o2),
            ("anon", anon),
        ] {
            views.push((name, v.as_mut_ptr(), v.len()));
        }
        let (a_rd, a_wr) = sys::pipe()?;
        let (b_rd, b_wr) = sys::pipe()?;
        // SAFETY: the workload is single-threaded here; the child only makes syscalls.
        let kid = unsafe { libc::fork() };
        if kid < 0 {
            return Err(io::Error::last_os_error());
        }
        let me = Self {
            views,
            to_child: a_wr,
            from_child: b_rd,
        };
        if kid == 0 {
            sys::close(SHM_FD);
            me.child(a_rd, b_wr);
        }
        // The child's ends stay open here too (as in `tree`): a pipe whose ends are split
        // between a parent and its child is not restored as one pipe yet.
        Ok(me)
    }

    /// The child: answers `w`, `r` and `addr` through the mappings it inherited, forever.
    fn child(&self, rd: i32, wr: i32) -> ! {
        let mut buf = [0u8; 256];
        loop {
            let n = match sys::read(rd, &mut buf) {
                Ok(0) | Err(_) => std::process::exit(3),
                Ok(n) => n,
            };
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let words: Vec<&str> = msg.split_whitespace().collect();
            let reply = match words.split_first() {
                // SAFETY: getpid takes no arguments.
                Some((&"pid", [])) => unsafe { libc::getpid() }.to_string(),
                Some((verb, args)) => self.answer(verb, args),
                None => "err empty".into(),
            };
            let _ = sys::write_all(wr, reply.as_bytes());
        }
    }

    fn ask(&self, msg: &str) -> io::Result<String> {
        sys::write_all(self.to_child, msg.as_bytes())?;
        let mut buf = [0u8; 256];
        let n = sys::read(self.from_child, &mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// `w VIEW OFF BYTE`, `r VIEW OFF`, `addr VIEW`, in this process.
    fn answer(&self, verb: &str, args: &[&str]) -> String {
        let view = |name: &str| self.views.iter().find(|v| v.0 == name).copied();
        let off = |s: &str| {
            s.parse::<usize>()
                .map_err(|_| format!("err bad offset {s:?}"))
        };
        let result = match (verb, args) {
            ("addr", [name]) => view(name)
                .map(|v| format!("{:#x}", v.1 as usize))
                .ok_or_else(|| format!("err no view {name}")),
            ("w", ["fd", o, b]) => off(o).and_then(|o| {
                let byte: u8 = b.parse().map_err(|_| format!("err bad byte {b:?}"))?;
                sys::pwrite_at(SHM_FD, &[byte], o)
                    .map(|()| "ok".to_string())
                    .map_err(|e| format!("err pwrite: {e}"))
            }),
            ("r", ["fd", o]) => off(o).and_then(|o| {
                let mut byte = [0u8; 1];
                sys::pread_at(SHM_FD, &mut byte, o)
                    .map(|()| byte[0].to_string())
                    .map_err(|e| format!("err pread: {e}"))
            }),
            ("w" | "r", [name, o, ..]) => {
                let v = view(name).ok_or_else(|| format!("err no view {name}"));
                v.and_then(|v| Ok((v, off(o)?)))
                    .and_then(|((_, ptr, len), o)| {
                        if o >= len {
                            return Err(format!("err offset {o} beyond {len}"));
                        }
                        // SAFETY: ptr..ptr+len is a live read-write mapping of this process and
                        // o < len; volatile, since another process writes the same memory.
                        unsafe {
                            match args {
                                [_, _, b] => {
                                    let byte: u8 =
                                        b.parse().map_err(|_| format!("err bad byte {b:?}"))?;
                                    std::ptr::write_volatile(ptr.add(o), byte);
                                    Ok("ok".to_string())
                                }
                                _ => Ok(std::ptr::read_volatile(ptr.add(o)).to_string()),
                            }
                        }
                    })
            }
            _ => Err(format!("err unknown command {verb:?}")),
        };
        result.unwrap_or_else(|e| e)
    }
}

/// `job-shell`: runs `cryo-workload DIR MODE ARGS` the way a shell runs a foreground job, on
/// the terminal of its stdin, and dies the way the job died. Never returns.
fn job_shell(dir: &str, job: &[String]) -> ! {
    if let Err(e) = sys::set_ctty(0) {
        fatal(&format!("job-shell: TIOCSCTTY: {e}"));
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| fatal(&format!("current_exe: {e}")));
    let mut argv: Vec<CString> = vec![CString::new(exe.as_os_str().as_bytes()).expect("no NUL")];
    argv.push(CString::new(dir).expect("no NUL"));
    argv.extend(
        job.iter()
            .map(|a| CString::new(a.as_str()).expect("no NUL")),
    );
    let (go_rd, go_wr) = sys::pipe().unwrap_or_else(|e| fatal(&format!("pipe: {e}")));
    // SAFETY: single-threaded; the child only makes syscalls before exec.
    let kid = unsafe { libc::fork() };
    if kid == 0 {
        let mut b = [0u8; 1];
        // SAFETY: plain syscalls in the forked child; argv outlives execv.
        unsafe {
            libc::setpgid(0, 0);
            // Wait until the shell has made this group the foreground one.
            libc::read(go_rd, b.as_mut_ptr().cast(), 1);
            let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
            ptrs.push(std::ptr::null());
            libc::execv(ptrs[0], ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    if kid < 0 {
        fatal(&format!("fork: {}", io::Error::last_os_error()));
    }
    // SAFETY: plain syscalls on our own child and terminal; SIGTTOU ignored so a shell in the
    // background may still hand over the terminal.
    let status = unsafe {
        libc::setpgid(kid, kid);
        libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        libc::tcsetpgrp(0, kid);
        libc::write(go_wr, b"g".as_ptr().cast(), 1);
        let mut status = 0;
        while libc::waitpid(kid, &mut status, 0) < 0 {}
        status
    };
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: dying by the job's signal, with its default action.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
    std::process::exit(libc::WEXITSTATUS(status));
}

/// Anonymous memory filled with a pattern derived from each word's address.
/// The `tree` mode: a child (its own process group) with a child and a zombie of its own,
/// answering this process over two pipes both inherited.
struct Tree {
    to_child: i32,
    from_child: i32,
    kids: [i32; 3],
}

impl Tree {
    fn start() -> io::Result<Self> {
        let (a_rd, a_wr) = sys::pipe()?;
        let (b_rd, b_wr) = sys::pipe()?;
        // SAFETY: the workload is single-threaded here; the child only makes syscalls.
        let child = unsafe { libc::fork() };
        if child < 0 {
            return Err(io::Error::last_os_error());
        }
        if child == 0 {
            Self::child(a_rd, b_wr);
        }
        let mut buf = [0u8; 64];
        let n = sys::read(b_rd, &mut buf)?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let mut it = text
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok());
        let (g, z) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        Ok(Tree {
            to_child: a_wr,
            from_child: b_rd,
            kids: [child, g, z],
        })
    }

    /// The child: a group of its own, a grandchild, a zombie, then answers forever.
    fn child(rd: i32, wr: i32) -> ! {
        // SAFETY: plain syscalls in the forked child.
        unsafe {
            libc::setpgid(0, 0);
            let g = libc::fork();
            if g == 0 {
                loop {
                    libc::pause();
                }
            }
            let z = libc::fork();
            if z == 0 {
                libc::_exit(7);
            }
            let _ = sys::write_all(wr, format!("{g} {z}").as_bytes());
            let mut buf = [0u8; 256];
            loop {
                let n = match sys::read(rd, &mut buf) {
                    Ok(0) | Err(_) => libc::_exit(3),
                    Ok(n) => n,
                };
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let reply = if msg == "reap" {
                    let mut status = 0;
                    let r = libc::waitpid(z, &mut status, 0);
                    format!("reaped {} {}", r == z, libc::WEXITSTATUS(status))
                } else {
                    format!("got {msg}")
                };
                let _ = sys::write_all(wr, reply.as_bytes());
            }
        }
    }

    fn ask(&self, msg: &str) -> io::Result<String> {
        sys::write_all(self.to_child, msg.as_bytes())?;
        let mut buf = [0u8; 256];
        let n = sys::read(self.from_child, &mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

/// One region of each kind a dump must treat differently.
struct Mappings {
    shared_anon: &'static mut [u8],
    shared_file: &'static mut [u8],
    private_file: &'static mut [u8],
    hidden: *mut u8,
}

const MAP_LEN: usize = 4 * PAGE;

impl Mappings {
    fn new(dir: &Path) -> io::Result<Self> {
        let shared_anon = sys::map(MAP_LEN, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1)?;
        shared_anon.copy_from_slice(&protocol::pattern(MAP_LEN, 1));

        let fd = sys::open_mode(&dir.join("shared.dat"), libc::O_RDWR | libc::O_CREAT, 0o600)?;
        sys::write_all(fd, &vec![0u8; MAP_LEN])?;
        let shared_file = sys::map(MAP_LEN, libc::MAP_SHARED, fd)?;
        sys::close(fd);
        shared_file.copy_from_slice(&protocol::pattern(MAP_LEN, 2));

        let fd = sys::open_mode(
            &dir.join("private.dat"),
            libc::O_RDWR | libc::O_CREAT,
            0o600,
        )?;
        sys::write_all(fd, &protocol::pattern(MAP_LEN, 3))?;
        let private_file = sys::map(MAP_LEN, libc::MAP_PRIVATE, fd)?;
        sys::close(fd);
        private_file[PAGE..2 * PAGE].copy_from_slice(&protocol::pattern(PAGE, 4));

        let hidden = sys::map(2 * PAGE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)?;
        hidden.copy_from_slice(&protocol::pattern(2 * PAGE, 5));
        let hidden = hidden.as_mut_ptr();
        sys::protect(hidden, 2 * PAGE, libc::PROT_NONE)?;
        Ok(Self {
            shared_anon,
            shared_file,
            private_file,
            hidden,
        })
    }

    fn check(&self) -> String {
        let mut private = protocol::pattern(MAP_LEN, 3);
        private[PAGE..2 * PAGE].copy_from_slice(&protocol::pattern(PAGE, 4));
        if self.shared_anon[..] != protocol::pattern(MAP_LEN, 1)[..] {
            return "bad shared-anon".into();
        }
        if self.shared_file[1..] != protocol::pattern(MAP_LEN, 2)[1..] {
            return "bad shared-file".into();
        }
        if self.private_file[..] != private[..] {
            return "bad private-file".into();
        }
        if sys::protect(self.hidden, 2 * PAGE, libc::PROT_READ).is_err() {
            return "bad hidden (mprotect)".into();
        }
        // SAFETY: the region is 2 pages, mapped by us and readable for this moment.
        let hidden = unsafe { std::slice::from_raw_parts(self.hidden, 2 * PAGE) }.to_vec();
        let _ = sys::protect(self.hidden, 2 * PAGE, libc::PROT_NONE);
        if hidden != protocol::pattern(2 * PAGE, 5) {
            return "bad hidden".into();
        }
        "ok".into()
    }

    fn bump(&mut self) -> u8 {
        self.shared_file[0] = self.shared_file[0].wrapping_add(1);
        self.shared_file[0]
    }
}

struct Memory {
    base: *mut u64,
    len: usize,
    seed: u64,
    /// Times each page was written: 0 for a hole (never written, reads zero).
    generations: Vec<u32>,
}

impl Memory {
    fn new(len: usize, seed: u64) -> io::Result<Self> {
        let base = sys::mmap_anon(len)?.cast::<u64>();
        let pages = len / PAGE;
        let mut m = Self {
            base,
            len,
            seed,
            generations: vec![0; pages],
        };
        for page in 0..pages {
            if !protocol::memory_page_is_hole(page) {
                m.write_page(page, 1);
            }
        }
        Ok(m)
    }

    fn page_words(&mut self, page: usize) -> &mut [u64] {
        let words = PAGE / 8;
        assert!((page + 1) * PAGE <= self.len);
        // SAFETY: base is a live private mapping of len bytes, page-aligned,
        // owned by this struct; the assert keeps the page inside it.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(page * words), words) }
    }

    fn write_page(&mut self, page: usize, generation: u32) {
        self.generations[page] = generation;
        let seed = self.seed;
        let words = self.page_words(page);
        for w in words.iter_mut() {
            let addr = std::ptr::from_mut(w) as u64;
            *w = protocol::memory_word(addr, seed, generation);
        }
    }

    /// Rewrites one page in TOUCH_STRIDE (holes stay holes); returns how many.
    fn touch(&mut self) -> usize {
        let mut n = 0;
        for page in (0..self.generations.len()).step_by(TOUCH_STRIDE) {
            let g = self.generations[page];
            if g != 0 {
                self.write_page(page, g + 1);
                n += 1;
            }
        }
        n
    }

    /// Checks every word; replies `ok <checksum> <pages>` or the first bad one.
    fn verify(&mut self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let seed = self.seed;
        for page in 0..self.generations.len() {
            let g = self.generations[page];
            let base = self.base as usize;
            for w in self.page_words(page).iter() {
                let addr = std::ptr::from_ref(w) as u64;
                let want = if g == 0 {
                    0
                } else {
                    protocol::memory_word(addr, seed, g)
                };
                if *w != want {
                    return format!(
                        "bad {:#x} {:#018x} {:#018x}",
                        addr as usize - base,
                        *w,
                        want
                    );
                }
                h = (h ^ *w).wrapping_mul(0x100_0000_01b3);
            }
        }
        format!("ok {h:016x} {}", self.generations.len())
    }
}

/// The raw calls, each wrapped once.
mod sys {
    use super::*;

    fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    fn cpath(path: &Path) -> CString {
        CString::new(path.as_os_str().as_bytes()).expect("no NUL in paths")
    }

    pub fn open(path: &Path, flags: i32) -> io::Result<i32> {
        open_mode(path, flags, 0)
    }

    pub fn open_mode(path: &Path, flags: i32, mode: libc::mode_t) -> io::Result<i32> {
        let p = cpath(path);
        // SAFETY: p is a NUL-terminated path that outlives the call.
        cvt(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC, mode) })
    }

    pub fn close(fd: i32) {
        // SAFETY: fd is one this program opened and no longer uses.
        unsafe { libc::close(fd) };
    }

    pub fn read(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for buf.len() bytes of writes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    pub fn write_all(fd: i32, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            // SAFETY: data is valid for data.len() bytes of reads.
            let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            data = &data[n as usize..];
        }
        Ok(())
    }

    /// Reads from offset 0 until EOF or `buf` is full; returns the length read.
    pub fn pread_all(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let rest = &mut buf[done..];
            // SAFETY: rest is valid for rest.len() bytes of writes.
            let n = unsafe {
                libc::pread(
                    fd,
                    rest.as_mut_ptr().cast(),
                    rest.len(),
                    done as libc::off_t,
                )
            };
            match n {
                0 => break,
                n if n < 0 => return Err(io::Error::last_os_error()),
                n => done += n as usize,
            }
        }
        Ok(done)
    }

    pub fn tell(fd: i32) -> io::Result<u64> {
        // SAFETY: lseek takes no pointers.
        let off = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) };
        if off < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(off as u64)
        }
    }

    /// Reads up to `max` bytes without blocking: whatever the pipe holds now.
    pub fn read_available(fd: i32, max: usize) -> io::Result<Vec<u8>> {
        // SAFETY: fcntl on our own fd, no pointers.
        let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
        // SAFETY: as above.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
        let mut data = Vec::new();
        let mut chunk = [0u8; 8192];
        let result = loop {
            let want = chunk.len().min(max - data.len());
            if want == 0 {
                break Ok(());
            }
            match read(fd, &mut chunk[..want]) {
                Ok(0) => break Ok(()),
                Ok(n) => data.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        // SAFETY: as above.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) })?;
        result.map(|()| data)
    }

    pub fn epoll() -> io::Result<i32> {
        // SAFETY: epoll_create1 takes flags, no pointers.
        cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
    }

    pub fn epoll_add(epfd: i32, fd: i32, events: u32, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: epoll_ctl reads one epoll_event from `ev`.
        cvt(unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(drop)
    }

    /// The data of the ready targets of one epoll_wait.
    pub fn epoll_wait(epfd: i32, timeout_ms: i32) -> io::Result<Vec<u64>> {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 16];
        // SAFETY: evs has room for the 16 events epoll_wait may write.
        let n = cvt(unsafe { libc::epoll_wait(epfd, evs.as_mut_ptr(), 16, timeout_ms) })?;
        Ok(evs[..n as usize].iter().map(|e| e.u64).collect())
    }

    pub fn eventfd(count: u32, flags: i32) -> io::Result<i32> {
        // SAFETY: eventfd takes numbers, no pointers.
        cvt(unsafe { libc::eventfd(count, flags | libc::EFD_CLOEXEC) })
    }

    /// A non-blocking CLOCK_MONOTONIC timerfd firing every `ns`.
    pub fn timerfd(ns: i64) -> io::Result<i32> {
        // SAFETY: timerfd_create takes numbers, no pointers.
        let fd = cvt(unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        })?;
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: ns,
        };
        let spec = libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        };
        // SAFETY: timerfd_settime reads `spec`; the old value pointer is null.
        cvt(unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) })?;
        Ok(fd)
    }

    fn sigset(sig: i32) -> libc::sigset_t {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it right after.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: set is a valid sigset_t.
        unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
        }
        set
    }

    /// Waits until a handler ran, with no signal blocked meanwhile: SIGUSR1, kept blocked
    /// outside this wait, is never lost between two waits.
    pub fn await_sigusr1() {
        // SAFETY: sigset_t is plain data, emptied by sigemptyset before use.
        let mut none: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: none is a valid sigset_t; sigsuspend returns once a handler ran.
        unsafe {
            libc::sigemptyset(&mut none);
            libc::sigsuspend(&none);
        }
    }

    pub fn block_signal(sig: i32) -> io::Result<()> {
        let set = sigset(sig);
        // SAFETY: sigprocmask reads `set`; the old set pointer is null.
        cvt(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) }).map(drop)
    }

    pub fn signalfd(sig: i32) -> io::Result<i32> {
        let set = sigset(sig);
        // SAFETY: signalfd reads `set`.
        cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })
    }

    pub fn memfd(name: &str) -> io::Result<i32> {
        let name = CString::new(name).expect("no NUL");
        // SAFETY: name is NUL-terminated and outlives the call.
        cvt(unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        })
    }

    pub fn add_seals(fd: i32, seals: i32) -> io::Result<()> {
        // SAFETY: fcntl F_ADD_SEALS takes numbers.
        cvt(unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) }).map(drop)
    }

    pub fn get_seals(fd: i32) -> io::Result<i32> {
        // SAFETY: fcntl F_GET_SEALS takes numbers.
        cvt(unsafe { libc::fcntl(fd, libc::F_GET_SEALS) })
    }

    pub fn inotify() -> io::Result<i32> {
        // SAFETY: inotify_init1 takes flags.
        cvt(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })
    }

    pub fn add_watch(fd: i32, path: &Path, mask: u32) -> io::Result<i32> {
        let p = cpath(path);
        // SAFETY: p is NUL-terminated and outlives the call.
        cvt(unsafe { libc::inotify_add_watch(fd, p.as_ptr(), mask) })
    }

    pub fn rm_watch(fd: i32, wd: i32) -> io::Result<()> {
        // SAFETY: numbers only.
        cvt(unsafe { libc::inotify_rm_watch(fd, wd) }).map(drop)
    }

    pub fn pipe() -> io::Result<(i32, i32)> {
        let mut fds = [0i32; 2];
        // SAFETY: fds has room for the two fds pipe2 writes.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        Ok((fds[0], fds[1]))
    }

    /// Moves `fd` to number `want` (closing the old number); returns `want`.
    pub fn move_fd(fd: i32, want: i32) -> io::Result<i32> {
        if fd == want {
            return Ok(fd);
        }
        // SAFETY: dup3 on fds we own, no pointers.
        cvt(unsafe { libc::dup3(fd, want, libc::O_CLOEXEC) })?;
        close(fd);
        Ok(want)
    }

    /// A read-write mapping of `len` bytes of `fd` (or anonymous memory), kept for the
    /// program's life.
    pub fn map(len: usize, flags: i32, fd: i32) -> io::Result<&'static mut [u8]> {
        map_at(len, flags, fd, 0)
    }

    /// As [`map`], from byte `offset` of `fd`.
    pub fn map_at(len: usize, flags: i32, fd: i32, offset: usize) -> io::Result<&'static mut [u8]> {
        // SAFETY: a fresh mapping at an address the kernel picks; nothing else refers to it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the mapping is len bytes, readable and writable, and never unmapped.
        Ok(unsafe { std::slice::from_raw_parts_mut(p.cast(), len) })
    }

    pub fn pwrite_at(fd: i32, data: &[u8], off: usize) -> io::Result<()> {
        // SAFETY: data is valid for data.len() bytes of reads.
        let n = unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), off as libc::off_t) };
        if n as usize == data.len() {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn pread_at(fd: i32, buf: &mut [u8], off: usize) -> io::Result<()> {
        // SAFETY: buf is valid for buf.len() bytes of writes.
        let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off as libc::off_t) };
        if n as usize == buf.len() {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn fd_size(fd: i32) -> io::Result<u64> {
        // SAFETY: stat is plain data, filled by fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: st is valid for the write.
        cvt(unsafe { libc::fstat(fd, &mut st) })?;
        Ok(st.st_size as u64)
    }

    /// Makes terminal `fd` the controlling terminal of this session (a session leader's).
    pub fn set_ctty(fd: i32) -> io::Result<()> {
        // SAFETY: TIOCSCTTY takes an int argument, no pointers.
        cvt(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) }).map(drop)
    }

    /// One line from `fd`, read a byte at a time (nothing after the newline is consumed).
    pub fn read_line(fd: i32) -> io::Result<String> {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            match read(fd, &mut b)? {
                0 => break,
                _ if b[0] == b'\n' => break,
                _ => line.push(b[0]),
            }
        }
        Ok(String::from_utf8_lossy(&line)
            .trim_end_matches('\r')
            .to_string())
    }

    pub fn protect(addr: *mut u8, len: usize, prot: i32) -> io::Result<()> {
        // SAFETY: addr..addr+len is a mapping of ours; only its protection changes.
        cvt(unsafe { libc::mprotect(addr.cast(), len, prot) })?;
        Ok(())
    }

    pub fn mmap_anon(len: usize) -> io::Result<*mut u8> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            Err(io::Error::last_os_error())
        } else {
            Ok(p.cast())
        }
    }

    /// ITIMER_REAL every 20 ms (SIGALRM to `alarm`) and a POSIX timer every 15 ms
    /// (SIGRTMIN with `value` to `timer`); returns the timer's id.
    pub fn start_timers(
        alarm: extern "C" fn(libc::c_int),
        timer: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void),
        value: usize,
    ) -> io::Result<i32> {
        for (sig, handler, flags) in [
            (libc::SIGALRM, alarm as usize, libc::SA_RESTART),
            (
                libc::SIGRTMIN(),
                timer as usize,
                libc::SA_RESTART | libc::SA_SIGINFO,
            ),
        ] {
            // SAFETY: sigaction is plain data; zeroed is a valid starting value.
            let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
            sa.sa_sigaction = handler;
            sa.sa_flags = flags;
            // SAFETY: sa is fully initialised; the handlers only touch atomics.
            cvt(unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) })?;
        }
        let every = |ms: i64| libc::itimerval {
            it_interval: libc::timeval {
                tv_sec: 0,
                tv_usec: ms * 1000,
            },
            it_value: libc::timeval {
                tv_sec: 0,
                tv_usec: ms * 1000,
            },
        };
        // SAFETY: a valid itimerval; no old value wanted.
        cvt(unsafe { libc::setitimer(libc::ITIMER_REAL, &every(20), std::ptr::null_mut()) })?;
        // SAFETY: sigevent is plain data; zeroed is a valid starting value.
        let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
        ev.sigev_notify = libc::SIGEV_SIGNAL;
        ev.sigev_signo = libc::SIGRTMIN();
        ev.sigev_value = libc::sigval {
            sival_ptr: value as *mut libc::c_void,
        };
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: ev and id are valid for the call.
        cvt(unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut id) })?;
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 15_000_000,
            },
            it_value: libc::timespec {
                tv_sec: 0,
                tv_nsec: 15_000_000,
            },
        };
        // SAFETY: id was just created; spec is valid.
        cvt(unsafe { libc::timer_settime(id, 0, &spec, std::ptr::null_mut()) })?;
        Ok(id as usize as i32)
    }

    pub fn install_sigusr1(handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
        // SAFETY: sigaction is plain data; zeroed is a valid starting value.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_RESTART;
        // SAFETY: sa.sa_mask is a valid sigset_t to initialise.
        unsafe { libc::sigemptyset(&mut sa.sa_mask) };
        // SAFETY: sa is fully initialised; the handler only touches an atomic.
        cvt(unsafe { libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) })?;
        Ok(())
    }

    pub fn block_sigusr2() -> io::Result<()> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset below.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: set is a valid sigset_t.
        unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
        }
        // SAFETY: set is initialised; the old mask is not wanted.
        cvt(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) })?;
        Ok(())
    }

    pub fn sigusr2_pending() -> bool {
        // SAFETY: sigset_t is plain data, filled by sigpending.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: set is a valid sigset_t to write.
        unsafe {
            libc::sigpending(&mut set);
            libc::sigismember(&set, libc::SIGUSR2) == 1
        }
    }

    pub fn io_uring() -> io::Result<i32> {
        // struct io_uring_params is 120 bytes; all zero asks for defaults.
        let mut params = [0u8; 120];
        // SAFETY: params is a zeroed io_uring_params the kernel fills in.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
        cvt(fd as libc::c_int)
    }

    pub fn packet_socket() -> io::Result<i32> {
        // SAFETY: socket takes no pointers.
        cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })
    }

    /// Lists a directory; returns the fd the listing used (so it can be
    /// told apart from the process's own fds) and the entry names.
    pub fn list_dir(path: &CStr) -> io::Result<(i32, Vec<String>)> {
        // SAFETY: path is NUL-terminated.
        let d = unsafe { libc::opendir(path.as_ptr()) };
        if d.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: d is a live DIR*.
        let dfd = unsafe { libc::dirfd(d) };
        let mut names = Vec::new();
        loop {
            // SAFETY: d is a live DIR*; the entry is valid until the next readdir.
            let ent = unsafe { libc::readdir(d) };
            if ent.is_null() {
                break;
            }
            // SAFETY: d_name is NUL-terminated inside the entry.
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
            names.push(name.to_string_lossy().into_owned());
        }
        // SAFETY: d is live and not used after this.
        unsafe { libc::closedir(d) };
        Ok((dfd, names))
    }
}
