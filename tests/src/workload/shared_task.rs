//! `share HOW`: a process sharing with a child (or a thread keeping for itself) what clone
//! flags share: its fd table, its working directory and umask, its memory, its signal
//! handlers; or a child waiting in vfork for its own child.
//!
//! ```text
//! share files|fs|vm|sighand   a child cloned with CLONE_FILES, CLONE_FS, CLONE_VM or
//!                             CLONE_VM|CLONE_SIGHAND, paused
//! share vfork                 a forked child waiting in vfork for its child, which pauses
//! share thread-files|thread-fs  a thread that unshared its fd table (or fs), parked
//! share siblings-files        two children cloned with CLONE_FILES, then the parent
//!                             unshared its own table: the children share one, not the parent
//! share tree-files            children B and D cloned with CLONE_FILES, E forked plainly; B
//!                             cloned C with CLONE_FILES and forked F plainly; all paused
//!     grandchild -> C    plain-grandchild -> F    plain -> E
//! share talk-files|talk-fs    a child cloned with CLONE_FILES (or CLONE_FS) that answers:
//!     child -> <the child's pid>      tid -> <the thread's id>   second -> <the other child>
//!     open PATH -> <fd>               (O_RDWR|O_CREAT, here)     read FD -> <its bytes, from 0>
//!     child-open PATH -> <fd>         child-read FD -> <bytes>   child-lock FD -> ok
//!     map PATH -> <address>           (its first page, shared, read-only)
//!                                     (the child's POSIX write lock on bytes 0-9)
//!     chdir DIR -> ok  cwd -> <dir>   child-chdir DIR -> ok      child-cwd -> <dir>
//!     umask MASK -> <old>  (octal)    child-umask MASK -> <old>
//! ```

use std::path::Path;
use std::sync::mpsc;

use super::file_locks::set_lock;
use super::kids::{answer_each, ChildPipes};
use super::{failed, sys, unknown, Mode};

struct Share {
    child: i32,
    tid: i32,
    second: i32,
    grandchild: i32,
    plain_grandchild: i32,
    plain: i32,
    /// The pipes to a talking child.
    talk: Option<ChildPipes>,
}

/// `share HOW`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let how = args.first().map(String::as_str).unwrap_or("");
    let mut share = Share {
        child: 0,
        tid: 0,
        second: 0,
        grandchild: 0,
        plain_grandchild: 0,
        plain: 0,
        talk: None,
    };
    match how {
        "files" | "fs" | "vm" | "sighand" => {
            let flags = match how {
                "files" => libc::CLONE_FILES,
                "fs" => libc::CLONE_FS,
                "vm" => libc::CLONE_VM,
                _ => libc::CLONE_VM | libc::CLONE_SIGHAND,
            };
            share.child = sys::clone_paused(flags).map_err(failed("clone"))?;
        }
        "vfork" => {
            share.child = match sys::fork().map_err(failed("fork"))? {
                0 => {
                    // The child waits in vfork as long as its own child pauses.
                    let _ = sys::clone_paused(libc::CLONE_VM | libc::CLONE_VFORK);
                    // SAFETY: ends the forked process.
                    unsafe { libc::_exit(0) }
                }
                pid => pid,
            };
        }
        "thread-files" | "thread-fs" => {
            let flag = if how == "thread-files" {
                libc::CLONE_FILES
            } else {
                libc::CLONE_FS
            };
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                // SAFETY: unshare takes a flag word.
                let r = unsafe { libc::unshare(flag) };
                let _ = tx.send(if r == 0 {
                    Ok(sys::gettid())
                } else {
                    Err(std::io::Error::last_os_error())
                });
                loop {
                    std::thread::park();
                }
            });
            share.tid = rx
                .recv()
                .map_err(|e| e.to_string())?
                .map_err(failed("unshare"))?;
        }
        "siblings-files" => {
            share.child = sys::clone_paused(libc::CLONE_FILES).map_err(failed("clone"))?;
            share.second = sys::clone_paused(libc::CLONE_FILES).map_err(failed("clone"))?;
            // SAFETY: unshare takes a flag word.
            sys::cvt(unsafe { libc::unshare(libc::CLONE_FILES) }).map_err(failed("unshare"))?;
        }
        "tree-files" => {
            let (rd, wr) = sys::pipe().map_err(failed("pipe"))?;
            match sys::fork_sharing(libc::CLONE_FILES).map_err(failed("clone"))? {
                0 => {
                    // B: clones C into the table, forks F, says their pids, pauses.
                    let c = sys::clone_paused(libc::CLONE_FILES).unwrap_or(-1);
                    let f = sys::fork_paused().unwrap_or(-1);
                    let mut pids = c.to_ne_bytes().to_vec();
                    pids.extend(f.to_ne_bytes());
                    let _ = sys::write_all(wr, &pids);
                    loop {
                        // SAFETY: pause takes no arguments.
                        unsafe { libc::pause() };
                    }
                }
                pid => share.child = pid,
            }
            let mut pids = [0u8; 8];
            let n = sys::read(rd, &mut pids).map_err(failed("read C's and F's pids"))?;
            let pid = |k: usize| i32::from_ne_bytes(pids[4 * k..4 * k + 4].try_into().unwrap());
            (share.grandchild, share.plain_grandchild) = (pid(0), pid(1));
            if n != 8 || share.grandchild <= 0 || share.plain_grandchild <= 0 {
                return Err("B could not make C and F".into());
            }
            sys::close(rd);
            sys::close(wr);
            share.second = sys::clone_paused(libc::CLONE_FILES).map_err(failed("clone"))?;
            share.plain = sys::fork_paused().map_err(failed("fork"))?;
        }
        "talk-files" | "talk-fs" => {
            let flag = if how == "talk-files" {
                libc::CLONE_FILES
            } else {
                libc::CLONE_FS
            };
            let (to_rd, to_wr) = sys::pipe().map_err(failed("pipe"))?;
            let (from_rd, from_wr) = sys::pipe().map_err(failed("pipe"))?;
            // Every end stays open in both: with CLONE_FILES a close would be both's.
            match sys::fork_sharing(flag).map_err(failed("clone"))? {
                0 => {
                    answer_each(to_rd, from_wr, child_answer);
                    // SAFETY: ends the forked process.
                    unsafe { libc::_exit(0) }
                }
                pid => share.child = pid,
            }
            share.talk = Some(ChildPipes {
                to_child: to_wr,
                from_child: from_rd,
            });
        }
        other => return Err(format!("share: unknown HOW {other:?}")),
    }
    Ok(Box::new(share))
}

/// A talking child's answer to one question (the parent's verbs, prefixed "child-").
fn child_answer(msg: &str) -> String {
    let (verb, arg) = msg.split_once(' ').unwrap_or((msg, ""));
    common_answer(verb, arg).unwrap_or_else(|e| format!("error: {e}"))
}

/// The verbs the parent and a talking child both answer.
fn common_answer(verb: &str, arg: &str) -> Result<String, String> {
    match verb {
        "open" => sys::open_mode(Path::new(arg), libc::O_RDWR | libc::O_CREAT, 0o600)
            .map(|fd| fd.to_string())
            .map_err(failed("open")),
        "read" => {
            let fd: i32 = arg.parse().map_err(|_| format!("bad fd {arg:?}"))?;
            let mut buf = [0u8; 64];
            let n = sys::pread_all(fd, &mut buf).map_err(failed("pread"))?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        }
        "lock" => {
            let fd: i32 = arg.parse().map_err(|_| format!("bad fd {arg:?}"))?;
            set_lock(fd, libc::F_SETLK, libc::F_WRLCK, 0, 10)
                .map(|()| "ok".into())
                .map_err(failed("F_SETLK"))
        }
        "map" => {
            let fd = sys::open(Path::new(arg), libc::O_RDONLY).map_err(failed("open"))?;
            // SAFETY: a new shared read-only mapping of an open file, chosen by the kernel.
            let addr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            sys::close(fd);
            if addr == libc::MAP_FAILED {
                return Err(format!("mmap: {}", std::io::Error::last_os_error()));
            }
            Ok(format!("{addr:p}"))
        }
        "chdir" => std::env::set_current_dir(arg)
            .map(|()| "ok".into())
            .map_err(failed("chdir")),
        "cwd" => std::env::current_dir()
            .map(|d| d.display().to_string())
            .map_err(failed("getcwd")),
        "umask" => {
            let mask = u32::from_str_radix(arg, 8).map_err(|_| format!("bad mask {arg:?}"))?;
            Ok(format!("{:o}", sys::umask(mask)))
        }
        other => unknown(other),
    }
}

impl Mode for Share {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match verb {
            "child" => Ok(self.child.to_string()),
            "tid" => Ok(self.tid.to_string()),
            "second" => Ok(self.second.to_string()),
            "grandchild" => Ok(self.grandchild.to_string()),
            "plain-grandchild" => Ok(self.plain_grandchild.to_string()),
            "plain" => Ok(self.plain.to_string()),
            _ => {
                let arg = args.join(" ");
                match verb.strip_prefix("child-") {
                    Some(theirs) => {
                        let talk = self.talk.as_ref().ok_or("no talking child")?;
                        let answer = talk
                            .ask(&format!("{theirs} {arg}"))
                            .map_err(failed("ask the child"))?;
                        match answer.strip_prefix("error: ") {
                            Some(e) => Err(e.to_string()),
                            None => Ok(answer),
                        }
                    }
                    None => common_answer(verb, &arg),
                }
            }
        }
    }
}
