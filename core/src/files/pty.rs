//! Pseudo-terminal pairs held by the dumped processes: a master (an fd on /dev/ptmx, in a
//! terminal multiplexer or a terminal emulator) and its slave /dev/pts/N (the shells'
//! stdio and controlling terminal), both inside the dump, or the master alone when its
//! slave was closed, or slaves alone hung up when their master was closed. A pty with one
//! end outside the dump is refused, naming pid and fd (a shell job's terminal is tty.rs's,
//! with --shell-job).
//!
//! ```text
//! dump     each fd, through a pidfd_getfd duplicate:
//!            master      TIOCGPTN (the index), TIOCGPKT, TIOCGPTLCK
//!            slave       its index from rdev, TIOCGEXCL, fstat (the node's owner and mode)
//!            /dev/tty    TIOCGDEV: the pty slave it reaches (the process's controlling tty)
//!            hung up     a slave whose calls fail with EIO and that polls POLLHUP|POLLERR
//!                        (its master closed; its node gone): only its index
//!            any end     TCGETS2 (modes and speeds), TIOCGETD (N_TTY only), TIOCGWINSZ
//!          then, over the whole dump (finish_dump): both ends present, or the slave closed
//!          (no fd on it anywhere: the master polls POLLHUP; no session outside the dump has
//!          it: a new open of it, TIOCGPTPEER, gives its state and input, and is closed
//!          again), or the slave held through /dev/tty only (a new open of it gives its
//!          node; none outside the dump may hold it), the session whose controlling terminal
//!          the slave is (every member has it, its leader in the dump), the foreground
//!          group (led by a dumped process of that session); what
//!          neither end has read (pty_queue.rs), read out and put back; the pair's state goes
//!          on every description of the pair, the queues on the master's
//! validate /dev/pts/N must be free: the index comes back unchanged (processes know the
//!          path: ttyname, tmux's pane_tty), or the restore is refused before anything exists
//! restore  the maker of the pair (the lowest common ancestor of its holders and of the
//!          leader of the session whose controlling terminal it is: needed_by) opens
//!          /dev/ptmx until TIOCGPTN says N (devpts hands out the lowest free index; the
//!          lower ones it got meanwhile are closed), unlocks, gives the slave node its owner
//!          and mode (fchown, fchmod through TIOCGPTPEER), opens each slave description
//!          (TIOCGPTPEER with its flags), sets modes, window size, packet mode and TIOCEXCL
//!          through the master; a closed slave is opened and closed once; hung-up slaves
//!          are opened on a pair made for them, whose master is then closed; the session
//!          leader takes the slave as controlling terminal (TIOCSCTTY, through an open of
//!          /dev/pts/N if it holds no fd on it) before it forks the session's other
//!          processes and before it reopens /dev/tty (take_as_leader), and the leader
//!          of the foreground group makes it the foreground one (TIOCSPGRP); once every
//!          process is whole, the queues are put back, then the lock set again
//! ```
//!
//! Output stopped (by ^S or tcflow TCOOFF) is read and made again by pty_flow.rs.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use cryo_proto::image::{
    file_desc::Kind, FdEntry, FileDesc, LineTerminal, ProcessEntry, Pty, PtyEnd,
};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use tracing::debug;

use super::inspect::OpenFd;
use super::kind::{task_pidfd, Checking, Dumping, FileKind, KindState, Opened, Opening, Seen};
use super::open::{open_flags, set_async};
use super::pty_flow;
use super::pty_queue;
use super::tty::{is_pty_master, is_pty_slave};
use super::{restore_err, FileError};
use crate::sys;

/// Pty masters, slaves and /dev/tty on a pty slave, both ends in the dump.
pub(super) struct Ptys;

/// How long a restore waits for the dumped pty's index to be freed (the killed originals'
/// ptys go when their last fd closes, which can lag the dump's end a little).
const INDEX_WAIT: Duration = Duration::from_secs(3);

/// The device of cryo's /dev/pts, noted before the restore forks (validate) for the makers,
/// which may be in a mount namespace with an instance of its own.
static CRYO_DEVPTS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// The line discipline every restored pty has (N_TTY).
const N_TTY: i32 = 0;

/// What the dump has met of one pty, by index.
#[derive(Debug, Default)]
struct PairSeen {
    /// The master's description and first holder (pid, fd).
    master: Option<(u32, Pid, RawFd)>,
    /// Every slave description (through /dev/pts/N) with its first holder.
    slaves: Vec<(u32, Pid, RawFd)>,
    /// Descriptions of /dev/tty reaching it, with their first holder.
    dev_ttys: Vec<(u32, Pid, RawFd)>,
    /// Slave descriptions hung up (their master closed), with their first holder.
    hung_up: Vec<(u32, Pid, RawFd)>,
    /// From the master: packet mode, slave lock.
    packet: bool,
    locked: bool,
    /// From a slave: TIOCEXCL.
    exclusive: bool,
    /// From a slave: the owner, group and permission bits of /dev/pts/N.
    node: (u32, u32, u32),
    /// Duplicates of the master and of a slave (or /dev/tty on it) of the dump, to read
    /// their queues once the whole dump is known (finish_dump).
    master_dup: Option<OwnedFd>,
    slave_dup: Option<(OwnedFd, Pid, RawFd)>,
    /// The devpts instance (its device) of an end, with that end's holder.
    instance: Option<(u64, Pid, RawFd)>,
}

impl PairSeen {
    /// Notes the devpts instance `instance` of an end (fd `open`) of pty `index`; refuses one
    /// other than an earlier end's (two instances' ptys of one index).
    fn note_instance(
        &mut self,
        open: &OpenFd,
        index: u32,
        instance: Option<u64>,
    ) -> Result<(), FileError> {
        match (self.instance, instance) {
            (Some((known, pid, fd)), Some(dev)) if known != dev => Err(open.dump_err(format!(
                "pty {index} of another devpts instance than the pty {index} of pid {pid} fd \
                 {fd}: two instances' ptys of one index are not made again"
            ))),
            (None, Some(dev)) => {
                self.instance = Some((dev, open.pid, open.fd));
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// The device of the devpts instance on /dev/pts as the calling process sees it.
fn devpts_here() -> std::io::Result<u64> {
    std::fs::metadata("/dev/pts").map(|m| m.dev())
}

/// The ptys of a dump, by index.
#[derive(Debug, Default)]
struct PairsSeen(BTreeMap<u32, PairSeen>);

impl FileKind for Ptys {
    type Record = Pty;

    fn record(kind: &Kind) -> Option<&Pty> {
        match kind {
            Kind::Pty(p) => Some(p),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        let rdev = fd.meta.rdev();
        let char_device = fd.meta.file_type().is_char_device();
        match fd.seen {
            Seen::CharDevice { .. } => {
                is_pty_master(rdev)
                    || (!fd.shell_job && (is_pty_slave(rdev) || is_dev_tty(rdev)))
            }
            // A slave whose master was closed: its node is gone with the master.
            Seen::RemovedNode { .. } => char_device && !fd.shell_job && is_pty_slave(rdev),
            _ => false,
        }
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        let (Seen::CharDevice { path } | Seen::RemovedNode { path }) = &fd.seen else {
            return Err(fd.open.refuse("not a terminal", false));
        };
        let path = path.clone();
        let rdev = fd.meta.rdev();
        let id = fd.id;
        let pidfd = task_pidfd(fd.open, fd.pidfd)?;
        let dup = sys::pidfd::pidfd_getfd(pidfd, fd.open.fd)
            .map_err(|e| fd.open.inspect_err("pidfd_getfd", fd.open.proc_path(), e))?;
        let pairs = &mut fd.state.get::<PairsSeen>().0;
        dump(fd.open, id, &path, rdev, dup, pairs).map(Kind::Pty)
    }

    fn validate(&self, desc: &FileDesc, p: &Pty, cx: &mut Checking<'_>) -> Result<(), FileError> {
        let end = PtyEnd::try_from(p.end).unwrap_or(PtyEnd::Invalid);
        let flow_known = [p.output_stopped, p.master_output_stopped]
            .iter()
            .all(|&n| pty_flow::Stopped::from_image(n).is_some());
        if end == PtyEnd::Invalid || p.cc.len() > 64 || !flow_known {
            return Err(FileError::Invalid {
                id: desc.id,
                detail: format!(
                    "pty /dev/pts/{}: no end, bad modes or an unknown output stop",
                    p.index
                ),
            });
        }
        if end == PtyEnd::Slave && p.hung_up {
            if cx.first(format!("pty hung up {}", p.index), desc.id).is_none() {
                wait_index_free(desc, p)?;
            }
            return Ok(());
        }
        if end != PtyEnd::Master {
            return Ok(());
        }
        if let Some(other) = cx.first(format!("pty master {}", p.index), desc.id) {
            return Err(FileError::Invalid {
                id: desc.id,
                detail: format!("file {other} is the master of /dev/pts/{} too", p.index),
            });
        }
        wait_index_free(desc, p)
    }

    fn open(&self, _desc: &FileDesc, _p: &Pty, _cx: &mut Opening<'_>) -> Result<Opened, FileError> {
        // /dev/tty too: a session leader making the pair takes its controlling terminal
        // first (open_together).
        Ok(Opened::Together)
    }

    fn open_together(&self, descs: &[&FileDesc], cx: &mut Opening<'_>) -> Result<(), FileError> {
        let mut by_index: BTreeMap<u32, Vec<(&FileDesc, &Pty)>> = BTreeMap::new();
        for &d in descs {
            if let Some(p) = d.kind.as_ref().and_then(Self::record) {
                by_index.entry(p.index).or_default().push((d, p));
            }
        }
        for group in by_index.values() {
            let (pair, dev_ttys): (Vec<_>, Vec<_>) = group
                .iter()
                .partition(|(_, p)| p.end != PtyEnd::DevTty as i32);
            let mut opened = if pair.is_empty() {
                Vec::new()
            } else {
                open_pair(&pair)?
            };
            if let Some(&(d, p)) = dev_ttys.first() {
                take_as_leader(d, p, &pair, &opened)?;
                for &(d, p) in &dev_ttys {
                    opened.push((d.id, open_dev_tty(d, p)?));
                }
            }
            cx.hold_opened(group, opened)?;
        }
        Ok(())
    }

    fn hand_down(&self) -> bool {
        true
    }

    fn made_together(&self, descs: &[FileDesc]) -> Vec<Vec<u32>> {
        let mut by_index: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for d in descs {
            if let Some(Kind::Pty(p)) = &d.kind {
                if matches!(PtyEnd::try_from(p.end), Ok(PtyEnd::Master | PtyEnd::Slave)) {
                    by_index.entry(p.index).or_default().push(d.id);
                }
            }
        }
        by_index.into_values().collect()
    }

    fn needed_by(&self, descs: &[FileDesc], set: &[u32]) -> Vec<i32> {
        // The leader of the session whose controlling terminal the pair's slave is takes it
        // before it forks the session's other processes, through a slave of the pair made by
        // then (it may hold no fd on it, its children the pair).
        let sid = descs.iter().find_map(|d| match &d.kind {
            Some(Kind::Pty(p)) if set.contains(&d.id) && p.sid > 0 => Some(p.sid),
            _ => None,
        });
        sid.into_iter().collect()
    }

    fn in_flight(&self) -> bool {
        false
    }

    fn describe(&self, _desc: &FileDesc, p: &Pty) -> String {
        match PtyEnd::try_from(p.end) {
            Ok(PtyEnd::Master) => format!("pty master of /dev/pts/{}", p.index),
            Ok(PtyEnd::Slave) => format!("pty slave /dev/pts/{}", p.index),
            _ => format!("/dev/tty (pty slave /dev/pts/{})", p.index),
        }
    }

    fn show(&self, desc: &FileDesc, p: &Pty, flags: &str) -> String {
        format!(
            "{}  {}x{}{}{}  session {} foreground {}  flags {flags}",
            self.describe(desc, p),
            p.cols,
            p.rows,
            if p.packet { "  packet mode" } else { "" },
            if p.locked { "  locked" } else { "" },
            p.sid,
            p.foreground_pgid
        )
    }
}

/// True for /dev/tty (major 5 minor 0): the caller's controlling terminal.
fn is_dev_tty(rdev: u64) -> bool {
    nix::sys::stat::major(rdev) == 5 && nix::sys::stat::minor(rdev) == 0
}

/// The index of pty slave device `rdev`: its minor under major 136 (20-bit minors; the old
/// majors 137-143 each continued 256 more).
fn slave_index(rdev: u64) -> u32 {
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    ((major - 136) * 256 + minor) as u32
}

/// The device of pty slave `index`, as the kernel numbers it (major 136, minor `index`).
fn slave_rdev(index: u32) -> u64 {
    nix::sys::stat::makedev(136, u64::from(index))
}

/// The device a `new_encode_dev` number names (TIOCGDEV, /proc/PID/stat tty_nr).
fn decode_dev(dev: u32) -> u64 {
    let major = (dev >> 8) & 0xfff;
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    nix::sys::stat::makedev(u64::from(major), u64::from(minor))
}

/// True if `tty_nr` (of /proc/PID/stat: 0 for none) is device `rdev`: the process's
/// controlling terminal.
pub(super) fn is_device(tty_nr: u32, rdev: u64) -> bool {
    tty_nr != 0 && decode_dev(tty_nr) == rdev
}

/// Dumps fd `open` (description `id`, on `path` of device `rdev`, duplicated as `held`):
/// one end of a pty, remembered in `pairs` for [`finish_dump`].
fn dump(
    open: &OpenFd,
    id: u32,
    path: &str,
    rdev: u64,
    held: OwnedFd,
    pairs: &mut BTreeMap<u32, PairSeen>,
) -> Result<Pty, FileError> {
    let dup = held.as_fd();
    let ioctl_err = |op: &'static str| move |e| open.inspect_err(op, open.proc_path(), e);
    let (end, index) = if is_pty_master(rdev) {
        let index = sys::tty::get_int(dup, libc::TIOCGPTN).map_err(ioctl_err("TIOCGPTN"))?;
        (PtyEnd::Master, index as u32)
    } else if is_pty_slave(rdev) {
        (PtyEnd::Slave, slave_index(rdev))
    } else {
        let dev = sys::tty::get_int(dup, libc::TIOCGDEV).map_err(ioctl_err("TIOCGDEV"))?;
        let real = decode_dev(dev as u32);
        if !is_pty_slave(real) {
            return Err(FileError::Terminal {
                pid: open.pid,
                fd: open.fd,
                path: format!(
                    "{path} (on device {}:{})",
                    nix::sys::stat::major(real),
                    nix::sys::stat::minor(real)
                ),
            });
        }
        (PtyEnd::DevTty, slave_index(real))
    };
    if end == PtyEnd::Slave && path != format!("/dev/pts/{index}") {
        return Err(open.dump_err(format!(
            "pty slave {path} of another devpts instance (a container's?): not supported"
        )));
    }
    let line = match sys::tty::get_int(dup, libc::TIOCGETD) {
        // Hung up: every call fails with EIO (a hung-up file's operations).
        Err(e) if end == PtyEnd::Slave && e.raw_os_error() == Some(libc::EIO) => {
            return hung_up_slave(open, id, index, dup, pairs);
        }
        r => r.map_err(ioctl_err("TIOCGETD"))?,
    };
    if line != N_TTY {
        return Err(open.dump_err(format!(
            "{path}: line discipline {line} (only N_TTY, 0, is restored)"
        )));
    }
    let t = sys::tty::termios2(dup).map_err(ioctl_err("TCGETS2"))?;
    let w = sys::tty::winsize(dup).map_err(ioctl_err("TIOCGWINSZ"))?;
    let instance = devpts_instance(open, end, dup, path)?;
    let pair = pairs.entry(index).or_default();
    pair.note_instance(open, index, instance)?;
    match end {
        PtyEnd::Master => {
            pair.packet =
                sys::tty::get_int(dup, libc::TIOCGPKT).map_err(ioctl_err("TIOCGPKT"))? != 0;
            pair.locked =
                sys::tty::get_int(dup, libc::TIOCGPTLCK).map_err(ioctl_err("TIOCGPTLCK"))? != 0;
            if pair.master.is_none() {
                pair.master = Some((id, open.pid, open.fd));
            }
        }
        PtyEnd::Slave | PtyEnd::DevTty => {
            pair.exclusive =
                sys::tty::get_int(dup, libc::TIOCGEXCL).map_err(ioctl_err("TIOCGEXCL"))? != 0;
            if end == PtyEnd::Slave {
                // /dev/tty's own node is not the slave's.
                let st = nix::sys::stat::fstat(dup).map_err(|e| ioctl_err("fstat")(e.into()))?;
                pair.node = (st.st_uid, st.st_gid, st.st_mode & 0o7777);
            }
            let list = if end == PtyEnd::Slave {
                &mut pair.slaves
            } else {
                &mut pair.dev_ttys
            };
            list.push((id, open.pid, open.fd));
        }
        PtyEnd::Invalid => unreachable!("set above"),
    }
    if end == PtyEnd::Master {
        pair.master_dup.get_or_insert(held);
    } else {
        pair.slave_dup.get_or_insert((held, open.pid, open.fd));
    }
    debug!(pid = %open.pid, fd = open.fd, path, index, end = ?end, "pty");
    Ok(Pty {
        end: end as i32,
        index,
        iflag: t.c_iflag,
        oflag: t.c_oflag,
        cflag: t.c_cflag,
        lflag: t.c_lflag,
        line: u32::from(t.c_line),
        cc: t.c_cc.to_vec(),
        ispeed: t.c_ispeed,
        ospeed: t.c_ospeed,
        rows: u32::from(w.ws_row),
        cols: u32::from(w.ws_col),
        xpixel: u32::from(w.ws_xpixel),
        ypixel: u32::from(w.ws_ypixel),
        ..Default::default()
    })
}

/// The devpts instance (its device number) end `end` of a pty is of (`dup`, opened by its
/// holder as `path`): a slave's own; a master opened as devpts's own ptmx node, that
/// instance; one opened through another ptmx node, the instance on `pts` beside it as its
/// holder sees it (where the kernel looks when it opens one; a slave of the dump of another
/// instance is refused for its index in [`dump`]). None for /dev/tty.
fn devpts_instance(
    open: &OpenFd,
    end: PtyEnd,
    dup: BorrowedFd<'_>,
    path: &str,
) -> Result<Option<u64>, FileError> {
    let fstat = || {
        nix::sys::stat::fstat(dup)
            .map(|st| Some(st.st_dev))
            .map_err(|e| open.inspect_err("fstat", open.proc_path(), e.into()))
    };
    match end {
        PtyEnd::Slave => fstat(),
        PtyEnd::Master => {
            let on_devpts = nix::sys::statfs::fstatfs(dup)
                .is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::DEVPTS_SUPER_MAGIC);
            if on_devpts {
                return fstat();
            }
            let beside = Path::new(path).with_file_name("pts");
            let seen = crate::task::mount_ns::as_seen_by(open.pid, &beside.to_string_lossy());
            std::fs::metadata(&seen)
                .map(|m| Some(m.dev()))
                .map_err(|e| open.inspect_err("stat", seen.to_path_buf(), e))
        }
        _ => Ok(None),
    }
}

/// Slave fd `open` (description `id`, on pty `index`, duplicated as `dup`) that failed a
/// call with EIO: hung up, checked by poll (POLLHUP with POLLERR, as only a hung-up file
/// polls), remembered in `pairs`.
fn hung_up_slave(
    open: &OpenFd,
    id: u32,
    index: u32,
    dup: BorrowedFd<'_>,
    pairs: &mut BTreeMap<u32, PairSeen>,
) -> Result<Pty, FileError> {
    let mut fds = [nix::poll::PollFd::new(dup, nix::poll::PollFlags::POLLIN)];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO)
        .map_err(|e| open.inspect_err("poll", open.proc_path(), e.into()))?;
    let hung = nix::poll::PollFlags::POLLHUP | nix::poll::PollFlags::POLLERR;
    if !fds[0].revents().is_some_and(|r| r.contains(hung)) {
        return Err(open.dump_err(format!(
            "pty slave /dev/pts/{index}: its line discipline fails with EIO but it is not hung \
             up: not supported"
        )));
    }
    let instance = devpts_instance(open, PtyEnd::Slave, dup, "")?;
    let pair = pairs.entry(index).or_default();
    pair.note_instance(open, index, instance)?;
    pair.hung_up.push((id, open.pid, open.fd));
    debug!(pid = %open.pid, fd = open.fd, index, "pty slave hung up");
    Ok(Pty {
        end: PtyEnd::Slave as i32,
        index,
        hung_up: true,
        ..Default::default()
    })
}

/// A dumped process as the terminal checks see it.
#[derive(Debug, Clone)]
pub struct TtyProcess {
    /// Its pid.
    pub pid: i32,
    /// Its session.
    pub sid: i32,
    /// Its process group.
    pub pgid: i32,
    /// Its controlling terminal (`tty_nr` of /proc/PID/stat, 0: none) and that terminal's
    /// foreground group.
    pub tty_nr: u32,
    /// The foreground group of its controlling terminal (`tpgid`).
    pub tpgid: i32,
}

/// Once every process is dumped: each pty has both ends in the dump, the session relations
/// are ones a restore makes again, and every description of a pair gets the pair's state.
/// Without `shell_job`, a controlling terminal outside the dump is refused too, but for a
/// line terminal (a virtual console, a serial port): returned by session, for the sessions'
/// processes to take again.
pub(super) fn finish_dump(
    descs: &mut [FileDesc],
    state: &mut KindState,
    procs: &[TtyProcess],
    shell_job: bool,
) -> Result<BTreeMap<i32, LineTerminal>, FileError> {
    let mut pairs = std::mem::take(&mut state.get::<PairsSeen>().0);
    let members: std::collections::HashSet<i32> = procs.iter().map(|p| p.pid).collect();
    let mut closed = std::collections::BTreeSet::new();
    for (index, pair) in pairs.iter_mut() {
        if pair.master.is_some() && pair.slaves.is_empty() && pair.dev_ttys.is_empty() {
            if let Some(peer) = closed_slave(*index, pair, &members)? {
                closed.insert(*index);
                open_closed_slave(*index, pair, peer)?;
            }
        }
        if pair.master.is_some() && pair.slaves.is_empty() && !pair.dev_ttys.is_empty() {
            slave_through_dev_tty(*index, pair, &members)?;
        }
    }
    for (index, pair) in &pairs {
        if let Some(&(_, pid, fd)) = pair.hung_up.first() {
            let live = pair.master.is_some() || !pair.slaves.is_empty() || !pair.dev_ttys.is_empty();
            if live {
                return Err(FileError::Dump {
                    pid,
                    fd,
                    detail: format!(
                        "pty slave /dev/pts/{index}: hung up (TIOCVHANGUP, vhangup) while the \
                         pty has open ends: not supported"
                    ),
                });
            }
            continue;
        }
        if pair.master.is_none() {
            let (_, pid, fd) = pair
                .slaves
                .first()
                .or(pair.dev_ttys.first())
                .copied()
                .unwrap_or((0, Pid::from_raw(0), -1));
            return Err(FileError::Dump {
                pid,
                fd,
                detail: format!(
                    "pty slave /dev/pts/{index}: its master is held outside the dump (dump the \
                     process holding it too, or a shell job's terminal with --shell-job)"
                ),
            });
        }
        if pair.slaves.is_empty() && pair.dev_ttys.is_empty() && !closed.contains(index) {
            let (_, pid, fd) = pair.master.expect("checked above");
            return Err(FileError::Dump {
                pid,
                fd,
                detail: format!(
                    "pty master of /dev/pts/{index}: no dumped process holds its slave (held \
                     outside the dump, or closed): not supported"
                ),
            });
        }
    }
    // Neither end may also be open in a process outside the dump: that process would keep
    // the old terminal, hung up once the dumped master goes, and not the restored one.
    for (index, pair) in &pairs {
        let ends = pair
            .master
            .iter()
            .map(|&(_, pid, fd)| ("pty master of", pid, fd, true))
            .chain(pair.slaves.first().map(|&(_, pid, fd)| ("pty slave", pid, fd, false)))
            .chain(pair.hung_up.first().map(|&(_, pid, fd)| ("pty slave", pid, fd, false)));
        for (end, pid, fd, same_description) in ends {
            let err = |detail: String| FileError::Dump { pid, fd, detail };
            let found = super::outside::holder(pid, fd, &members, same_description)
                .map_err(|e| err(format!("look for holders of /dev/pts/{index}: {e}")))?;
            if let Some(h) = found {
                return Err(err(format!(
                    "{end} /dev/pts/{index}: also held by pid {} (fd {}), outside the dump: \
                     not supported (dump that process too)",
                    h.pid, h.fd
                )));
            }
        }
    }
    let by_pid: HashMap<i32, &TtyProcess> = procs.iter().map(|p| (p.pid, p)).collect();
    // The foreground group (0: the session's own) of the terminal `path` of `p`'s session,
    // whose leader and the group's must be in the dump.
    let foreground_of = |p: &TtyProcess, path: &str| -> Result<i32, FileError> {
        let leader = by_pid.get(&p.sid).ok_or_else(|| FileError::Dump {
            pid: Pid::from_raw(p.pid),
            fd: -1,
            detail: format!(
                "its controlling terminal {path} belongs to session {}, whose leader is not \
                 in the dump",
                p.sid
            ),
        })?;
        let fg = leader.tpgid;
        if fg > 0 && fg != leader.sid {
            let led = by_pid
                .get(&fg)
                .is_some_and(|g| g.pgid == fg && g.sid == leader.sid);
            if !led {
                return Err(FileError::Dump {
                    pid: Pid::from_raw(leader.pid),
                    fd: -1,
                    detail: format!(
                        "the foreground process group {fg} of its terminal {path} has no \
                         leader in the dump: not supported"
                    ),
                });
            }
        }
        Ok(fg.max(0))
    };
    // index -> (session, foreground group)
    let mut sessions: BTreeMap<u32, (i32, i32)> = BTreeMap::new();
    // session -> its line terminal (and rdev)
    let mut lines: BTreeMap<i32, (LineTerminal, u64)> = BTreeMap::new();
    for p in procs.iter().filter(|p| p.tty_nr != 0) {
        let rdev = decode_dev(p.tty_nr);
        if !shell_job && super::devices::is_line_terminal(rdev) {
            if let std::collections::btree_map::Entry::Vacant(slot) = lines.entry(p.sid) {
                let terminal = line_terminal_of(p, rdev, descs)?;
                let fg = foreground_of(p, &terminal.path)?;
                let terminal = LineTerminal {
                    foreground_pgid: fg,
                    ..terminal
                };
                slot.insert((terminal, rdev));
            }
            continue;
        }
        let path = if is_pty_slave(rdev) {
            format!("/dev/pts/{}", slave_index(rdev))
        } else {
            format!(
                "device {}:{}",
                nix::sys::stat::major(rdev),
                nix::sys::stat::minor(rdev)
            )
        };
        let index = slave_index(rdev);
        if !is_pty_slave(rdev) || !pairs.contains_key(&index) {
            if shell_job {
                continue;
            }
            return Err(FileError::Dump {
                pid: Pid::from_raw(p.pid),
                fd: -1,
                detail: format!(
                    "its controlling terminal {path} is outside the dump (dump a shell job \
                     with --shell-job, or the terminal's master with it)"
                ),
            });
        }
        // A leader holding no fd on the slave opens it to take it (then closes it): the
        // restore plan makes the pair at or above it (needed_by).
        let fg = foreground_of(p, &path)?;
        sessions.insert(index, (p.sid, fg));
    }
    // Every member of a terminal's session has it as controlling terminal: a restore gives it
    // to the session's processes by inheritance from the leader.
    for p in procs {
        if let Some((terminal, rdev)) = lines.get(&p.sid) {
            if !is_device(p.tty_nr, *rdev) {
                return Err(FileError::Dump {
                    pid: Pid::from_raw(p.pid),
                    fd: -1,
                    detail: format!(
                        "in the session of terminal {} without it as controlling terminal: \
                         not supported",
                        terminal.path
                    ),
                });
            }
        }
        for (index, &(sid, _)) in &sessions {
            if p.sid == sid && !is_device(p.tty_nr, slave_rdev(*index)) {
                return Err(FileError::Dump {
                    pid: Pid::from_raw(p.pid),
                    fd: -1,
                    detail: format!(
                        "in the session of terminal /dev/pts/{index} without it as controlling \
                         terminal: not supported"
                    ),
                });
            }
        }
    }
    let in_namespace = namespace_instances(&pairs)?;
    // What neither end has read, read out and put back at once: on the master's record.
    let mut queued = BTreeMap::new();
    let mut stopped = BTreeMap::new();
    for (&index, pair) in &pairs {
        queued.insert(index, take_queues(index, pair, descs)?);
        stopped.insert(index, read_flow(index, pair)?);
    }
    for d in descs.iter_mut() {
        let Some(Kind::Pty(p)) = &mut d.kind else {
            continue;
        };
        let Some(pair) = pairs.get(&p.index) else {
            continue;
        };
        if p.end == PtyEnd::Master as i32 {
            p.slave_closed = closed.contains(&p.index);
            if let Some((output, input)) = queued.remove(&p.index) {
                p.queued_output = output;
                p.queued_input_lines = input.lines;
                p.queued_input_tail = input.tail;
            }
            if let Some((slave, master)) = stopped.remove(&p.index) {
                p.output_stopped = slave.to_image();
                p.master_output_stopped = master.to_image();
            }
        }
        p.namespace_devpts = in_namespace.contains(&p.index);
        p.packet = pair.packet;
        p.locked = pair.locked;
        p.exclusive = pair.exclusive;
        (p.slave_uid, p.slave_gid, p.slave_mode) = pair.node;
        (p.sid, p.foreground_pgid) = sessions.get(&p.index).copied().unwrap_or((0, 0));
    }
    Ok(lines.into_iter().map(|(sid, (t, _))| (sid, t)).collect())
}

/// The ptys of `pairs` of a devpts instance other than cryo's /dev/pts: the one mounted on
/// /dev/pts of their holder's mount namespace (its own, made new by the restore), one such
/// instance at most in a dump; any other refused.
fn namespace_instances(
    pairs: &BTreeMap<u32, PairSeen>,
) -> Result<std::collections::BTreeSet<u32>, FileError> {
    let ours = devpts_here().ok();
    let mut found: Option<(u64, Pid)> = None;
    let mut out = std::collections::BTreeSet::new();
    for (&index, pair) in pairs {
        let Some((dev, pid, fd)) = pair.instance.filter(|&(dev, ..)| Some(dev) != ours) else {
            continue;
        };
        let err = |detail: String| FileError::Dump { pid, fd, detail };
        let theirs = crate::task::mount_ns::as_seen_by(pid, "/dev/pts");
        if !std::fs::metadata(&theirs).is_ok_and(|m| m.dev() == dev) {
            return Err(err(format!(
                "pty {index} of a devpts instance that is neither cryo's nor the one on \
                 /dev/pts of the process: not supported"
            )));
        }
        match found {
            Some((other, first)) if other != dev => {
                return Err(err(format!(
                    "pty {index} of the devpts instance on /dev/pts of the process, another \
                     than pid {first}'s, whose ptys the dump holds too: one such instance per \
                     dump is made again"
                )));
            }
            _ => found = Some((dev, pid)),
        }
        out.insert(index);
    }
    Ok(out)
}

/// Line terminal `rdev`, the controlling terminal of `p`'s session, as a restore takes it
/// again: through the node an fd of the dump (in `descs`) holds it by, else its node in
/// /dev; opened now to refuse what an open would not give back (devices.rs).
fn line_terminal_of(
    p: &TtyProcess,
    rdev: u64,
    descs: &[FileDesc],
) -> Result<LineTerminal, FileError> {
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let err = |detail: String| FileError::Dump {
        pid: Pid::from_raw(p.pid),
        fd: -1,
        detail,
    };
    // Its last close would end it as the session's terminal: the restored leader takes it
    // through an fd of its own on it.
    let leader_fds = std::fs::read_dir(format!("/proc/{}/fd", p.sid))
        .map_err(|e| err(format!("read the fds of session leader {}: {e}", p.sid)))?;
    let on_it = leader_fds.flatten().any(|fd| {
        std::fs::metadata(fd.path()).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == rdev)
    });
    if !on_it {
        return Err(err(format!(
            "its controlling terminal, device {major}:{minor}, is held by no fd of the \
             session's leader (pid {}): not supported",
            p.sid
        )));
    }
    // Paths as the leader sees them (a mount namespace of its own: a container's /dev).
    let seen = |path: &str| crate::task::mount_ns::as_seen_by(Pid::from_raw(p.sid), path);
    let held = descs.iter().find_map(|d| match &d.kind {
        Some(Kind::CharDevice(path)) => std::fs::metadata(&*seen(path))
            .is_ok_and(|m| m.rdev() == rdev)
            .then(|| path.clone()),
        _ => None,
    });
    let path = held.or_else(|| super::devices::line_terminal_node(rdev, seen)).ok_or_else(|| {
        err(format!(
            "its controlling terminal, device {major}:{minor}, has no node in /dev (/dev/ttyN, \
             /dev/ttySN) to take it again through: not supported"
        ))
    })?;
    let tty = nix::fcntl::open(
        &*seen(&path),
        OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(format!("its controlling terminal {path}: open: {e}")))?;
    match super::devices::line_terminal_unrestorable(tty.as_fd(), rdev) {
        Ok(None) => Ok(LineTerminal {
            path,
            foreground_pgid: 0,
        }),
        Ok(Some(why)) => Err(err(format!("its controlling terminal {path}: {why}"))),
        Err((op, e)) => Err(err(format!("its controlling terminal {path}: {op}: {e}"))),
    }
}

/// For pty `index` whose master (in `pair`) is the dump's and whose slave no dumped process
/// holds: when the slave was opened and closed (the master polls POLLHUP) and no process
/// outside the dump `members` has it as controlling terminal, a new open of it to read its
/// state and input through (closed at the end of the dump: the master polls POLLHUP again).
/// None when the slave is open somewhere, or was never opened.
fn closed_slave(
    index: u32,
    pair: &PairSeen,
    members: &std::collections::HashSet<i32>,
) -> Result<Option<OwnedFd>, FileError> {
    let (Some((_, pid, fd)), Some(master)) = (pair.master, &pair.master_dup) else {
        return Ok(None);
    };
    let err = |detail: String| FileError::Dump {
        pid,
        fd,
        detail: format!("pty master of /dev/pts/{index}: {detail}"),
    };
    let master = master.as_fd();
    let mut fds = [nix::poll::PollFd::new(master, nix::poll::PollFlags::POLLIN)];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO)
        .map_err(|e| err(format!("poll: {e}")))?;
    let hung_up = fds[0]
        .revents()
        .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLHUP));
    if !hung_up {
        return Ok(None);
    }
    // A session outside the dump could open it again through /dev/tty.
    let rdev = slave_rdev(index);
    let me = std::process::id() as i32;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(other) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if other == me || members.contains(&other) {
            continue;
        }
        let Ok(stat) = crate::proc::task_stat::read(Pid::from_raw(other)) else {
            continue;
        };
        if is_device(stat.tty_nr, rdev) {
            return Err(err(format!(
                "its slave, closed, is the controlling terminal of pid {other}, outside the \
                 dump: not supported (dump that process too)"
            )));
        }
    }
    open_slave_anew(index, pair).map(Some)
}

/// A new open of the slave of pty `index` (`pair`, whose master the dump holds) through a
/// duplicate of its master (TIOCGPTPEER): the slave opens only unlocked, so a locked one is
/// unlocked for the open and locked again at once.
fn open_slave_anew(index: u32, pair: &PairSeen) -> Result<OwnedFd, FileError> {
    let (Some((_, pid, fd)), Some(master)) = (pair.master, &pair.master_dup) else {
        return Err(FileError::Dump {
            pid: Pid::from_raw(0),
            fd: -1,
            detail: format!("pty /dev/pts/{index}: no master in the dump"),
        });
    };
    let master = master.as_fd();
    let step = |op: &'static str| {
        move |e: std::io::Error| FileError::Dump {
            pid,
            fd,
            detail: format!("pty master of /dev/pts/{index}: {op}: {e}"),
        }
    };
    if pair.locked {
        sys::tty::set_int(master, libc::TIOCSPTLCK, 0).map_err(step("TIOCSPTLCK (unlock)"))?;
    }
    let peer = sys::tty::open_peer(master, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
    if pair.locked {
        sys::tty::set_int(master, libc::TIOCSPTLCK, 1).map_err(step("TIOCSPTLCK (lock)"))?;
    }
    peer.map_err(step("TIOCGPTPEER"))
}

/// For pty `index` whose slave the dump holds only through /dev/tty (a session leader's, its
/// master in `pair`): the slave node's owner and mode, from a new open of it (closed again:
/// /dev/tty keeps the slave open), and no process outside the dump `members` may hold the
/// slave (it would keep the old one, hung up once the dumped master goes).
fn slave_through_dev_tty(
    index: u32,
    pair: &mut PairSeen,
    members: &std::collections::HashSet<i32>,
) -> Result<(), FileError> {
    let &(_, pid, fd) = pair.dev_ttys.first().expect("a /dev/tty");
    let err = |detail: String| FileError::Dump {
        pid,
        fd,
        detail: format!("/dev/tty (pty slave /dev/pts/{index}): {detail}"),
    };
    let peer = open_slave_anew(index, pair)?;
    let st = nix::sys::stat::fstat(&peer).map_err(|e| err(format!("fstat: {e}")))?;
    pair.node = (st.st_uid, st.st_gid, st.st_mode & 0o7777);
    let me = nix::unistd::getpid();
    let found = super::outside::holder(me, peer.as_raw_fd(), members, false)
        .map_err(|e| err(format!("look for holders of /dev/pts/{index}: {e}")))?;
    if let Some(h) = found {
        return Err(err(format!(
            "the slave is also held by pid {} (fd {}), outside the dump: not supported (dump \
             that process too)",
            h.pid, h.fd
        )));
    }
    Ok(())
}

/// Takes the state of closed slave `index` from `peer`, a new open of it: exclusive mode,
/// the node's owner and mode, its input (through `pair.slave_dup`).
fn open_closed_slave(index: u32, pair: &mut PairSeen, peer: OwnedFd) -> Result<(), FileError> {
    let (_, pid, fd) = pair.master.expect("a master");
    let err = |op: &str, e: std::io::Error| FileError::Dump {
        pid,
        fd,
        detail: format!("pty master of /dev/pts/{index}: the closed slave: {op}: {e}"),
    };
    pair.exclusive = sys::tty::get_int(peer.as_fd(), libc::TIOCGEXCL)
        .map_err(|e| err("TIOCGEXCL", e))?
        != 0;
    let st = nix::sys::stat::fstat(&peer).map_err(|e| err("fstat", e.into()))?;
    pair.node = (st.st_uid, st.st_gid, st.st_mode & 0o7777);
    pair.slave_dup = Some((peer, pid, fd));
    Ok(())
}

/// The queues of pty `index` (`pair`, its descriptions among `descs`): what the slave wrote
/// and the master has not read, and the slave's input not read, each read out and put back.
/// How the output of each end of pty `index` is stopped (slave, master), read through the
/// duplicates in `pair` once its queues are read out and put back (pty_flow.rs).
fn read_flow(
    index: u32,
    pair: &PairSeen,
) -> Result<(pty_flow::Stopped, pty_flow::Stopped), FileError> {
    let mut ends = (pty_flow::Stopped::No, pty_flow::Stopped::No);
    if let Some((dup, pid, fd)) = &pair.slave_dup {
        ends.0 = pty_flow::read(dup.as_fd(), true, pair.packet).map_err(|detail| {
            FileError::Dump {
                pid: *pid,
                fd: *fd,
                detail: format!("pty slave /dev/pts/{index}: {detail}"),
            }
        })?;
    }
    if let (Some(dup), Some((_, pid, fd))) = (&pair.master_dup, pair.master) {
        ends.1 = pty_flow::read(dup.as_fd(), false, pair.packet).map_err(|detail| {
            FileError::Dump {
                pid,
                fd,
                detail: format!("pty master of /dev/pts/{index}: {detail}"),
            }
        })?;
    }
    Ok(ends)
}

fn take_queues(
    index: u32,
    pair: &PairSeen,
    descs: &[FileDesc],
) -> Result<(Vec<u8>, pty_queue::Input), FileError> {
    let asynchronous = |ids: &[u32]| {
        descs
            .iter()
            .any(|d| ids.contains(&d.id) && d.flags & libc::O_ASYNC as u32 != 0)
    };
    let refused_async = |what: &str, n: usize| {
        format!(
            "{n} bytes {what} not read yet while a description of it has O_ASYNC (not \
             supported: putting them back would signal its owner)"
        )
    };
    let mut output = Vec::new();
    if let (Some(dup), Some((id, pid, fd))) = (&pair.master_dup, pair.master) {
        let err = |detail: String| FileError::Dump {
            pid,
            fd,
            detail: format!("pty master of /dev/pts/{index}: {detail}"),
        };
        let dup = dup.as_fd();
        if asynchronous(&[id]) {
            let n = sys::fd::fionread(dup).map_err(|e| err(format!("FIONREAD: {e}")))?;
            if n > 0 {
                return Err(err(refused_async("written by the slave", n)));
            }
        } else {
            output = pty_queue::take_output(dup, pair.packet).map_err(|e| err(e.to_string()))?;
        }
    }
    let mut input = pty_queue::Input::default();
    if let Some((dup, pid, fd)) = &pair.slave_dup {
        let err = |detail: String| FileError::Dump {
            pid: *pid,
            fd: *fd,
            detail: format!("pty slave /dev/pts/{index}: {detail}"),
        };
        let dup = dup.as_fd();
        let slaves: Vec<u32> = pair.slaves.iter().chain(&pair.dev_ttys).map(|s| s.0).collect();
        if asynchronous(&slaves) {
            let n = sys::fd::fionread(dup).map_err(|e| err(format!("FIONREAD: {e}")))?;
            if n > 0 {
                return Err(err(refused_async("of input", n)));
            }
        } else {
            let t = sys::tty::termios2(dup).map_err(|e| err(format!("TCGETS2: {e}")))?;
            input = pty_queue::take_input(dup, &t, pair.packet)
                .map_err(|e| err(e.to_string()))?;
        }
    }
    if !output.is_empty() || !input.is_empty() {
        debug!(
            index,
            output = output.len(),
            input = input.len(),
            "pty queues"
        );
    }
    Ok((output, input))
}

/// Once every restored process is whole and before any runs: each pty's queues put back
/// (through duplicates of its master and of a slave fd of a restored process). `tasks`: per
/// process, its pid as cryo sees it and its fds.
pub(crate) fn refill_queues(
    descs: &[FileDesc],
    tasks: &[(Pid, &[FdEntry])],
) -> Result<(), FileError> {
    let dup_of = |d: &FileDesc| -> Result<Option<OwnedFd>, FileError> {
        let holder = tasks
            .iter()
            .find_map(|(pid, fds)| fds.iter().find(|e| e.file_id == d.id).map(|e| (*pid, e.fd)));
        let Some((pid, fd)) = holder else {
            return Ok(None);
        };
        let pidfd = sys::pidfd::pidfd_open(pid).map_err(|e| restore_err(d, "pidfd_open", e))?;
        sys::pidfd::pidfd_getfd(pidfd.as_fd(), fd)
            .map(Some)
            .map_err(|e| restore_err(d, "pidfd_getfd", e))
    };
    for d in descs {
        let Some(Kind::Pty(p)) = &d.kind else {
            continue;
        };
        if p.end != PtyEnd::Master as i32 {
            continue;
        }
        let input = pty_queue::Input {
            lines: p.queued_input_lines.clone(),
            tail: p.queued_input_tail.clone(),
        };
        let stopped = |n| pty_flow::Stopped::from_image(n).unwrap_or(pty_flow::Stopped::No);
        let (slave_stopped, master_stopped) =
            (stopped(p.output_stopped), stopped(p.master_output_stopped));
        let needs_slave = !input.is_empty() || slave_stopped != pty_flow::Stopped::No;
        // The master, taken once for whatever needs it.
        let master = if (needs_slave && p.slave_closed)
            || !p.queued_output.is_empty()
            || master_stopped != pty_flow::Stopped::No
        {
            dup_of(d)?
        } else {
            None
        };
        if needs_slave {
            let held = descs
                .iter()
                .filter(|s| match &s.kind {
                    Some(Kind::Pty(q)) => q.index == p.index && q.end != PtyEnd::Master as i32,
                    _ => false,
                })
                .find_map(|s| dup_of(s).transpose())
                .transpose()?;
            // A closed slave: opened for the while (and closed again).
            let opened = || -> Result<Option<OwnedFd>, FileError> {
                let Some(master) = master.as_ref().filter(|_| p.slave_closed) else {
                    return Ok(None);
                };
                let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
                sys::tty::open_peer(master.as_fd(), flags)
                    .map(Some)
                    .map_err(|e| restore_err(d, "TIOCGPTPEER (the closed slave)", e))
            };
            let slave = match held {
                Some(fd) => Some(fd),
                None => opened()?,
            }
            .ok_or_else(|| FileError::Invalid {
                    id: d.id,
                    detail: format!(
                        "pty /dev/pts/{}: input queued or output stopped but no restored \
                         process holds the slave",
                        p.index
                    ),
                })?;
            if !input.is_empty() {
                let t =
                    sys::tty::termios2(slave.as_fd()).map_err(|e| restore_err(d, "TCGETS2", e))?;
                pty_queue::put_input(slave.as_fd(), &t, &input).map_err(|e| {
                    super::error::changed(d, format!("the slave's input put back: {e}"))
                })?;
            }
            // Last: stopped output takes no byte the queues put back.
            pty_flow::stop(slave.as_fd(), slave_stopped).map_err(|e| {
                super::error::changed(d, format!("the slave's output stopped again: {e}"))
            })?;
        }
        let Some(master) = master else {
            continue;
        };
        if !p.queued_output.is_empty() {
            pty_queue::put_output(master.as_fd(), &p.queued_output).map_err(|e| {
                super::error::changed(d, format!("the output for the master put back: {e}"))
            })?;
        }
        pty_flow::stop(master.as_fd(), master_stopped).map_err(|e| {
            super::error::changed(d, format!("the master's output stopped again: {e}"))
        })?;
    }
    Ok(())
}

/// Waits (bounded) until /dev/pts/`index` of cryo's devpts is free; refuses the restore if
/// it stays taken. A pty of a namespace's own instance (`p.namespace_devpts`) comes back in
/// the new instance its namespace's restore mounts: nothing to wait for. Notes cryo's
/// instance for the makers ([`open_ptmx_at`]).
fn wait_index_free(desc: &FileDesc, p: &Pty) -> Result<(), FileError> {
    if CRYO_DEVPTS.get().is_none() {
        let ours = devpts_here().map_err(|e| restore_err(desc, "stat /dev/pts", e))?;
        CRYO_DEVPTS.get_or_init(|| ours);
    }
    if p.namespace_devpts {
        return Ok(());
    }
    let index = p.index;
    let path = format!("/dev/pts/{index}");
    let deadline = Instant::now() + INDEX_WAIT;
    while Path::new(&path).exists() {
        if Instant::now() >= deadline {
            return Err(super::error::changed(
                desc,
                format!(
                    "{path} is taken on this machine: the pty comes back only with its index \
                     (its processes know it by that path)"
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Opens /dev/ptmx with `flags` until it gets pty `index` (devpts hands out the lowest free
/// index: the lower ones got meanwhile are closed when this returns).
fn open_ptmx_at(desc: &FileDesc, p: &Pty, flags: OFlag) -> Result<OwnedFd, FileError> {
    let index = p.index;
    // The maker's /dev/ptmx leads to the instance on /dev/pts beside it: the one the pair was
    // of, or the pair would come back in another (a maker outside the namespace).
    let here = devpts_here().map_err(|e| restore_err(desc, "stat /dev/pts", e))?;
    if CRYO_DEVPTS.get().is_some_and(|&ours| (here == ours) == p.namespace_devpts) {
        let (was, is) = if p.namespace_devpts {
            ("of its namespace's own devpts", "cryo's")
        } else {
            ("of cryo's devpts", "another instance")
        };
        return Err(super::error::changed(
            desc,
            format!("pty {index} was {was}, and its maker's /dev/pts is {is}: not made again"),
        ));
    }
    let mut lower = Vec::new();
    loop {
        let fd = nix::fcntl::open("/dev/ptmx", flags, Mode::empty())
            .map_err(|e| restore_err(desc, "open /dev/ptmx", e.into()))?;
        let got = sys::tty::get_int(fd.as_fd(), libc::TIOCGPTN)
            .map_err(|e| restore_err(desc, "TIOCGPTN", e))? as u32;
        if got == index {
            return Ok(fd);
        }
        if got > index || lower.len() > index as usize {
            return Err(super::error::changed(
                desc,
                format!("/dev/pts/{index} was taken meanwhile (/dev/ptmx gave {got})"),
            ));
        }
        lower.push(fd);
    }
}

/// Makes one pty pair from its descriptions (the master and every slave description):
/// returns an fd per description id.
fn open_pair(group: &[(&FileDesc, &Pty)]) -> Result<Vec<(u32, OwnedFd)>, FileError> {
    if group.iter().all(|(_, p)| p.hung_up) {
        return open_hung_up(group);
    }
    let &(mdesc, p) = group
        .iter()
        .find(|(_, p)| p.end == PtyEnd::Master as i32)
        .ok_or_else(|| FileError::Invalid {
            id: group[0].0.id,
            detail: format!("pty /dev/pts/{}: no master description", group[0].1.index),
        })?;
    // Its node made as its owner can be given it (in a user namespace: userns::make_for).
    let master = crate::task::userns::make_for(p.slave_uid, p.slave_gid, || {
        open_ptmx_at(mdesc, p, open_flags(mdesc.flags))
    })?;
    let m = master.as_fd();
    let step = |op: &'static str| move |e| restore_err(mdesc, op, e);
    sys::tty::set_int(m, libc::TIOCSPTLCK, 0).map_err(step("TIOCSPTLCK (unlock)"))?;
    if p.slave_mode != 0 {
        // The node's owner first: a chown may clear permission bits.
        let node = sys::tty::open_peer(m, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC)
            .map_err(step("TIOCGPTPEER"))?;
        crate::task::userns::chown_as_dumped(node.as_fd(), p.slave_uid, p.slave_gid)
            .map_err(|e| step("fchown /dev/pts/N")(e.into()))?;
        nix::sys::stat::fchmod(&node, Mode::from_bits_truncate(p.slave_mode))
            .map_err(|e| step("fchmod /dev/pts/N")(e.into()))?;
    }
    let mut out = Vec::with_capacity(group.len());
    for &(desc, s) in group.iter().filter(|(_, s)| s.end == PtyEnd::Slave as i32) {
        // Without O_CLOEXEC: TIOCGPTPEER would keep it in the file's own flags (F_GETFL,
        // fdinfo), where no open(2) leaves it; the fd is a temporary of this process anyway.
        let flags = open_flags(desc.flags).bits() & !libc::O_CLOEXEC;
        let slave =
            sys::tty::open_peer(m, flags).map_err(|e| restore_err(desc, "TIOCGPTPEER", e))?;
        set_async(desc, &slave)?;
        if s.exclusive {
            sys::tty::set_exclusive(slave.as_fd()).map_err(|e| restore_err(desc, "TIOCEXCL", e))?;
        }
        out.push((desc.id, slave));
    }
    // Held through /dev/tty only (its holders reopen it later): exclusive mode set through
    // an open of it, closed again.
    let dev_tty_only = out.is_empty() && p.exclusive;
    if p.slave_closed || dev_tty_only {
        // Opened and closed once: a read of the master gives EIO until it opens again.
        let peer = sys::tty::open_peer(m, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC)
            .map_err(step("TIOCGPTPEER (the closed slave)"))?;
        if p.exclusive {
            sys::tty::set_exclusive(peer.as_fd()).map_err(step("TIOCEXCL"))?;
        }
    }
    let mut t = sys::tty::termios2(m).map_err(step("TCGETS2"))?;
    t.c_iflag = p.iflag;
    t.c_oflag = p.oflag;
    t.c_cflag = p.cflag;
    t.c_lflag = p.lflag;
    t.c_line = p.line as libc::cc_t;
    for (to, from) in t.c_cc.iter_mut().zip(&p.cc) {
        *to = *from;
    }
    t.c_ispeed = p.ispeed;
    t.c_ospeed = p.ospeed;
    sys::tty::set_termios2(m, &t).map_err(step("TCSETS2"))?;
    let w = libc::winsize {
        ws_row: p.rows as u16,
        ws_col: p.cols as u16,
        ws_xpixel: p.xpixel as u16,
        ws_ypixel: p.ypixel as u16,
    };
    sys::tty::set_winsize(m, &w).map_err(step("TIOCSWINSZ"))?;
    sys::tty::set_int(m, libc::TIOCPKT, i32::from(p.packet)).map_err(step("TIOCPKT"))?;
    // A locked slave is locked again once every process is whole (lock_slaves): until then
    // its processes reopen /dev/tty on it.
    set_async(mdesc, &master)?;
    debug!(index = p.index, slaves = out.len(), "pty pair made");
    out.push((mdesc.id, master));
    Ok(out)
}

/// In the restore child that reopens /dev/tty (`desc`, `p`) on a pty: when it leads the
/// session whose controlling terminal the slave was, it takes it now (TIOCSCTTY), so the
/// /dev/tty opens find it. Through a slave of the pair when it made it here (`pair`, `opened`:
/// its fds by description id), or a new open of the slave through the master made here, or
/// by its path when an ancestor made the pair (the plan makes it at or above the leader:
/// [`FileKind::needed_by`]); a slave opened for it is closed again.
fn take_as_leader(
    desc: &FileDesc,
    p: &Pty,
    pair: &[(&FileDesc, &Pty)],
    opened: &[(u32, OwnedFd)],
) -> Result<(), FileError> {
    let me = nix::unistd::getpid();
    let leads = nix::unistd::getsid(None).is_ok_and(|sid| sid == me);
    if !leads || p.sid != me.as_raw() {
        return Ok(());
    }
    let made_here = |end: PtyEnd| {
        pair.iter()
            .filter(|(_, q)| q.end == end as i32)
            .find_map(|(d, _)| opened.iter().find(|(id, _)| *id == d.id))
            .map(|(_, fd)| fd.as_fd())
    };
    let err = |op: &'static str| move |source| FileError::Place { fd: -1, id: desc.id, op, source };
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    let new_open;
    let slave = match (made_here(PtyEnd::Slave), made_here(PtyEnd::Master)) {
        (Some(slave), _) => slave,
        (None, Some(master)) => {
            new_open = sys::tty::open_peer(master, flags).map_err(err("TIOCGPTPEER"))?;
            new_open.as_fd()
        }
        (None, None) => {
            let path = format!("/dev/pts/{}", p.index);
            new_open = nix::fcntl::open(path.as_str(), OFlag::from_bits_truncate(flags), Mode::empty())
                .map_err(|e| err("open /dev/pts/N (to take it as controlling terminal)")(e.into()))?;
            new_open.as_fd()
        }
    };
    sys::tty::set_controlling_terminal(slave)
        .map_err(err("TIOCSCTTY (the session's controlling terminal)"))
}

/// Makes the hung-up slave descriptions `group` of one pty: the pair at their index, each
/// slave opened with its flags, then the master closed, which hangs them up.
fn open_hung_up(group: &[(&FileDesc, &Pty)]) -> Result<Vec<(u32, OwnedFd)>, FileError> {
    let &(first, p) = group.first().expect("a group is never empty");
    let master = open_ptmx_at(first, p, OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    sys::tty::set_int(master.as_fd(), libc::TIOCSPTLCK, 0)
        .map_err(|e| restore_err(first, "TIOCSPTLCK (unlock)", e))?;
    let mut out = Vec::with_capacity(group.len());
    for &(desc, _) in group {
        let flags = (open_flags(desc.flags).bits() & !libc::O_CLOEXEC) | libc::O_NOCTTY;
        let slave = sys::tty::open_peer(master.as_fd(), flags)
            .map_err(|e| restore_err(desc, "TIOCGPTPEER", e))?;
        set_async(desc, &slave)?;
        out.push((desc.id, slave));
    }
    drop(master);
    debug!(index = p.index, slaves = out.len(), "pty slaves made and hung up");
    Ok(out)
}

/// Once every restored process is whole (each /dev/tty reopened: an open of a locked slave
/// fails, and hangs the slave up), the slaves that were locked are locked again, through a
/// duplicate of their master. `tasks`: per process, its pid as cryo sees it and its fds.
pub(crate) fn lock_slaves(
    descs: &[FileDesc],
    tasks: &[(Pid, &[FdEntry])],
) -> Result<(), FileError> {
    for d in descs {
        let Some(Kind::Pty(p)) = &d.kind else {
            continue;
        };
        if !p.locked || p.end != PtyEnd::Master as i32 {
            continue;
        }
        let holder = tasks
            .iter()
            .find_map(|(pid, fds)| fds.iter().find(|e| e.file_id == d.id).map(|e| (*pid, e.fd)));
        let Some((pid, fd)) = holder else {
            continue;
        };
        let pidfd = sys::pidfd::pidfd_open(pid).map_err(|e| restore_err(d, "pidfd_open", e))?;
        let master = sys::pidfd::pidfd_getfd(pidfd.as_fd(), fd)
            .map_err(|e| restore_err(d, "pidfd_getfd", e))?;
        sys::tty::set_int(master.as_fd(), libc::TIOCSPTLCK, 1)
            .map_err(|e| restore_err(d, "TIOCSPTLCK (lock the slave again)", e))?;
    }
    Ok(())
}

/// /dev/tty reopened: the controlling terminal, which must be the dumped pty's slave again.
fn open_dev_tty(desc: &FileDesc, p: &Pty) -> Result<OwnedFd, FileError> {
    let fd = nix::fcntl::open("/dev/tty", open_flags(desc.flags), Mode::empty())
        .map_err(|e| restore_err(desc, "open /dev/tty (the controlling terminal)", e.into()))?;
    let dev = sys::tty::get_int(fd.as_fd(), libc::TIOCGDEV)
        .map_err(|e| restore_err(desc, "TIOCGDEV", e))?;
    if decode_dev(dev as u32) != slave_rdev(p.index) {
        return Err(super::error::changed(
            desc,
            format!("the controlling terminal is not /dev/pts/{}", p.index),
        ));
    }
    set_async(desc, &fd)?;
    Ok(fd)
}

/// The pty records of `descs` whose session `entry` leads, with their description ids.
fn led_by<'a>(descs: &'a [FileDesc], entry: &ProcessEntry) -> impl Iterator<Item = (u32, &'a Pty)> {
    let leader = entry.sid == entry.pid;
    let sid = entry.sid;
    descs.iter().filter_map(move |d| match &d.kind {
        Some(Kind::Pty(p)) if leader && p.sid == sid && p.end == PtyEnd::Slave as i32 => {
            Some((d.id, p))
        }
        _ => None,
    })
}

/// In the restore child, once its session exists: a session leader whose controlling
/// terminal was a pty slave takes it (TIOCSCTTY) through one of `held` (description id, fd
/// number), before it forks the session's other processes. Returns whether it has it now
/// (or needs none); `last` says no later chance comes (its own fds are all placed).
pub fn take_controlling(
    descs: &[FileDesc],
    entry: &ProcessEntry,
    mut held: impl Iterator<Item = (u32, RawFd)>,
    last: bool,
) -> Result<bool, FileError> {
    if let Some(terminal) = &entry.controlling_terminal {
        if entry.pid != entry.sid {
            return Ok(true);
        }
        return take_line_terminal(descs, terminal, held, last);
    }
    let slaves: Vec<(u32, &Pty)> = led_by(descs, entry).collect();
    // Holding no fd on the slave: opened by its path at the last chance.
    let Some((id, fd)) = held.find(|(id, _)| slaves.iter().any(|(s, _)| s == id)) else {
        return take_closed(descs, entry, last);
    };
    sys::tty::set_controlling_terminal(sys::fd::borrow_raw(fd)).map_err(|e| FileError::Place {
        fd,
        id,
        op: "TIOCSCTTY (the session's controlling terminal)",
        source: e,
    })?;
    Ok(true)
}

/// In the restore child: a session leader whose controlling terminal was line terminal
/// `terminal` takes it (TIOCSCTTY) through its own fd on it, among `held` (description id, fd
/// number), once its fds are placed (`last`): the dump made sure it holds one. An fd opened
/// for the call alone would not do: the terminal's last close ends it as any session's.
fn take_line_terminal(
    descs: &[FileDesc],
    terminal: &LineTerminal,
    held: impl Iterator<Item = (u32, RawFd)>,
    last: bool,
) -> Result<bool, FileError> {
    if !last {
        return Ok(false);
    }
    let err = |op: &'static str, source: std::io::Error| FileError::ControllingTerminal {
        path: terminal.path.clone(),
        op,
        source,
    };
    let want = std::fs::metadata(&terminal.path)
        .map_err(|e| err("stat", e))?
        .rdev();
    let mut on_it = held.filter_map(|(id, fd)| {
        let desc = descs.iter().find(|d| d.id == id)?;
        let Some(Kind::CharDevice(_)) = desc.kind else {
            return None;
        };
        let meta = nix::sys::stat::fstat(sys::fd::borrow_raw(fd)).ok()?;
        (meta.st_rdev == want).then_some(fd)
    });
    let Some(fd) = on_it.next() else {
        return Err(err(
            "find an fd of the session leader on it",
            std::io::Error::from_raw_os_error(libc::ENOENT),
        ));
    };
    sys::tty::set_controlling_terminal(sys::fd::borrow_raw(fd)).map_err(|e| err("TIOCSCTTY", e))?;
    debug!(path = terminal.path, fd, "line terminal taken as controlling terminal");
    Ok(true)
}

/// In the restore child: a session leader whose controlling terminal was a pty slave it
/// holds no fd on takes it through an open of /dev/pts/N, closed again (the dump checked
/// that the pair is made by then: by it or an ancestor). Only at the `last` chance, once
/// its own fds (the master among them, maybe) are open.
fn take_closed(descs: &[FileDesc], entry: &ProcessEntry, last: bool) -> Result<bool, FileError> {
    let leader = entry.sid == entry.pid;
    let found = descs.iter().find_map(|d| match &d.kind {
        Some(Kind::Pty(p)) if leader && p.sid == entry.sid && p.end == PtyEnd::Master as i32 => {
            Some((d.id, p.index))
        }
        _ => None,
    });
    let Some((id, index)) = found else {
        return Ok(true);
    };
    if !last {
        return Ok(false);
    }
    let err = |op: &'static str, e: std::io::Error| FileError::Place {
        fd: -1,
        id,
        op,
        source: e,
    };
    let slave = nix::fcntl::open(
        format!("/dev/pts/{index}").as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err("open /dev/pts/N (to take it as controlling terminal)", e.into()))?;
    sys::tty::set_controlling_terminal(slave.as_fd())
        .map_err(|e| err("TIOCSCTTY (the session's controlling terminal)", e))?;
    debug!(index, "controlling terminal taken through a closed slave");
    Ok(true)
}

/// In the restore child, once its fds are placed: the leader of the group that was its
/// terminal's foreground group takes the foreground (TIOCSPGRP through /dev/tty; all signals
/// are blocked here, so a background group gets no SIGTTOU). A session leader's own group
/// is the foreground one from TIOCSCTTY on.
pub fn take_foreground(descs: &[FileDesc], entry: &ProcessEntry) -> Result<(), FileError> {
    if entry.pgid != entry.pid || entry.pid == entry.sid {
        return Ok(());
    }
    if let Some(terminal) = &entry.controlling_terminal {
        if terminal.foreground_pgid != entry.pgid {
            return Ok(());
        }
        return foreground_through_dev_tty(entry.pgid).map_err(|(op, e)| {
            FileError::ControllingTerminal {
                path: terminal.path.clone(),
                op,
                source: e.into(),
            }
        });
    }
    let Some((id, p)) = descs.iter().find_map(|d| match &d.kind {
        Some(Kind::Pty(p)) if p.sid == entry.sid && p.foreground_pgid == entry.pgid => {
            Some((d.id, p))
        }
        _ => None,
    }) else {
        return Ok(());
    };
    foreground_through_dev_tty(entry.pgid).map_err(|(op, e)| FileError::Place {
        fd: -1,
        id,
        op,
        source: e.into(),
    })?;
    debug!(index = p.index, pgid = entry.pgid, "foreground group");
    Ok(())
}

/// Makes `pgid` the foreground group of the caller's controlling terminal (TIOCSPGRP through
/// /dev/tty). Err: the step that failed.
fn foreground_through_dev_tty(pgid: i32) -> Result<(), (&'static str, nix::errno::Errno)> {
    let tty = nix::fcntl::open(
        "/dev/tty",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ("open /dev/tty (to take the foreground)", e))?;
    nix::unistd::tcsetpgrp(&tty, Pid::from_raw(pgid))
        .map_err(|e| ("TIOCSPGRP (the terminal's foreground group)", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slave_numbers_and_indices() {
        for index in [0u32, 3, 255, 256, 300, 2047] {
            let rdev = slave_rdev(index);
            assert!(is_pty_slave(rdev), "{index}");
            assert_eq!(slave_index(rdev), index);
        }
        // tty_nr of /dev/pts/300: minor 300 spills into the high bits.
        let nr = (300 & 0xff) | (136 << 8) | ((300 & !0xff) << 12);
        assert_eq!(decode_dev(nr), nix::sys::stat::makedev(136, 300));
        assert_eq!(slave_index(decode_dev(nr)), 300);
        assert!(is_dev_tty(nix::sys::stat::makedev(5, 0)));
        assert!(!is_dev_tty(nix::sys::stat::makedev(5, 2)));
    }
}
