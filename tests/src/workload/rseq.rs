//! `rseq`: a thread running a restartable sequence over and over, most of its time inside
//! the critical section (a spin of a few milliseconds): a freeze almost always finds it there.
//! The kernel aborts the section of a thread preempted, signalled or stopped inside it (to its
//! abort handler, `rseq_cs` cleared); finishing it with `rseq_cs` already cleared means it ran
//! unguarded (zdtm rseq01).
//!
//! ```text
//! rseq           the thread's glibc registration replaced by one of its own
//!   wait N -> aborts A completions C unguarded U   (once A + C + U >= N)
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{unknown, wait_for_count, Mode};

/// The signature before every abort handler (x86's RSEQ_SIG, glibc's).
const RSEQ_SIG: u32 = 0x5305_3053;
/// rseq(2) flag RSEQ_FLAG_UNREGISTER.
const UNREGISTER: libc::c_int = 1;
/// Pauses in one critical section.
const SPINS: u64 = 2_000_000;

static ABORTS: AtomicU64 = AtomicU64::new(0);
static COMPLETIONS: AtomicU64 = AtomicU64::new(0);
static UNGUARDED: AtomicU64 = AtomicU64::new(0);

/// struct rseq (uapi linux/rseq.h), as registered.
#[repr(C, align(32))]
struct Rseq {
    cpu_id_start: u32,
    cpu_id: u32,
    rseq_cs: u64,
    flags: u32,
    node_id: u32,
    mm_cid: u32,
    pad: u32,
}

/// struct rseq_cs: the critical section, filled by the section's code itself.
#[repr(C, align(32))]
struct RseqCs {
    version: u32,
    flags: u32,
    start_ip: u64,
    post_commit_offset: u64,
    abort_ip: u64,
}

extern "C" {
    /// glibc's offset of its struct rseq from the thread pointer.
    static __rseq_offset: isize;
    /// The size glibc registered (0: it registered none).
    static __rseq_size: u32;
}

/// Replaces glibc's registration of the calling thread by `rseq`.
fn register(rseq: &mut Rseq) -> std::io::Result<()> {
    // SAFETY: glibc defines both symbols; reading them is reading two integers.
    let (offset, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size != 0 {
        let tp: usize;
        // SAFETY: on x86-64 glibc's TCB starts with a pointer to itself at fs:0.
        unsafe { std::arch::asm!("mov {}, fs:0", out(reg) tp) };
        let theirs = (tp as isize + offset) as usize;
        // SAFETY: unregisters the area glibc registered for this thread, by its own values.
        let r =
            unsafe { libc::syscall(libc::SYS_rseq, theirs, size.max(32), UNREGISTER, RSEQ_SIG) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: `rseq` lives as long as the thread (leaked by the caller), 32 bytes, aligned.
    let r = unsafe { libc::syscall(libc::SYS_rseq, rseq as *mut Rseq, 32, 0, RSEQ_SIG) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One pass of the critical section: 1 completed guarded, 0 completed after its `rseq_cs`
/// was cleared (unguarded), -1 aborted.
fn critical_section(rseq: &mut Rseq, cs: &mut RseqCs) -> i64 {
    let out: i64;
    // SAFETY: writes only `cs` and `rseq.rseq_cs` through the pointers given; the section
    // (labels 2 to 4) spins and reads rseq_cs; the abort handler at 5 follows the signature.
    unsafe {
        std::arch::asm!(
            "lea rax, [rip + 2f]",
            "mov [{cs} + 8], rax",
            "lea rcx, [rip + 4f]",
            "sub rcx, rax",
            "mov [{cs} + 16], rcx",
            "lea rax, [rip + 5f]",
            "mov [{cs} + 24], rax",
            "mov [{rseq} + 8], {cs}",
            "2:",
            "mov rcx, {spins}",
            "3:",
            "pause",
            "dec rcx",
            "jnz 3b",
            "mov {out}, [{rseq} + 8]",
            "4:",
            "jmp 6f",
            ".byte 0x0f, 0xb9, 0x3d",
            ".long 0x53053053",
            "5:",
            "mov {out}, -1",
            "6:",
            cs = in(reg) cs as *mut RseqCs,
            rseq = in(reg) rseq as *mut Rseq,
            spins = in(reg) SPINS,
            out = out(reg) out,
            out("rax") _,
            out("rcx") _,
            options(nostack),
        );
    }
    match out {
        -1 => -1,
        0 => 0,
        _ => 1,
    }
}

fn stats() -> String {
    format!(
        "aborts {} completions {} unguarded {}",
        ABORTS.load(Ordering::SeqCst),
        COMPLETIONS.load(Ordering::SeqCst),
        UNGUARDED.load(Ordering::SeqCst)
    )
}

fn total() -> u64 {
    ABORTS.load(Ordering::SeqCst)
        + COMPLETIONS.load(Ordering::SeqCst)
        + UNGUARDED.load(Ordering::SeqCst)
}

struct RseqMode;

/// `rseq`
pub fn start(_args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rseq = Box::leak(Box::new(Rseq {
            cpu_id_start: 0,
            cpu_id: 0,
            rseq_cs: 0,
            flags: 0,
            node_id: 0,
            mm_cid: 0,
            pad: 0,
        }));
        let cs = Box::leak(Box::new(RseqCs {
            version: 0,
            flags: 0,
            start_ip: 0,
            post_commit_offset: 0,
            abort_ip: 0,
        }));
        let registered = register(rseq).map_err(|e| format!("rseq: {e}"));
        let failed = registered.is_err();
        let _ = tx.send(registered);
        if failed {
            return;
        }
        loop {
            let counter = match critical_section(rseq, cs) {
                -1 => &ABORTS,
                0 => &UNGUARDED,
                _ => &COMPLETIONS,
            };
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    rx.recv().map_err(|e| format!("rseq thread: {e}"))??;
    Ok(Box::new(RseqMode))
}

impl Mode for RseqMode {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("wait", [n]) => wait_for_count(n, total, stats),
            _ => unknown(verb),
        }
    }
}
