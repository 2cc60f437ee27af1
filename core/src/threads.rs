//! Threads: registers (general, fs/gs base, XSAVE), the syscall-restart fixup, and the
//! per-thread state a dump keeps (mask, queued signals, altstack, robust list, rseq).

use std::io;

use cryo_proto::image::{Rseq, SigAltStack, SigInfo, ThreadCore, X86Regs};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::remote::{Remote, Scratch};
use crate::sys::process::get_robust_list;
use crate::sys::ptrace::{self as pt, Regs};

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
            // The restart block (remaining sleep time...) lives in the kernel and is not
            // carried over: the call reports EINTR, which callers of such calls handle.
            ERESTART_RESTARTBLOCK => regs.rax = (-libc::EINTR) as u64,
            _ => {}
        }
    }
    // No syscall is in progress in the restored thread.
    regs.orig_rax = u64::MAX;
    regs
}

/// Registers to the image.
pub fn regs_to_image(r: &Regs) -> X86Regs {
    X86Regs {
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
}

/// Registers from the image.
pub fn regs_from_image(r: &X86Regs) -> Regs {
    Regs {
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

/// Everything about one stopped thread. `remote` runs in this thread (its registers as taken
/// are the ones dumped) and `scratch` is a page of the tracee for the calls' results.
pub fn dump_thread(tid: Pid, remote: &Remote, scratch: &Scratch) -> Result<ThreadCore> {
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
    let pending = siginfos(pt::peek_siginfo(tid, false).map_err(sys("read pending signals"))?);
    let (robust_list, robust_list_len) = get_robust_list(tid).map_err(sys("get_robust_list"))?;
    let rseq = pt::get_rseq(tid).map_err(sys("read rseq registration"))?;

    // sigaltstack(NULL, &old) and prctl(PR_GET_TID_ADDRESS, &addr) run in the thread itself.
    remote
        .call(libc::SYS_sigaltstack, &[0, scratch.addr])
        .map_err(sys("sigaltstack"))?;
    let mut ss = [0u8; 24];
    scratch
        .read(remote, 0, &mut ss)
        .map_err(sys("sigaltstack"))?;
    remote
        .call(libc::SYS_prctl, &[PR_GET_TID_ADDRESS, scratch.addr + 64])
        .map_err(sys("prctl(PR_GET_TID_ADDRESS)"))?;
    let mut tid_addr = [0u8; 8];
    scratch
        .read(remote, 64, &mut tid_addr)
        .map_err(sys("prctl(PR_GET_TID_ADDRESS)"))?;

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
        pending,
        altstack: Some(SigAltStack {
            sp: word(&ss[0..8]),
            flags: i32::from_ne_bytes([ss[8], ss[9], ss[10], ss[11]]),
            size: word(&ss[16..24]),
        }),
        clear_child_tid: word(&tid_addr),
        robust_list,
        robust_list_len,
        rseq: (rseq.abi_pointer != 0).then_some(Rseq {
            abi_pointer: rseq.abi_pointer,
            abi_size: rseq.abi_size,
            flags: rseq.flags,
            signature: rseq.signature,
        }),
    })
}
