//! Real servers from the distribution's packages (nginx, redis, postgres...) run by a test:
//! found or refused by name, started in a temp dir of the test's own, their whole process
//! tree killed on drop (also on a panic), and what the kernel says about their sockets.
//!
//! ```text
//! test ── ServerTree::spawn(dir, command) ── root (the test's child: daemon off, own session)
//!   │                                          └─ workers, helpers (any depth)
//!   ├─ dump(img, --tcp-established)   kills the tree: the root is reaped here at once
//!   ├─ restore_detached(img)          the same pids again, now children of init
//!   └─ drop                           SIGKILL to the root and every descendant, by pidfd
//! ```
//!
//! Nothing here sleeps to synchronise: [`wait_for`] polls a real condition (a port that
//! answers, a pid file) with a deadline.

use std::cell::Cell;
use std::fs::{self, File};
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{cryo_bin, run_cryo, CryoOutput, Pidfd, TempDir, CMD_TIMEOUT};

/// The path of `program` (searched in $PATH, then the sbin directories a root shell has);
/// panics naming the Debian package to install when it is missing, so the test fails clearly.
pub fn require(program: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{program} is not installed: apt-get install {package} (.ci/run does)")
    })
}

/// A free TCP port on 127.0.0.1, for servers that cannot be told to bind port 0 (redis):
/// the kernel picks it, and it is free again once this returns (a race with another binder
/// is possible, so callers retry a start that failed on it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Polls `probe` until it gives a value, for at most `timeout`; panics saying `what` was
/// awaited (and the last thing `probe` said) when it never does.
#[track_caller]
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            panic!("{what}: not within {timeout:?} ({last})");
        }
        // A poll on a real condition: the pause only keeps it from spinning.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The children of `pid` (every thread's), from /proc/PID/task/*/children.
pub fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        if let Ok(s) = fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// `pid` and all its descendants, parents first.
pub fn tree_of(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        for k in children(out[i]) {
            if !out.contains(&k) {
                out.push(k);
            }
        }
        i += 1;
    }
    out
}

/// The socket inodes among the fds of `pid`.
pub fn socket_inodes(pid: i32) -> Vec<u64> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|e| {
            let link = fs::read_link(e.path()).ok()?;
            let link = link.to_str()?;
            link.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// One line of /proc/net/tcp: local and remote port, state, inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpEntry {
    /// Local port.
    pub local_port: u16,
    /// Remote port (0 for a listener).
    pub remote_port: u16,
    /// The kernel's state number (1 established, 10 listen).
    pub state: u8,
    /// The socket's inode (0 for one no fd holds: time-wait, orphans).
    pub inode: u64,
}

/// The state number of a listening socket in /proc/net/tcp.
pub const TCP_LISTEN: u8 = 10;
/// The state number of an established connection in /proc/net/tcp.
pub const TCP_ESTABLISHED: u8 = 1;

/// The IPv4 TCP sockets of the test's network namespace (/proc/net/tcp).
pub fn tcp_entries() -> Vec<TcpEntry> {
    let text = fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let port = |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap_or(""), 16).ok();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(TcpEntry {
                local_port: port(f.get(1)?)?,
                remote_port: port(f.get(2)?)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// The ports `pid` listens on (TCP, IPv4).
pub fn listening_ports(pid: i32) -> Vec<u16> {
    let mine = socket_inodes(pid);
    let mut ports: Vec<u16> = tcp_entries()
        .into_iter()
        .filter(|e| e.state == TCP_LISTEN && mine.contains(&e.inode))
        .map(|e| e.local_port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Which of `pids` holds the server's end (local port `server_port`) of the connection whose
/// client end has port `client_port`: the process the kernel gave the accepted socket to.
pub fn holder_of_connection(server_port: u16, client_port: u16, pids: &[i32]) -> Option<i32> {
    let inode = tcp_entries()
        .into_iter()
        .find(|e| {
            e.local_port == server_port
                && e.remote_port == client_port
                && e.state == TCP_ESTABLISHED
        })?
        .inode;
    pids.iter()
        .copied()
        .find(|&p| socket_inodes(p).contains(&inode))
}

/// A server process tree started by the test; dropping it kills the whole tree.
pub struct ServerTree {
    dir: TempDir,
    root: i32,
    /// The root while it is our child (before a killing dump).
    child: Option<Child>,
    /// Every pid of the tree seen so far (the tree is walked again at the kill too).
    seen: Vec<i32>,
    runs: Cell<u32>,
}

impl std::fmt::Debug for ServerTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server {} in {}", self.root, self.dir.path().display())
    }
}

impl ServerTree {
    /// Starts `command` (its stdout and stderr to `server.log` in `dir`, stdin /dev/null) as
    /// the root of the tree.
    pub fn spawn(dir: TempDir, mut command: Command) -> Self {
        let log = File::create(dir.path().join("server.log")).expect("server log");
        // Its own session, as a service manager starts it.
        crate::own_session(&mut command);
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
        Self {
            root: child.id() as i32,
            child: Some(child),
            dir,
            seen: Vec::new(),
            runs: Cell::new(0),
        }
    }

    /// The root's pid (kept by a restore).
    pub fn root(&self) -> i32 {
        self.root
    }

    /// The test's directory of this server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The server's own log (stdout and stderr) so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.path("server.log")).unwrap_or_default()
    }

    /// Whether the root has exited (it is then reaped if it was our child).
    pub fn root_exited(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => !crate::pid_exists(self.root),
        }
    }

    /// The root and its descendants now, parents first (remembered for the kill).
    pub fn pids(&mut self) -> Vec<i32> {
        let pids = tree_of(self.root);
        for p in &pids {
            if !self.seen.contains(p) {
                self.seen.push(*p);
            }
        }
        pids
    }

    /// Runs `cryo ARGS`, its output logged in the server's dir.
    pub fn cryo(&self, args: &[&str]) -> CryoOutput {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        run_cryo(self.dir(), &format!("cryo-{n}-{}", args[0]), args)
    }

    /// `cryo dump -t ROOT -D IMG EXTRA...`, which must succeed. Unless `--leave-running` is
    /// among `extra`, the tree must be gone after it: the root is reaped (its pid is free for
    /// the restore), its descendants are init's zombies (the restore waits for them).
    #[track_caller]
    pub fn dump(&mut self, img: &Path, extra: &[&str]) -> CryoOutput {
        cryo_bin();
        self.pids();
        let root = self.root.to_string();
        let mut args = vec!["dump", "-t", &root, "-D", img.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        let out = self.cryo(&args);
        assert!(
            out.success(),
            "cryo dump of {self:?} failed:\n{out}\n--- server log\n{}",
            self.log()
        );
        if !extra.contains(&"--leave-running") {
            if let Some(mut child) = self.child.take() {
                let pidfd = Pidfd::open(self.root).expect("pidfd of the root");
                assert!(
                    pidfd.wait_exit(CMD_TIMEOUT),
                    "the dumped root should have been killed\n{out}"
                );
                let status = child.wait().expect("reap the dumped root");
                assert!(
                    std::os::unix::process::ExitStatusExt::signal(&status).is_some(),
                    "the dumped root should have been killed, it exited with {status}\n{out}"
                );
            }
        }
        out
    }

    /// `cryo restore -D IMG --detach`, which must succeed and bring the root back with its pid.
    #[track_caller]
    pub fn restore_detached(&mut self, img: &Path) -> CryoOutput {
        assert!(
            self.child.is_none(),
            "the original root still runs: dump it (killing) first"
        );
        let out = self.cryo(&[
            "restore",
            "-D",
            img.to_str().expect("utf-8 path"),
            "--detach",
        ]);
        assert!(
            out.success(),
            "cryo restore of {self:?} failed:\n{out}\n--- server log\n{}",
            self.log()
        );
        assert!(
            crate::pid_exists(self.root),
            "no process {} after the restore\n{out}",
            self.root
        );
        self.pids();
        out
    }

    /// SIGKILLs the whole tree (what runs under the root now, and every pid seen before).
    /// Everyone is stopped first, parents first and walking again until no new process
    /// shows up: a master killed after its workers would fork new ones meanwhile.
    pub fn kill(&mut self) {
        let mut stopped: Vec<Pidfd> = Vec::new();
        for _ in 0..10 {
            let mut pids = tree_of(self.root);
            pids.extend(self.seen.iter().copied());
            for stopped_pid in stopped.iter().map(Pidfd::pid) {
                for kid in tree_of(stopped_pid) {
                    if !pids.contains(&kid) {
                        pids.push(kid);
                    }
                }
            }
            let fresh: Vec<i32> = pids
                .into_iter()
                .filter(|p| !stopped.iter().any(|s| s.pid() == *p))
                .filter(|p| *p == self.root || is_ours(*p, self.dir()))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for p in fresh {
                if let Ok(fd) = Pidfd::open(p) {
                    let _ = fd.signal(libc::SIGSTOP);
                    stopped.push(fd);
                }
            }
        }
        for fd in &stopped {
            let _ = fd.signal(libc::SIGKILL);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `pid` still looks like a process of this server: a reused pid of another
/// program is spared (its cmdline, or its cwd or an fd, would not name the dir).
fn is_ours(pid: i32, dir: &Path) -> bool {
    let dir = dir.to_string_lossy();
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmdline).contains(&*dir) {
        return true;
    }
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|e| {
        fs::read_link(e.path())
            .map(|l| l.to_string_lossy().contains(&*dir))
            .unwrap_or(false)
    })
}

impl Drop for ServerTree {
    fn drop(&mut self) {
        self.kill();
        crate::release_network_locks_under(self.dir());
    }
}

/// Reads from `r` until `done(bytes so far)` says the reply is whole; an error names `what`.
pub fn read_until(
    r: &mut impl io::Read,
    what: &str,
    mut done: impl FnMut(&[u8]) -> bool,
) -> Result<Vec<u8>, String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&got) {
        match r.read(&mut buf) {
            Ok(0) => {
                return Err(format!(
                    "{what}: EOF after {:?}",
                    String::from_utf8_lossy(&got)
                ))
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(format!(
                    "{what}: {e} after {:?}",
                    String::from_utf8_lossy(&got)
                ))
            }
        }
    }
    Ok(got)
}

/// Calls `f` with each fd number of process `pid` and a duplicate of it (pidfd_getfd), so
/// nothing of the process changes; fds that cannot be duplicated are skipped.
pub fn with_fd_dups(pid: i32, mut f: impl FnMut(i32, std::os::fd::BorrowedFd<'_>)) {
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return;
    }
    // SAFETY: the kernel just returned this fd to us.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return;
    };
    for fd in fds
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        // SAFETY: pidfd_getfd takes a pidfd, an fd number and flags, no pointers.
        let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        if dup < 0 {
            continue;
        }
        // SAFETY: as above, a fresh fd of ours.
        let dup = unsafe { OwnedFd::from_raw_fd(dup as i32) };
        f(fd, dup.as_fd());
    }
}

/// The owners (F_GETOWN_EX: type, pid) of the fds of process `pid` that have one, read on a
/// duplicate (pidfd_getfd) so nothing of the process changes.
pub fn fd_owners(pid: i32) -> std::collections::BTreeMap<i32, (i32, i32)> {
    use std::os::fd::AsRawFd;
    let mut out = std::collections::BTreeMap::new();
    with_fd_dups(pid, |fd, dup| {
        /// F_GETOWN_EX from linux/fcntl.h (libc lacks it).
        const F_GETOWN_EX: libc::c_int = 16;
        // struct f_owner_ex { int type; pid_t pid; }
        let mut owner = [0i32; 2];
        // SAFETY: F_GETOWN_EX writes one struct f_owner_ex (two ints), which `owner` holds.
        let r = unsafe { libc::fcntl(dup.as_raw_fd(), F_GETOWN_EX, owner.as_mut_ptr()) };
        if r == 0 && owner[1] != 0 {
            out.insert(fd, (owner[0], owner[1]));
        }
    });
    out
}

/// TCP_REPAIR as getsockopt reads it on each TCP socket fd of process `pid` (fd, 0 or 1),
/// through duplicates.
pub fn tcp_repair_modes(pid: i32) -> Vec<(i32, i32)> {
    use std::os::fd::AsRawFd;
    let mut out = Vec::new();
    with_fd_dups(pid, |fd, dup| {
        let (mut v, mut len) = (0i32, 4 as libc::socklen_t);
        // SAFETY: v and len are ours, of the sizes passed; a non-TCP fd fails, skipped.
        let r = unsafe {
            libc::getsockopt(
                dup.as_raw_fd(),
                libc::SOL_TCP,
                libc::TCP_REPAIR,
                (&mut v as *mut i32).cast(),
                &mut len,
            )
        };
        if r == 0 {
            out.push((fd, v));
        }
    });
    out
}
