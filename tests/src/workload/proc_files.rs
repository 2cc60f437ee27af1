//! `proc-files HOW`: fds on files of /proc and on namespaces, which the restored process
//! reads through itself.
//!
//! ```text
//! proc-files all     40: /proc/self/stat; 41: /proc/self/status, 20 bytes read from it;
//!                    42: /proc/CHILD (O_PATH|O_DIRECTORY) of a child paused in pause();
//!                    43: /proc/meminfo; 44: /proc/self/ns/net (cryo's network namespace);
//!                    47: /proc/self/task/TID/comm of a second thread named proc-thread,
//!                    parked forever; 48: an epoll watching 49: /proc/self/mountinfo
//!                    (EPOLLIN, data 49)
//! proc-files meminfo 43: /proc/meminfo only
//! proc-files uts     45: cryo's UTS namespace (opened before), then unshare(CLONE_NEWUTS),
//!                    hostname cryo-procfd-uts, 46: its own (/proc/self/ns/uts)
//! proc-files kid-uts 46: /proc/CHILD/ns/uts of a child in a UTS namespace of its own
//!                    (hostname cryo-procfd-kid), paused in pause()
//! proc-files outside 40: /proc/1/status (pid 1: outside any dump of the workload)
//! proc-files outside-task   40: /proc/1/task/1/status
//! proc-files outside-parent 40: /proc/PPID/status (the test, outside the dump)
//! proc-files mem     40: /proc/self/mem
//! proc-files lost-ns 46: a UTS namespace of its own, left again (setns back into cryo's):
//!                    no process is in it
//!   stat           -> <pid> <comm>  (the first two fields of fd 40, read from 0)
//!   first-line     -> <fd 40's first line, read from 0, tabs as spaces>
//!   same-inode     -> whether fd 40 and a fresh open of the path its link names are one
//!                     inode (device and inode)
//!   status-pos     -> <position of fd 41>
//!   status-next N  -> <the next N bytes of fd 41>
//!   child          -> <the child's pid>
//!   child-status   -> <Pid: of openat(42, "status")>
//!   meminfo        -> <the first field of fd 43, read from 0>
//!   thread-comm    -> <fd 47 read from 0, without its newline>
//!   epoll          -> ready <data> | none  (epoll_wait(48) for up to 1 s)
//!   ns FD KIND     -> <inode of FD> <inode of /proc/self/ns/KIND after setns(FD)>
//!   hostname-in FD -> <hostname after setns(FD, CLONE_NEWUTS)>
//! ```

use std::path::Path;

use super::{failed, io_err, sys, unknown, Mode};

struct ProcFiles {
    child: i32,
}

/// Opens `path` with `flags` at fd `at`.
fn open_at(path: &str, flags: i32, at: i32) -> Result<(), String> {
    let fd = sys::open(Path::new(path), flags).map_err(failed("open"))?;
    sys::move_fd(fd, at).map(drop).map_err(failed("dup2"))
}

/// `proc-files HOW`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let how = args.first().map(String::as_str).unwrap_or("all");
    let mut child = 0;
    match how {
        "all" => {
            open_at("/proc/self/stat", libc::O_RDONLY, 40)?;
            open_at("/proc/self/status", libc::O_RDONLY, 41)?;
            let mut buf = [0u8; 20];
            let n = sys::read(41, &mut buf).map_err(failed("read"))?;
            if n != 20 {
                return Err(format!("short read of status: {n}"));
            }
            child = sys::fork_paused().map_err(failed("fork"))?;
            open_at(
                &format!("/proc/{child}"),
                libc::O_PATH | libc::O_DIRECTORY,
                42,
            )?;
            open_at("/proc/meminfo", libc::O_RDONLY, 43)?;
            open_at("/proc/self/ns/net", libc::O_RDONLY, 44)?;
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("proc-thread".into())
                .spawn(move || {
                    // SAFETY: gettid takes no arguments.
                    let _ = tx.send(unsafe { libc::gettid() });
                    loop {
                        std::thread::park();
                    }
                })
                .map_err(failed("thread"))?;
            let tid = rx.recv().map_err(|e| format!("thread: {e}"))?;
            open_at(&format!("/proc/self/task/{tid}/comm"), libc::O_RDONLY, 47)?;
            open_at("/proc/self/mountinfo", libc::O_RDONLY, 49)?;
            let ep = sys::epoll().map_err(failed("epoll"))?;
            sys::move_fd(ep, 48).map_err(failed("dup2"))?;
            sys::epoll_add(48, 49, libc::EPOLLIN as u32, 49).map_err(failed("epoll_ctl"))?;
        }
        "meminfo" => open_at("/proc/meminfo", libc::O_RDONLY, 43)?,
        "uts" => {
            open_at("/proc/self/ns/uts", libc::O_RDONLY, 45)?;
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS)
                .map_err(|e| format!("unshare: {e}"))?;
            nix::unistd::sethostname("cryo-procfd-uts").map_err(|e| format!("sethostname: {e}"))?;
            open_at("/proc/self/ns/uts", libc::O_RDONLY, 46)?;
        }
        "kid-uts" => {
            let (rd, wr) = sys::pipe().map_err(failed("pipe"))?;
            child = sys::fork().map_err(failed("fork"))?;
            if child == 0 {
                // The child only makes system calls, then pauses until it dies.
                let made = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS)
                    .and_then(|()| nix::unistd::sethostname("cryo-procfd-kid"));
                let _ = sys::write_all(wr, if made.is_ok() { b"y" } else { b"n" });
                loop {
                    // SAFETY: pause takes no arguments.
                    unsafe { libc::pause() };
                }
            }
            sys::close(wr);
            let mut ok = [0u8; 1];
            sys::read(rd, &mut ok).map_err(failed("read"))?;
            sys::close(rd);
            if ok != *b"y" {
                return Err("the child could not make its UTS namespace".into());
            }
            open_at(&format!("/proc/{child}/ns/uts"), libc::O_RDONLY, 46)?;
        }
        "outside" => open_at("/proc/1/status", libc::O_RDONLY, 40)?,
        "outside-task" => open_at("/proc/1/task/1/status", libc::O_RDONLY, 40)?,
        "outside-parent" => open_at(
            &format!("/proc/{}/status", sys::getppid()),
            libc::O_RDONLY,
            40,
        )?,
        "mem" => open_at("/proc/self/mem", libc::O_RDONLY, 40)?,
        "lost-ns" => {
            open_at("/proc/self/ns/uts", libc::O_RDONLY, 45)?;
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS)
                .map_err(|e| format!("unshare: {e}"))?;
            open_at("/proc/self/ns/uts", libc::O_RDONLY, 46)?;
            setns(45).map_err(failed("setns"))?;
            sys::close(45);
        }
        other => return Err(format!("unknown proc-files {other:?}")),
    }
    Ok(Box::new(ProcFiles { child }))
}

/// setns(fd, 0).
fn setns(fd: i32) -> std::io::Result<()> {
    // SAFETY: the fd is borrowed for the call only.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::sched::setns(fd, nix::sched::CloneFlags::empty()).map_err(std::io::Error::from)
}

/// The whole contents of fd `fd` from offset 0 (pread).
fn read_from_start(fd: i32) -> Result<String, String> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = sys::pread_all(fd, &mut buf).map_err(io_err)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn number(s: &str) -> Result<i32, String> {
    s.parse().map_err(|_| format!("bad number {s:?}"))
}

/// The inode of fd `fd`.
fn ino(fd: i32) -> Result<u64, String> {
    sys::fstat_ino(fd).map_err(io_err)
}

impl Mode for ProcFiles {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("stat", []) => {
                let text = read_from_start(40)?;
                let mut fields = text.split(' ');
                let pid = fields.next().unwrap_or("");
                let comm = fields.next().unwrap_or("");
                Ok(format!("{pid} {comm}"))
            }
            ("first-line", []) => {
                let text = read_from_start(40)?;
                Ok(text.lines().next().unwrap_or("").replace('\t', " "))
            }
            ("same-inode", []) => {
                use std::os::unix::fs::MetadataExt;
                let held = std::fs::metadata("/proc/self/fd/40").map_err(io_err)?;
                let path = std::fs::read_link("/proc/self/fd/40").map_err(io_err)?;
                let fresh = std::fs::File::open(&path)
                    .and_then(|f| f.metadata())
                    .map_err(io_err)?;
                Ok(((held.dev(), held.ino()) == (fresh.dev(), fresh.ino())).to_string())
            }
            ("status-pos", []) => sys::tell(41).map(|p| p.to_string()).map_err(io_err),
            ("status-next", [n]) => {
                let mut buf = vec![0u8; number(n)? as usize];
                let got = sys::read(41, &mut buf).map_err(io_err)?;
                Ok(String::from_utf8_lossy(&buf[..got])
                    .replace('\n', "\\n")
                    .replace('\t', "\\t"))
            }
            ("thread-comm", []) => Ok(read_from_start(47)?.trim_end().to_string()),
            ("epoll", []) => Ok(match sys::epoll_wait(48, 1000).map_err(io_err)?.first() {
                Some(data) => format!("ready {data}"),
                None => "none".into(),
            }),
            ("child", []) => Ok(self.child.to_string()),
            ("child-status", []) => {
                let dir = unsafe_borrow(42);
                let fd = nix::fcntl::openat(
                    dir,
                    "status",
                    nix::fcntl::OFlag::O_RDONLY,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| format!("openat: {e}"))?;
                let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
                let text = read_from_start(raw);
                sys::close(raw);
                text?
                    .lines()
                    .find_map(|l| l.strip_prefix("Pid:"))
                    .map(|p| p.trim().to_string())
                    .ok_or_else(|| "no Pid: line".into())
            }
            ("meminfo", []) => Ok(read_from_start(43)?
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string()),
            ("ns", [fd, kind]) => {
                let fd = number(fd)?;
                setns(fd).map_err(io_err)?;
                let own = std::fs::metadata(format!("/proc/self/ns/{kind}")).map_err(io_err)?;
                Ok(format!(
                    "{} {}",
                    ino(fd)?,
                    std::os::unix::fs::MetadataExt::ino(&own)
                ))
            }
            ("hostname-in", [fd]) => {
                setns(number(fd)?).map_err(io_err)?;
                nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .map_err(|e| e.to_string())
            }
            _ => unknown(verb),
        }
    }
}

/// fd `fd` borrowed for one call.
fn unsafe_borrow(fd: i32) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: the fd stays open for the life of the workload.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}
