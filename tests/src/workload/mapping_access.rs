//! `mapping-access`: two read-only shared file mappings, one of a file opened read-write
//! (it may be made writable later), one of a file opened read-only (it may not); both fds
//! closed, so only the mappings remember how the files were opened.
//!
//! ```text
//! mapping-access             protect rw|ro -> ok | <errno name> (mprotect PROT_READ|WRITE)
//!                            write rw|ro OFF V -> ok (after a successful protect)
//!                            (DIR/rw.dat and DIR/ro.dat, 4 pages each)
//! ```

use std::io;
use std::path::Path;

use super::{failed, sys, unknown, Mode, PAGE};

/// `mapping-access`
pub fn start(_args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    Ok(Box::new(
        MappingAccess::new(dir).map_err(failed("mapping-access"))?,
    ))
}

const LEN: usize = 4 * PAGE;

/// The two mappings, (name, address, made writable).
struct MappingAccess {
    maps: Vec<(&'static str, *mut u8, bool)>,
}

impl MappingAccess {
    fn new(dir: &Path) -> io::Result<Self> {
        let mut maps = Vec::new();
        for (name, flags) in [("rw", libc::O_RDWR), ("ro", libc::O_RDONLY)] {
            let path = dir.join(format!("{name}.dat"));
            let fd = sys::open_mode(&path, libc::O_RDWR | libc::O_CREAT, 0o600)?;
            sys::write_all(fd, &vec![1u8; LEN])?;
            sys::close(fd);
            let fd = sys::open(&path, flags)?;
            maps.push((name, sys::map_shared_read_only(LEN, fd)?, false));
            sys::close(fd);
        }
        Ok(Self { maps })
    }

    fn find(&mut self, name: &str) -> Result<&mut (&'static str, *mut u8, bool), String> {
        self.maps
            .iter_mut()
            .find(|m| m.0 == name)
            .ok_or_else(|| format!("no mapping {name:?}"))
    }
}

impl Mode for MappingAccess {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("protect", [name]) => {
                let m = self.find(name)?;
                match sys::protect(m.1, LEN, libc::PROT_READ | libc::PROT_WRITE) {
                    Ok(()) => {
                        m.2 = true;
                        Ok("ok".into())
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EACCES) => Ok("EACCES".into()),
                    Err(e) => Ok(e.to_string()),
                }
            }
            ("write", [name, off, v]) => {
                let off: usize = off.parse().map_err(|_| "bad offset")?;
                let v: u8 = v.parse().map_err(|_| "bad value")?;
                let m = self.find(name)?;
                if !m.2 || off >= LEN {
                    return Err("not writable there".into());
                }
                // SAFETY: off < LEN inside a mapping made read-write by `protect`.
                unsafe { m.1.add(off).write_volatile(v) };
                Ok("ok".into())
            }
            _ => unknown(verb),
        }
    }
}
