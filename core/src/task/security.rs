//! Security state of each thread: ids, capabilities (permitted, effective, inheritable,
//! bounding, ambient), securebits, no_new_privs, seccomp mode and filter chains. Dumped per
//! thread (refused when it cannot come back), restored last, just before the registers.
//!
//! ```text
//! dump     freeze: PTRACE_O_SUSPEND_SECCOMP on confined threads (cryo's calls unfiltered)
//!          per thread: /proc status (ids, caps, nnp, seccomp), remote PR_GET_SECUREBITS,
//!          PTRACE_SECCOMP_GET_FILTER/METADATA; then the refusals (listeners, sharing, caps)
//! restore  (every thread suspended from seccomp while cryo holds it)
//!   ids        securebits NO_SETUID_FIXUP|KEEP_CAPS, setgroups, setresgid, setresuid,
//!              setfsgid, setfsuid                                       each thread
//!   [per-thread state an id change resets goes here: dumpable, pdeathsig...]
//!   last       the filters every thread shares, with TSYNC from the main thread; then in
//!              each thread: inheritable, ambient raises, bounding drops, its own filters
//!              (caps still full), final securebits, final capset, no_new_privs, strict
//! ```

use std::io;

use cryo_proto::image::{
    Creds, SeccompFilter, TaskCore, ThreadCore, ThreadSecurity, UserNamespace,
};
use nix::unistd::Pid;

use crate::error::Result;
use crate::proc;
use crate::remote::Remote;
use crate::sys::ptrace as pt;

const SECCOMP_MODE_STRICT: u32 = 1;
const SECCOMP_MODE_FILTER: u32 = 2;
const SECCOMP_SET_MODE_FILTER: u64 = 1;
const SECCOMP_FILTER_FLAG_TSYNC: u64 = 1;
const SECCOMP_RET_ACTION_FULL: u32 = 0xffff_0000;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const BPF_RET_A: u16 = (libc::BPF_RET | libc::BPF_A) as u16;
/// Kept while ids change, so the capabilities stay as they are until the final capset.
const SECBITS_DURING_RESTORE: u32 = 0x4 | 0x10; // NO_SETUID_FIXUP | KEEP_CAPS
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// The last capability this kernel knows (CAP_CHECKPOINT_RESTORE).
const CAP_LAST: u32 = 40;

/// Why the security state of a thread cannot be dumped or restored.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A system call or ptrace request on the thread failed.
    #[error("pid {pid} thread {tid}: {op}: {errno}")]
    Sys {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// What was being done.
        op: &'static str,
        /// The kernel's answer (in the message, so not chained as a source).
        errno: io::Error,
    },
    /// A confined thread whose confinement cryo cannot lift for its own remote calls.
    #[error(
        "pid {pid} thread {tid}: seccomp cannot be suspended for cryo's calls \
         (PTRACE_O_SUSPEND_SECCOMP needs CAP_SYS_ADMIN and an unconfined cryo): {errno}"
    )]
    Suspend {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// The kernel's answer (in the message, so not chained as a source).
        errno: io::Error,
    },
    /// A seccomp filter the kernel does not hand out.
    #[error("pid {pid} thread {tid}: seccomp filter {index} cannot be read: {errno}")]
    FilterUnreadable {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// Its index, 0 the oldest.
        index: usize,
        /// The kernel's answer (in the message, so not chained as a source).
        errno: io::Error,
    },
    /// A filter that hands system calls to a listener (or may: its action is computed).
    #[error(
        "pid {pid} thread {tid}: seccomp filter {index} {how}: a user-notification \
         listener cannot be restored"
    )]
    UserNotification {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// Its index, 0 the oldest.
        index: usize,
        /// What in its program says so.
        how: &'static str,
    },
    /// A filter shared by some threads but not all: TSYNC, the only way to share a filter
    /// between existing threads, puts it on every thread.
    #[error(
        "pid {pid} threads {a} and {b}: seccomp filter {index} is shared by some threads but \
         not by all; the kernel can share a filter again only among every thread (TSYNC)"
    )]
    PartlyShared {
        /// The process.
        pid: Pid,
        /// One thread having it.
        a: Pid,
        /// Another.
        b: Pid,
        /// Its index in their chains, 0 the oldest.
        index: usize,
    },
    /// State a restore by this cryo cannot set: capabilities it lacks itself, or
    /// no_new_privs off while cryo has it on.
    #[error("pid {pid} thread {tid}: {what} cannot be restored: {why}")]
    Unrestorable {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// The attribute.
        what: &'static str,
        /// Why.
        why: String,
    },
    /// After the restore, the thread reads something else than the image says.
    #[error("pid {pid} thread {tid}: {what} is {got} after the restore, not {want}")]
    Differs {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// The status field.
        what: &'static str,
        /// What the thread has.
        got: String,
        /// What the image says.
        want: String,
    },
}

/// The ids and capability sets of a parsed `/proc/TID/status`.
pub fn creds_from_status(status: &[(String, String)]) -> Creds {
    let ids = |key: &str| -> Vec<u32> {
        proc::status_field(status, key)
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect()
    };
    let cap = |key: &str| proc::status_mask(status, key).unwrap_or(0);
    let (uid, gid) = (ids("Uid"), ids("Gid"));
    let at = |v: &[u32], i: usize| v.get(i).copied().unwrap_or(0);
    Creds {
        uid: at(&uid, 0),
        euid: at(&uid, 1),
        suid: at(&uid, 2),
        fsuid: at(&uid, 3),
        gid: at(&gid, 0),
        egid: at(&gid, 1),
        sgid: at(&gid, 2),
        fsgid: at(&gid, 3),
        groups: ids("Groups"),
        cap_inh: cap("CapInh"),
        cap_prm: cap("CapPrm"),
        cap_eff: cap("CapEff"),
        cap_bnd: cap("CapBnd"),
        cap_amb: cap("CapAmb"),
    }
}

fn number(status: &[(String, String)], key: &str) -> u32 {
    proc::status_field(status, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Called by the freeze for each thread it stopped: a confined thread (seccomp strict or
/// filters) gets PTRACE_O_SUSPEND_SECCOMP, so cryo's remote calls in it are neither refused
/// by its filters nor fatal in strict mode. Detaching lifts the option again.
pub fn suspend_seccomp(pid: Pid, tid: Pid) -> Result<()> {
    let status = proc::status(tid)?;
    if number(&status, "Seccomp") == 0 {
        return Ok(());
    }
    pt::set_options(tid, pt::O_SUSPEND_SECCOMP).map_err(|source| SecurityError::Suspend {
        pid,
        tid,
        errno: source,
    })?;
    Ok(())
}

/// The security state of the stopped thread `remote` runs in (of process `pid`).
pub fn dump_thread(pid: Pid, remote: &Remote) -> Result<ThreadSecurity> {
    let tid = remote.tid();
    let sys = |op| {
        move |source| SecurityError::Sys {
            pid,
            tid,
            op,
            errno: source,
        }
    };
    let status = proc::status(tid)?;
    let securebits = remote
        .call(libc::SYS_prctl, &[libc::PR_GET_SECUREBITS as u64])
        .map_err(sys("prctl(PR_GET_SECUREBITS)"))? as u32;
    let seccomp_mode = number(&status, "Seccomp");
    let count = match seccomp_mode {
        SECCOMP_MODE_FILTER => number(&status, "Seccomp_filters") as usize,
        _ => 0,
    };
    let mut seccomp_filters = Vec::with_capacity(count);
    for index in 0..count {
        let unreadable = |source| SecurityError::FilterUnreadable {
            pid,
            tid,
            index,
            errno: source,
        };
        let program = pt::seccomp_filter(tid, index).map_err(unreadable)?;
        let flags = pt::seccomp_filter_flags(tid, index).map_err(unreadable)?;
        if let Some(how) = hands_to_listener(&program) {
            return Err(SecurityError::UserNotification {
                pid,
                tid,
                index,
                how,
            }
            .into());
        }
        seccomp_filters.push(SeccompFilter { program, flags });
    }
    Ok(ThreadSecurity {
        creds: Some(creds_from_status(&status)),
        securebits,
        no_new_privs: number(&status, "NoNewPrivs") != 0,
        seccomp_mode,
        seccomp_filters,
    })
}

/// Whether a classic BPF program may answer with SECCOMP_RET_USER_NOTIF, and how.
fn hands_to_listener(program: &[u8]) -> Option<&'static str> {
    program.chunks_exact(8).find_map(|insn| {
        let code = u16::from_ne_bytes([insn[0], insn[1]]);
        let k = u32::from_ne_bytes([insn[4], insn[5], insn[6], insn[7]]);
        match code {
            BPF_RET_K if k & SECCOMP_RET_ACTION_FULL == SECCOMP_RET_USER_NOTIF => {
                Some("returns SECCOMP_RET_USER_NOTIF")
            }
            BPF_RET_A => Some("returns a computed action (it may be SECCOMP_RET_USER_NOTIF)"),
            _ => None,
        }
    })
}

/// How many filters, oldest first, begin the chain of every thread: a restore installs them
/// once with TSYNC, so they are shared again.
pub fn shared_prefix(chains: &[&[SeccompFilter]]) -> usize {
    let Some((first, rest)) = chains.split_first() else {
        return 0;
    };
    (0..first.len())
        .take_while(|&i| rest.iter().all(|c| c.get(i) == Some(&first[i])))
        .count()
}

/// The refusals a dump makes once every thread of `pid` is read: capabilities beyond
/// cryo's own (a restore can only lower them; in a user namespace of its own, `userns`, the
/// process starts with every capability there), ids its user namespace does not map (they
/// are set from inside), no_new_privs off under a cryo that has it on, and filters shared
/// by some threads but not all.
pub fn check_task(pid: Pid, threads: &[ThreadCore], userns: Option<&UserNamespace>) -> Result<()> {
    let ours = proc::status(nix::unistd::getpid())?;
    let mut our = creds_from_status(&ours);
    if userns.is_some() {
        let full = (1u64 << (CAP_LAST + 1)) - 1;
        (our.cap_prm, our.cap_bnd) = (full, full);
    }
    let our_nnp = number(&ours, "NoNewPrivs") != 0;
    let secured: Vec<(Pid, &ThreadSecurity)> = threads
        .iter()
        .filter_map(|t| Some((Pid::from_raw(t.tid), t.security.as_ref()?)))
        .collect();
    for &(tid, sec) in &secured {
        let unrestorable = |what, why| SecurityError::Unrestorable {
            pid,
            tid,
            what,
            why,
        };
        if let (Some(c), Some(ns)) = (&sec.creds, userns) {
            let uids = [c.uid, c.euid, c.suid, c.fsuid];
            let gids = [c.gid, c.egid, c.sgid, c.fsgid];
            let unmapped = [
                (&ns.uid_map, "uid", &uids[..]),
                (&ns.gid_map, "gid", &gids[..]),
                (&ns.gid_map, "supplementary group", &c.groups[..]),
            ]
            .into_iter()
            .find_map(|(map, what, ids)| Some((what, super::userns::first_unmapped(map, ids)?)));
            let cryos = [
                our.uid, our.euid, our.suid, our.fsuid, our.gid, our.egid, our.sgid, our.fsgid,
            ];
            let same_as_cryo = uids.iter().chain(&gids).eq(cryos.iter()) && c.groups == our.groups;
            if let (Some((what, id)), false) = (unmapped, same_as_cryo) {
                let why = format!(
                    "{what} {id} is not mapped in its user namespace user:[{}], and the ids are set from inside",
                    ns.inode
                );
                return Err(unrestorable("its ids", why).into());
            }
            if ns.setgroups_deny && c.groups != our.groups {
                let why = format!(
                    "its user namespace user:[{}] denies setgroups, and its groups {:?} are not cryo's {:?}, which it starts with",
                    ns.inode, c.groups, our.groups
                );
                return Err(unrestorable("its supplementary groups", why).into());
            }
        }
        if let Some(c) = &sec.creds {
            let sets = [
                ("permitted capabilities", c.cap_prm, our.cap_prm),
                ("effective capabilities", c.cap_eff, our.cap_prm),
                ("inheritable capabilities", c.cap_inh, our.cap_prm),
                ("ambient capabilities", c.cap_amb, our.cap_prm),
                ("the capability bounding set", c.cap_bnd, our.cap_bnd),
            ];
            for (what, theirs, limit) in sets {
                if theirs & !limit != 0 {
                    let why = format!(
                        "{:#x} are beyond cryo's own {limit:#x}, and a restore can only lower them",
                        theirs & !limit
                    );
                    return Err(unrestorable(what, why).into());
                }
            }
        }
        if our_nnp && !sec.no_new_privs {
            let why = "cryo runs with no_new_privs, which its children can never clear".into();
            return Err(unrestorable("no_new_privs off", why).into());
        }
    }
    let chains: Vec<&[SeccompFilter]> = secured
        .iter()
        .map(|(_, s)| &s.seccomp_filters[..])
        .collect();
    let shared = shared_prefix(&chains);
    for (i, &(a, sa)) in secured.iter().enumerate() {
        for &(b, sb) in &secured[i + 1..] {
            let (fa, fb) = (
                sa.seccomp_filters.get(shared),
                sb.seccomp_filters.get(shared),
            );
            if fa.is_some() && fa == fb {
                return Err(SecurityError::PartlyShared {
                    pid,
                    a,
                    b,
                    index: shared,
                }
                .into());
            }
        }
    }
    Ok(())
}

/// A restored process's threads, each with the remote that runs calls in it (main thread
/// first), and the scratch page their calls may use.
pub struct Threads<'a> {
    /// The process as cryo sees it.
    pid: Pid,
    /// Per thread: its image record and a remote in it; the main thread first.
    threads: Vec<(&'a ThreadCore, &'a Remote)>,
    /// A page of the process for arguments (the trampoline's scratch page).
    scratch: u64,
    /// Per thread: whether [`Threads::set_ids`] changed its securebits (to be put right).
    secbits_changed: Vec<bool>,
}

impl<'a> Threads<'a> {
    /// The threads of `pid` (main first, each with its record and a remote in it), with a
    /// `scratch` page for the calls' arguments.
    pub fn new(pid: Pid, threads: Vec<(&'a ThreadCore, &'a Remote)>, scratch: u64) -> Self {
        Self {
            pid,
            secbits_changed: vec![false; threads.len()],
            threads,
            scratch,
        }
    }

    fn sys(&self, tid: Pid, op: &'static str) -> impl Fn(io::Error) -> SecurityError {
        let pid = self.pid;
        move |source| SecurityError::Sys {
            pid,
            tid,
            op,
            errno: source,
        }
    }

    /// First part of the restore of security state: every thread is suspended from seccomp
    /// while cryo holds it (if any thread will be confined), then gets its ids; capabilities
    /// stay full (SECBIT_NO_SETUID_FIXUP) for what follows. Images of an older cryo have no
    /// per-thread state: the process's ids go to every thread.
    pub fn set_ids(&mut self, task: &TaskCore) -> Result<()> {
        let confined = self
            .threads
            .iter()
            .any(|(t, _)| t.security.as_ref().is_some_and(|s| s.seccomp_mode != 0));
        for (i, &(thread, remote)) in self.threads.iter().enumerate() {
            let tid = remote.tid();
            if confined {
                let traced = (nix::sys::ptrace::Options::PTRACE_O_EXITKILL
                    | nix::sys::ptrace::Options::PTRACE_O_TRACECLONE)
                    .bits() as u64;
                pt::set_options(tid, traced | pt::O_SUSPEND_SECCOMP)
                    .map_err(self.sys(tid, "suspend seccomp (PTRACE_O_SUSPEND_SECCOMP)"))?;
            }
            let creds = match (&thread.security, &task.creds) {
                (Some(sec), _) => sec.creds.as_ref(),
                (None, creds) => creds.as_ref(),
            };
            if let Some(creds) = creds {
                self.secbits_changed[i] =
                    self.set_thread_ids(remote, creds, task.userns.as_ref())?;
            }
        }
        Ok(())
    }

    /// Gives the thread of `remote` the ids of `want` (cryo's view, as /proc shows them to
    /// cryo); whether it had to (then its securebits were changed to keep its capabilities).
    /// In a user namespace of its own (`userns`) the calls take the ids as its maps show
    /// them inside.
    fn set_thread_ids(
        &self,
        remote: &Remote,
        want: &Creds,
        userns: Option<&UserNamespace>,
    ) -> Result<bool> {
        let tid = remote.tid();
        let inside = |map: fn(&UserNamespace) -> &String, id: u32| -> Result<u64> {
            let Some(ns) = userns else {
                return Ok(u64::from(id));
            };
            super::userns::to_inside(map(ns), id)
                .map(u64::from)
                .ok_or_else(|| {
                    SecurityError::Unrestorable {
                        pid: self.pid,
                        tid,
                        what: "its ids",
                        why: format!("id {id} is not mapped in user:[{}]", ns.inode),
                    }
                    .into()
                })
        };
        let uid = |id| inside(|ns| &ns.uid_map, id);
        let gid = |id| inside(|ns| &ns.gid_map, id);
        let now = creds_from_status(&proc::status(tid)?);
        let ids = |c: &Creds| {
            [
                c.uid, c.euid, c.suid, c.fsuid, c.gid, c.egid, c.sgid, c.fsgid,
            ]
        };
        if ids(&now) == ids(want) && now.groups == want.groups {
            return Ok(false);
        }
        let call = |nr: i64, args: &[u64], op| remote.call(nr, args).map_err(self.sys(tid, op));
        call(
            libc::SYS_prctl,
            &[
                libc::PR_SET_SECUREBITS as u64,
                SECBITS_DURING_RESTORE as u64,
            ],
            "keep the capabilities while the ids change",
        )?;
        if now.groups != want.groups {
            let mut groups: Vec<u8> = Vec::with_capacity(4 * want.groups.len());
            for &g in &want.groups {
                groups.extend_from_slice(&(gid(g)? as u32).to_ne_bytes());
            }
            pt::write_mem(tid, self.scratch, &groups).map_err(self.sys(tid, "setgroups"))?;
            call(
                libc::SYS_setgroups,
                &[want.groups.len() as u64, self.scratch],
                "setgroups",
            )?;
        }
        call(
            libc::SYS_setresgid,
            &[gid(want.gid)?, gid(want.egid)?, gid(want.sgid)?],
            "setresgid",
        )?;
        call(
            libc::SYS_setresuid,
            &[uid(want.uid)?, uid(want.euid)?, uid(want.suid)?],
            "setresuid",
        )?;
        // setfsuid and setfsgid answer the previous value, never an error: read back below.
        call(libc::SYS_setfsgid, &[gid(want.fsgid)?], "setfsgid")?;
        call(libc::SYS_setfsuid, &[uid(want.fsuid)?], "setfsuid")?;
        let got = creds_from_status(&proc::status(tid)?);
        if ids(&got) != ids(want) || got.groups != want.groups {
            return Err(SecurityError::Differs {
                pid: self.pid,
                tid,
                what: "uid/gid",
                got: format!("{:?} groups {:?}", ids(&got), got.groups),
                want: format!("{:?} groups {:?}", ids(want), want.groups),
            }
            .into());
        }
        Ok(true)
    }

    /// The rest of the security state, after everything else that needs privileges and after
    /// cryo's other calls: the filters all threads share (with TSYNC from the main thread,
    /// so they are one filter again), then per thread its capabilities, own filters,
    /// securebits, no_new_privs and strict mode, in the order that keeps each step possible.
    pub fn set_last(&self) -> Result<()> {
        let secured: Vec<(&ThreadSecurity, &Remote, bool)> = self
            .threads
            .iter()
            .zip(&self.secbits_changed)
            .filter_map(|(&(t, r), &changed)| Some((t.security.as_ref()?, r, changed)))
            .collect();
        if secured.len() != self.threads.len() {
            // An older image: its creds went on in set_ids, there is nothing else.
            return Ok(());
        }
        let chains: Vec<&[SeccompFilter]> = secured
            .iter()
            .map(|(s, ..)| &s.seccomp_filters[..])
            .collect();
        let shared = shared_prefix(&chains);
        if let Some(&(sec, main, _)) = secured.first() {
            let tsync = if secured.len() > 1 {
                SECCOMP_FILTER_FLAG_TSYNC
            } else {
                0
            };
            for filter in &sec.seccomp_filters[..shared] {
                self.install(main, filter, tsync)?;
            }
        }
        for &(sec, remote, secbits_changed) in &secured {
            self.set_thread_last(remote, sec, shared, secbits_changed)?;
        }
        Ok(())
    }

    /// Installs `filter` in the thread of `remote` (with `extra` flags).
    fn install(&self, remote: &Remote, filter: &SeccompFilter, extra: u64) -> Result<()> {
        let tid = remote.tid();
        let sys = self.sys(tid, "install a seccomp filter");
        let insns = filter.program.len() / std::mem::size_of::<libc::sock_filter>();
        // struct sock_fprog { u16 len; u64 filter } at the start of the buffer, the program
        // after it: in the scratch page when it fits, else in a page mapped for it.
        let need = 16 + filter.program.len() as u64;
        let mapped = if need > crate::memory::PAGE {
            let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
            let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
            Some(
                remote
                    .call(libc::SYS_mmap, &[0, need, prot, flags, u64::MAX, 0])
                    .map_err(self.sys(tid, "map room for a seccomp filter"))?,
            )
        } else {
            None
        };
        let buf = mapped.unwrap_or(self.scratch);
        let mut bytes = Vec::with_capacity(need as usize);
        bytes.extend_from_slice(&(insns as u64).to_ne_bytes());
        bytes.extend_from_slice(&(buf + 16).to_ne_bytes());
        bytes.extend_from_slice(&filter.program);
        let installed = pt::write_mem(tid, buf, &bytes)
            .map_err(&sys)
            .and_then(|()| {
                remote
                    .call(
                        libc::SYS_seccomp,
                        &[SECCOMP_SET_MODE_FILTER, filter.flags | extra, buf],
                    )
                    .map_err(&sys)
            });
        if let Some(addr) = mapped {
            remote
                .call(libc::SYS_munmap, &[addr, need])
                .map_err(self.sys(tid, "unmap the room of a seccomp filter"))?;
        }
        match installed? {
            0 => Ok(()),
            // TSYNC answers the tid of a thread it could not synchronise.
            other => Err(SecurityError::Sys {
                pid: self.pid,
                tid,
                op: "install a seccomp filter on every thread (TSYNC)",
                errno: io::Error::other(format!("thread {other} cannot be synchronised")),
            }
            .into()),
        }
    }

    fn capset(&self, remote: &Remote, prm: u64, eff: u64, inh: u64) -> Result<()> {
        let tid = remote.tid();
        // struct __user_cap_header_struct, then two __user_cap_data_struct (low, high words).
        let mut raw = Vec::with_capacity(32);
        for word in [CAPABILITY_VERSION_3, 0] {
            raw.extend_from_slice(&word.to_ne_bytes());
        }
        for half in [0, 32] {
            for set in [eff, prm, inh] {
                raw.extend_from_slice(&((set >> half) as u32).to_ne_bytes());
            }
        }
        pt::write_mem(tid, self.scratch, &raw).map_err(self.sys(tid, "capset"))?;
        remote
            .call(libc::SYS_capset, &[self.scratch, self.scratch + 8])
            .map_err(self.sys(tid, "capset"))?;
        Ok(())
    }

    /// The capabilities, own filters (after the `shared` ones), securebits (`secbits_changed`:
    /// by [`Threads::set_ids`], or else still cryo's 0), no_new_privs and strict mode of the
    /// thread of `remote`, then a check of what it reads.
    fn set_thread_last(
        &self,
        remote: &Remote,
        sec: &ThreadSecurity,
        shared: usize,
        secbits_changed: bool,
    ) -> Result<()> {
        let tid = remote.tid();
        let status = proc::status(tid)?;
        let now = creds_from_status(&status);
        let want = sec.creds.clone().unwrap_or_else(|| now.clone());
        let prctl = |args: &[u64], op| {
            remote
                .call(libc::SYS_prctl, args)
                .map_err(self.sys(tid, op))
        };
        if number(&status, "NoNewPrivs") != 0 && !sec.no_new_privs {
            return Err(SecurityError::Unrestorable {
                pid: self.pid,
                tid,
                what: "no_new_privs off",
                why: "the restored thread has it on already (inherited from cryo)".into(),
            }
            .into());
        }
        // Inheritable first (while the bounding set is whole), then the ambient bits, which
        // must be permitted and inheritable.
        if want.cap_inh != now.cap_inh {
            self.capset(remote, now.cap_prm, now.cap_eff, want.cap_inh)?;
        }
        if now.cap_amb != 0 && now.cap_amb != want.cap_amb {
            prctl(
                &[
                    libc::PR_CAP_AMBIENT as u64,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL as u64,
                ],
                "clear the ambient capabilities",
            )?;
        }
        for cap in (0..=CAP_LAST).filter(|c| want.cap_amb & (1 << c) != 0) {
            prctl(
                &[
                    libc::PR_CAP_AMBIENT as u64,
                    libc::PR_CAP_AMBIENT_RAISE as u64,
                    cap as u64,
                ],
                "raise an ambient capability",
            )?;
        }
        for cap in (0..=CAP_LAST).filter(|c| now.cap_bnd & !want.cap_bnd & (1 << c) != 0) {
            prctl(
                &[libc::PR_CAPBSET_DROP as u64, cap as u64],
                "drop from the bounding set",
            )?;
        }
        // The thread's own filters while CAP_SYS_ADMIN is still effective (no no_new_privs
        // needed), oldest first: among equal actions the newest wins.
        for filter in &sec.seccomp_filters[shared..] {
            self.install(remote, filter, 0)?;
        }
        // Locks and NO_CAP_AMBIENT_RAISE only now; CAP_SETPCAP is still effective.
        if secbits_changed || sec.securebits != 0 {
            prctl(
                &[libc::PR_SET_SECUREBITS as u64, sec.securebits as u64],
                "prctl(PR_SET_SECUREBITS)",
            )?;
        }
        if (want.cap_prm, want.cap_eff) != (now.cap_prm, now.cap_eff) {
            self.capset(remote, want.cap_prm, want.cap_eff, want.cap_inh)?;
        }
        if sec.no_new_privs {
            prctl(
                &[libc::PR_SET_NO_NEW_PRIVS as u64, 1],
                "prctl(PR_SET_NO_NEW_PRIVS)",
            )?;
        }
        if sec.seccomp_mode == SECCOMP_MODE_STRICT {
            // The thread's last call; cryo's later calls are not filtered (suspended).
            prctl(
                &[libc::PR_SET_SECCOMP as u64, SECCOMP_MODE_STRICT as u64],
                "enter seccomp strict mode",
            )?;
        }
        self.verify(tid, sec)
    }

    /// Reads the thread's status back: what the image says, or an error naming the field.
    fn verify(&self, tid: Pid, sec: &ThreadSecurity) -> Result<()> {
        let status = proc::status(tid)?;
        let got = creds_from_status(&status);
        let mut fields = vec![
            (
                "NoNewPrivs",
                u64::from(number(&status, "NoNewPrivs")),
                u64::from(sec.no_new_privs),
            ),
            (
                "Seccomp",
                u64::from(number(&status, "Seccomp")),
                u64::from(sec.seccomp_mode),
            ),
            (
                "Seccomp_filters",
                u64::from(number(&status, "Seccomp_filters")),
                sec.seccomp_filters.len() as u64,
            ),
        ];
        if let Some(want) = &sec.creds {
            fields.extend([
                ("CapPrm", got.cap_prm, want.cap_prm),
                ("CapEff", got.cap_eff, want.cap_eff),
                ("CapInh", got.cap_inh, want.cap_inh),
                ("CapBnd", got.cap_bnd, want.cap_bnd),
                ("CapAmb", got.cap_amb, want.cap_amb),
            ]);
        }
        match fields.into_iter().find(|(_, got, want)| got != want) {
            None => Ok(()),
            Some((what, got, want)) => Err(SecurityError::Differs {
                pid: self.pid,
                tid,
                what,
                got: format!("{got:#x}"),
                want: format!("{want:#x}"),
            }
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(k: u32) -> SeccompFilter {
        let mut program = Vec::new();
        program.extend_from_slice(&BPF_RET_K.to_ne_bytes());
        program.extend_from_slice(&[0, 0]);
        program.extend_from_slice(&k.to_ne_bytes());
        SeccompFilter { program, flags: 0 }
    }

    #[test]
    fn the_shared_prefix_is_what_every_chain_begins_with() {
        let (a, b, c) = (filter(1), filter(2), filter(3));
        let one = [a.clone(), b.clone()];
        let two = [a.clone(), c.clone()];
        assert_eq!(shared_prefix(&[&one, &two]), 1);
        assert_eq!(shared_prefix(&[&one, &one]), 2);
        assert_eq!(shared_prefix(&[&one, &[]]), 0);
        assert_eq!(shared_prefix(&[&one]), 2);
        assert_eq!(shared_prefix(&[]), 0);
    }

    fn thread(tid: i32, chain: &[SeccompFilter]) -> ThreadCore {
        ThreadCore {
            tid,
            security: Some(ThreadSecurity {
                seccomp_mode: if chain.is_empty() {
                    0
                } else {
                    SECCOMP_MODE_FILTER
                },
                seccomp_filters: chain.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_filter_shared_by_some_threads_only_is_refused() {
        let (a, b) = (filter(1), filter(2));
        let pid = Pid::from_raw(1);
        // Shared by all, then one thread's own: restorable.
        let fine = [
            thread(1, std::slice::from_ref(&a)),
            thread(2, &[a.clone(), b]),
        ];
        check_task(pid, &fine, None).unwrap();
        // Two of three threads have the same filter the third lacks.
        let partly = [
            thread(1, &[]),
            thread(2, std::slice::from_ref(&a)),
            thread(3, std::slice::from_ref(&a)),
        ];
        let err = check_task(pid, &partly, None).unwrap_err().to_string();
        assert!(
            err.contains("threads 2 and 3") && err.contains("filter 0"),
            "{err}"
        );
    }

    #[test]
    fn a_filter_that_may_notify_a_listener_is_seen() {
        assert!(hands_to_listener(&filter(libc::SECCOMP_RET_ALLOW).program).is_none());
        assert!(hands_to_listener(&filter(SECCOMP_RET_USER_NOTIF).program).is_some());
        let mut ret_a = filter(0).program;
        ret_a[..2].copy_from_slice(&BPF_RET_A.to_ne_bytes());
        assert!(hands_to_listener(&ret_a).is_some());
    }

    #[test]
    fn capabilities_beyond_ours_are_refused() {
        let ours = creds_from_status(&proc::status(nix::unistd::getpid()).unwrap());
        let Some(missing) = (0..=CAP_LAST).find(|c| ours.cap_prm & (1 << c) == 0) else {
            return; // every capability: nothing can be beyond ours
        };
        let mut t = thread(7, &[]);
        if let Some(sec) = t.security.as_mut() {
            sec.creds = Some(Creds {
                cap_prm: 1 << missing,
                cap_bnd: ours.cap_bnd,
                ..Default::default()
            });
        }
        let err = check_task(Pid::from_raw(1), &[t], None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("thread 7") && err.contains("permitted"),
            "{err}"
        );
    }
}
