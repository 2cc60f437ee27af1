//! Descriptions a restore takes from fds of its caller instead of making them (CRIU's
//! `--inherit-fd fd[N]:RESOURCE`): an object the dumped processes shared with a process
//! outside the dump (`producer | app`, `app | logger`, a container's stdio pipes) comes back
//! connected to what the caller hands over, not as a private copy.
//!
//! ```text
//!   RESOURCE          the dumped description it names   restored as
//!   pipe:[INODE]      the end of that anonymous pipe    a duplicate of N (N's description),
//!                     the image held                    its O_NONBLOCK, O_DIRECT, O_ASYNC
//!                                                       set as dumped; the dumped queue is
//!                                                       not written back: the pipe's queue
//!                                                       (and capacity) is N's, live
//!   PATH (tmp/log,    the regular file at /PATH         a duplicate of N, its offset N's; its
//!   as CRIU: from /)                                    O_APPEND, O_NONBLOCK... as dumped
//! ```
//!
//! Checked before anything is made ([`resolve`]): N open in cryo; the resource names exactly
//! one description held by an fd of the image (a pipe both of whose ends the image held, or
//! a file open twice, is refused: one fd given cannot stand for two descriptions); N is of
//! the kind the resource needs (a pipe or FIFO for a pipe) and has the dumped description's
//! access mode. CRIU reopens a pipe given through /proc/self/fd/N with each end's mode
//! instead, which gives the process O_LARGEFILE and takes both ends; a duplicate shows the
//! flags the process had. The matched descriptions are not validated against this machine
//! (their file is N's), and are opened by the processes of the tree from a slot fd holding
//! N (restore/plan.rs), or by cryo itself for two trees (place.rs `open_in_cryo`). The
//! description's signal owner and locks are set again on it as on any other.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use cryo_proto::image::{file_desc::Kind, FdEntry, FileDesc};
use nix::fcntl::FcntlArg;
use nix::sys::stat::SFlag;

use super::error::restore_err;
use super::FileError;
use crate::sys;

/// One `--inherit-fd fd[N]:RESOURCE`: fd `fd` of `cryo restore` stands for `resource`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InheritFd {
    /// N: an fd open in `cryo restore` (its caller's).
    pub fd: RawFd,
    /// What it stands for.
    pub resource: Resource,
}

/// What an `--inherit-fd` names, as the dumped fd's link read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// `pipe:[INODE]`: an anonymous pipe.
    Pipe(u64),
    /// A regular file by its path, absolute (CRIU's form, relative to /, is made absolute).
    Path(String),
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pipe(ino) => write!(f, "pipe:[{ino}]"),
            Self::Path(path) => f.write_str(path),
        }
    }
}

impl std::fmt::Display for InheritFd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fd[{}]:{}", self.fd, self.resource)
    }
}

/// Parses CRIU's `fd[N]:RESOURCE`. A socket (`socket:[INODE]`), a terminal (`tty[...]`) or
/// CRIU's `file[MNT:INODE]` is refused: cryo takes anonymous pipes and regular files by path.
pub fn parse_inherit_fd(text: &str) -> Result<InheritFd, String> {
    let bad = || format!("{text}: not fd[N]:RESOURCE (RESOURCE: pipe:[INODE] or a file path)");
    let rest = text.strip_prefix("fd[").ok_or_else(bad)?;
    let (n, resource) = rest.split_once("]:").ok_or_else(bad)?;
    let fd: RawFd = n.parse().ok().filter(|&n| n >= 0).ok_or_else(bad)?;
    if resource.is_empty() {
        return Err(bad());
    }
    let unsupported = |kind: &str| {
        format!(
            "{text}: {kind} resources are not supported by cryo's --inherit-fd: pipe:[INODE] \
             (an anonymous pipe) and a regular file's path are"
        )
    };
    if let Some(ino) = resource
        .strip_prefix("pipe:[")
        .and_then(|r| r.strip_suffix(']'))
    {
        let ino = ino.parse().map_err(|_| bad())?;
        return Ok(InheritFd {
            fd,
            resource: Resource::Pipe(ino),
        });
    }
    for (prefix, kind) in [
        ("socket:[", "socket"),
        ("tty[", "terminal"),
        ("file[", "file[MNT:INODE]"),
        ("anon_inode:", "anonymous inode"),
        ("pipe:", "pipe"),
    ] {
        if resource.starts_with(prefix) {
            return Err(unsupported(kind));
        }
    }
    let path = format!("/{}", resource.trim_start_matches('/'));
    Ok(InheritFd {
        fd,
        resource: Resource::Path(path),
    })
}

/// The access mode bits of open(2) flags.
const ACCMODE: u32 = libc::O_ACCMODE as u32;

/// The descriptions of an image that `--inherit-fd` fds stand for: description id -> index
/// of its `--inherit-fd`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Given {
    by_id: BTreeMap<u32, usize>,
    /// The fds of cryo given, by index.
    fds: Vec<RawFd>,
}

impl Given {
    /// Whether description `id` is taken from an inherited fd.
    pub(crate) fn contains(&self, id: u32) -> bool {
        self.by_id.contains_key(&id)
    }

    /// The descriptions taken, in id order.
    #[cfg(test)]
    pub(crate) fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_id.keys().copied()
    }

    /// Description id -> index of its fd in `fds`, for tests of what uses it.
    #[cfg(test)]
    pub(crate) fn for_tests(by_id: &[(u32, usize)], fds: &[RawFd]) -> Self {
        Self {
            by_id: by_id.iter().copied().collect(),
            fds: fds.to_vec(),
        }
    }

    /// cryo's fds given (N of each `--inherit-fd`), in order.
    pub(crate) fn fds(&self) -> &[RawFd] {
        &self.fds
    }

    /// For [`FdRestoreOptions::given`](super::FdRestoreOptions): each description, from the
    /// fd number `at(index)` the process holds the index-th inherited fd at.
    pub(crate) fn at(&self, at: impl Fn(usize) -> RawFd) -> HashMap<u32, RawFd> {
        self.by_id.iter().map(|(&id, &k)| (id, at(k))).collect()
    }
}

/// Why `--inherit-fd` `arg` cannot be used.
fn refused(arg: &InheritFd, detail: impl Into<String>) -> FileError {
    FileError::InheritFd {
        arg: arg.to_string(),
        detail: detail.into(),
    }
}

/// The (pid, fd) that hold each description, from every process's fds.
fn holders(tasks: &[(i32, &[FdEntry])]) -> HashMap<u32, Vec<(i32, RawFd)>> {
    let mut by_id: HashMap<u32, Vec<(i32, RawFd)>> = HashMap::new();
    for &(pid, fds) in tasks {
        for e in fds {
            by_id.entry(e.file_id).or_default().push((pid, e.fd));
        }
    }
    by_id
}

/// `pid P fd F, pid Q fd G`.
fn named(held: &[(i32, RawFd)]) -> String {
    let names: Vec<String> = held.iter().map(|(p, f)| format!("pid {p} fd {f}")).collect();
    names.join(", ")
}

/// Matches every `--inherit-fd` of `list` with the descriptions of the image (`descs`, held
/// by the fds of `tasks`: (pid, fds) each), checking each fd given against what it stands
/// for. Nothing is opened or changed.
pub(crate) fn resolve(
    list: &[InheritFd],
    descs: &[FileDesc],
    tasks: &[(i32, &[FdEntry])],
) -> Result<Given, FileError> {
    let mut given = Given::default();
    if list.is_empty() {
        return Ok(given);
    }
    let held = holders(tasks);
    for (k, arg) in list.iter().enumerate() {
        if let Some(earlier) = list[..k].iter().find(|a| a.resource == arg.resource) {
            return Err(refused(
                arg,
                format!("{} is given twice (also fd {})", arg.resource, earlier.fd),
            ));
        }
        let fd = sys::fd::borrow_raw(arg.fd);
        let access = nix::fcntl::fcntl(fd, FcntlArg::F_GETFL).map_err(|e| {
            refused(
                arg,
                format!("fd {} is not open in cryo restore ({e}): open it in the caller (e.g. `{}<>FILE`, or a pipe end)", arg.fd, arg.fd),
            )
        })? & libc::O_ACCMODE;
        let st = nix::sys::stat::fstat(fd)
            .map_err(|e| refused(arg, format!("fstat of fd {}: {e}", arg.fd)))?;
        let file_type = SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT);
        let matched: Vec<&FileDesc> = descs
            .iter()
            .filter(|d| held.contains_key(&d.id) && names(d, &arg.resource))
            .collect();
        if matched.is_empty() {
            return Err(refused(
                arg,
                format!(
                    "no fd of the image's processes was on {}{}",
                    arg.resource,
                    candidates(descs, &held, &arg.resource)
                ),
            ));
        }
        if let [a, b, ..] = matched[..] {
            let what = match arg.resource {
                Resource::Pipe(_) if a.flags & ACCMODE != b.flags & ACCMODE => {
                    "both ends of the pipe were in the image"
                }
                _ => "it was open in several descriptions",
            };
            return Err(refused(
                arg,
                format!(
                    "{what} ({}; {}): one fd given stands for one description (their flags, \
                     and a file's offset, are apart)",
                    named(&held[&a.id]),
                    named(&held[&b.id])
                ),
            ));
        }
        let d = matched[0];
        match arg.resource {
            Resource::Pipe(_) if file_type != SFlag::S_IFIFO => {
                return Err(refused(
                    arg,
                    format!(
                        "{} ({}) was an anonymous pipe; fd {} is a {}, not a pipe",
                        arg.resource,
                        named(&held[&d.id]),
                        arg.fd,
                        type_name(file_type)
                    ),
                ));
            }
            Resource::Path(_) if d.flags & libc::O_PATH as u32 != 0 => {
                return Err(refused(
                    arg,
                    format!(
                        "{} held {} as an O_PATH fd, which no fd given can stand for",
                        named(&held[&d.id]),
                        arg.resource
                    ),
                ));
            }
            _ => {}
        }
        let wanted = d.flags as i32 & libc::O_ACCMODE;
        if wanted != access {
            let mode = |m: i32| match m {
                libc::O_RDONLY => "read-only",
                libc::O_WRONLY => "write-only",
                _ => "read-write",
            };
            let why = match wanted {
                libc::O_RDONLY => "it read from it",
                libc::O_WRONLY => "it wrote to it",
                _ => "it read and wrote",
            };
            return Err(refused(
                arg,
                format!(
                    "{} had {} open {} ({why}), and fd {} is open {}: the fd given must be \
                     the same end, with the same access",
                    named(&held[&d.id]),
                    arg.resource,
                    mode(wanted),
                    arg.fd,
                    mode(access)
                ),
            ));
        }
        given.by_id.insert(d.id, k);
        given.fds.push(arg.fd);
    }
    Ok(given)
}

/// Whether description `d` is what `resource` names.
fn names(d: &FileDesc, resource: &Resource) -> bool {
    match (&d.kind, resource) {
        (Some(Kind::Pipe(p)), Resource::Pipe(ino)) => p.fifo_path.is_empty() && p.ino == *ino,
        (Some(Kind::Regular(f)), Resource::Path(path)) => f.path == *path,
        _ => false,
    }
}

/// `: the image's anonymous pipes are pipe:[A] (pid P fd F), ...`, or for a path, what
/// else it is if a description of another kind has it: a hint for a resource that matched
/// nothing.
fn candidates(
    descs: &[FileDesc],
    held: &HashMap<u32, Vec<(i32, RawFd)>>,
    resource: &Resource,
) -> String {
    match resource {
        Resource::Pipe(_) => {
            let pipes: Vec<String> = descs
                .iter()
                .filter_map(|d| match &d.kind {
                    Some(Kind::Pipe(p)) if p.fifo_path.is_empty() => {
                        Some(format!("pipe:[{}] ({})", p.ino, named(held.get(&d.id)?)))
                    }
                    _ => None,
                })
                .collect();
            if pipes.is_empty() {
                " (the image holds no anonymous pipe)".into()
            } else {
                format!(" (its anonymous pipes: {})", pipes.join(", "))
            }
        }
        Resource::Path(path) => {
            let other = descs.iter().find(|d| {
                held.contains_key(&d.id) && super::registry::describe(d).contains(path.as_str())
            });
            match other {
                Some(d) => format!(
                    " as a regular file ({} held {}, which --inherit-fd does not take)",
                    named(&held[&d.id]),
                    super::registry::describe(d)
                ),
                None => " (paths are as the dump saw them, e.g. tmp/log for /tmp/log)".into(),
            }
        }
    }
}

fn type_name(t: SFlag) -> &'static str {
    match t {
        SFlag::S_IFREG => "regular file",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFBLK => "block device",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFLNK => "symbolic link",
        _ => "file of unknown type",
    }
}


/// Flags F_SETFL sets on the description given as dumped.
const SETFL: u32 =
    (libc::O_APPEND | libc::O_NONBLOCK | libc::O_ASYNC | libc::O_DIRECT | libc::O_NOATIME) as u32;

/// Opens description `desc` from the inherited fd at `from` (in this process): a duplicate,
/// its F_SETFL flags set as dumped (on the description given, which the caller shares).
pub(crate) fn open(desc: &FileDesc, from: RawFd) -> Result<OwnedFd, FileError> {
    let fd = sys::fd::dup_at_least(sys::fd::borrow_raw(from), 0)
        .map_err(|e| restore_err(desc, format!("dup inherited fd {from}"), e))?;
    super::open::set_status_flags(desc, &fd, SETFL)?;
    tracing::debug!(id = desc.id, from, fd = fd.as_raw_fd(), "description taken from an inherited fd");
    Ok(fd)
}

/// Releases cryo's fds of `list` once the restore is over: closed, or for 0, 1 and 2 made
/// /dev/null (what cryo prints must not land in a file opened there later).
pub(crate) fn release(list: &[InheritFd]) {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null");
    for given in list {
        match &null {
            Ok(null) if given.fd <= 2 => {
                let _ = sys::fd::dup_to(std::os::fd::AsFd::as_fd(null), given.fd, false);
            }
            _ => {
                let _ = nix::unistd::close(given.fd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherit_fds_read_as_criu_writes_them() {
        let pipe = parse_inherit_fd("fd[3]:pipe:[12345]").unwrap();
        assert_eq!(
            pipe,
            InheritFd {
                fd: 3,
                resource: Resource::Pipe(12345)
            }
        );
        assert_eq!(pipe.to_string(), "fd[3]:pipe:[12345]");
        assert_eq!(
            parse_inherit_fd("fd[0]:tmp/log").unwrap().resource,
            Resource::Path("/tmp/log".into())
        );
        assert_eq!(
            parse_inherit_fd("fd[0]:/tmp/log").unwrap().resource,
            Resource::Path("/tmp/log".into())
        );
        for bad in ["fd[]:pipe:[1]", "fd[-1]:x", "fd[3]", "fd[3]:", "3:pipe:[1]", "fd[3]:pipe:[x]"] {
            assert!(parse_inherit_fd(bad).is_err(), "{bad:?} accepted");
        }
        for kind in ["socket:[9]", "tty[88:0]", "file[12:34]"] {
            let err = parse_inherit_fd(&format!("fd[3]:{kind}")).unwrap_err();
            assert!(err.contains("not supported"), "{err}");
        }
    }

    fn pipe_end(id: u32, ino: u64, flags: i32) -> FileDesc {
        FileDesc {
            id,
            flags: flags as u32,
            kind: Some(Kind::Pipe(cryo_proto::image::Pipe {
                ino,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn a_pipe_resource_takes_the_end_held_with_the_same_access_and_refuses_the_rest() {
        let (rd, wr) = nix::unistd::pipe().unwrap();
        let descs = [
            pipe_end(1, 7, libc::O_RDONLY),
            pipe_end(2, 7, libc::O_WRONLY),
            pipe_end(3, 8, libc::O_RDONLY),
            pipe_end(4, 9, libc::O_WRONLY),
        ];
        let entry = |fd, file_id| FdEntry {
            fd,
            file_id,
            cloexec: false,
        };
        let fds = [entry(0, 1), entry(5, 2), entry(6, 4)];
        let tasks = [(100, &fds[..])];
        let arg = |fd: RawFd, ino: u64| InheritFd {
            fd,
            resource: Resource::Pipe(ino),
        };
        let refusal = |fd: RawFd, ino: u64| {
            resolve(&[arg(fd, ino)], &descs, &tasks)
                .unwrap_err()
                .to_string()
        };
        let given = resolve(&[arg(wr.as_raw_fd(), 9)], &descs, &tasks).unwrap();
        assert_eq!(given.ids().collect::<Vec<_>>(), vec![4]);
        assert_eq!(given.fds(), &[wr.as_raw_fd()]);
        let err = refusal(rd.as_raw_fd(), 9);
        assert!(
            err.contains("pid 100 fd 6 had pipe:[9] open write-only (it wrote to it)")
                && err.contains("is open read-only"),
            "{err}"
        );
        let err = refusal(rd.as_raw_fd(), 7);
        assert!(err.contains("both ends") && err.contains("pid 100 fd 5"), "{err}");
        // Not held by any fd: pipe 8; no such pipe: 10.
        for ino in [8, 10] {
            let err = refusal(wr.as_raw_fd(), ino);
            assert!(
                err.contains(&format!("pipe:[{ino}]")) && err.contains("pipe:[7] (pid 100 fd 0)"),
                "{err}"
            );
        }
        // Far above any fd a test thread opens.
        let err = refusal(987_654, 9);
        assert!(err.contains("fd 987654 is not open"), "{err}");
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let err = refusal(file.as_raw_fd(), 9);
        assert!(
            err.contains("is a regular file, not a pipe") && err.contains("pid 100 fd 6"),
            "{err}"
        );
        let twice = resolve(&[arg(wr.as_raw_fd(), 9), arg(rd.as_raw_fd(), 9)], &descs, &tasks);
        assert!(twice.unwrap_err().to_string().contains("given twice"));
    }
}
