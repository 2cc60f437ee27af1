//! Mount tables as mountinfo shows them (man 5 proc_pid_mountinfo): one line a mount, the
//! key two namespaces showing one mount agree on, paths unescaped, and the per-mount and
//! superblock options the restore makes again (or the first it does not).

use nix::mount::MsFlags;

/// MS_NOSYMFOLLOW (linux/mount.h), which nix does not name.
const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(256);

/// One line of a mountinfo file (man 5 proc_pid_mountinfo); paths still escaped (\040...).
#[derive(Debug, Clone, Default)]
pub(crate) struct Mount {
    pub(crate) id: u32,
    pub(super) parent: u32,
    pub(crate) dev: String,
    pub(crate) root: String,
    pub(crate) point: String,
    pub(super) options: String,
    pub(super) optional: String,
    pub(crate) fstype: String,
    pub(super) source: String,
    pub(super) super_options: String,
}

impl Mount {
    /// The [`Mount::key`] of the same mount with other per-mount options (remounted).
    pub(super) fn key_but_options(&self) -> String {
        format!(
            "{} {} ({} {}, {})",
            self.point, self.root, self.fstype, self.source, self.super_options
        )
    }

    /// What two namespaces showing the same mount agree on (not ids, devices, propagation).
    pub(super) fn key(&self) -> String {
        format!(
            "{} {} ({} {}, {} {})",
            self.point, self.root, self.fstype, self.source, self.options, self.super_options
        )
    }

    /// "TYPE SOURCE on POINT".
    pub(super) fn describe(&self) -> String {
        format!(
            "{} {} on {}",
            self.fstype,
            self.source,
            unescape(&self.point)
        )
    }
}

/// The mounts of a mountinfo text, in its order, without mounts of namespace files (ip netns
/// add binds them; they come and go with other tools' namespaces and are handles, not a view
/// of files).
pub(crate) fn parse(text: &str) -> Vec<Mount> {
    parse_with_nsfs(text)
        .into_iter()
        .filter(|m| m.fstype != "nsfs")
        .collect()
}

/// Every mount of `text`, the nsfs mounts (namespace handles, which [`parse`] leaves out)
/// among them.
pub(crate) fn parse_with_nsfs(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|&f| f == "-")?;
            let m = Mount {
                id: fields.first()?.parse().ok()?,
                parent: fields.get(1)?.parse().ok()?,
                dev: fields.get(2)?.to_string(),
                root: fields.get(3)?.to_string(),
                point: fields.get(4)?.to_string(),
                options: fields.get(5)?.to_string(),
                optional: fields.get(6..sep)?.join(" "),
                fstype: fields.get(sep + 1)?.to_string(),
                source: fields.get(sep + 2)?.to_string(),
                super_options: fields.get(sep + 3)?.to_string(),
            };
            Some(m)
        })
        .collect()
}

/// A mount table as the keys of its mounts, sorted.
pub(super) fn table_keys(mounts: &[Mount]) -> Vec<String> {
    let mut keys: Vec<String> = mounts.iter().map(Mount::key).collect();
    keys.sort();
    keys
}

/// A mountinfo path with its octal escapes (\040 space, \011 tab, \012 newline, \134
/// backslash) decoded.
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether path `p` is `prefix` or below it (whole components).
pub(super) fn is_below(p: &str, prefix: &str) -> bool {
    prefix == "/"
        || p == prefix
        || p.strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The mount `point` (as mountinfo writes it) reaches among `mounts`, mounted in that order,
/// as a lookup of the path finds it: from the root mount, at each part of the path the last
/// mount made on the one reached so far there, then the last on that one (stacked), and so
/// on. None for a table without a root.
pub(super) fn reached_by(point: &str, mounts: &[Mount]) -> Option<u32> {
    let ids: std::collections::HashSet<u32> = mounts.iter().map(|m| m.id).collect();
    let mut reached = mounts.iter().find(|m| !ids.contains(&m.parent))?.id;
    let mut prefix = String::new();
    let parts = std::iter::once("").chain(point.split('/').filter(|p| !p.is_empty()));
    for part in parts {
        if !part.is_empty() {
            prefix.push('/');
            prefix.push_str(part);
        }
        let here = if prefix.is_empty() {
            "/"
        } else {
            prefix.as_str()
        };
        while let Some(m) = mounts
            .iter()
            .rev()
            .find(|m| m.point == here && m.parent == reached && m.id != reached)
        {
            reached = m.id;
        }
    }
    Some(reached)
}

/// The mount flags of per-mount options `options` (mountinfo's sixth field), or the first
/// option the restore does not make (idmapped...).
pub(super) fn mount_flags(options: &str) -> Result<MsFlags, String> {
    let mut flags = MsFlags::empty();
    let mut atime = MsFlags::MS_STRICTATIME;
    for opt in options.split(',') {
        match opt {
            "rw" => {}
            "ro" => flags |= MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "nosymfollow" => flags |= MS_NOSYMFOLLOW,
            "relatime" => atime = MsFlags::MS_RELATIME,
            "noatime" => atime = MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            other => return Err(other.to_string()),
        }
    }
    Ok(flags | atime)
}

/// The superblock options of a tmpfs (`rw,size=1024k,mode=751`): those to mount it with
/// again, whether it is read-only, or the first option the restore does not make.
pub(super) fn tmpfs_options(super_options: &str) -> Result<(String, bool), String> {
    const KEPT: &[&str] = &[
        "size",
        "nr_inodes",
        "mode",
        "uid",
        "gid",
        "inode64",
        "inode32",
        "huge",
        "noswap",
        "mpol",
    ];
    let mut kept = Vec::new();
    let mut read_only = false;
    for opt in super_options.split(',') {
        let name = opt.split('=').next().unwrap_or(opt);
        match name {
            "rw" => {}
            "ro" => read_only = true,
            _ if KEPT.contains(&name) => kept.push(opt),
            _ => return Err(opt.to_string()),
        }
    }
    Ok((kept.join(","), read_only))
}

/// The superblock options of a devpts instance (`rw,mode=620,ptmxmode=666,gid=5`): those to
/// mount a new instance with (without rw/ro), or the first option the restore does not make.
pub(super) fn devpts_options(super_options: &str) -> Result<String, String> {
    let mut kept = Vec::new();
    for opt in super_options.split(',') {
        match opt.split('=').next().unwrap_or(opt) {
            "rw" => {}
            "mode" | "ptmxmode" | "gid" | "uid" | "max" => kept.push(opt),
            _ => return Err(opt.to_string()),
        }
    }
    Ok(kept.join(","))
}

/// The superblock options of a proc (`rw,hidepid=invisible,subset=pid`): those to mount it
/// with again (without rw), or the first option the restore does not make.
pub(super) fn proc_options(super_options: &str) -> Result<String, String> {
    let mut kept = Vec::new();
    for opt in super_options.split(',') {
        match opt.split('=').next().unwrap_or(opt) {
            "rw" => {}
            "hidepid" | "gid" | "subset" => kept.push(opt),
            _ => return Err(opt.to_string()),
        }
    }
    Ok(kept.join(","))
}

#[cfg(test)]
mod tests {
    /// zdtm tempfs_overmounted: two tmpfs stacked on a/b, one on a/b/c of the upper, two
    /// stacked on a over all of it, one on a/b of the upper: each reached where it was made.
    #[test]
    fn a_path_reaches_the_last_mount_stacked_on_the_mount_it_reached_so_far() {
        let line = |id: u32, parent: u32, point: &str| {
            format!("{id} {parent} 0:{id} / {point} rw - tmpfs none rw\n")
        };
        let text: String = [
            line(1, 0, "/"),
            line(2, 1, "/t/a/b"),
            line(3, 2, "/t/a/b"),
            line(4, 3, "/t/a/b/c"),
            line(5, 1, "/t/a"),
            line(6, 5, "/t/a"),
            line(7, 6, "/t/a/b"),
        ]
        .concat();
        let table = super::parse(&text);
        for (i, m) in table.iter().enumerate().skip(1) {
            assert_eq!(
                super::reached_by(&m.point, &table[..i]),
                Some(m.parent),
                "{}",
                m.point
            );
        }
        // Now the paths lead to the upper stack: the lower ones are covered.
        assert_eq!(super::reached_by("/t/a/b/c", &table), Some(7));
        assert_eq!(super::reached_by("/t/x", &table[..1]), Some(1));
    }

    use super::*;

    #[test]
    fn a_mount_table_reads_as_a_view() {
        let text = "30 1 0:27 / /sys rw,relatime shared:7 - sysfs sysfs rw\n\
             21 30 0:4 net:[4026532174] /run/netns/x rw shared:5 - nsfs nsfs rw\n\
             22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
             23 22 0:40 / /tmp/a\\040b rw,nosuid - tmpfs none rw,size=1024k,mode=751\n";
        let mounts = parse(text);
        assert_eq!(
            table_keys(&mounts),
            [
                "/ / (ext4 /dev/vda, rw,relatime rw)",
                "/sys / (sysfs sysfs, rw,relatime rw)",
                "/tmp/a\\040b / (tmpfs none, rw,nosuid rw,size=1024k,mode=751)",
            ]
        );
        assert_eq!(mounts[0].optional, "shared:7");
        assert_eq!(unescape(&mounts[2].point), "/tmp/a b");
        assert_eq!(
            tmpfs_options(&mounts[2].super_options).unwrap(),
            ("size=1024k,mode=751".to_string(), false)
        );
        assert_eq!(tmpfs_options("ro,quota").unwrap_err(), "quota");
        assert_eq!(
            mount_flags("ro,nosuid,relatime").unwrap(),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_RELATIME
        );
        assert_eq!(mount_flags("rw,idmapped").unwrap_err(), "idmapped");
        assert!(is_below("/a/b", "/a") && is_below("/a", "/a") && is_below("/x", "/"));
        assert!(!is_below("/ab", "/a"));
    }
}
