//! Private scratch directories for images passing through (a receiver's, a `cryo migrate`'s,
//! a `cryo dump --to`'s), on /dev/shm (else TMPDIR), removed when dropped, flock'ed while in
//! use: one a killed cryo left is unlocked, and the next cryo to make one of its kind removes
//! it ([`sweep`]).

use std::path::{Path, PathBuf};

use tracing::warn;

/// A scratch directory (mode 0700), locked while this lives, removed when it is dropped.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    _held: nix::fcntl::Flock<std::fs::File>,
}

/// Where scratch directories go: /dev/shm, else TMPDIR.
fn base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

impl ScratchDir {
    /// A new scratch directory named `PREFIX` and a random suffix. It is made and locked
    /// under a name no sweep looks at, then given its own: a cryo starting meanwhile never
    /// takes it for one a killed cryo left.
    pub fn new(prefix: &str) -> std::io::Result<Self> {
        let suffix: String = crate::auth::nonce()?[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let name = format!("{prefix}{suffix}");
        let hidden = base().join(format!(".{name}"));
        let path = base().join(&name);
        let mut b = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&hidden)?;
        let held = open_dir(&hidden)
            .and_then(|d| {
                nix::fcntl::Flock::lock(d, nix::fcntl::FlockArg::LockExclusiveNonblock)
                    .map_err(|(_, e)| e.into())
            })
            .and_then(|held| std::fs::rename(&hidden, &path).map(|()| held));
        match held {
            Ok(held) => Ok(Self { path, _held: held }),
            Err(e) => {
                let _ = std::fs::remove_dir(&hidden);
                Err(e)
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Opens directory `path` itself (not a symbolic link's target).
fn open_dir(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Removes the scratch directories named `PREFIX...` that a killed cryo left: owned by this
/// user, not a symbolic link, and no longer locked by a live one. Returns how many.
pub fn sweep(prefix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(base()) else {
        return 0;
    };
    let uid = nix::unistd::geteuid().as_raw();
    let mut removed = 0;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let path = entry.path();
        let Ok(dir) = open_dir(&path) else { continue };
        let ours = dir
            .metadata()
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == uid);
        if !ours {
            continue;
        }
        // Locked: a live cryo's.
        let Ok(_unlocked) =
            nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusiveNonblock)
        else {
            continue;
        };
        warn!(path = %path.display(), "removing the scratch directory a killed cryo left");
        if std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_removes_what_a_killed_cryo_left_and_keeps_what_a_live_one_holds() {
        let prefix = format!("cryo-test-scratch-{}-", std::process::id());
        // What a killed cryo leaves: its directory, no longer locked.
        let left = base().join(format!("{prefix}left"));
        std::fs::create_dir(&left).unwrap();
        std::fs::write(left.join("pages-1.img"), b"pages").unwrap();
        let live = ScratchDir::new(&prefix).unwrap();
        assert!(live.path().is_dir());
        assert_eq!(sweep(&prefix), 1);
        assert!(!left.exists(), "the killed one's directory is gone");
        assert!(live.path().is_dir(), "the live one's stays");
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists(), "removed when dropped");
        assert_eq!(sweep(&prefix), 0);
    }
}
