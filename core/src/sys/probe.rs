//! Probe processes: children of cryo with chosen ids, no capabilities, no fds and an address
//! space of their own (a tiny program exec'd from a memfd), that only wait to be killed.
//! A target's thread asks the kernel whether it may look at one (task/landlock.rs).
//!
//! ```text
//! cryo                                 child (raw system calls only: cryo has threads)
//! memfd <- PROGRAM (once)
//! [setns pid_for_children]
//! clone3 ----------------------------> PR_SET_DUMPABLE 0, every fd close-on-exec,
//! [setns back]                         ready pipe at fd 0 (kept across exec), setgroups([]),
//!                                      setresgid, [uid 0: SECBIT_NOROOT], setresuid, capset
//!                                      (nothing), PR_SET_PDEATHSIG SIGKILL, parent alive?
//! read: [0, its pid there]  <--------- write [0, getpid()]        ([errno, step] + _exit)
//!                                      execveat(memfd)            ([errno, -1] + _exit)
//! read: 'R', EOF            <--------- PROGRAM: write(0, "R"), close(0), pause() forever
//! ...
//! kill SIGKILL, waitpid
//! ```
//!
//! The exec is what makes a probe safe to hand to the target's uid: the probe is dumpable
//! (ptrace_may_access needs it), so any process of that uid may look inside it, and after
//! the exec there is nothing of cryo's in it (memory, fds). The program's byte says the exec
//! is over (creds committed, dumpable set), which the pipe's EOF alone would not.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sched::CloneFlags;
use nix::unistd::Pid;

use super::process::Forked;

/// Where the program is loaded.
const BASE: u32 = 0x40_0000;
/// The ELF header (64 bytes) and its one program header (56).
const HEADERS: usize = 120;

/// The probe's code, at `BASE + HEADERS`:
///
/// ```text
///       mov eax,1; xor edi,edi; mov esi,R; mov edx,1; syscall   write(0, "R", 1)
///       mov eax,3; xor edi,edi; syscall                         close(0)
/// loop: mov eax,34; syscall; jmp loop                           pause() forever
/// R:    'R'
/// ```
const CODE: [u8; 38] = {
    let r = BASE + HEADERS as u32 + 37;
    let r = r.to_le_bytes();
    [
        0xb8, 0x01, 0x00, 0x00, 0x00, 0x31, 0xff, 0xbe, r[0], r[1], r[2], r[3], 0xba, 0x01, 0x00,
        0x00, 0x00, 0x0f, 0x05, 0xb8, 0x03, 0x00, 0x00, 0x00, 0x31, 0xff, 0x0f, 0x05, 0xb8, 0x22,
        0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7, b'R',
    ]
};

/// The byte the program writes once it runs.
const READY: u8 = b'R';

/// The probe program: a static x86-64 ELF executable, one read-execute segment.
fn program() -> Vec<u8> {
    let size = (HEADERS + CODE.len()) as u64;
    let mut elf = Vec::with_capacity(size as usize);
    // e_ident: magic, 64-bit, little-endian, version 1, System V ABI.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&(BASE as u64 + HEADERS as u64).to_le_bytes()); // e_entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [64u16, 56, 1, 64, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        elf.extend_from_slice(&half.to_le_bytes());
    }
    // The program header: PT_LOAD, R+X, the whole file at BASE.
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&5u32.to_le_bytes());
    elf.extend_from_slice(&0u64.to_le_bytes());
    elf.extend_from_slice(&(BASE as u64).to_le_bytes());
    elf.extend_from_slice(&(BASE as u64).to_le_bytes());
    elf.extend_from_slice(&size.to_le_bytes());
    elf.extend_from_slice(&size.to_le_bytes());
    elf.extend_from_slice(&0x1000u64.to_le_bytes());
    elf.extend_from_slice(&CODE);
    elf
}

/// The probe program in a memfd, to exec from (close-on-exec: an ELF needs no path after).
pub fn program_fd() -> io::Result<OwnedFd> {
    /// `MFD_EXEC` (linux/memfd.h): executable even where vm.memfd_noexec makes memfds
    /// non-executable by default; older kernels do not know it.
    const MFD_EXEC: libc::c_uint = 0x10;
    let fd = match super::memfd::memfd_create("cryo-probe", libc::MFD_CLOEXEC | MFD_EXEC) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            super::memfd::memfd_create("cryo-probe", libc::MFD_CLOEXEC)?
        }
        other => other?,
    };
    let bytes = program();
    let written = nix::unistd::write(&fd, &bytes)?;
    if written != bytes.len() {
        return Err(io::Error::other("probe program written in part"));
    }
    Ok(fd)
}

/// A running probe: its pid here, and as a process of the PID namespace it was made in sees
/// it. Killed and reaped on drop.
#[derive(Debug)]
pub struct Probe {
    /// Its pid in cryo's PID namespace.
    pub pid: Pid,
    /// Its pid in its own PID namespace.
    pub inside: i32,
}

impl Probe {
    /// The parent's side of the fork.
    fn of(forked: Forked) -> Self {
        match forked {
            Forked::Parent(pid) => Self { pid, inside: 0 },
            Forked::Child => unreachable!("the child never returns"),
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// What the child failed at, in its report (the step number).
const STEPS: [&str; 10] = [
    "make every fd close-on-exec",
    "keep the ready pipe as fd 0",
    "setgroups",
    "setresgid",
    "set SECBIT_NOROOT",
    "setresuid",
    "capset",
    "set its parent-death signal",
    "check its parent",
    "join the user namespace",
];

/// Where a probe runs: in cryo's namespaces, or in these.
#[derive(Clone, Copy, Default)]
pub struct ProbeNamespaces<'a> {
    /// A PID namespace (an open /proc/PID/ns/pid).
    pub pid: Option<BorrowedFd<'a>>,
    /// A user namespace (an open /proc/PID/ns/user), joined first (uid and gid are then as
    /// it maps them), and whether it allows setgroups (else the probe keeps cryo's groups).
    pub user: Option<(BorrowedFd<'a>, bool)>,
}

/// Starts a probe running as `uid` and `gid` (real, effective, saved; no groups, no
/// capabilities), dumpable, exec'd from `program` (from [`program_fd`]), in the namespaces
/// `ns` (cryo's where None). Returns once it runs its program.
pub fn start(
    program: BorrowedFd<'_>,
    uid: u32,
    gid: u32,
    ns: ProbeNamespaces<'_>,
) -> io::Result<Probe> {
    let pidns = ns.pid;
    let user = ns.user.map(|(fd, setgroups)| (fd.as_raw_fd(), setgroups));
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // The parent as the child sees it: from a new PID namespace, outside, it reads as 0.
    let parent = if pidns.is_some() {
        0
    } else {
        nix::unistd::getpid().as_raw()
    };
    let mut probe = match pidns {
        Some(ns) => {
            // setns of a PID namespace changes where this thread's children go, nothing else;
            // it is put back at once (the namespace cryo itself is in may always be entered).
            let own = nix::fcntl::open(
                "/proc/thread-self/ns/pid",
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )?;
            nix::sched::setns(ns, CloneFlags::CLONE_NEWPID)?;
            let forked = super::process::fork();
            if let Ok(Forked::Child) = forked {
                child(program, ready_w.as_fd(), (uid, gid), user, parent);
            }
            let back = nix::sched::setns(own, CloneFlags::CLONE_NEWPID);
            let probe = forked.map(Probe::of);
            back?;
            probe?
        }
        None => {
            let forked = super::process::fork()?;
            if let Forked::Child = forked {
                child(program, ready_w.as_fd(), (uid, gid), user, parent);
            }
            Probe::of(forked)
        }
    };
    drop(ready_w);
    let mut report = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match nix::unistd::read(ready_r.as_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => report.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let word = |at: usize| {
        report
            .get(at..at + 4)
            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    match (word(0), word(4), report.get(8..)) {
        (Some(0), Some(inside), Some([READY])) => {
            probe.inside = inside;
            Ok(probe)
        }
        (Some(errno), Some(step), _) if errno != 0 => Err(failed(errno, step)),
        (Some(0), Some(_), Some(rest)) if rest.len() >= 8 => {
            let errno = i32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]);
            Err(failed(errno, -1))
        }
        _ => Err(io::Error::other(format!(
            "the probe process ended before it was ready ({} bytes of report)",
            report.len()
        ))),
    }
}

/// The error a child reported: `errno` at `step` (-1: the exec).
fn failed(errno: i32, step: i32) -> io::Error {
    let what = usize::try_from(step)
        .ok()
        .and_then(|s| STEPS.get(s))
        .copied()
        .unwrap_or("exec its program");
    let e = io::Error::from_raw_os_error(errno);
    io::Error::new(e.kind(), format!("probe process: {what}: {e}"))
}

/// The forked child: only raw system calls from here (cryo has threads); never returns.
/// `user`: a user namespace fd to join first, and whether it allows setgroups. `parent`:
/// cryo's pid as the child sees it.
fn child(
    program: BorrowedFd<'_>,
    ready: BorrowedFd<'_>,
    (uid, gid): (u32, u32),
    user: Option<(i32, bool)>,
    parent: i32,
) -> ! {
    /// `CLOSE_RANGE_CLOEXEC` (linux/close_range.h).
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    /// `SECBIT_NOROOT | SECBIT_NOROOT_LOCKED` (linux/securebits.h): uid 0 gets no
    /// capabilities at exec.
    const NOROOT: libc::c_ulong = 0x3;
    const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let ready_fd = ready.as_raw_fd();
    let report = |words: [i32; 2]| {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&words[0].to_ne_bytes());
        bytes[4..].copy_from_slice(&words[1].to_ne_bytes());
        // SAFETY: write(2) reads our own 8 bytes.
        unsafe { libc::write(ready_fd, bytes.as_ptr().cast(), bytes.len()) };
    };
    let fail = |step: i32| -> ! {
        report([io::Error::last_os_error().raw_os_error().unwrap_or(0), step]);
        super::process::exit_child(1)
    };
    // SAFETY: each call below takes integers, or pointers to locals alive for the call.
    unsafe {
        // Nothing of cryo's to be read by a process of `uid` until the exec replaced it all.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
            fail(0);
        }
        // fd 0 (not close-on-exec) is the program's way to say it runs.
        let kept = match ready_fd {
            0 => libc::fcntl(0, libc::F_SETFD, 0),
            _ => libc::dup2(ready_fd, 0),
        };
        if kept != 0 {
            fail(1);
        }
        // In the target's user namespace: its creds and its memory's namespace are the
        // thread's, whose capabilities reach no further.
        if let Some((ns, _)) = user {
            if libc::setns(ns, libc::CLONE_NEWUSER) != 0 {
                fail(9);
            }
        }
        // The raw call: glibc's setgroups broadcasts to every thread (its setxid locks, which
        // another thread of cryo may have held at the fork).
        if user.is_none_or(|(_, setgroups)| setgroups)
            && libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
        {
            fail(2);
        }
        if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0 {
            fail(3);
        }
        if uid == 0 && libc::prctl(libc::PR_SET_SECUREBITS, NOROOT, 0, 0, 0) != 0 {
            fail(4);
        }
        if libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0 {
            fail(5);
        }
        let header: [u32; 2] = [CAPABILITY_VERSION_3, 0];
        let data = [0u32; 6];
        if libc::syscall(libc::SYS_capset, header.as_ptr(), data.as_ptr()) != 0 {
            fail(6);
        }
        // After the id changes, which clear it.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            fail(7);
        }
        // A parent gone before the death signal was set: no one would kill the probe.
        if libc::getppid() != parent {
            fail(8);
        }
        report([0, libc::getpid()]);
        let argv: [*const libc::c_char; 2] = [c"cryo-probe".as_ptr(), std::ptr::null()];
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        libc::syscall(
            libc::SYS_execveat,
            program.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        report([io::Error::last_os_error().raw_os_error().unwrap_or(0), -1]);
        super::process::exit_child(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root (as cryo does): a probe of another uid and gid, with nothing of cryo's.
    #[test]
    fn a_probe_runs_with_its_ids_and_nothing_else_until_dropped() {
        let program = program_fd().unwrap();
        let probe = start(program.as_fd(), 4321, 4322, ProbeNamespaces::default()).unwrap();
        let pid = probe.pid;
        assert_eq!(probe.inside, pid.as_raw(), "in cryo's PID namespace");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        };
        assert_eq!(field("Uid:").as_deref(), Some("4321 4321 4321 4321"));
        assert_eq!(field("Gid:").as_deref(), Some("4322 4322 4322 4322"));
        assert_eq!(field("Groups:").as_deref(), Some(""));
        assert_eq!(field("CapPrm:").as_deref(), Some("0000000000000000"));
        assert_eq!(field("CapEff:").as_deref(), Some("0000000000000000"));
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count();
        assert_eq!(fds, 0, "no fd of cryo's");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert!(
            exe.to_string_lossy().contains("memfd:cryo-probe"),
            "{exe:?}"
        );
        drop(probe);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "reaped"
        );
    }

    #[test]
    fn the_program_is_one_segment_starting_at_its_code() {
        let elf = program();
        assert_eq!(elf.len(), HEADERS + CODE.len());
        assert_eq!(&elf[..4], b"\x7fELF");
        let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
        assert_eq!(entry, BASE as u64 + HEADERS as u64);
        // The byte written is the code's last one, at the address `mov esi` loads.
        let r = u32::from_le_bytes(CODE[8..12].try_into().unwrap());
        assert_eq!(elf[(r - BASE) as usize], READY);
        // The jump goes back to `mov eax,34`.
        assert_eq!(CODE[28], 0xb8);
        assert_eq!(37 + (CODE[36] as i8 as i32), 28);
    }
}
