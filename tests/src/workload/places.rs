//! `places HOW DIR`: a process whose working or root directory, or one of its fds, is one a
//! restore must find again (or the dump refuse).
//!
//! ```text
//! places chroot DIR        chroot into DIR/jail (DIR: the control dir), working directory
//!                          DIR/jail/inner
//! places deleted-cwd DIR   working directory DIR/gone, then removed
//! places deleted-cwd-held DIR  the same, also open at fd 41
//! places deleted-cwd-held-by-child DIR
//!                          the same, open at fd 41 in a child only (forked before, paused,
//!                          its working directory elsewhere)
//! places deleted-cwd-child DIR the same, then a child forked there (paused)
//! places deleted-cwd-ro DIR   a tmpfs mounted at DIR, working directory DIR/gone, removed,
//!                          then the mount made read-only
//! places deleted-dir-fd-ro DIR the same, DIR/gone held open at fd 41 instead
//! places deleted-fifo-ro DIR  the same, DIR/gone a FIFO held open (O_RDWR) at fd 41
//! places deleted-symlink-ro DIR the same, DIR/gone a symlink held at fd 41 (O_PATH |
//!                          O_NOFOLLOW)
//! places proc-cwd DIR      working directory /proc/<a child's pid>, the child then killed
//!                          and reaped (the directory is gone with it)
//! places proc-fd DIR       fd 41 on /proc/<a child's pid> (O_RDONLY|O_DIRECTORY), the child
//!                          then killed and reaped
//!                          fd41 -> <the link /proc/self/fd/41> <F_GETFL, octal>
//!                                  <openat(41, "status"): opened | errno N>
//!                          where -> <working directory> (getcwd, as the process sees it)
//!                          root  -> whether / holds the marker file DIR/jail/marker
//!                          cwd   -> <the link /proc/self/cwd> <mode, octal> <nlink> <mtime ns>
//!                          cwd-inode -> the `inode` line of an fd on "." (sys::inode_line)
//!                          create-here -> created | errno N  (open("x", O_CREAT) in the cwd)
//!                          same-as-41 -> whether fd 41 and the working directory are one
//!                                        directory (device and inode)
//! ```

use std::path::Path;

use super::{failed, sys, unknown, Mode};
use crate::protocol;

struct Places;

/// `places HOW DIR`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let (Some(how), Some(dir)) = (args.first(), args.get(1)) else {
        return Err("places mode needs HOW DIR".into());
    };
    let dir = Path::new(dir);
    match how.as_str() {
        "chroot" => {
            // DIR is the control dir: the chroot is DIR/jail, where DIR's own path holds hard
            // links to the control FIFOs (opened by path for each reply).
            let jail = dir.join("jail");
            let back = jail.join(dir.strip_prefix("/").map_err(|_| "DIR must be absolute")?);
            std::fs::create_dir_all(&back).map_err(failed("mkdir"))?;
            for fifo in [protocol::CMD_FIFO, protocol::OUT_FIFO] {
                std::fs::hard_link(dir.join(fifo), back.join(fifo)).map_err(failed("link"))?;
            }
            std::fs::create_dir_all(jail.join("inner")).map_err(failed("mkdir"))?;
            std::fs::write(jail.join("marker"), b"here").map_err(failed("marker"))?;
            std::env::set_current_dir(jail.join("inner")).map_err(failed("chdir"))?;
            std::os::unix::fs::chroot(&jail).map_err(failed("chroot"))?;
        }
        "deleted-cwd" | "deleted-cwd-held" | "deleted-cwd-child" => {
            let gone = dir.join("gone");
            std::fs::create_dir(&gone).map_err(failed("mkdir"))?;
            std::env::set_current_dir(&gone).map_err(failed("chdir"))?;
            if how == "deleted-cwd-held" {
                let fd = sys::open(Path::new("."), libc::O_RDONLY | libc::O_DIRECTORY)
                    .map_err(failed("open"))?;
                sys::move_fd(fd, 41).map_err(failed("dup2"))?;
            }
            std::fs::remove_dir(&gone).map_err(failed("rmdir"))?;
            if how == "deleted-cwd-child" {
                sys::fork_paused().map_err(failed("fork"))?;
            }
        }
        "deleted-cwd-ro" | "deleted-dir-fd-ro" | "deleted-fifo-ro" | "deleted-symlink-ro" => {
            // DIR is a tmpfs the workload mounts (the test unmounts it), made read-only (a
            // bind remount) once the directory (FIFO, symlink) in it is removed.
            sys::mount_tmpfs(dir).map_err(failed("mount tmpfs"))?;
            let gone = dir.join("gone");
            let held = |path: &Path, flags: i32| -> Result<(), String> {
                let fd = sys::open(path, flags).map_err(failed("open"))?;
                sys::move_fd(fd, 41).map_err(failed("dup2"))?;
                Ok(())
            };
            match how.as_str() {
                "deleted-fifo-ro" => {
                    sys::mkfifo(&gone).map_err(failed("mkfifo"))?;
                    held(&gone, libc::O_RDWR)?;
                }
                "deleted-symlink-ro" => {
                    std::os::unix::fs::symlink("elsewhere", &gone).map_err(failed("symlink"))?;
                    held(&gone, libc::O_PATH | libc::O_NOFOLLOW)?;
                }
                _ => {
                    std::fs::create_dir(&gone).map_err(failed("mkdir"))?;
                    if how == "deleted-cwd-ro" {
                        std::env::set_current_dir(&gone).map_err(failed("chdir"))?;
                    } else {
                        held(&gone, libc::O_RDONLY | libc::O_DIRECTORY)?;
                    }
                }
            }
            if how == "deleted-cwd-ro" || how == "deleted-dir-fd-ro" {
                std::fs::remove_dir(&gone).map_err(failed("rmdir"))?;
            } else {
                std::fs::remove_file(&gone).map_err(failed("unlink"))?;
            }
            sys::remount_bind_read_only(dir).map_err(failed("remount read-only"))?;
        }
        "deleted-cwd-held-by-child" => {
            let gone = dir.join("gone");
            std::fs::create_dir(&gone).map_err(failed("mkdir"))?;
            let fd =
                sys::open(&gone, libc::O_RDONLY | libc::O_DIRECTORY).map_err(failed("open"))?;
            sys::move_fd(fd, 41).map_err(failed("dup2"))?;
            sys::fork_paused().map_err(failed("fork"))?;
            sys::close(41);
            std::env::set_current_dir(&gone).map_err(failed("chdir"))?;
            std::fs::remove_dir(&gone).map_err(failed("rmdir"))?;
        }
        "proc-cwd" => {
            let child = sys::fork_paused().map_err(failed("fork"))?;
            std::env::set_current_dir(format!("/proc/{child}")).map_err(failed("chdir"))?;
            sys::tgkill(child, child, libc::SIGKILL).map_err(failed("kill"))?;
            sys::reap(child).map_err(failed("waitpid"))?;
        }
        "proc-fd" => {
            use std::os::fd::AsRawFd;
            let child = sys::fork_paused().map_err(failed("fork"))?;
            let dir = std::fs::File::open(format!("/proc/{child}")).map_err(failed("open"))?;
            // SAFETY: dup2 of an fd this process owns onto 41, which nothing else uses.
            if unsafe { libc::dup2(dir.as_raw_fd(), 41) } != 41 {
                return Err(failed("dup2")(std::io::Error::last_os_error()));
            }
            drop(dir);
            sys::tgkill(child, child, libc::SIGKILL).map_err(failed("kill"))?;
            sys::reap(child).map_err(failed("waitpid"))?;
        }
        other => return Err(format!("unknown place {other:?}")),
    }
    Ok(Box::new(Places))
}

impl Mode for Places {
    fn command(&mut self, verb: &str, _args: &[&str]) -> Result<String, String> {
        match verb {
            "where" => std::env::current_dir()
                .map(|d| d.display().to_string())
                .map_err(|e| e.to_string()),
            "root" => Ok(Path::new("/marker").exists().to_string()),
            "cwd-inode" => {
                let here = sys::open_mode(
                    std::path::Path::new("."),
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                )
                .map_err(|e| e.to_string())?;
                let line = sys::inode_line(here).map_err(|e| e.to_string());
                sys::close(here);
                line
            }
            "cwd" => {
                use std::os::unix::fs::MetadataExt;
                let link = std::fs::read_link("/proc/self/cwd").map_err(|e| e.to_string())?;
                let m = std::fs::metadata("/proc/self/cwd").map_err(|e| e.to_string())?;
                Ok(format!(
                    "{} {:o} {} {}",
                    link.display(),
                    m.mode() & 0o7777,
                    m.nlink(),
                    m.mtime() * 1_000_000_000 + m.mtime_nsec()
                ))
            }
            "same-as-41" => {
                use std::os::unix::fs::MetadataExt;
                let fd = std::fs::metadata("/proc/self/fd/41").map_err(|e| e.to_string())?;
                let cwd = std::fs::metadata("/proc/self/cwd").map_err(|e| e.to_string())?;
                Ok(((fd.dev(), fd.ino()) == (cwd.dev(), cwd.ino())).to_string())
            }
            "fd41" => {
                let link = std::fs::read_link("/proc/self/fd/41").map_err(|e| e.to_string())?;
                // SAFETY: fcntl and openat on fd 41 with a NUL-terminated name; the fd
                // openat returns is closed at once.
                let (flags, opened) = unsafe {
                    let flags = libc::fcntl(41, libc::F_GETFL);
                    let fd = libc::openat(41, c"status".as_ptr(), libc::O_RDONLY);
                    let opened = if fd >= 0 {
                        libc::close(fd);
                        "opened".to_string()
                    } else {
                        format!(
                            "errno {}",
                            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
                        )
                    };
                    (flags, opened)
                };
                Ok(format!("{} {flags:o} {opened}", link.display()))
            }
            "create-here" => match std::fs::File::create("x") {
                Ok(_) => Ok("created".into()),
                Err(e) => Ok(format!("errno {}", e.raw_os_error().unwrap_or(0))),
            },
            _ => unknown(verb),
        }
    }
}
