//! External mounts (CRIU's `--external mnt[...]`) and a restore's `--root`: mounts of a
//! namespace that the image names by a key instead of holding, bound at restore from a path
//! the user gives (a container's volumes, its /dev, its root filesystem: the runtime knows
//! where they are on the host that restores).
//!
//! ```text
//! dump    --external mnt[POINT]:KEY   the namespace's mount at POINT recorded as KEY, nothing
//!                                     of it copied (NamespaceMount.external)
//! restore --external mnt[KEY]:PATH    that mount made as a bind of PATH (cryo's namespace);
//!         --root PATH                 a pivoted namespace's root made as a bind of PATH
//! ```
//!
//! The restore rewrites the image in memory before anything is made: each such mount's
//! source becomes the path given, and its key in the namespace's table the key a bind of that
//! path shows (its root and filesystem read from cryo's mountinfo), so the table the made
//! namespace is compared with is the one this host gives.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use cryo_proto::image::NamespaceMount;
use nix::unistd::Pid;

use super::mountinfo::{is_below, parse, unescape, Mount};
use super::{mount_name, MountNsError};

/// A dump's `--external mnt[POINT]:KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalMount {
    /// The mount point, in the namespace.
    pub point: String,
    /// The name a restore gives a path for.
    pub key: String,
}

/// The key `externals` gives the mount at `point` (unescaped), if any.
pub(super) fn key_of<'a>(externals: &'a [ExternalMount], point: &str) -> Option<&'a str> {
    externals
        .iter()
        .find(|e| e.point.trim_end_matches('/') == point.trim_end_matches('/'))
        .map(|e| e.key.as_str())
}

/// The record of mount `m` (at `point`) named external as `key`: its point, options and
/// table key, nothing of its contents.
pub(super) fn record(m: &Mount, point: String, key: &str) -> NamespaceMount {
    NamespaceMount {
        point,
        options: m.options.clone(),
        external: key.to_string(),
        key: m.key(),
        ..Default::default()
    }
}

/// Refuses an external naming a point where namespace table `theirs` has no mount.
pub(super) fn check_named(
    externals: &[ExternalMount],
    theirs: &[Mount],
    refuse: impl Fn(String) -> MountNsError,
) -> Result<(), MountNsError> {
    for e in externals {
        if !theirs
            .iter()
            .any(|t| key_of(std::slice::from_ref(e), &unescape(&t.point)).is_some())
        {
            return Err(refuse(format!(
                "--external mnt[{}]:{}: the namespace has no mount at {}",
                e.point, e.key, e.point
            )));
        }
    }
    Ok(())
}

/// The restore's paths for the image's external mounts: `mounts` (key -> path) and `root`
/// (`--root`).
#[derive(Debug, Clone, Default)]
pub struct ExternalPaths {
    /// `--external mnt[KEY]:PATH`.
    pub mounts: HashMap<String, PathBuf>,
    /// `--root PATH`.
    pub root: Option<PathBuf>,
}

/// Before a restore makes anything: the external mounts of every mount namespace of `tasks`
/// made binds of the paths `paths` gives (each key must have one), a pivoted namespace's
/// root bound from `--root` when given; their keys in the namespaces' tables those of the
/// binds this host will show. Refuses a key without a path, a path that is not there, and
/// `--root` for an image without a root of its own.
pub(crate) fn apply(
    tasks: &mut [crate::restore::load::TaskImage],
    paths: &ExternalPaths,
) -> Result<(), MountNsError> {
    let needed = tasks.iter().any(|t| {
        t.core
            .mnt
            .as_ref()
            .is_some_and(|ns| ns.pivoted || ns.mounts.iter().any(|m| !m.external.is_empty()))
    });
    if !needed && paths.mounts.is_empty() && paths.root.is_none() {
        return Ok(());
    }
    let ours =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|errno| MountNsError::Read {
            pid: nix::unistd::getpid(),
            inode: 0,
            what: "cryo's mountinfo".into(),
            errno,
        })?;
    let ours = parse(&ours);
    // `--root` is the root of the roots' namespaces (and of those made inside them sharing
    // it), not of a namespace pivoted into a root of its own inside them.
    let outer_roots: std::collections::HashSet<String> = tasks
        .iter()
        .filter(|t| t.parent_core(tasks).is_none())
        .filter_map(|t| t.core.mnt.as_ref().filter(|ns| ns.pivoted))
        .filter_map(|ns| ns.mounts.first().map(|m| m.key.clone()))
        .collect();
    let mut rekeyed: Vec<(String, String)> = Vec::new();
    let mut rooted = false;
    for task in tasks.iter_mut() {
        let pid = Pid::from_raw(task.entry.pid);
        let Some(ns) = task.core.mnt.as_mut() else {
            continue;
        };
        let inode = ns.inode;
        let pivoted = ns.pivoted;
        for (n, m) in ns.mounts.iter_mut().enumerate() {
            let refuse = |m: &NamespaceMount, detail: String| MountNsError::Refused {
                pid,
                inode,
                mount: mount_name(m),
                detail,
            };
            let source = if !m.external.is_empty() {
                paths.mounts.get(&m.external).cloned().ok_or_else(|| {
                    refuse(
                        m,
                        format!(
                            "is external (dumped with --external mnt[{}]:{}): give its path \
                             with --external mnt[{}]:PATH",
                            m.point, m.external, m.external
                        ),
                    )
                })?
            } else if let Some(root) = paths
                .root
                .as_ref()
                .filter(|_| pivoted && n == 0 && outer_roots.contains(&m.key))
            {
                if m.tmpfs {
                    return Err(refuse(
                        m,
                        format!(
                            "--root {}: the namespace's root is a tmpfs of its own, made again \
                             from the image",
                            root.display()
                        ),
                    ));
                }
                rooted = true;
                root.clone()
            } else {
                continue;
            };
            // A relative path is taken from / (as CRIU's, which works there: zdtm's
            // mnt_root_ext names its host directory so).
            let source = Path::new("/").join(source);
            let source = source.canonicalize().map_err(|e| {
                refuse(
                    m,
                    format!("its path {} on this host: {e}", source.display()),
                )
            })?;
            let key = bound_key(&m.key, &source, &ours).map_err(|detail| refuse(m, detail))?;
            m.bind_source = source.to_string_lossy().into_owned();
            if key != m.key {
                rekeyed.push((std::mem::replace(&mut m.key, key.clone()), key));
            }
        }
        // Each namespace's table and propagation name its mounts by key.
        for (old, new) in &rekeyed {
            if let Some(k) = ns.table.iter_mut().find(|k| *k == old) {
                k.clone_from(new);
            }
            for p in ns.propagation.iter_mut().filter(|p| p.key == *old) {
                p.key.clone_from(new);
            }
        }
    }
    if let (Some(root), false) = (&paths.root, rooted) {
        return Err(MountNsError::Refused {
            pid: tasks
                .first()
                .map_or(Pid::from_raw(0), |t| Pid::from_raw(t.entry.pid)),
            inode: 0,
            mount: format!("--root {}", root.display()),
            detail: "the image has no mount namespace with a root of its own (pivot_root) \
                     to make it the root of"
                .into(),
        });
    }
    Ok(())
}

/// The table key of a bind of `source` (canonical, of cryo's namespace) made with the point
/// and per-mount options of the image's key `dumped` ("POINT ROOT (TYPE SOURCE, OPTIONS
/// SUPER)", each field escaped, so without spaces): its root, type, source and superblock
/// options those of the mount of cryo's (`ours`) that `source` is on.
fn bound_key(dumped: &str, source: &Path, ours: &[Mount]) -> Result<String, String> {
    let meta = std::fs::metadata(source)
        .map_err(|e| format!("its path {} on this host: {e}", source.display()))?;
    let dev = format!(
        "{}:{}",
        nix::sys::stat::major(meta.dev()),
        nix::sys::stat::minor(meta.dev())
    );
    bound_key_on(dumped, &source.to_string_lossy(), &dev, ours)
}

/// [`bound_key`] for `path`, on device `dev` ("MAJOR:MINOR").
fn bound_key_on(dumped: &str, path: &str, dev: &str, ours: &[Mount]) -> Result<String, String> {
    let fields: Vec<&str> = dumped.split(' ').collect();
    let [point, _root, _fstype, _source, options, _super] = fields[..] else {
        return Err(format!("its key {dumped:?} in the image is not a mount's"));
    };
    let on = ours
        .iter()
        .rev()
        .filter(|o| o.dev == dev)
        .find(|o| is_below(path, &unescape(&o.point)))
        .ok_or_else(|| format!("its path {path} is on no mount cryo's namespace shows"))?;
    let below = path
        .strip_prefix(unescape(&on.point).trim_end_matches('/'))
        .unwrap_or("");
    let root = match (on.root.as_str(), below) {
        (r, "") => r.to_string(),
        ("/", b) => escape(b),
        (r, b) => format!("{r}{}", escape(b)),
    };
    let made = Mount {
        point: point.to_string(),
        root,
        options: options.to_string(),
        ..on.clone()
    };
    Ok(made.key())
}

/// A path as mountinfo shows it: space, tab, newline and backslash as octal escapes.
fn escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bind_key_takes_the_root_below_the_mount_the_path_is_on() {
        let ours = parse(
            "1 0 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n\
             2 1 0:40 / /tmp rw,nosuid - tmpfs tmpfs rw,size=10m\n\
             3 1 0:41 /sub /srv rw - tmpfs other rw\n",
        );
        let dumped = "/dev /x (tmpfs t, rw,nosuid x)";
        let at = |path: &str, dev: &str| bound_key_on(dumped, path, dev, &ours).unwrap();
        assert_eq!(
            at("/tmp/a b", "0:40"),
            "/dev /a\\040b (tmpfs tmpfs, rw,nosuid rw,size=10m)"
        );
        assert_eq!(
            at("/srv/d", "0:41"),
            "/dev /sub/d (tmpfs other, rw,nosuid rw)"
        );
        assert_eq!(
            at("/tmp", "0:40"),
            "/dev / (tmpfs tmpfs, rw,nosuid rw,size=10m)"
        );
        assert!(
            bound_key_on(dumped, "/tmp", "9:9", &ours).is_err(),
            "another device"
        );
    }
}
