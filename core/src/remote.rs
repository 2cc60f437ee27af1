//! Remote system calls: a stopped thread made to execute one `syscall` instruction with
//! arguments of our choosing. The only module that moves a tracee's instruction pointer.

use std::io;

use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::sys::ptrace::{self as pt, Regs};

/// `syscall; int3`: the call, then a trap that hands the thread back to us.
pub const SYSCALL_INT3: [u8; 3] = [0x0f, 0x05, 0xcc];

/// A stopped thread we run system calls in.
pub struct Remote {
    tid: Pid,
    /// Registers the thread had when we took it; every call starts from them.
    saved_regs: Regs,
    saved_mask: u64,
    /// Address of the `syscall; int3` we execute.
    site: u64,
    /// The bytes our code replaced, if we wrote it over the thread's own code.
    saved_code: Option<[u8; 3]>,
    /// Set by [`Remote::release`]; otherwise dropping puts things back as best it can.
    released: bool,
    /// A SIGSTOP (the one signal our mask cannot hold back) arrived during a call: it was
    /// held back and is sent again when the thread is put back.
    stop_held: std::cell::Cell<bool>,
}

impl Remote {
    /// Takes a stopped thread and writes a syscall site over the code at its instruction
    /// pointer (put back by [`Remote::release`]); all signals are blocked meanwhile so none is
    /// delivered into our borrowed instruction stream.
    pub fn borrow(tid: Pid) -> io::Result<Self> {
        let saved_regs = pt::get_regs(tid)?;
        let saved_mask = pt::get_sigmask(tid)?;
        let site = saved_regs.rip;
        let mut saved = [0u8; 3];
        pt::read_mem(tid, site, &mut saved)?;
        pt::write_mem(tid, site, &SYSCALL_INT3)?;
        let remote = Self {
            tid,
            saved_regs,
            saved_mask,
            site,
            saved_code: Some(saved),
            released: false,
            stop_held: std::cell::Cell::new(false),
        };
        pt::set_sigmask(tid, !0)?;
        Ok(remote)
    }

    /// Takes a stopped thread that already has `syscall; int3` mapped at `site` (the restore
    /// trampoline).
    pub fn at_site(tid: Pid, site: u64) -> io::Result<Self> {
        let saved_regs = pt::get_regs(tid)?;
        let saved_mask = pt::get_sigmask(tid)?;
        pt::set_sigmask(tid, !0)?;
        Ok(Self {
            tid,
            saved_regs,
            saved_mask,
            site,
            saved_code: None,
            released: false,
            stop_held: std::cell::Cell::new(false),
        })
    }

    /// The thread.
    pub fn tid(&self) -> Pid {
        self.tid
    }

    /// Executes calls from `site` (which holds `syscall; int3`) from now on, and puts back
    /// the code the original site replaced.
    pub fn move_site(&mut self, site: u64) -> io::Result<()> {
        if let Some(code) = self.saved_code.take() {
            pt::write_mem(self.tid, self.site, &code)?;
        }
        self.site = site;
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
        self.run(nr, args, false)
    }

    /// Like [`Remote::call`], but single-steps over the `syscall` instead of trapping on the
    /// `int3` after it: for a call that unmaps the site itself.
    pub fn call_last(&self, nr: i64, args: &[u64]) -> io::Result<u64> {
        errno_result(self.run(nr, args, true)?)
    }

    fn run(&self, nr: i64, args: &[u64], step: bool) -> io::Result<i64> {
        let mut regs = self.saved_regs;
        regs.rip = self.site;
        regs.rax = nr as u64;
        // No syscall in progress from the kernel's point of view: no restart fixup on resume.
        regs.orig_rax = u64::MAX;
        let arg = |i: usize| args.get(i).copied().unwrap_or(0);
        regs.rdi = arg(0);
        regs.rsi = arg(1);
        regs.rdx = arg(2);
        regs.r10 = arg(3);
        regs.r8 = arg(4);
        regs.r9 = arg(5);
        pt::set_regs(self.tid, &regs)?;
        if step {
            ptrace::step(self.tid, None).map_err(io::Error::from)?;
        } else {
            ptrace::cont(self.tid, None).map_err(io::Error::from)?;
        }
        loop {
            match waitpid(self.tid, Some(WaitPidFlag::__WALL)).map_err(io::Error::from)? {
                WaitStatus::Stopped(_, Signal::SIGTRAP) => break,
                WaitStatus::Stopped(_, Signal::SIGSTOP) => {
                    // Sent to the process just before we froze it; it must not stop inside
                    // our call. Held back, sent again when the thread is put back.
                    self.stop_held.set(true);
                    if step {
                        ptrace::step(self.tid, None).map_err(io::Error::from)?;
                    } else {
                        ptrace::cont(self.tid, None).map_err(io::Error::from)?;
                    }
                }
                WaitStatus::Stopped(_, sig) => {
                    return Err(io::Error::other(format!(
                        "remote syscall {nr}: thread {} stopped by {sig:?} instead of our trap",
                        self.tid
                    )))
                }
                WaitStatus::PtraceEvent(..) => {
                    ptrace::cont(self.tid, None).map_err(io::Error::from)?;
                }
                WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                    return Err(io::Error::other(format!(
                        "remote syscall {nr}: thread {} died",
                        self.tid
                    )))
                }
                _ => continue,
            }
        }
        let after = pt::get_regs(self.tid)?;
        let expected = self.site + if step { 2 } else { SYSCALL_INT3.len() as u64 };
        if after.rip != expected {
            return Err(io::Error::other(format!(
                "remote syscall {nr}: thread {} trapped at {:#x}, not after our site {:#x}",
                self.tid, after.rip, self.site
            )));
        }
        Ok(after.rax as i64)
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

    fn put_back(&self) -> io::Result<()> {
        if let Some(code) = self.saved_code {
            pt::write_mem(self.tid, self.site, &code)?;
        }
        pt::set_sigmask(self.tid, self.saved_mask)?;
        pt::set_regs(self.tid, &self.saved_regs)?;
        if self.stop_held.get() {
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

/// One page of the tracee's memory we map for arguments and results of remote calls.
pub struct Scratch {
    /// Its address in the tracee.
    pub addr: u64,
}

impl Scratch {
    /// Size of the scratch area.
    pub const LEN: u64 = 4096;

    /// Where the relocated `syscall; int3` lives: the end of the page, out of the data's way.
    const SITE_OFFSET: u64 = Self::LEN - 16;

    /// Maps a fresh private page in the tracee and moves the remote's syscall site into it,
    /// putting the thread's own code back at once: the dumped memory then never holds our
    /// instructions.
    pub fn map(remote: &mut Remote) -> io::Result<Self> {
        let addr = remote.call(
            libc::SYS_mmap,
            &[
                0,
                Self::LEN,
                (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )?;
        let scratch = Self { addr };
        let site = scratch.write(remote, Self::SITE_OFFSET, &SYSCALL_INT3)?;
        remote.move_site(site)?;
        Ok(scratch)
    }

    /// The `syscall; int3` in the page: any thread of the task can run calls from it.
    pub fn site(&self) -> u64 {
        self.addr + Self::SITE_OFFSET
    }

    /// Whether `addr` lies in the scratch page.
    pub fn contains(&self, addr: u64) -> bool {
        (self.addr..self.addr + Self::LEN).contains(&addr)
    }

    /// Writes `data` at `offset` into the scratch page.
    pub fn write(&self, remote: &Remote, offset: u64, data: &[u8]) -> io::Result<u64> {
        pt::write_mem(remote.tid, self.addr + offset, data)?;
        Ok(self.addr + offset)
    }

    /// Reads `buf.len()` bytes at `offset` of the scratch page.
    pub fn read(&self, remote: &Remote, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        pt::read_mem(remote.tid, self.addr + offset, buf)
    }

    /// Unmaps the page; the last call, as it removes the site too.
    pub fn unmap(self, remote: &Remote) -> io::Result<()> {
        remote.call_last(libc::SYS_munmap, &[self.addr, Self::LEN])?;
        Ok(())
    }
}
