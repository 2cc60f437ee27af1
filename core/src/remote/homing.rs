//! Remote calls a thread survives without cryo: the code that runs them returns to the
//! thread's own context by itself (rt_sigreturn over a frame of its saved registers, as
//! CRIU's parasite does), so a cryo killed at any instant leaves the target running as if
//! nothing happened.
//!
//! ```text
//! vdso, last 128 bytes (zero padding past the ELF image, COW-written through /proc/PID/mem):
//!   +0   syscall                  one call: rax and arguments set by cryo
//!   +2   mov eax, 15; syscall     rt_sigreturn: home
//!   +16  batch loop (remote::BATCH_LOOP), ending in the same rt_sigreturn
//! the thread's stack, below its red zone (one frame per borrowed thread):
//!   F        struct rt_sigframe: its registers (restart fixup applied), mask, no altstack
//!            change (an invalid ss_flags makes the kernel leave the altstack alone)
//!   F+448    its XSAVE area as PTRACE_GETREGSET gives it (with the signal-frame sw bytes),
//!            then FP_XSTATE_MAGIC2
//! ```
//!
//! cryo resumes the thread with PTRACE_SYSCALL and takes it back at the exit of its call,
//! before the rt_sigreturn: no int3, no single step, no code written over the thread's own.
//! If cryo dies, ptrace lets the thread go (syscall tracing is cleared on detach); it finishes
//! its call and returns home. What remains then: a private copy of the vdso page holding
//! the code (never executed by the process), the frame's bytes below the red zone, and, if
//! cryo died between mapping and unmapping it, the scratch page.

use std::io;

use nix::unistd::Pid;

use crate::sys::ptrace::{self as pt, Regs};

/// How many bytes at the end of the vdso the code takes (a multiple of 64).
const CODE_LEN: u64 = 128;
/// Where the single call starts.
const SINGLE: u64 = 0;
/// Where the batch loop starts.
const BATCH: u64 = 16;

/// `mov eax, 15; syscall`: rt_sigreturn.
const SIGRETURN: [u8; 7] = [0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];

/// The code block written into the vdso padding.
fn code() -> Vec<u8> {
    let mut code = vec![0x0f, 0x05];
    code.extend_from_slice(&SIGRETURN);
    code.resize(BATCH as usize, 0xcc);
    // The batch loop's final int3 becomes the way home; its `jae done` lands on it.
    let loop_body = &super::BATCH_LOOP[..super::BATCH_LOOP.len() - 1];
    code.extend_from_slice(loop_body);
    code.extend_from_slice(&SIGRETURN);
    code
}

/// The self-returning code of one process, in the padding of its vdso.
#[derive(Debug, Clone, Copy)]
pub struct HomeCode {
    /// First byte of the block.
    base: u64,
}

impl HomeCode {
    /// Writes the code into `pid`'s vdso padding. `Ok(None)` when there is no room (no vdso,
    /// or a vdso image without 128 zero bytes past its end): the caller falls back.
    pub fn install(pid: Pid) -> io::Result<Option<Self>> {
        let maps = crate::proc::maps(pid).map_err(|e| io::Error::other(e.to_string()))?;
        let Some(vdso) = maps.iter().find(|m| m.name == "[vdso]") else {
            return Ok(None);
        };
        let mut image = vec![0u8; (vdso.end - vdso.start) as usize];
        pt::read_mem(pid, vdso.start, &mut image)?;
        let Some(used) = elf_end(&image) else {
            return Ok(None);
        };
        let base_off = image.len() as u64 - CODE_LEN;
        let padding = &image[base_off as usize..];
        if used > base_off || padding.iter().any(|&b| b != 0) {
            return Ok(None);
        }
        let base = vdso.start + base_off;
        pt::write_mem(pid, base, &code())?;
        Ok(Some(Self { base }))
    }

    /// Puts the padding back (zeros).
    pub fn remove(&self, pid: Pid) -> io::Result<()> {
        pt::write_mem(pid, self.base, &vec![0u8; code().len()])
    }

    /// Where a single call starts.
    pub fn single(&self) -> u64 {
        self.base + SINGLE
    }

    /// Where the batch loop starts.
    pub fn batch(&self) -> u64 {
        self.base + BATCH
    }
}

/// One past the last byte the vdso's ELF image uses (headers, segments, section headers).
fn elf_end(image: &[u8]) -> Option<u64> {
    let u16_at = |o: usize| image.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as u64);
    let u64_at = |o: usize| {
        image
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    if image.get(..4)? != b"\x7fELF" {
        return None;
    }
    let (phoff, shoff) = (u64_at(0x20)?, u64_at(0x28)?);
    let (phentsize, phnum) = (u16_at(0x36)?, u16_at(0x38)?);
    let (shentsize, shnum) = (u16_at(0x3a)?, u16_at(0x3c)?);
    let mut end = (phoff + phentsize * phnum).max(shoff + shentsize * shnum);
    for i in 0..phnum {
        let ph = (phoff + i * phentsize) as usize;
        end = end.max(u64_at(ph + 8)? + u64_at(ph + 32)?);
    }
    Some(end)
}

/// struct rt_sigframe up to its siginfo (pretcode, ucontext, siginfo), 64-aligned.
const SIGFRAME_LEN: usize = 448;
const UC_FLAGS: usize = 8;
const UC_STACK_FLAGS: usize = 24 + 8;
const MCONTEXT: usize = 48;
const FPSTATE_PTR: usize = MCONTEXT + 24 * 8;
const UC_SIGMASK: usize = MCONTEXT + 256;
/// UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS.
const UC_FLAGS_VALUE: u64 = 0x7;
/// Neither 0, SS_ONSTACK nor SS_DISABLE: rt_sigreturn's sigaltstack fails and changes nothing.
const SS_FLAGS_INVALID: u32 = 3;
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
/// Fills the software-reserved bytes of an XSAVE area as the kernel's signal frames carry
/// them (struct _fpx_sw_bytes: magic, sizes, features). ptrace leaves XCR0 in their first
/// word (gdb reads it there), which gives the features.
fn sw_bytes(xstate: &mut [u8]) -> io::Result<()> {
    let Some(xcr0) = xstate.get(SW_BYTES..SW_BYTES + 8) else {
        return Err(io::Error::other("XSAVE area shorter than its legacy part"));
    };
    let xcr0 = u64::from_le_bytes(xcr0.try_into().unwrap_or([0; 8]));
    let size = xstate.len() as u32;
    let mut sw = [0u8; 48];
    sw[0..4].copy_from_slice(&FP_XSTATE_MAGIC1.to_le_bytes());
    sw[4..8].copy_from_slice(&(size + 4).to_le_bytes());
    sw[8..16].copy_from_slice(&xcr0.to_le_bytes());
    sw[16..20].copy_from_slice(&size.to_le_bytes());
    xstate[SW_BYTES..SW_BYTES + 48].copy_from_slice(&sw);
    Ok(())
}

/// Offset of the software-reserved bytes in the legacy (FXSAVE) part.
const SW_BYTES: usize = 464;
/// The x86-64 red zone, which the interrupted code may still use.
const RED_ZONE: u64 = 128;

const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;

/// The registers a thread resumes with after rt_sigreturn, which clears the syscall in
/// progress: an interrupted call is re-issued as the kernel would have on its way out
/// (the restart block of an ERESTART_RESTARTBLOCK call is still in this kernel).
fn home_regs(mut regs: Regs) -> Regs {
    if regs.orig_rax as i64 >= 0 {
        match -(regs.rax as i64) {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
                regs.rax = regs.orig_rax;
                regs.rip -= 2;
            }
            ERESTART_RESTARTBLOCK => {
                regs.rax = libc::SYS_restart_syscall as u64;
                regs.rip -= 2;
            }
            _ => {}
        }
    }
    regs
}

/// A signal frame of a thread's saved context, written on its stack.
#[derive(Debug)]
pub struct HomeFrame {
    /// Address of the frame (its pretcode word).
    addr: u64,
    /// What the frame's bytes replaced, put back when the thread is home.
    replaced: Vec<u8>,
}

impl HomeFrame {
    /// Writes the frame of `regs` and `mask` below the red zone of `tid`'s stack.
    pub fn write(tid: Pid, regs: &Regs, mask: u64) -> io::Result<Self> {
        let mut xstate = pt::get_xstate(tid)?;
        sw_bytes(&mut xstate)?;
        xstate.extend_from_slice(&FP_XSTATE_MAGIC2.to_le_bytes());
        let len = (SIGFRAME_LEN + xstate.len()) as u64;
        let addr = (regs.rsp.wrapping_sub(RED_ZONE + len)) & !63;
        let mut frame = vec![0u8; SIGFRAME_LEN];
        let put = |frame: &mut [u8], at: usize, v: u64| {
            frame[at..at + 8].copy_from_slice(&v.to_le_bytes());
        };
        put(&mut frame, UC_FLAGS, UC_FLAGS_VALUE);
        frame[UC_STACK_FLAGS..UC_STACK_FLAGS + 4].copy_from_slice(&SS_FLAGS_INVALID.to_le_bytes());
        let r = home_regs(*regs);
        let gprs = [
            r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rdi, r.rsi, r.rbp, r.rbx,
            r.rdx, r.rax, r.rcx, r.rsp, r.rip, r.eflags,
        ];
        for (i, v) in gprs.iter().enumerate() {
            put(&mut frame, MCONTEXT + i * 8, *v);
        }
        // cs, gs, fs, ss (fs and gs are not restored on x86-64).
        let segs = (r.cs & 0xffff) | ((r.ss & 0xffff) << 48);
        put(&mut frame, MCONTEXT + 18 * 8, segs);
        put(&mut frame, FPSTATE_PTR, addr + SIGFRAME_LEN as u64);
        put(&mut frame, UC_SIGMASK, mask);
        frame.extend_from_slice(&xstate);
        let mut replaced = vec![0u8; frame.len()];
        pt::read_mem(tid, addr, &mut replaced)?;
        pt::write_mem(tid, addr, &frame)?;
        Ok(Self { addr, replaced })
    }

    /// The stack pointer the thread runs our code with: rt_sigreturn finds the frame just
    /// below it (where a handler's `ret` would have popped pretcode).
    pub fn rsp(&self) -> u64 {
        self.addr + 8
    }

    /// Puts back the stack bytes the frame replaced (the thread is home already).
    pub fn remove(&self, tid: Pid) -> io::Result<()> {
        pt::write_mem(tid, self.addr, &self.replaced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_keeps_the_loop_jumps() {
        let code = code();
        assert!(code.len() as u64 <= CODE_LEN);
        // The loop's `jae done` (rel8 9 after its end) and fall-through both reach the way home.
        let loop_start = BATCH as usize;
        let jae = loop_start + 39;
        assert_eq!(code[jae], 0x73);
        let done = jae + 2 + code[jae + 1] as usize;
        assert_eq!(&code[done..done + 7], &SIGRETURN);
        assert_eq!(&code[2..9], &SIGRETURN);
    }

    #[test]
    fn restart_is_reissued() {
        let mut regs = pt::zero_regs();
        regs.orig_rax = 0;
        regs.rax = (-ERESTARTSYS) as u64;
        regs.rip = 0x1002;
        let home = home_regs(regs);
        assert_eq!((home.rax, home.rip), (0, 0x1000));
        regs.rax = (-ERESTART_RESTARTBLOCK) as u64;
        let home = home_regs(regs);
        assert_eq!(home.rax, libc::SYS_restart_syscall as u64);
    }
}
