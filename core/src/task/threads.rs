//! Threads: registers (general, fs/gs base, XSAVE), the syscall-restart fixup, and the
//! per-thread state a dump keeps (mask, altstack, robust list, rseq; its queued signals are
//! read with the process's: task::signals).

use std::io;

use cryo_proto::image::{ProcessAttrs, Rseq, SigAltStack, SigInfo, ThreadCore, X86Regs};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::remote::{Remote, Scratch};
use crate::restore::error::RestoreError;
use crate::sys::process::get_robust_list;
use crate::sys::ptrace::{self as pt, Regs};
use crate::task::{attrs, keyrings, landlock};

const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;
const PR_GET_TID_ADDRESS: u64 = 40;

/// Registers as they must be on resume: a thread stopped inside an interrupted system call
/// re-executes it (DESIGN choice 4), exactly as the kernel would on its own way out.
pub fn restart_fixup(mut regs: Regs) -> Regs {
    if regs.orig_rax as i64 >= 0 {
        match -(regs.rax as i64) {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
                regs.rax = regs.orig_rax;
                regs.rip -= 2;
            }
            // A relative sleep that was given where to put the time left (glibc's sleep,
            // nanosleep, usleep do) has it there: it sleeps that much again; a poll without
            // timeout polls again.
            ERESTART_RESTARTBLOCK if resleep(&mut regs) => {}
            // Any other restart block (poll's time left...) lives in the kernel and is not
            // carried over: the call reports EINTR, which callers of such calls handle.
            ERESTART_RESTARTBLOCK => regs.rax = (-libc::EINTR) as u64,
            _ => {}
        }
    }
    // No syscall is in progress in the restored thread.
    regs.orig_rax = u64::MAX;
    regs
}

/// Whether futex operation `op` is a wait whose timeout is a deadline rather than a duration:
/// FUTEX_WAIT_BITSET (glibc's sem_timedwait, pthread_cond_timedwait, pthread_mutex_timedlock)
/// and FUTEX_WAIT measured on CLOCK_REALTIME (man 2 futex; the kernel's futex_init_timeout
/// adds the current time to the timeout of any other wait).
fn futex_waits_until_a_deadline(op: i32) -> bool {
    let cmd = op & libc::FUTEX_CMD_MASK;
    cmd == libc::FUTEX_WAIT_BITSET
        || (cmd == libc::FUTEX_WAIT && op & libc::FUTEX_CLOCK_REALTIME != 0)
}

/// The waits that fail with EINTR when their thread is merely stopped and resumed (no signal
/// handler ran: man 7 signal, "interruption ... by stop signals"), with the register that
/// holds their timeout: (syscall number, where its timeout is). Only
/// waits without a timeout are restarted: a restarted timed wait would wait its whole timeout
/// again.
const STOP_EINTR_WAITS: [(u64, TimeoutArg); 8] = [
    (232, TimeoutArg::R10Int), // epoll_wait
    (281, TimeoutArg::R10Int), // epoll_pwait
    (441, TimeoutArg::R10Ptr), // epoll_pwait2
    (65, TimeoutArg::None),    // semop
    (220, TimeoutArg::R10Ptr), // semtimedop
    (128, TimeoutArg::RdxPtr), // rt_sigtimedwait
    (208, TimeoutArg::R8Ptr),  // io_getevents
    (333, TimeoutArg::R8Ptr),  // io_pgetevents
];

/// Where a wait of [`STOP_EINTR_WAITS`] takes its timeout.
#[derive(Clone, Copy)]
enum TimeoutArg {
    /// None: it waits until done.
    None,
    /// An int in r10 (milliseconds, negative: forever).
    R10Int,
    /// A pointer in r10 (NULL: forever).
    R10Ptr,
    /// A pointer in rdx.
    RdxPtr,
    /// A pointer in r8.
    R8Ptr,
}

/// A `struct rseq_cs` (uapi linux/rseq.h): a restartable sequence's critical section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RseqCs {
    pub version: u32,
    pub flags: u32,
    pub start_ip: u64,
    pub post_commit_offset: u64,
    pub abort_ip: u64,
}

impl RseqCs {
    /// Parses the 32 bytes of a `struct rseq_cs`.
    pub fn from_bytes(b: &[u8; 32]) -> Self {
        let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        Self {
            version: u32_at(0),
            flags: u32_at(4),
            start_ip: u64_at(8),
            post_commit_offset: u64_at(16),
            abort_ip: u64_at(24),
        }
    }

    /// Where a thread at `ip` goes when the kernel aborts this critical section for it
    /// (kernel/rseq.c, rseq_ip_fixup): the abort handler when `ip` is inside the section and
    /// the section is one the kernel accepts (version 0, inside the user address space, the
    /// handler outside the section and preceded by the thread's `signature`, which
    /// `signature_at_abort` reads); None when the kernel would leave `ip` alone.
    pub fn abort_target(
        &self,
        ip: u64,
        signature: u32,
        signature_at_abort: impl FnOnce() -> Option<u32>,
    ) -> Option<u64> {
        /// The x86-64 user address space ends below this (TASK_SIZE_MAX).
        const TASK_SIZE: u64 = (1 << 47) - 4096;
        let inside = |a: u64| a.wrapping_sub(self.start_ip) < self.post_commit_offset;
        let valid = self.version == 0
            && self.start_ip < TASK_SIZE
            && self.post_commit_offset < TASK_SIZE
            && self
                .start_ip
                .checked_add(self.post_commit_offset)
                .is_some_and(|e| e < TASK_SIZE)
            && self.abort_ip < TASK_SIZE
            && self.abort_ip >= 4
            && !inside(self.abort_ip);
        (valid && inside(ip) && signature_at_abort() == Some(signature)).then_some(self.abort_ip)
    }
}

/// Aborts the restartable sequence thread `tid` (just stopped) is in, as the kernel does to
/// a thread stopped there when it resumes: its instruction pointer moved to the section's
/// abort handler and the `rseq_cs` of its struct rseq cleared. Done at the freeze, before any
/// remote call: returning to user mode into cryo's code, outside the section, the kernel
/// would clear `rseq_cs` without the abort, and the thread, put back inside the section,
/// would finish it unguarded (zdtm rseq01). Whoever resumes it (cryo, the kernel if cryo
/// dies, a restore) starts it at the handler. Returns whether it was inside one.
pub fn abort_rseq_critical_section(tid: Pid) -> io::Result<bool> {
    let conf = pt::get_rseq(tid)?;
    if conf.abi_pointer == 0 {
        return Ok(false);
    }
    // struct rseq: cpu_id_start, cpu_id (u32 each), then the rseq_cs pointer (u64).
    let cs_field = conf.abi_pointer + 8;
    let mut ptr = [0u8; 8];
    if pt::read_mem(tid, cs_field, &mut ptr).is_err() {
        return Ok(false);
    }
    let cs_addr = u64::from_ne_bytes(ptr);
    if cs_addr == 0 {
        return Ok(false);
    }
    let mut raw = [0u8; 32];
    if pt::read_mem(tid, cs_addr, &mut raw).is_err() {
        return Ok(false);
    }
    let cs = RseqCs::from_bytes(&raw);
    let mut regs = pt::get_regs(tid)?;
    let signature_at_abort = || {
        let mut sig = [0u8; 4];
        pt::read_mem(tid, cs.abort_ip - 4, &mut sig).ok()?;
        Some(u32::from_ne_bytes(sig))
    };
    let Some(abort_ip) = cs.abort_target(regs.rip, conf.signature, signature_at_abort) else {
        return Ok(false);
    };
    pt::write_mem(tid, cs_field, &0u64.to_ne_bytes())?;
    regs.rip = abort_ip;
    pt::set_regs(tid, &regs)?;
    Ok(true)
}

/// The registers that restart a wait cryo's freeze just failed with EINTR (`regs` as the
/// thread stopped), when it waits forever: the thread goes back into it on resume, as it
/// would had nothing stopped it. None for anything else.
pub fn restart_stopped_wait(regs: &Regs) -> Option<Regs> {
    if regs.rax as i64 != -(libc::EINTR as i64) {
        return None;
    }
    let (_, timeout) = STOP_EINTR_WAITS.iter().find(|w| w.0 == regs.orig_rax)?;
    let forever = match timeout {
        TimeoutArg::None => true,
        TimeoutArg::R10Int => (regs.r10 as i32) < 0,
        TimeoutArg::R10Ptr => regs.r10 == 0,
        TimeoutArg::RdxPtr => regs.rdx == 0,
        TimeoutArg::R8Ptr => regs.r8 == 0,
    };
    forever.then(|| Regs {
        rax: regs.orig_rax,
        rip: regs.rip - 2,
        ..*regs
    })
}

/// A restart block the registers can stand for: nanosleep and clock_nanosleep, relative,
/// interrupted with a `rem` pointer (the kernel wrote the time left there as it stopped, so the
/// restored thread calls it again with `rem` as its request: the only register that changes
/// is the request's), a poll without timeout and a futex wait whose timeout is a deadline
/// (both called again as they were: the kernel's own restart of such a wait calls it again
/// with the same word, value and deadline). True when `regs` were so set.
fn resleep(regs: &mut Regs) -> bool {
    match regs.orig_rax as i64 {
        libc::SYS_poll if (regs.rdx as i32) < 0 => {}
        libc::SYS_futex if futex_waits_until_a_deadline(regs.rsi as i32) => {}
        libc::SYS_nanosleep if regs.rsi != 0 => {
            regs.rdi = regs.rsi;
        }
        libc::SYS_clock_nanosleep
            if regs.r10 != 0 && regs.rsi & libc::TIMER_ABSTIME as u64 == 0 =>
        {
            regs.rdx = regs.r10;
        }
        _ => return false,
    }
    regs.rax = regs.orig_rax;
    regs.rip -= 2;
    true
}

/// Copies every general register from `$src` into a new `$ty` (the kernel's struct and the
/// image's message have the same fields).
macro_rules! copy_regs {
    ($src:expr, $ty:path) => {{
        let r = $src;
        $ty {
            r15: r.r15,
            r14: r.r14,
            r13: r.r13,
            r12: r.r12,
            rbp: r.rbp,
            rbx: r.rbx,
            r11: r.r11,
            r10: r.r10,
            r9: r.r9,
            r8: r.r8,
            rax: r.rax,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            orig_rax: r.orig_rax,
            rip: r.rip,
            cs: r.cs,
            eflags: r.eflags,
            rsp: r.rsp,
            ss: r.ss,
            fs_base: r.fs_base,
            gs_base: r.gs_base,
            ds: r.ds,
            es: r.es,
            fs: r.fs,
            gs: r.gs,
        }
    }};
}

/// Registers to the image.
pub fn regs_to_image(r: &Regs) -> X86Regs {
    copy_regs!(r, X86Regs)
}

/// Registers from the image.
pub fn regs_from_image(r: &X86Regs) -> Regs {
    copy_regs!(r, Regs)
}

fn siginfos(raw: Vec<[u8; 128]>) -> Vec<SigInfo> {
    raw.into_iter()
        .map(|r| SigInfo {
            signo: i32::from_ne_bytes([r[0], r[1], r[2], r[3]]),
            code: i32::from_ne_bytes([r[8], r[9], r[10], r[11]]),
            raw: r.to_vec(),
        })
        .collect()
}

/// The process-wide queue of pending signals.
pub fn shared_pending(tid: Pid) -> Result<Vec<SigInfo>> {
    let raw = pt::peek_siginfo(tid, true)
        .map_err(|e| Error::sys(tid, "read shared pending signals", e))?;
    Ok(siginfos(raw))
}

/// The queue of signals pending to thread `tid` alone (stopped under our ptrace).
pub fn thread_pending(tid: Pid) -> Result<Vec<SigInfo>> {
    let raw =
        pt::peek_siginfo(tid, false).map_err(|e| Error::sys(tid, "read pending signals", e))?;
    Ok(siginfos(raw))
}

/// Everything about one stopped thread. `remote` runs in this thread (its registers as taken
/// are the ones dumped) and `scratch` is a page of the tracee for the calls' results. For the
/// main thread, `process` gets the process attributes its calls read too. `domain` is the
/// thread's Landlock check, run with the other calls (a confined thread is refused).
pub fn dump_thread(
    tid: Pid,
    remote: &Remote,
    scratch: &Scratch,
    mut process: Option<&mut ProcessAttrs>,
    domain: &landlock::Check,
) -> Result<ThreadCore> {
    let sys = |op: &str| {
        let op = op.to_string();
        move |e: io::Error| Error::sys(tid, op, e)
    };
    let regs = restart_fixup(*remote.saved_regs());
    let xstate = pt::get_xstate(tid).map_err(sys("read XSAVE state"))?;
    // Remote calls block every signal meanwhile; the mask that matters is the one the thread had.
    let blocked = if remote.tid() == tid {
        remote.saved_mask()
    } else {
        pt::get_sigmask(tid).map_err(sys("read signal mask"))?
    };
    let (robust_list, robust_list_len) = get_robust_list(tid).map_err(sys("get_robust_list"))?;
    let rseq = pt::get_rseq(tid).map_err(sys("read rseq registration"))?;

    // sigaltstack(NULL, &old), prctl(PR_GET_TID_ADDRESS, &addr), the Landlock check and the
    // attributes' prctl getters run in the thread itself, in one stop; each writes at most a
    // stack_t (24 bytes).
    const OUT_LEN: usize = 24;
    const DOMAIN: usize = 2;
    let reads = attrs::remote_reads(process.is_some());
    let calls = ["sigaltstack", "prctl(PR_GET_TID_ADDRESS)", "kcmp"];
    let n = calls.len() + reads.len();
    let (out, results, failed) =
        scratch.batch_reading_until_failure(remote, n, OUT_LEN, |i, slot| match i {
            0 => (libc::SYS_sigaltstack, [0, slot, 0, 0, 0, 0]),
            1 => (libc::SYS_prctl, [PR_GET_TID_ADDRESS, slot, 0, 0, 0, 0]),
            DOMAIN => domain.call(),
            _ => reads[i - calls.len()].call(slot),
        });
    if let Some(e) = failed {
        if e.index == DOMAIN {
            return Err(domain.failed(e.error).into());
        }
        if !attrs::no_thread_keyring(e.index, n, &e.error) {
            let op = calls.get(e.index).copied();
            return Err(Error::sys(
                tid,
                op.unwrap_or_else(|| reads[e.index - calls.len()].name),
                e.error,
            ));
        }
    }
    let (ss, tid_addr) = (&out[..OUT_LEN], &out[OUT_LEN..OUT_LEN + 8]);
    let values: Vec<u64> = reads
        .iter()
        .enumerate()
        .take(results.len() - calls.len())
        .map(|(i, r)| {
            let at = (calls.len() + i) * OUT_LEN;
            r.value(results[calls.len() + i], &out[at..at + OUT_LEN])
        })
        .collect();
    let (attrs, user_session) = attrs::dump_thread(tid, &values, process.as_deref_mut())
        .map_err(|e| Error::sys(tid, "read scheduling attributes", e))?;
    // The user session keyring is read (Some) in the main thread only, with `process`.
    if let (Some(p), Some(user_session)) = (process, user_session) {
        keyrings::dump_process(tid, remote, scratch, p, attrs.session_keyring, user_session)?;
    }

    let comm = std::fs::read_to_string(format!("/proc/{}/task/{tid}/comm", remote.tid()))
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_default();
    let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
    Ok(ThreadCore {
        tid: tid.as_raw(),
        comm,
        regs: Some(regs_to_image(&regs)),
        xstate,
        blocked,
        // Read with the process's, after its timers (task::signals::read_queued).
        pending: Vec::new(),
        altstack: Some(SigAltStack {
            sp: word(&ss[0..8]),
            flags: i32::from_ne_bytes([ss[8], ss[9], ss[10], ss[11]]),
            size: word(&ss[16..24]),
        }),
        clear_child_tid: word(tid_addr),
        robust_list,
        robust_list_len,
        rseq: (rseq.abi_pointer != 0).then_some(Rseq {
            abi_pointer: rseq.abi_pointer,
            abi_size: rseq.abi_size,
            flags: rseq.flags,
            signature: rseq.signature,
        }),
        attrs: Some(attrs),
        // Read by task::security (dump/collect.rs).
        security: None,
        // Read with the process's (dump/collect.rs).
        cgroups: Vec::new(),
    })
}

/// Where in the trampoline's scratch page thread creation keeps its clone_args and tid.
const CLONE_ARGS_OFFSET: u64 = 1024;
const SET_TID_OFFSET: u64 = 1200;
/// Where restore_in_thread puts its arguments.
const THREAD_ARGS_OFFSET: u64 = 2048;

/// How many times a thread made through ns_last_pid is made again when something else took
/// its tid between cryo's write and the clone.
const LAST_PID_ATTEMPTS: usize = 8;

/// Creates thread `tid` in the restored process from its main thread (`main` at the
/// trampoline): clone3 with CLONE_THREAD and set_tid. The new thread comes up stopped (the
/// main thread is traced with PTRACE_O_TRACECLONE) and is returned ready for ptrace.
///
/// A process in a user namespace below cryo's and in cryo's PID namespace may not choose its
/// tids (set_tid needs CAP_CHECKPOINT_RESTORE over the PID namespace: EPERM); for it cryo,
/// which may, sets ns_last_pid just before a plain clone3.
pub fn create(main: &Remote, scratch: u64, tid: Pid) -> Result<Pid> {
    let pid = main.tid();
    match clone_thread(main, scratch, Some(tid)) {
        Ok(got) if got == tid => await_birth(pid, tid),
        Ok(got) => Err(RestoreError::ThreadTid {
            pid,
            tid,
            got: got.as_raw() as u64,
        }
        .into()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && in_cryos_pid_namespace(pid) => {
            create_after_last_pid(main, scratch, tid)
        }
        Err(e) => Err(Error::sys(pid, format!("clone3 for thread {tid}"), e)),
    }
}

/// Runs clone3 for a new thread in `main`'s process, with tid `tid` if given (set_tid),
/// and answers the tid it got (in the process's PID namespace).
fn clone_thread(main: &Remote, scratch: u64, tid: Option<Pid>) -> io::Result<Pid> {
    let flags = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM) as u64;
    let (set_tid, set_tid_size) = match tid {
        Some(_) => (scratch + SET_TID_OFFSET, 1),
        None => (0, 0),
    };
    // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size,
    // tls, set_tid, set_tid_size, cgroup. Stack 0: the thread starts on the caller's stack,
    // and only ever runs our int3 there before its registers are replaced.
    let args: [u64; 11] = [flags, 0, 0, 0, 0, 0, 0, 0, set_tid, set_tid_size, 0];
    let bytes: Vec<u8> = args.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let pid = main.tid();
    pt::write_mem(pid, scratch + CLONE_ARGS_OFFSET, &bytes)?;
    if let Some(tid) = tid {
        let tid = (tid.as_raw() as u64).to_ne_bytes();
        pt::write_mem(pid, scratch + SET_TID_OFFSET, &tid)?;
    }
    let got = main.call(
        libc::SYS_clone3,
        &[scratch + CLONE_ARGS_OFFSET, bytes.len() as u64],
    )?;
    Ok(Pid::from_raw(got as i32))
}

/// Whether `pid` is in cryo's PID namespace, whose ns_last_pid cryo writes.
fn in_cryos_pid_namespace(pid: Pid) -> bool {
    let link = |dir: &std::path::Path| std::fs::read_link(dir.join("ns/pid")).ok();
    let theirs = link(&crate::proc::dir(pid));
    theirs.is_some() && theirs == link(std::path::Path::new("/proc/self"))
}

/// [`create`] through ns_last_pid, under its lock: a thread born with another tid (a process
/// elsewhere took `tid` first) is ended and the clone made again.
fn create_after_last_pid(main: &Remote, scratch: u64, tid: Pid) -> Result<Pid> {
    let pid = main.tid();
    let what = |op: &str| format!("{op} for thread {tid}");
    let site = main.trap_site().ok_or_else(|| {
        Error::sys(
            pid,
            what("clone3"),
            io::Error::other("the thread is not at the restore trampoline"),
        )
    })?;
    let last = crate::sys::process::LastPid::lock()
        .map_err(|e| Error::sys(pid, what("lock ns_last_pid"), e))?;
    let mut got = tid;
    for _ in 0..LAST_PID_ATTEMPTS {
        last.set_next(tid)
            .map_err(|e| Error::sys(pid, what("write ns_last_pid"), e))?;
        got = clone_thread(main, scratch, None).map_err(|e| Error::sys(pid, what("clone3"), e))?;
        let born = await_birth(pid, got)?;
        if got == tid {
            return Ok(born);
        }
        tracing::debug!(%pid, %tid, %got, "tid taken meanwhile: the thread is made again");
        end_stray(born, site)?;
    }
    Err(RestoreError::ThreadTid {
        pid,
        tid,
        got: got.as_raw() as u64,
    }
    .into())
}

/// Ends a new thread that has run nothing of its own (stopped at birth, the trampoline at
/// `site`): it calls exit, and cryo reaps it.
fn end_stray(tid: Pid, site: u64) -> Result<()> {
    let stray = Remote::at_site(tid, site).map_err(|e| Error::sys(tid, "take the thread", e))?;
    // exit does not come back: the call reports the thread gone, which is what is wanted.
    let gone = stray.syscall(libc::SYS_exit, &[0]).is_err();
    stray.dismiss();
    if gone {
        Ok(())
    } else {
        Err(Error::sys(
            tid,
            "end a thread born with a tid taken meanwhile",
            io::Error::other("exit returned"),
        ))
    }
}

/// Waits for the birth stop of thread `tid` (the tid in its own PID namespace) of `pid`,
/// and answers its tid as cryo sees it.
fn await_birth(pid: Pid, tid: Pid) -> Result<Pid> {
    // In a new PID namespace cryo sees the thread under another tid.
    let outside = outside_tid(pid, tid)?;
    loop {
        match nix::sys::wait::waitpid(outside, Some(nix::sys::wait::WaitPidFlag::__WALL)) {
            Ok(nix::sys::wait::WaitStatus::PtraceEvent(..))
            | Ok(nix::sys::wait::WaitStatus::Stopped(..)) => return Ok(outside),
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(other) => {
                return Err(RestoreError::ThreadStatus {
                    pid,
                    tid,
                    status: format!("{other:?}"),
                }
                .into())
            }
            Err(e) => return Err(Error::sys(outside, "wait for the new thread", e)),
        }
    }
}

/// The tid, as cryo sees it, of the thread of `pid` whose tid in its own PID namespace is
/// `inside` (the last NSpid field).
fn outside_tid(pid: Pid, inside: Pid) -> Result<Pid> {
    for tid in crate::proc::tids(pid)? {
        let status = crate::proc::status(tid)?;
        let last = crate::proc::status_field(&status, "NSpid")
            .and_then(|v| v.split_whitespace().last())
            .and_then(|v| v.parse::<i32>().ok());
        if last == Some(inside.as_raw()) {
            return Ok(tid);
        }
    }
    Err(RestoreError::ThreadMissing { pid, tid: inside }.into())
}

/// Sets the state a thread can only set for itself, by calls run in it: robust futex list,
/// clear-child-tid address, sigaltstack, rseq; and, for a thread other than the main one
/// (`secondary_of`: the image pid of its process), its name and the signals queued to it.
pub fn restore_in_thread(
    remote: &Remote,
    scratch: u64,
    thread: &ThreadCore,
    secondary_of: Option<Pid>,
) -> Result<()> {
    let tid = remote.tid();
    let sys = |op: &'static str| move |e: io::Error| Error::sys(tid, op, e);
    let args = scratch + THREAD_ARGS_OFFSET;
    if thread.robust_list != 0 {
        remote
            .call(
                libc::SYS_set_robust_list,
                &[thread.robust_list, thread.robust_list_len],
            )
            .map_err(sys("set_robust_list"))?;
    }
    remote
        .call(libc::SYS_set_tid_address, &[thread.clear_child_tid])
        .map_err(sys("set_tid_address"))?;
    let ss = thread.altstack.unwrap_or_default();
    // SS_ONSTACK only says the thread was running on it; it cannot be requested.
    // SS_AUTODISARM (the stack given up while a handler runs on it) is the thread's choice.
    const SS_AUTODISARM: i32 = 1 << 31;
    let flags = if ss.flags & libc::SS_DISABLE != 0 || ss.size == 0 {
        libc::SS_DISABLE
    } else {
        ss.flags & SS_AUTODISARM
    };
    let mut raw = Vec::with_capacity(24);
    raw.extend_from_slice(&ss.sp.to_ne_bytes());
    // stack_t: int ss_flags, then 4 bytes of padding.
    raw.extend_from_slice(&u64::from(flags as u32).to_ne_bytes());
    raw.extend_from_slice(&ss.size.to_ne_bytes());
    pt::write_mem(tid, args, &raw).map_err(sys("sigaltstack"))?;
    remote
        .call(libc::SYS_sigaltstack, &[args, 0])
        .map_err(sys("sigaltstack"))?;
    if let Some(rseq) = &thread.rseq {
        remote
            .call(
                libc::SYS_rseq,
                &[
                    rseq.abi_pointer,
                    rseq.abi_size as u64,
                    0,
                    rseq.signature as u64,
                ],
            )
            .map_err(sys("register rseq"))?;
    }
    if let Some(image_pid) = secondary_of {
        let mut name = thread.comm.as_bytes().to_vec();
        name.truncate(15);
        name.push(0);
        pt::write_mem(tid, args, &name).map_err(sys("set the thread name"))?;
        remote
            .call(libc::SYS_prctl, &[libc::PR_SET_NAME as u64, args])
            .map_err(sys("set the thread name"))?;
        for info in &thread.pending {
            pt::write_mem(tid, args, &info.raw).map_err(sys("queue a pending signal"))?;
            remote
                .call(
                    libc::SYS_rt_tgsigqueueinfo,
                    // The ids as the thread itself sees them.
                    &[
                        image_pid.as_raw() as u64,
                        thread.tid as u64,
                        info.signo as u64,
                        args,
                    ],
                )
                .map_err(sys("queue a pending signal"))?;
        }
    }
    Ok(())
}

/// The registers, XSAVE state and signal mask a thread resumes with.
pub fn set_final_state(tid: Pid, thread: &ThreadCore) -> Result<()> {
    let sys = |op: &'static str| move |e: io::Error| Error::sys(tid, op, e);
    let regs = thread
        .regs
        .as_ref()
        .map(regs_from_image)
        .ok_or(RestoreError::NoRegisters { tid })?;
    pt::set_regs(tid, &regs).map_err(sys("set registers"))?;
    if !thread.xstate.is_empty() {
        pt::set_xstate(tid, &thread.xstate).map_err(sys("set XSAVE state"))?;
    }
    pt::set_sigmask(tid, thread.blocked).map_err(sys("set the signal mask"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_is_moved_to_the_abort_handler_only_inside_a_section_the_kernel_accepts() {
        let mut raw = [0u8; 32];
        raw[8..16].copy_from_slice(&0x1000u64.to_ne_bytes());
        raw[16..24].copy_from_slice(&0x40u64.to_ne_bytes());
        raw[24..32].copy_from_slice(&0x2004u64.to_ne_bytes());
        let cs = RseqCs::from_bytes(&raw);
        assert_eq!(
            (cs.start_ip, cs.post_commit_offset, cs.abort_ip),
            (0x1000, 0x40, 0x2004)
        );
        let sig = || Some(0x5305_3053);
        assert_eq!(cs.abort_target(0x1000, 0x5305_3053, sig), Some(0x2004));
        assert_eq!(cs.abort_target(0x103f, 0x5305_3053, sig), Some(0x2004));
        // At the commit, before the section, or with another signature: left alone.
        assert_eq!(cs.abort_target(0x1040, 0x5305_3053, sig), None);
        assert_eq!(cs.abort_target(0xfff, 0x5305_3053, sig), None);
        assert_eq!(cs.abort_target(0x1010, 0x1234_5678, sig), None);
        assert_eq!(cs.abort_target(0x1010, 0x5305_3053, || None), None);
        // A section the kernel refuses (another version, its handler inside it).
        let v1 = RseqCs { version: 1, ..cs };
        assert_eq!(v1.abort_target(0x1010, 0x5305_3053, sig), None);
        let inside = RseqCs {
            abort_ip: 0x1020,
            ..cs
        };
        assert_eq!(inside.abort_target(0x1010, 0x5305_3053, sig), None);
    }

    fn stopped_in(nr: i64, ret: i64) -> Regs {
        Regs {
            orig_rax: nr as u64,
            rax: ret as u64,
            rip: 0x1002,
            ..crate::sys::ptrace::zero_regs()
        }
    }

    #[test]
    fn a_wait_failed_by_the_freeze_is_restarted_only_without_timeout() {
        let eintr = -(libc::EINTR as i64);
        let mut forever = stopped_in(libc::SYS_epoll_wait, eintr);
        forever.r10 = -1i64 as u64;
        let again = restart_stopped_wait(&forever).unwrap();
        assert_eq!(
            (again.rax, again.rip),
            (libc::SYS_epoll_wait as u64, 0x1000)
        );
        let mut timed = forever;
        timed.r10 = 500;
        assert!(restart_stopped_wait(&timed).is_none(), "a timed wait");
        assert!(restart_stopped_wait(&stopped_in(libc::SYS_read, eintr)).is_none());
        assert!(restart_stopped_wait(&stopped_in(libc::SYS_semop, eintr)).is_some());
    }

    #[test]
    fn a_relative_sleep_with_rem_sleeps_the_time_left() {
        let block = -ERESTART_RESTARTBLOCK;
        let mut sleep = stopped_in(libc::SYS_clock_nanosleep, block);
        (sleep.rdx, sleep.r10) = (0x7000, 0x7010);
        let r = restart_fixup(sleep);
        assert_eq!(
            (r.rax, r.rip, r.rdx),
            (libc::SYS_clock_nanosleep as u64, 0x1000, 0x7010)
        );
        sleep.r10 = 0;
        let r = restart_fixup(sleep);
        assert_eq!(r.rax as i64, -(libc::EINTR as i64), "no rem: EINTR");
        let mut poll = stopped_in(libc::SYS_poll, block);
        poll.rdx = 1000;
        assert_eq!(
            restart_fixup(poll).rax as i64,
            -(libc::EINTR as i64),
            "a timed poll"
        );
        poll.rdx = -1i64 as u64;
        let r = restart_fixup(poll);
        assert_eq!(
            (r.rax, r.rip),
            (libc::SYS_poll as u64, 0x1000),
            "poll without timeout"
        );
    }

    #[test]
    fn a_futex_wait_until_a_deadline_waits_on_and_one_for_a_duration_fails() {
        let block = -ERESTART_RESTARTBLOCK;
        let mut wait = stopped_in(libc::SYS_futex, block);
        (wait.rdi, wait.rdx, wait.r10) = (0x7000, 5, 0x7010);
        let private = libc::FUTEX_PRIVATE_FLAG;
        for op in [
            libc::FUTEX_WAIT_BITSET | private,
            libc::FUTEX_WAIT_BITSET | libc::FUTEX_CLOCK_REALTIME,
            libc::FUTEX_WAIT | libc::FUTEX_CLOCK_REALTIME | private,
        ] {
            wait.rsi = op as u64;
            let r = restart_fixup(wait);
            assert_eq!(
                (r.rax, r.rip, r.rdi, r.rsi, r.rdx, r.r10),
                (libc::SYS_futex as u64, 0x1000, 0x7000, op as u64, 5, 0x7010),
                "op {op:#x}"
            );
        }
        wait.rsi = (libc::FUTEX_WAIT | private) as u64;
        let r = restart_fixup(wait);
        assert_eq!(r.rax as i64, -(libc::EINTR as i64), "a relative wait");
    }
}
