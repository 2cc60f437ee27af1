//! Extended attributes (xattr(7)): listed and read through a path (a /proc magic link
//! followed to its file, deleted or not), written through an fd or a path.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::check;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn c_name(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Calls `read(buf, size)` (size 0: the size needed) until the buffer holds the whole answer:
/// the attributes may grow between the two calls (ERANGE), so it asks again.
fn read_sized(read: impl Fn(*mut libc::c_void, usize) -> libc::ssize_t) -> io::Result<Vec<u8>> {
    loop {
        let size = check(read(std::ptr::null_mut(), 0) as libc::c_long)? as usize;
        let mut buf = vec![0u8; size];
        match check(read(buf.as_mut_ptr().cast(), size) as libc::c_long) {
            Ok(len) => {
                buf.truncate(len as usize);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The names of the extended attributes of the file at `path` (followed if a link); none
/// where its filesystem keeps none (EOPNOTSUPP).
pub(crate) fn list(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let c = c_path(path)?;
    let names = read_sized(|buf, size| {
        // SAFETY: `c` is a NUL-terminated path; `buf` is null with size 0 (a size query) or
        // points at `size` writable bytes.
        unsafe { libc::listxattr(c.as_ptr(), buf.cast(), size) }
    });
    match names {
        Ok(names) => Ok(names
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect()),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The value of extended attribute `name` of the file at `path` (followed if a link).
pub(crate) fn get(path: &Path, name: &[u8]) -> io::Result<Vec<u8>> {
    let (c, n) = (c_path(path)?, c_name(name)?);
    read_sized(|buf, size| {
        // SAFETY: `c` and `n` are NUL-terminated; `buf` is null with size 0 (a size query) or
        // points at `size` writable bytes.
        unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf, size) }
    })
}

/// Sets extended attribute `name` of the file behind `fd` to `value`.
pub(crate) fn set_fd(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let n = c_name(name)?;
    // SAFETY: `n` is NUL-terminated; `value` is read for its length only.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    check(r as libc::c_long).map(drop)
}

/// Sets extended attribute `name` of the file at `path` (not followed: a symbolic link's own)
/// to `value`.
pub(crate) fn set_path(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let (c, n) = (c_path(path)?, c_name(name)?);
    // SAFETY: `c` and `n` are NUL-terminated; `value` is read for its length only.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    check(r as libc::c_long).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn an_attribute_set_through_an_fd_is_listed_and_read_through_its_proc_link() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        match set_fd(file.as_fd(), b"user.cryo-test", b"v\0w") {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return,
            r => r.unwrap(),
        }
        let link = Path::new("/proc/self/fd").join(file.as_raw_fd().to_string());
        std::fs::remove_file(dir.path().join("f")).unwrap();
        assert!(list(&link).unwrap().contains(&b"user.cryo-test".to_vec()));
        assert_eq!(get(&link, b"user.cryo-test").unwrap(), b"v\0w");
    }
}
