//! `pid-ns`: a tree of three in a PID namespace of its own. This process unshares
//! CLONE_NEWPID and forks the namespace's init (pid 1 there), which answers the commands
//! while this process only waits for it; the init leads a session, its child a process group
//! of its own, and that child has a child.
//!
//! ```text
//! pid-ns     ids -> PID PPID PGID SID of the init;the child;the grandchild, each from
//!            getpid/getppid/getpgid/getsid in that process (the child also has a zombie
//!            child, pid 4, exited with 7)
//!            reap -> the init waits for children until none is left: PID:STATUS ... (a
//!            grandchild whose parent died waits to be reparented, then exits with its new
//!            getppid() as status)
//!            kill-self -> alive (the init's SIGKILL to itself is ignored, as for any init)
//!            refs -> owner=PID pidfd=PID: the owner (F_GETOWN) of the init's pipe to its
//!            child, set to the child, and the pid (fdinfo NSpid, innermost) of the init's
//!            pidfd of its child: both the child's pid in the namespace
//!            creds -> MSG PID UID GID: the message the init queued to its child on a
//!            datagram pair with its credentials (SCM_CREDENTIALS), read by the child
//!            tid -> the tid a second thread of the init reads (gettid) now
//!            pending -> SIGNO from PID: the SIGUSR1 the child sent the init (blocked there,
//!            pending), taken with sigtimedwait: its si_pid; or none
//!            timer -> armed: the init's POSIX timer notifying its second thread
//!            (SIGEV_THREAD_ID, tid 5 there) is armed, an hour away
//!            procstat -> PID (COMM): the first two fields of the init's fd on /proc/self/stat
//!            (opened through cryo's /proc: its host pid), read from 0
//! pid-ns nested  the same, the grandchild with a child in a PID namespace of its own
//! pid-ns landlock  the same, the init's main thread in a Landlock domain (file reads
//!            handled, allowed beneath /proc /usr /lib /lib64 /etc), made last
//! pid-ns ownproc  the same, the init first in a mount namespace of its own (every mount
//!            private) with its namespace's proc on DIR/nsproc, and, made last, an fd on
//!            DIR/nsproc/self/maps read 200 bytes into:
//!            nsmaps -> <its link> pos=<offset> on-nsproc|elsewhere same|differs: .. (100 bytes
//!            read from its offset against those of a fresh open of DIR/nsproc/1/maps)
//!            and an fd on DIR/nsproc/sys/fs/nr_open, a file of that proc itself:
//!            nssys -> <its link> on-nsproc|elsewhere <what it reads from 0>
//!            gone-open -> N: the init forks child N, opens DIR/nsproc/N and its mountinfo,
//!            kills and reaps N (zdtm remap_dead_pid, remap_dead_pid_root)
//!            gone -> <dir link> lists <entries>; <mountinfo link> same as the init's|differs
//!            gone-cwd -> N: the init forks child N, enters DIR/nsproc/N, kills and reaps N
//!            (zdtm unhashed_proc)
//!            cwd -> <its working directory's link> on a proc|on filesystem MAGIC getcwd <what
//!            getcwd says or its errno>
//! pid-ns epoll-sent  the same, and an epoll of the init registering a pipe's read end
//!            (data 0xe1), sent on a datagram socketpair to itself and closed: only in flight
//!            epoll-recv -> ready <data hex>,...: the epoll received, a byte written to the
//!            pipe, what it reports (epoll_wait, 2 s)
//! pid-ns forking  the same, and, made last, a thread of the init forking without pause a
//!            child that exits at once, and reaping it (zdtm transition/fork2):
//!            forks -> <how many so far>
//! pid-ns highpid=N  the same, and, made last, a child of the init with pid N (ns_last_pid
//!            set before its fork; N may exceed the host's pid_max), then the namespace's own
//!            pid_max (Linux 6.14) set to N + 10:
//!            numbers -> pid_max=<the namespace's> last=<its ns_last_pid> kid=N alive|gone
//! pid-ns sessions  the same, and the init's orphans in sessions other processes started,
//!            made last (after the thread): a daemon (its parent called setsid, forked it and
//!            exited, reaped), the child of a zombie session leader (its parent called setsid,
//!            forked it and exited, left unreaped), the grandchild of a live session leader
//!            (which called setsid and forked a child that forked it and exited, reaped by
//!            the leader; the leader's child in a group whose leader, another child of it,
//!            was killed and reaped: zdtm session01), the grandchild of that leader in a
//!            group its parent made before forking it and exiting (zdtm
//!            sk-unix-restore-fs-share), a zombie whose session's leader had
//!            exited (reaped): each reparented to the init (zdtm zombie_leader, session00,
//!            helper_zombie_child, child_subreaper_and_reparent)
//! ```

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::mpsc;

use super::kids::{answer_each, ChildPipes};
use super::unix_msg;
use super::{failed, io_err, sys, unknown, Mode};

/// `pid-ns`
pub fn start(args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    let nested = args.iter().any(|a| a == "nested");
    let landlock = args.iter().any(|a| a == "landlock");
    let own_proc = args
        .iter()
        .any(|a| a == "ownproc")
        .then(|| dir.join("nsproc"));
    let mut me = PidNs::start(nested, landlock, own_proc).map_err(failed("pid-ns"))?;
    if args.iter().any(|a| a == "epoll-sent") {
        me.epoll_sent = Some(epoll_in_flight().map_err(failed("pid-ns epoll-sent"))?);
    }
    if args.iter().any(|a| a == "sessions") {
        orphans_in_sessions().map_err(failed("pid-ns sessions"))?;
    }
    if args.iter().any(|a| a == "forking") {
        me.forks = Some(forking_thread());
    }
    if let Some(n) = args.iter().find_map(|a| a.strip_prefix("highpid=")) {
        let n: i32 = n.parse().map_err(|_| format!("pid-ns: highpid={n}"))?;
        me.high = Some(high_pid_child(n).map_err(failed("pid-ns highpid"))?);
    }
    Ok(Box::new(me))
}

impl Mode for PidNs {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("ids", []) => Ok(format!(
                "{};{}",
                ids(),
                self.pipes.ask("ids").map_err(io_err)?
            )),
            ("reap", []) => Ok(reap_all()),
            ("numbers", []) => {
                let read = |p: &str| {
                    std::fs::read_to_string(p)
                        .map(|t| t.trim().to_string())
                        .map_err(io_err)
                };
                let kid = self.high.ok_or("no highpid")?;
                Ok(format!(
                    "pid_max={} last={} kid={kid} {}",
                    read("/proc/sys/kernel/pid_max")?,
                    read("/proc/sys/kernel/ns_last_pid")?,
                    if sys::signal(kid, 0).is_ok() {
                        "alive"
                    } else {
                        "gone"
                    }
                ))
            }
            ("forks", []) => Ok(self
                .forks
                .as_ref()
                .ok_or("no forking thread")?
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_string()),
            ("refs", []) => {
                // SAFETY: F_GETOWN takes no pointer.
                let owner = unsafe { libc::fcntl(self.pipes.to_child, libc::F_GETOWN) };
                let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", self.pidfd))
                    .map_err(io_err)?;
                let target = fdinfo
                    .lines()
                    .find_map(|l| l.strip_prefix("NSpid:"))
                    .and_then(|v| v.split_whitespace().last())
                    .unwrap_or("?")
                    .to_string();
                Ok(format!("owner={owner} pidfd={target}"))
            }
            ("creds", []) => self.pipes.ask("creds").map_err(io_err),
            ("pending", []) => Ok(take_pending()),
            ("timer", []) => {
                // SAFETY: itimerspec is plain data we own.
                let left = unsafe {
                    let mut cur: libc::itimerspec = std::mem::zeroed();
                    sys::cvt(libc::timer_gettime(self.timer, &mut cur)).map_err(io_err)?;
                    cur.it_value.tv_sec
                };
                Ok(if left > 3000 { "armed" } else { "disarmed" }.into())
            }
            ("tid", []) => {
                self.ask_tid.send(()).map_err(|e| e.to_string())?;
                let tid = self.tid.recv().map_err(|e| e.to_string())?;
                Ok(tid.to_string())
            }
            ("epoll-recv", []) => {
                let (sock, wr) = self.epoll_sent.ok_or("no epoll-sent")?;
                let (_, fds, _) = unix_msg::recvmsg(sock).map_err(io_err)?;
                let epfd = *fds.first().ok_or("no epoll received")?;
                sys::write_all(wr, b"x").map_err(io_err)?;
                let ready = sys::epoll_wait(epfd, 2000).map_err(io_err)?;
                let ready: Vec<String> = ready.iter().map(|d| format!("{d:x}")).collect();
                Ok(format!("ready {}", ready.join(",")))
            }
            ("procstat", []) => {
                let mut buf = [0u8; 512];
                let n = sys::pread_all(self.procstat, &mut buf).map_err(io_err)?;
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                Ok(text.split(' ').take(2).collect::<Vec<_>>().join(" "))
            }
            ("nssys", []) => {
                let fd = self.ns_sys.ok_or("no ownproc")?;
                let (_, dir) = self.ns_maps.as_ref().ok_or("no ownproc")?;
                let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(io_err)?;
                let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).map_err(io_err);
                let ours = dev(Path::new(&format!("/proc/self/fd/{fd}")))? == dev(dir)?;
                let mut buf = [0u8; 64];
                let n = sys::pread_all_at(fd, &mut buf, 0).map_err(io_err)?;
                Ok(format!(
                    "{} {} {}",
                    link.display(),
                    if ours { "on-nsproc" } else { "elsewhere" },
                    String::from_utf8_lossy(&buf[..n]).trim_end()
                ))
            }
            ("nsmaps", []) => {
                let (fd, dir) = self.ns_maps.as_ref().ok_or("no ownproc")?;
                let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(io_err)?;
                // SAFETY: lseek takes no pointers.
                let pos = unsafe { libc::lseek(*fd, 0, libc::SEEK_CUR) };
                let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).map_err(io_err);
                let ours = dev(Path::new(&format!("/proc/self/fd/{fd}")))? == dev(dir)?;
                let mut buf = [0u8; 100];
                let n = sys::pread_all_at(*fd, &mut buf, pos as u64).map_err(io_err)?;
                let fresh = std::fs::read(dir.join("1/maps")).map_err(io_err)?;
                let same = fresh.get(pos as usize..pos as usize + n) == Some(&buf[..n]);
                let shown = if same {
                    "same".to_string()
                } else {
                    let at = (pos as usize).min(fresh.len());
                    let end = (at + n).min(fresh.len());
                    format!(
                        "differs: {:?} against {:?}",
                        String::from_utf8_lossy(&buf[..n]),
                        String::from_utf8_lossy(&fresh[at..end])
                    )
                };
                Ok(format!(
                    "{} pos={pos} {} {}",
                    link.display(),
                    if ours { "on-nsproc" } else { "elsewhere" },
                    shown
                ))
            }
            ("gone-open", []) => {
                let (_, dir) = self.ns_maps.as_ref().ok_or("no ownproc")?;
                let (kid, opened) = with_child_ended_after(|kid| {
                    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
                    let at = dir.join(kid.to_string());
                    Ok((
                        sys::open(&at, flags)?,
                        sys::open(&at.join("mountinfo"), libc::O_RDONLY)?,
                    ))
                })?;
                self.gone = Some(opened);
                Ok(kid.to_string())
            }
            ("gone-cwd", []) => {
                let (_, dir) = self.ns_maps.as_ref().ok_or("no ownproc")?;
                let (kid, ()) = with_child_ended_after(|kid| {
                    std::env::set_current_dir(dir.join(kid.to_string()))
                })?;
                Ok(kid.to_string())
            }
            ("cwd", []) => {
                let link = std::fs::read_link("/proc/self/cwd").map_err(io_err)?;
                let getcwd = std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|e| format!("errno {}", e.raw_os_error().unwrap_or(0)));
                // SAFETY: statfs fills a struct statfs of the right size; the path is a C string.
                let fs = unsafe {
                    let mut fs: libc::statfs = std::mem::zeroed();
                    sys::cvt(libc::statfs(c".".as_ptr(), &mut fs)).map(|_| fs.f_type)
                };
                let on = match fs {
                    Ok(libc::PROC_SUPER_MAGIC) => "on a proc".to_string(),
                    Ok(other) => format!("on filesystem {other:#x}"),
                    Err(e) => format!("statfs errno {}", e.raw_os_error().unwrap_or(0)),
                };
                Ok(format!("{} {on} getcwd {getcwd}", link.display()))
            }
            ("gone", []) => {
                let (dir_fd, table) = self.gone.ok_or("no gone-open")?;
                let (_, dir) = self.ns_maps.as_ref().ok_or("no ownproc")?;
                let link = |fd: i32| {
                    std::fs::read_link(format!("/proc/self/fd/{fd}"))
                        .map(|l| l.display().to_string())
                        .map_err(io_err)
                };
                let mut buf = vec![0u8; 64 << 10];
                let n = sys::pread_all_at(table, &mut buf, 0).map_err(io_err)?;
                let own = std::fs::read(dir.join("1/mountinfo")).map_err(io_err)?;
                let listed = std::fs::read_dir(format!("/proc/self/fd/{dir_fd}"))
                    .map(|d| d.count().to_string())
                    .unwrap_or_else(|e| format!("errno {}", e.raw_os_error().unwrap_or(0)));
                Ok(format!(
                    "{} lists {listed}; {} {}",
                    link(dir_fd)?,
                    link(table)?,
                    if buf[..n] == own[..] {
                        "same as the init's"
                    } else {
                        "differs"
                    }
                ))
            }
            ("kill-self", []) => {
                sys::signal(std::process::id() as i32, libc::SIGKILL).map_err(io_err)?;
                Ok("alive".into())
            }
            _ => unknown(verb),
        }
    }
}

/// Forks a child that pauses, runs `f` with its pid, then kills and reaps it: what `f` made
/// of /proc/N is of a process that has ended.
fn with_child_ended_after<T>(f: impl FnOnce(i32) -> io::Result<T>) -> Result<(i32, T), String> {
    // SAFETY: the child only pauses until killed (async-signal-safe calls).
    let kid = unsafe { libc::fork() };
    if kid == 0 {
        loop {
            // SAFETY: pause takes nothing.
            unsafe { libc::pause() };
        }
    }
    let made = f(kid);
    sys::signal(kid, libc::SIGKILL).map_err(io_err)?;
    // SAFETY: a null status pointer is allowed.
    unsafe { libc::waitpid(kid, std::ptr::null_mut(), 0) };
    made.map(|m| (kid, m)).map_err(io_err)
}

/// The init's end of the pipes to its child.
struct PidNs {
    pipes: ChildPipes,
    /// A pidfd of the child.
    pidfd: i32,
    /// Asks the second thread its tid, and its answer.
    ask_tid: mpsc::Sender<()>,
    tid: mpsc::Receiver<i32>,
    /// A POSIX timer notifying the second thread.
    timer: libc::timer_t,
    /// An fd on /proc/self/stat.
    procstat: i32,
    /// `ownproc`: an fd on DIR/nsproc/self/maps, and DIR/nsproc.
    ns_maps: Option<(i32, std::path::PathBuf)>,
    /// `ownproc`: an fd on DIR/nsproc/sys/fs/nr_open.
    ns_sys: Option<i32>,
    /// `gone-open`: fds on DIR/nsproc/N and DIR/nsproc/N/mountinfo, N a child ended since.
    gone: Option<(i32, i32)>,
    /// `epoll-sent`: the socket the epoll waits in, and the write end of its pipe.
    epoll_sent: Option<(i32, i32)>,
    /// `forking`: how many children the forking thread has forked and reaped.
    forks: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// `highpid=N`: the child with pid N.
    high: Option<i32>,
}

/// `highpid=N`: a child of the init with pid N (ns_last_pid set to N - 1 before its fork),
/// that pauses; then the namespace's own pid_max (Linux 6.14) lowered to N + 10.
fn high_pid_child(n: i32) -> io::Result<i32> {
    std::fs::write("/proc/sys/kernel/ns_last_pid", (n - 1).to_string())?;
    // SAFETY: the child only pauses until killed (async-signal-safe calls).
    let kid = unsafe { libc::fork() };
    if kid == 0 {
        loop {
            // SAFETY: pause takes nothing.
            unsafe { libc::pause() };
        }
    }
    if kid < 0 {
        return Err(io::Error::last_os_error());
    }
    std::fs::write("/proc/sys/kernel/pid_max", (n + 10).to_string())?;
    Ok(kid)
}

/// A thread of the init that forks, without pause, a child that exits at once and reaps it
/// (zdtm transition/fork2): the namespace changes all the time. Its count of children.
fn forking_thread() -> std::sync::Arc<std::sync::atomic::AtomicU64> {
    let forks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = forks.clone();
    std::thread::spawn(move || loop {
        // SAFETY: the child only calls _exit, which is async-signal-safe.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: ends the child without running anything of the parent's.
            unsafe { libc::_exit(0) };
        }
        if pid > 0 {
            // Another waiter (`reap`) may take it first: ECHILD then.
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    forks
}

/// An epoll registering a pipe's read end, sent on a datagram socketpair to this process and
/// closed: (the receiving socket, the pipe's write end).
fn epoll_in_flight() -> io::Result<(i32, i32)> {
    let (rd, wr) = sys::pipe()?;
    let epfd = sys::epoll()?;
    sys::epoll_add(epfd, rd, libc::EPOLLIN as u32, 0xe1)?;
    let mut pair = [0; 2];
    // SAFETY: socketpair writes two fds into `pair`, alive for the call.
    sys::cvt(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, pair.as_mut_ptr()) })?;
    unix_msg::sendmsg(pair[0], b"e", &[epfd], None)?;
    sys::close(epfd);
    Ok((pair[1], wr))
}

/// Forks a child that runs `then` and exits with its status (never returns in the child).
fn fork_running(then: impl FnOnce() -> io::Result<i32>) -> io::Result<i32> {
    let pid = sys::fork()?;
    if pid == 0 {
        let code = then().unwrap_or(99);
        // SAFETY: ends the forked child.
        unsafe { libc::_exit(code) }
    }
    Ok(pid)
}

/// A child that pauses until killed.
fn fork_pausing() -> io::Result<i32> {
    fork_running(|| loop {
        // SAFETY: pause takes no arguments.
        unsafe { libc::pause() };
    })
}

/// Waits for child `pid` to end: reaped, or (`keep`) left a zombie.
fn wait_child(pid: i32, keep: bool) -> io::Result<()> {
    // SAFETY: siginfo is plain data we own.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | if keep { libc::WNOWAIT } else { 0 };
    // SAFETY: `info` is a valid buffer.
    sys::cvt(unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) })?;
    Ok(())
}

/// The `sessions` orphans of the init (see the module doc).
fn orphans_in_sessions() -> io::Result<()> {
    // A daemon: its session's leader exited, reaped.
    let leader = fork_running(|| {
        sys::setsid()?;
        fork_pausing()?;
        Ok(0)
    })?;
    wait_child(leader, false)?;
    // The child of a zombie session leader.
    let zombie = fork_running(|| {
        sys::setsid()?;
        fork_pausing()?;
        Ok(3)
    })?;
    wait_child(zombie, true)?;
    // The grandchild of a live session leader, whose child forked it and exited.
    let (rd, wr) = sys::pipe()?;
    fork_running(|| {
        sys::setsid()?;
        let helper = fork_running(|| {
            fork_pausing()?;
            Ok(0)
        })?;
        wait_child(helper, false)?;
        // The grandchild of the leader in a group its parent made and left (it exited,
        // reaped): zdtm sk-unix-restore-fs-share.
        let group_maker = fork_running(|| {
            // SAFETY: plain call, no pointers.
            sys::cvt(unsafe { libc::setpgid(0, 0) })?;
            fork_pausing()?;
            Ok(0)
        })?;
        wait_child(group_maker, false)?;
        // A child in a group whose leader, its sibling, exited (killed, reaped).
        let group_leader = fork_pausing()?;
        let member = fork_pausing()?;
        // SAFETY: plain calls on this process's own children, no pointers.
        unsafe {
            sys::cvt(libc::setpgid(group_leader, group_leader))?;
            sys::cvt(libc::setpgid(member, group_leader))?;
            sys::cvt(libc::kill(group_leader, libc::SIGKILL))?;
        }
        wait_child(group_leader, false)?;
        sys::write_all(wr, b"r")?;
        loop {
            // SAFETY: pause takes no arguments.
            unsafe { libc::pause() };
        }
    })?;
    let mut ready = [0u8; 1];
    if sys::read(rd, &mut ready)? != 1 {
        return Err(io::Error::other(
            "the session leader ended before its orphan was made",
        ));
    }
    sys::close(rd);
    sys::close(wr);
    // A zombie whose session's leader exited, reaped: the zombie left to the init.
    let leader = fork_running(|| {
        sys::setsid()?;
        let gone = fork_running(|| Ok(5))?;
        wait_child(gone, true)?;
        Ok(0)
    })?;
    wait_child(leader, false)?;
    Ok(())
}

/// `getpid getppid getpgid getsid` of the calling process.
fn ids() -> String {
    // SAFETY: plain calls without pointers.
    unsafe {
        format!(
            "{} {} {} {}",
            libc::getpid(),
            libc::getppid(),
            libc::getpgid(0),
            libc::getsid(0)
        )
    }
}

/// Waits for every child until none is left: `PID:exit N` or `PID:signal N`, in pid order.
fn reap_all() -> String {
    let mut out = Vec::new();
    loop {
        let mut status = 0;
        // SAFETY: status is a valid int for waitpid to fill.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        let how = if libc::WIFEXITED(status) {
            format!("exit {}", libc::WEXITSTATUS(status))
        } else {
            format!("signal {}", libc::WTERMSIG(status))
        };
        out.push((r, how));
    }
    out.sort();
    let all: Vec<String> = out.iter().map(|(p, h)| format!("{p}:{h}")).collect();
    all.join(" ")
}

/// The pending SIGUSR1, without waiting: `SIGNO from PID` (its si_pid), or `none`.
fn take_pending() -> String {
    // SAFETY: the set and siginfo are plain data we own; a zero timeout does not wait.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match libc::sigtimedwait(&set, &mut info, &zero) {
            n if n > 0 => format!("{n} from {}", info.si_pid()),
            _ => "none".into(),
        }
    }
}

impl PidNs {
    fn start(
        nested: bool,
        landlock: bool,
        own_proc: Option<std::path::PathBuf>,
    ) -> io::Result<Self> {
        // SAFETY: unshare takes no pointers; the workload is single-threaded here.
        sys::cvt(unsafe { libc::unshare(libc::CLONE_NEWPID) })?;
        let init = sys::fork()?;
        if init != 0 {
            Self::wait_for(init);
        }
        sys::setsid()?;
        if let Some(at) = &own_proc {
            // Single-threaded yet: unshare(CLONE_NEWNS) refuses a process with threads.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
            sys::make_mounts_private()?;
            std::fs::create_dir_all(at)?;
            nix::mount::mount(
                Some("proc"),
                at,
                Some("proc"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )?;
        }
        // SIGUSR1 stays pending here (an init ignores a signal it neither blocks nor handles);
        // the thread made below inherits the mask.
        // SAFETY: the set is plain data we own; the process is single-threaded here.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            sys::cvt(libc::sigprocmask(
                libc::SIG_BLOCK,
                &set,
                std::ptr::null_mut(),
            ))?;
        }
        let (a_rd, a_wr) = sys::pipe()?;
        let (b_rd, b_wr) = sys::pipe()?;
        let mut pair = [0i32; 2];
        // SAFETY: socketpair fills our two-int array.
        sys::cvt(unsafe {
            libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, pair.as_mut_ptr())
        })?;
        unix_msg::set_passcred(pair[1])?;
        // SAFETY: getpid/getuid/getgid take nothing.
        let me = unsafe {
            libc::ucred {
                pid: libc::getpid(),
                uid: libc::getuid(),
                gid: libc::getgid(),
            }
        };
        unix_msg::sendmsg(pair[0], b"hi", &[], Some(me))?;
        sys::close(pair[0]);
        let child = sys::fork()?;
        if child == 0 {
            sys::close(a_wr);
            sys::close(b_rd);
            Self::child(a_rd, b_wr, pair[1], nested);
        }
        sys::close(pair[1]);
        sys::close(a_rd);
        sys::close(b_wr);
        // SAFETY: F_SETOWN takes a plain pid.
        sys::cvt(unsafe { libc::fcntl(a_wr, libc::F_SETOWN, child) })?;
        let pidfd = sys::pidfd_open(child)?;
        let pipes = ChildPipes {
            to_child: a_wr,
            from_child: b_rd,
        };
        // Once the child answers, the grandchild (3) and the zombie (4) exist: the thread
        // gets 5.
        pipes.ask("ids")?;
        // A second thread, made after the children: it answers its tid on demand.
        let (ask_tid, asked) = mpsc::channel::<()>();
        let (tell, tid) = mpsc::channel::<i32>();
        std::thread::spawn(move || {
            while asked.recv().is_ok() {
                // SAFETY: gettid takes nothing.
                let _ = tell.send(unsafe { libc::gettid() });
            }
        });
        ask_tid.send(()).map_err(io::Error::other)?;
        let thread = tid.recv().map_err(io::Error::other)?;
        // SAFETY: sigevent and itimerspec are plain data we own; timer_create fills `timer`.
        let timer = unsafe {
            let mut ev: libc::sigevent = std::mem::zeroed();
            ev.sigev_notify = libc::SIGEV_THREAD_ID;
            ev.sigev_signo = libc::SIGUSR2;
            ev.sigev_notify_thread_id = thread;
            let mut timer: libc::timer_t = std::mem::zeroed();
            sys::cvt(libc::timer_create(
                libc::CLOCK_MONOTONIC,
                &mut ev,
                &mut timer,
            ))?;
            let mut when: libc::itimerspec = std::mem::zeroed();
            when.it_value.tv_sec = 3600;
            sys::cvt(libc::timer_settime(timer, 0, &when, std::ptr::null_mut()))?;
            timer
        };
        let procstat = sys::open(Path::new("/proc/self/stat"), libc::O_RDONLY)?;
        let ns_maps = match own_proc {
            Some(at) => {
                let fd = sys::open(&at.join("self/maps"), libc::O_RDONLY)?;
                let mut buf = [0u8; 200];
                // SAFETY: `fd` is the one just opened; ManuallyDrop leaves it open.
                let mut file = std::mem::ManuallyDrop::new(unsafe {
                    <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd)
                });
                std::io::Read::read_exact(&mut *file, &mut buf)?;
                Some((fd, at))
            }
            None => None,
        };
        let ns_sys = match &ns_maps {
            Some((_, at)) => Some(sys::open(&at.join("sys/fs/nr_open"), libc::O_RDONLY)?),
            None => None,
        };
        if landlock {
            let readable = ["/proc", "/usr", "/lib", "/lib64", "/etc"];
            let readable: Vec<&str> = readable
                .into_iter()
                .filter(|p| Path::new(p).exists())
                .collect();
            sys::landlock(&readable, 0, 0)?;
        }
        Ok(PidNs {
            gone: None,
            epoll_sent: None,
            forks: None,
            high: None,
            ns_sys,
            procstat,
            ns_maps,
            timer,
            pipes,
            pidfd,
            ask_tid,
            tid,
        })
    }

    /// The process outside: waits for the init and ends with its status.
    fn wait_for(init: i32) -> ! {
        let mut status = 0;
        // SAFETY: status is a valid int for waitpid to fill; _exit ends this process.
        unsafe {
            while libc::waitpid(init, &mut status, 0) < 0
                && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
            libc::_exit(code)
        }
    }

    /// The init's child: a process group of its own, a child of its own, answering `ids`
    /// with its own and its child's, `creds` with the message queued on `creds`.
    fn child(rd: i32, wr: i32, creds: i32, nested: bool) -> ! {
        // SAFETY: plain syscalls in the forked child.
        unsafe {
            libc::setpgid(0, 0);
            // Pending in the init once this child answers anything.
            libc::kill(1, libc::SIGUSR1);
        }
        let pipes = (sys::pipe(), sys::pipe());
        let (Ok((c_rd, c_wr)), Ok((d_rd, d_wr))) = pipes else {
            // SAFETY: ends the forked child.
            unsafe { libc::_exit(3) }
        };
        match sys::fork() {
            Ok(0) => {
                sys::close(rd);
                sys::close(wr);
                sys::close(c_wr);
                sys::close(d_rd);
                sys::close(creds);
                Self::grandchild(c_rd, d_wr, nested)
            }
            Ok(_) => {}
            // SAFETY: ends the forked child.
            Err(_) => unsafe { libc::_exit(3) },
        }
        sys::close(c_rd);
        sys::close(d_wr);
        // A zombie child (pid 4 there) that exited with 7, left unreaped; a zombie for sure
        // once this child answers (WNOWAIT leaves it so).
        // SAFETY: the forked child only exits; siginfo is plain data we own.
        unsafe {
            let z = libc::fork();
            if z == 0 {
                libc::_exit(7);
            }
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                z as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            );
        }
        let to_grandchild = ChildPipes {
            to_child: c_wr,
            from_child: d_rd,
        };
        answer_each(rd, wr, |msg| {
            if msg == "creds" {
                return unix_msg::recv_creds(creds).unwrap_or_else(|e| e.to_string());
            }
            let theirs = to_grandchild.ask("ids").unwrap_or_else(|e| e.to_string());
            format!("{};{theirs}", ids())
        });
        // SAFETY: ends the forked child.
        unsafe { libc::_exit(0) }
    }

    /// The grandchild: answers `ids`; once its parent is gone (its pipe ends), waits to be
    /// reparented and exits with its new parent's pid.
    fn grandchild(rd: i32, wr: i32, nested: bool) -> ! {
        let parent = sys::getppid();
        if nested {
            // A child in a PID namespace below this one, which only waits to be killed.
            // SAFETY: unshare takes no pointers; the forked child only calls pause().
            unsafe {
                if libc::unshare(libc::CLONE_NEWPID) < 0 || libc::fork() == 0 {
                    loop {
                        libc::pause();
                    }
                }
            }
        }
        answer_each(rd, wr, |_| ids());
        // The parent's fds close before it is reparented away: bounded wait for the move.
        for _ in 0..100_000 {
            if sys::getppid() != parent {
                break;
            }
            // SAFETY: sched_yield takes no arguments.
            unsafe { libc::sched_yield() };
        }
        // SAFETY: ends the forked grandchild.
        unsafe { libc::_exit(sys::getppid()) }
    }
}
