//! The dump side of the pre-migration checks: check.img built from what the dump pipeline
//! collected (cores, address spaces, descriptions, the tree), plus the files' contents
//! hashed and this host's CPU flags. Run after the target was let go: hashing a library
//! does not keep anyone frozen.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use cryo_proto::image::{
    file_desc, socket, CheckedAioRing, CheckedFile, CheckedHugePages, CheckedId, CheckedPort,
    CheckedProcess, Creds, FileDesc, MigrationCheck, MmCore, ProcessEntry, TaskCore,
};
use sha2::{Digest, Sha256};

use super::cpu;

/// The kernel features a restore needs beyond the required ones, by what the image holds.
fn kernel_features(cores: &[(TaskCore, MmCore)], descs: &[FileDesc]) -> Vec<String> {
    let mut names: Vec<String> = crate::check::required_names().map(str::to_string).collect();
    if cores
        .iter()
        .filter_map(|(c, _)| c.netns.as_ref())
        .any(|n| !n.nft.is_empty() || !n.xt_tables.is_empty() || !n.conntrack.is_empty())
    {
        names.push("netns_firewall".into());
    }
    let sockets = || {
        descs.iter().filter_map(|d| match &d.kind {
            Some(file_desc::Kind::Socket(s)) => s.state.as_ref(),
            _ => None,
        })
    };
    if sockets().any(|s| matches!(s, socket::State::TcpConnection(_))) {
        names.extend(["tcp_repair".into(), "nftables".into()]);
    }
    if descs.iter().any(|d| {
        matches!(
            d.kind,
            Some(file_desc::Kind::Memfd(_) | file_desc::Kind::Shmem(_))
        )
    }) {
        names.push("memfd_create".into());
    }
    names
}

/// Every user and group id of the dumped threads, with its name here.
fn ids(cores: &[(TaskCore, MmCore)]) -> (Vec<CheckedId>, Vec<CheckedId>) {
    let mut uids = BTreeSet::new();
    let mut gids = BTreeSet::new();
    let mut add = |c: &Creds| {
        uids.extend([c.uid, c.euid, c.suid, c.fsuid]);
        gids.extend([c.gid, c.egid, c.sgid, c.fsgid]);
        gids.extend(c.groups.iter().copied());
    };
    for (core, _) in cores {
        core.creds.iter().for_each(&mut add);
        core.threads
            .iter()
            .filter_map(|t| t.security.as_ref()?.creds.as_ref())
            .for_each(&mut add);
    }
    let user = |id: u32| CheckedId {
        id,
        name: nix::unistd::User::from_uid(id.into())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default(),
    };
    let group = |id: u32| CheckedId {
        id,
        name: nix::unistd::Group::from_gid(id.into())
            .ok()
            .flatten()
            .map(|g| g.name)
            .unwrap_or_default(),
    };
    (
        uids.into_iter().map(user).collect(),
        gids.into_iter().map(group).collect(),
    )
}

/// The size and sha256 of the file at `path` now, and its build-id (None: not a readable
/// regular file).
pub(super) fn hash_file(path: &str) -> Option<(u64, Vec<u8>, Vec<u8>)> {
    // Non-blocking: a FIFO or device where the file was must not hang the check.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let build_id = super::elf::build_id(&file);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    Some((meta.size(), hasher.finalize().to_vec(), build_id))
}

/// check.img's record for a dump of `cores` (with their address spaces: pages found, not
/// written), `pstree` and `descs`.
pub(crate) fn record(
    cores: &[(TaskCore, MmCore)],
    pstree: &[ProcessEntry],
    descs: &[FileDesc],
) -> MigrationCheck {
    let by_id: BTreeMap<u32, &FileDesc> = descs.iter().map(|d| (d.id, d)).collect();
    // Each description's first user, for the finding's text.
    let mut users: BTreeMap<u32, (i32, String)> = BTreeMap::new();
    let mut xcr0 = 0;
    let mut xfeatures = 0;
    let mut memory_bytes = 0;
    for (core, mm) in cores {
        let mut note = |id: u32, how: String| {
            users.entry(id).or_insert((core.pid, how));
        };
        note(mm.exe_file_id, "exe".into());
        for vma in mm.vmas.iter().filter(|v| v.file_id != 0) {
            note(vma.file_id, format!("mapped at {:#x}", vma.start));
        }
        for fd in &core.fds {
            note(fd.file_id, format!("fd {}", fd.fd));
        }
        for thread in &core.threads {
            let (x, f) = cpu::xstate_masks(&thread.xstate);
            xcr0 |= x;
            xfeatures |= f;
        }
        // hugetlb pages come from the huge page pool (huge_pages below), not MemAvailable.
        let huge: Vec<(u64, u64)> = mm
            .vmas
            .iter()
            .filter(|v| v.hugetlb_page_size != 0)
            .map(|v| (v.start, v.end))
            .collect();
        let in_hugetlb = |addr: u64| huge.iter().any(|&(s, e)| s <= addr && addr < e);
        memory_bytes += mm
            .pages
            .iter()
            .filter(|r| !in_hugetlb(r.addr))
            .map(|r| r.npages * crate::memory::PAGE)
            .sum::<u64>();
    }
    let mut files = Vec::new();
    let mut ports = Vec::new();
    let mut seen = BTreeSet::new();
    for (&id, &(pid, ref how)) in &users {
        let Some(desc) = by_id.get(&id) else { continue };
        match &desc.kind {
            // A file on a mount of its holder's namespace's own is not at its path here: a
            // copied tmpfs's comes from the image, a bind's source is judged with the
            // namespace (mount_namespaces in judge.rs).
            Some(file_desc::Kind::Regular(f))
                if !f.deleted && f.linked.is_none() && !f.in_mount_namespace =>
            {
                if !seen.insert(f.path.clone()) {
                    continue;
                }
                let (size, sha256, build_id) = hash_file(&f.path).unwrap_or_default();
                files.push(CheckedFile {
                    path: f.path.clone(),
                    size,
                    sha256,
                    build_id,
                    pid,
                    used_as: how.clone(),
                });
            }
            Some(file_desc::Kind::Socket(s)) => {
                let (protocol, local) = match &s.state {
                    Some(socket::State::TcpListener(l)) => (libc::IPPROTO_TCP, l.local.as_ref()),
                    Some(socket::State::Udp(u))
                        if (u.sock_type == 0 || u.sock_type == libc::SOCK_DGRAM)
                            && (u.protocol == 0 || u.protocol == libc::IPPROTO_UDP) =>
                    {
                        (libc::IPPROTO_UDP, u.local.as_ref())
                    }
                    _ => continue,
                };
                // A port in a network namespace of the process's own is made in a new one at
                // restore: never busy. So is one of a socket made in a dumped process's
                // (sockets/home.rs); one made in cryo's is in the roots' then.
                let own_netns = match crate::sockets::home::Home::of(s) {
                    Some(crate::sockets::home::Home::Dumped(_)) => true,
                    Some(crate::sockets::home::Home::Roots) => false,
                    None => cores.iter().any(|(c, _)| c.pid == pid && c.netns.is_some()),
                };
                if let Some(local) = local.filter(|l| l.port != 0 && !own_netns) {
                    ports.push(CheckedPort {
                        protocol: protocol as u32,
                        ip: local.ip.clone(),
                        port: local.port,
                        pid,
                    });
                }
            }
            _ => {}
        }
    }
    let (uids, gids) = ids(cores);
    MigrationCheck {
        files,
        cpu_flags: cpu::host_flags(),
        xcr0,
        xfeatures,
        kernel_features: kernel_features(cores, descs),
        memory_bytes,
        processes: pstree
            .iter()
            .map(|p| CheckedProcess {
                pid: p.pid,
                tids: p.tids.clone(),
            })
            .collect(),
        ports,
        uids,
        gids,
        aio_rings: cores
            .iter()
            .flat_map(|(_, mm)| {
                mm.aio_rings.iter().filter_map(|r| {
                    let header = cryo_proto::sanity::AioHeader::parse(&r.ring)?;
                    Some(CheckedAioRing {
                        pid: mm.pid,
                        start: r.start,
                        nr: header.nr,
                    })
                })
            })
            .collect(),
        // Every SysV segment counts: the restoring host has none of them.
        huge_pages: crate::memory::hugetlb::needs(cores.iter().map(|(_, mm)| mm), descs, |_| false)
            .into_iter()
            .map(|(page_size, pages)| CheckedHugePages { page_size, pages })
            .collect(),
    }
}
