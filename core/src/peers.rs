//! The verdict on restored connections: probe every TCP connection once its packets can flow,
//! wait once for all the answers, fail the silent ones, and list per process every connection
//! that did not survive (for the resume record and `--notify-signal`).
//!
//! ```text
//! processes reshaped, still stopped; network lock released
//! probe pass     per TCP connection description (one fd holding it): pidfd_getfd -> the
//!                same socket; ESTABLISHED -> window probe (cryo-tcp-repair send_probe; the
//!                owner is stopped, so the moment in repair mode goes unseen)
//! processes resume
//! verdict        TCP_INFO of every probed duplicate, again after 0.5 ms, 1, 2, 4 ... 20 ms,
//!                until each has answered or --peer-timeout has passed since the resume:
//!                  Reset  the kernel failed the socket itself: a reader gets ECONNRESET
//!                  Alive  nothing to do
//!                  silent connect(AF_UNSPEC) on the duplicate: RST to the peer, and the
//!                         owner's reads and writes fail (a thread blocked in read() gets
//!                         EPIPE, later calls and event loops ECONNRESET)
//! per process    every fd whose description is broken: probed (reset, timeout),
//!                --tcp-close (closed-by-policy), --ext-unix-sk (external-peer)
//! ```

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use cryo_proto::image::file_desc::Kind;
use cryo_proto::image::{FdEntry, FileDesc, Socket, SocketKind};
use cryo_tcp_repair::{self as tcp, PeerAnswer, PeerProbe};
use nix::unistd::Pid;
use tracing::{debug, info, warn};

use crate::files::{sockets, sys};
use crate::notify::{BrokenConnection, BrokenReason};

/// `--peer-timeout` when none is given.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(1);

/// The first and the longest pause between two looks at the probed connections.
const FIRST_PAUSE: Duration = Duration::from_micros(500);
const LONGEST_PAUSE: Duration = Duration::from_millis(20);

/// One probed connection: its description, the duplicate cryo holds and what to compare
/// against.
struct Probed {
    id: u32,
    dup: OwnedFd,
    probe: PeerProbe,
}

/// The probes sent, waiting for their answers.
pub(crate) struct Probing {
    pending: Vec<Probed>,
    timeout: Duration,
}

/// The TCP connection descriptions of the image, by id.
fn connections(descs: &[FileDesc]) -> HashMap<u32, &Socket> {
    descs
        .iter()
        .filter_map(|d| match &d.kind {
            Some(Kind::Socket(s)) if s.kind == SocketKind::TcpConnection as i32 => Some((d.id, s)),
            _ => None,
        })
        .collect()
}

/// Sends one probe per established TCP connection of the restored processes (`pids`, whose
/// fd tables are `fds`, same order), from one fd holding it. Call with the network lock
/// released and the processes still stopped. A connection that cannot be probed is logged
/// and left unjudged. With a zero `timeout`, nothing is sent.
pub(crate) fn send_probes(
    descs: &[FileDesc],
    fds: &[&[FdEntry]],
    pids: &[Pid],
    timeout: Duration,
) -> Probing {
    let mut out = Probing {
        pending: Vec::new(),
        timeout,
    };
    if timeout.is_zero() {
        return out;
    }
    let mut unprobed = connections(descs);
    if unprobed.is_empty() {
        return out;
    }
    let started = Instant::now();
    out.pending.reserve(unprobed.len());
    for (&pid, fds) in pids.iter().zip(fds) {
        let mut pidfd: Option<OwnedFd> = None;
        for e in fds.iter() {
            if unprobed.remove(&e.file_id).is_none() {
                continue;
            }
            if pidfd.is_none() {
                match sys::pidfd_open(pid) {
                    Ok(fd) => pidfd = Some(fd),
                    Err(e) => {
                        warn!(%pid, error = %e, "pidfd_open: its connections are not probed");
                        break;
                    }
                }
            }
            let Some(pidfd) = &pidfd else { break };
            match probe_one(pidfd, e.fd) {
                Ok(Some((dup, probe))) => out.pending.push(Probed {
                    id: e.file_id,
                    dup,
                    probe,
                }),
                Ok(None) => {}
                Err(error) => warn!(%pid, fd = e.fd, %error, "connection not probed"),
            }
        }
    }
    debug!(
        probed = out.pending.len(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "peers probed"
    );
    out
}

/// A duplicate of fd `fd` of the process behind `pidfd`, probed if it is established.
fn probe_one(pidfd: &OwnedFd, fd: RawFd) -> Result<Option<(OwnedFd, PeerProbe)>, String> {
    let dup = sys::pidfd_getfd(pidfd.as_fd(), fd).map_err(|e| format!("pidfd_getfd: {e}"))?;
    let probe = tcp::send_probe(dup.as_fd()).map_err(|e| e.to_string())?;
    Ok(probe.map(|p| (dup, p)))
}

impl Probing {
    /// Waits (once, for all) until every probed peer answered or the timeout passed since
    /// this call (made right after the processes resume), fails the silent connections and
    /// returns the broken ones by description id.
    pub(crate) fn verdict(mut self) -> HashMap<u32, BrokenReason> {
        let mut broken = HashMap::new();
        if self.pending.is_empty() {
            return broken;
        }
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut pause = FIRST_PAUSE;
        loop {
            self.pending
                .retain(|p| match p.probe.answer(p.dup.as_fd()) {
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
            let now = Instant::now();
            if self.pending.is_empty() || now >= deadline {
                break;
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
        for p in &self.pending {
            match sys::connect_unspec(p.dup.as_fd()) {
                Ok(()) => {
                    broken.insert(p.id, BrokenReason::Timeout);
                }
                Err(error) => warn!(%error, "silent connection could not be failed"),
            }
        }
        info!(
            reset = broken
                .values()
                .filter(|r| **r == BrokenReason::Reset)
                .count(),
            timeout = self.pending.len(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "peers judged"
        );
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
        } else if tcp_close && s.kind == SocketKind::TcpConnection as i32 {
            BrokenReason::ClosedByPolicy
        } else if s.external_peer {
            BrokenReason::ExternalPeer
        } else {
            continue;
        };
        let (local, remote) = sockets::record_addresses(s);
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
