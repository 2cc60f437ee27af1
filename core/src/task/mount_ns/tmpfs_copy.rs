//! The contents of a tmpfs of a mount namespace's own: copied at dump through the process's
//! root (files, directories, symlinks, FIFOs, device nodes, hard links, owners, modes,
//! times), made again on the new tmpfs at restore.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use cryo_proto::image::TreeEntry;

use super::CONTENTS_LIMIT;
use crate::sys;

/// The files of the tmpfs whose root the process shows at `base`, parents first; what lies
/// on another mount (a mount point below) is an empty placeholder. Read with O_NOATIME, so the
/// process finds its access times as they were. `budget`: the bytes left to copy.
pub(super) fn copy_tree(base: &Path, budget: &mut u64) -> Result<Vec<TreeEntry>, String> {
    let root = std::fs::symlink_metadata(base).map_err(|e| format!("read its root: {e}"))?;
    let dev = root.dev();
    let mut out = Vec::new();
    let mut links: HashMap<u64, (String, u64, u32)> = HashMap::new();
    let mut todo = vec![String::new()];
    while let Some(rel) = todo.pop() {
        let path = at(base, &rel);
        let err = |what: &str, e: io::Error| format!("{what} {}: {e}", shown(&rel));
        let meta = std::fs::symlink_metadata(&path).map_err(|e| err("read", e))?;
        let (atime_ns, mtime_ns) = crate::files::times_ns(&meta);
        let mut entry = TreeEntry {
            path: rel.clone(),
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            atime_ns,
            mtime_ns,
            ..Default::default()
        };
        if meta.dev() != dev {
            entry.mount_point = true;
            out.push(entry);
            continue;
        }
        if sys::mount::has_xattrs(&path).map_err(|e| err("list the attributes of", e))? {
            return Err(format!(
                "{} has extended attributes: they are not copied",
                shown(&rel)
            ));
        }
        let file_type = meta.file_type();
        // Another name of an inode met before (a hard link): made as a link to it.
        if !file_type.is_dir() && meta.nlink() > 1 {
            if let Some((first, _, count)) = links.get_mut(&meta.ino()) {
                entry.link_to = first.clone();
                *count += 1;
                out.push(entry);
                continue;
            }
            links.insert(meta.ino(), (rel.clone(), meta.nlink(), 1));
        }
        if file_type.is_dir() {
            let mut names = list_dir(&path).map_err(|e| err("list", e))?;
            if names.iter().any(|n| n.contains('\0')) {
                return Err(format!("{} holds a name that is not UTF-8", shown(&rel)));
            }
            names.sort();
            // Popped in order, so pushed reversed.
            for name in names.into_iter().rev() {
                todo.push(below(&rel, name));
            }
        } else if file_type.is_file() {
            if meta.len() > *budget {
                return Err(format!(
                    "holds more than {} MiB of files (at {}): larger contents are not copied",
                    CONTENTS_LIMIT >> 20,
                    shown(&rel)
                ));
            }
            let mut data = Vec::with_capacity(meta.len() as usize);
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOATIME | libc::O_NOFOLLOW)
                .open(&path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(|e| err("read", e))?;
            *budget = budget.saturating_sub(data.len() as u64);
            entry.data = data;
        } else if file_type.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| err("read", e))?;
            entry.data = target.as_os_str().as_bytes().to_vec();
        } else if file_type.is_char_device() || file_type.is_block_device() {
            entry.rdev = meta.rdev();
        } else if !file_type.is_fifo() && !file_type.is_socket() {
            return Err(format!("holds {} of a type not copied", shown(&rel)));
        }
        // A FIFO or a socket file: the node alone (a socket bound there binds it again at
        // restore, the node taken as stale).
        out.push(entry);
    }
    if let Some((first, nlink, count)) = links.values().find(|(_, n, c)| *n != u64::from(*c)) {
        return Err(format!(
            "{} has {nlink} links, {count} of them on this mount: links elsewhere are not made \
             again",
            shown(first)
        ));
    }
    Ok(out)
}

/// The path of `rel` (relative to the tmpfs's root, empty for the root itself) under `base`.
fn at(base: &Path, rel: &str) -> std::path::PathBuf {
    if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    }
}

/// The relative path of `name` in directory `rel` (empty: the root).
fn below(rel: &str, name: String) -> String {
    if rel.is_empty() {
        name
    } else {
        format!("{rel}/{name}")
    }
}

/// A name (relative to `base`, a tmpfs's root as the process shows it) of the inode
/// `dev`:`ino` on that tmpfs, found by a walk of it (not below other mounts), if it has one.
pub(super) fn other_name(base: &Path, dev: u64, ino: u64) -> Option<String> {
    let mut todo = vec![String::new()];
    while let Some(rel) = todo.pop() {
        let path = at(base, &rel);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        if meta.ino() == ino && !rel.is_empty() {
            return Some(rel);
        }
        if meta.is_dir() {
            for name in list_dir(&path)
                .ok()?
                .into_iter()
                .filter(|n| !n.contains('\0'))
            {
                todo.push(below(&rel, name));
            }
        }
    }
    None
}

/// The names in directory `path` (without . and ..), read with O_NOATIME: its access time
/// stays. A name that is not UTF-8 comes back holding a NUL.
pub(super) fn list_dir(path: &Path) -> io::Result<Vec<String>> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOATIME | OFlag::O_CLOEXEC;
    let mut dir = nix::dir::Dir::open(path, flags, nix::sys::stat::Mode::empty())?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        names.push(std::str::from_utf8(name).map_or_else(|_| "\0".to_string(), str::to_string));
    }
    Ok(names)
}

/// A path of a copied tree as messages show it.
pub(super) fn shown(rel: &str) -> String {
    format!("/{rel}")
}

/// Makes the copied `files` of a tmpfs on `point` (its root first): contents, owners, modes,
/// times (directories' last, once their entries are made). Fails with the path.
pub(super) fn fill(point: &Path, files: &[TreeEntry]) -> Result<(), (String, io::Error)> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    let at = |rel: &str| {
        if rel.is_empty() {
            point.to_path_buf()
        } else {
            point.join(rel)
        }
    };
    for e in files {
        // As its owner can be given it from inside a user namespace (userns::make_for).
        crate::task::userns::make_for(e.uid, e.gid, || make_entry(&at, e))?;
    }
    // Times last, children before parents: making an entry changes its directory's.
    for e in files.iter().rev().filter(|e| !e.mount_point) {
        let path = at(&e.path);
        let atime = crate::files::timespec_of_ns(e.atime_ns);
        let mtime = crate::files::timespec_of_ns(e.mtime_ns);
        utimensat(
            nix::fcntl::AT_FDCWD,
            &path,
            &atime,
            &mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|err| (path.display().to_string(), err.into()))?;
    }
    Ok(())
}

/// Makes entry `e` of a copied tmpfs at `at(e.path)`, with its owner and mode (not its times).
fn make_entry(
    at: &(dyn Fn(&str) -> std::path::PathBuf + Sync),
    e: &TreeEntry,
) -> Result<(), (String, io::Error)> {
    use nix::sys::stat::Mode;
    use nix::unistd::fchownat;
    let path = at(&e.path);
    let fail = |err: io::Error| (path.display().to_string(), err);
    // Only names below the mount: no "..", no absolute path, from the image.
    let plain = |p: &str| {
        Path::new(p)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
    };
    if !plain(&e.path) || !plain(&e.link_to) {
        return Err(fail(io::Error::from_raw_os_error(libc::EINVAL)));
    }
    let kind = e.mode & libc::S_IFMT;
    let perms = Mode::from_bits_truncate(e.mode & 0o7777);
    if !e.link_to.is_empty() {
        std::fs::hard_link(at(&e.link_to), &path).map_err(fail)?;
        return Ok(());
    }
    match kind {
        _ if e.path.is_empty() => {}
        libc::S_IFDIR => nix::unistd::mkdir(&path, Mode::from_bits_truncate(0o700))
            .map_err(|err| fail(err.into()))?,
        libc::S_IFREG if e.mount_point => {
            std::fs::File::create(&path).map_err(fail)?;
        }
        libc::S_IFREG => std::fs::write(&path, &e.data).map_err(fail)?,
        libc::S_IFLNK => {
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&e.data), &path).map_err(fail)?
        }
        libc::S_IFIFO => nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600))
            .map_err(|err| fail(err.into()))?,
        libc::S_IFSOCK => nix::sys::stat::mknod(
            &path,
            nix::sys::stat::SFlag::S_IFSOCK,
            Mode::from_bits_truncate(0o600),
            0,
        )
        .map_err(|err| fail(err.into()))?,
        libc::S_IFCHR | libc::S_IFBLK => nix::sys::stat::mknod(
            &path,
            nix::sys::stat::SFlag::from_bits_truncate(kind),
            Mode::from_bits_truncate(0o600),
            e.rdev,
        )
        .map_err(|err| fail(err.into()))?,
        _ => return Err(fail(io::Error::from_raw_os_error(libc::EINVAL))),
    }
    if e.mount_point {
        // Below another mount: its own attributes are not seen there.
        return Ok(());
    }
    let owner = crate::task::userns::own_owner(e.uid, e.gid).map_err(|err| fail(err.into()))?;
    if let Some((uid, gid)) = owner {
        fchownat(
            nix::fcntl::AT_FDCWD,
            &path,
            Some(uid),
            Some(gid),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|err| fail(err.into()))?;
    }
    if kind != libc::S_IFLNK {
        // After chown, which clears set-id bits.
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &path,
            perms,
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|err| fail(err.into()))?;
    }
    Ok(())
}
