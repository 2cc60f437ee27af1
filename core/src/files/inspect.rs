//! Reading one fd of a task from outside: its link, its fdinfo and its inode.

use std::fs;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::unistd::Pid;

use super::FileError;

/// The identity of an inode: device and inode number (`st_dev`, `st_ino`). Open file
/// descriptions of one inode are told apart with kcmp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeKey {
    /// `st_dev` of the inode.
    pub dev: u64,
    /// `st_ino` of the inode.
    pub ino: u64,
}

impl InodeKey {
    /// The key of a stat result.
    pub fn of(meta: &fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// The open fds of `pid`, sorted.
pub(crate) fn list_fds(pid: Pid) -> Result<Vec<RawFd>, FileError> {
    let dir = format!("/proc/{pid}/fd");
    let list = |e| FileError::ListFds { pid, source: e };
    let mut fds = Vec::new();
    for entry in fs::read_dir(&dir).map_err(list)? {
        let entry = entry.map_err(list)?;
        if let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
            fds.push(fd);
        }
    }
    fds.sort_unstable();
    Ok(fds)
}

/// What the kernel says about one fd of a task.
#[derive(Debug)]
pub(crate) struct OpenFd {
    pub pid: Pid,
    pub fd: RawFd,
    /// readlink of /proc/PID/fd/N.
    pub link: String,
    /// `flags:` of fdinfo, without O_CLOEXEC.
    pub flags: u32,
    /// O_CLOEXEC was in `flags:` (FD_CLOEXEC is set on the fd).
    pub cloexec: bool,
    /// `pos:` of fdinfo.
    pub pos: u64,
    /// `mnt_id:` of fdinfo: the mount the description was opened through (0: not shown).
    pub mnt_id: u64,
    /// The `lock:` lines of fdinfo (locks.rs).
    pub locks: Vec<super::locks::HeldLock>,
}

impl OpenFd {
    /// Reads the link and fdinfo of fd `fd` of `pid`.
    pub(super) fn read(pid: Pid, fd: RawFd) -> Result<Self, FileError> {
        let link_path = proc_fd(pid, fd);
        let link = fs::read_link(&link_path).map_err(|e| FileError::Inspect {
            pid,
            fd,
            op: "readlink",
            path: link_path.clone(),
            source: e,
        })?;
        let link = link
            .into_os_string()
            .into_string()
            .map_err(|raw| FileError::Dump {
                pid,
                fd,
                detail: format!("path {raw:?} is not valid UTF-8 (not supported)"),
            })?;
        Self::with_link(pid, fd, link)
    }

    /// Reads the fdinfo of fd `fd` of `pid`, whose link is known already (a socket found by
    /// the socket pass: its link is `socket:[INO]`).
    pub(super) fn with_link(pid: Pid, fd: RawFd, link: String) -> Result<Self, FileError> {
        let info_path = PathBuf::from(format!("/proc/{pid}/fdinfo/{fd}"));
        let text = read_proc_text(&info_path).map_err(|e| FileError::Inspect {
            pid,
            fd,
            op: "read",
            path: info_path.clone(),
            source: e,
        })?;
        let (raw_flags, pos, mnt_id) = parse_fdinfo(&text).ok_or_else(|| FileError::Dump {
            pid,
            fd,
            detail: format!("cannot parse {}: {text:?}", info_path.display()),
        })?;
        let cloexec = raw_flags & libc::O_CLOEXEC as u32 != 0;
        let mut open = Self {
            pid,
            fd,
            link,
            flags: raw_flags & !(libc::O_CLOEXEC as u32),
            cloexec,
            pos,
            mnt_id,
            locks: Vec::new(),
        };
        open.locks = super::locks::from_fdinfo(&open, &text)?;
        Ok(open)
    }

    /// /proc/PID/fd/N.
    pub(crate) fn proc_path(&self) -> PathBuf {
        proc_fd(self.pid, self.fd)
    }

    /// Refuses `what` (a removed object a restore makes again by its name: a directory, a
    /// FIFO, a node) when the fd's mount is read-only: the restore could not make it there.
    pub(crate) fn refuse_on_read_only_mount(&self, what: &str) -> Result<(), FileError> {
        if !crate::sys::mount::on_read_only_mount(&self.proc_path()) {
            return Ok(());
        }
        Err(self.refuse(
            format!(
                "{what} on a read-only mount: a restore makes it again by its name, which the \
                 mount does not allow"
            ),
            false,
        ))
    }

    /// stat of the file behind the fd (the magic link is followed).
    pub(super) fn stat(&self) -> Result<fs::Metadata, FileError> {
        let path = self.proc_path();
        fs::metadata(&path).map_err(|e| self.inspect_err("stat", path, e))
    }

    /// An [`FileError::Inspect`] for this fd.
    pub(crate) fn inspect_err(&self, op: &'static str, path: PathBuf, e: io::Error) -> FileError {
        FileError::Inspect {
            pid: self.pid,
            fd: self.fd,
            op,
            path,
            source: e,
        }
    }

    /// A [`FileError::Dump`] for this fd.
    pub(crate) fn dump_err(&self, detail: impl Into<String>) -> FileError {
        FileError::Dump {
            pid: self.pid,
            fd: self.fd,
            detail: detail.into(),
        }
    }

    /// A refusal of this fd: `kind` is not supported (yet, if `yet`).
    pub(crate) fn refuse(&self, kind: impl Into<String>, yet: bool) -> FileError {
        let (pid, fd, kind, link) = (self.pid, self.fd, kind.into(), self.link.clone());
        if yet {
            FileError::NotYet {
                pid,
                fd,
                kind,
                link,
            }
        } else {
            FileError::Unsupported {
                pid,
                fd,
                kind,
                link,
            }
        }
    }
}

/// The text of a small /proc file: open, read until the end, close. (`fs::read_to_string`
/// also stats and seeks the file to size its buffer, which a /proc file answers with 0:
/// two wasted calls per fd of the task.)
fn read_proc_text(path: &std::path::Path) -> io::Result<String> {
    use std::io::Read;
    let mut file = fs::File::open(path)?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                // A seq_file read returns all it has up to the size asked: a short read is
                // the end, and the read that would say so is saved (one syscall per fd).
                if n < chunk.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// /proc/PID/fd/N.
pub(crate) fn proc_fd(pid: Pid, fd: RawFd) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/fd/{fd}"))
}

/// `flags:` (octal) and `pos:` (decimal) of an fdinfo text.
pub(super) fn parse_fdinfo(text: &str) -> Option<(u32, u64, u64)> {
    let mut flags = None;
    let mut pos = None;
    let mut mnt_id = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key {
            "flags" => flags = u32::from_str_radix(value.trim(), 8).ok(),
            "pos" => pos = value.trim().parse().ok(),
            "mnt_id" => mnt_id = value.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    Some((flags?, pos?, mnt_id))
}

/// What the link text of an fd says it is, before any stat.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Link<'a> {
    /// `socket:[INO]`.
    Socket,
    /// `pipe:[INO]`.
    Pipe(u64),
    /// `anon_inode:[KIND]` or `anon_inode:KIND`: the kind, as users know it.
    AnonInode(String),
    /// `/memfd:NAME (deleted)`.
    Memfd,
    /// An absolute path (maybe with " (deleted)").
    Path(&'a str),
    /// Anything else (`net:[...]` and other nsfs links, ...): the part before the colon.
    Other(&'a str),
}

impl<'a> Link<'a> {
    /// Classifies a link text.
    pub(super) fn parse(link: &'a str) -> Self {
        if link.starts_with("socket:[") {
            return Self::Socket;
        }
        if let Some(ino) = link
            .strip_prefix("pipe:[")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|n| n.parse().ok())
        {
            return Self::Pipe(ino);
        }
        if let Some(rest) = link.strip_prefix("anon_inode:") {
            let name = rest.trim_start_matches('[').trim_end_matches(']');
            let kind = match name {
                "eventpoll" => "epoll",
                "" => "anonymous inode",
                other => other,
            };
            return Self::AnonInode(kind.to_string());
        }
        if link.starts_with("/memfd:") {
            return Self::Memfd;
        }
        if link.starts_with('/') {
            return Self::Path(link);
        }
        match link.split_once(':') {
            Some((kind, _)) if !kind.is_empty() => Self::Other(kind),
            _ => Self::Other(link),
        }
    }
}

/// The whole fdinfo text of the fd.
pub(super) fn fdinfo(open: &OpenFd) -> Result<String, FileError> {
    let path = PathBuf::from(format!("/proc/{}/fdinfo/{}", open.pid, open.fd));
    fs::read_to_string(&path).map_err(|e| open.inspect_err("read", path, e))
}

/// The value of the `key:` line of an fdinfo text, trimmed.
pub(super) fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then_some(v.trim())
    })
}

/// A required `key:` of the fdinfo, parsed by `parse`.
pub(super) fn required<T>(
    open: &OpenFd,
    text: &str,
    key: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, FileError> {
    field(text, key)
        .and_then(parse)
        .ok_or_else(|| open.dump_err(format!("fdinfo has no valid `{key}:` line: {text:?}")))
}

/// Splits a link text of a path into the path and whether the kernel marked it deleted,
/// using the inode to decide: a file whose real name ends in " (deleted)" is not deleted.
pub(super) fn resolve_deleted(link: &str, meta: &fs::Metadata) -> (String, bool) {
    let Some(stripped) = link.strip_suffix(" (deleted)") else {
        return (link.to_string(), meta.nlink() == 0);
    };
    if meta.nlink() > 0 {
        if let Ok(at_link) = fs::metadata(link) {
            if InodeKey::of(&at_link) == InodeKey::of(meta) {
                return (link.to_string(), false);
            }
        }
    }
    (stripped.to_string(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_is_parsed() {
        let text = "pos:\t12\nflags:\t02102001\nmnt_id:\t25\nino:\t1234\n";
        assert_eq!(parse_fdinfo(text), Some((0o2102001, 12, 25)));
        assert_eq!(parse_fdinfo("pos:\t1\n"), None);
    }

    #[test]
    fn fdinfo_fields_are_found() {
        let text = "pos:\t0\nflags:\t04002\neventfd-count:                5\neventfd-id: 1\n\
                    eventfd-semaphore: 1\n";
        assert_eq!(field(text, "eventfd-count"), Some("5"));
        assert_eq!(field(text, "eventfd-semaphore"), Some("1"));
        assert_eq!(field(text, "sigmask"), None);
    }

    #[test]
    fn links_are_classified() {
        assert_eq!(Link::parse("socket:[123]"), Link::Socket);
        assert_eq!(Link::parse("pipe:[99]"), Link::Pipe(99));
        assert_eq!(
            Link::parse("anon_inode:[io_uring]"),
            Link::AnonInode("io_uring".into())
        );
        assert_eq!(
            Link::parse("anon_inode:inotify"),
            Link::AnonInode("inotify".into())
        );
        assert_eq!(
            Link::parse("anon_inode:[eventpoll]"),
            Link::AnonInode("epoll".into())
        );
        assert_eq!(Link::parse("/memfd:x (deleted)"), Link::Memfd);
        assert_eq!(Link::parse("/tmp/a"), Link::Path("/tmp/a"));
        assert_eq!(Link::parse("net:[4026531840]"), Link::Other("net"));
    }
}
