//! A path-bound socket whose file is gone (unlinked, its path perhaps taken by another file or
//! its directory removed since): found at dump, bound again at restore under its very name
//! (getsockname, its peers' getpeername: the name is fixed at bind) without leaving a file.
//!
//! ```text
//! dump     socket_file (ioctl SIOCUNIXFILE): the file it was bound to, its link count (0:
//!          unlinked) and where it is now; check_rebind: what the restore will need
//! restore  bind_unlinked
//!   absolute name  missing directories made (0700), a file at the path renamed aside (a
//!                  unique name in the same directory), bind, the socket file opened O_PATH
//!                  and unlinked, the other file renamed back, the directories made removed
//!                  in reverse; any failure undoes what was done
//!   relative name  the same in a private temporary directory, the cwd of the binding
//!                  thread (CLONE_FS: no other thread sees it)
//!   peers          connect and send to it through /proc/self/fd/N of the O_PATH fd (reach):
//!                  the kernel finds a socket by its file, linked or not
//!   one at a time  the processes of a restore bind in parallel, and the sockets of two of
//!                  them may share a name (a listener and the accepted sockets its children
//!                  hold): each bind of a path, this one and a plain one, holds an exclusive
//!                  flock on / for its few system calls (bind_lock), so none sees the path
//!                  while another has moved its file aside or made its directories
//! ```

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, RenameFlags, ResolveFlag};
use nix::unistd::UnlinkatFlags;
use tracing::{debug, warn};

use crate::diag::UnixName;
use crate::error::{Result, UnixSockError};
use crate::sys;

/// The file a path-bound socket was bound to, as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketFile {
    /// Where it is (cryo's view; meaningless when `unlinked`).
    pub path: PathBuf,
    /// Its link count is 0: no path leads to it any more.
    pub unlinked: bool,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// The file socket `sock` was bound to (`None`: not bound to a path).
pub fn socket_file(sock: impl AsFd) -> Result<Option<SocketFile>> {
    let sock = sock.as_fd();
    let file = match sys::socket_file(sock) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(UnixSockError::fd("ioctl SIOCUNIXFILE", sock.as_raw_fd(), e)),
    };
    let st = nix::sys::stat::fstat(&file)
        .map_err(|e| UnixSockError::fd("fstat of its socket file", file.as_raw_fd(), e.into()))?;
    let link = format!("/proc/self/fd/{}", file.as_raw_fd());
    let path = std::fs::read_link(&link).map_err(|e| UnixSockError::path("readlink", link, e))?;
    let unlinked = st.st_nlink == 0;
    let path = match path.as_os_str().as_bytes().strip_suffix(b" (deleted)") {
        Some(p) if unlinked => PathBuf::from(OsStr::from_bytes(p)),
        _ => path,
    };
    Ok(Some(SocketFile {
        path,
        unlinked,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
    }))
}

/// Opens directory `path` O_PATH without following any symlink on the way.
fn open_dir(path: &Path) -> nix::Result<OwnedFd> {
    nix::fcntl::openat2(
        nix::fcntl::AT_FDCWD,
        path,
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS),
    )
}

/// statx attributes of `name` in `dir` (empty name: `dir` itself).
fn attributes(dir: &OwnedFd, name: &OsStr) -> std::io::Result<u64> {
    let c = CString::new(name.as_bytes()).map_err(std::io::Error::other)?;
    sys::statx_attributes(dir.as_fd(), &c)
}

/// What would stop [`bind_unlinked`] from binding a socket to absolute `name` again, in
/// words (`Err`): a component on the way that is not a directory or is a symlink, the
/// directory where the missing ones would be made (or the socket file) on a read-only
/// filesystem or immutable or append-only, a file that took the path since and cannot be
/// renamed aside (immutable, append-only, a mount point).
pub fn check_rebind(name: &Path) -> std::result::Result<(), String> {
    let (parent, file) = split(name).map_err(|e| e.to_string())?;
    let mut existing = parent;
    let md = loop {
        match std::fs::symlink_metadata(existing) {
            Ok(md) => break md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                existing = existing.parent().unwrap_or(Path::new("/"));
            }
            Err(e) => return Err(format!("{}: {e}", existing.display())),
        }
    };
    if !md.is_dir() {
        return Err(format!(
            "{} is not a directory (a {:?}): the name could not be bound there again",
            existing.display(),
            md.file_type()
        ));
    }
    let dir = open_dir(existing).map_err(|e| {
        format!(
            "{} cannot be reached without following a symlink: {e}",
            existing.display()
        )
    })?;
    let fs = nix::sys::statvfs::statvfs(existing)
        .map_err(|e| format!("statvfs {}: {e}", existing.display()))?;
    if fs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
        return Err(format!(
            "{} is on a read-only filesystem: no socket file can be made there",
            existing.display()
        ));
    }
    let locked = (libc::STATX_ATTR_IMMUTABLE | libc::STATX_ATTR_APPEND) as u64;
    let attrs = attributes(&dir, OsStr::new("")).map_err(|e| e.to_string())?;
    if attrs & locked != 0 {
        return Err(format!(
            "{} is immutable or append-only: no socket file can be made and removed there",
            existing.display()
        ));
    }
    if existing != parent {
        return Ok(());
    }
    match attributes(&dir, file) {
        Ok(attrs) if attrs & locked != 0 => Err("the file that took the path since is \
                                                 immutable or append-only: it could not be \
                                                 moved aside for the bind"
            .to_string()),
        Ok(attrs) if attrs & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0 => Err(
            "a mount point took the path since: it could not be moved aside for the bind"
                .to_string(),
        ),
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(format!("statx {}: {e}", name.display())),
    }
}

/// `path`'s directory ("." for a bare relative name) and file name.
fn split(path: &Path) -> Result<(&Path, &OsStr)> {
    let file = path.file_name().ok_or_else(|| UnixSockError::Path {
        step: "bind",
        path: path.into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
    })?;
    let parent = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => Path::new("/"),
    };
    Ok((parent, file))
}

/// Binds `fd` to path `name` and leaves no file for it: see the module doc. Returns its socket
/// file, open O_PATH and unlinked: peers reach the socket through it ([`reach`]).
pub fn bind_unlinked(fd: impl AsFd, name: &UnixName) -> Result<OwnedFd> {
    let fd = fd.as_fd();
    let UnixName::Path(path) = name else {
        return Err(UnixSockError::Invalid {
            step: "bind a socket whose file was unlinked",
            fd: fd.as_raw_fd(),
            detail: format!("{name} is not a path"),
        });
    };
    if path.is_absolute() {
        return place(fd, path);
    }
    // Any directory will do: the name stays the relative one. The cwd set there is that of
    // a short-lived thread with a filesystem context of its own (CLONE_FS), so no other
    // thread of the process sees it change.
    // TMPDIR first; a restored process's mount namespace may lack it (the dump's cryo
    // had it in its own), so then the usual writable places.
    let mut tried = Vec::new();
    let tmp = [
        std::env::temp_dir(),
        "/tmp".into(),
        "/dev/shm".into(),
        "/run".into(),
    ]
    .into_iter()
    .find_map(|dir| {
        let template = dir.join("cryo-unix-XXXXXX");
        nix::unistd::mkdtemp(&template)
            .inspect_err(|e| tried.push((template, *e)))
            .ok()
    });
    let Some(tmp) = tmp else {
        let (template, e) = tried.swap_remove(0);
        return Err(UnixSockError::path("mkdtemp", &template, e.into()));
    };
    let placed = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).map_err(|e| {
                    UnixSockError::fd("unshare(CLONE_FS)", fd.as_raw_fd(), e.into())
                })?;
                std::env::set_current_dir(&tmp)
                    .map_err(|e| UnixSockError::path("chdir", &tmp, e))?;
                place(fd, path)
            })
            .join()
            .unwrap_or_else(|_| {
                Err(UnixSockError::Invalid {
                    step: "bind in a private directory",
                    fd: fd.as_raw_fd(),
                    detail: "the binding thread panicked".into(),
                })
            })
    });
    if let Err(e) = std::fs::remove_dir(&tmp) {
        warn!(dir = %tmp.display(), "remove the private directory of a bind: {e}");
    }
    placed
}

/// The name that reaches a socket through `file`, its socket file open O_PATH.
pub fn reach(file: &impl AsRawFd) -> UnixName {
    UnixName::Path(PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())))
}

/// What [`place`] did that it must undo.
#[derive(Default)]
struct Undo {
    /// Directories made, outermost first.
    made: Vec<PathBuf>,
    /// The directory of the name, and the name's file there.
    dir: Option<(OwnedFd, OsString)>,
    /// The name of the other file renamed aside.
    aside: Option<OsString>,
    /// The socket file made is still there.
    ours: bool,
}

impl Undo {
    /// Unlinks the socket file made (if still there), renames the other file back, removes
    /// the directories made; the first error.
    fn run(&mut self) -> Result<()> {
        let mut first = Ok(());
        let mut keep = |r: Result<()>| {
            if first.is_ok() {
                first = r;
            } else if let Err(e) = r {
                warn!("undo a bind: {e}");
            }
        };
        if let Some((dir, file)) = &self.dir {
            if std::mem::take(&mut self.ours) {
                keep(
                    nix::unistd::unlinkat(dir, file.as_os_str(), UnlinkatFlags::NoRemoveDir)
                        .map_err(|e| UnixSockError::path("unlink the socket file", file, e.into())),
                );
            }
            if let Some(aside) = self.aside.take() {
                keep(
                    nix::fcntl::renameat2(
                        dir,
                        aside.as_os_str(),
                        dir,
                        file.as_os_str(),
                        RenameFlags::RENAME_NOREPLACE,
                    )
                    .map_err(|e| {
                        UnixSockError::path("rename the other file back", &aside, e.into())
                    }),
                );
            }
        }
        for made in std::mem::take(&mut self.made).iter().rev() {
            keep(
                nix::unistd::unlinkat(
                    nix::fcntl::AT_FDCWD,
                    made.as_path(),
                    UnlinkatFlags::RemoveDir,
                )
                .map_err(|e| UnixSockError::path("remove a directory made", made, e.into())),
            );
        }
        first
    }
}

/// How long a bind waits for the bind lock: its holders keep it for a few system calls, so
/// a longer wait means someone else holds a flock on / (any user can open it).
const BIND_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The lock every bind of a path by a restore holds (see the module doc): an exclusive flock
/// on /, released when dropped. / because every process of the restore sees it, in any mount
/// namespace, and taking it changes nothing a process can see; since any user may hold it
/// too, the wait is bounded ([`BIND_LOCK_WAIT`]): then the bind fails (the restore with it,
/// the image kept for a retry) rather than hang.
pub(crate) fn bind_lock() -> Result<nix::fcntl::Flock<std::fs::File>> {
    let mut root = std::fs::File::open("/").map_err(|e| UnixSockError::path("open", "/", e))?;
    let deadline = std::time::Instant::now() + BIND_LOCK_WAIT;
    let mut pause = std::time::Duration::from_micros(50);
    loop {
        match nix::fcntl::Flock::lock(root, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((back, Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                root = back;
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(20));
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(UnixSockError::path(
                    "flock (the bind lock)",
                    "/",
                    std::io::Error::other(format!(
                        "held by another process for {} s (a flock on / outside cryo?)",
                        BIND_LOCK_WAIT.as_secs()
                    )),
                ))
            }
            Err((_, e)) => return Err(UnixSockError::path("flock (the bind lock)", "/", e.into())),
        }
    }
}

/// Binds `fd` to `path` (relative: to the cwd) and unlinks the file made: see the module
/// doc.
fn place(fd: std::os::fd::BorrowedFd<'_>, path: &Path) -> Result<OwnedFd> {
    let _lock = bind_lock()?;
    let mut undo = Undo::default();
    let placed = place_steps(fd, path, &mut undo);
    let undone = undo.run();
    match (placed, undone) {
        (Ok(file), Ok(())) => Ok(file),
        (Ok(_), Err(e)) => Err(e),
        (Err(e), undone) => {
            if let Err(u) = undone {
                warn!(path = %path.display(), "undo a failed bind: {u}");
            }
            Err(e)
        }
    }
}

fn place_steps(fd: std::os::fd::BorrowedFd<'_>, path: &Path, undo: &mut Undo) -> Result<OwnedFd> {
    let (parent, file) = split(path)?;
    let mut missing: Vec<&Path> = parent
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && *a != Path::new("/"))
        .collect();
    missing.reverse();
    for a in missing {
        match open_dir(a) {
            Ok(_) => {}
            Err(Errno::ENOENT) => {
                nix::sys::stat::mkdirat(
                    nix::fcntl::AT_FDCWD,
                    a,
                    nix::sys::stat::Mode::from_bits_truncate(0o700),
                )
                .map_err(|e| UnixSockError::path("make a directory removed since", a, e.into()))?;
                undo.made.push(a.to_path_buf());
            }
            Err(e) => {
                return Err(UnixSockError::path(
                    "open a directory (no symlinks)",
                    a,
                    e.into(),
                ))
            }
        }
    }
    let dir = open_dir(parent)
        .map_err(|e| UnixSockError::path("open the directory (no symlinks)", parent, e.into()))?;
    let kept = dir
        .try_clone()
        .map_err(|e| UnixSockError::path("dup the directory fd", parent, e))?;
    undo.dir = Some((kept, file.to_os_string()));
    let dir = &dir;
    match nix::sys::stat::fstatat(dir, file, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(_) => {
            let mut n = 0u32;
            loop {
                let mut aside = OsString::from(".");
                aside.push(file);
                aside.push(format!(".cryo-{}-{n}", std::process::id()));
                match nix::fcntl::renameat2(
                    dir,
                    file,
                    dir,
                    aside.as_os_str(),
                    RenameFlags::RENAME_NOREPLACE,
                ) {
                    Ok(()) => {
                        debug!(path = %path.display(), aside = ?aside, "the file at the name moved aside for the bind");
                        undo.aside = Some(aside);
                        break;
                    }
                    Err(Errno::EEXIST) if n < 100 => n += 1,
                    Err(e) => {
                        return Err(UnixSockError::path(
                            "move aside the file that took the path",
                            path,
                            e.into(),
                        ))
                    }
                }
            }
        }
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(UnixSockError::path("stat", path, e.into())),
    }
    sys::bind(fd, path.as_os_str().as_bytes()).map_err(|e| UnixSockError::path("bind", path, e))?;
    undo.ours = true;
    crate::restore::bound_in(fd, dir, file, path)?;
    let sock_file = nix::fcntl::openat(
        dir,
        file,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| UnixSockError::path("open the socket file made", path, e.into()))?;
    nix::unistd::unlinkat(dir, file, UnlinkatFlags::NoRemoveDir)
        .map_err(|e| UnixSockError::path("unlink the socket file made", path, e.into()))?;
    undo.ours = false;
    Ok(sock_file)
}
