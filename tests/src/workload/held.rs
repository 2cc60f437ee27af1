//! `held KIND`: one fd at 47 on an object cryo restores by name only, or refuses: a namespace,
//! or a file deleted while open that cryo cannot recreate; and, for KIND `symlink`, a symbolic
//! link held open itself (O_PATH|O_NOFOLLOW), which comes back.
//!
//! ```text
//! held KIND   fd        -> 47
//!             readlink  -> <the target of the symlink fd 47 holds> (readlinkat(47, ""))
//!             pidfd     -> self | other <Pid: of its fdinfo>
//!             signal0   -> ok  (pidfd_send_signal(47, 0))
//!             exited MS -> yes | no  (poll(47, POLLIN) for up to MS ms: the process exited)
//!             flags     -> <F_GETFL of 47, octal>
//!             flags-of FD -> <F_GETFL of FD, octal>
//!             stat FD   -> <mode, octal> <uid> <gid> <mtime ns> <nlink>  (fstat)
//!             put FD TEXT -> ok  (write TEXT to FD)
//!             create-in FD -> created | errno N  (openat(FD, "new-file", O_CREAT))
//!             take FD   -> <what a non-blocking read of FD gives> | empty
//!             exit-info FD -> status <hex> | none  (PIDFD_GET_INFO with PIDFD_INFO_EXIT)
//!             ino FD    -> <st_ino of FD>
//!             rdev FD   -> <major>:<minor> of FD's device
//!             signal0-of FD -> ok | err ...  (pidfd_send_signal(FD, 0))
//!             pidfd-of FD -> <Pid: of FD's fdinfo>
//!             wait FD   -> status <hex>  (waitid(P_PIDFD, FD, WEXITED): reaps a zombie child)
//! KIND: netns | deleted-fifo (O_RDWR) | deleted-fifo-ends (47: read end, O_NONBLOCK;
//!       49: write end; the FIFO mode 0640, owned by 1234:1235, then deleted) | deleted-dir
//!       | deleted-dir-in-deleted-dir (parent/gone, both removed) | deleted-dev | deleted-symlink | symlink
//!       | linked-in-removed-dir (sub/f, "before", opened O_RDWR, linked as `other`, then
//!         sub/f and sub removed: its name deleted, the file linked elsewhere)
//!       | deleted-hard-links (`a`, "both", opened O_RDWR; linked as `a.lnk`, opened by that
//!         name O_RDONLY at 49; both names unlinked: zdtm link10)
//!       | linked-two-names (`f`, "kept", opened O_RDWR; linked as `g`, opened by that name
//!         O_RDONLY at 49, and as `other`; `f` and `g` unlinked: the file linked elsewhere)
//!       | lazy-unmounted (DIR/m/f of a tmpfs at DIR/m, open read-write, the tmpfs then
//!         unmounted with MNT_DETACH)
//!       | o-path-socket (the file of a closed unix socket, DIR/sock, held O_PATH)
//!       | o-path-deleted-fifo (a FIFO held O_PATH, then removed)
//!       | console (a node 5:1 made in the control dir, opened read-only)
//!       | vt (a node 4:5, virtual console 5, made there, opened read-only) | vt-excl (the same
//!       of console 6, then TIOCEXCL) | serial (a node 4:64, the first serial port, O_RDONLY|O_NONBLOCK)
//!       | vt-ctty (a node 4:7 opened without O_NOCTTY: started as a session leader, its
//!         controlling terminal)
//!       | pidfd-self | pidfd-child (of a child blocked in pause(), dumped with it)
//!       | pidfd-child-nonblock (the same, PIDFD_NONBLOCK)
//!       | pidfd-child-shared (pidfd-child, then a second child forked: it inherits fd 47)
//!       | pidfd-child-epoll (pidfd-child, and an epoll at 48 watching it: EPOLLIN, data 47)
//!       | pidfd-child-epoll-closed (pidfd-child, and an epoll at 48 watching it as 46, a
//!         duplicate closed since: EPOLLIN, data 46)
//!       | pidfd-thread (PIDFD_THREAD of a second thread of its own, parked forever)
//!             epoll MS  -> ready <data> | none  (epoll_wait(48) for up to MS ms)
//!       | pidfd-init (of pid 1, outside the dump)
//!       | pidfd-dead-two (47: of a child that exited 7, reaped; 49: a second pidfd of it,
//!         PIDFD_NONBLOCK; 50: of a child killed by SIGTERM, reaped)
//!       | pidfd-zombie (of a child that exited 5, left unreaped: a zombie, dumped with it)
//!       | mqueue (a POSIX message queue, unlinked) | secretmem (memfd_secret)
//!       | memfd-script (memfd_create's read-write memfd holding "#!/bin/true", and a
//!         read-only reopen of it at 49)
//!             run       -> status <wait status, hex> (execveat of 47 in a child)
//! ```

use std::path::Path;

use super::{failed, io_err, sys, unknown, Mode};

const FD: i32 = 47;
const EPOLL: i32 = 48;

struct Held;

/// Opens what `kind` names (in `dir`) and returns its fd.
fn hold(kind: &str, dir: &Path) -> std::io::Result<i32> {
    let at = |name: &str| dir.join(name);
    Ok(match kind {
        "netns" => sys::open(Path::new("/proc/self/ns/net"), libc::O_RDONLY)?,
        "deleted-fifo" => {
            sys::mkfifo(&at("fifo"))?;
            let fd = sys::open(&at("fifo"), libc::O_RDWR)?;
            std::fs::remove_file(at("fifo"))?;
            fd
        }
        "deleted-fifo-ends" => {
            sys::mkfifo(&at("fifo"))?;
            std::os::unix::fs::chown(at("fifo"), Some(1234), Some(1235))?;
            std::fs::set_permissions(
                at("fifo"),
                std::os::unix::fs::PermissionsExt::from_mode(0o640),
            )?;
            let rd = sys::open(&at("fifo"), libc::O_RDONLY | libc::O_NONBLOCK)?;
            let wr = sys::open(&at("fifo"), libc::O_WRONLY)?;
            sys::move_fd(wr, 49)?;
            std::fs::remove_file(at("fifo"))?;
            rd
        }
        "deleted-dir" => {
            std::fs::create_dir(at("gone"))?;
            let fd = sys::open(&at("gone"), libc::O_RDONLY | libc::O_DIRECTORY)?;
            std::fs::remove_dir(at("gone"))?;
            fd
        }
        "deleted-dir-in-deleted-dir" => {
            std::fs::create_dir_all(at("parent/gone"))?;
            let fd = sys::open(&at("parent/gone"), libc::O_RDONLY | libc::O_DIRECTORY)?;
            std::fs::remove_dir(at("parent/gone"))?;
            std::fs::remove_dir(at("parent"))?;
            fd
        }
        "linked-in-removed-dir" => {
            std::fs::create_dir(at("sub"))?;
            std::fs::write(at("sub/f"), "before")?;
            let fd = sys::open(&at("sub/f"), libc::O_RDWR)?;
            std::fs::hard_link(at("sub/f"), at("other"))?;
            std::fs::remove_file(at("sub/f"))?;
            std::fs::remove_dir(at("sub"))?;
            fd
        }
        "deleted-hard-links" => {
            std::fs::write(at("a"), "both")?;
            let fd = sys::open(&at("a"), libc::O_RDWR)?;
            std::fs::hard_link(at("a"), at("a.lnk"))?;
            let second = sys::open(&at("a.lnk"), libc::O_RDONLY)?;
            sys::move_fd(second, 49)?;
            std::fs::remove_file(at("a.lnk"))?;
            std::fs::remove_file(at("a"))?;
            fd
        }
        "linked-two-names" => {
            std::fs::write(at("f"), "kept")?;
            let fd = sys::open(&at("f"), libc::O_RDWR)?;
            std::fs::hard_link(at("f"), at("g"))?;
            std::fs::hard_link(at("f"), at("other"))?;
            let second = sys::open(&at("g"), libc::O_RDONLY)?;
            sys::move_fd(second, 49)?;
            std::fs::remove_file(at("g"))?;
            std::fs::remove_file(at("f"))?;
            fd
        }
        "console" => {
            sys::mknod_char(&at("console"), 5, 1)?;
            sys::open(&at("console"), libc::O_RDONLY)?
        }
        "vt" | "vt-excl" => {
            // Exclusive mode is the device's: the two tests use two consoles.
            let minor = if kind == "vt" { 5 } else { 6 };
            sys::mknod_char(&at("vt"), 4, minor)?;
            let fd = sys::open(&at("vt"), libc::O_RDONLY | libc::O_NOCTTY)?;
            if kind == "vt-excl" {
                // SAFETY: TIOCEXCL takes no argument.
                if unsafe { libc::ioctl(fd, libc::TIOCEXCL) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            fd
        }
        "vt-ctty" => {
            // A session leader (the test starts it in a session of its own) opening a
            // terminal without O_NOCTTY takes it as its controlling terminal: console 7, a
            // console of this kind's own (a terminal is one session's at a time).
            sys::mknod_char(&at("vt"), 4, 7)?;
            sys::open(&at("vt"), libc::O_RDONLY)?
        }
        "serial" => {
            sys::mknod_char(&at("serial"), 4, 64)?;
            sys::open(
                &at("serial"),
                libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
            )?
        }
        "deleted-dev" => {
            sys::mknod_char(&at("null"), 1, 3)?;
            let fd = sys::open(&at("null"), libc::O_RDWR)?;
            std::fs::remove_file(at("null"))?;
            fd
        }
        "lazy-unmounted" => {
            // A file of a tmpfs held open, the tmpfs then unmounted lazily (MNT_DETACH).
            std::fs::create_dir(at("m"))?;
            sys::mount_tmpfs(&at("m"))?;
            std::fs::write(at("m/f"), b"detached")?;
            let fd = sys::open(&at("m/f"), libc::O_RDWR)?;
            nix::mount::umount2(&at("m"), nix::mount::MntFlags::MNT_DETACH)?;
            fd
        }
        "o-path-socket" => {
            // A unix socket's file (the socket closed), held by an O_PATH fd.
            let l = std::os::unix::net::UnixListener::bind(at("sock"))?;
            drop(l);
            sys::open(&at("sock"), libc::O_PATH)?
        }
        "o-path-deleted-fifo" => {
            sys::mkfifo(&at("fifo"))?;
            let fd = sys::open(&at("fifo"), libc::O_PATH)?;
            std::fs::remove_file(at("fifo"))?;
            fd
        }
        "deleted-symlink" | "symlink" => {
            std::os::unix::fs::symlink("some/target", at("link"))?;
            let fd = sys::open(&at("link"), libc::O_PATH | libc::O_NOFOLLOW)?;
            if kind == "deleted-symlink" {
                std::fs::remove_file(at("link"))?;
            }
            fd
        }
        "mqueue" => sys::mq_open_unlinked(&format!("cryo-test-{}", std::process::id()))?,
        "secretmem" => sys::memfd_secret()?,
        "memfd-script" => {
            let fd = sys::memfd("script")?;
            sys::write_all(fd, b"#!/bin/true\n")?;
            let reopened = sys::open(Path::new(&format!("/proc/self/fd/{fd}")), libc::O_RDONLY)?;
            sys::move_fd(reopened, 49)?;
            fd
        }
        "pidfd-self" => sys::pidfd_open(std::process::id() as i32)?,
        "pidfd-init" => sys::pidfd_open(1)?,
        "pidfd-child" => sys::pidfd_open(sys::fork_paused()?)?,
        "pidfd-child-epoll" => {
            let fd = sys::move_fd(sys::pidfd_open(sys::fork_paused()?)?, FD)?;
            let ep = sys::move_fd(sys::epoll()?, EPOLL)?;
            sys::epoll_add(ep, FD, libc::EPOLLIN as u32, FD as u64)?;
            fd
        }
        "pidfd-child-epoll-closed" => {
            let fd = sys::move_fd(sys::pidfd_open(sys::fork_paused()?)?, FD)?;
            let ep = sys::move_fd(sys::epoll()?, EPOLL)?;
            sys::dup_to(fd, 46)?;
            sys::epoll_add(ep, 46, libc::EPOLLIN as u32, 46)?;
            sys::close(46);
            fd
        }
        "pidfd-thread" => {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(sys::gettid());
                loop {
                    std::thread::park();
                }
            });
            let tid = rx.recv().map_err(std::io::Error::other)?;
            // PIDFD_THREAD is O_EXCL.
            sys::pidfd_open_flags(tid, libc::O_EXCL as u32)?
        }
        "pidfd-child-shared" => {
            let fd = sys::move_fd(sys::pidfd_open(sys::fork_paused()?)?, FD)?;
            sys::fork_paused()?;
            fd
        }
        "pidfd-child-nonblock" => {
            sys::pidfd_open_flags(sys::fork_paused()?, libc::O_NONBLOCK as u32)?
        }
        "pidfd-dead-two" => {
            let seven = sys::fork_exiting_with(7)?;
            let fd = sys::pidfd_open(seven)?;
            let again = sys::pidfd_open_flags(seven, libc::O_NONBLOCK as u32)?;
            sys::move_fd(again, 49)?;
            sys::reap(seven)?;
            let termed = sys::fork_paused()?;
            let other = sys::pidfd_open(termed)?;
            sys::pidfd_signal(other, libc::SIGTERM)?;
            sys::reap(termed)?;
            sys::move_fd(other, 50)?;
            fd
        }
        "pidfd-zombie" => {
            let child = sys::fork_exiting_with(5)?;
            let fd = sys::pidfd_open(child)?;
            // Dead, not reaped.
            sys::poll_in(fd, -1)?;
            fd
        }
        other => {
            return Err(std::io::Error::other(format!("unknown kind {other:?}")));
        }
    })
}

/// `held KIND`
pub fn start(args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    let kind = args.first().map(String::as_str).unwrap_or("netns");
    let fd = hold(kind, dir).map_err(failed("hold"))?;
    sys::move_fd(fd, FD).map_err(failed("dup2"))?;
    Ok(Box::new(Held))
}

impl Mode for Held {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("fd", []) => Ok(FD.to_string()),
            ("run", []) => sys::run_fd(FD)
                .map(|status| format!("status {status:x}"))
                .map_err(io_err),
            ("readlink", []) => sys::readlink_fd(FD).map_err(io_err),
            ("pidfd", []) => {
                let info =
                    std::fs::read_to_string(format!("/proc/self/fdinfo/{FD}")).map_err(io_err)?;
                let pid = info
                    .lines()
                    .find_map(|l| l.strip_prefix("Pid:"))
                    .map(str::trim)
                    .ok_or("no Pid: in its fdinfo")?;
                if pid == std::process::id().to_string() {
                    Ok("self".into())
                } else {
                    Ok(format!("other {pid}"))
                }
            }
            ("signal0", []) => sys::pidfd_signal(FD, 0)
                .map(|()| "ok".into())
                .map_err(io_err),
            ("exited", [ms]) => {
                let ms: i32 = ms.parse().map_err(|_| format!("bad number {ms:?}"))?;
                let ready = sys::poll_in(FD, ms).map_err(io_err)?;
                Ok(if ready { "yes" } else { "no" }.into())
            }
            ("epoll", [ms]) => {
                let ms: i32 = ms.parse().map_err(|_| format!("bad number {ms:?}"))?;
                let ready = sys::epoll_wait(EPOLL, ms).map_err(io_err)?;
                Ok(match ready.first() {
                    Some(data) => format!("ready {data}"),
                    None => "none".into(),
                })
            }
            ("flags", []) => sys::file_flags(FD)
                .map(|f| format!("{f:o}"))
                .map_err(io_err),
            ("rdev", [fd]) => {
                use std::os::unix::fs::MetadataExt;
                let m =
                    std::fs::metadata(format!("/proc/self/fd/{}", number(fd)?)).map_err(io_err)?;
                Ok(format!(
                    "{}:{}",
                    libc::major(m.rdev()),
                    libc::minor(m.rdev())
                ))
            }
            ("stat", [fd]) => {
                use std::os::unix::fs::MetadataExt;
                let m =
                    std::fs::metadata(format!("/proc/self/fd/{}", number(fd)?)).map_err(io_err)?;
                Ok(format!(
                    "{:o} {} {} {} {}",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid(),
                    m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                    m.nlink()
                ))
            }
            ("create-in", [fd]) => {
                let name = std::ffi::CString::new("new-file").expect("no NUL");
                // SAFETY: name is a NUL-terminated string alive for the call.
                let r = unsafe {
                    libc::openat(
                        number(fd)?,
                        name.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY,
                        0o600,
                    )
                };
                if r < 0 {
                    Ok(format!(
                        "errno {}",
                        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
                    ))
                } else {
                    sys::close(r);
                    Ok("created".into())
                }
            }
            ("put", [fd, text]) => sys::write_all(number(fd)?, text.as_bytes())
                .map(|()| "ok".into())
                .map_err(io_err),
            ("take", [fd]) => {
                let mut buf = vec![0u8; 4096];
                match sys::read(number(fd)?, &mut buf) {
                    Ok(0) => Ok("empty".into()),
                    Ok(n) => Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok("empty".into()),
                    Err(e) => Err(io_err(e)),
                }
            }
            ("flags-of", [fd]) => sys::file_flags(number(fd)?)
                .map(|f| format!("{f:o}"))
                .map_err(io_err),
            ("exit-info", [fd]) => match sys::pidfd_exit_status(number(fd)?).map_err(io_err)? {
                Some(status) => Ok(format!("status {status:#x}")),
                None => Ok("none".into()),
            },
            ("ino", [fd]) => sys::fstat_ino(number(fd)?)
                .map(|i| i.to_string())
                .map_err(io_err),
            ("signal0-of", [fd]) => sys::pidfd_signal(number(fd)?, 0)
                .map(|()| "ok".into())
                .map_err(io_err),
            ("pidfd-of", [fd]) => {
                let info =
                    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).map_err(io_err)?;
                info.lines()
                    .find_map(|l| l.strip_prefix("Pid:"))
                    .map(|p| p.trim().to_string())
                    .ok_or_else(|| "no Pid: in its fdinfo".into())
            }
            ("wait", [fd]) => sys::waitid_pidfd(number(fd)?)
                .map(|s| format!("status {s:#x}"))
                .map_err(io_err),
            _ => unknown(verb),
        }
    }
}

/// An fd number from the test.
fn number(fd: &str) -> Result<i32, String> {
    fd.parse().map_err(|_| format!("bad fd {fd:?}"))
}
