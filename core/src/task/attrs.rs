//! Process and thread attributes outside security state (issue 12): nice, scheduling policy
//! and parameters, CPU affinity, ioprio, timer slack, parent-death signal, MCE kill policy
//! (per thread); oom_score_adj, loginuid, dumpable, child subreaper, THP disable, membarrier
//! registrations, coredump_filter, the futex hash size (per process); a process with an LDT is refused. Each is restored exactly, or the dump refuses it naming pid, tid and attribute.
//!
//! ```text
//! dump     outside: sched_getattr, getpriority, sched_getaffinity, ioprio_get (by tid),
//!                   /proc/PID/oom_score_adj, loginuid, sessionid, the default timer slack
//!                   (/proc/TID/timerslack_ns written 0, read, written back)
//!          remote:  prctl getters, in the batch each thread runs anyway (threads.rs); the
//!                   futex hash size (main thread, alone: older kernels answer EINVAL)
//!          refuse:  what this host's cryo could not set (probed on a thread of cryo's own)
//! restore  fork, clone: the creator's slack set to the new task's default slack (the
//!                   kernel's copy_process makes it so), then put back
//!          child:   oom_score_adj, loginuid, coredump_filter, subreaper, THP, the main
//!                   thread's slack and MCE
//!                   policy (the threads created later inherit the last two)
//!          remote, its threads made: the futex hash size, where the kernel's differs
//!          remote, after the credentials (an id change resets them): pdeathsig, dumpable,
//!                   membarrier registrations, the other threads' own slack and MCE policy
//!          outside, last (a real-time or idle thread would slow the restore's own calls):
//!                   policy, nice, affinity, ioprio
//! ```

use std::io;

use cryo_proto::image::{
    Creds, ProcessAttrs, Rlimit, SyscallUserDispatch, TaskCore, ThreadAttrs, ThreadCore,
};
use nix::unistd::Pid;

use crate::remote::{BatchCall, BatchSite, Remote};
use crate::restore::error::{ChildError, ChildStep};
use crate::sys::keyctl::{
    KEY_SPEC_SESSION_KEYRING, KEY_SPEC_THREAD_KEYRING, KEY_SPEC_USER_SESSION_KEYRING,
};
use crate::sys::prctl::set_own;
use crate::sys::process::Forked;
use crate::sys::ptrace::SudConfig;
use crate::sys::sched::{self, SchedAttr};

/// `PR_THP_DISABLE_EXCEPT_ADVISED` (linux/prctl.h, 6.18): THP stays allowed where madvised.
const PR_THP_DISABLE_EXCEPT_ADVISED: u64 = 1 << 1;
/// What PR_GET_THP_DISABLE answers for that mode.
const THP_DISABLED_EXCEPT_ADVISED: u32 = 3;
/// PR_MCE_KILL_GET's answer for a thread that never chose (the system's policy).
const MCE_KILL_DEFAULT: u32 = libc::PR_MCE_KILL_DEFAULT as u32;
/// The RT class of ioprio (class << 13).
const IOPRIO_CLASS_RT: u32 = 1;
/// CAP_AUDIT_CONTROL: needed to write another loginuid.
const CAP_AUDIT_CONTROL: u32 = 30;
/// AUDIT_UID_UNSET / AUDIT_SID_UNSET: what loginuid and sessionid read before any login.
const AUDIT_UNSET: u32 = u32::MAX;

/// `/proc/{who}/{name}` (loginuid, sessionid): a kernel without audit has no such file, which
/// means unset.
fn audit_id(who: &str, name: &str) -> io::Result<u32> {
    match std::fs::read_to_string(format!("/proc/{who}/{name}")) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidData)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(AUDIT_UNSET),
        Err(e) => Err(e),
    }
}

/// Why an attribute of a task cannot be dumped or restored; each names the process, the
/// thread and the attribute.
#[derive(Debug, thiserror::Error)]
pub enum AttrError {
    /// Reading an attribute failed.
    #[error("pid {pid} thread {tid}: read {attribute}: {errno}")]
    Read {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// The attribute.
        attribute: &'static str,
        /// The kernel's answer (in the message, so not chained as a source).
        errno: io::Error,
    },
    /// Setting an attribute in a restored thread failed.
    #[error("pid {pid} thread {tid}: set {attribute}: {errno}")]
    Set {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// The attribute.
        attribute: &'static str,
        /// The kernel's answer (in the message, so not chained as a source).
        errno: io::Error,
    },
    /// A scheduling attribute cryo is not allowed to set here (without CAP_SYS_NICE, beyond
    /// RLIMIT_RTPRIO/RLIMIT_NICE, or no real-time budget in cryo's cgroup).
    #[error(
        "pid {pid} thread {tid}: {attribute} {value} cannot be restored: cryo may not set it \
         here ({errno})"
    )]
    NotPermitted {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// The attribute.
        attribute: &'static str,
        /// Its value, as the thread has it.
        value: String,
        /// What the kernel answered cryo's own attempt (in the message).
        errno: io::Error,
    },
    /// A CPU mask the restored thread could not have: the CPUs are not in cryo's cpuset.
    #[error(
        "pid {pid} thread {tid}: cpu affinity {wanted} cannot be restored: cryo's cpuset \
         narrows it to {got}"
    )]
    AffinityNarrowed {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// The thread's CPUs.
        wanted: String,
        /// What a thread of cryo asking for them gets.
        got: String,
    },
    /// A negative oom_score_adj below what cryo can set without CAP_SYS_RESOURCE.
    #[error(
        "pid {pid} thread {pid}: oom_score_adj {value} cannot be restored: cryo cannot go below \
         its own minimum without CAP_SYS_RESOURCE ({errno})"
    )]
    OomScoreAdj {
        /// The process.
        pid: Pid,
        /// The value.
        value: i32,
        /// What the kernel answered cryo's own attempt (in the message).
        errno: io::Error,
    },
    /// A hard resource limit above cryo's own, which cryo cannot raise.
    #[error(
        "pid {pid} thread {pid}: resource limit {name}: hard limit {value} cannot be restored: \
         it is above cryo's own ({own}), and raising a hard limit needs CAP_SYS_RESOURCE, which \
         cryo lacks"
    )]
    HardLimit {
        /// The process.
        pid: Pid,
        /// The limit (RLIMIT_NOFILE...).
        name: &'static str,
        /// The process's hard limit.
        value: String,
        /// cryo's own.
        own: String,
    },
    /// A value the kernel gives no way to set again (or that this cryo does not know how to).
    #[error("pid {pid} thread {tid}: {attribute} {value} cannot be restored: {why}")]
    Unrestorable {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// The attribute.
        attribute: &'static str,
        /// Its value, as the thread has it.
        value: String,
        /// Why not.
        why: &'static str,
    },
    /// Dumpable 2 (suid_dumpable) cannot be set through prctl.
    #[error(
        "pid {pid} thread {pid}: dumpable 2 (set by a set-id exec under fs.suid_dumpable=2) \
         cannot be restored: prctl only sets 0 or 1"
    )]
    SuidDumpable {
        /// The process.
        pid: Pid,
    },
    /// Another loginuid needs CAP_AUDIT_CONTROL, which cryo lacks.
    #[error(
        "pid {pid} thread {pid}: loginuid {loginuid} cannot be restored: writing it needs \
         CAP_AUDIT_CONTROL, which cryo lacks"
    )]
    Loginuid {
        /// The process.
        pid: Pid,
        /// The loginuid.
        loginuid: u32,
    },
}

impl AttrError {
    /// Reading `attribute` of thread `tid` of `pid` failed.
    fn read(pid: Pid, tid: Pid, attribute: &'static str) -> impl Fn(io::Error) -> Self {
        move |errno| Self::Read {
            pid,
            tid,
            attribute,
            errno,
        }
    }

    /// Setting `attribute` in thread `tid` of `pid` failed.
    fn set(pid: Pid, tid: Pid, attribute: &'static str) -> impl Fn(io::Error) -> Self {
        move |errno| Self::Set {
            pid,
            tid,
            attribute,
            errno,
        }
    }
}

/// One prctl (or arch_prctl) getter run in a stopped thread: an option, and whether it
/// answers in memory (an int at arg2) rather than in its return value.
#[derive(Debug)]
pub struct PrctlRead {
    /// The attribute, for errors.
    pub name: &'static str,
    syscall: libc::c_long,
    option: libc::c_int,
    into_memory: bool,
    /// The second argument when the answer is not in memory (which speculation control).
    arg2: u64,
    /// The third argument (modify_ldt's byte count).
    arg3: u64,
    /// The answer is the return value even though the call writes memory (modify_ldt).
    answer_returned: bool,
    /// Which argument the memory slot goes in (1 for prctl; 0 for get_mempolicy).
    slot_arg: usize,
}

impl PrctlRead {
    /// The call, with `slot` the address its int may go to.
    pub fn call(&self, slot: u64) -> BatchCall {
        let mut args = [self.option as u64, self.arg2, self.arg3, 0, 0, 0];
        if self.into_memory {
            args[self.slot_arg] = slot;
        }
        (self.syscall, args)
    }

    /// The value read, from the call's `result` and its memory `out`.
    pub fn value(&self, result: u64, out: &[u8]) -> u64 {
        if self.into_memory && !self.answer_returned {
            u32::from_ne_bytes([out[0], out[1], out[2], out[3]]) as u64
        } else {
            result
        }
    }
}

const fn read(name: &'static str, option: libc::c_int, into_memory: bool) -> PrctlRead {
    PrctlRead {
        name,
        syscall: libc::SYS_prctl,
        option,
        into_memory,
        arg2: 0,
        arg3: 0,
        answer_returned: false,
        slot_arg: 1,
    }
}

/// PR_GET_SPECULATION_CTRL of `which`.
const fn speculation(name: &'static str, which: u64) -> PrctlRead {
    PrctlRead {
        arg2: which,
        ..read(name, libc::PR_GET_SPECULATION_CTRL, false)
    }
}

/// The speculation controls (linux/prctl.h): PR_SPEC_STORE_BYPASS, PR_SPEC_INDIRECT_BRANCH,
/// PR_SPEC_L1D_FLUSH.
const SPECULATION: [(&str, u64); 3] = [
    ("speculation control (store bypass)", 0),
    ("speculation control (indirect branch)", 1),
    ("speculation control (l1d flush)", 2),
];
/// PR_SPEC_PRCTL: the state is the thread's own, set with PR_SET_SPECULATION_CTRL; without it
/// the state shown is the host's.
const PR_SPEC_PRCTL: u32 = 1;
/// The states, as both the getter answers and the setter takes them: ENABLE, DISABLE,
/// FORCE_DISABLE (for good: no ENABLE after it), DISABLE_NOEXEC (until the next exec).
const PR_SPEC_ENABLE: u32 = 1 << 1;
const PR_SPEC_DISABLE: u32 = 1 << 2;
const PR_SPEC_FORCE_DISABLE: u32 = 1 << 3;
const PR_SPEC_DISABLE_NOEXEC: u32 = 1 << 4;

/// The speculation control states of thread attributes `a`, in [`SPECULATION`]'s order.
fn speculation_values(a: &ThreadAttrs) -> [u32; 3] {
    [
        a.spec_store_bypass,
        a.spec_indirect_branch,
        a.spec_l1d_flush,
    ]
}

/// What PR_SET_SPECULATION_CTRL gives a thread back the state the getter answered `value`:
/// none when the state is not the thread's own.
fn speculation_state(value: u32) -> Option<u32> {
    if value & PR_SPEC_PRCTL == 0 {
        return None;
    }
    [
        PR_SPEC_FORCE_DISABLE,
        PR_SPEC_DISABLE_NOEXEC,
        PR_SPEC_DISABLE,
        PR_SPEC_ENABLE,
    ]
    .into_iter()
    .find(|state| value & state != 0)
}

/// get_mempolicy's mode for a thread that never set one.
const MPOL_DEFAULT: u32 = 0;

/// PR_GET_TSC's answers: the time stamp counter reads, or raises SIGSEGV.
const PR_TSC_ENABLE: u32 = 1;
const PR_TSC_SIGSEGV: u32 = 2;
/// PF_MEMALLOC_NOIO | PF_LOCAL_THROTTLE: what PR_SET_IO_FLUSHER sets in the task's flags.
const IO_FLUSHER_FLAGS: u32 = 0x0008_0000 | 0x0010_0000;

/// `ARCH_GET_CPUID` / `ARCH_SET_CPUID` (asm/prctl.h): whether the cpuid instruction runs, or
/// faults with SIGSEGV, in a thread.
const ARCH_GET_CPUID: libc::c_int = 0x1011;
const ARCH_SET_CPUID: libc::c_int = 0x1012;

/// `MEMBARRIER_CMD_GET_REGISTRATIONS` (linux/membarrier.h, 6.3): the registration commands
/// the process ran, as a mask of their own bits.
const MEMBARRIER_CMD_GET_REGISTRATIONS: libc::c_int = 1 << 9;
/// The `MEMBARRIER_CMD_REGISTER_*` commands: global expedited, private expedited, private
/// expedited sync-core, private expedited rseq. Each is its own bit in the mask above.
const MEMBARRIER_REGISTER_COMMANDS: [u32; 4] = [1 << 2, 1 << 4, 1 << 6, 1 << 8];

/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED` and the registration command it needs.
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: u64 = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: u32 = 1 << 4;
/// The sync-core and rseq registrations, which mark the private expedited one as registered
/// in the answer of MEMBARRIER_CMD_GET_REGISTRATIONS without enabling its barrier.
const MEMBARRIER_IMPLY_PRIVATE: u32 = 1 << 6 | 1 << 8;

/// `PR_FUTEX_HASH` (linux/prctl.h, 6.16) and its commands: the private futex hash of a
/// process (per mm), made with 16 slots at its first thread unless the process chose.
const PR_FUTEX_HASH: u64 = 78;
const PR_FUTEX_HASH_SET_SLOTS: u64 = 1;
const PR_FUTEX_HASH_GET_SLOTS: u64 = 2;

/// Reads the size of the process's private futex hash into `p`, by `remote` (the main
/// thread): none on a kernel without it (EINVAL).
pub fn dump_futex_hash(pid: Pid, remote: &Remote, p: &mut ProcessAttrs) -> Result<(), AttrError> {
    let answer = remote
        .syscall(
            libc::SYS_prctl,
            &[PR_FUTEX_HASH, PR_FUTEX_HASH_GET_SLOTS, 0, 0, 0],
        )
        .map_err(AttrError::read(pid, remote.tid(), "futex hash slots"))?;
    p.futex_hash_slots = match answer {
        slots if slots >= 0 => Some(slots as u32),
        e if e == -(libc::EINVAL as i64) => None,
        e => {
            let errno = io::Error::from_raw_os_error(-e as i32);
            return Err(AttrError::read(pid, remote.tid(), "futex hash slots")(
                errno,
            ));
        }
    };
    Ok(())
}

/// `PR_TIMER_CREATE_RESTORE_IDS` (linux/prctl.h, 6.14) and its query: the per-process mode
/// in which timer_create takes the id it is given (timers.rs turns it on for its own calls).
const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
const PR_TIMER_CREATE_RESTORE_IDS_GET: u64 = 2;

/// Reads into `p` whether the process turned on the timer id restore mode, by `remote` (the
/// main thread): off on a kernel without it (EINVAL).
pub fn dump_timer_restore_ids(
    pid: Pid,
    remote: &Remote,
    p: &mut ProcessAttrs,
) -> Result<(), AttrError> {
    let answer = remote
        .syscall(
            libc::SYS_prctl,
            &[
                PR_TIMER_CREATE_RESTORE_IDS,
                PR_TIMER_CREATE_RESTORE_IDS_GET,
                0,
                0,
                0,
            ],
        )
        .map_err(AttrError::read(pid, remote.tid(), "timer id restore mode"))?;
    p.timer_create_restore_ids = match answer {
        on if on >= 0 => on == 1,
        e if e == -(libc::EINVAL as i64) => false,
        e => {
            let errno = io::Error::from_raw_os_error(-e as i32);
            return Err(AttrError::read(pid, remote.tid(), "timer id restore mode")(
                errno,
            ));
        }
    };
    Ok(())
}

/// Gives the restored process (`remote`: its main thread, its threads made) the futex hash
/// size it had, where the one it got differs: a size it chose (the global hash, 0, among
/// them), which then stays as it was when more threads come. One it did not choose (16 with
/// threads) is left to the kernel, to grow with the process as before.
pub fn restore_futex_hash(pid: Pid, remote: &Remote, p: &ProcessAttrs) -> Result<(), AttrError> {
    let Some(slots) = p.futex_hash_slots else {
        return Ok(());
    };
    let set = AttrError::set(pid, remote.tid(), "futex hash slots");
    let now = remote
        .call(
            libc::SYS_prctl,
            &[PR_FUTEX_HASH, PR_FUTEX_HASH_GET_SLOTS, 0, 0, 0],
        )
        .map_err(&set)?;
    if now != u64::from(slots) {
        remote
            .call(
                libc::SYS_prctl,
                &[
                    PR_FUTEX_HASH,
                    PR_FUTEX_HASH_SET_SLOTS,
                    u64::from(slots),
                    0,
                    0,
                ],
            )
            .map_err(&set)?;
    }
    Ok(())
}

/// Settles what MEMBARRIER_CMD_GET_REGISTRATIONS leaves ambiguous in `p` (read by the main
/// thread's batch): with sync-core or rseq registered, the private expedited bit is set
/// whether or not the process registered the plain private expedited barrier. Only a try
/// tells: the barrier, run by `remote` in the frozen process (a memory barrier on the CPUs
/// running its threads: none run), fails with EPERM without its own registration.
pub fn settle_membarrier(pid: Pid, remote: &Remote, p: &mut ProcessAttrs) -> Result<(), AttrError> {
    if p.membarrier & MEMBARRIER_IMPLY_PRIVATE == 0
        || p.membarrier & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED == 0
    {
        return Ok(());
    }
    let tried = remote
        .syscall(
            libc::SYS_membarrier,
            &[MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0],
        )
        .map_err(AttrError::read(
            pid,
            remote.tid(),
            "membarrier registrations",
        ))?;
    match tried {
        0 => {}
        e if e == -(libc::EPERM as i64) => {
            p.membarrier &= !MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED;
        }
        e => {
            let errno = io::Error::from_raw_os_error(-e as i32);
            let attribute = "membarrier registrations (private expedited barrier)";
            return Err(AttrError::read(pid, remote.tid(), attribute)(errno));
        }
    }
    Ok(())
}

/// The prctl reads of the main thread: the per-thread ones, then the per-process ones.
const MAIN_READS: [PrctlRead; 15] = [
    read("timer slack", libc::PR_GET_TIMERSLACK, false),
    read("parent-death signal", libc::PR_GET_PDEATHSIG, true),
    read("mce kill policy", libc::PR_MCE_KILL_GET, false),
    PrctlRead {
        syscall: libc::SYS_arch_prctl,
        ..read("cpuid faulting", ARCH_GET_CPUID, false)
    },
    speculation(SPECULATION[0].0, SPECULATION[0].1),
    speculation(SPECULATION[1].0, SPECULATION[1].1),
    speculation(SPECULATION[2].0, SPECULATION[2].1),
    read("tsc", libc::PR_GET_TSC, true),
    // get_mempolicy(&mode, NULL, 0, NULL, 0): the thread's own NUMA policy, flags or'ed in.
    PrctlRead {
        syscall: libc::SYS_get_mempolicy,
        slot_arg: 0,
        ..read("numa memory policy", 0, true)
    },
    // personality(0xffffffff): the thread's own (personality(2) sets the calling thread's),
    // unchanged.
    PrctlRead {
        syscall: libc::SYS_personality,
        ..read("personality", -1, false)
    },
    read("dumpable", libc::PR_GET_DUMPABLE, false),
    read("child subreaper", libc::PR_GET_CHILD_SUBREAPER, true),
    read("thp disable", libc::PR_GET_THP_DISABLE, false),
    // Per mm: without its registration back, a restored process's MEMBARRIER_CMD_PRIVATE_
    // EXPEDITED (liburcu, language runtimes) fails with EPERM.
    PrctlRead {
        syscall: libc::SYS_membarrier,
        ..read(
            "membarrier registrations",
            MEMBARRIER_CMD_GET_REGISTRATIONS,
            false,
        )
    },
    // modify_ldt(0, slot, 8): 0 without an LDT, 8 with one (the kernel pads what it lacks).
    PrctlRead {
        syscall: libc::SYS_modify_ldt,
        arg3: 8,
        answer_returned: true,
        ..read("ldt", 0, true)
    },
];
/// How many of [`MAIN_READS`] every thread runs.
const THREAD_READS: usize = 10;

/// keyctl(KEYCTL_GET_KEYRING_ID) of the user's session keyring: read by every thread, to
/// tell a session keyring of the process's own from the one its user's lookups fall back to
/// (a thread of another uid than its process's falls back to its own user's).
const USER_SESSION_READ: PrctlRead =
    keyring_read("user session keyring", KEY_SPEC_USER_SESSION_KEYRING);
/// The same of the session keyring, in every thread (each may have joined its own).
const SESSION_READ: PrctlRead = keyring_read("session keyring", KEY_SPEC_SESSION_KEYRING);
/// The same of the thread keyring, last in every thread's batch: ENOKEY, which ends the
/// batch, is the usual answer (none).
const THREAD_KEYRING_READ: PrctlRead = keyring_read("thread keyring", KEY_SPEC_THREAD_KEYRING);

/// keyctl(KEYCTL_GET_KEYRING_ID, `spec`, 0): the keyring's serial, none made.
const fn keyring_read(name: &'static str, spec: i32) -> PrctlRead {
    PrctlRead {
        syscall: libc::SYS_keyctl,
        arg2: spec as i64 as u64,
        ..read(name, 0, false)
    }
}

/// The reads a thread runs in its dump batch (`main`: its process's ones too), in the order
/// [`dump_thread`] takes their answers; the thread keyring's last, as it may fail.
pub fn remote_reads(main: bool) -> Vec<&'static PrctlRead> {
    let process: &'static [PrctlRead] = if main {
        &MAIN_READS[THREAD_READS..]
    } else {
        &[]
    };
    MAIN_READS[..THREAD_READS]
        .iter()
        .chain(process)
        .chain([&USER_SESSION_READ, &SESSION_READ, &THREAD_KEYRING_READ])
        .collect()
}

/// Whether the batch of [`remote_reads`] failing with `errno` at its call `index` (of `len`)
/// is an answer: the thread has no thread keyring.
pub fn no_thread_keyring(index: usize, len: usize, errno: &io::Error) -> bool {
    index + 1 == len && errno.raw_os_error() == Some(libc::ENOKEY)
}

/// The attributes of thread `tid`, read from outside; `values` are the answers of its
/// [`remote_reads`] in order (the thread keyring's missing when there is none). With `process`
/// (the main thread) the process's share of them goes there, and the serial of its user's
/// session keyring is returned.
pub fn dump_thread(
    tid: Pid,
    values: &[u64],
    process: Option<&mut ProcessAttrs>,
) -> io::Result<(ThreadAttrs, Option<i32>)> {
    let attr = sched::get_attr(tid)?;
    let mut attrs = ThreadAttrs {
        nice: sched::get_nice(tid)?,
        policy: attr.policy,
        sched_flags: attr.flags & POLICY_FLAGS,
        rt_priority: attr.priority,
        runtime: attr.runtime,
        deadline: attr.deadline,
        period: attr.period,
        util_min: attr.util_min,
        util_max: attr.util_max,
        affinity: sched::get_affinity(tid)?,
        ioprio: sched::get_ioprio(tid)?,
        ..Default::default()
    };
    let value = |i: usize| values.get(i).copied().unwrap_or(0);
    attrs.timerslack_ns = value(0);
    attrs.default_timerslack_ns = default_timerslack(tid, &attr, attrs.timerslack_ns)
        .map_err(|e| io::Error::new(e.kind(), format!("default timer slack: {e}")))?;
    attrs.pdeathsig = value(1) as i32;
    attrs.mce_kill = value(2) as u32;
    // ARCH_GET_CPUID answers 1 where cpuid runs, 0 where it faults.
    attrs.cpuid_faulting = value(3) == 0;
    attrs.spec_store_bypass = value(4) as u32;
    attrs.spec_indirect_branch = value(5) as u32;
    attrs.spec_l1d_flush = value(6) as u32;
    attrs.tsc = value(7) as u32;
    attrs.mempolicy = value(8) as u32;
    attrs.personality = value(9) as u32;
    // PR_GET_IO_FLUSHER needs CAP_SYS_RESOURCE in the thread itself: its task flags tell.
    let flags = crate::proc::task_stat::read_thread(tid, tid)?.flags;
    attrs.io_flusher = flags & IO_FLUSHER_FLAGS == IO_FLUSHER_FLAGS;
    let keyrings = THREAD_READS
        + if process.is_some() {
            MAIN_READS.len() - THREAD_READS
        } else {
            0
        };
    let thread_user_session = value(keyrings) as i32;
    attrs.session_keyring = value(keyrings + 1) as i32;
    attrs.session_keyring_is_users = attrs.session_keyring == thread_user_session;
    attrs.thread_keyring = values.len() > keyrings + 2;
    let mut user_session = None;
    if let Some(p) = process {
        p.dumpable = value(10) as u32;
        p.child_subreaper = value(11) != 0;
        p.thp_disable = value(12) as u32;
        p.membarrier = value(13) as u32;
        p.ldt = value(14) != 0;
        user_session = Some(thread_user_session);
    }
    Ok((attrs, user_session))
}

/// The default timer slack of stopped thread `tid` (what its PR_SET_TIMERSLACK(0) gives back:
/// its creator's slack when it was made), `current` its slack now, `attr` its policy. Read
/// through /proc/TID/timerslack_ns, whose 0 resets the slack to the default as the thread's
/// prctl would: written 0, read, then the slack written back. A real-time thread ignores the
/// write and reads 0; it takes its default back when it leaves the real-time class, so a FIFO
/// or RR thread is made SCHED_OTHER for the read and put back. A SCHED_DEADLINE thread (its
/// bandwidth would be given up and asked again) is not read: None.
fn default_timerslack(tid: Pid, attr: &SchedAttr, current: u64) -> io::Result<Option<u64>> {
    let path = crate::proc::dir(tid).join("timerslack_ns");
    let read = || -> io::Result<u64> {
        std::fs::read_to_string(&path)?
            .trim()
            .parse()
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
    };
    match attr.policy as i32 {
        libc::SCHED_DEADLINE => Ok(None),
        // Made SCHED_OTHER, it could not be put back without CAP_SYS_NICE (KNOWN GAP, as
        // below).
        libc::SCHED_FIFO | libc::SCHED_RR
            if !crate::sys::process::has_effective_cap(crate::sys::process::CAP_SYS_NICE) =>
        {
            Ok(None)
        }
        libc::SCHED_FIFO | libc::SCHED_RR => {
            let fair = SchedAttr {
                policy: libc::SCHED_OTHER as u32,
                nice: attr.nice,
                ..Default::default()
            };
            let back = SchedAttr {
                policy: attr.policy,
                flags: attr.flags & POLICY_FLAGS,
                priority: attr.priority,
                ..Default::default()
            };
            sched::set_attr(tid, &fair)?;
            let default = read();
            sched::set_attr(tid, &back)?;
            default.map(Some)
        }
        _ => {
            match std::fs::write(&path, "0") {
                // The write needs CAP_SYS_NICE over the thread's user namespace: a cryo
                // without it cannot read the default (KNOWN GAP: the restore gives the
                // creator's, as a cryo before 2026-12-07 did).
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Ok(None),
                written => written?,
            }
            let default = read();
            // 0 (a default of 0, made by a real-time thread) resets to it again.
            std::fs::write(&path, current.to_string())?;
            default.map(Some)
        }
    }
}

/// The process attributes /proc shows from outside (the prctl ones come with the main
/// thread's [`dump_thread`]).
pub fn dump_process(pid: Pid) -> Result<ProcessAttrs, AttrError> {
    let number = |name: &'static str| -> Result<i32, AttrError> {
        let text = std::fs::read_to_string(crate::proc::dir(pid).join(name)).map_err(|e| {
            AttrError::Read {
                pid,
                tid: pid,
                attribute: name,
                errno: e,
            }
        })?;
        text.trim().parse().map_err(|_| AttrError::Read {
            pid,
            tid: pid,
            attribute: name,
            errno: io::Error::from(io::ErrorKind::InvalidData),
        })
    };
    let audit = |name| audit_id(&pid.to_string(), name).map_err(AttrError::read(pid, pid, name));
    let coredump_filter = std::fs::read_to_string(crate::proc::dir(pid).join("coredump_filter"))
        .map_err(AttrError::read(pid, pid, "coredump_filter"))?;
    let coredump_filter = u32::from_str_radix(coredump_filter.trim(), 16).map_err(|_| {
        AttrError::read(pid, pid, "coredump_filter")(io::Error::from(io::ErrorKind::InvalidData))
    })?;
    // "/autogroup-N nice M"; absent with autogroup scheduling not built, and empty for the
    // default autogroup of processes whose line never made a session (session 0): its nice
    // can't be set (the root task group's weight is fixed), so there is nothing to restore.
    let autogroup_nice = match std::fs::read_to_string(crate::proc::dir(pid).join("autogroup")) {
        Ok(text) if text.trim().is_empty() => None,
        Ok(text) => Some(parse_autogroup_nice(&text).ok_or_else(|| {
            AttrError::read(pid, pid, "autogroup")(io::Error::from(io::ErrorKind::InvalidData))
        })?),
        Err(_) => None,
    };
    Ok(ProcessAttrs {
        oom_score_adj: number("oom_score_adj")?,
        loginuid: audit("loginuid")?,
        sessionid: audit("sessionid")?,
        coredump_filter: Some(coredump_filter),
        autogroup_nice,
        ..Default::default()
    })
}

/// The nice value of an autogroup as /proc/PID/autogroup writes it: `/autogroup-N nice M`.
fn parse_autogroup_nice(text: &str) -> Option<i32> {
    text.split_whitespace()
        .skip_while(|w| *w != "nice")
        .nth(1)?
        .parse()
        .ok()
}

/// FIFO, RR and DEADLINE: policies that need CAP_SYS_NICE (or RLIMIT_RTPRIO) and ignore
/// the timer slack.
fn is_realtime(policy: u32) -> bool {
    matches!(
        policy as i32,
        libc::SCHED_FIFO | libc::SCHED_RR | libc::SCHED_DEADLINE
    )
}

fn policy_name(policy: u32) -> &'static str {
    match policy as i32 {
        libc::SCHED_OTHER => "SCHED_OTHER",
        libc::SCHED_FIFO => "SCHED_FIFO",
        libc::SCHED_RR => "SCHED_RR",
        libc::SCHED_BATCH => "SCHED_BATCH",
        libc::SCHED_IDLE => "SCHED_IDLE",
        libc::SCHED_DEADLINE => "SCHED_DEADLINE",
        _ => "an unknown policy",
    }
}

/// A CPU mask as a list: `0-1,4`.
fn cpu_list(mask: &[u64]) -> String {
    let cpus: Vec<usize> = (0..mask.len() * 64)
        .filter(|&c| mask[c / 64] >> (c % 64) & 1 != 0)
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// Whether two masks hold the same CPUs (their lengths may differ by zero words).
fn same_cpus(a: &[u64], b: &[u64]) -> bool {
    let word = |m: &[u64], i: usize| m.get(i).copied().unwrap_or(0);
    (0..a.len().max(b.len())).all(|i| word(a, i) == word(b, i))
}

/// Whether every CPU of `a` is in `b`.
fn within(a: &[u64], b: &[u64]) -> bool {
    a.iter()
        .enumerate()
        .all(|(i, w)| w & !b.get(i).copied().unwrap_or(0) == 0)
}

/// What cryo itself has, against which a dumped value needs a check: the calling thread's
/// nice, CPU mask, oom_score_adj, loginuid and effective capabilities.
struct Own {
    nice: i32,
    affinity: Vec<u64>,
    oom_score_adj: i32,
    loginuid: u32,
    cap_eff: u64,
    session_keyring: Option<i32>,
}

impl Own {
    fn read() -> io::Result<Self> {
        let me = Pid::from_raw(0);
        let file = |name: &str| std::fs::read_to_string(format!("/proc/self/{name}"));
        let bad = || io::Error::from(io::ErrorKind::InvalidData);
        let status = file("status")?;
        let cap_eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .ok_or_else(bad)?;
        Ok(Self {
            nice: sched::get_nice(me)?,
            affinity: sched::get_affinity(me)?,
            oom_score_adj: file("oom_score_adj")?.trim().parse().map_err(|_| bad())?,
            loginuid: audit_id("self", "loginuid")?,
            cap_eff,
            session_keyring: crate::sys::keyctl::own_session_keyring()?,
        })
    }
}

/// Refuses, naming pid, tid and attribute, whatever of `core`'s attributes a restore by this
/// cryo could not set: what only a capability allows is tried on cryo itself (a thread of
/// its own for the scheduling attributes), so the answer is the kernel's.
pub fn refuse_unrestorable(pid: Pid, core: &TaskCore) -> Result<(), AttrError> {
    let own = Own::read().map_err(|e| AttrError::Read {
        pid,
        tid: pid,
        attribute: "cryo's own attributes",
        errno: e,
    })?;
    if let Some(p) = &core.attrs {
        refuse_process(pid, p, &own, core.userns.as_ref())?;
    }
    refuse_hard_limits(pid, &core.rlimits, &own)?;
    super::keyrings::refuse(pid, core, own.session_keyring)?;
    let mut probes = Vec::new();
    for thread in &core.threads {
        let Some(a) = &thread.attrs else { continue };
        let tid = Pid::from_raw(thread.tid);
        refuse_thread(pid, tid, a)?;
        if is_realtime(a.policy)
            || a.nice < own.nice
            || !within(&a.affinity, &own.affinity)
            || a.ioprio >> 13 == IOPRIO_CLASS_RT
        {
            probes.push((tid, a));
        }
    }
    if probes.is_empty() {
        return Ok(());
    }
    // Each on a thread of cryo's own, which ends after: cryo's other threads keep theirs, and
    // one probe's narrowed affinity does not fail the next's SCHED_DEADLINE (which wants every
    // CPU of its root domain).
    std::thread::scope(|scope| {
        probes.iter().try_for_each(|(tid, a)| {
            scope
                .spawn(|| probe(pid, *tid, a))
                .join()
                .unwrap_or(Err(AttrError::Read {
                    pid,
                    tid: pid,
                    attribute: "scheduling attributes (the probe thread panicked)",
                    errno: io::Error::from(io::ErrorKind::Other),
                }))
        })
    })
}

/// CAP_SYS_RESOURCE: needed to raise a hard resource limit.
const CAP_SYS_RESOURCE: u32 = 24;

/// The names of the resource limits, by number (x86_64).
const RLIMIT_NAMES: [&str; 16] = [
    "RLIMIT_CPU",
    "RLIMIT_FSIZE",
    "RLIMIT_DATA",
    "RLIMIT_STACK",
    "RLIMIT_CORE",
    "RLIMIT_RSS",
    "RLIMIT_NPROC",
    "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",
    "RLIMIT_AS",
    "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
];

/// A limit as /proc/PID/limits writes it.
fn limit_text(v: u64) -> String {
    if v == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// Refuses a hard limit above cryo's own when cryo lacks CAP_SYS_RESOURCE: the restore could
/// only lower it (the child is a fork of cryo, with its limits).
fn refuse_hard_limits(pid: Pid, limits: &[Rlimit], own: &Own) -> Result<(), AttrError> {
    if own.cap_eff & 1 << CAP_SYS_RESOURCE != 0 {
        return Ok(());
    }
    for lim in limits {
        let name = RLIMIT_NAMES
            .get(lim.resource as usize)
            .copied()
            .unwrap_or("an unknown limit");
        let (_, ours) = crate::sys::process::prlimit(Pid::from_raw(0), lim.resource, None)
            .map_err(AttrError::read(pid, pid, "cryo's own resource limits"))?;
        if lim.max > ours {
            return Err(AttrError::HardLimit {
                pid,
                name,
                value: limit_text(lim.max),
                own: limit_text(ours),
            });
        }
    }
    Ok(())
}

/// Sets `a` on the calling thread, as the restore would on thread `tid`.
fn probe(pid: Pid, tid: Pid, a: &ThreadAttrs) -> Result<(), AttrError> {
    let me = Pid::from_raw(0);
    let refused = |attribute: &'static str, value: String| {
        move |errno| AttrError::NotPermitted {
            pid,
            tid,
            attribute,
            value,
            errno,
        }
    };
    if is_realtime(a.policy) {
        let attr = policy_attr(a);
        let value = match a.policy as i32 {
            libc::SCHED_DEADLINE => format!(
                "SCHED_DEADLINE runtime {} deadline {} period {} ns",
                a.runtime, a.deadline, a.period
            ),
            _ => format!("{} {}", policy_name(a.policy), a.rt_priority),
        };
        sched::set_attr(me, &attr).map_err(refused("scheduling policy", value))?;
        sched::set_attr(me, &SchedAttr::default()).map_err(refused(
            "scheduling policy",
            "SCHED_OTHER (back)".to_string(),
        ))?;
    }
    sched::set_nice(me, a.nice).map_err(refused("nice", a.nice.to_string()))?;
    if !a.affinity.is_empty() {
        let wanted = cpu_list(&a.affinity);
        sched::set_affinity(me, &a.affinity).map_err(refused("cpu affinity", wanted.clone()))?;
        let got = sched::get_affinity(me).map_err(AttrError::read(
            pid,
            tid,
            "cpu affinity (cryo's own)",
        ))?;
        if !same_cpus(&got, &a.affinity) {
            return Err(AttrError::AffinityNarrowed {
                pid,
                tid,
                wanted,
                got: cpu_list(&got),
            });
        }
    }
    sched::set_ioprio(me, a.ioprio).map_err(refused("ioprio", format!("{:#x}", a.ioprio)))?;
    Ok(())
}

/// What of a thread's attributes no call could give a restored thread, or cryo could not.
fn refuse_thread(pid: Pid, tid: Pid, a: &ThreadAttrs) -> Result<(), AttrError> {
    let unrestorable = |attribute, value: String, why| AttrError::Unrestorable {
        pid,
        tid,
        attribute,
        value,
        why,
    };
    if a.io_flusher {
        return Err(unrestorable(
            "io flusher (PR_SET_IO_FLUSHER)",
            "on".into(),
            "setting it needs CAP_SYS_RESOURCE in the thread, which a restored thread cannot be \
             given for it",
        ));
    }
    if a.mempolicy != MPOL_DEFAULT {
        return Err(unrestorable(
            "numa memory policy (set_mempolicy)",
            format!("mode {:#x}", a.mempolicy),
            "cryo restores the default policy only",
        ));
    }
    if ![0, PR_TSC_ENABLE, PR_TSC_SIGSEGV].contains(&a.tsc) {
        return Err(unrestorable(
            "tsc (PR_GET_TSC)",
            a.tsc.to_string(),
            "a mode this cryo does not know",
        ));
    }
    for ((name, which), value) in SPECULATION.into_iter().zip(speculation_values(a)) {
        let Some(state) = speculation_state(value) else {
            continue;
        };
        if state == PR_SPEC_FORCE_DISABLE {
            continue;
        }
        // The restored thread starts with cryo's state: force-disabled there, it cannot be
        // enabled or merely disabled again.
        let own = crate::sys::prctl::get_own(libc::PR_GET_SPECULATION_CTRL, which)
            .map_err(AttrError::read(pid, tid, name))?;
        if speculation_state(own as u32) == Some(PR_SPEC_FORCE_DISABLE) {
            return Err(unrestorable(
                name,
                format!("{value:#x}"),
                "speculation is force-disabled in cryo, whose state a restored thread starts \
                 with, and no call enables it again",
            ));
        }
    }
    Ok(())
}

fn refuse_process(
    pid: Pid,
    p: &ProcessAttrs,
    own: &Own,
    userns: Option<&cryo_proto::image::UserNamespace>,
) -> Result<(), AttrError> {
    if p.dumpable == 2 {
        return Err(AttrError::SuidDumpable { pid });
    }
    if p.ldt {
        return Err(AttrError::Unrestorable {
            pid,
            tid: pid,
            attribute: "local descriptor table (modify_ldt)",
            value: "non-empty".into(),
            why: "cryo does not write LDT entries back",
        });
    }
    let known = MEMBARRIER_REGISTER_COMMANDS
        .iter()
        .fold(0, |all, c| all | c);
    if p.membarrier & !known != 0 {
        return Err(AttrError::Unrestorable {
            pid,
            tid: pid,
            attribute: "membarrier registrations",
            value: format!("{:#x}", p.membarrier),
            why: "a registration command this cryo does not know",
        });
    }
    // In a user namespace of its own the process sets it itself, without CAP_AUDIT_CONTROL
    // (of the initial namespace): only once, from cryo's unset one, to an id its maps map.
    let may_set = match userns {
        None => own.cap_eff >> CAP_AUDIT_CONTROL & 1 != 0,
        Some(ns) => {
            own.loginuid == AUDIT_UNSET
                && crate::task::userns::to_inside(&ns.uid_map, p.loginuid).is_some()
        }
    };
    if p.loginuid != own.loginuid && !may_set {
        return Err(AttrError::Loginuid {
            pid,
            loginuid: p.loginuid,
        });
    }
    if p.oom_score_adj < own.oom_score_adj {
        // Only as low as cryo's hidden minimum without CAP_SYS_RESOURCE: tried on cryo
        // itself, then put back (going back up is always allowed).
        let path = "/proc/self/oom_score_adj";
        let tried = std::fs::write(path, p.oom_score_adj.to_string());
        let _ = std::fs::write(path, own.oom_score_adj.to_string());
        tried.map_err(|errno| AttrError::OomScoreAdj {
            pid,
            value: p.oom_score_adj,
            errno,
        })?;
    }
    Ok(())
}

/// In the restore child (still cryo, before it is reshaped): the process attributes it sets
/// on itself, and the main thread's timer slack and MCE policy (the threads it creates later
/// start with those).
pub fn restore_in_child(core: &TaskCore) -> Result<(), ChildError> {
    let fail = |what: &'static str| ChildError::sys_on(ChildStep::Attribute, what);
    if let Some(p) = &core.attrs {
        // As the process names it in a user namespace of its own (unset stays unset).
        let loginuid = match p.loginuid {
            AUDIT_UNSET => AUDIT_UNSET,
            uid => crate::task::userns::own_ids()
                .uid(uid)
                .map_err(fail("loginuid"))?,
        };
        if audit_id("self", "loginuid").map_err(fail("loginuid"))? != loginuid {
            std::fs::write("/proc/self/loginuid", loginuid.to_string())
                .map_err(fail("loginuid"))?;
        }
        std::fs::write("/proc/self/oom_score_adj", p.oom_score_adj.to_string())
            .map_err(fail("oom_score_adj"))?;
        // The autogroup is the session's: a session leader (it made its session already) sets
        // the nice of the one it made; the others share their leader's.
        if let Some(nice) = p.autogroup_nice {
            let me = nix::unistd::getpid();
            if nice != 0 && nix::unistd::getsid(None).ok() == Some(me) {
                std::fs::write("/proc/self/autogroup", nice.to_string())
                    .map_err(fail("autogroup nice"))?;
            }
        }
        // Kept in the mm, which the child keeps through its reshaping.
        if let Some(filter) = p.coredump_filter {
            std::fs::write("/proc/self/coredump_filter", format!("{filter:#x}"))
                .map_err(fail("coredump_filter"))?;
        }
        if p.child_subreaper {
            set_own(libc::PR_SET_CHILD_SUBREAPER, 1, 0).map_err(fail("child subreaper"))?;
        }
        if p.thp_disable != 0 {
            let flags = if p.thp_disable == THP_DISABLED_EXCEPT_ADVISED {
                PR_THP_DISABLE_EXCEPT_ADVISED
            } else {
                0
            };
            set_own(libc::PR_SET_THP_DISABLE, 1, flags).map_err(fail("thp disable"))?;
        }
    }
    if let Some(main) = core.threads.first().and_then(|t| t.attrs.as_ref()) {
        // A real-time thread reads 0 and ignores a new slack: it gets its own back when it
        // leaves the real-time class.
        if !is_realtime(main.policy) && main.timerslack_ns != 0 {
            set_own(libc::PR_SET_TIMERSLACK, main.timerslack_ns, 0).map_err(fail("timer slack"))?;
        }
        if main.mce_kill != MCE_KILL_DEFAULT {
            set_own(
                libc::PR_MCE_KILL,
                libc::PR_MCE_KILL_SET as u64,
                main.mce_kill as u64,
            )
            .map_err(fail("mce kill policy"))?;
        }
    }
    Ok(())
}

/// The first thread of `core` with a parent-death signal (PR_SET_PDEATHSIG), and that signal:
/// the kernel sends it when the thread's parent ends, so a restore must keep that parent.
pub(crate) fn death_signal(core: &TaskCore) -> Option<(i32, i32)> {
    core.threads.iter().find_map(|thread| {
        let signal = thread.attrs.as_ref()?.pdeathsig;
        (signal != 0).then_some((thread.tid, signal))
    })
}

/// The default timer slack the main thread of `core` is made with, where the image has it.
pub fn main_default_slack(core: &TaskCore) -> Option<u64> {
    core.threads.first()?.attrs.as_ref()?.default_timerslack_ns
}

/// What [`slack_for_creation`] changed in the creating thread, to be put back.
#[derive(Debug, Default)]
pub struct CreatorSlack {
    /// Its scheduling attributes before it was made real-time for a default of 0.
    sched: Option<SchedAttr>,
    /// Its slack before.
    slack: Option<u64>,
}

/// `sched_setattr` of a creator made real-time for one creation: SCHED_FIFO with
/// SCHED_FLAG_RESET_ON_FORK, so that what it makes is born SCHED_OTHER, with a slack of 0.
fn real_time_creator() -> SchedAttr {
    SchedAttr {
        policy: libc::SCHED_FIFO as u32,
        flags: libc::SCHED_FLAG_RESET_ON_FORK as u64,
        priority: 1,
        ..Default::default()
    }
}

/// Gives the calling thread the timer slack `default` for a fork or clone it makes next: the
/// kernel (copy_process) makes the new task's default slack its creator's slack then. A
/// default of 0 (the task was made by a real-time one) is a slack only a real-time thread
/// has: the caller is made real-time ([`real_time_creator`]) for it. [`CreatorSlack::put_back`]
/// in the caller (the parent) after the fork.
pub fn slack_for_creation(default: Option<u64>) -> io::Result<CreatorSlack> {
    let me = Pid::from_raw(0);
    let Some(default) = default else {
        return Ok(CreatorSlack::default());
    };
    let slack = crate::sys::prctl::get_own(libc::PR_GET_TIMERSLACK, 0)? as u64;
    if default == slack {
        return Ok(CreatorSlack::default());
    }
    if default == 0 {
        let was = sched::get_attr(me)?;
        sched::set_attr(me, &real_time_creator())?;
        return Ok(CreatorSlack {
            sched: Some(was),
            slack: Some(slack),
        });
    }
    set_own(libc::PR_SET_TIMERSLACK, default, 0)?;
    Ok(CreatorSlack {
        sched: None,
        slack: Some(slack),
    })
}

impl CreatorSlack {
    /// Puts back the calling thread's policy and slack as they were before
    /// [`slack_for_creation`].
    pub fn put_back(self) -> io::Result<()> {
        if let Some(was) = self.sched {
            sched::set_attr(Pid::from_raw(0), &settable(was))?;
        }
        // A slack of 0 outside a real-time policy is a default of 0: 0 resets to it.
        if let Some(slack) = self.slack {
            set_own(libc::PR_SET_TIMERSLACK, slack, 0)?;
        }
        Ok(())
    }
}

/// Runs `fork` (a fork or clone3 by the calling thread) with the calling thread's slack set to
/// `default` ([`slack_for_creation`]), put back after in the parent (and after a failure).
pub fn fork_with_default_slack(
    default: Option<u64>,
    fork: impl FnOnce() -> io::Result<Forked>,
) -> io::Result<Forked> {
    let creator = slack_for_creation(default)?;
    let forked = fork();
    if !matches!(forked, Ok(Forked::Child)) {
        creator.put_back()?;
    }
    forked
}

/// Gives the main thread of restored process `pid` (`main`, by remote calls, or from
/// outside) the slack `thread` is to be created with as its default: before its clone (see
/// [`slack_for_creation`]). Answers the main thread's policy to put back after the clone when
/// it was made real-time for it. Without a default in the image (an older one), the thread is
/// made with the main thread's own slack, as before.
pub fn slack_for_thread(
    pid: Pid,
    main: &Remote,
    task: &TaskCore,
    thread: &ThreadCore,
) -> Result<Option<SchedAttr>, AttrError> {
    let tid = main.tid();
    let set = |attribute| AttrError::set(pid, tid, attribute);
    let own = task.threads.first().and_then(|t| t.attrs.as_ref());
    let wanted = match thread.attrs.as_ref().and_then(|a| a.default_timerslack_ns) {
        Some(d) => d,
        None => match own {
            Some(m) if !is_realtime(m.policy) && m.timerslack_ns != 0 => m.timerslack_ns,
            _ => return Ok(None),
        },
    };
    if wanted == 0 {
        let was = sched::get_attr(tid).map_err(AttrError::read(pid, tid, "scheduling policy"))?;
        sched::set_attr(tid, &real_time_creator()).map_err(set(
            "scheduling policy (real-time, to make a thread with a default timer slack of 0)",
        ))?;
        return Ok(Some(was));
    }
    main.call(
        libc::SYS_prctl,
        &[libc::PR_SET_TIMERSLACK as u64, wanted, 0, 0, 0],
    )
    .map_err(set("timer slack (to make a thread with it as its default)"))?;
    Ok(None)
}

/// After [`slack_for_thread`] and the clone: the main thread's policy back (`was`), and its
/// own slack once every thread is made (`last`).
pub fn slack_after_thread(
    pid: Pid,
    main: &Remote,
    task: &TaskCore,
    was: Option<SchedAttr>,
    last: bool,
) -> Result<(), AttrError> {
    let tid = main.tid();
    let set = |attribute| AttrError::set(pid, tid, attribute);
    if let Some(was) = was {
        sched::set_attr(tid, &settable(was)).map_err(set("scheduling policy"))?;
    }
    if last {
        // Its own (0 resets it to its default; a real-time one is 0 once its policy is set).
        let own = task.threads.first().and_then(|t| t.attrs.as_ref());
        let slack = own.map_or(0, |m| m.timerslack_ns);
        main.call(
            libc::SYS_prctl,
            &[libc::PR_SET_TIMERSLACK as u64, slack, 0, 0, 0],
        )
        .map_err(set("timer slack"))?;
    }
    Ok(())
}

/// Whether restoring `creds` changes an id of the (root) restore child: that resets dumpable
/// and the parent-death signal.
fn ids_change(creds: Option<&Creds>) -> bool {
    creds.is_some_and(|c| {
        [
            c.uid, c.euid, c.suid, c.fsuid, c.gid, c.egid, c.sgid, c.fsgid,
        ]
        .iter()
        .any(|&id| id != 0)
    })
}

/// Sets, by remote calls in `remote`'s thread (`thread` of `task`) once its credentials are
/// in place, what an id change resets and what it does not inherit from the main thread:
/// parent-death signal; in the main thread, dumpable (and, its timers made by then, the timer
/// id restore mode and the membarrier registrations); in the others, their own timer slack
/// and MCE policy. Runs nothing when nothing differs.
pub fn restore_after_creds(
    pid: Pid,
    remote: &Remote,
    batch: BatchSite,
    task: &TaskCore,
    thread: &ThreadCore,
) -> Result<(), AttrError> {
    let Some(a) = &thread.attrs else {
        return Ok(());
    };
    let main = task.threads.first().and_then(|t| t.attrs.as_ref());
    let is_main = task.threads.first().is_some_and(|t| t.tid == thread.tid);
    let prctl = |option: libc::c_int, arg2: u64, arg3: u64| -> BatchCall {
        (libc::SYS_prctl, [option as u64, arg2, arg3, 0, 0, 0])
    };
    let mut calls: Vec<(&'static str, BatchCall)> = Vec::new();
    // The main thread is the process cryo forked, which dies with its parent until here
    // (die_with_parent): it gets the dumped value even when that is none.
    if a.pdeathsig != 0 || is_main {
        calls.push((
            "parent-death signal",
            prctl(libc::PR_SET_PDEATHSIG, a.pdeathsig as u64, 0),
        ));
    }
    if is_main {
        if let Some(p) = &task.attrs {
            if p.dumpable != 1 || ids_change(task.creds.as_ref()) {
                calls.push((
                    "dumpable",
                    prctl(libc::PR_SET_DUMPABLE, p.dumpable as u64, 0),
                ));
            }
            // Per process, after its timers were made (timers.rs turns the mode off when
            // done with it).
            if p.timer_create_restore_ids {
                calls.push((
                    "timer id restore mode",
                    (
                        libc::SYS_prctl,
                        [PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0, 0],
                    ),
                ));
            }
            // Per mm, so once, in the main thread; the restored mm starts with none.
            for command in MEMBARRIER_REGISTER_COMMANDS {
                if p.membarrier & command != 0 {
                    calls.push((
                        "membarrier registration",
                        (libc::SYS_membarrier, [command as u64, 0, 0, 0, 0, 0]),
                    ));
                }
            }
        }
    } else if let Some(main) = main {
        // A thread starts with its creator's slack, which was its default (slack_for_thread),
        // or the main thread's own in an older image.
        let created_with = match a.default_timerslack_ns {
            Some(d) => Some(d),
            None => (!is_realtime(main.policy)).then_some(main.timerslack_ns),
        };
        let inherited = created_with == Some(a.timerslack_ns);
        if !is_realtime(a.policy) && a.timerslack_ns != 0 && !inherited {
            calls.push((
                "timer slack",
                prctl(libc::PR_SET_TIMERSLACK, a.timerslack_ns, 0),
            ));
        }
        // A thread starts with its creator's (the main thread's, restored by the child).
        if a.personality != main.personality {
            calls.push((
                "personality",
                (libc::SYS_personality, [a.personality as u64, 0, 0, 0, 0, 0]),
            ));
        }
        if a.mce_kill != main.mce_kill {
            let call = if a.mce_kill == MCE_KILL_DEFAULT {
                prctl(libc::PR_MCE_KILL, libc::PR_MCE_KILL_CLEAR as u64, 0)
            } else {
                prctl(
                    libc::PR_MCE_KILL,
                    libc::PR_MCE_KILL_SET as u64,
                    a.mce_kill as u64,
                )
            };
            calls.push(("mce kill policy", call));
        }
    }
    // Set in every thread whose own state is not what a thread starts with: a thread
    // inherits its creator's at clone.
    let main_faulting = main.is_some_and(|m| m.cpuid_faulting);
    if a.cpuid_faulting || main_faulting {
        calls.push((
            "cpuid faulting",
            (
                libc::SYS_arch_prctl,
                [
                    ARCH_SET_CPUID as u64,
                    u64::from(!a.cpuid_faulting),
                    0,
                    0,
                    0,
                    0,
                ],
            ),
        ));
    }
    // Each thread is created with the restore child's state (cryo's): its own is set in it.
    for ((name, which), value) in SPECULATION.into_iter().zip(speculation_values(a)) {
        if let Some(state) = speculation_state(value) {
            calls.push((
                name,
                prctl(libc::PR_SET_SPECULATION_CTRL, which, state as u64),
            ));
        }
    }
    if a.tsc == PR_TSC_SIGSEGV {
        calls.push(("tsc", prctl(libc::PR_SET_TSC, PR_TSC_SIGSEGV as u64, 0)));
    }
    if calls.is_empty() {
        return Ok(());
    }
    let batch_calls: Vec<BatchCall> = calls.iter().map(|(_, c)| *c).collect();
    remote.batch(batch, &batch_calls).map(drop).map_err(|e| {
        let attribute = calls.get(e.index).map_or("prctl attributes", |(n, _)| n);
        AttrError::set(pid, remote.tid(), attribute)(e.error)
    })
}

/// A thread's syscall user dispatch as the image keeps it.
pub fn dispatch_to_image(conf: SudConfig) -> SyscallUserDispatch {
    SyscallUserDispatch {
        mode: conf.mode,
        selector: conf.selector,
        offset: conf.offset,
        len: conf.len,
    }
}

/// Turns the syscall user dispatch of the restored thread `tid` (as cryo sees it) on again,
/// from outside: after its last remote call (with the selector on BLOCK, the calls would be
/// dispatched as SIGSYS).
pub fn restore_dispatch(pid: Pid, tid: Pid, thread: &ThreadCore) -> Result<(), AttrError> {
    let Some(d) = thread
        .attrs
        .as_ref()
        .and_then(|a| a.syscall_dispatch.as_ref())
    else {
        return Ok(());
    };
    let conf = SudConfig {
        mode: d.mode,
        selector: d.selector,
        offset: d.offset,
        len: d.len,
    };
    crate::sys::ptrace::set_sud(tid, &conf).map_err(AttrError::set(
        pid,
        tid,
        "syscall user dispatch",
    ))
}

/// The SCHED_FLAG_* a thread's policy is set with: RESET_ON_FORK, and SCHED_DEADLINE's RECLAIM
/// and DL_OVERRUN (the kernel reports them through sched_getattr).
const POLICY_FLAGS: u64 = libc::SCHED_FLAG_RESET_ON_FORK as u64 | 0x02 | 0x04;

/// Attributes sched_getattr read, as sched_setattr takes them back (only the policy's flags).
fn settable(read: SchedAttr) -> SchedAttr {
    SchedAttr {
        flags: read.flags & POLICY_FLAGS,
        ..read
    }
}

/// The policy of thread attributes `a` as sched_setattr takes it (SCHED_DEADLINE's runtime,
/// deadline and period; a fair policy's custom slice is left to the caller).
fn policy_attr(a: &ThreadAttrs) -> SchedAttr {
    let deadline = a.policy as i32 == libc::SCHED_DEADLINE;
    SchedAttr {
        policy: a.policy,
        flags: a.sched_flags,
        nice: a.nice,
        priority: a.rt_priority,
        runtime: if deadline { a.runtime } else { 0 },
        deadline: if deadline { a.deadline } else { 0 },
        period: if deadline { a.period } else { 0 },
        ..Default::default()
    }
}

/// Sets the scheduling attributes of the restored thread `tid` (as cryo sees it) from
/// outside, those that differ from what it has: the last step before it runs.
pub fn restore_sched(pid: Pid, tid: Pid, thread: &ThreadCore) -> Result<(), AttrError> {
    let Some(a) = &thread.attrs else {
        return Ok(());
    };
    let read = |attribute| AttrError::read(pid, tid, attribute);
    let set = |attribute| AttrError::set(pid, tid, attribute);
    if !a.affinity.is_empty() {
        let now = sched::get_affinity(tid).map_err(read("cpu affinity"))?;
        if !same_cpus(&now, &a.affinity) {
            sched::set_affinity(tid, &a.affinity).map_err(set("cpu affinity"))?;
        }
    }
    if sched::get_ioprio(tid).map_err(read("ioprio"))? != a.ioprio {
        sched::set_ioprio(tid, a.ioprio).map_err(set("ioprio"))?;
    }
    let now = sched::get_attr(tid).map_err(read("scheduling policy"))?;
    // The fair policies' slice: only a custom one is set (an unset one reads the default).
    let runtime = if now.runtime == a.runtime {
        0
    } else {
        a.runtime
    };
    let wanted = SchedAttr {
        runtime,
        ..policy_attr(a)
    };
    let differs = now.policy != a.policy
        || now.flags & POLICY_FLAGS != a.sched_flags
        || now.priority != a.rt_priority
        || runtime != 0
        || (now.deadline, now.period) != (wanted.deadline, wanted.period)
        || now.nice != a.nice;
    if differs {
        sched::set_attr(tid, &wanted).map_err(set("scheduling policy"))?;
    }
    // A real-time policy leaves the nice value alone.
    if sched::get_nice(tid).map_err(read("nice"))? != a.nice {
        sched::set_nice(tid, a.nice).map_err(set("nice"))?;
    }
    let now = sched::get_attr(tid).map_err(read("utilisation clamps"))?;
    if (now.util_min, now.util_max) != (a.util_min, a.util_max) {
        const KEEP_ALL: u64 = 0x08 | 0x10;
        const UTIL_CLAMP: u64 = 0x20 | 0x40;
        let clamps = SchedAttr {
            flags: KEEP_ALL | UTIL_CLAMP | a.sched_flags,
            util_min: a.util_min,
            util_max: a.util_max,
            ..now
        };
        sched::set_attr(tid, &clamps).map_err(set("utilisation clamps"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP_SYS_RESOURCE: u32 = 24;

    #[test]
    fn speculation_is_set_again_only_where_it_is_the_threads_own() {
        // Host states (no PR_SPEC_PRCTL): nothing to set.
        assert_eq!(speculation_state(0), None);
        assert_eq!(speculation_state(PR_SPEC_ENABLE), None);
        assert_eq!(speculation_state(PR_SPEC_FORCE_DISABLE), None);
        assert_eq!(
            speculation_state(PR_SPEC_PRCTL | PR_SPEC_ENABLE),
            Some(PR_SPEC_ENABLE)
        );
        assert_eq!(
            speculation_state(PR_SPEC_PRCTL | PR_SPEC_FORCE_DISABLE),
            Some(PR_SPEC_FORCE_DISABLE)
        );
        assert_eq!(
            speculation_state(PR_SPEC_PRCTL | PR_SPEC_DISABLE_NOEXEC),
            Some(PR_SPEC_DISABLE_NOEXEC)
        );
    }

    #[test]
    fn an_io_flusher_thread_and_an_unknown_tsc_mode_are_refused() {
        let pid = Pid::from_raw(4242);
        let tid = Pid::from_raw(4243);
        let flusher = ThreadAttrs {
            io_flusher: true,
            ..Default::default()
        };
        let err = refuse_thread(pid, tid, &flusher).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("pid 4242 thread 4243: io flusher"),
            "{err}"
        );
        let tsc = ThreadAttrs {
            tsc: 7,
            ..Default::default()
        };
        assert!(refuse_thread(pid, tid, &tsc).is_err());
        let fine = ThreadAttrs {
            tsc: PR_TSC_SIGSEGV,
            ..Default::default()
        };
        refuse_thread(pid, tid, &fine).unwrap();
    }

    #[test]
    fn autogroup_nice_is_read_as_the_kernel_writes_it() {
        assert_eq!(parse_autogroup_nice("/autogroup-41350 nice 0\n"), Some(0));
        assert_eq!(parse_autogroup_nice("/autogroup-7 nice -5\n"), Some(-5));
        assert_eq!(parse_autogroup_nice("garbage"), None);
        assert_eq!(parse_autogroup_nice(""), None);
    }

    #[test]
    fn cpu_lists_read_as_the_kernel_writes_them() {
        assert_eq!(cpu_list(&[0b1011]), "0-1,3");
        assert_eq!(cpu_list(&[0, 1]), "64");
        assert!(same_cpus(&[0b10], &[0b10, 0]));
        assert!(within(&[0b10], &[0b11]));
        assert!(!within(&[0b100], &[0b11]));
    }

    fn own(oom_score_adj: i32, cap_eff: u64) -> Own {
        Own {
            nice: 0,
            affinity: vec![0b11],
            oom_score_adj,
            loginuid: AUDIT_UNSET,
            cap_eff,
            session_keyring: None,
        }
    }

    #[test]
    fn suid_dumpable_and_a_foreign_loginuid_without_audit_control_are_refused() {
        let pid = Pid::from_raw(4242);
        let suid = ProcessAttrs {
            dumpable: 2,
            loginuid: AUDIT_UNSET,
            ..Default::default()
        };
        let err = refuse_process(pid, &suid, &own(0, !0), None).unwrap_err();
        assert!(
            err.to_string().contains("pid 4242 thread 4242: dumpable 2"),
            "{err}"
        );
        let login = ProcessAttrs {
            dumpable: 1,
            loginuid: 1000,
            ..Default::default()
        };
        let err =
            refuse_process(pid, &login, &own(0, !(1 << CAP_AUDIT_CONTROL)), None).unwrap_err();
        assert!(err.to_string().contains("loginuid 1000"), "{err}");
        refuse_process(pid, &login, &own(0, !0), None).unwrap();
    }

    #[test]
    fn an_oom_score_adj_below_cryos_minimum_is_refused() {
        // cryo's minimum is at most its own value; below it, only CAP_SYS_RESOURCE helps,
        // which these machines lack: the kernel's own answer to cryo decides.
        let current: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let p = ProcessAttrs {
            dumpable: 1,
            loginuid: AUDIT_UNSET,
            oom_score_adj: -1000,
            ..Default::default()
        };
        let has_sys_resource = Own::read().unwrap().cap_eff >> CAP_SYS_RESOURCE & 1 != 0;
        let got = refuse_process(Pid::from_raw(4242), &p, &own(current, !0), None);
        if has_sys_resource {
            got.unwrap();
        } else {
            let err = got.unwrap_err();
            assert!(err.to_string().contains("oom_score_adj -1000"), "{err}");
        }
        // Put back as it was, whatever the probe did.
        let after: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(after, current);
    }
}
