//! `hugetlb`, `hugetlb-file`: memory in 2 MiB huge pages of every kind cryo restores, and a
//! child sharing it; a file on a hugetlbfs mount mapped shared and private.
//!
//! ```text
//! hugetlb [private-memfd]
//!            `priv` (2 huge pages MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB, page 0 the pattern
//!            of seed 21, page 1 never touched), `shared` (2 huge pages MAP_SHARED|
//!            MAP_ANONYMOUS|MAP_HUGETLB, page 0 the pattern of seed 22), `memfd` (a 2-page
//!            memfd MFD_HUGETLB at fd 61, mapped shared whole, page 1 the pattern of seed 23),
//!            `sysv` (a SysV segment of 1 huge page, SHM_HUGETLB, attached and marked
//!            destroyed, the pattern of seed 24), `nr` (2 huge pages private MAP_NORESERVE:
//!            page 1 the pattern of seed 27, the only huge page it takes), `zeros` (2 huge
//!            pages MAP_SHARED|MAP_ANONYMOUS|MAP_HUGETLB, page 0 there but all zeros).
//!            With `private-memfd`, also `mpriv`: a private mapping of the whole memfd, page
//!            0 written (a private copy, the pattern of seed 28), page 1 read (the memfd's).
//!            The child (forked last, fd 61 closed, `priv` and `nr` unmapped) answers
//!            `kid ...` over pipes.
//!            check VIEW -> ok | bad at OFFSET   (its pattern where it was written; zeros)
//!            w VIEW OFF BYTE -> ok   r VIEW OFF -> <byte>   addr VIEW -> <hex>
//!            smaps VIEW -> KernelPageSize ... | VmFlags ... (of its VMA, read by the process)
//!            kid check|w|r|smaps ... -> the child's answer   fd-size -> <st_size of fd 61>
//! hugetlb-file PATH
//!            PATH (on a hugetlbfs mount) made of 2 huge pages, held at fd 62, mapped
//!            `fshared` (MAP_SHARED, page 0 the pattern of seed 25) and `fpriv` (MAP_PRIVATE,
//!            page 1 written: a private copy, the pattern of seed 26; page 0 read: the file's)
//!            check, w, r, addr, smaps as above   fd-size -> <st_size of fd 62>
//! ```

use std::io;
use std::path::Path;

use super::kids::{answer_each, ChildPipes};
use super::{failed, io_err, sys, Mode};
use crate::protocol;

/// The huge page size the mode maps (the x86_64 default).
pub const HUGE: usize = 2 << 20;
/// The fd of the hugetlb memfd.
const MEMFD: i32 = 61;

/// Each view: its name, where the pattern lies in it (offset, seed).
type Patterns = &'static [(&'static str, usize, u64)];

/// The patterns of `hugetlb`.
const PATTERNS: Patterns = &[
    ("priv", 0, 21),
    ("shared", 0, 22),
    ("memfd", HUGE, 23),
    ("sysv", 0, 24),
    ("nr", HUGE, 27),
    ("zeros", 0, 0),
];

/// The pattern `hugetlb private-memfd` adds: its own copy of `mpriv`'s first page.
const MPRIV_PATTERN: (&str, usize, u64) = ("mpriv", 0, 28);

/// `hugetlb [private-memfd]`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let private_memfd = args.first().is_some_and(|a| a == "private-memfd");
    Ok(Box::new(
        Hugetlb::start(private_memfd).map_err(failed("hugetlb"))?,
    ))
}

/// `hugetlb-file PATH`
pub fn start_file(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let path = args.first().ok_or("hugetlb-file: no path")?;
    Ok(Box::new(
        Hugetlb::start_file(path).map_err(failed("hugetlb-file"))?,
    ))
}

/// The patterns of `hugetlb-file`.
const FILE_PATTERNS: Patterns = &[("fshared", 0, 25), ("fpriv", HUGE, 26)];
/// The fd of the `hugetlb-file` file.
const FILE_FD: i32 = 62;

/// The `hugetlb` and `hugetlb-file` modes (see the module doc).
struct Hugetlb {
    views: Vec<(&'static str, *mut u8, usize)>,
    patterns: Vec<(&'static str, usize, u64)>,
    /// To the child (`hugetlb`).
    pipes: Option<ChildPipes>,
}

impl Mode for Hugetlb {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args, &self.pipes) {
            ("kid", rest, Some(pipes)) => pipes.ask(&rest.join(" ")).map_err(io_err),
            ("fd-size", [], Some(_)) => Ok(sys::fd_size(MEMFD).map_err(io_err)?.to_string()),
            ("fd-size", [], None) => Ok(sys::fd_size(FILE_FD).map_err(io_err)?.to_string()),
            _ => self.answer(verb, args),
        }
    }
}

impl Hugetlb {
    fn start(private_memfd: bool) -> io::Result<Self> {
        let huge = libc::MAP_HUGETLB | 21 << libc::MAP_HUGE_SHIFT;
        let private = sys::map(2 * HUGE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | huge, -1)?;
        let shared = sys::map(2 * HUGE, libc::MAP_SHARED | libc::MAP_ANONYMOUS | huge, -1)?;
        let fd = sys::move_fd(sys::memfd_hugetlb("cryo-huge")?, MEMFD)?;
        sys::set_len(fd, (2 * HUGE) as u64)?;
        let memfd = sys::map(2 * HUGE, libc::MAP_SHARED, fd)?;
        let mpriv = match private_memfd {
            true => Some(sys::map(2 * HUGE, libc::MAP_PRIVATE, fd)?),
            false => None,
        };
        let noreserve = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | huge;
        let nr = sys::map(2 * HUGE, noreserve, -1)?;
        let zeros = sys::map(2 * HUGE, libc::MAP_SHARED | libc::MAP_ANONYMOUS | huge, -1)?;
        // SAFETY: inside the live mapping: its first huge page is there, of zeros.
        unsafe { zeros.as_mut_ptr().write_volatile(0) };
        let sysv = sysv_segment()?;
        let mut views = Vec::new();
        for (name, v) in [
            ("priv", private),
            ("shared", shared),
            ("memfd", memfd),
            ("sysv", sysv),
            ("nr", nr),
            ("zeros", zeros),
        ] {
            views.push((name, v.as_mut_ptr(), v.len()));
        }
        let mut patterns = PATTERNS.to_vec();
        if let Some(v) = mpriv {
            views.push(("mpriv", v.as_mut_ptr(), v.len()));
            patterns.push(MPRIV_PATTERN);
        }
        for &(name, at, seed) in patterns.iter().filter(|p| p.2 != 0) {
            let v = views.iter().find(|v| v.0 == name).expect("a view");
            let want = protocol::pattern(HUGE, seed);
            // SAFETY: at..at+HUGE lies inside the view's live read-write mapping.
            unsafe { std::ptr::copy_nonoverlapping(want.as_ptr(), v.1.add(at), HUGE) };
        }
        if let Some(&(_, ptr, _)) = views.iter().find(|v| v.0 == "mpriv") {
            // Its second page read, not written: the memfd's own, mapped.
            // SAFETY: inside the live 2-page mapping.
            let _ = unsafe { ptr.add(HUGE).read_volatile() };
        }
        let (a_rd, a_wr) = sys::pipe()?;
        let (b_rd, b_wr) = sys::pipe()?;
        // The workload is single-threaded here; the child only makes syscalls.
        let kid = sys::fork()?;
        let me = Self {
            views,
            patterns,
            pipes: Some(ChildPipes {
                to_child: a_wr,
                from_child: b_rd,
            }),
        };
        if kid == 0 {
            sys::close(MEMFD);
            // The private mappings are the parent's alone: inherited, their huge pages would
            // be shared copy-on-write with the child, which a restore does not keep for
            // hugetlb memory (each process gets its own: more huge pages, the same contents).
            let private = |name: &str| matches!(name, "priv" | "nr" | "mpriv");
            for &(_, ptr, len) in me.views.iter().filter(|v| private(v.0)) {
                // SAFETY: unmapping the child's copy of a private view, which the child never
                // touches again (it answers from its own views, those left out).
                unsafe { libc::munmap(ptr.cast(), len) };
            }
            let me = Self {
                views: me.views.iter().filter(|v| !private(v.0)).copied().collect(),
                patterns: PATTERNS.to_vec(),
                pipes: None,
            };
            answer_each(a_rd, b_wr, |msg| {
                let words: Vec<&str> = msg.split_whitespace().collect();
                match words.split_first() {
                    Some((verb, args)) => me.answer(verb, args).unwrap_or_else(|e| e),
                    None => "err empty".into(),
                }
            });
            std::process::exit(3)
        }
        // Ready once the child answers: it has let `priv` go by then.
        let reply = match &me.pipes {
            Some(pipes) => pipes.ask("check shared")?,
            None => "ok".into(),
        };
        if reply != "ok" {
            return Err(io::Error::other(format!("the child: {reply}")));
        }
        Ok(me)
    }

    /// `hugetlb-file PATH`: the file made (2 huge pages) and mapped twice.
    fn start_file(path: &str) -> io::Result<Self> {
        let fd = sys::open_mode(Path::new(path), libc::O_RDWR | libc::O_CREAT, 0o600)?;
        let fd = sys::move_fd(fd, FILE_FD)?;
        sys::set_len(fd, (2 * HUGE) as u64)?;
        let shared = sys::map(2 * HUGE, libc::MAP_SHARED, fd)?;
        let private = sys::map(2 * HUGE, libc::MAP_PRIVATE, fd)?;
        let views = vec![
            ("fshared", shared.as_mut_ptr(), shared.len()),
            ("fpriv", private.as_mut_ptr(), private.len()),
        ];
        for &(name, at, seed) in FILE_PATTERNS {
            let v = views.iter().find(|v| v.0 == name).expect("a view");
            let want = protocol::pattern(HUGE, seed);
            // SAFETY: at..at+HUGE lies inside the view's live read-write mapping.
            unsafe { std::ptr::copy_nonoverlapping(want.as_ptr(), v.1.add(at), HUGE) };
        }
        // The private mapping's first page read (mapped from the file, not copied).
        // SAFETY: inside the live mapping.
        let _ = unsafe { private.as_ptr().read_volatile() };
        Ok(Self {
            views,
            patterns: FILE_PATTERNS.to_vec(),
            pipes: None,
        })
    }

    /// `check`, `w`, `r`, `addr`, `smaps` in this process.
    fn answer(&self, verb: &str, args: &[&str]) -> Result<String, String> {
        let view = |name: &str| {
            self.views
                .iter()
                .find(|v| v.0 == name)
                .copied()
                .ok_or_else(|| format!("err no view {name}"))
        };
        let off = |s: &str, len: usize| match s.parse::<usize>() {
            Ok(o) if o < len => Ok(o),
            _ => Err(format!("err bad offset {s:?}")),
        };
        match (verb, args) {
            ("addr", [name]) => Ok(format!("{:#x}", view(name)?.1 as usize)),
            ("check", [name]) => {
                let (_, ptr, _) = view(name)?;
                let (_, at, seed) = self
                    .patterns
                    .iter()
                    .find(|p| p.0 == *name)
                    .ok_or_else(|| format!("err no pattern in {name}"))?;
                // Seed 0: zeros.
                let want = match seed {
                    0 => vec![0; HUGE],
                    _ => protocol::pattern(HUGE, *seed),
                };
                // SAFETY: at..at+HUGE lies inside the view's live mapping; read volatile, as
                // another process may write it.
                let bad =
                    (0..HUGE).find(|&i| unsafe { ptr.add(at + i).read_volatile() } != want[i]);
                Ok(bad.map_or("ok".into(), |i| format!("bad at {}", at + i)))
            }
            ("w", [name, o, b]) => {
                let (_, ptr, len) = view(name)?;
                let o = off(o, len)?;
                let byte: u8 = b.parse().map_err(|_| format!("err bad byte {b:?}"))?;
                // SAFETY: o < len of the view's live read-write mapping.
                unsafe { ptr.add(o).write_volatile(byte) };
                Ok("ok".into())
            }
            ("r", [name, o]) => {
                let (_, ptr, len) = view(name)?;
                let o = off(o, len)?;
                // SAFETY: o < len of the view's live mapping.
                Ok(unsafe { ptr.add(o).read_volatile() }.to_string())
            }
            ("smaps", [name]) => {
                let start = view(name)?.1 as usize;
                let smaps = std::fs::read_to_string("/proc/self/smaps").map_err(io_err)?;
                Ok(vma_fields(&smaps, start, &["KernelPageSize", "VmFlags"]))
            }
            _ => Err(format!("err unknown command {verb:?}")),
        }
    }
}

/// A SysV segment of one huge page (SHM_HUGETLB), attached read-write and marked destroyed
/// (IPC_RMID): it goes with the last process that detaches it.
fn sysv_segment() -> io::Result<&'static mut [u8]> {
    let flags = libc::IPC_CREAT | 0o600 | libc::SHM_HUGETLB | 21 << libc::MAP_HUGE_SHIFT;
    // SAFETY: shmget takes no pointers.
    let id = sys::cvt(unsafe { libc::shmget(libc::IPC_PRIVATE, HUGE, flags) })?;
    // SAFETY: attached where the kernel chooses; nothing else refers to that memory.
    let p = unsafe { libc::shmat(id, std::ptr::null(), 0) };
    if p as isize == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: IPC_RMID reads no argument.
    sys::cvt(unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) })?;
    // SAFETY: the attachment is HUGE bytes, read-write, kept for the program's life.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), HUGE) })
}

/// The fields `names` of the VMA starting at `start` in an smaps text, joined by " | ".
fn vma_fields(smaps: &str, start: usize, names: &[&str]) -> String {
    let head = format!("{start:x}-");
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head));
    let mut out = Vec::new();
    lines.next();
    for l in lines {
        // The next VMA's header: its range has no colon before the first space.
        if l.split_whitespace()
            .next()
            .is_some_and(|w| !w.ends_with(':'))
        {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if names.contains(&k) {
                out.push(format!(
                    "{k} {}",
                    v.split_whitespace().collect::<Vec<_>>().join(" ")
                ));
            }
        }
    }
    out.join(" | ")
}
