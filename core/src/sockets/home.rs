//! Sockets made in another network namespace than their holder's: made before the holder
//! changed namespace (unshare, setns), or inherited from a process in another (zdtm
//! netns_sub). The namespace decides what the socket reaches (an abstract unix name, a port,
//! an interface), so it comes back made in the same one, as CRIU does.
//!
//! ```text
//! dump     per socket fd: SO_NETNS_COOKIE differs from the task's namespace's
//!            -> SIOCGSKNS: an fd of the socket's namespace (its inode), where the socket is
//!               identified and captured (sock_diag, /proc/thread-self/net answer for the
//!               asker's namespace)
//!            refused: a TCP connection, a connect in progress, a connection closed but held
//!            (the network lock holds its holder's namespace)
//!          across the dump (place): the namespace must be the one the dump ran in (cryo's),
//!          or the namespace of a dumped process that is an ancestor (or itself) of every
//!          holder of the socket; a unix socket's peer in the same one; else refused
//!          -> Socket.netns_inode (+ netns_outer for cryo's)
//! restore  in each process before its fds (Homes::open): an fd of its own namespace
//!          (SIOCGSKNS of a fresh socket), of each ancestor's namespace a socket of the image
//!          is made in (/proc/ANCESTOR/ns/net, the ancestor found by the parent pids), of the
//!          roots' namespace (where cryo's comes back); the maker of a socket of another
//!          namespace switches there (setns) while it makes it (socket, bind, listen,
//!          connect, options, the queue of a unix group), and back
//! ```

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use cryo_proto::image::{file_desc::Kind, FileDesc, Socket};
use nix::sched::CloneFlags;
use nix::unistd::Pid;

use super::{Found, SocketError};
use crate::files::FileError;
use crate::sys;

/// The network namespace a socket of a task was made in, not the task's: an fd of it
/// (SIOCGSKNS) and its inode.
#[derive(Debug)]
pub(crate) struct Foreign {
    /// The namespace's inode.
    pub inode: u64,
    handle: OwnedFd,
}

impl Foreign {
    /// The namespace of socket `dup` (fd `fd` of `pid`).
    pub(super) fn of(pid: Pid, fd: RawFd, dup: BorrowedFd<'_>) -> Result<Self, SocketError> {
        let err = |step| {
            move |source| SocketError::Sys {
                pid,
                fd,
                step,
                source,
            }
        };
        let handle =
            sys::sockopt::netns_of(dup).map_err(err("ioctl SIOCGSKNS (its network namespace)"))?;
        let inode = nix::sys::stat::fstat(handle.as_fd())
            .map_err(|e| err("fstat its network namespace")(e.into()))?
            .st_ino;
        Ok(Foreign { inode, handle })
    }

    /// Runs `f` on a short-lived thread in the namespace (socket fd `fd` of `pid`'s).
    pub(super) fn run_in<T: Send>(
        &self,
        pid: Pid,
        fd: RawFd,
        f: impl FnOnce() -> T + Send,
    ) -> Result<T, SocketError> {
        sys::ns::run_in(self.handle.as_fd(), CloneFlags::CLONE_NEWNET, f).map_err(|source| {
            SocketError::Sys {
                pid,
                fd,
                step: "setns (the network namespace the socket was made in)",
                source,
            }
        })
    }

    /// Refuses what of a socket of this namespace is not made again there: a TCP connection
    /// (held in repair mode under the network lock of its holder's namespace), a connect in
    /// progress, a connection closed but held.
    pub(super) fn refuse_kind(
        &self,
        pid: Pid,
        fd: RawFd,
        ino: u64,
        kind: &Found,
    ) -> Result<(), SocketError> {
        let what = match kind {
            Found::Connection(local, remote) | Found::ClosedConnection(local, remote, _) => {
                format!("TCP connection {local} -> {remote}")
            }
            Found::Connecting(local, remote) => {
                format!("TCP connect {local} -> {remote} in progress")
            }
            _ => return Ok(()),
        };
        Err(SocketError::ForeignNamespace {
            pid,
            fd,
            ino,
            netns: self.inode,
            what: format!(
                "{what}: not restored (a connection of another namespace than its process's \
                 is not captured: the network lock holds its process's)"
            ),
        })
    }
}

/// A dumped process as [`place`] sees it: pid, the pid of the process that forks it at restore,
/// its network namespace's inode (None: cryo's), its fds (fd, description id).
pub(crate) struct Holder<'a> {
    pub pid: i32,
    pub forker: i32,
    pub netns: Option<u64>,
    pub fds: &'a [cryo_proto::image::FdEntry],
}

/// The nearest of `pid` and its ancestors (by `forker`) whose namespace is `ns` (None:
/// cryo's): how many generations up (0: itself).
fn generations_to(holders: &[Holder<'_>], pid: i32, ns: Option<u64>) -> Option<usize> {
    let by_pid: HashMap<i32, &Holder<'_>> = holders.iter().map(|h| (h.pid, h)).collect();
    let mut at = pid;
    for g in 0..=holders.len() {
        let h = by_pid.get(&at)?;
        if h.netns == ns {
            return Some(g);
        }
        at = h.forker;
    }
    None
}

/// Where a socket of the dump was made, not in its holder's namespace: (socket inode,
/// namespace inode, whether that is cryo's).
pub(crate) type Placed = Vec<(u64, u64, bool)>;

/// Across the dump, once every task's sockets and namespaces are read: each socket made in
/// another network namespace than its holder's (`homes`: socket inode -> (a holder's pid and
/// fd, that namespace's inode)) is placed there ([`apply`] writes it in its record), or
/// refused: the namespace must be cryo's (`cryo_netns`: its inode; the restore makes it in the
/// roots'), or a dumped process's that is an ancestor (or itself) of every process holding the
/// socket (its maker at restore runs below it); a connected unix socket's peer in the same one.
pub(crate) fn place(
    descs: &[FileDesc],
    holders: &[Holder<'_>],
    homes: &HashMap<u64, (Pid, RawFd, u64)>,
    cryo_netns: u64,
) -> Result<Placed, SocketError> {
    let mut placed = Vec::new();
    if homes.is_empty() {
        return Ok(placed);
    }
    // Every socket's namespace (None: cryo's), by inode: its home, else its holders'.
    let mut holders_of: HashMap<u32, Vec<&Holder<'_>>> = HashMap::new();
    for h in holders {
        for e in h.fds {
            holders_of.entry(e.file_id).or_default().push(h);
        }
    }
    let mut ns_of: HashMap<u64, Option<u64>> = HashMap::new();
    let dumped: HashSet<u64> = holders.iter().filter_map(|h| h.netns).collect();
    for desc in descs {
        let Some(Kind::Socket(s)) = &desc.kind else {
            continue;
        };
        let held = holders_of.get(&desc.id).map_or(&[][..], |v| v.as_slice());
        let Some(&(pid, fd, home)) = homes.get(&s.ino) else {
            if let Some(h) = held.first() {
                ns_of.insert(s.ino, h.netns);
            }
            continue;
        };
        let refuse = |what: String| SocketError::ForeignNamespace {
            pid,
            fd,
            ino: s.ino,
            netns: home,
            what,
        };
        let ns = (home != cryo_netns).then_some(home);
        if ns.is_some() && !dumped.contains(&home) {
            return Err(refuse(
                "no process of the dump is in that namespace (one only sockets keep): not \
                 made again"
                    .into(),
            ));
        }
        if ns.is_some() {
            if let Some(h) = held
                .iter()
                .find(|h| generations_to(holders, h.pid, ns).is_none())
            {
                return Err(refuse(format!(
                    "pid {} holds it, and no process of the dump in that namespace is its \
                     ancestor: not made again (its maker at restore reaches the namespaces of \
                     its ancestors)",
                    h.pid
                )));
            }
        }
        placed.push((s.ino, home, ns.is_none()));
        ns_of.insert(s.ino, ns);
    }
    for desc in descs {
        let Some(Kind::Socket(s)) = &desc.kind else {
            continue;
        };
        if s.peer_ino == 0 || !super::is_unix(s) {
            continue;
        }
        let (Some(&mine), Some(&peer)) = (ns_of.get(&s.ino), ns_of.get(&s.peer_ino)) else {
            continue;
        };
        if mine != peer {
            let (pid, fd, home) = homes
                .get(&s.ino)
                .or_else(|| homes.get(&s.peer_ino))
                .copied()
                .unwrap_or((Pid::from_raw(0), -1, 0));
            return Err(SocketError::ForeignNamespace {
                pid,
                fd,
                ino: s.ino,
                netns: home,
                what: format!(
                    "unix socket connected to socket:[{}] of another network namespace: not \
                     made again (the two are made together, in one namespace)",
                    s.peer_ino
                ),
            });
        }
    }
    Ok(placed)
}

/// Writes what [`place`] found in the socket records of `descs`.
pub(crate) fn apply(descs: &mut [FileDesc], placed: &Placed) {
    let by_ino: HashMap<u64, (u64, bool)> = placed
        .iter()
        .map(|&(s, ns, outer)| (s, (ns, outer)))
        .collect();
    for desc in descs {
        if let Some(Kind::Socket(s)) = &mut desc.kind {
            if let Some(&(ns, outer)) = by_ino.get(&s.ino) {
                s.netns_inode = ns;
                s.netns_outer = outer;
            }
        }
    }
}

/// Where a socket record says it is made, when not in its maker's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Home {
    /// The namespace the roots are restored into (cryo's at dump).
    Roots,
    /// The namespace of a dumped process (its inode at dump).
    Dumped(u64),
}

impl Home {
    /// The namespace socket `s` was made in, None: its maker's.
    pub(crate) fn of(s: &Socket) -> Option<Home> {
        match (s.netns_inode, s.netns_outer) {
            (0, _) => None,
            (_, true) => Some(Home::Roots),
            (ino, false) => Some(Home::Dumped(ino)),
        }
    }

    fn name(self) -> String {
        match self {
            Home::Roots => "of the dump's roots (cryo's)".into(),
            Home::Dumped(ino) => format!("net:[{ino}]"),
        }
    }
}

/// The network namespaces a restored process makes sockets in besides its own: fds of them,
/// held above every fd it places while its fds are made, then closed.
#[derive(Debug, Default)]
pub struct Homes {
    /// Its own namespace.
    own: Option<Home>,
    /// An fd of it, to come back (None: no socket of the image has another).
    back: Option<OwnedFd>,
    handles: Vec<(Home, OwnedFd)>,
    /// Namespaces it could not open, and why.
    missing: Vec<(Home, String)>,
}

impl Homes {
    /// In a restored process (`own`: its namespace), before its fds: an fd of each namespace
    /// `wanted` names other than its own, `ancestor` giving how many generations up a process
    /// in it is (None: none), `roots` opening the roots' namespace; each at or above `min`.
    pub(crate) fn open(
        own: Home,
        wanted: &HashSet<Home>,
        ancestor: impl Fn(u64) -> Option<usize>,
        roots: impl Fn() -> std::io::Result<std::fs::File>,
        min: RawFd,
    ) -> std::io::Result<Self> {
        let mut homes = Homes::in_roots();
        homes.own = Some(own);
        if wanted.iter().all(|&h| h == own) {
            return Ok(homes);
        }
        let probe = sys::sockopt::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0)?;
        let here = sys::sockopt::netns_of(probe.as_fd())?;
        homes.back = Some(sys::fd::dup_at_least(here.as_fd(), min)?);
        for &home in wanted.iter().filter(|&&h| h != own) {
            let opened = match home {
                Home::Roots => roots(),
                Home::Dumped(ino) => match ancestor(ino) {
                    Some(g) => open_ancestors(g),
                    None => {
                        homes.missing.push((
                            home,
                            "no ancestor of the process that makes it is in".into(),
                        ));
                        continue;
                    }
                },
            };
            match opened.and_then(|f| sys::fd::dup_at_least(f.as_fd(), min)) {
                Ok(fd) => homes.handles.push((home, fd)),
                Err(e) => homes
                    .missing
                    .push((home, format!("could not be opened: {e}"))),
            }
        }
        Ok(homes)
    }

    /// cryo's, in the roots' namespace, which reaches no other.
    pub(crate) fn in_roots() -> Self {
        Homes {
            own: Some(Home::Roots),
            ..Homes::default()
        }
    }

    /// The fds held (kept open while the fds are placed).
    pub(crate) fn fds(&self) -> Vec<RawFd> {
        self.back
            .iter()
            .chain(self.handles.iter().map(|(_, fd)| fd))
            .map(|fd| fd.as_raw_fd())
            .collect()
    }

    /// Runs `f`, which makes socket `s` of description `desc` (and what goes with it), in the
    /// namespace the socket was made in at dump: the calling process (single-threaded, in
    /// its cryo phase) switches there and back.
    pub(crate) fn made_in<T>(
        homes: Option<&Homes>,
        desc: &FileDesc,
        s: &Socket,
        f: impl FnOnce() -> Result<T, FileError>,
    ) -> Result<T, FileError> {
        Self::made_in_home(homes, desc, Home::of(s), f)
    }

    /// [`made_in`](Self::made_in) for a socket whose namespace is `home`.
    pub(crate) fn made_in_home<T>(
        homes: Option<&Homes>,
        desc: &FileDesc,
        home: Option<Home>,
        f: impl FnOnce() -> Result<T, FileError>,
    ) -> Result<T, FileError> {
        let Some(home) = home else { return f() };
        let unreachable = |why: String| -> FileError {
            SocketError::HomeUnreachable {
                id: desc.id,
                what: crate::files::describe(desc),
                home: home.name(),
                why,
            }
            .into()
        };
        let Some(homes) = homes else {
            return Err(unreachable(
                "no process of the restore reaches it here".into(),
            ));
        };
        if homes.own == Some(home) {
            return f();
        }
        let (Some(back), Some((_, there))) =
            (&homes.back, homes.handles.iter().find(|(h, _)| *h == home))
        else {
            let why = homes
                .missing
                .iter()
                .find(|(h, _)| *h == home)
                .map_or_else(|| "is not reached from here".into(), |(_, why)| why.clone());
            return Err(unreachable(why));
        };
        nix::sched::setns(there, CloneFlags::CLONE_NEWNET)
            .map_err(|e| unreachable(format!("could not be joined (setns): {e}")))?;
        let made = f();
        nix::sched::setns(back, CloneFlags::CLONE_NEWNET)
            .map_err(|e| unreachable(format!("was left, but setns back failed: {e}")))?;
        made
    }
}

/// The namespaces socket records of `descs` are made in, besides their makers'.
pub(crate) fn wanted(descs: &[FileDesc]) -> HashSet<Home> {
    descs
        .iter()
        .filter_map(|d| match &d.kind {
            Some(Kind::Socket(s)) => Home::of(s),
            _ => None,
        })
        .collect()
}

/// An fd of the network namespace of the calling process's ancestor `generations` up.
pub(crate) fn open_ancestors(generations: usize) -> std::io::Result<std::fs::File> {
    crate::proc::ancestors_namespace(generations, "net")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryo_proto::image::FdEntry;

    fn socket(id: u32, ino: u64) -> FileDesc {
        FileDesc {
            id,
            kind: Some(Kind::Socket(Socket {
                ino,
                ..Socket::default()
            })),
            ..FileDesc::default()
        }
    }

    fn fd(file_id: u32) -> Vec<FdEntry> {
        vec![FdEntry {
            fd: 3,
            file_id,
            cloexec: false,
        }]
    }

    const CRYO: u64 = 1;

    #[test]
    fn a_socket_of_an_ancestors_or_cryos_namespace_is_placed_there() {
        // 10 (cryo's) -> 11 (net 5) -> 12 (net 6): 12 holds a socket of 11's (socket 100)
        // and one of cryo's (socket 101).
        let descs = [socket(1, 100), socket(2, 101)];
        let (none, one, two) = (vec![], fd(1), fd(2));
        let holders = [
            Holder {
                pid: 10,
                forker: 0,
                netns: None,
                fds: &none,
            },
            Holder {
                pid: 11,
                forker: 10,
                netns: Some(5),
                fds: &none,
            },
            Holder {
                pid: 12,
                forker: 11,
                netns: Some(6),
                fds: &one,
            },
            Holder {
                pid: 13,
                forker: 11,
                netns: Some(6),
                fds: &two,
            },
        ];
        let homes = HashMap::from([
            (100, (Pid::from_raw(12), 3, 5)),
            (101, (Pid::from_raw(13), 3, CRYO)),
        ]);
        let mut placed = place(&descs, &holders, &homes, CRYO).unwrap();
        placed.sort_unstable();
        assert_eq!(placed, vec![(100, 5, false), (101, CRYO, true)]);
        let mut descs = descs.to_vec();
        apply(&mut descs, &placed);
        let Some(Kind::Socket(s)) = &descs[0].kind else {
            panic!()
        };
        assert_eq!(Home::of(s), Some(Home::Dumped(5)));
        let Some(Kind::Socket(s)) = &descs[1].kind else {
            panic!()
        };
        assert_eq!(Home::of(s), Some(Home::Roots));
    }

    #[test]
    fn a_socket_of_a_siblings_or_of_no_process_namespace_is_refused() {
        let descs = [socket(1, 100)];
        let (none, one) = (vec![], fd(1));
        let holders = [
            Holder {
                pid: 10,
                forker: 0,
                netns: None,
                fds: &none,
            },
            Holder {
                pid: 11,
                forker: 10,
                netns: Some(5),
                fds: &none,
            },
            Holder {
                pid: 12,
                forker: 10,
                netns: Some(6),
                fds: &one,
            },
        ];
        let sibling = HashMap::from([(100, (Pid::from_raw(12), 3, 5))]);
        let err = place(&descs, &holders, &sibling, CRYO)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pid 12 fd 3: socket:[100] of network namespace net:[5]"),
            "{err}"
        );
        assert!(
            err.contains("no process of the dump in that namespace is its ancestor"),
            "{err}"
        );
        let nowhere = HashMap::from([(100, (Pid::from_raw(12), 3, 9))]);
        let err = place(&descs, &holders, &nowhere, CRYO)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no process of the dump is in that namespace"),
            "{err}"
        );
    }
}
