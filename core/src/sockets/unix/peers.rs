//! The peer credentials of unix sockets made again (SO_PEERCRED: pid, effective uid and gid;
//! SO_PEERGROUPS). The kernel stamps them from the calling task, so each call that stamps
//! is issued as the dumped credentials say:
//!
//! ```text
//! listen()      the listener's own (SO_PEERCRED of a listener), copied to each socket that
//!               connects to it: the connecting end's peer
//! connect()     the accepted end's peer: the connecting task's pid and ids
//! socketpair()  both ends': the maker's
//! ```
//!
//! A restored process makes its unix sockets in its cryo phase (uid 0, cryo's groups), before
//! it forks its children. A call stamped with its own pid is issued by it with its effective
//! ids switched for the call; one stamped with the pid of a process it forks later (a
//! descendant) by a short-lived stand-in forked with that pid, which issues it on the socket
//! it inherited and exits (the pid is free again for the real process; the socket keeps the
//! stand-in's struct pid, whose number is the same). The connect() of a connection that waited
//! in an accept queue at dump ([`issue_waiting_connect`]) naming a process gone (no process
//! has its pid now: a client that exited since) is issued by a stand-in with that pid too. Any
//! other pid (an ancestor, another tree, a running process) cannot be given: the call is
//! issued as is.

use std::collections::BTreeSet;
use std::io;

use cryo_unix_sockets as unix;
use nix::unistd::Pid;
use tracing::debug;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::sys::process::{in_stand_in, in_stand_in_sharing, with_effective_ids, CallIds};

/// Who may issue stamping calls in this process of a restore.
#[derive(Debug)]
struct Issuers {
    /// Its own pid.
    own: i32,
    /// The pids of the processes it forks later (its descendants): a stand-in may take them.
    later: BTreeSet<i32>,
}

thread_local! {
    /// This thread's issuers: set once in a restored process, for a scope in cryo.
    static ISSUERS: std::cell::RefCell<Option<Issuers>> = const { std::cell::RefCell::new(None) };
}

/// `f` of this thread's issuers (None: every call issued as is).
fn issuers<R>(f: impl FnOnce(Option<&Issuers>) -> R) -> R {
    ISSUERS.with(|i| f(i.borrow().as_ref()))
}

/// In a forked process of a restore (single-threaded, privileged, in cryo's user namespace),
/// before it makes its sockets: its pid and the pids of its descendants. Unset (a process in
/// a user namespace of its own), every call is issued as is.
pub(crate) fn set_issuers(own: i32, later: impl IntoIterator<Item = i32>) {
    ISSUERS.with(|i| {
        *i.borrow_mut() = Some(Issuers {
            own,
            later: later.into_iter().collect(),
        })
    });
}

/// Runs `make` with this thread (of cryo) as the issuer of stamping calls, every pid of
/// `later` (processes it forks after: a restore's) given by a stand-in; unset again after.
/// For the unix pairs cryo makes for two trees, only while cryo runs no other thread (a
/// stand-in is forked without the allocator's fork handlers: safe in a single thread only).
pub(crate) fn with_issuers<R>(later: impl IntoIterator<Item = i32>, make: impl FnOnce() -> R) -> R {
    set_issuers(std::process::id() as i32, later);
    let made = make();
    ISSUERS.with(|i| *i.borrow_mut() = None);
    made
}

/// Whether a call stamped `cred` can be issued so in this process.
pub(crate) fn can_issue(cred: &unix::restore::PeerCred) -> bool {
    issuers(|i| {
        i.is_some_and(|i| cred.pid != 0 && (cred.pid == i.own || i.later.contains(&cred.pid)))
    })
}

/// Whether `cred` names this process of a restore (a call stamped so is issued by it).
pub(crate) fn is_own(cred: &unix::restore::PeerCred) -> bool {
    issuers(|i| i.is_some_and(|i| cred.pid != 0 && cred.pid == i.own))
}

/// Issues `call` (a listen, connect or socketpair) so that what it stamps reads `cred`
/// (None: an image without peer credentials; as is).
pub(crate) fn issue(
    cred: Option<&unix::restore::PeerCred>,
    call: impl FnOnce() -> Result<(), unix::UnixSockError>,
) -> Result<(), unix::UnixSockError> {
    issue_as(cred, false, call)
}

/// Issues the connect() of a connection that waited in an accept queue at dump so that its
/// accepted end shows `cred` (None: not read at dump; as is): as [`issue`], and where `cred`
/// names a process that is gone (a client that exited since, its end closed with what it
/// sent), by a stand-in with that pid too, as [`refill`] sends a gone sender's messages.
pub(crate) fn issue_waiting_connect(
    cred: Option<&unix::restore::PeerCred>,
    call: impl FnOnce() -> Result<(), unix::UnixSockError>,
) -> Result<(), unix::UnixSockError> {
    issue_as(cred, true, call)
}

/// [`issue`]; with `gone_too`, a pid no process has now is given by a stand-in too.
fn issue_as(
    cred: Option<&unix::restore::PeerCred>,
    gone_too: bool,
    call: impl FnOnce() -> Result<(), unix::UnixSockError>,
) -> Result<(), unix::UnixSockError> {
    let (Some(cred), Some(issuer)) = (cred, issuers(|i| i.map(|i| i.own))) else {
        return call();
    };
    let ids = CallIds {
        uid: cred.uid,
        gid: cred.gid,
        groups: cred.groups.clone(),
    };
    let own = cred.pid == issuer;
    let gone = gone_too && issuers(|i| i.is_some_and(|i| is_gone(i, cred.pid)));
    if !can_issue(cred) && !gone {
        debug!(
            pid = cred.pid,
            own = issuer,
            "unix peer credentials of a process this one does not fork: issued as is"
        );
        return call();
    }
    if own {
        keeping_error(call, |wrapped| with_effective_ids(&ids, wrapped), cred)
    } else {
        debug!(
            pid = cred.pid,
            "a stand-in issues a call stamping unix peer credentials"
        );
        keeping_error(
            call,
            |wrapped| in_stand_in(Pid::from_raw(cred.pid), &ids, wrapped),
            cred,
        )
    }
}

/// A socketpair of type `ty` whose ends both show `maker` as their peer (None: an image
/// without peer credentials; as is): made here as the maker's ids when it names this
/// process, else by a stand-in with the maker's pid sharing this process's fd table, when it
/// names a process this one forks later; as is otherwise.
pub(crate) fn socketpair_of(
    maker: Option<&unix::restore::PeerCred>,
    ty: unix::SockType,
) -> Result<(OwnedFd, OwnedFd), unix::UnixSockError> {
    let later = maker.filter(|c| can_issue(c) && !is_own(c));
    let Some(cred) = later else {
        let mut made = None;
        issue(maker.filter(|c| is_own(c)), || {
            made = Some(unix::restore::socketpair(ty)?);
            Ok(())
        })?;
        return made.ok_or_else(|| unix::UnixSockError::Invalid {
            step: "socketpair",
            fd: -1,
            detail: "the socketpair was made elsewhere".into(),
        });
    };
    // Two descriptors reserved here, replaced in the shared table by the stand-in's ends.
    let reserve = || {
        std::fs::File::open("/dev/null")
            .map(OwnedFd::from)
            .map_err(|e| unix::UnixSockError::Fd {
                step: "reserve a descriptor",
                fd: -1,
                source: e,
            })
    };
    let (a, b) = (reserve()?, reserve()?);
    let at = [a.as_raw_fd(), b.as_raw_fd()];
    let ids = CallIds {
        uid: cred.uid,
        gid: cred.gid,
        groups: cred.groups.clone(),
    };
    debug!(pid = cred.pid, "a stand-in makes a unix socketpair");
    keeping_error(
        || {
            let (x, y) = unix::restore::socketpair(ty)?;
            // Onto the reserved numbers, whose OwnedFds here then own the ends (dup3 swaps
            // what a number refers to; nothing else holds them).
            for (made, to) in [(x, at[0]), (y, at[1])] {
                crate::sys::fd::dup_to(made.as_fd(), to, true).map_err(|e| {
                    unix::UnixSockError::Fd {
                        step: "dup3 a socketpair end",
                        fd: to,
                        source: e,
                    }
                })?;
            }
            Ok(())
        },
        |wrapped| {
            in_stand_in_sharing(
                Pid::from_raw(cred.pid),
                &ids,
                libc::CLONE_FILES as u64,
                wrapped,
            )
        },
        cred,
    )?;
    Ok((a, b))
}

/// Runs `call` through `runner` (which gives back only an io::Error: a stand-in's exit code
/// carries an errno), keeping `call`'s own unix error; a failure of the runner itself names
/// `cred`.
fn keeping_error(
    call: impl FnOnce() -> Result<(), unix::UnixSockError>,
    runner: impl FnOnce(&mut dyn FnMut() -> io::Result<()>) -> io::Result<()>,
    cred: &unix::restore::PeerCred,
) -> Result<(), unix::UnixSockError> {
    let mut failed = None;
    let mut call = Some(call);
    let issued = runner(&mut || {
        let call = call.take().expect("run once");
        call().map_err(|e| {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            failed = Some(e);
            io::Error::from_raw_os_error(errno)
        })
    });
    match (issued, failed) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(unix::UnixSockError::Invalid {
            step: "issue a call as the dumped credentials",
            fd: -1,
            detail: format!(
                "as pid {} (uid {}, gid {}, groups {:?}): {e}",
                cred.pid, cred.uid, cred.gid, cred.groups
            ),
        }),
    }
}

/// Refills a queue with `messages`, sent from `from` (to `dest`) in order, each with the
/// credentials it was queued with (SCM_CREDENTIALS: the kernel takes them only with the pid
/// of a live process): a run of messages naming a process this one forks later (a child that
/// wrote to its parent) or one gone (see [`stand_in_pid`]) by one stand-in with that pid, the
/// others from here (its own pid, an ancestor's, one made already, one outside that runs).
pub(crate) fn refill(
    from: impl std::os::fd::AsFd,
    dest: Option<&unix::UnixName>,
    messages: &[unix::QueuedMessage],
) -> Result<(), unix::UnixSockError> {
    unix::restore::refill_messages_with(from, dest, messages, &mut |from, dest, all| {
        let send = |run: &[unix::QueuedMessage]| {
            run.iter()
                .try_for_each(|m| unix::restore::send_message(from, dest, m))
        };
        for run in all.chunk_by(|a, b| stand_in_pid(a) == stand_in_pid(b)) {
            match run.first().and_then(stand_in_pid) {
                None => send(run)?,
                Some((pid, uid, gid)) => {
                    debug!(
                        pid,
                        messages = run.len(),
                        "a stand-in sends queued messages with their credentials"
                    );
                    let cred = unix::restore::PeerCred {
                        pid,
                        uid,
                        gid,
                        groups: Vec::new(),
                    };
                    let ids = CallIds {
                        uid,
                        gid,
                        groups: Vec::new(),
                    };
                    keeping_error(
                        || send(run),
                        |wrapped| in_stand_in(Pid::from_raw(pid), &ids, wrapped),
                        &cred,
                    )?;
                }
            }
        }
        Ok(())
    })
}

/// The credentials of `msg` when a stand-in with their pid sends it: they name a process
/// this one forks later (a child that wrote to its parent), or one that is gone (a sender
/// that exited since, or a process of another tree not made yet: the kernel takes
/// SCM_CREDENTIALS only with the pid of a live process, and its skb keeps the number).
fn stand_in_pid(msg: &unix::QueuedMessage) -> Option<(i32, u32, u32)> {
    let creds = msg.creds?;
    issuers(|i| {
        i.is_some_and(|i| {
            creds.pid > 0
                && creds.pid != i.own
                && (i.later.contains(&creds.pid) || is_gone(i, creds.pid))
        })
    })
    .then_some((creds.pid, creds.uid, creds.gid))
}

/// Whether `pid` names a process that is gone, which a stand-in may take: no process has it
/// now (one that exited since, or of another tree not made yet), and it is not `i`'s own.
fn is_gone(i: &Issuers, pid: i32) -> bool {
    pid > 0 && pid != i.own && !crate::sys::process::exists(pid)
}
