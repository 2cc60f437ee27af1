//! `deleted-file [LEN] [SEED] [tmpfile|setid]`: a file created in the control directory,
//! filled, kept open and unlinked: its contents live only in the open file. With `tmpfile` it
//! is made unnamed by open(O_TMPFILE) in that directory, as glibc's tmpfile() does; with
//! `setid` it is given mode 06755 (set-uid and set-gid) before it is unlinked (`setid-other`:
//! owned by uid and gid 18943 first, no user's here, as zdtm file_attr's). With
//! `ro-mount` it is made on a tmpfs mounted at DIR/m, opened again read-only, unlinked, and
//! the mount made read-only (a bind remount: the filesystem stays writable); the test
//! unmounts DIR/m.
//!
//! ```text
//! deleted-file [LEN] [SEED] [tmpfile|setid]  read  -> <len> <checksum>   pos -> <offset>
//!                                            flags -> <F_GETFL, octal>
//!                                            stat  -> <mode octal> <uid> <gid> <nlink>
//!                                            relink -> linkat of /proc/self/fd/N: ok or errno
//!                                            mount -> <mount point> <its options> of the
//!                                                     fd's mount (fdinfo mnt_id)
//!                                            reopen-rw -> errno of an O_RDWR open of
//!                                                         /proc/self/fd/N (0: opened)
//! ```

use std::path::Path;

use super::{arg, failed, io_err, seed_arg, sys, unknown, Mode};
use crate::protocol;

/// The owner (uid and gid) of a `setid-other` file: no user's here.
const OTHER_ID: u32 = 18943;

struct DeletedFile {
    fd: i32,
    len: usize,
}

/// `deleted-file [LEN] [SEED] [tmpfile]`
pub fn start(args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    let len: usize = arg(args, 0, 100_000)?;
    let seed = seed_arg(args, 1)?;
    let fd = if args.get(2).is_some_and(|a| a == "ro-mount") {
        let m = dir.join("m");
        std::fs::create_dir(&m).map_err(failed("mkdir m"))?;
        sys::mount_tmpfs(&m).map_err(failed("mount tmpfs"))?;
        let path = m.join(protocol::DELETED_FILE);
        std::fs::write(&path, protocol::pattern(len, seed)).map_err(failed("write"))?;
        let fd = sys::open_mode(&path, libc::O_RDONLY, 0).map_err(failed("open"))?;
        std::fs::remove_file(&path).map_err(failed("unlink"))?;
        sys::remount_bind_read_only(&m).map_err(failed("remount read-only"))?;
        return Ok(Box::new(DeletedFile { fd, len }));
    } else if args.get(2).is_some_and(|a| a == "tmpfile") {
        sys::open_mode(dir, libc::O_RDWR | libc::O_TMPFILE, 0o640)
            .map_err(failed("open O_TMPFILE"))?
    } else {
        let path = dir.join(protocol::DELETED_FILE);
        let fd = sys::open_mode(&path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o600)
            .map_err(failed("create deleted file"))?;
        if args.get(2).is_some_and(|a| a == "setid-other") {
            std::os::unix::fs::chown(&path, Some(OTHER_ID), Some(OTHER_ID))
                .map_err(failed("chown"))?;
        }
        if args.get(2).is_some_and(|a| a.starts_with("setid")) {
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
            ("mount", []) => {
                let id = sys::mount_id_of(self.fd)?;
                let table = std::fs::read_to_string("/proc/self/mountinfo").map_err(io_err)?;
                table
                    .lines()
                    .map(|l| l.split(' ').collect::<Vec<_>>())
                    .find(|f| f[0] == id)
                    .map(|f| format!("{} {}", f[4], f[5]))
                    .ok_or_else(|| format!("mount {id} is not in mountinfo"))
            }
            ("reopen-rw", []) => Ok(
                match sys::open_mode(
                    Path::new(&format!("/proc/self/fd/{}", self.fd)),
                    libc::O_RDWR,
                    0,
                ) {
                    Ok(fd) => {
                        sys::close(fd);
                        "0".into()
                    }
                    Err(e) => e.raw_os_error().unwrap_or(0).to_string(),
                },
            ),
            _ => unknown(verb),
        }
    }
}
