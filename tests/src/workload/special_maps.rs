//! `special-maps`: memory the kernel treats apart, which the process checks itself.
//!
//! ```text
//! special-maps droppable   two MAP_DROPPABLE areas: d (4 pages, read-write), r (2 pages,
//!                          made read-only after filling)
//!     flags -> d=VMFLAGS;r=VMFLAGS (their VmFlags lines, from /proc/self/smaps)
//!     perms -> d=PERMS r=PERMS (their /proc/self/maps permissions)
//!     data  -> d=intact|zero|bad r=... (each area's pattern as written)
//!     fork  -> d=zero|data r=... (what a child forked now sees: droppable memory is wiped)
//! special-maps guarded     guard pages (madvise MADV_GUARD_INSTALL) in a private anonymous
//!                          area of 6 pages (guards on 1, 2, 4) and in a private mapping of
//!                          DIR/guarded.dat, 4 pages (guards on 0, 2; page 3 written: a
//!                          private copy)
//!     probe -> anon=PAGES file=PAGES, a letter a page: G a guard (a write from it to a pipe
//!              fails with EFAULT), . its pattern, X anything else
//! special-maps growsdown   a private anonymous area of 2 pages mapped with MAP_GROWSDOWN,
//!                          4 MiB free below it
//!     flags -> VMFLAGS (its VmFlags line)
//!     grow  -> grew (the kernel wrote a byte from a pipe on the page below it: the area
//!              grew down to take it, its pages intact) | the error
//! ```

use std::io;
use std::path::Path;

use super::{advised::vm_flags, failed, kids, sys, unknown, Mode, PAGE};

/// `MAP_DROPPABLE` (6.11).
const MAP_DROPPABLE: i32 = 0x08;
/// `MADV_GUARD_INSTALL` (6.13).
const MADV_GUARD_INSTALL: i32 = 102;

/// `special-maps droppable|guarded`
pub fn start(args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    match args.first().map(String::as_str) {
        Some("droppable") => Ok(Box::new(
            Droppable::new().map_err(failed("special-maps droppable"))?,
        )),
        Some("guarded") => Ok(Box::new(
            Guarded::new(dir).map_err(failed("special-maps guarded"))?,
        )),
        Some("growsdown") => Ok(Box::new(
            GrowsDown::new().map_err(failed("special-maps growsdown"))?,
        )),
        other => Err(format!("bad argument {other:?}")),
    }
}

/// The droppable areas: (name, address, length, fill byte).
struct Droppable {
    areas: Vec<(&'static str, *mut u8, usize, u8)>,
}

impl Droppable {
    fn new() -> io::Result<Self> {
        let mut areas = Vec::new();
        for (name, pages, fill, read_only) in [("d", 4, 0xd1, false), ("r", 2, 0xd2, true)] {
            let len = pages * PAGE;
            let p = sys::map(len, MAP_DROPPABLE | libc::MAP_ANONYMOUS, -1)?.as_mut_ptr();
            // SAFETY: p is a fresh len-byte read-write mapping of ours.
            unsafe { std::ptr::write_bytes(p, fill, len) };
            if read_only {
                sys::protect(p, len, libc::PROT_READ)?;
            }
            areas.push((name, p, len, fill));
        }
        Ok(Self { areas })
    }

    /// What each area holds: its pattern, zeroes (dropped or wiped) or anything else.
    fn contents(&self) -> String {
        let words: Vec<String> = self
            .areas
            .iter()
            .map(|&(name, p, len, fill)| {
                // SAFETY: a readable mapping of ours, len bytes long.
                let bytes = unsafe { std::slice::from_raw_parts(p, len) };
                let what = if bytes.iter().all(|&b| b == fill) {
                    "intact"
                } else if bytes.iter().all(|&b| b == 0) {
                    "zero"
                } else {
                    "bad"
                };
                format!("{name}={what}")
            })
            .collect();
        words.join(" ")
    }

    fn flags(&self) -> io::Result<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps")?;
        let mut out = Vec::new();
        for (name, p, _, _) in &self.areas {
            out.push(format!("{name}={}", vm_flags(&smaps, *p as usize)?));
        }
        Ok(out.join(";"))
    }

    fn perms(&self) -> io::Result<String> {
        let maps = std::fs::read_to_string("/proc/self/maps")?;
        let mut out = Vec::new();
        for (name, p, _, _) in &self.areas {
            let at = format!("{:x}-", *p as usize);
            let perms = maps
                .lines()
                .find(|l| l.starts_with(&at))
                .and_then(|l| l.split(' ').nth(1))
                .ok_or_else(|| io::Error::other(format!("no VMA starts at {at}")))?;
            out.push(format!("{name}={perms}"));
        }
        Ok(out.join(" "))
    }

    /// What a child forked now sees of the areas ("zero": wiped at fork, as droppable
    /// memory always is).
    fn fork(&self) -> io::Result<String> {
        kids::answer_from_child("special-maps fork", || {
            self.contents().replace("intact", "data")
        })
    }
}

impl Mode for Droppable {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        let io = |e: io::Error| e.to_string();
        match (verb, args) {
            ("flags", []) => self.flags().map_err(io),
            ("perms", []) => self.perms().map_err(io),
            ("data", []) => Ok(self.contents()),
            ("fork", []) => self.fork().map_err(io),
            _ => unknown(verb),
        }
    }
}

const ANON_PAGES: usize = 6;
const ANON_GUARDS: [usize; 3] = [1, 2, 4];
const FILE_PAGES: usize = 4;
const FILE_GUARDS: [usize; 2] = [0, 2];
/// The page of the file mapping the process wrote (its private copy).
const FILE_WRITTEN: usize = 3;

/// The guarded areas, and a pipe to probe their pages with.
struct Guarded {
    anon: *mut u8,
    file: *mut u8,
    pipe: (i32, i32),
}

/// The byte page `i` of the anonymous area holds.
fn anon_fill(i: usize) -> u8 {
    0x10 + i as u8
}

/// The byte page `i` of the file mapping holds (the file's, or the private copy's).
fn file_fill(i: usize) -> u8 {
    if i == FILE_WRITTEN {
        0x7f
    } else {
        0x40 + i as u8
    }
}

/// Installs a guard on page `i` of the area at `p`.
fn guard(p: *mut u8, i: usize) -> io::Result<()> {
    // SAFETY: page i of a private mapping of ours: its contents are dropped, it faults from
    // now on, and nothing of ours refers to it.
    let r = unsafe { libc::madvise(p.add(i * PAGE).cast(), PAGE, MADV_GUARD_INSTALL) };
    sys::cvt(r).map(drop)
}

impl Guarded {
    fn new(dir: &Path) -> io::Result<Self> {
        let anon = sys::mmap_anon(ANON_PAGES * PAGE)?;
        for i in 0..ANON_PAGES {
            // SAFETY: page i of the fresh read-write mapping above.
            unsafe { std::ptr::write_bytes(anon.add(i * PAGE), anon_fill(i), PAGE) };
        }
        let path = dir.join("guarded.dat");
        let fd = sys::open_mode(&path, libc::O_RDWR | libc::O_CREAT, 0o600)?;
        let data: Vec<u8> = (0..FILE_PAGES)
            .flat_map(|i| vec![0x40 + i as u8; PAGE])
            .collect();
        sys::write_all(fd, &data)?;
        let file = sys::map(FILE_PAGES * PAGE, libc::MAP_PRIVATE, fd)?.as_mut_ptr();
        sys::close(fd);
        // SAFETY: page FILE_WRITTEN of the private read-write mapping above.
        unsafe {
            std::ptr::write_bytes(file.add(FILE_WRITTEN * PAGE), file_fill(FILE_WRITTEN), PAGE)
        };
        for i in ANON_GUARDS {
            guard(anon, i)?;
        }
        for i in FILE_GUARDS {
            guard(file, i)?;
        }
        Ok(Self {
            anon,
            file,
            pipe: sys::pipe()?,
        })
    }

    /// A letter per page of the area at `p`: G a guard, . its pattern, X anything else.
    fn probe(&self, p: *mut u8, pages: usize, fill: fn(usize) -> u8) -> io::Result<String> {
        let mut out = String::new();
        for i in 0..pages {
            let page = p.wrapping_add(i * PAGE);
            // The kernel reads the page for the pipe: EFAULT on a guard, no signal.
            // SAFETY: reads one byte at `page` in the kernel, which checks the access.
            let n = unsafe { libc::write(self.pipe.1, page.cast(), 1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EFAULT) {
                    return Err(e);
                }
                out.push('G');
                continue;
            }
            let mut byte = [0u8; 1];
            sys::read(self.pipe.0, &mut byte)?;
            // SAFETY: the page was readable: the kernel just read it.
            let bytes = unsafe { std::slice::from_raw_parts(page, PAGE) };
            out.push(if bytes.iter().all(|&b| b == fill(i)) {
                '.'
            } else {
                'X'
            });
        }
        Ok(out)
    }
}

impl Mode for Guarded {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        let io = |e: io::Error| e.to_string();
        match (verb, args) {
            ("probe", []) => Ok(format!(
                "anon={} file={}",
                self.probe(self.anon, ANON_PAGES, anon_fill).map_err(io)?,
                self.probe(self.file, FILE_PAGES, file_fill).map_err(io)?
            )),
            _ => unknown(verb),
        }
    }
}

/// Pages of the growing-down area, and the room left free below it.
const GROWS_PAGES: usize = 2;
const GROWS_ROOM: usize = 4 << 20;
/// The byte its pages hold.
const GROWS_FILL: u8 = 0x6d;

/// The MAP_GROWSDOWN area (where it was mapped), and a pipe to write below it with.
struct GrowsDown {
    area: *mut u8,
    pipe: (i32, i32),
}

impl GrowsDown {
    fn new() -> io::Result<Self> {
        // A free range (mapped and unmapped again) whose top the area takes.
        let room = sys::mmap_anon(GROWS_ROOM)?;
        sys::munmap(room as usize, GROWS_ROOM)?;
        let at = room.wrapping_add(GROWS_ROOM - GROWS_PAGES * PAGE);
        let area = sys::map_fixed(
            at,
            GROWS_PAGES * PAGE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_GROWSDOWN,
        )?;
        // SAFETY: the fresh read-write mapping above.
        unsafe { std::ptr::write_bytes(area, GROWS_FILL, GROWS_PAGES * PAGE) };
        Ok(Self {
            area,
            pipe: sys::pipe()?,
        })
    }

    /// The kernel writes a byte on the page below the area (EFAULT, no signal, if it does
    /// not grow); then the area must start there, its pages intact.
    fn grow(&self) -> io::Result<String> {
        let below = self.area.wrapping_sub(PAGE);
        sys::write_all(self.pipe.1, b"g")?;
        // SAFETY: the kernel writes one byte at `below`, checking the access.
        let n = unsafe { libc::read(self.pipe.0, below.cast(), 1) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let maps = std::fs::read_to_string("/proc/self/maps")?;
        let at = format!("{:x}-", below as usize);
        if !maps.lines().any(|l| l.starts_with(&at)) {
            return Ok("written, but no VMA starts on the page below".into());
        }
        // SAFETY: the area's pages, readable.
        let pages = unsafe { std::slice::from_raw_parts(self.area, GROWS_PAGES * PAGE) };
        Ok(if pages.iter().all(|&b| b == GROWS_FILL) {
            "grew".into()
        } else {
            "grew, its pages changed".into()
        })
    }
}

impl Mode for GrowsDown {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        let io = |e: io::Error| e.to_string();
        match (verb, args) {
            ("flags", []) => {
                let smaps = std::fs::read_to_string("/proc/self/smaps").map_err(io)?;
                vm_flags(&smaps, self.area as usize).map_err(io)
            }
            ("grow", []) => self.grow().map_err(io),
            _ => unknown(verb),
        }
    }
}
