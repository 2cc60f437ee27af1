//! `deleted-file [LEN] [SEED] [tmpfile|setid]`: a file created in the control directory,
//! filled, kept open and unlinked: its contents live only in the open file. With `tmpfile` it
//! is made unnamed by open(O_TMPFILE) in that directory, as glibc's tmpfile() does; with
//! `setid` it is given mode 06755 (set-uid and set-gid) before it is unlinked.
//!
//! ```text
//! deleted-file [LEN] [SEED] [tmpfile|setid]  read  -> <len> <checksum>   pos -> <offset>
//!                                            flags -> <F_GETFL, octal>
//!                                            stat  -> <mode octal> <uid> <gid> <nlink>
//!                                            relink -> linkat of /proc/self/fd/N: ok or errno
//! ```

use std::path::Path;

use super::{arg, failed, io_err, seed_arg, sys, unknown, Mode};
use crate::protocol;

struct DeletedFile {
    fd: i32,
    len: usize,
}

/// `deleted-file [LEN] [SEED] [tmpfile]`
pub fn start(args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    let len: usize = arg(args, 0, 100_000)?;
    let seed = seed_arg(args, 1)?;
    let fd = if args.get(2).is_some_and(|a| a == "tmpfile") {
        sys::open_mode(dir, libc::O_RDWR | libc::O_TMPFILE, 0o640)
            .map_err(failed("open O_TMPFILE"))?
    } else {
        let path = dir.join(protocol::DELETED_FILE);
        let fd = sys::open_mode(&path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o600)
            .map_err(failed("create deleted file"))?;
        if args.get(2).is_some_and(|a| a == "setid") {
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o6755))
                .map_err(failed("chmod 06755"))?;
        }
        std::fs::remove_file(&path).map_err(failed("unlink"))?;
        fd
    };
    sys::write_all(fd, &protocol::pattern(len, seed)).map_err(failed("write"))?;
    Ok(Box::new(DeletedFile { fd, len }))
}

impl Mode for DeletedFile {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("read", []) => {
                let mut data = vec![0u8; self.len + 1];
                let n = sys::pread_all(self.fd, &mut data).map_err(io_err)?;
                Ok(protocol::len_and_checksum(&data[..n]))
            }
            ("pos", []) => Ok(sys::tell(self.fd).map_err(io_err)?.to_string()),
            ("flags", []) => Ok(format!("{:o}", sys::file_flags(self.fd).map_err(io_err)?)),
            ("stat", []) => {
                let meta =
                    std::fs::metadata(format!("/proc/self/fd/{}", self.fd)).map_err(io_err)?;
                use std::os::unix::fs::MetadataExt;
                Ok(format!(
                    "{:o} {} {} {}",
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid(),
                    meta.nlink()
                ))
            }
            ("relink", [to]) => {
                // A name for the open file: linkat through its /proc link.
                let from = std::ffi::CString::new(format!("/proc/self/fd/{}", self.fd))
                    .map_err(|e| e.to_string())?;
                let to = std::ffi::CString::new(*to).map_err(|e| e.to_string())?;
                // SAFETY: both paths are NUL-terminated and outlive the call.
                let r = unsafe {
                    libc::linkat(
                        libc::AT_FDCWD,
                        from.as_ptr(),
                        libc::AT_FDCWD,
                        to.as_ptr(),
                        libc::AT_SYMLINK_FOLLOW,
                    )
                };
                Ok(match r {
                    0 => "ok".into(),
                    _ => std::io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(0)
                        .to_string(),
                })
            }
            _ => unknown(verb),
        }
    }
}
