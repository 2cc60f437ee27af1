//! ptrace requests the engine uses beyond what nix wraps: register sets, signal masks,
//! queued siginfo, the rseq registration.

use std::io;

use nix::unistd::Pid;

pub use libc::user_regs_struct as Regs;

const PTRACE_GETREGSET: libc::c_uint = 0x4204;
const PTRACE_SETREGSET: libc::c_uint = 0x4205;
const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
const PTRACE_SECCOMP_GET_METADATA: libc::c_uint = 0x420d;
const PTRACE_SETOPTIONS: libc::c_uint = 0x4200;
/// PTRACE_O_SUSPEND_SECCOMP (nix has no name for it): the tracee's seccomp filters and strict
/// mode do not apply while it is traced with this option (needs CAP_SYS_ADMIN).
pub const O_SUSPEND_SECCOMP: u64 = 1 << 21;
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
const NT_X86_XSTATE: libc::c_int = 0x202;

/// Room for any XSAVE area this kernel reports (2440 bytes measured, AMX needs ~11 KiB).
const XSTATE_MAX: usize = 16384;

fn ptrace_raw(req: libc::c_uint, pid: Pid, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // SAFETY: every caller passes addr/data that are either plain integers or pointers to
    // buffers it owns and sized as the request requires; the kernel writes only within them.
    let r = unsafe {
        libc::ptrace(
            req,
            pid.as_raw(),
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The XSAVE area of a stopped thread (FPU, SSE, AVX...), as NT_X86_XSTATE gives it.
pub fn get_xstate(pid: Pid) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; XSTATE_MAX];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    ptrace_raw(
        PTRACE_GETREGSET,
        pid,
        NT_X86_XSTATE as usize,
        &mut iov as *mut _ as usize,
    )?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

/// Sets the XSAVE area of a stopped thread.
pub fn set_xstate(pid: Pid, xstate: &[u8]) -> io::Result<()> {
    let mut copy = xstate.to_vec();
    let mut iov = libc::iovec {
        iov_base: copy.as_mut_ptr().cast(),
        iov_len: copy.len(),
    };
    ptrace_raw(
        PTRACE_SETREGSET,
        pid,
        NT_X86_XSTATE as usize,
        &mut iov as *mut _ as usize,
    )?;
    Ok(())
}

/// The general registers (NT_PRSTATUS), fs/gs base included.
pub fn get_regs(pid: Pid) -> io::Result<Regs> {
    nix::sys::ptrace::getregs(pid).map_err(io::Error::from)
}

/// Sets the general registers.
pub fn set_regs(pid: Pid, regs: &Regs) -> io::Result<()> {
    nix::sys::ptrace::setregs(pid, *regs).map_err(io::Error::from)
}

/// The blocked-signal mask of a stopped thread.
pub fn get_sigmask(pid: Pid) -> io::Result<u64> {
    let mut mask = 0u64;
    ptrace_raw(PTRACE_GETSIGMASK, pid, 8, &mut mask as *mut u64 as usize)?;
    Ok(mask)
}

/// Sets the blocked-signal mask of a stopped thread.
pub fn set_sigmask(pid: Pid, mask: u64) -> io::Result<()> {
    let mut mask = mask;
    ptrace_raw(PTRACE_SETSIGMASK, pid, 8, &mut mask as *mut u64 as usize)?;
    Ok(())
}

#[repr(C)]
struct PeekSiginfoArgs {
    off: u64,
    flags: u32,
    nr: i32,
}

/// The queued signals of a stopped thread (`shared`: the process-wide queue), each as the raw
/// 128-byte siginfo, without dequeuing them.
pub fn peek_siginfo(pid: Pid, shared: bool) -> io::Result<Vec<[u8; 128]>> {
    let mut out = Vec::new();
    loop {
        let mut buf = [[0u8; 128]; 32];
        let mut args = PeekSiginfoArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: buf.len() as i32,
        };
        let n = ptrace_raw(
            PTRACE_PEEKSIGINFO,
            pid,
            &mut args as *mut _ as usize,
            buf.as_mut_ptr() as usize,
        )?;
        if n <= 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}

/// A thread's rseq registration, as PTRACE_GET_RSEQ_CONFIGURATION reports it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RseqConfig {
    /// Address of the registered struct rseq (0: none).
    pub abi_pointer: u64,
    /// Its registered size.
    pub abi_size: u32,
    /// The signature the thread registered with.
    pub signature: u32,
    /// Registration flags.
    pub flags: u32,
    pad: u32,
}

/// The rseq registration of a stopped thread.
pub fn get_rseq(pid: Pid) -> io::Result<RseqConfig> {
    let mut conf = RseqConfig::default();
    ptrace_raw(
        PTRACE_GET_RSEQ_CONFIGURATION,
        pid,
        std::mem::size_of::<RseqConfig>(),
        &mut conf as *mut _ as usize,
    )?;
    Ok(conf)
}

/// `PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG` / `PTRACE_SET_...` (linux/ptrace.h, 6.1).
const PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG: libc::c_uint = 0x4210;
const PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG: libc::c_uint = 0x4211;

/// `struct ptrace_sud_config`: a thread's syscall user dispatch (PR_SET_SYSCALL_USER_DISPATCH).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SudConfig {
    /// PR_SYS_DISPATCH_OFF (0), or the mode it is on in.
    pub mode: u64,
    /// Address of the selector byte (ALLOW or BLOCK), in the thread's memory.
    pub selector: u64,
    /// Start of the code whose system calls are never dispatched.
    pub offset: u64,
    /// Its length.
    pub len: u64,
}

/// The syscall user dispatch configuration of a stopped thread.
pub fn get_sud(pid: Pid) -> io::Result<SudConfig> {
    let mut conf = SudConfig::default();
    ptrace_raw(
        PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG,
        pid,
        std::mem::size_of::<SudConfig>(),
        &mut conf as *mut _ as usize,
    )?;
    Ok(conf)
}

/// Sets the syscall user dispatch configuration of a stopped thread.
pub fn set_sud(pid: Pid, conf: &SudConfig) -> io::Result<()> {
    ptrace_raw(
        PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG,
        pid,
        std::mem::size_of::<SudConfig>(),
        conf as *const _ as usize,
    )
    .map(drop)
}

/// Sets the ptrace options of a stopped tracee (PTRACE_SETOPTIONS, any bits, the ones nix
/// knows no name for included).
pub fn set_options(pid: Pid, options: u64) -> io::Result<()> {
    ptrace_raw(PTRACE_SETOPTIONS, pid, 0, options as usize).map(drop)
}

/// Filter `index` (0: the oldest) of a stopped tracee's seccomp chain: its classic BPF
/// instructions, 8 bytes each. ENOENT past the last filter.
pub fn seccomp_filter(pid: Pid, index: usize) -> io::Result<Vec<u8>> {
    // A null buffer asks for the instruction count.
    let count = ptrace_raw(PTRACE_SECCOMP_GET_FILTER, pid, index, 0)? as usize;
    let mut program = vec![0u8; count * std::mem::size_of::<libc::sock_filter>()];
    let got = ptrace_raw(
        PTRACE_SECCOMP_GET_FILTER,
        pid,
        index,
        program.as_mut_ptr() as usize,
    )? as usize;
    program.truncate(got.min(count) * std::mem::size_of::<libc::sock_filter>());
    Ok(program)
}

/// struct seccomp_metadata.
#[repr(C)]
#[derive(Default)]
struct SeccompMetadata {
    filter_off: u64,
    flags: u64,
}

/// The flags of filter `index` of a stopped tracee's seccomp chain (SECCOMP_FILTER_FLAG_LOG).
pub fn seccomp_filter_flags(pid: Pid, index: usize) -> io::Result<u64> {
    let mut meta = SeccompMetadata {
        filter_off: index as u64,
        flags: 0,
    };
    ptrace_raw(
        PTRACE_SECCOMP_GET_METADATA,
        pid,
        std::mem::size_of::<SeccompMetadata>(),
        &mut meta as *mut _ as usize,
    )?;
    Ok(meta.flags)
}

/// Reads `buf.len()` bytes at `addr` of a stopped tracee, through /proc/PID/mem
/// (which also reads pages the tracee cannot read itself).
pub fn read_mem(pid: Pid, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem"))?;
    mem.read_exact_at(buf, addr)
}

/// Writes `data` at `addr` of a stopped tracee through /proc/PID/mem (also into read-only
/// and execute-only pages).
pub fn write_mem(pid: Pid, addr: u64, data: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))?;
    mem.write_all_at(data, addr)
}

/// A register set with every register zero (to build one field by field).
#[cfg(test)]
pub fn zero_regs() -> Regs {
    // SAFETY: user_regs_struct is plain integers, for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}
