//! `page-state`: memory whose state beyond its bytes the process reads in its own smaps and
//! maps, each checked by the process itself.
//!
//! ```text
//! page-state thp        a 4 MiB private anonymous area (MADV_HUGEPAGE), its aligned 2 MiB
//!                       written: one transparent huge page
//!     smaps -> AnonHugePages=KB (of the area's VMA)
//!     data  -> intact | bad
//! page-state lazy       two private anonymous areas of 8 pages each, a page apart, written:
//!                       a has pages 4-7 freed (MADV_FREE), b all 8 freed and written again
//!     smaps -> a=LAZY/CLEAN b=LAZY/CLEAN (LazyFree and Private_Clean, kB, of each)
//!     data  -> intact | bad NAME (no memory pressure: every page as written)
//! page-state lazy-mixed as lazy, a's pages 4-5 written again after they were freed
//! page-state apart      two private anonymous areas of 4 pages side by side, the second
//!                       moved there by mremap (its page offset does not follow the first's)
//!     maps  -> the /proc/self/maps lines of the 8 pages ("START-END PERMS", ;-separated)
//!     data  -> intact | bad
//! page-state sealed     memfd w (F_SEAL_WRITE) and memfd f (F_SEAL_FUTURE_WRITE), each
//!                       written, then mapped MAP_SHARED PROT_READ through its own fd
//!     flags   -> w=VMFLAGS;f=VMFLAGS
//!     protect -> w=ok|ERRNO f=... (mprotect PROT_READ|PROT_WRITE: EACCES, as no write
//!                may reach them)
//!     data    -> intact | bad NAME
//! page-state shmem-private  shared anonymous memory s (2 pages, pattern), mapped again
//!                       MAP_PRIVATE through /proc/self/map_files as p; p's page 0 written
//!     name -> the /proc/self/maps name of p
//!     poke -> the byte at s+PAGE+1 bumped, then p's (the page not copied: the same byte)
//!     data -> intact | bad
//! page-state private-files  a file of the test's directory mapped MAP_PRIVATE twice, as rw
//!                       through an O_RDWR fd and as ro through an O_RDONLY one, and a memfd
//!                       (opened read-write) as m; each page 0 written (a private copy)
//! page-state shmem-fd   shared anonymous memory s (2 pages, pattern) and an fd opened on
//!                       it through /proc/self/map_files, at offset 3
//!     link -> the fd's /proc/self/fd link, its offset
//!     poke -> a byte written through the fd at PAGE+1, then s's byte there ("W S")
//!     data -> intact | bad
//!     modes -> rw=MODE ro=MODE m=MODE (the mode of each one's /proc/self/map_files link:
//!              its file's FMODE_READ/FMODE_WRITE as owner r and w)
//!     data  -> intact | bad
//! ```

use std::io;
use std::path::Path;

use super::{advised::vm_flags, failed, sys, unknown, Mode, PAGE};
use crate::protocol;

const HUGE: usize = 2 << 20;

/// `page-state thp|lazy|apart|sealed|shmem-private`
pub fn start(args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    let what = args.first().map(String::as_str).unwrap_or("");
    let state = match what {
        "thp" => PageState::thp(),
        "lazy" => PageState::lazy(false),
        "lazy-mixed" => PageState::lazy(true),
        "apart" => PageState::apart(),
        "sealed" => PageState::sealed(),
        "shmem-private" => PageState::shmem_private(),
        "private-files" => PageState::private_files(dir),
        "shmem-fd" => PageState::shmem_fd(),
        other => return Err(format!("bad argument {other:?}")),
    };
    Ok(Box::new(state.map_err(failed("page-state"))?))
}

/// Each area: (name, address, length, pattern seed); the mode's own.
struct PageState {
    /// An fd the mode holds (shmem-fd), else -1.
    fd: i32,
    what: &'static str,
    areas: Vec<(&'static str, usize, usize, u64)>,
}

fn madvise(at: usize, len: usize, advice: i32) -> io::Result<()> {
    // SAFETY: at..at+len is an area this mode mapped; only its advice changes.
    sys::cvt(unsafe { libc::madvise(at as *mut libc::c_void, len, advice) }).map(drop)
}

/// Writes the pattern of `seed` over `len` bytes at `at` (an area of ours).
fn fill(at: usize, len: usize, seed: u64) {
    let bytes = protocol::pattern(len, seed);
    // SAFETY: at..at+len is a read-write area this mode mapped.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, len) };
}

/// Whether `len` bytes at `at` (readable, ours) hold the pattern of `seed`.
fn holds(at: usize, len: usize, seed: u64) -> bool {
    // SAFETY: at..at+len is a readable area this mode mapped.
    let now = unsafe { std::slice::from_raw_parts(at as *const u8, len) };
    now == &protocol::pattern(len, seed)[..]
}

/// An smaps field of the VMA holding `addr`, in kB.
fn smaps_field(addr: usize, field: &str) -> io::Result<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((s, e)) = range.split_once('-') {
                if let (Ok(s), Ok(e)) = (usize::from_str_radix(s, 16), usize::from_str_radix(e, 16))
                {
                    inside = s <= addr && addr < e;
                    continue;
                }
            }
        }
        if let Some(v) = line.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
            if inside {
                let kb = v.split_whitespace().next().unwrap_or("0");
                return kb.parse().map_err(io::Error::other);
            }
        }
    }
    Err(io::Error::other(format!("no {field} for {addr:#x}")))
}

/// The maps line of each VMA overlapping `at..at+len` ("START-END PERMS NAME").
fn maps_lines(at: usize, len: usize) -> io::Result<Vec<String>> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    Ok(maps
        .lines()
        .filter(|l| {
            let range = l.split(' ').next().unwrap_or("");
            let (s, e) = range.split_once('-').unwrap_or(("0", "0"));
            let s = usize::from_str_radix(s, 16).unwrap_or(0);
            let e = usize::from_str_radix(e, 16).unwrap_or(0);
            s < at + len && at < e
        })
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {}", f[0], f[1], f.get(5..).unwrap_or(&[]).join(" "))
                .trim_end()
                .to_string()
        })
        .collect())
}

impl PageState {
    fn thp() -> io::Result<Self> {
        let p = sys::map(2 * HUGE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)?.as_mut_ptr();
        madvise(p as usize, 2 * HUGE, libc::MADV_HUGEPAGE)?;
        let at = (p as usize + HUGE - 1) & !(HUGE - 1);
        fill(at, HUGE, 0x7e9);
        if smaps_field(at, "AnonHugePages")? == 0 {
            // No huge page at the fault (memory too fragmented): made one now.
            madvise(at, HUGE, 25)?; // MADV_COLLAPSE
        }
        Ok(Self {
            fd: -1,
            what: "thp",
            areas: vec![("h", at, HUGE, 0x7e9)],
        })
    }

    fn lazy(mixed: bool) -> io::Result<Self> {
        let p =
            sys::map(17 * PAGE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)?.as_mut_ptr() as usize;
        // A page apart: two VMAs.
        sys::munmap(p + 8 * PAGE, PAGE)?;
        let (a, b) = (p, p + 9 * PAGE);
        fill(a, 8 * PAGE, 0xa);
        fill(b, 8 * PAGE, 0xb);
        madvise(a + 4 * PAGE, 4 * PAGE, libc::MADV_FREE)?;
        madvise(b, 8 * PAGE, libc::MADV_FREE)?;
        fill(b, 8 * PAGE, 0xb);
        if mixed {
            // Pages 4-5 of a written again, 6-7 not: which are which, no reader outside tells.
            fill(a + 4 * PAGE, 2 * PAGE, 0xc);
        }
        // The kernel marks the pages lazily freed when it drains its per-CPU LRU batches,
        // which mlock does on every CPU.
        let byte = [0u8; 1];
        // SAFETY: locks and unlocks the page of a local of ours.
        unsafe {
            sys::cvt(libc::mlock(byte.as_ptr().cast(), 1))?;
            sys::cvt(libc::munlock(byte.as_ptr().cast(), 1))?;
        }
        Ok(Self {
            fd: -1,
            what: "lazy",
            areas: vec![("a", a, 8 * PAGE, 0xa), ("b", b, 8 * PAGE, 0xb)],
        })
    }

    fn apart() -> io::Result<Self> {
        let len = 4 * PAGE;
        let p =
            sys::map(2 * len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)?.as_mut_ptr() as usize;
        sys::munmap(p + len, len)?;
        let q = sys::map(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)?.as_mut_ptr() as usize;
        fill(p, len, 0x1);
        fill(q, len, 0x2);
        // SAFETY: moves our area q onto the hole just made after p.
        let moved = unsafe {
            libc::mremap(
                q as *mut libc::c_void,
                len,
                len,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                (p + len) as *mut libc::c_void,
            )
        };
        if moved as usize != p + len {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            fd: -1,
            what: "apart",
            areas: vec![("x", p, len, 0x1), ("y", p + len, len, 0x2)],
        })
    }

    fn sealed() -> io::Result<Self> {
        let mut areas = Vec::new();
        for (name, seal, seed) in [("w", libc::F_SEAL_WRITE, 0x5e1), ("f", 0x10, 0x5e2)] {
            // SAFETY: a fresh memfd of ours.
            let fd = sys::cvt(unsafe {
                libc::memfd_create(c"sealed".as_ptr(), libc::MFD_ALLOW_SEALING)
            })?;
            sys::write_all(fd, &protocol::pattern(2 * PAGE, seed))?;
            // SAFETY: seals our own memfd.
            sys::cvt(unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seal) })?;
            // SAFETY: a fresh read-only shared mapping of our memfd.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    2 * PAGE,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            areas.push((name, p as usize, 2 * PAGE, seed));
        }
        Ok(Self {
            fd: -1,
            what: "sealed",
            areas,
        })
    }

    fn shmem_private() -> io::Result<Self> {
        let len = 2 * PAGE;
        let s = sys::map(len, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1)?.as_mut_ptr() as usize;
        fill(s, len, 0x5a);
        let link = format!("/proc/self/map_files/{:x}-{:x}", s, s + len);
        let fd = sys::open(Path::new(&link), libc::O_RDWR)?;
        let p = sys::map(len, libc::MAP_PRIVATE, fd)?.as_mut_ptr() as usize;
        sys::close(fd);
        // Page 0 of p: a private copy.
        fill(p, PAGE, 0x5b);
        Ok(Self {
            fd: -1,
            what: "shmem-private",
            areas: vec![("s", s, len, 0x5a), ("p", p, len, 0x5b)],
        })
    }

    fn shmem_fd() -> io::Result<Self> {
        let len = 2 * PAGE;
        let s = sys::map(len, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1)?.as_mut_ptr() as usize;
        fill(s, len, 0x5c);
        let link = format!("/proc/self/map_files/{:x}-{:x}", s, s + len);
        let fd = sys::open(Path::new(&link), libc::O_RDWR)?;
        // SAFETY: lseek on our own fd.
        sys::cvt(unsafe { libc::lseek(fd, 3, libc::SEEK_SET) } as i32)?;
        Ok(Self {
            fd,
            what: "shmem-fd",
            areas: vec![("s", s, len, 0x5c)],
        })
    }

    fn private_files(dir: &Path) -> io::Result<Self> {
        let len = 2 * PAGE;
        let path = dir.join("private-files");
        std::fs::write(&path, protocol::pattern(len, 0x9a))?;
        let mut areas = Vec::new();
        for (name, flags) in [("rw", libc::O_RDWR), ("ro", libc::O_RDONLY)] {
            let fd = sys::open(&path, flags)?;
            let p = sys::map(len, libc::MAP_PRIVATE, fd)?.as_mut_ptr() as usize;
            sys::close(fd);
            areas.push((name, p, len, 0x9a));
        }
        // SAFETY: a fresh memfd of ours.
        let fd = sys::cvt(unsafe { libc::memfd_create(c"private".as_ptr(), 0) })?;
        sys::write_all(fd, &protocol::pattern(len, 0x9a))?;
        let p = sys::map(len, libc::MAP_PRIVATE, fd)?.as_mut_ptr() as usize;
        sys::close(fd);
        areas.push(("m", p, len, 0x9a));
        // Page 0 of each: a private copy (its first byte written as it was), page 1 still
        // the file's.
        for &(_, at, _, _) in &areas {
            // SAFETY: page 0 of a private writable mapping of ours.
            unsafe { (at as *mut u8).write_volatile((at as *const u8).read_volatile()) };
        }
        Ok(Self {
            fd: -1,
            what: "private-files",
            areas,
        })
    }

    fn data(&self) -> String {
        let bad: Vec<&str> = self
            .areas
            .iter()
            .filter(|&&(name, at, len, seed)| match (self.what, name) {
                // The private mapping: its page 0 written, page 1 still the shared page.
                ("shmem-private", "p") => {
                    !holds(at, PAGE, seed) || !holds_part(at + PAGE, self.areas[0].1 + PAGE)
                }
                _ => !holds(at, len, seed),
            })
            .map(|a| a.0)
            .collect();
        if bad.is_empty() {
            "intact".into()
        } else {
            format!("bad {}", bad.join(","))
        }
    }
}

/// Whether the page at `a` holds what the page at `b` does (both ours, readable).
fn holds_part(a: usize, b: usize) -> bool {
    // SAFETY: two readable pages of areas this mode mapped.
    unsafe {
        std::slice::from_raw_parts(a as *const u8, PAGE)
            == std::slice::from_raw_parts(b as *const u8, PAGE)
    }
}

impl Mode for PageState {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        let io = |e: io::Error| e.to_string();
        match (verb, args) {
            ("data", []) => Ok(self.data()),
            ("smaps", []) if self.what == "thp" => {
                let kb = smaps_field(self.areas[0].1, "AnonHugePages").map_err(io)?;
                Ok(format!("AnonHugePages={kb}"))
            }
            ("smaps", []) if self.what == "lazy" => {
                let mut out = Vec::new();
                for &(name, at, _, _) in &self.areas {
                    let lazy = smaps_field(at, "LazyFree").map_err(io)?;
                    let clean = smaps_field(at, "Private_Clean").map_err(io)?;
                    out.push(format!("{name}={lazy}/{clean}"));
                }
                Ok(out.join(" "))
            }
            ("maps", []) => {
                let (at, len) = (self.areas[0].1, self.areas.iter().map(|a| a.2).sum());
                Ok(maps_lines(at, len).map_err(io)?.join(";"))
            }
            ("flags", []) => {
                let smaps = std::fs::read_to_string("/proc/self/smaps").map_err(io)?;
                let mut out = Vec::new();
                for &(name, at, _, _) in &self.areas {
                    out.push(format!("{name}={}", vm_flags(&smaps, at).map_err(io)?));
                }
                Ok(out.join(";"))
            }
            ("protect", []) => {
                let mut out = Vec::new();
                for &(name, at, len, _) in &self.areas {
                    let prot = libc::PROT_READ | libc::PROT_WRITE;
                    // SAFETY: our own mapping; a refused mprotect changes nothing, an
                    // accepted one is put back at once.
                    let r = unsafe { libc::mprotect(at as *mut libc::c_void, len, prot) };
                    let got = if r == 0 {
                        // SAFETY: as above.
                        unsafe { libc::mprotect(at as *mut libc::c_void, len, libc::PROT_READ) };
                        "ok".to_string()
                    } else {
                        match io::Error::last_os_error().raw_os_error() {
                            Some(libc::EACCES) => "EACCES".into(),
                            Some(libc::EPERM) => "EPERM".into(),
                            e => format!("{e:?}"),
                        }
                    };
                    out.push(format!("{name}={got}"));
                }
                Ok(out.join(" "))
            }
            ("link", []) if self.fd >= 0 => {
                let link = std::fs::read_link(format!("/proc/self/fd/{}", self.fd)).map_err(io)?;
                // SAFETY: lseek on our own fd, not moving it.
                let pos = unsafe { libc::lseek(self.fd, 0, libc::SEEK_CUR) };
                Ok(format!("{} {pos}", link.display()))
            }
            ("poke", []) if self.fd >= 0 => {
                let s = self.areas[0].1;
                let at = s + PAGE + 1;
                // SAFETY: s's page 1 is ours, readable.
                let now = unsafe { (at as *const u8).read_volatile() };
                let byte = [now.wrapping_add(1)];
                // SAFETY: pwrite of one byte of ours to our own fd.
                let n =
                    unsafe { libc::pwrite(self.fd, byte.as_ptr().cast(), 1, (PAGE + 1) as i64) };
                if n != 1 {
                    return Err(io::Error::last_os_error().to_string());
                }
                // SAFETY: as above.
                let seen = unsafe { (at as *const u8).read_volatile() };
                Ok(format!("{} {seen}", byte[0]))
            }
            ("modes", []) => {
                use std::os::unix::fs::PermissionsExt;
                let mut out = Vec::new();
                for &(name, at, len, _) in &self.areas {
                    let link = format!("/proc/self/map_files/{:x}-{:x}", at, at + len);
                    let mode = std::fs::symlink_metadata(&link)
                        .map_err(io)?
                        .permissions()
                        .mode();
                    out.push(format!("{name}={:o}", mode & 0o777));
                }
                Ok(out.join(" "))
            }
            ("name", []) => {
                let (at, len) = (self.areas[1].1, self.areas[1].2);
                Ok(maps_lines(at, len)
                    .map_err(io)?
                    .iter()
                    .map(|l| l.splitn(3, ' ').nth(2).unwrap_or("").to_string())
                    .collect::<Vec<_>>()
                    .join(";"))
            }
            ("poke", []) => {
                let (s, p) = (self.areas[0].1, self.areas[1].1);
                // SAFETY: s's and p's page 1 are ours, readable; s is writable.
                unsafe {
                    let b = (s + PAGE + 1) as *mut u8;
                    b.write_volatile(b.read_volatile().wrapping_add(1));
                    let seen = ((p + PAGE + 1) as *const u8).read_volatile();
                    Ok(format!("{} {}", b.read_volatile(), seen))
                }
            }
            _ => unknown(verb),
        }
    }
}
