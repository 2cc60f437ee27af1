//! The socket subsystem: a task's TCP connections (TCP_REPAIR, through cryo-tcp-repair), TCP
//! listeners, connects in progress and sockets not connected, UDP (and UDP-lite, ping, raw)
//! sockets, unix sockets (through cryo-unix-sockets), packet and netlink sockets are captured,
//! held and re-created here; other families are refused. Sockets are fds, so the file table
//! ([`crate::files`]) places them; what they are and how they live is this module's.
//!
//! ```text
//! tcp.rs          connections, listeners, sockets not connected: identified, captured
//!                 (connections in repair mode), restored
//! udp.rs          UDP sockets, and UDP-lite, ICMP ping and raw sockets the same way
//! multicast.rs    the multicast groups a datagram socket joined (candidates from /proc)
//! packet.rs       packet sockets (AF_PACKET); packet_ring.rs their rings (frames, RX head)
//! netlink.rs      netlink sockets (AF_NETLINK); both read with cryo-unix-sockets'
//!                 packet_diag and netlink_diag
//! unix/           unix sockets: mod.rs one socket (its queue, options, broken external
//!                 peers), groups.rs the sockets made together at restore, in_flight.rs the
//!                 descriptors in flight and accept queues resolved across the dump
//! home.rs         sockets of another network namespace than their holder's: read there,
//!                 made there again by their maker (setns and back)
//! lifecycle.rs    network lock, connections held in repair mode, finish after kill or
//!                 leave-running (or failure)
//! peers.rs        after restore: probe every connection, the verdict on silent peers
//! record.rs       engine states <-> image messages (Socket's oneof), invariants checked
//! error.rs        SocketError
//! ```
//!
//! The lifecycle of a dumped socket:
//!
//! ```text
//! dump (every task frozen), before the file tables are built (DumpSockets::collect):
//!   each task's sockets identified and captured in its network namespace (in_netns_of: a
//!   thread of cryo joins it when it is not cryo's, since sock_diag answers for the asker's)
//!   per task, per fd: /proc/PID/fd/N   pidfd_getfd -> a duplicate (the same socket), fstat: inode
//!   SO_DOMAIN/SO_TYPE/SO_PROTOCOL, TCP_INFO state   -> connection | listener | tcp not
//!                                                      connected | datagram | unix
//!                                                      | refused (nothing touched yet)
//!   ONE network lock over every connection of every task in cryo's network namespace, each
//!   4-tuple once (one batch); a namespace of the tasks' own holds both ends of its own
//!   per task: connections Repair::enter + capture, then HELD in repair mode (on every core);
//!   listeners, udp, unix captured in order (unix: queue peeked, descriptors in flight
//!   noted); a TCP socket several tasks hold is captured once, by the first
//!   -> one `Socket` record per inode (its state in the oneof: record.rs)
//! across the dump (unix/in_flight.rs): unix peers checked, descriptors in flight dumped,
//!   accept queues checked (and, by a dump that kills, taken)
//! end of dump (lifecycle.rs):
//!   killed:          the task dies, then the held sockets close in repair mode: nothing is
//!                    sent; the lock stays (its id goes in the inventory)
//!   left running /   repair left quietly (TCP_REPAIR_OFF_NO_WP), lock released
//!   failed:
//! restore (in the child, before the fds are placed):
//!   listeners, then connections (restore + finish_quiet, or reset with --tcp-close), then
//!   udp, then unix sockets (groups made together by the task that makes the first member)
//! after restore (peers.rs): lock released, every connection probed, silent peers failed
//! ```

mod error;
mod filter;
pub(crate) mod home;
pub(crate) mod kind;
mod lifecycle;
mod multicast;
mod netlink;
mod packet;
pub(crate) mod packet_ring;
pub(crate) mod peers;
pub(crate) mod record;
mod tcp;
mod udp;
pub(crate) mod unix;

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use cryo_proto::image::{socket::State, FileDesc, Socket};
use nix::fcntl::{FcntlArg, OFlag};
use nix::unistd::Pid;
use socket2::SockRef;
use tracing::debug;

use crate::files::inspect::{self, InodeKey, OpenFd};
use crate::files::FileError;
use crate::sys;

pub use error::{AcceptProblem, InFlightRefusal, RecordProblem, SocketError};

pub(crate) use record::SocketState;
pub use unix::groups::UnixLinks;
pub use unix::in_flight::{capture_accept_queues, resolve};
pub use unix::{check_accepted_in_one_tree, check_unix_peers, ExternalPeer};

pub use lifecycle::DumpSockets;
pub(crate) use tcp::connection_moved;

/// How sockets are dumped.
#[derive(Debug, Clone, Default)]
pub struct SocketDumpOptions {
    /// Capture established TCP connections (otherwise a dump meeting one is refused).
    pub tcp_established: bool,
    /// Dump a TCP listener without the connections waiting in its accept queue
    /// (`--skip-in-flight`); otherwise a listener with any is refused (temporary).
    pub skip_in_flight: bool,
    /// Dump TCP connections, and sockets closed after one, to come back closed
    /// (`--tcp-close`): nothing of the connection is captured, no lock is needed.
    pub tcp_close: bool,
    /// The id of the network lock to install over the connections.
    pub lock_id: String,
    /// The processes run on after the dump (`--leave-running`, `--check-only`): what a
    /// capture would take from them is refused.
    pub leave_running: bool,
}

/// The sockets of a frozen task, captured before its file table is built (one of the tasks
/// of a [`DumpSockets`]).
///
/// Dropping it puts every held connection back as it was (lifecycle.rs).
#[derive(Debug, Default)]
pub struct SocketDump {
    records: HashMap<u64, Socket>,
    /// Unix sockets with a peer: (pid, fd, inode, peer inode), checked across the dump.
    unix_peers: Vec<(Pid, RawFd, u64, u64)>,
    /// Descriptors in flight (SCM_RIGHTS) in the queues captured: duplicates the peek
    /// installed in cryo, resolved into descriptions once every task's fds are dumped.
    in_flight: Vec<unix::InFlightFds>,
    /// Listeners with connections waiting in their accept queue.
    accept_queues: Vec<unix::AcceptQueue>,
    /// Connected stream/seqpacket unix sockets without a peer inode (pid, fd, inode): clients
    /// waiting in a listener's accept queue, to be found in a dumped listener's.
    awaiting_accept: Vec<(Pid, RawFd, u64)>,
    /// Connected stream/seqpacket unix sockets whose abstract name is their listener's (pid,
    /// fd, inode, the listener's inode): that listener must be in the dump.
    name_listeners: Vec<(Pid, RawFd, u64, u64)>,
    /// Held open until the dump ends: duplicates of descriptors in flight (later descriptions
    /// are compared against them with kcmp) and connections accepted out of a listener's queue
    /// (closing them early would tell their clients).
    kept: Vec<OwnedFd>,
    held: Vec<lifecycle::Held>,
    pidfd: Option<OwnedFd>,
    /// The task (with its pidfd).
    pid: Option<Pid>,
    /// Every socket fd of the task (several may share one socket), with its inode.
    socket_fds: HashMap<RawFd, InodeKey>,
    /// Its sockets made in another network namespace than its own: socket inode -> that
    /// namespace's inode (home.rs).
    homes: HashMap<u64, u64>,
}

/// What one socket fd is.
enum Found {
    Connection(std::net::SocketAddr, std::net::SocketAddr),
    Listener,
    Udp,
    Unix,
    /// Captured whole when identified (nothing of it is held).
    Packet(Box<packet::PacketState>),
    Netlink(Box<netlink::NetlinkState>),
    /// A TCP socket neither listening nor connected.
    TcpUnconnected,
    /// A TCP connection, or a socket closed after one, dumped with `--tcp-close`.
    TcpClosed,
    /// A TCP socket closed after a connection it comes back as (local, peer): captured and
    /// held as a connection.
    /// The third: reset by its peer, the error not read yet (the capture takes it).
    ClosedConnection(std::net::SocketAddr, std::net::SocketAddr, bool),
    /// A TCP connect in progress (SYN_SENT): (local, remote).
    Connecting(std::net::SocketAddr, std::net::SocketAddr),
}

/// Whether poll reports POLLERR for socket `fd`: an error pending (sk_err) or its error queue
/// not empty; poll takes neither.
fn error_pending(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::empty())];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLERR))
}

/// The network namespace of `pid` when it is not cryo's: its inode and open nsfs file.
pub(crate) fn foreign_netns(pid: Pid) -> Result<Option<(u64, std::fs::File)>, SocketError> {
    use std::os::unix::fs::MetadataExt;
    let err = |step| move |source| SocketError::NetNamespace { pid, step, source };
    let file = std::fs::File::open(crate::proc::dir(pid).join("ns/net")).map_err(err("open"))?;
    let theirs = file.metadata().map_err(err("fstat"))?.ino();
    let ours = std::fs::metadata("/proc/thread-self/ns/net")
        .map_err(err("stat cryo's"))?
        .ino();
    Ok((theirs != ours).then_some((theirs, file)))
}

/// Runs `f` where the sockets of `pid` are listed by sock_diag (inet_diag, unix_diag,
/// packet_diag, netlink_diag answer for the asking socket's network namespace): on this thread
/// when `pid` is in cryo's namespace, else on a short-lived thread that joined its own (the
/// threads `f` spawns are in it too).
pub(crate) fn in_netns_of<T: Send>(
    pid: Pid,
    f: impl FnOnce() -> Result<T, FileError> + Send,
) -> Result<T, FileError> {
    match foreign_netns(pid)? {
        None => f(),
        Some((_, ns)) => {
            sys::ns::run_in(&ns, nix::sched::CloneFlags::CLONE_NEWNET, f).map_err(|source| {
                SocketError::NetNamespace {
                    pid,
                    step: "join (setns)",
                    source,
                }
            })?
        }
    }
}

/// SO_NETNS_COOKIE of socket `fd`: which network namespace it was made in (None: a kernel
/// without it).
fn netns_cookie(fd: BorrowedFd<'_>) -> std::io::Result<Option<u64>> {
    const SO_NETNS_COOKIE: i32 = 71;
    match sys::sockopt::get_bytes(fd, libc::SOL_SOCKET, SO_NETNS_COOKIE, 8) {
        Ok(b) => Ok(b.try_into().ok().map(u64::from_ne_bytes)),
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The cookie of the calling thread's network namespace (a socket made here for the asking).
fn netns_cookie_here() -> std::io::Result<Option<u64>> {
    let probe = sys::sockopt::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0)?;
    netns_cookie(probe.as_fd())
}

/// The sockets of one frozen task, identified and checked, nothing touched yet.
struct Identified {
    pid: Pid,
    /// The inode of its network namespace when it is not cryo's: its connections have both
    /// ends there (the dump refuses a namespace shared outside), and the network lock holds
    /// them there.
    netns: Option<u64>,
    /// None when the task has no fd at all.
    pidfd: Option<OwnedFd>,
    /// One per socket (the first fd holding it).
    found: Vec<FoundSocket>,
    socket_fds: HashMap<RawFd, InodeKey>,
    /// The classic BPF filters attached, by socket inode.
    filters: Vec<(u64, filter::Captured)>,
}

/// One socket of the task, identified: its fd, inode, address family and kind.
struct FoundSocket {
    fd: RawFd,
    ino: u64,
    family: u32,
    kind: Found,
    /// SO_REUSEADDR of a connection, read before repair mode (which forces it, and clears
    /// it on the way out): the dump guardian sets it back if cryo dies.
    reuse_addr: bool,
    /// The network namespace it was made in, when not the task's (home.rs).
    foreign: Option<home::Foreign>,
}

/// A duplicate of socket fd `fd` of `pid`, to capture it through.
fn socket_dup(pid: Pid, pidfd: BorrowedFd<'_>, fd: RawFd) -> Result<OwnedFd, SocketError> {
    sys::pidfd::pidfd_getfd(pidfd, fd).map_err(|source| SocketError::Sys {
        pid,
        fd,
        step: "pidfd_getfd",
        source,
    })
}

/// Maps a capture error of socket fd `fd` of `pid` to this subsystem's error.
fn repair_err(
    pid: Pid,
    fd: RawFd,
) -> impl Fn(cryo_tcp_repair::TcpRepairError) -> SocketError + Copy {
    move |source| SocketError::Repair { pid, fd, source }
}

/// A socket record as the capture makes it (its peer, for unix sockets, comes later).
fn socket_record(ino: u64, family: u32, state: &SocketState) -> Socket {
    Socket {
        ino,
        family,
        state: Some(state.into()),
        ..Socket::default()
    }
}

/// The errors of a socket captured whole when identified (packet, netlink): fd `fd` of
/// `pid`, inode `ino`, of family `family`.
#[derive(Clone, Copy)]
struct FamilyErrors {
    pid: Pid,
    fd: RawFd,
    family: &'static str,
    ino: u64,
}

impl FamilyErrors {
    /// The socket cannot come back: `what` of it.
    fn refuse(&self, what: &str) -> FileError {
        SocketError::FamilyRefused {
            pid: self.pid,
            fd: self.fd,
            family: self.family,
            ino: self.ino,
            what: what.into(),
        }
        .into()
    }

    /// Reading it failed at `op`.
    fn inspect(&self, op: &'static str) -> impl Fn(std::io::Error) -> FileError {
        let (pid, fd) = (self.pid, self.fd);
        move |e| {
            let open = for_errors(pid, fd);
            open.inspect_err(op, open.proc_path(), e)
        }
    }
}

/// Fd `fd` of `pid` for error messages: its link is read only then.
fn for_errors(pid: Pid, fd: RawFd) -> OpenFd {
    let link = std::fs::read_link(inspect::proc_fd(pid, fd))
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into());
    OpenFd {
        pid,
        fd,
        link,
        flags: 0,
        cloexec: false,
        pos: 0,
        mnt_id: 0,
        locks: Vec::new(),
    }
}

/// The socket inode behind `dup` (a duplicate of a task's fd), `None` if it is no socket (an
/// O_PATH fd on a socket's file only names it: a file of files/).
fn socket_inode(dup: BorrowedFd<'_>) -> std::io::Result<Option<InodeKey>> {
    let flags = nix::fcntl::fcntl(dup, nix::fcntl::FcntlArg::F_GETFL)?;
    if flags & libc::O_PATH != 0 {
        return Ok(None);
    }
    let st = nix::sys::stat::fstat(dup)?;
    Ok(
        (st.st_mode & libc::S_IFMT == libc::S_IFSOCK).then_some(InodeKey {
            dev: st.st_dev,
            ino: st.st_ino,
        }),
    )
}

impl SocketDump {
    /// Finds and checks every socket of the frozen task `pid`, touching nothing: a refusal
    /// comes here, before any lock or capture (see [`DumpSockets::collect`]).
    ///
    /// Per fd: a duplicate (pidfd_getfd) and its fstat (no /proc lookup: a readlink of
    /// /proc/PID/fd/N costs more than both); a socket is identified on that duplicate, closed
    /// at once, and captured on a second one after the lock is installed (keeping the first
    /// would double cryo's fds); thousands of fds are spread over the cores. The fd's flags
    /// are the file table's business.
    fn identify_task(pid: Pid, opts: &SocketDumpOptions) -> Result<Identified, FileError> {
        /// Below this many fds, a thread costs more than it saves.
        const PER_THREAD_MIN: usize = 512;
        let fds = inspect::list_fds(pid)?;
        let Some(&first_fd) = fds.first() else {
            return Ok(Identified {
                pid,
                netns: None,
                pidfd: None,
                found: Vec::new(),
                socket_fds: HashMap::new(),
                filters: Vec::new(),
            });
        };
        let pidfd = sys::pidfd::pidfd_open(pid).map_err(|e| {
            for_errors(pid, first_fd).inspect_err("pidfd_open", format!("/proc/{pid}").into(), e)
        })?;
        // The namespace a socket of the task is of: its own (this thread is in it), or another
        // (made before the task changed namespace, or passed from another): that one's is
        // noted, and the socket read there (home.rs).
        let own_cookie = netns_cookie_here().map_err(|e| {
            for_errors(pid, first_fd).inspect_err(
                "socket (its network namespace's cookie)",
                format!("/proc/{pid}/ns/net").into(),
                e,
            )
        })?;
        // Each fd on its own (a server has thousands): duplicated, checked for a socket and,
        // if it is one, identified, on every core.
        type FdIdentity = (
            InodeKey,
            u32,
            Found,
            Option<filter::Captured>,
            bool,
            Option<home::Foreign>,
        );
        let identify_fd = |&fd: &RawFd| -> Result<Option<FdIdentity>, FileError> {
            let dup = match sys::pidfd::pidfd_getfd(pidfd.as_fd(), fd) {
                Ok(dup) => dup,
                Err(e) => {
                    // Not this module's business unless it is a socket.
                    let open = for_errors(pid, fd);
                    if !open.link.starts_with("socket:[") {
                        return Ok(None);
                    }
                    return Err(open.inspect_err("pidfd_getfd", open.proc_path(), e));
                }
            };
            let inode = socket_inode(dup.as_fd()).map_err(|e| {
                let open = for_errors(pid, fd);
                open.inspect_err("fstat", open.proc_path(), e)
            })?;
            let Some(inode) = inode else {
                return Ok(None);
            };
            let foreign = match (own_cookie, netns_cookie(dup.as_fd()).ok().flatten()) {
                (Some(own), Some(its)) if own != its => {
                    Some(home::Foreign::of(pid, fd, dup.as_fd())?)
                }
                _ => None,
            };
            // sock_diag (packet, netlink) answers for its own namespace's sockets.
            let (family, kind) = match &foreign {
                None => identify(pid, fd, dup.as_fd(), inode.ino, opts)?,
                Some(f) => {
                    f.run_in(pid, fd, || identify(pid, fd, dup.as_fd(), inode.ino, opts))??
                }
            };
            if let Some(f) = &foreign {
                f.refuse_kind(pid, fd, inode.ino, &kind)?;
            }
            if matches!(kind, Found::Udp | Found::Connection(..)) && error_pending(dup.as_fd()) {
                // Neither is read (SO_ERROR would take the error) nor made again.
                return Err(for_errors(pid, fd).refuse(
                    "a socket with an error pending (SO_ERROR: an ICMP error a connected \
                     datagram socket got, say) or queued (its error queue: IP_RECVERR reports, \
                     MSG_ZEROCOPY completions, transmit timestamps), which a restore would lose,",
                    false,
                ));
            }
            let filter = filter::capture(dup.as_fd()).map_err(|problem| {
                let open = for_errors(pid, fd);
                match problem {
                    filter::FilterProblem::Ebpf => open.refuse(filter::ebpf_refusal(fd), true),
                    filter::FilterProblem::Read(op, e) => open.inspect_err(op, open.proc_path(), e),
                }
            })?;
            let reuse_addr = match kind {
                Found::Connection(..) | Found::ClosedConnection(..) => {
                    SockRef::from(&dup).reuse_address().map_err(|e| {
                        let open = for_errors(pid, fd);
                        open.inspect_err("getsockopt SO_REUSEADDR", open.proc_path(), e)
                    })?
                }
                _ => false,
            };
            Ok(Some((inode, family, kind, filter, reuse_addr, foreign)))
        };
        let identified = crate::parallel::map_on_cores(&fds, PER_THREAD_MIN, identify_fd).ok_or(
            SocketError::Panicked {
                pid,
                pass: "identifying sockets",
            },
        )?;
        let mut found: Vec<FoundSocket> = Vec::new();
        let mut seen = HashSet::new();
        let mut socket_fds = HashMap::new();
        let mut filters = Vec::new();
        for (&fd, identified) in fds.iter().zip(identified) {
            let Some((inode, family, kind, filter, reuse_addr, foreign)) = identified? else {
                continue;
            };
            if let Some(f) = filter {
                filters.push((inode.ino, f));
            }
            socket_fds.insert(fd, inode);
            if seen.insert(inode.ino) {
                found.push(FoundSocket {
                    fd,
                    ino: inode.ino,
                    family,
                    kind,
                    reuse_addr,
                    foreign,
                });
            }
        }
        Ok(Identified {
            pid,
            // Set by the caller, from cryo's own namespace (this thread may have joined the
            // task's).
            netns: None,
            pidfd: Some(pidfd),
            found,
            socket_fds,
            filters,
        })
    }

    /// Captures the sockets of task `ident` (the network lock installed over every
    /// connection of the dump). A TCP socket another task of the dump holds too (inherited
    /// across fork, or passed) is captured once, by the first: `tcp_taken` lists those
    /// captured so far; the others find its description through the file table (kcmp).
    fn capture_task(
        ident: Identified,
        opts: &SocketDumpOptions,
        tcp_taken: &mut HashSet<u64>,
    ) -> Result<SocketDump, FileError> {
        let Identified {
            pid,
            netns: _,
            pidfd,
            found,
            socket_fds,
            filters,
        } = ident;
        let mut out = SocketDump::default();
        out.socket_fds = socket_fds;
        out.pidfd = pidfd;
        out.pid = Some(pid);
        let Some(pidfd) = out.pidfd.as_ref() else {
            return Ok(out);
        };
        out.records.reserve(found.len());
        // Connections are captured on every core: each costs some 40 syscalls and none
        // depends on another. The rest (listeners, UDP, unix) is captured here in order.
        let mut connections = Vec::new();
        let mut others = Vec::new();
        // Noted for every socket of another namespace, captured here or by another task.
        for f in &found {
            if let Some(foreign) = &f.foreign {
                out.homes.insert(f.ino, foreign.inode);
            }
        }
        for f in found {
            let tcp = matches!(
                f.kind,
                Found::Connection(..)
                    | Found::ClosedConnection(..)
                    | Found::Listener
                    | Found::Connecting(..)
            );
            if tcp && !tcp_taken.insert(f.ino) {
                continue;
            }
            match f.kind {
                Found::Connection(local, remote) => connections.push(tcp::FoundConnection {
                    fd: f.fd,
                    ino: f.ino,
                    family: f.family,
                    name: cryo_tcp_repair::SocketName::new(Some(local), Some(remote)),
                    closed: false,
                    reset: false,
                }),
                Found::ClosedConnection(local, remote, reset) => {
                    connections.push(tcp::FoundConnection {
                        fd: f.fd,
                        ino: f.ino,
                        family: f.family,
                        name: cryo_tcp_repair::SocketName::new(Some(local), Some(remote)),
                        closed: true,
                        reset,
                    })
                }
                _ => others.push(f),
            }
        }
        out.held.reserve(connections.len());
        let captured = tcp::capture_connections(pid, pidfd.as_fd(), connections);
        let mut first_err = None;
        for captured in captured {
            match captured {
                Ok((held, rec)) => {
                    out.held.push(held);
                    out.records.insert(rec.ino, rec);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        // Captured connections stay held in `out`: dropping it on error puts them back.
        if let Some(e) = first_err {
            return Err(e.into());
        }
        let mut diag = None;
        let mut groups = None;
        let at = pid.to_string();
        for mut f in others {
            match f.foreign.take() {
                None => out.capture_other(pid, f, opts, &mut diag, &mut groups, &at)?,
                // Read in its own namespace: sock_diag and /proc/thread-self/net answer for
                // the asker's.
                Some(foreign) => {
                    let fd = f.fd;
                    foreign.run_in(pid, fd, || {
                        out.capture_other(pid, f, opts, &mut None, &mut None, "thread-self")
                    })??;
                }
            }
        }
        for (ino, f) in filters {
            if let Some(rec) = out.records.get_mut(&ino) {
                rec.bpf_filter = f.program;
                rec.bpf_filter_locked = f.locked;
            }
        }
        debug!(
            %pid,
            sockets = out.records.len(),
            held = out.held.len(),
            "sockets captured"
        );
        Ok(out)
    }

    /// Captures socket `f` of task `pid`, not a connection (a listener, UDP, unix, packet
    /// and netlink (captured when identified), not connected TCP): `diag` the unix_diag
    /// socket and `groups` the multicast groups of its namespace, read once there, `at` the
    /// /proc entry whose net/ shows that namespace.
    fn capture_other(
        &mut self,
        pid: Pid,
        f: FoundSocket,
        opts: &SocketDumpOptions,
        diag: &mut Option<cryo_unix_sockets::DiagSocket>,
        groups: &mut Option<Vec<(u32, std::net::IpAddr)>>,
        at: &str,
    ) -> Result<(), FileError> {
        let FoundSocket {
            fd,
            ino,
            family,
            kind,
            ..
        } = f;
        let kind = match kind {
            Found::Packet(p) => {
                let state = SocketState::Packet(p);
                self.records.insert(ino, socket_record(ino, family, &state));
                return Ok(());
            }
            Found::Netlink(n) => {
                let state = SocketState::Netlink(n);
                self.records.insert(ino, socket_record(ino, family, &state));
                return Ok(());
            }
            kind => kind,
        };
        let pidfd = self
            .pidfd
            .as_ref()
            .expect("a task with sockets has a pidfd");
        let dup = socket_dup(pid, pidfd.as_fd(), fd)?;
        let state = match kind {
            Found::Unix => {
                self.record_unix(pid, fd, ino, dup.as_fd(), diag, opts.leave_running)?;
                return Ok(());
            }
            // Split out and captured before.
            Found::Connection(..)
            | Found::ClosedConnection(..)
            | Found::Packet(_)
            | Found::Netlink(_) => return Ok(()),
            Found::Listener => tcp::capture_listener(pid, fd, dup.as_fd(), opts.skip_in_flight)?,
            Found::Udp => {
                // Read once per namespace, and only for a task with datagram sockets.
                let groups = groups.get_or_insert_with(|| multicast::candidates(at, true));
                udp::capture(pid, fd, ino, dup.as_fd(), groups, at)?
            }
            Found::TcpUnconnected => tcp::capture_unconnected(pid, fd, dup.as_fd())?,
            Found::TcpClosed => tcp::capture_closed(pid, fd, dup.as_fd())?,
            Found::Connecting(_, remote) => tcp::capture_connecting(pid, fd, dup.as_fd(), remote)?,
        };
        self.records.insert(ino, socket_record(ino, family, &state));
        Ok(())
    }

    /// The sockets of the task made in another network namespace than its own: socket inode
    /// -> that namespace's inode.
    pub(crate) fn homes(&self) -> &HashMap<u64, u64> {
        &self.homes
    }

    /// True if fd `fd` of the task is a socket.
    pub fn is_socket_fd(&self, fd: RawFd) -> bool {
        self.socket_fds.contains_key(&fd)
    }

    /// Every socket fd of the task, with the inode behind it.
    pub(crate) fn socket_fds(&self) -> &HashMap<RawFd, InodeKey> {
        &self.socket_fds
    }

    /// The records captured, by socket inode.
    pub(crate) fn records(&self) -> impl Iterator<Item = (u64, &Socket)> {
        self.records.iter().map(|(&ino, rec)| (ino, rec))
    }

    /// The established connections captured, by socket inode.
    pub(crate) fn connections(&self) -> impl Iterator<Item = (u64, &Socket)> {
        self.records().filter(|(_, r)| is_connection(r))
    }

    /// Whether a record of socket `ino` is here.
    fn has_record(&self, ino: u64) -> bool {
        self.records.contains_key(&ino)
    }
}

/// Decides what a socket is, refusing what cannot be dumped: its address family (what the
/// record stores) and its kind.
fn identify(
    pid: Pid,
    task_fd: RawFd,
    fd: BorrowedFd<'_>,
    ino: u64,
    opts: &SocketDumpOptions,
) -> Result<(u32, Found), FileError> {
    let s = SockRef::from(&fd);
    // The link is read for the messages only.
    let open = || for_errors(pid, task_fd);
    let err = |op: &'static str, e: std::io::Error| {
        let open = open();
        open.inspect_err(op, open.proc_path(), e)
    };
    let domain = i32::from(s.domain().map_err(|e| err("getsockopt SO_DOMAIN", e))?);
    let ty = i32::from(s.r#type().map_err(|e| err("getsockopt SO_TYPE", e))?);
    let proto = s
        .protocol()
        .map_err(|e| err("getsockopt SO_PROTOCOL", e))?
        .map_or(0, i32::from);
    let refuse = |kind: String| open().refuse(kind, true);
    match domain {
        libc::AF_UNIX => return Ok((domain as u32, Found::Unix)),
        libc::AF_INET | libc::AF_INET6 => {}
        libc::AF_NETLINK => {
            let n = netlink::capture(pid, task_fd, fd, ino)?;
            return Ok((domain as u32, Found::Netlink(Box::new(n))));
        }
        libc::AF_PACKET => {
            let p = packet::capture(pid, task_fd, fd, ino)?;
            return Ok((domain as u32, Found::Packet(Box::new(p))));
        }
        other => return Err(refuse(format!("socket of family {other}"))),
    }
    let kind = match (ty, proto) {
        (libc::SOCK_STREAM, libc::IPPROTO_TCP) => tcp::identify(pid, task_fd, fd, ino, opts)?,
        (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => Found::Udp,
        // UDP-lite, ping and raw sockets: restored as UDP is (udp.rs).
        (ty, proto) if cryo_tcp_repair::is_datagram_kind(ty, proto) => Found::Udp,
        _ => {
            // IPPROTO_MPTCP (linux/in.h: 262), IPPROTO_SCTP, IPPROTO_DCCP by name.
            let named = match proto {
                262 => "MPTCP ",
                libc::IPPROTO_SCTP => "SCTP ",
                33 => "DCCP ",
                _ => "",
            };
            return Err(refuse(format!(
                "{named}inet socket of type {ty} protocol {proto}"
            )));
        }
    };
    Ok((domain as u32, kind))
}

/// The sockets of `tasks` made in another network namespace than their holder's: socket
/// inode -> (a holder, its fd, the namespace's inode).
pub(crate) fn foreign_homes(tasks: &[SocketDump]) -> HashMap<u64, (Pid, RawFd, u64)> {
    let mut out = HashMap::new();
    for t in tasks {
        let Some(pid) = t.pid else { continue };
        for (&ino, &ns) in t.homes() {
            let fd = t
                .socket_fds
                .iter()
                .filter(|(_, k)| k.ino == ino)
                .map(|(&fd, _)| fd)
                .min()
                .unwrap_or(-1);
            out.entry(ino).or_insert((pid, fd, ns));
        }
    }
    out
}

/// Whether `s` is an established (or closing) TCP connection's record.
pub(crate) fn is_connection(s: &Socket) -> bool {
    matches!(s.state, Some(State::TcpConnection(_)))
}

/// Whether `s` is a TCP connection's record whose peer is there to answer: not one closed at
/// both ends (comes back closed, nothing to probe, nothing broken by `--tcp-close`).
pub(crate) fn is_open_connection(s: &Socket) -> bool {
    matches!(&s.state, Some(State::TcpConnection(c))
        if c.state != cryo_proto::image::TcpState::Close as i32)
}

/// The address pairs of every TCP connection among `descs`, as the network lock names them.
pub(crate) fn lock_tuples(descs: &[FileDesc]) -> Vec<cryo_netns::ConnTuple> {
    descs
        .iter()
        .filter_map(|d| match &d.kind {
            Some(cryo_proto::image::file_desc::Kind::Socket(s)) if is_connection(s) => {
                match SocketState::try_from(s) {
                    Ok(SocketState::Connection(c)) => {
                        Some(cryo_netns::ConnTuple::new(c.local, c.remote))
                    }
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

/// Whether `s` is a unix socket's record.
pub fn is_unix(s: &Socket) -> bool {
    matches!(s.state, Some(State::Unix(_)))
}

/// A socket record in words, for messages and `cryo show`.
pub fn describe(s: &Socket) -> String {
    match SocketState::try_from(s) {
        Ok(SocketState::Connection(c)) => tcp::describe_connection(&c),
        Ok(SocketState::Listener(l)) if l.dropped_pending > 0 => format!(
            "tcp listening on {} ({} waiting connection(s) skipped: --skip-in-flight)",
            l.local, l.dropped_pending
        ),
        Ok(SocketState::Listener(l)) => format!("tcp listening on {}", l.local),
        Ok(SocketState::Udp(u)) => udp::describe(&u),
        Ok(SocketState::Unix(u)) => unix::describe(s, &u),
        Ok(SocketState::Packet(p)) => packet::describe(&p),
        Ok(SocketState::Netlink(n)) => netlink::describe(&n),
        Ok(SocketState::TcpUnconnected(u)) => tcp::describe_unconnected(&u),
        Ok(SocketState::TcpConnecting(c)) => {
            format!("tcp {} -> {} (SYN_SENT, connecting)", c.local, c.remote)
        }
        Err(_) if s.state.is_none() => format!("socket:[{}] of unknown kind", s.ino),
        Err(_) => format!(
            "{} socket:[{}] (undecodable state)",
            record::record_name(s),
            s.ino
        ),
    }
}

/// The local and remote address of a socket record as a resume record lists them: `ip:port`
/// (`[v6]:port`) for TCP; for unix the bound names (the peer's as the dump saw it). Empty
/// when unknown or unnamed.
pub(crate) fn record_addresses(s: &Socket) -> (String, String) {
    match SocketState::try_from(s) {
        Ok(SocketState::Connection(c)) => (c.local.to_string(), c.remote.to_string()),
        Ok(SocketState::Unix(u)) => {
            let local = Some(u.name())
                .filter(cryo_unix_sockets::UnixName::is_bound)
                .map_or_else(String::new, |n| n.to_string());
            (local, s.peer_name.clone())
        }
        _ => Default::default(),
    }
}

/// A decoded socket record, ready to restore.
pub(crate) enum Decoded {
    /// A socket restored from its state alone.
    Plain(SocketState),
    /// A unix socket whose peer was outside the dump (`--ext-unix-sk`): restored broken.
    BrokenUnix(Box<unix::UnixSocketState>),
}

impl Decoded {
    /// Restore order: listeners, then connections and connects in progress (which share the
    /// listeners' ports), then udp, tcp sockets not connected, packet and netlink sockets.
    pub(crate) fn order(&self) -> u8 {
        match self {
            Decoded::Plain(SocketState::Listener(_)) => 0,
            Decoded::Plain(SocketState::Connection(_))
            | Decoded::Plain(SocketState::TcpConnecting(_)) => 1,
            Decoded::Plain(SocketState::Udp(_))
            | Decoded::Plain(SocketState::TcpUnconnected(_))
            | Decoded::Plain(SocketState::Packet(_))
            | Decoded::Plain(SocketState::Netlink(_)) => 2,
            Decoded::Plain(SocketState::Unix(_)) | Decoded::BrokenUnix(_) => 3,
        }
    }
}

/// Decodes the state of a socket record (checked at validation, before any process exists).
pub(crate) fn decode(desc: &FileDesc, s: &Socket) -> Result<Decoded, FileError> {
    let state = SocketState::try_from(s).map_err(|e| FileError::Invalid {
        id: desc.id,
        detail: e.to_string(),
    })?;
    Ok(match state {
        SocketState::Unix(u) if s.external_peer || u.peer_closed => Decoded::BrokenUnix(u),
        state => Decoded::Plain(state),
    })
}

/// A [`SocketError::Restore`] of `desc` at `step`.
fn restore_err(
    desc: &FileDesc,
    step: &'static str,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> SocketError {
    SocketError::Restore {
        id: desc.id,
        what: crate::files::describe(desc),
        step,
        source: source.into(),
    }
}

/// Restore side, in the child: re-creates one socket, with the file status flags of the
/// description (O_NONBLOCK...). With `tcp_close`, a connection comes back reset: its first
/// read fails with ECONNRESET.
pub(crate) fn open(
    desc: &FileDesc,
    decoded: &Decoded,
    tcp_close: bool,
) -> Result<OwnedFd, FileError> {
    let fd = match decoded {
        Decoded::Plain(SocketState::Unix(u)) => unix::open(desc, u)?,
        Decoded::BrokenUnix(u) => unix::open_broken(desc, u)?,
        Decoded::Plain(SocketState::Listener(l)) => tcp::restore_listener(desc, l)?,
        Decoded::Plain(SocketState::Udp(u)) => udp::restore(desc, u)?,
        Decoded::Plain(SocketState::Packet(p)) => packet::restore(desc, p)?,
        Decoded::Plain(SocketState::Netlink(n)) => netlink::restore(desc, n)?,
        Decoded::Plain(SocketState::TcpUnconnected(u)) => tcp::restore_unconnected(desc, u)?,
        Decoded::Plain(SocketState::TcpConnecting(c)) => tcp::restore_connecting(desc, c)?,
        Decoded::Plain(SocketState::Connection(c)) => tcp::restore_connection(desc, c, tcp_close)?,
    };
    set_flags(desc, &fd)?;
    Ok(fd)
}

/// The file status flags of the description (O_NONBLOCK, O_ASYNC) on a new socket, and its
/// BPF filter: the last touches of every socket restored.
pub(crate) fn set_flags(desc: &FileDesc, fd: &OwnedFd) -> Result<(), SocketError> {
    filter::restore(desc, fd)?;
    let flags = OFlag::from_bits_retain(desc.flags as i32) & (OFlag::O_NONBLOCK | OFlag::O_ASYNC);
    if !flags.is_empty() {
        let old = nix::fcntl::fcntl(fd, FcntlArg::F_GETFL)
            .map_err(|e| restore_err(desc, "F_GETFL", e))?;
        nix::fcntl::fcntl(fd, FcntlArg::F_SETFL(OFlag::from_bits_retain(old) | flags))
            .map_err(|e| restore_err(desc, "F_SETFL", e))?;
    }
    Ok(())
}
