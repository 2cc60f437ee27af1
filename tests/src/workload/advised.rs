//! `advised`: private anonymous areas, each with one madvise or mlock state, and optionally
//! mlockall(MCL_FUTURE); the process reports what the kernel says of them itself.
//!
//! ```text
//! advised [future|future-onfault|sealed]
//!            flags -> NAME=VMFLAGS;... (each area's VmFlags line, from /proc/self/smaps)
//!            fork  -> dc=absent|present wf=zero|data rest=intact|bad NAME
//!                     (what a child forked now sees)
//!            fresh -> the VmFlags of a page mapped now (lo with mlockall(MCL_FUTURE))
//!            lock  -> VmLck of /proc/self/status
//! areas: dc (MADV_DONTFORK), wf (WIPEONFORK), hg (HUGEPAGE), nh (NOHUGEPAGE), dd (DONTDUMP),
//! mg (MERGEABLE), sr (SEQUENTIAL), rr (RANDOM), lo (mlock), lf (mlock2 MLOCK_ONFAULT), nr
//! (mmap MAP_NORESERVE), each
//! 4 pages holding a pattern; `sealed`: one more area, sealed with mseal
//! ```

use std::io;
use std::path::Path;

use super::{failed, kids, sys, unknown, Mode, PAGE};

/// `advised [future|future-onfault|sealed]`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let (future, sealed) = match args.first().map(String::as_str) {
        None => (0, false),
        Some("future") => (libc::MCL_FUTURE, false),
        Some("future-onfault") => (libc::MCL_FUTURE | libc::MCL_ONFAULT, false),
        Some("sealed") => (0, true),
        Some(other) => return Err(format!("bad argument {other:?}")),
    };
    let advised = Advised::new(future).map_err(failed("advised"))?;
    if sealed {
        let p = sys::mmap_anon(LEN).map_err(failed("advised: map"))?;
        // SAFETY: seals the fresh mapping p..p+LEN of ours (mseal, 6.10+).
        let r = unsafe { libc::syscall(462, p, LEN, 0) } as i32;
        sys::cvt(r).map_err(failed("advised: mseal"))?;
    }
    Ok(Box::new(advised))
}

const LEN: usize = 4 * PAGE;

/// (name, advice or -1 for mlock, -2 for mlock on fault, -3 for mapped with MAP_NORESERVE).
const AREAS: [(&str, i32); 11] = [
    ("dc", libc::MADV_DONTFORK),
    ("wf", 18), // MADV_WIPEONFORK
    ("hg", libc::MADV_HUGEPAGE),
    ("nh", libc::MADV_NOHUGEPAGE),
    ("dd", libc::MADV_DONTDUMP),
    ("mg", libc::MADV_MERGEABLE),
    ("sr", libc::MADV_SEQUENTIAL),
    ("rr", libc::MADV_RANDOM),
    ("lo", -1),
    ("lf", -2),
    ("nr", -3),
];

struct Advised {
    areas: Vec<(&'static str, *mut u8)>,
}

impl Advised {
    fn new(future: i32) -> io::Result<Self> {
        let mut areas = Vec::new();
        for (i, (name, how)) in AREAS.iter().enumerate() {
            let p = if *how == -3 {
                sys::map(
                    LEN,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                )?
                .as_mut_ptr()
            } else {
                sys::mmap_anon(LEN)?
            };
            // SAFETY: p is a fresh LEN-byte read-write mapping of ours.
            unsafe { std::ptr::write_bytes(p, i as u8 + 1, LEN) };
            // SAFETY: p..p+LEN is that mapping; only its flags change.
            let r = unsafe {
                match how {
                    -1 => libc::mlock(p.cast(), LEN),
                    -2 => libc::syscall(libc::SYS_mlock2, p, LEN, 1) as i32,
                    -3 => 0,
                    advice => libc::madvise(p.cast(), LEN, *advice),
                }
            };
            sys::cvt(r).map_err(|e| io::Error::other(format!("{name}: {e}")))?;
            areas.push((*name, p));
        }
        if future != 0 {
            // SAFETY: changes only the locking of this process's future mappings.
            sys::cvt(unsafe { libc::mlockall(future) })?;
        }
        Ok(Self { areas })
    }

    fn flags(&self) -> io::Result<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps")?;
        let mut out = Vec::new();
        for (name, p) in &self.areas {
            out.push(format!("{name}={}", vm_flags(&smaps, *p as usize)?));
        }
        Ok(out.join(";"))
    }

    /// Forks a child that looks at every area and answers over a pipe.
    fn fork(&self) -> io::Result<String> {
        let areas = self.areas.clone();
        // The child only reads memory and /proc, writes its answer and exits.
        kids::answer_from_child("advised fork", || child_view(&areas))
    }
}

/// What a forked child sees of the areas.
fn child_view(areas: &[(&'static str, *mut u8)]) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mapped = |p: *mut u8| {
        maps.lines().any(|l| {
            let range = l.split(' ').next().unwrap_or("");
            let (s, e) = range.split_once('-').unwrap_or(("0", "0"));
            let (s, e) = (
                usize::from_str_radix(s, 16).unwrap_or(0),
                usize::from_str_radix(e, 16).unwrap_or(0),
            );
            s <= p as usize && (p as usize) < e
        })
    };
    let mut dc = "present";
    let mut wf = "data";
    let mut rest = "intact".to_string();
    for (i, (name, p)) in areas.iter().enumerate() {
        match *name {
            "dc" => {
                if !mapped(*p) {
                    dc = "absent";
                }
            }
            "wf" => {
                // SAFETY: the area is mapped (WIPEONFORK keeps it, zeroed), LEN bytes long.
                let bytes = unsafe { std::slice::from_raw_parts(*p, LEN) };
                if bytes.iter().all(|&b| b == 0) {
                    wf = "zero";
                }
            }
            _ => {
                // SAFETY: as above: a mapped LEN-byte area, inherited by the fork.
                let bytes = unsafe { std::slice::from_raw_parts(*p, LEN) };
                if !bytes.iter().all(|&b| b == i as u8 + 1) {
                    rest = format!("bad {name}");
                }
            }
        }
    }
    format!("dc={dc} wf={wf} rest={rest}")
}

/// The VmFlags line of the VMA of `smaps` holding `addr`.
pub(super) fn vm_flags(smaps: &str, addr: usize) -> io::Result<String> {
    let mut inside = false;
    for line in smaps.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if inside {
                return Ok(flags.trim().to_string());
            }
        } else if let Some((s, rest)) = line.split_once('-') {
            if let (Ok(s), Some(e)) = (
                usize::from_str_radix(s, 16),
                rest.split(' ')
                    .next()
                    .and_then(|e| usize::from_str_radix(e, 16).ok()),
            ) {
                inside = s <= addr && addr < e;
            }
        }
    }
    Err(io::Error::other(format!("no VMA at {addr:#x}")))
}

impl Mode for Advised {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        let io = |e: io::Error| e.to_string();
        match (verb, args) {
            ("flags", []) => self.flags().map_err(io),
            ("fork", []) => self.fork().map_err(io),
            ("fresh", []) => {
                let p = sys::mmap_anon(PAGE).map_err(io)?;
                let smaps = std::fs::read_to_string("/proc/self/smaps").map_err(io)?;
                let flags = vm_flags(&smaps, p as usize).map_err(io);
                // SAFETY: the page just mapped, unused.
                unsafe { libc::munmap(p.cast(), PAGE) };
                flags
            }
            ("lock", []) => {
                let status = std::fs::read_to_string("/proc/self/status").map_err(io)?;
                Ok(status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmLck:"))
                    .unwrap_or("")
                    .trim()
                    .to_string())
            }
            _ => unknown(verb),
        }
    }
}
