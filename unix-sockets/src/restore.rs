//! Helpers the restored task calls, while it still runs cryo code, to put
//! its unix sockets back: pairs, names, listeners, connections pending in a
//! listener's accept queue, queues, shutdown state and options.
//!
//! The order matters, and the kernel makes it so:
//! 1. create ([`socketpair`], [`socket`]), bind ([`bind_name`]), listen,
//!    connect ([`connect`], [`connect_pending`]);
//! 2. refill queues ([`refill_queue`], [`send_message`]): before step 3,
//!    because `SHUT_WR` on the sender (or `SHUT_RD` on the receiver) makes
//!    sends fail with EPIPE;
//! 3. shutdown ([`restore_pair_shutdown`], [`restore_shutdown`]);
//! 4. options ([`apply_options`]) LAST: with SO_PASSCRED on either end at
//!    send time the kernel attaches the sender's credentials to every skb
//!    (and autobinds an unbound socket on connect/send), which the original
//!    queue did not have.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use crate::diag::{Shutdown, SockType, UnixName};
use crate::error::{Result, UnixSockError};
use crate::queue::{CapturedQueue, Creds, QueuedMessage};
use crate::sys;

/// Creates a connected pair of unix sockets of `ty` (close-on-exec).
pub fn socketpair(ty: SockType) -> Result<(OwnedFd, OwnedFd)> {
    sys::socketpair(ty.raw()).map_err(|e| UnixSockError::fd("socketpair", -1, e))
}

/// Creates an unbound, unconnected unix socket of `ty` (close-on-exec).
pub fn socket(ty: SockType) -> Result<OwnedFd> {
    sys::socket(ty.raw()).map_err(|e| UnixSockError::fd("socket", -1, e))
}

/// Mode and owner of a filesystem-bound socket's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketFileAttrs {
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl SocketFileAttrs {
    /// Reads them from the file at `path` (at dump time).
    pub fn of_path(path: &Path) -> Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let md = fs::symlink_metadata(path).map_err(|e| UnixSockError::path("stat", path, e))?;
        Ok(Self {
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
        })
    }
}

/// Binds `fd` to `name`. For a path, a stale socket file there is unlinked
/// first (anything else is left alone: [`UnixSockError::NotASocket`]), and
/// the new file gets `attrs` (mode, owner) when given. A path longer than
/// `sun_path` cannot be a socket's name and is refused.
pub fn bind_name(fd: impl AsFd, name: &UnixName, attrs: Option<SocketFileAttrs>) -> Result<()> {
    let fd = fd.as_fd();
    match name {
        UnixName::Unnamed => Ok(()),
        UnixName::Abstract(_) => sys::bind(fd, &name.to_sun_path())
            .map_err(|e| UnixSockError::fd("bind abstract name", fd.as_raw_fd(), e)),
        UnixName::Path(path) => bind_path(fd, path, attrs),
    }
}

/// As [`bind_name`], a relative path bound from directory `dir` (when given): the socket's
/// name stays the relative one (getsockname, its peers' getpeername), its file goes in `dir`.
/// The process's cwd is changed for the bind and put back after: call it only where no other
/// thread depends on the cwd (a restored task still running cryo code).
pub fn bind_name_in(
    fd: impl AsFd,
    name: &UnixName,
    dir: Option<&Path>,
    attrs: Option<SocketFileAttrs>,
) -> Result<()> {
    let (UnixName::Path(path), Some(dir)) = (name, dir) else {
        return bind_name(fd, name, attrs);
    };
    if path.is_absolute() {
        return bind_name(fd, name, attrs);
    }
    let back = std::env::current_dir().map_err(|e| UnixSockError::path("getcwd", path, e))?;
    std::env::set_current_dir(dir).map_err(|e| UnixSockError::path("chdir", dir, e))?;
    let bound = bind_path(fd, path, attrs);
    std::env::set_current_dir(&back).map_err(|e| UnixSockError::path("chdir back", &back, e))?;
    bound
}

/// Binds `fd` to the filesystem `path`; see [`bind_name`]. The parent directory is opened
/// without following any symlink on the way (the bound path came from the kernel, which shows
/// none: a symlink there now was swapped in after the dump), and the unlink, the bind and the
/// chmod/chown all go through that directory fd, so nothing is deleted or created elsewhere.
/// A socket file already there is unlinked only when it is stale: nobody listens on it and
/// it has the owner the dump recorded. Holds the bind lock ([`crate::unlinked`]).
pub fn bind_path(fd: impl AsFd, path: &Path, attrs: Option<SocketFileAttrs>) -> Result<()> {
    use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
    let fd = fd.as_fd();
    // Not while another process of the restore binds without a file at a shared name.
    let _lock = crate::unlinked::bind_lock()?;
    // A relative name ("sock") has an empty parent: the current directory.
    let parent = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => Path::new("/"),
    };
    let file = path.file_name().ok_or_else(|| UnixSockError::Path {
        step: "bind",
        path: path.into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
    })?;
    let dir = nix::fcntl::openat2(
        nix::fcntl::AT_FDCWD,
        parent,
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS),
    )
    .map_err(|e| UnixSockError::path("open the directory (no symlinks)", parent, e.into()))?;
    // Through the directory fd, which also keeps a long path within sun_path.
    let mut short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    short.push(file);
    match nix::sys::stat::fstatat(&dir, file, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFSOCK => {
            // A stale socket file refuses connections; a live one is someone's.
            let live = [SockType::Stream, SockType::SeqPacket, SockType::Dgram]
                .into_iter()
                .any(|ty| {
                    socket(ty).is_ok_and(|probe| {
                        sys::connect(probe.as_fd(), short.as_os_str().as_bytes()).is_ok()
                    })
                });
            let owner_ok = attrs.is_none_or(|a| (st.st_uid, st.st_gid) == (a.uid, a.gid));
            if live || !owner_ok {
                return Err(UnixSockError::path(
                    "bind",
                    path,
                    std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        "another socket is bound there (live, or not the owner the dump saw): \
                         left alone",
                    ),
                ));
            }
            debug!(path = %path.display(), "unlinking stale socket file");
            nix::unistd::unlinkat(&dir, file, nix::unistd::UnlinkatFlags::NoRemoveDir)
                .map_err(|e| UnixSockError::path("unlink stale socket", path, e.into()))?;
        }
        Ok(_) => return Err(UnixSockError::NotASocket { path: path.into() }),
        Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(UnixSockError::path("stat", path, e.into())),
    }
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() < sys::SUN_PATH_MAX {
        // The socket's name is what bind is given (getsockname, its peers' getpeername):
        // the path itself, which the kernel resolves again. A symlink swapped in since the
        // directory was opened would put the file elsewhere: checked after.
        sys::bind(fd, bytes).map_err(|e| UnixSockError::path("bind", path, e))?;
        bound_in(fd, &dir, file, path)?;
    } else {
        // Too long for sun_path: through the directory's fd (the name is then that path).
        sys::bind(fd, short.as_os_str().as_bytes())
            .map_err(|e| UnixSockError::path("bind (via /proc/self/fd)", path, e))?;
    }
    if let Some(a) = attrs {
        nix::sys::stat::fchmodat(
            &dir,
            file,
            nix::sys::stat::Mode::from_bits_truncate(a.mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| UnixSockError::path("chmod socket file", path, e.into()))?;
        nix::unistd::fchownat(
            &dir,
            file,
            Some(nix::unistd::Uid::from_raw(a.uid)),
            Some(nix::unistd::Gid::from_raw(a.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| UnixSockError::path("chown socket file", path, e.into()))?;
    }
    Ok(())
}

/// Checks that the socket `fd` just bound to `path` made its file as `file` in `dir` (the
/// directory opened without symlinks): a symlink swapped in on the way between that open and
/// the bind would have put it elsewhere.
pub(crate) fn bound_in(
    fd: BorrowedFd<'_>,
    dir: &OwnedFd,
    file: &std::ffi::OsStr,
    path: &Path,
) -> Result<()> {
    use nix::fcntl::AtFlags;
    let elsewhere = |detail: &str| {
        UnixSockError::path(
            "bind",
            path,
            std::io::Error::other(format!(
                "{detail}: the path changed during the restore (a symlink on the way?)"
            )),
        )
    };
    let here = nix::sys::stat::fstatat(dir, file, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|_| elsewhere("no socket file in the directory checked"))?;
    let sock = nix::sys::stat::fstat(fd)
        .map_err(|e| UnixSockError::fd("fstat", fd.as_raw_fd(), e.into()))?;
    let info = crate::diag::query_inode(sock.st_ino as u32)?;
    match info.and_then(|i| i.vfs) {
        Some(vfs) if vfs.matches(here.st_dev, here.st_ino) => Ok(()),
        _ => Err(elsewhere(
            "the socket file made is not the one in the directory checked",
        )),
    }
}

/// A dgram socket bound to `name`, another socket's name, made where no one sees it bind: the
/// sender of datagrams that must show that name again (recvfrom) while the name may be held
/// by its owner, outside the restore. A path is bound under a private root (a short-lived
/// thread with a filesystem context of its own chroots into a fresh temporary directory: the
/// name is the path given, its file lands in that directory, removed with it after); an
/// abstract name in a new network namespace (a short-lived thread unshares one and makes the
/// socket there: abstract names are per namespace), so such a sender reaches its receiver by
/// a path only (a path lookup ignores network namespaces).
pub fn sender_named(name: &UnixName) -> Result<OwnedFd> {
    let bad = |detail: String| UnixSockError::Invalid {
        step: "bind a sender to another socket's name",
        fd: -1,
        detail,
    };
    let in_thread = |job: &(dyn Fn() -> Result<OwnedFd> + Sync)| {
        std::thread::scope(|scope| {
            scope
                .spawn(job)
                .join()
                .unwrap_or_else(|_| Err(bad("the binding thread panicked".into())))
        })
    };
    match name {
        UnixName::Unnamed => Err(bad("no name".into())),
        UnixName::Abstract(_) => in_thread(&|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| bad(format!("unshare(CLONE_NEWNET): {e}")))?;
            let fd = socket(SockType::Dgram)?;
            sys::bind(fd.as_fd(), &name.to_sun_path())
                .map_err(|e| UnixSockError::fd("bind abstract name", fd.as_raw_fd(), e))?;
            Ok(fd)
        }),
        UnixName::Path(path) => {
            let template = std::env::temp_dir().join("cryo-sender-XXXXXX");
            let root = nix::unistd::mkdtemp(&template)
                .map_err(|e| UnixSockError::path("mkdtemp", &template, e.into()))?;
            let fd = socket(SockType::Dgram)?;
            let bound = in_thread(&|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
                    .map_err(|e| bad(format!("unshare(CLONE_FS): {e}")))?;
                nix::unistd::chroot(&root)
                    .map_err(|e| UnixSockError::path("chroot", &root, e.into()))?;
                std::env::set_current_dir("/").map_err(|e| UnixSockError::path("chdir", "/", e))?;
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(parent)
                        .map_err(|e| UnixSockError::path("mkdir (private root)", parent, e))?;
                }
                sys::bind(fd.as_fd(), &name.to_sun_path())
                    .map_err(|e| UnixSockError::path("bind (private root)", path, e))?;
                fd.try_clone()
                    .map_err(|e| UnixSockError::fd("dup", fd.as_raw_fd(), e))
            });
            if let Err(e) = fs::remove_dir_all(&root) {
                warn!(dir = %root.display(), "remove the private root of a sender: {e}");
            }
            bound
        }
    }
}

/// The accepted end of a connection from `client` (a fresh stream or seqpacket socket of
/// `ty`, bound to its own name already if it has one) to a transient listener bound to
/// abstract `name`, closed once it accepted: the accepted end shares the name (getsockname,
/// the client's getpeername) and, as an accepted socket whose listener is gone, does not hold
/// it. Fails when something holds the name. Holds the bind lock ([`crate::unlinked`]), so two
/// processes of a restore making such connections on one name take turns.
pub fn accepted_by_name(ty: SockType, name: &UnixName, client: impl AsFd) -> Result<OwnedFd> {
    accepted_through(ty, name, client, &mut |_, call| call())
}

/// Which call of [`accepted_through`] is issued: each stamps peer credentials (SO_PEERCRED,
/// SO_PEERGROUPS) from the task issuing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// The transient listener's listen(): what the client shows as its peer.
    Listen,
    /// The client's connect(): what the accepted end shows as its peer.
    Connect,
}

/// Issues one call of [`accepted_through`] (`call`), for the [`Stamp`] it is.
pub type Issue<'a> = dyn FnMut(Stamp, &mut dyn FnMut() -> Result<()>) -> Result<()> + 'a;

/// [`accepted_by_name`], each call that stamps peer credentials issued through `issue`, and
/// `name` a path too: the transient listener is then bound to it without a file
/// ([`crate::unlinked::bind_unlinked`], whatever is at the path stays) and reached through
/// its socket file; the accepted end shows the path as its name.
pub fn accepted_through(
    ty: SockType,
    name: &UnixName,
    client: impl AsFd,
    issue: &mut Issue<'_>,
) -> Result<OwnedFd> {
    let client = client.as_fd();
    let listener = socket(ty)?;
    let (_lock, _file, to) = match name {
        UnixName::Path(_) => {
            let file = crate::unlinked::bind_unlinked(&listener, name)?;
            let to = crate::unlinked::reach(&file);
            (None, Some(file), to)
        }
        _ => {
            let lock = crate::unlinked::bind_lock()?;
            sys::bind(listener.as_fd(), &name.to_sun_path()).map_err(|e| {
                UnixSockError::Invalid {
                    step: "bind a transient listener",
                    fd: listener.as_raw_fd(),
                    detail: format!("to {name}: {e}"),
                }
            })?;
            (Some(lock), None, name.clone())
        }
    };
    issue(Stamp::Listen, &mut || listen(&listener, 1))?;
    issue(Stamp::Connect, &mut || connect(client, &to))?;
    accept(&listener)
}

/// `listen(fd, backlog)`.
pub fn listen(fd: impl AsFd, backlog: u32) -> Result<()> {
    let fd = fd.as_fd();
    sys::listen(fd, i32::try_from(backlog).unwrap_or(i32::MAX))
        .map_err(|e| UnixSockError::fd("listen", fd.as_raw_fd(), e))
}

/// A bound listener of `ty` (stream or seqpacket) on `name`.
pub fn make_listener(
    ty: SockType,
    name: &UnixName,
    attrs: Option<SocketFileAttrs>,
    backlog: u32,
) -> Result<OwnedFd> {
    let fd = socket(ty)?;
    bind_name(&fd, name, attrs)?;
    listen(&fd, backlog)?;
    Ok(fd)
}

/// Connects `fd` to the socket bound to `name` (a listener for stream and
/// seqpacket; the destination of a connected dgram socket).
pub fn connect(fd: impl AsFd, name: &UnixName) -> Result<()> {
    let fd = fd.as_fd();
    if !name.is_bound() {
        return Err(UnixSockError::Invalid {
            step: "connect",
            fd: fd.as_raw_fd(),
            detail: "peer has no name to connect to".into(),
        });
    }
    sys::connect(fd, &name.to_sun_path()).map_err(|e| UnixSockError::Invalid {
        step: "connect",
        fd: fd.as_raw_fd(),
        detail: format!("to {name}: {e}"),
    })
}

/// Recreates a connection pending in a listener's accept queue: a fresh
/// socket of `ty` (bound to `client_name` if the client was bound) is
/// connected to the listener bound to `listener_name`, so that the
/// listener's next accept() returns its peer. Returns the client end.
///
/// Data the client had sent before being accepted goes back into the new
/// embryo's queue when the caller sends it from the returned end
/// ([`refill_queue`]); capturing it took an accept ([`crate::accept_waiting`]).
pub fn connect_pending(
    ty: SockType,
    listener_name: &UnixName,
    client_name: &UnixName,
    client_attrs: Option<SocketFileAttrs>,
) -> Result<OwnedFd> {
    let fd = socket(ty)?;
    bind_name(&fd, client_name, client_attrs)?;
    connect(&fd, listener_name)?;
    Ok(fd)
}

/// Sends one captured message from `from` (to `dest` when `from` is not
/// connected), with its descriptors and credentials, never blocking.
/// Stream data is written until all of it is in (descriptors go with the
/// first byte).
///
/// Credentials whose pid no longer exists (ESRCH) are replaced by this
/// process's pid with the same uid and gid, and a warning.
pub fn send_message(from: impl AsFd, dest: Option<&UnixName>, msg: &QueuedMessage) -> Result<()> {
    let from = from.as_fd();
    let raw = from.as_raw_fd();
    let dest_bytes = dest.filter(|d| d.is_bound()).map(|d| d.to_sun_path());
    let fds: Vec<BorrowedFd<'_>> = msg.fds.iter().map(|f| f.as_fd()).collect();
    let mut creds = msg.creds.map(to_raw);
    let mut sent = 0usize;
    let mut first = true;
    loop {
        let attach: &[BorrowedFd<'_>] = if first { &fds } else { &[] };
        let r = sys::sendmsg(
            from,
            &msg.data[sent..],
            attach,
            creds,
            dest_bytes.as_deref(),
            libc::MSG_DONTWAIT,
        );
        match r {
            Ok(n) => {
                sent += n;
                first = false;
                if sent >= msg.data.len() {
                    return Ok(());
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) && creds.is_some() => {
                let c = creds.as_mut().expect("checked");
                warn!(
                    fd = raw,
                    pid = c.pid,
                    "credentials name a pid that is gone, sending with this process's pid"
                );
                c.pid = std::process::id() as i32;
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                return Err(UnixSockError::Invalid {
                    step: "sendmsg (refill)",
                    fd: raw,
                    detail: format!(
                        "receiver full after {sent} of {} bytes (sndbuf too small, or a dgram \
                         receiver over net.unix.max_dgram_qlen)",
                        msg.data.len()
                    ),
                });
            }
            Err(e) => return Err(UnixSockError::fd("sendmsg (refill)", raw, e)),
        }
    }
}

fn to_raw(c: Creds) -> sys::RawCreds {
    sys::RawCreds {
        pid: c.pid,
        uid: c.uid,
        gid: c.gid,
    }
}

/// Refills a receive queue: every message of `queue` is sent from `from`
/// (the receiver's peer, or any socket able to send to `dest`), in order,
/// one sendmsg each, so dgram/seqpacket boundaries and the byte offsets of
/// stream descriptors are kept. `from`'s send buffer is raised for the
/// refill (SO_SNDBUFFORCE) and put back after.
pub fn refill_queue(from: impl AsFd, dest: Option<&UnixName>, queue: &CapturedQueue) -> Result<()> {
    refill_messages(from, dest, &queue.messages)
}

/// How messages are sent, in order: each by [`send_message`], or a caller's way around it
/// (the sender's credentials given by a process of their pid).
pub type SendMessages<'s> =
    &'s mut dyn FnMut(BorrowedFd<'_>, Option<&UnixName>, &[QueuedMessage]) -> Result<()>;

/// [`refill_queue`] of some of a queue's messages, in order.
pub fn refill_messages(
    from: impl AsFd,
    dest: Option<&UnixName>,
    messages: &[QueuedMessage],
) -> Result<()> {
    refill_messages_with(from, dest, messages, &mut |f, d, all| {
        all.iter().try_for_each(|m| send_message(f, d, m))
    })
}

/// [`refill_messages`], the messages sent by `send`.
pub fn refill_messages_with(
    from: impl AsFd,
    dest: Option<&UnixName>,
    messages: &[QueuedMessage],
    send: SendMessages<'_>,
) -> Result<()> {
    let from = from.as_fd();
    if messages.is_empty() {
        return Ok(());
    }
    let raw = from.as_raw_fd();
    let orig = sys::get_int(from, libc::SOL_SOCKET, libc::SO_SNDBUF)
        .map_err(|e| UnixSockError::fd("getsockopt SO_SNDBUF", raw, e))?;
    // Each skb is charged its truesize (data plus about 1 KiB of overhead)
    // against the sender's sk_sndbuf; a stream sendmsg also stops at half
    // of sk_sndbuf per skb.
    let need: u64 = messages
        .iter()
        .map(|m| m.data.len() as u64 + 2048)
        .sum::<u64>()
        * 2;
    let raised = need > orig as u64;
    if raised {
        let val = i32::try_from(need / 2 + 1).unwrap_or(i32::MAX / 2);
        match sys::set_int(from, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, val) {
            // In a user namespace of its own: as far as the sysctl maximum lets it (a message
            // that does not fit fails its send, naming it).
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                sys::set_int(from, libc::SOL_SOCKET, libc::SO_SNDBUF, val)
                    .map_err(|e| UnixSockError::fd("setsockopt SO_SNDBUF", raw, e))?
            }
            other => other.map_err(|e| UnixSockError::fd("setsockopt SO_SNDBUFFORCE", raw, e))?,
        }
    }
    let result = send(from, dest, messages);
    if raised {
        set_buf(from, libc::SO_SNDBUFFORCE, orig)?;
    }
    result
}

/// Sets a buffer size so that getsockopt reads back `doubled` (the kernel
/// doubles what setsockopt gives), with `opt` (SO_SNDBUFFORCE or
/// SO_RCVBUFFORCE). Without CAP_NET_ADMIN in the initial user namespace (a
/// process in a user namespace of its own) through the plain option, which
/// stops at the sysctl maximum: the size read back must then be `doubled`.
fn set_buf(fd: BorrowedFd<'_>, opt: i32, doubled: i32) -> Result<()> {
    let raw = fd.as_raw_fd();
    match sys::set_int(fd, libc::SOL_SOCKET, opt, doubled / 2) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
        other => return other.map_err(|e| UnixSockError::fd("setsockopt buffer size", raw, e)),
    }
    let plain = if opt == libc::SO_SNDBUFFORCE {
        libc::SO_SNDBUF
    } else {
        libc::SO_RCVBUF
    };
    sys::set_int(fd, libc::SOL_SOCKET, plain, doubled / 2)
        .map_err(|e| UnixSockError::fd("setsockopt buffer size", raw, e))?;
    let got = sys::get_int(fd, libc::SOL_SOCKET, plain)
        .map_err(|e| UnixSockError::fd("getsockopt buffer size", raw, e))?;
    if got != doubled {
        return Err(UnixSockError::fd(
            "setsockopt buffer size",
            raw,
            std::io::Error::other(format!(
                "{doubled} bytes is above the sysctl maximum ({got}), which only a process \
                 with CAP_NET_ADMIN in the initial user namespace may pass"
            )),
        ));
    }
    Ok(())
}

/// Restores the shutdown state of a connected stream/seqpacket pair. For
/// such sockets shutdown(2) acts on both ends (a's read side closes with
/// b's write side), so the pair's two states are folded into at most two
/// `shutdown(SHUT_WR)`-style calls.
pub fn restore_pair_shutdown(
    a: impl AsFd,
    a_state: Shutdown,
    b: impl AsFd,
    b_state: Shutdown,
) -> Result<()> {
    let a_wr = a_state.write || b_state.read;
    let b_wr = b_state.write || a_state.read;
    if a_wr {
        restore_shutdown(
            &a,
            Shutdown {
                read: false,
                write: true,
            },
        )?;
    }
    if b_wr {
        restore_shutdown(
            &b,
            Shutdown {
                read: false,
                write: true,
            },
        )?;
    }
    Ok(())
}

/// shutdown(2) of one socket with `state` (for a socket whose peer is not
/// restored with it, or a dgram socket).
pub fn restore_shutdown(fd: impl AsFd, state: Shutdown) -> Result<()> {
    let fd = fd.as_fd();
    let how = match (state.read, state.write) {
        (false, false) => return Ok(()),
        (true, false) => libc::SHUT_RD,
        (false, true) => libc::SHUT_WR,
        (true, true) => libc::SHUT_RDWR,
    };
    sys::shutdown(fd, how).map_err(|e| UnixSockError::fd("shutdown", fd.as_raw_fd(), e))
}

/// Socket options worth carrying over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockOptions {
    /// SO_PASSCRED.
    pub passcred: bool,
    /// SO_SNDBUF as getsockopt reads it (doubled).
    pub sndbuf: i32,
    /// SO_RCVBUF as getsockopt reads it (doubled).
    pub rcvbuf: i32,
    /// SO_PEEK_OFF (-1: disabled).
    pub peek_off: i32,
}

/// Reads the options of `fd`.
pub fn read_options(fd: impl AsFd) -> Result<SockOptions> {
    let fd = fd.as_fd();
    let raw = fd.as_raw_fd();
    let get = |opt, step| {
        sys::get_int(fd, libc::SOL_SOCKET, opt).map_err(|e| UnixSockError::fd(step, raw, e))
    };
    Ok(SockOptions {
        passcred: get(libc::SO_PASSCRED, "getsockopt SO_PASSCRED")? != 0,
        sndbuf: get(libc::SO_SNDBUF, "getsockopt SO_SNDBUF")?,
        rcvbuf: get(libc::SO_RCVBUF, "getsockopt SO_RCVBUF")?,
        peek_off: get(libc::SO_PEEK_OFF, "getsockopt SO_PEEK_OFF")?,
    })
}

/// The credentials a unix socket shows as its peer's: SO_PEERCRED (pid, effective uid and
/// gid) and SO_PEERGROUPS. A listener shows its own (those of the task that called listen()
/// last), a connected end its peer's: for an accepted end, those of the task that connected;
/// for the connecting end, its listener's; for the ends of a socketpair, its maker's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerCred {
    /// The pid, as the caller's PID namespace names it (0: none it can see).
    pub pid: i32,
    /// The effective uid (u32::MAX: none).
    pub uid: u32,
    /// The effective gid (u32::MAX: none).
    pub gid: u32,
    /// The supplementary groups, in the kernel's order.
    pub groups: Vec<u32>,
}

/// Reads the peer credentials of `fd` (SO_PEERCRED, SO_PEERGROUPS).
pub fn peer_cred(fd: impl AsFd) -> Result<PeerCred> {
    let fd = fd.as_fd();
    let raw = fd.as_raw_fd();
    let c = sys::peer_cred(fd).map_err(|e| UnixSockError::fd("getsockopt SO_PEERCRED", raw, e))?;
    let groups =
        sys::peer_groups(fd).map_err(|e| UnixSockError::fd("getsockopt SO_PEERGROUPS", raw, e))?;
    Ok(PeerCred {
        pid: c.pid,
        uid: c.uid,
        gid: c.gid,
        groups,
    })
}

/// Applies `opts` to `fd` (buffers with the FORCE variants, so values above
/// the sysctl maxima come back too). Call after the queues are refilled.
pub fn apply_options(fd: impl AsFd, opts: &SockOptions) -> Result<()> {
    let fd = fd.as_fd();
    let raw = fd.as_raw_fd();
    set_buf(fd, libc::SO_SNDBUFFORCE, opts.sndbuf)?;
    set_buf(fd, libc::SO_RCVBUFFORCE, opts.rcvbuf)?;
    sys::set_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, opts.peek_off)
        .map_err(|e| UnixSockError::fd("setsockopt SO_PEEK_OFF", raw, e))?;
    sys::set_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_PASSCRED,
        i32::from(opts.passcred),
    )
    .map_err(|e| UnixSockError::fd("setsockopt SO_PASSCRED", raw, e))
}

/// The name `fd` is bound to (getsockname).
pub fn local_name(fd: impl AsFd) -> Result<UnixName> {
    let fd = fd.as_fd();
    sys::getsockname(fd)
        .map(|b| UnixName::from_sun_path(&b))
        .map_err(|e| UnixSockError::fd("getsockname", fd.as_raw_fd(), e))
}

/// accept(2) on a listener (close-on-exec); for tests and checks.
pub fn accept(fd: impl AsFd) -> Result<OwnedFd> {
    let fd = fd.as_fd();
    sys::accept(fd).map_err(|e| UnixSockError::fd("accept", fd.as_raw_fd(), e))
}
