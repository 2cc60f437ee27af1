//! The verdict on restored connections: probe every TCP connection once its packets can flow,
//! wait once for all the answers, fail the silent ones, and list per process every connection
//! that did not survive (for the resume record and `--notify-signal`).
//!
//! ```text
//! processes created, sockets restored (out of repair mode), all stopped; network lock released
//! probe pass     on a thread of its own while the processes are rebuilt, split over the
//!                CPUs beyond 256 connections: per TCP connection description (one fd holding
//!                it) pidfd_getfd -> the same socket; ESTABLISHED -> window probe (cryo-tcp-repair
//!                send_probe; the owner is stopped, so the moment in repair mode goes unseen);
//!                then one look at the answers (a peer on this host has answered already)
//! processes resume
//! verdict        TCP_INFO of every duplicate still waiting, after 0.5 ms, 1, 2, 4 ... 20 ms,
//!                until each has answered or --peer-timeout has passed since the resume:
//!                  Reset  the kernel failed the socket itself: a reader gets ECONNRESET
//!                  Alive  nothing to do
//!                  silent connect(AF_UNSPEC) on the duplicate: RST to the peer, and the
//!                         owner's reads and writes fail (a thread blocked in read() gets
//!                         EPIPE, later calls and event loops ECONNRESET)
//! per process    every fd whose description is broken: probed (reset, timeout),
//!                --tcp-close (closed-by-policy), --ext-unix-sk (external-peer)
//! ```

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use cryo_proto::image::file_desc::Kind;
use cryo_proto::image::{FdEntry, FileDesc};
use cryo_tcp_repair::{self as tcp, PeerAnswer, PeerProbe};
use nix::unistd::Pid;
use tracing::{debug, info, warn};

use super::SocketError;
use crate::notify::{BrokenConnection, BrokenReason};
use crate::sys;

/// `--peer-timeout` when none is given.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(1);

/// The first and the longest pause between two looks at the probed connections.
const FIRST_PAUSE: Duration = Duration::from_micros(500);
const LONGEST_PAUSE: Duration = Duration::from_millis(20);

/// Below this many connections per thread, the probe pass stays on one thread.
const PER_THREAD: usize = 256;

/// One connection to probe: the process (index into the restored pids), an fd of it holding
/// the connection, and the description.
#[derive(Clone, Copy)]
struct Target {
    task: usize,
    fd: RawFd,
    id: u32,
}

/// One probed connection: its description, the duplicate cryo holds and what to compare
/// against.
struct Probed {
    id: u32,
    dup: OwnedFd,
    probe: PeerProbe,
}

/// The probes sent: the connections still waiting for an answer, and those already judged.
pub(crate) struct Probing {
    pending: Vec<Probed>,
    broken: HashMap<u32, BrokenReason>,
    timeout: Duration,
}

/// Every TCP connection description of the image, each from the first fd (in process order)
/// holding it.
fn targets(descs: &[FileDesc], fds: &[&[FdEntry]]) -> Vec<Target> {
    let mut unprobed: HashSet<u32> = descs
        .iter()
        .filter_map(|d| match &d.kind {
            Some(Kind::Socket(s)) if super::is_open_connection(s) => Some(d.id),
            _ => None,
        })
        .collect();
    let mut out = Vec::with_capacity(unprobed.len());
    for (task, fds) in fds.iter().enumerate() {
        for e in fds.iter() {
            if unprobed.remove(&e.file_id) {
                out.push(Target {
                    task,
                    fd: e.fd,
                    id: e.file_id,
                });
            }
        }
    }
    out
}

/// Sends one probe per established TCP connection of the restored processes (`pids`, whose
/// fd tables are `fds`, same order), then looks once at what came back (a peer on this host
/// has answered already). Call with the network lock released and the processes still
/// stopped. Many connections are split over the CPUs. A connection that cannot be probed is
/// logged and left unjudged. With a zero `timeout`, nothing is sent.
pub(crate) fn send_probes(
    descs: &[FileDesc],
    fds: &[&[FdEntry]],
    pids: &[Pid],
    timeout: Duration,
) -> Probing {
    let mut out = Probing {
        pending: Vec::new(),
        broken: HashMap::new(),
        timeout,
    };
    if timeout.is_zero() {
        return out;
    }
    let targets = targets(descs, fds);
    if targets.is_empty() {
        return out;
    }
    let started = Instant::now();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cpus.min(targets.len().div_ceil(PER_THREAD)).max(1);
    let chunk = targets.len().div_ceil(threads);
    let parts: Vec<(Vec<Probed>, HashMap<u32, BrokenReason>)> = if threads == 1 {
        vec![probe_all(&targets, pids)]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = targets
                .chunks(chunk)
                .map(|part| scope.spawn(move || probe_all(part, pids)))
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        })
    };
    for (pending, broken) in parts {
        out.pending.extend(pending);
        out.broken.extend(broken);
    }
    debug!(
        connections = targets.len(),
        threads,
        waiting = out.pending.len(),
        reset = out.broken.len(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "peers probed"
    );
    out
}

/// Probes `targets`, then looks once at the answers: the connections still waiting, and
/// those reset.
fn probe_all(targets: &[Target], pids: &[Pid]) -> (Vec<Probed>, HashMap<u32, BrokenReason>) {
    let mut probed = Vec::with_capacity(targets.len());
    let mut pidfd: Option<(usize, OwnedFd)> = None;
    for t in targets {
        let pid = pids[t.task];
        if pidfd.as_ref().is_none_or(|(task, _)| *task != t.task) {
            match sys::pidfd::pidfd_open(pid) {
                Ok(fd) => pidfd = Some((t.task, fd)),
                Err(error) => {
                    warn!(%pid, %error, "pidfd_open: its connections are not probed");
                    pidfd = None;
                    continue;
                }
            }
        }
        let Some((_, pidfd)) = &pidfd else { continue };
        match probe_one(pid, pidfd, t.fd) {
            Ok(Some((dup, probe))) => probed.push(Probed {
                id: t.id,
                dup,
                probe,
            }),
            Ok(None) => {}
            Err(error) => warn!(%pid, fd = t.fd, %error, "connection not probed"),
        }
    }
    let mut broken = HashMap::new();
    look(&mut probed, &mut broken);
    (probed, broken)
}

/// A duplicate of fd `fd` of the process behind `pidfd`, probed if it is established.
fn probe_one(
    pid: Pid,
    pidfd: &OwnedFd,
    fd: RawFd,
) -> Result<Option<(OwnedFd, PeerProbe)>, SocketError> {
    let dup = super::socket_dup(pid, pidfd.as_fd(), fd)?;
    let probe = tcp::send_probe(dup.as_fd()).map_err(super::repair_err(pid, fd))?;
    Ok(probe.map(|p| (dup, p)))
}

/// Keeps in `pending` the connections whose peer has not answered yet; a reset goes to
/// `broken`.
fn look(pending: &mut Vec<Probed>, broken: &mut HashMap<u32, BrokenReason>) {
    pending.retain(|p| match p.probe.answer(p.dup.as_fd()) {
        Ok(PeerAnswer::Waiting) => true,
        Ok(PeerAnswer::Alive) => false,
        Ok(PeerAnswer::Reset) => {
            broken.insert(p.id, BrokenReason::Reset);
            false
        }
        Err(error) => {
            warn!(%error, "probed connection unreadable: left unjudged");
            false
        }
    });
}

impl Probing {
    /// Waits (once, for all) until every probed peer answered or the timeout passed since
    /// this call (made right after the processes resume), fails the silent connections and
    /// returns the broken ones by description id.
    pub(crate) fn verdict(mut self) -> HashMap<u32, BrokenReason> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut pause = FIRST_PAUSE;
        while !self.pending.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(LONGEST_PAUSE);
            look(&mut self.pending, &mut self.broken);
        }
        let mut broken = self.broken;
        let mut timeouts = 0;
        for p in &self.pending {
            match tcp::disconnect(&p.dup) {
                Ok(()) => {
                    broken.insert(p.id, BrokenReason::Timeout);
                    timeouts += 1;
                }
                Err(error) => warn!(%error, "silent connection could not be failed"),
            }
        }
        if !broken.is_empty() {
            info!(
                reset = broken.len() - timeouts,
                timeout = timeouts,
                ms = started.elapsed().as_secs_f64() * 1e3,
                "peers judged"
            );
        }
        broken
    }
}

/// Per process (fd tables `fds`), every fd whose description is broken: judged by the probes
/// (`verdicts`), all TCP connections with `tcp_close`, unix sockets whose peer was outside
/// the dump. Sorted by fd.
pub(crate) fn broken_per_process(
    descs: &[FileDesc],
    fds: &[&[FdEntry]],
    verdicts: &HashMap<u32, BrokenReason>,
    tcp_close: bool,
) -> Vec<Vec<BrokenConnection>> {
    let mut broken: HashMap<u32, (String, String, BrokenReason)> = HashMap::new();
    for d in descs {
        let Some(Kind::Socket(s)) = &d.kind else {
            continue;
        };
        let reason = if let Some(&r) = verdicts.get(&d.id) {
            r
        } else if tcp_close && super::is_open_connection(s) {
            BrokenReason::ClosedByPolicy
        } else if s.external_peer {
            BrokenReason::ExternalPeer
        } else {
            continue;
        };
        let (local, remote) = super::record_addresses(s);
        broken.insert(d.id, (local, remote, reason));
    }
    fds.iter()
        .map(|fds| {
            if broken.is_empty() {
                return Vec::new();
            }
            let mut list: Vec<BrokenConnection> = fds
                .iter()
                .filter_map(|e| {
                    broken
                        .get(&e.file_id)
                        .map(|(local, remote, reason)| BrokenConnection {
                            fd: e.fd,
                            local: local.clone(),
                            remote: remote.clone(),
                            reason: *reason,
                        })
                })
                .collect();
            list.sort_by_key(|b| b.fd);
            list
        })
        .collect()
}
