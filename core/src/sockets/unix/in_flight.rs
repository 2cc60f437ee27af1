//! Dump side of what unix queues carry beyond bytes: descriptors in flight (SCM_RIGHTS), each
//! dumped as a description of its own, and connections waiting in a listener's accept queue
//! with what their clients sent before being accepted.
//!
//! ```text
//! per task (SocketDump::collect)   queues peeked: the descriptors in flight arrive in cryo as
//!                                  duplicates; listeners note their waiting clients and the
//!                                  bytes each sent (sock_diag)
//! resolve (every task's fds dumped, targets frozen):
//!   socket in flight no task holds   captured from cryo's duplicate (unix only; one that
//!                                    carries descriptors itself is refused)
//!   each descriptor in flight        FileTable::dump_own_fd: kcmp finds a task's fd on the
//!                                    same description (same id), else a new FileDesc that no
//!                                    fd uses
//!   message.fds = [ids]              the socket's record rewritten
//!   accept queues                    every waiting client is a dumped socket, every dumped
//!                                    client without a peer waits in a dumped listener
//! capture_accept_queues (a dump that kills, just before files.img is written):
//!   listener with waiting clients    accept() on a duplicate, in queue order, each embryo's
//!                                    queue peeked into pending[k].queue, its SO_PEERCRED and
//!                                    SO_PEERGROUPS (its client's connect() caller) into
//!                                    pending[k].peer_cred; resolve again
//! ```
//!
//! Reaching an embryo's queue takes accept(), which cannot be undone: a `--leave-running` dump
//! meeting such a connection is refused as temporary (retry once it is accepted), and a
//! killing dump accepts only after the task images are written (should the last images then
//! fail to be written, the targets run on without those connections: their clients see them
//! closed). A `--leave-running` dump leaves the connections whose clients sent nothing in
//! place, without the peer credentials their accepted ends will show (the restore connects
//! the clients again as is: those credentials are lost).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::unistd::Pid;
use tracing::debug;

use cryo_proto::image::Socket;
use cryo_unix_sockets as unix;

use super::AcceptQueue;
use super::{split_queue, InFlightFds, CLOSED_CLIENT};
use crate::files::{FileError, FileTable};
use crate::image::ImageDir;
use crate::sockets::{AcceptProblem, InFlightRefusal, RecordProblem, SocketDump, SocketError};
use crate::sys;

/// Resolves what the captured queues carry, once every task's fds are dumped: descriptors in
/// flight become descriptions of `files`, and accept queues are checked. With
/// `leave_running`, a connection waiting with data is refused (capturing it takes accept()).
pub fn resolve(
    dumps: &mut Vec<SocketDump>,
    files: &mut FileTable,
    images: &ImageDir,
    leave_running: bool,
) -> Result<(), FileError> {
    resolve_in_flight(dumps, files, images, leave_running)?;
    if leave_running {
        for q in dumps.iter().flat_map(|d| &d.accept_queues) {
            if let Some(&(client, sent)) = q.clients.iter().find(|(_, sent)| *sent > 0) {
                if sent == CLOSED_CLIENT {
                    return Err(SocketError::EmbryoOfClosedClient {
                        pid: q.pid,
                        fd: q.fd,
                        ino: q.ino,
                    }
                    .into());
                }
                return Err(SocketError::EmbryoData {
                    pid: q.pid,
                    fd: q.fd,
                    ino: q.ino,
                    client,
                    sent,
                }
                .into());
            }
        }
    }
    Ok(check_accept_queues(dumps)?)
}

/// A dump that ends its targets, just before files.img: takes every connection waiting in a
/// dumped listener, in queue order, and records what each embryo holds (what its client sent
/// before being accepted, its descriptors in flight resolved like the rest) and the peer
/// credentials it shows (the client's connect() caller, which the restore's connect is issued
/// as). The accepted sockets stay open in cryo until the dump ends.
///
/// The queues whose clients sent data are taken first, and what they carry checked (a
/// refusal may come from it); those whose clients sent nothing only then, which nothing
/// refuses: a refused dump has not taken them from the running processes.
pub fn capture_accept_queues(
    dumps: &mut Vec<SocketDump>,
    files: &mut FileTable,
    images: &ImageDir,
) -> Result<(), FileError> {
    let with_data = |q: &AcceptQueue| q.clients.iter().any(|&(_, sent)| sent > 0);
    // A listener held by several processes (one forked after listen()) is in each one's
    // dump: its queue is taken once, by the first, and the others' records get what that one
    // captured once its descriptors in flight are resolved (accepting again would find the
    // queue empty, the connections already in cryo).
    let mut captured_by: HashMap<u64, usize> = HashMap::new();
    let mut also_held: Vec<(usize, u64)> = Vec::new();
    for silent in [false, true] {
        for (at, dump) in dumps.iter_mut().enumerate() {
            let queues: Vec<_> = dump
                .accept_queues
                .iter()
                .filter(|q| !q.clients.is_empty() && with_data(q) != silent)
                .cloned()
                .collect();
            for q in queues {
                if captured_by.contains_key(&q.ino) {
                    also_held.push((at, q.ino));
                    continue;
                }
                captured_by.insert(q.ino, at);
                let rec = take_queue(dump, &q)?;
                files.update_socket(&rec);
            }
        }
        if silent || captured_by.is_empty() {
            continue;
        }
        // What the embryos' queues carried in flight: dumped like the rest, checked like the
        // rest (by a dump that ends the processes).
        resolve_in_flight(dumps, files, images, false)?;
        // Peers outside the dump are judged by the caller's check, which knows --ext-unix-sk.
        crate::sockets::check_unix_peers(dumps, true)?;
        check_accept_queues(dumps)?;
        for q in dumps.iter().flat_map(|d| &d.accept_queues) {
            // A listener in flight in what a client sent: its own waiting connections'
            // clients connect again at restore (as is), unless they sent data.
            if !captured_by.contains_key(&q.ino) && with_data(q) {
                return Err(SocketError::AcceptQueue {
                    pid: q.pid,
                    fd: q.fd,
                    ino: q.ino,
                    problem: AcceptProblem::InFlightWithData,
                }
                .into());
            }
        }
    }
    for (at, ino) in also_held {
        let captured = dumps[captured_by[&ino]].records.get(&ino).cloned();
        if let (Some(rec), Some(held)) = (captured, dumps[at].records.get_mut(&ino)) {
            *held = rec;
        }
    }
    Ok(())
}

/// Takes the connections waiting in listener `q` of `dump` (accept() on a duplicate, in queue
/// order): what each client sent (its descriptors in flight noted in `dump.in_flight`) and the
/// peer credentials each shows go into the listener's record, which is returned.
fn take_queue(dump: &mut SocketDump, q: &AcceptQueue) -> Result<Socket, FileError> {
    let bad = |problem| SocketError::AcceptQueue {
        pid: q.pid,
        fd: q.fd,
        ino: q.ino,
        problem,
    };
    let sys_err = |step| move |source| bad(AcceptProblem::Sys { step, source });
    let unix_err = |step| move |source| bad(AcceptProblem::Unix { step, source });
    // Asked in the listener's network namespace: unix_diag answers for the asking socket's.
    let mut diag = crate::sockets::in_netns_of(q.pid, || {
        unix::DiagSocket::new().map_err(|e| unix_err("sock_diag")(e).into())
    })?;
    let diag = &mut diag;
    let pidfd = sys::pidfd::pidfd_open(q.pid).map_err(sys_err("pidfd_open"))?;
    let listener = sys::pidfd::pidfd_getfd(pidfd.as_fd(), q.fd).map_err(sys_err("pidfd_getfd"))?;
    let mut queues = Vec::with_capacity(q.clients.len());
    for (k, &(client, _)) in q.clients.iter().enumerate() {
        let conn = unix::accept_waiting(&listener)
            .map_err(unix_err("accept"))?
            .ok_or_else(|| bad(AcceptProblem::Left { client }))?;
        let ino = nix::sys::stat::fstat(&conn)
            .map_err(|e| sys_err("fstat an accepted connection")(e.into()))?
            .st_ino;
        let peer = u32::try_from(ino)
            .ok()
            .and_then(|i| diag.query(i).ok().flatten())
            .and_then(|info| info.peer);
        // A closed client: no peer inode.
        if peer.map(u64::from).unwrap_or(0) != client {
            return Err(bad(AcceptProblem::OutOfOrder {
                client,
                found: peer.map_or(0, u64::from),
            })
            .into());
        }
        let captured = unix::capture_queue(&conn)
            .map_err(unix_err("capture what a client sent before accept"))?;
        let peer_cred = unix::restore::peer_cred(&conn)
            .map_err(unix_err("peer credentials of a waiting connection"))?;
        let (messages, carried) = split_queue(captured, &unix::UnixName::Unnamed);
        if client == 0 {
            // Sent again by a transient client, unbound, without descriptors.
            if !carried.is_empty() {
                return Err(bad(AcceptProblem::ClosedClient(
                    "carrying descriptors in flight",
                ))
                .into());
            }
            let named =
                nix::sys::socket::getpeername::<nix::sys::socket::UnixAddr>(conn.as_raw_fd())
                    .is_ok_and(|a| a.path().is_some() || a.as_abstract().is_some());
            if named {
                return Err(bad(AcceptProblem::ClosedClient("bound to a name")).into());
            }
        }
        for (message, fds) in carried {
            dump.in_flight.push(InFlightFds {
                pid: q.pid,
                fd: q.fd,
                ino: q.ino,
                pending: Some(k),
                message,
                fds,
            });
        }
        debug!(
            listener = q.ino,
            client,
            messages = messages.len(),
            peer_pid = peer_cred.pid,
            "accept queue entry captured"
        );
        queues.push((messages, peer_cred));
        dump.kept.push(conn);
    }
    let rec = dump
        .patch_unix(q.ino, |state| {
            if state.pending.len() != queues.len() {
                return Err(bad(AcceptProblem::Count {
                    recorded: state.pending.len(),
                    accepted: queues.len(),
                }));
            }
            for (p, (messages, peer_cred)) in state.pending.iter_mut().zip(queues) {
                p.queue = messages;
                p.peer_cred = Some(peer_cred);
            }
            Ok(())
        })?
        .ok_or_else(|| bad(AcceptProblem::NoRecord))?;
    Ok(rec)
}

/// Turns the descriptors in flight noted so far into descriptions of `files` and writes
/// their ids into the messages that carry them. Sockets in flight that no task holds are
/// captured first (into a dump of their own, appended to `dumps`; with `leave_running`, what
/// their capture would take from the running processes is refused).
fn resolve_in_flight(
    dumps: &mut Vec<SocketDump>,
    files: &mut FileTable,
    images: &ImageDir,
    leave_running: bool,
) -> Result<(), FileError> {
    let entries: Vec<InFlightFds> = dumps
        .iter_mut()
        .flat_map(|d| d.in_flight.drain(..))
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let me = nix::unistd::getpid();
    let held = |dumps: &[SocketDump], ino: u64| dumps.iter().any(|d| d.has_record(ino));
    let mut alone = SocketDump::default();
    let mut diag = None;
    let mut seen = HashSet::new();
    for e in &entries {
        for fd in &e.fds {
            let Some(ino) = socket_ino(fd.as_fd()) else {
                continue;
            };
            if held(dumps, ino) || !seen.insert(ino) {
                continue;
            }
            let raw = fd.as_raw_fd();
            let family = domain(fd.as_fd());
            if family != Some(libc::AF_UNIX) {
                let family = match family {
                    Some(libc::AF_INET) => "an inet".to_string(),
                    Some(libc::AF_INET6) => "an inet6".to_string(),
                    Some(f) => format!("a family {f}"),
                    None => "a".to_string(),
                };
                return Err(refuse(e, InFlightRefusal::NotUnix { family, ino }).into());
            }
            alone
                .record_unix(me, raw, ino, fd.as_fd(), &mut diag, leave_running)
                .map_err(|err| in_flight_err(e, me, raw, err))?;
            if !alone.in_flight.is_empty() {
                return Err(refuse(e, InFlightRefusal::Nested { ino }).into());
            }
        }
    }
    files.add_sockets(&alone);
    // Per socket, its messages' ids: each record is rewritten once.
    type Ids = Vec<(Option<usize>, usize, Vec<u32>)>;
    let mut patches: BTreeMap<u64, Ids> = BTreeMap::new();
    for e in &entries {
        let mut ids = Vec::with_capacity(e.fds.len());
        for fd in &e.fds {
            let id = files
                .dump_own_fd(fd.as_fd(), images)
                .map_err(|err| in_flight_err(e, me, fd.as_raw_fd(), err))?;
            ids.push(id);
        }
        debug!(pid = %e.pid, fd = e.fd, ino = e.ino, message = e.message, ?ids, "descriptors in flight");
        patches
            .entry(e.ino)
            .or_default()
            .push((e.pending, e.message, ids));
    }
    dumps.push(alone);
    for (ino, ids) in patches {
        let mut ids = Some(ids);
        let mut rec = None;
        for d in dumps.iter_mut() {
            rec = d.patch_unix(ino, |state| {
                for (pending, message, fds) in ids.take().unwrap_or_default() {
                    let queue = match pending {
                        Some(k) => state.pending.get_mut(k).map(|p| &mut p.queue),
                        None => Some(&mut state.queue),
                    };
                    let m = queue
                        .and_then(|q| q.get_mut(message))
                        .ok_or(SocketError::Record {
                            ino,
                            record: "unix socket",
                            problem: RecordProblem::Range {
                                field: "message",
                                value: message as i64,
                            },
                        })?;
                    m.fds = fds;
                }
                Ok::<(), SocketError>(())
            })?;
            if rec.is_some() {
                break;
            }
        }
        let rec = rec.ok_or(SocketError::NoRecord { ino })?;
        files.update_socket(&rec);
    }
    // The duplicates stay open until the dump ends: kcmp compares later ones against them.
    let keep = dumps.last_mut().expect("pushed above");
    keep.kept.extend(entries.into_iter().flat_map(|e| e.fds));
    Ok(())
}

/// Every client waiting in a dumped listener's accept queue must be a dumped socket, and
/// every dumped client without a peer must wait in a dumped listener's accept queue.
fn check_accept_queues(dumps: &[SocketDump]) -> Result<(), SocketError> {
    let mut waiting: HashSet<u64> = HashSet::new();
    for q in dumps.iter().flat_map(|d| &d.accept_queues) {
        // A closed client (0) is made again as a transient one.
        for &(client, _) in q.clients.iter().filter(|(c, _)| *c != 0) {
            if !dumps.iter().any(|d| d.has_record(client)) {
                return Err(SocketError::ExternalClient {
                    pid: q.pid,
                    fd: q.fd,
                    ino: q.ino,
                    client,
                    name: name_of(client),
                });
            }
            waiting.insert(client);
        }
    }
    for &(pid, fd, ino) in dumps.iter().flat_map(|d| &d.awaiting_accept) {
        if !waiting.contains(&ino) {
            return Err(SocketError::ExternalListener {
                pid,
                fd,
                ino,
                listener: listener_of(ino),
            });
        }
    }
    Ok(())
}

/// The name of unix socket `ino` as sock_diag tells it, for messages.
fn name_of(ino: u64) -> String {
    u32::try_from(ino)
        .ok()
        .and_then(|i| unix::query_inode(i).ok().flatten())
        .map_or("(unknown)".to_string(), |i| i.name.to_string())
}

/// The listener whose accept queue holds client `ino`, for messages (one sock_diag dump).
fn listener_of(ino: u64) -> String {
    unix::dump_all()
        .ok()
        .and_then(|all| {
            all.into_values()
                .find(|l| l.pending.iter().any(|&c| u64::from(c) == ino))
        })
        .map_or("a listener".to_string(), |l| {
            format!("listener socket:[{}] {}", l.inode, l.name)
        })
}

/// The socket inode behind `fd`, `None` if it is no socket.
fn socket_ino(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    let st = nix::sys::stat::fstat(fd).ok()?;
    (st.st_mode & libc::S_IFMT == libc::S_IFSOCK).then_some(st.st_ino)
}

/// SO_DOMAIN of socket `fd`.
fn domain(fd: std::os::fd::BorrowedFd<'_>) -> Option<i32> {
    socket2::SockRef::from(&fd).domain().ok().map(i32::from)
}

/// A refusal of a descriptor in flight in a message of `e`.
fn refuse(e: &InFlightFds, refusal: InFlightRefusal) -> SocketError {
    SocketError::InFlight {
        pid: e.pid,
        fd: e.fd,
        ino: e.ino,
        refusal,
    }
}

/// An error about descriptor `raw` (cryo's duplicate) in flight in a message of `e`, said in
/// the terms of the task that holds the socket.
fn in_flight_err(e: &InFlightFds, me: Pid, raw: RawFd, err: impl std::fmt::Display) -> SocketError {
    let text = err.to_string();
    let detail = text
        .strip_prefix(&format!("pid {me} fd {raw}: "))
        .unwrap_or(&text)
        .to_string();
    refuse(e, InFlightRefusal::File(detail))
}
