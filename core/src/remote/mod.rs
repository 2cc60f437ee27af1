//! Remote system calls: a stopped thread made to execute one `syscall` instruction with
//! arguments of our choosing. The only module that moves a tracee's instruction pointer.

use std::io;

use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::sys::process::{vm_read, vm_write};
use crate::sys::ptrace::{self as pt, Regs};

pub mod homing;
mod scratch;

use self::homing::{HomeCode, HomeFrame};
pub use self::scratch::Scratch;

/// `syscall; int3`: the call, then a trap that hands the thread back to us.
pub const SYSCALL_INT3: [u8; 3] = [0x0f, 0x05, 0xcc];

/// The batch loop, for the restore trampoline: for each 64-byte entry of the table at `rbx`
/// (syscall number, six arguments, result), `r12` entries in all, it loads the registers,
/// runs `syscall` and stores the result; it stops after the first call that fails (a result
/// in -4095..-1) or after the last, on an `int3`. One stop of the thread then runs many calls:
/// each stop costs two context switches, more than most calls themselves.
///
/// ```text
/// loop: mov rax,[rbx]; mov rdi,[rbx+8]; mov rsi,[rbx+16]; mov rdx,[rbx+24]
///       mov r10,[rbx+32]; mov r8,[rbx+40]; mov r9,[rbx+48]; syscall; mov [rbx+56],rax
///       cmp rax,-4095; jae done; add rbx,64; dec r12; jnz loop
/// done: int3
/// ```
pub const BATCH_LOOP: [u8; 51] = [
    0x48, 0x8b, 0x03, 0x48, 0x8b, 0x7b, 0x08, 0x48, 0x8b, 0x73, 0x10, 0x48, 0x8b, 0x53, 0x18, 0x4c,
    0x8b, 0x53, 0x20, 0x4c, 0x8b, 0x43, 0x28, 0x4c, 0x8b, 0x4b, 0x30, 0x0f, 0x05, 0x48, 0x89, 0x43,
    0x38, 0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, 0x73, 0x09, 0x48, 0x83, 0xc3, 0x40, 0x49, 0xff, 0xcc,
    0x75, 0xce, 0xcc,
];

/// Where the thread stands at the exit of the [`BATCH_LOOP`]'s `syscall`.
const BATCH_LOOP_SYSCALL_END: u64 = 29;

/// Where [`BATCH_LOOP`] sits in the trampoline's code page, after `syscall; int3`.
pub const BATCH_LOOP_OFFSET: u64 = 16;

/// Bytes per entry of a batch table: number, six arguments, result.
pub(crate) const BATCH_ENTRY: usize = 64;

/// One call of a batch: a syscall number and its six arguments.
pub type BatchCall = (i64, [u64; 6]);

/// Where a thread runs batches: the [`BATCH_LOOP`] mapped in it and a writable table.
#[derive(Clone, Copy, Debug)]
pub struct BatchSite {
    /// Address of the loop's first instruction.
    pub code: u64,
    /// Address of the table, `table_len` writable bytes.
    pub table: u64,
    /// Size of the table: how many calls one stop can run is `table_len / 64`.
    pub table_len: u64,
}

/// A batch that stopped: the call at `index` failed with `error`, or the batch could not
/// run at all (then `index` is the first call not known to have run).
#[derive(Debug)]
pub struct BatchError {
    /// The call blamed.
    pub index: usize,
    /// Its error (the errno it returned, or why the batch could not run).
    pub error: io::Error,
    /// The results of the calls before `index`, which all ran.
    pub results: Vec<u64>,
}

/// How a borrowed thread runs our calls and comes back to us.
#[derive(Debug)]
enum Mode {
    /// `syscall; int3` at `site` (the restore trampoline, or the thread's own code when no
    /// self-returning code could be installed); cryo takes the thread back at the call's
    /// exit. A thread left there without a tracer dies of the int3's SIGTRAP.
    Trap {
        /// Address of the `syscall; int3` we execute.
        site: u64,
        /// The bytes our code replaced, if we wrote it over the thread's own code.
        saved_code: Option<[u8; 3]>,
    },
    /// Code that returns to the thread's own context by itself ([`homing`]): cryo takes the
    /// thread back at the exit of each call (PTRACE_SYSCALL).
    Home {
        code: HomeCode,
        frame: HomeFrame,
        /// This remote installed the code (the process's first borrowed thread) and removes it.
        owns_code: bool,
    },
}

/// A stopped thread we run system calls in.
pub struct Remote {
    tid: Pid,
    /// Registers the thread had when we took it; every call starts from them.
    saved_regs: Regs,
    saved_mask: u64,
    mode: Mode,
    /// Every signal blocked for our calls (set with the first call, after its registers: a
    /// thread let go between the two runs its own code with its own mask).
    masked: std::cell::Cell<bool>,
    /// Set by [`Remote::release`]; otherwise dropping puts things back as best it can.
    released: bool,
    /// A SIGSTOP (the one signal our mask cannot hold back) arrived during a call: it was
    /// held back and is sent again when the thread is put back.
    stop_held: std::cell::Cell<bool>,
}

impl Remote {
    /// Takes a stopped thread, the first of its process: installs the self-returning code
    /// ([`homing`]) and the thread's frame. Where the vdso has no room, falls back to a
    /// `syscall; int3` written over the code at the thread's instruction pointer (put back by
    /// [`Remote::release`]).
    pub fn borrow(tid: Pid) -> io::Result<Self> {
        match HomeCode::install(tid)? {
            Some(code) => Self::home(tid, code, true),
            None => {
                tracing::warn!(
                    %tid,
                    "no room for cryo's self-returning code in the vdso: remote calls trap \
                     (a cryo killed meanwhile kills the target)"
                );
                Self::over_own_code(tid)
            }
        }
    }

    /// Takes another stopped thread of the process `main` was borrowed in, to run calls
    /// through the same code.
    pub fn borrow_sibling(tid: Pid, main: &Remote, scratch_site: u64) -> io::Result<Self> {
        match &main.mode {
            Mode::Home { code, .. } => Self::home(tid, *code, false),
            Mode::Trap { .. } => Self::at_site(tid, scratch_site),
        }
    }

    fn home(tid: Pid, code: HomeCode, owns_code: bool) -> io::Result<Self> {
        let saved_regs = pt::get_regs(tid)?;
        let saved_mask = pt::get_sigmask(tid)?;
        let frame = match HomeFrame::write(tid, &saved_regs, saved_mask) {
            Ok(frame) => frame,
            Err(e) => {
                if owns_code {
                    let _ = code.remove(tid);
                }
                return Err(e);
            }
        };
        Ok(Self::new(
            tid,
            saved_regs,
            saved_mask,
            Mode::Home {
                code,
                frame,
                owns_code,
            },
        ))
    }

    fn new(tid: Pid, saved_regs: Regs, saved_mask: u64, mode: Mode) -> Self {
        Self {
            tid,
            saved_regs,
            saved_mask,
            mode,
            masked: std::cell::Cell::new(false),
            released: false,
            stop_held: std::cell::Cell::new(false),
        }
    }

    fn over_own_code(tid: Pid) -> io::Result<Self> {
        let saved_regs = pt::get_regs(tid)?;
        let saved_mask = pt::get_sigmask(tid)?;
        let site = saved_regs.rip;
        let mut saved = [0u8; 3];
        pt::read_mem(tid, site, &mut saved)?;
        pt::write_mem(tid, site, &SYSCALL_INT3)?;
        Ok(Self::new(
            tid,
            saved_regs,
            saved_mask,
            Mode::Trap {
                site,
                saved_code: Some(saved),
            },
        ))
    }

    /// Takes a stopped thread that already has `syscall; int3` mapped at `site` (the restore
    /// trampoline).
    pub fn at_site(tid: Pid, site: u64) -> io::Result<Self> {
        let saved_regs = pt::get_regs(tid)?;
        let saved_mask = pt::get_sigmask(tid)?;
        Ok(Self::new(
            tid,
            saved_regs,
            saved_mask,
            Mode::Trap {
                site,
                saved_code: None,
            },
        ))
    }

    /// Where our `syscall; int3` is, for a thread that traps back to us (None: it homes).
    pub fn trap_site(&self) -> Option<u64> {
        match self.mode {
            Mode::Trap { site, .. } => Some(site),
            Mode::Home { .. } => None,
        }
    }

    /// The thread.
    pub fn tid(&self) -> Pid {
        self.tid
    }

    /// Where the batch loop runs from when the calls return home by themselves.
    pub(crate) fn home_batch(&self) -> Option<u64> {
        match &self.mode {
            Mode::Home { code, .. } => Some(code.batch()),
            Mode::Trap { .. } => None,
        }
    }

    /// For trapping calls: executes them from `site` (which holds `syscall; int3`) from now
    /// on, and puts back the code the original site replaced. Nothing to do otherwise.
    pub fn move_site(&mut self, new_site: u64) -> io::Result<()> {
        if let Mode::Trap { site, saved_code } = &mut self.mode {
            if let Some(code) = saved_code.take() {
                pt::write_mem(self.tid, *site, &code)?;
            }
            *site = new_site;
        }
        Ok(())
    }

    /// The signal mask the thread had when taken.
    pub fn saved_mask(&self) -> u64 {
        self.saved_mask
    }

    /// The registers the thread had when taken.
    pub fn saved_regs(&self) -> &Regs {
        &self.saved_regs
    }

    /// Runs syscall `nr` with `args`; returns its raw result (negative errno on failure).
    pub fn syscall(&self, nr: i64, args: &[u64]) -> io::Result<i64> {
        self.run(nr, args)
    }

    /// Like [`Remote::call`], for a call that unmaps the code it runs from (the restore
    /// trampoline): the thread, taken back at the call's exit, never runs what followed it.
    pub fn call_last(&self, nr: i64, args: &[u64]) -> io::Result<u64> {
        self.call(nr, args)
    }

    fn run(&self, nr: i64, args: &[u64]) -> io::Result<i64> {
        let mut regs = self.saved_regs;
        regs.rax = nr as u64;
        let arg = |i: usize| args.get(i).copied().unwrap_or(0);
        regs.rdi = arg(0);
        regs.rsi = arg(1);
        regs.rdx = arg(2);
        regs.r10 = arg(3);
        regs.r8 = arg(4);
        regs.r9 = arg(5);
        let what = || format!("remote syscall {nr}");
        let expected = match &self.mode {
            Mode::Trap { site, .. } => {
                regs.rip = *site;
                *site + 2
            }
            Mode::Home { code, frame, .. } => {
                regs.rip = code.single();
                regs.rsp = frame.rsp();
                code.single() + 2
            }
        };
        let after = self.run_until(regs, 1, what)?;
        if after.rip != expected {
            return Err(io::Error::other(format!(
                "remote syscall {nr}: thread {} stopped at {:#x}, not after our call {:#x}",
                self.tid, after.rip, expected
            )));
        }
        Ok(after.rax as i64)
    }

    /// Runs `calls` in order, as many per stop of the thread as `site`'s table holds, and
    /// returns their results; stops at the first that fails (the later ones do not run).
    pub fn batch(&self, site: BatchSite, calls: &[BatchCall]) -> Result<Vec<u64>, BatchError> {
        let per_stop = (site.table_len as usize / BATCH_ENTRY).max(1);
        let mut results = Vec::with_capacity(calls.len());
        for chunk in calls.chunks(per_stop) {
            let first = results.len();
            if let Err((i, error)) = self.batch_stop(site, chunk, &mut results) {
                results.truncate(first + i);
                return Err(BatchError {
                    index: first + i,
                    error,
                    results,
                });
            }
        }
        Ok(results)
    }

    /// One stop of a batch: `calls` fit the table. On failure, the index within `calls`.
    fn batch_stop(
        &self,
        site: BatchSite,
        calls: &[BatchCall],
        results: &mut Vec<u64>,
    ) -> Result<(), (usize, io::Error)> {
        let mut table = Vec::with_capacity(calls.len() * BATCH_ENTRY);
        for (nr, args) in calls {
            table.extend_from_slice(&nr.to_ne_bytes());
            for a in args {
                table.extend_from_slice(&a.to_ne_bytes());
            }
            table.extend_from_slice(&u64::MAX.to_ne_bytes());
        }
        let not_run = |e: io::Error| (0, e);
        let n = vm_write(self.tid, site.table, &table).map_err(not_run)?;
        if n != table.len() {
            return Err(not_run(io::Error::other("batch table written in part")));
        }
        let mut regs = self.saved_regs;
        regs.rip = site.code;
        regs.rbx = site.table;
        regs.r12 = calls.len() as u64;
        if let Mode::Home { frame, .. } = &self.mode {
            regs.rsp = frame.rsp();
        }
        let after = self
            .run_until(regs, calls.len(), || "remote batch".to_string())
            .map_err(not_run)?;
        let ran = ((after.rbx.wrapping_sub(site.table)) as usize / BATCH_ENTRY).min(calls.len());
        // At the exit of the loop's `syscall` (its result not stored yet).
        let expected = site.code + BATCH_LOOP_SYSCALL_END;
        if after.rip != expected {
            return Err(not_run(io::Error::other(format!(
                "remote batch: thread {} stopped at {:#x}, not in our loop",
                self.tid, after.rip
            ))));
        }
        let n = vm_read(self.tid, site.table, &mut table).map_err(not_run)?;
        if n != table.len() {
            return Err(not_run(io::Error::other("batch table read in part")));
        }
        for (i, entry) in table.chunks_exact(BATCH_ENTRY).enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(&entry[BATCH_ENTRY - 8..]);
            let mut raw = i64::from_ne_bytes(word);
            // Taken back at its exit, the last call has not stored its result yet.
            if i == ran {
                raw = after.rax as i64;
            }
            match errno_result(raw) {
                Ok(v) if i <= ran => results.push(v),
                Ok(_) => {
                    return Err((i, io::Error::other("remote batch stopped before this call")))
                }
                Err(e) => return Err((i, e)),
            }
        }
        Ok(())
    }

    /// Resumes the thread with `regs` (no syscall in progress, so no restart fixup) until the
    /// exit of its `n`th system call, or of the first that fails; returns its registers then.
    /// Taken back at a syscall exit, the thread never runs the int3 or the rt_sigreturn after
    /// our call: no SIGTRAP is forced on it (which would reset its own SIGTRAP handler and
    /// take the place of one it holds pending). `what` names the call for errors.
    fn run_until(&self, mut regs: Regs, n: usize, what: impl Fn() -> String) -> io::Result<Regs> {
        regs.orig_rax = u64::MAX;
        pt::set_regs(self.tid, &regs)?;
        if !self.masked.get() {
            pt::set_sigmask(self.tid, !0)?;
            self.masked.set(true);
        }
        let resume = |tid: Pid| ptrace::syscall(tid, None).map_err(io::Error::from);
        crate::interrupt::pause_at_call(true);
        resume(self.tid)?;
        // Syscall stops alternate: entry, exit, entry...
        let mut syscall_stops = 0usize;
        loop {
            let status = match waitpid(self.tid, Some(WaitPidFlag::__WALL)) {
                Err(nix::errno::Errno::EINTR) => continue,
                status => status.map_err(io::Error::from)?,
            };
            match status {
                // Without PTRACE_O_TRACESYSGOOD a syscall stop reads as SIGTRAP; with every
                // signal blocked and no trap in our code, nothing else does.
                WaitStatus::PtraceSyscall(_) | WaitStatus::Stopped(_, Signal::SIGTRAP) => {
                    syscall_stops += 1;
                    if syscall_stops.is_multiple_of(2) {
                        let now = pt::get_regs(self.tid)?;
                        let failed = (-4095..0).contains(&(now.rax as i64));
                        if failed || syscall_stops / 2 >= n {
                            crate::interrupt::pause_at_call(false);
                            return Ok(now);
                        }
                    }
                    resume(self.tid)?;
                }
                WaitStatus::Stopped(_, Signal::SIGSTOP) => {
                    // Sent to the process just before we froze it; it must not stop inside
                    // our call. Held back, sent again when the thread is put back.
                    self.stop_held.set(true);
                    resume(self.tid)?;
                }
                WaitStatus::Stopped(_, sig) => {
                    return Err(io::Error::other(format!(
                        "{}: thread {} stopped by {sig:?} inside our call",
                        what(),
                        self.tid
                    )))
                }
                WaitStatus::PtraceEvent(..) => resume(self.tid)?,
                WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                    return Err(io::Error::other(format!(
                        "{}: thread {} died",
                        what(),
                        self.tid
                    )))
                }
                _ => continue,
            }
        }
    }

    /// Like [`Remote::syscall`], with a negative result turned into an error.
    pub fn call(&self, nr: i64, args: &[u64]) -> io::Result<u64> {
        errno_result(self.syscall(nr, args)?)
    }

    /// Puts back the code, mask and registers the thread had, so it resumes as if nothing
    /// happened.
    pub fn release(mut self) -> io::Result<()> {
        self.released = true;
        self.put_back()
    }

    /// Forgets the saved state: the caller sets the thread's final registers itself (restore).
    pub fn dismiss(mut self) {
        self.released = true;
    }

    /// In an order where a cryo killed at any step leaves the thread whole: its mask before
    /// its registers (our code returns home with its own mask too), our code and frame last.
    fn put_back(&self) -> io::Result<()> {
        if self.masked.get() {
            pt::set_sigmask(self.tid, self.saved_mask)?;
        }
        pt::set_regs(self.tid, &self.saved_regs)?;
        match &self.mode {
            Mode::Trap {
                site,
                saved_code: Some(code),
            } => pt::write_mem(self.tid, *site, code)?,
            Mode::Trap { .. } => {}
            Mode::Home {
                code,
                frame,
                owns_code,
            } => {
                frame.remove(self.tid)?;
                if *owns_code {
                    code.remove(self.tid)?;
                }
            }
        }
        // A thread of a stopped process gets it back where it was, from its release.
        if self.stop_held.get() && !crate::freeze::stop_put_back_by_release(self.tid) {
            nix::sys::signal::kill(self.tid, Signal::SIGSTOP).map_err(io::Error::from)?;
        }
        Ok(())
    }
}

fn errno_result(r: i64) -> io::Result<u64> {
    if (-4095..0).contains(&r) {
        Err(io::Error::from_raw_os_error(-r as i32))
    } else {
        Ok(r as u64)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if !self.released {
            if let Err(e) = self.put_back() {
                tracing::warn!(tid = %self.tid, "cannot put the thread back as it was: {e}");
            }
        }
    }
}

