//! BPF maps (bpf(BPF_MAP_CREATE)): a map's type, sizes, flags, name, contents and frozen
//! state dumped once per map, made again by cryo before the tree, each description opened on
//! it by id with its own access mode.
//!
//! ```text
//! dump     /proc/PID/fd/N reads "anon_inode:bpf-map"; fdinfo: map_id, frozen
//!          once per map id: BPF_MAP_GET_FD_BY_ID (a read-write fd of cryo's, whatever the
//!          process's fd allows), BPF_OBJ_GET_INFO_BY_FD (type, sizes, flags, name, ifindex,
//!          BTF ids, map_extra), the elements:
//!            hash, array, LRU, LPM trie   BPF_MAP_LOOKUP_BATCH (an LPM trie: BPF_MAP_GET_NEXT_KEY
//!                                         + BPF_MAP_LOOKUP_ELEM); per-CPU: a value per
//!                                         possible CPU, rounded up to 8 bytes; an array's
//!                                         all-zero values are left out
//!            queue, stack                 every element popped (BPF_MAP_LOOKUP_AND_DELETE_ELEM)
//!                                         and pushed back in order at once (also when a pop
//!                                         fails), so the original keeps them
//!          its BTF object's raw data (BPF_BTF_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD)
//!          refused: the other types (their values are programs, maps, sockets, devices,
//!          stacks, or cannot be read: bloom filter, ring buffers), an offloaded map
//!          (ifindex), one whose BTF is the kernel's or names a lock, timer, kernel pointer,
//!          list or tree (a value holding one cannot be read and written back), a map a
//!          program, another map or a process outside the dump uses (the restored one would
//!          be apart from them)
//! restore  before any process (shared.rs): BPF_BTF_LOAD of its BTF (once per dumped BTF
//!          id), BPF_MAP_CREATE with the type, sizes, flags, name, map_extra, BTF type ids;
//!          the elements by BPF_MAP_UPDATE_BATCH (an LPM trie's by BPF_MAP_UPDATE_ELEM;
//!          queue, stack: pushed in order); an LRU map's keys counted; BPF_MAP_FREEZE when frozen; every description takes the new map's id from the
//!          slot (BPF_OBJ_GET_INFO_BY_FD) and opens it (BPF_MAP_GET_FD_BY_ID) with its access
//!          mode (BPF_F_RDONLY / BPF_F_WRONLY), then its O_NONBLOCK
//! ```
//!
//! What differs: the map's and its BTF's ids (the kernel's global counters), a hash map's
//! order of iteration (its hash seed is random unless BPF_F_ZERO_SEED), an LRU map's order
//! of eviction (the kernel shows no use order: the elements come back as if just inserted
//! in key order). A map pinned in the BPF filesystem is not seen from the process (a new map would not be
//! the pinned one): KNOWN GAP.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use cryo_proto::image::{file_desc::Kind, BpfMap, BpfMapEntry, FileDesc};
use nix::fcntl::{FcntlArg, OFlag};

use super::inspect::{fdinfo, field, required, OpenFd};
use super::kind::{Checking, Dumping, FileKind, Opened, Opening};
use super::open::set_async;
use super::{restore_err, FileError};
use crate::sys;
use crate::sys::bpf::{ElemSizes, MapCreate, MapInfo, NAME_LEN};

/// BPF maps.
pub(super) struct BpfMaps;

/// enum bpf_map_type: the ones restored.
const HASH: u32 = 1;
const ARRAY: u32 = 2;
const PERCPU_HASH: u32 = 5;
const PERCPU_ARRAY: u32 = 6;
const LRU_HASH: u32 = 9;
const LRU_PERCPU_HASH: u32 = 10;
const LPM_TRIE: u32 = 11;
const QUEUE: u32 = 22;
const STACK: u32 = 23;
/// Of maps of maps: the values are inner map ids.
const ARRAY_OF_MAPS: u32 = 12;
const HASH_OF_MAPS: u32 = 13;

/// BPF_F_* map flags cryo cannot give again.
const BPF_F_NUMA_NODE: u32 = 1 << 2;
const BPF_F_RDONLY: u32 = 1 << 3;
const BPF_F_WRONLY: u32 = 1 << 4;
const BPF_F_TOKEN_FD: u32 = 1 << 16;

/// The kernel's name of map type `t` (enum bpf_map_type without its prefix, lowercase).
fn type_name(t: u32) -> &'static str {
    const NAMES: [&str; 34] = [
        "unspec",
        "hash",
        "array",
        "prog_array",
        "perf_event_array",
        "percpu_hash",
        "percpu_array",
        "stack_trace",
        "cgroup_array",
        "lru_hash",
        "lru_percpu_hash",
        "lpm_trie",
        "array_of_maps",
        "hash_of_maps",
        "devmap",
        "sockmap",
        "cpumap",
        "xskmap",
        "sockhash",
        "cgroup_storage",
        "reuseport_sockarray",
        "percpu_cgroup_storage",
        "queue",
        "stack",
        "sk_storage",
        "devmap_hash",
        "struct_ops",
        "ringbuf",
        "inode_storage",
        "task_storage",
        "bloom_filter",
        "user_ringbuf",
        "cgrp_storage",
        "arena",
    ];
    NAMES.get(t as usize).copied().unwrap_or("unknown")
}

/// Whether cryo makes maps of type `t` again.
fn restorable(t: u32) -> bool {
    matches!(
        t,
        HASH | ARRAY | PERCPU_HASH | PERCPU_ARRAY | LRU_HASH | LRU_PERCPU_HASH | LPM_TRIE | QUEUE
            | STACK
    )
}

fn is_percpu(t: u32) -> bool {
    matches!(t, PERCPU_HASH | PERCPU_ARRAY | LRU_PERCPU_HASH)
}

fn is_array(t: u32) -> bool {
    matches!(t, ARRAY | PERCPU_ARRAY)
}

/// A queue or a stack: no keys, elements only taken from the head.
fn is_fifo(t: u32) -> bool {
    matches!(t, QUEUE | STACK)
}

/// The sizes of map `m`'s keys and of one value as lookups write it (`cpus` possible CPUs).
fn elem_sizes(map_type: u32, key_size: u32, value_size: u32, cpus: u32) -> ElemSizes {
    let value_len = if is_percpu(map_type) {
        (value_size as usize).div_ceil(8) * 8 * cpus as usize
    } else {
        value_size as usize
    };
    ElemSizes {
        key_size: key_size as usize,
        value_len,
    }
}

/// What a dump keeps across fds: the maps read so far (by id), and who outside the dump uses
/// which map (read once, on the first map met).
#[derive(Debug, Default)]
struct Saved {
    maps: HashMap<u32, BpfMap>,
    users: Option<HashMap<u32, String>>,
}

impl FileKind for BpfMaps {
    type Record = BpfMap;

    fn record(kind: &Kind) -> Option<&BpfMap> {
        match kind {
            Kind::BpfMap(m) => Some(m),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        fd.seen.is_anon("bpf-map")
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        let open = fd.open;
        let text = fdinfo(open)?;
        let map_id = required(open, &text, "map_id", |v| v.parse::<u32>().ok())?;
        let frozen = field(&text, "frozen") == Some("1");
        if let Some(m) = fd.state.get::<Saved>().maps.get(&map_id) {
            return Ok(Kind::BpfMap(m.clone()));
        }
        let members = super::pidfd::dump_pids(fd.state);
        let saved = fd.state.get::<Saved>();
        if saved.users.is_none() {
            saved.users = Some(
                users_outside(&members)
                    .map_err(|e| open.dump_err(format!("list who uses BPF maps: {e}")))?,
            );
        }
        if let Some(user) = saved.users.as_ref().and_then(|u| u.get(&map_id)) {
            return Err(open.dump_err(format!(
                "BPF map id {map_id} is also used by {user}, outside the dump: a new map would \
                 be apart from it (not supported)"
            )));
        }
        let mut m = dump(open, map_id, frozen)?;
        // The other descriptions of the map: the same record without the elements.
        let entries = std::mem::take(&mut m.entries);
        let rest = BpfMap {
            elements_elsewhere: true,
            ..m.clone()
        };
        m.entries = entries;
        fd.state.get::<Saved>().maps.insert(map_id, rest);
        Ok(Kind::BpfMap(m))
    }

    fn validate(&self, desc: &FileDesc, m: &BpfMap, _cx: &mut Checking<'_>) -> Result<(), FileError> {
        let bad = |detail: String| FileError::Invalid {
            id: desc.id,
            detail: format!("BPF map {:?} (id {}): {detail}", m.name, m.map_id),
        };
        if !restorable(m.map_type) {
            return Err(bad(format!("type {} is not restored", type_name(m.map_type))));
        }
        if m.elements_elsewhere && !m.entries.is_empty() {
            return Err(bad("elements in a record that says they are elsewhere".into()));
        }
        if m.name.len() >= NAME_LEN {
            return Err(bad("name too long".into()));
        }
        let cpus = if is_percpu(m.map_type) {
            let here = super::aio::possible_cpus().unwrap_or(0);
            if here != u64::from(m.possible_cpus) {
                return Err(bad(format!(
                    "a per-CPU map of {} possible CPUs, and this machine has {here}: its values \
                     hold one slot per CPU",
                    m.possible_cpus
                )));
            }
            m.possible_cpus
        } else {
            1
        };
        let sizes = elem_sizes(m.map_type, m.key_size, m.value_size, cpus);
        if m.entries.len() as u64 > u64::from(m.max_entries) {
            return Err(bad(format!(
                "{} elements for at most {}",
                m.entries.len(),
                m.max_entries
            )));
        }
        let key_len = if is_fifo(m.map_type) { 0 } else { sizes.key_size };
        if let Some(e) = m
            .entries
            .iter()
            .find(|e| e.key.len() != key_len || e.value.len() != sizes.value_len)
        {
            return Err(bad(format!(
                "an element of {}+{} bytes, not {key_len}+{}",
                e.key.len(),
                e.value.len(),
                sizes.value_len
            )));
        }
        if (m.btf_id == 0) != m.btf.is_empty() {
            return Err(bad("BTF id and BTF data disagree".into()));
        }
        if let Some(field) = special_field(&m.btf).filter(|_| m.btf_id != 0) {
            return Err(bad(format!("its BTF names {field}")));
        }
        if m.map_flags & BPF_F_NUMA_NODE != 0 && !single_numa_node() {
            return Err(bad(
                "made on a NUMA node (BPF_F_NUMA_NODE), and this machine has several".into(),
            ));
        }
        Ok(())
    }

    fn open(&self, desc: &FileDesc, m: &BpfMap, cx: &mut Opening<'_>) -> Result<Opened, FileError> {
        let fd = match cx.opts.shared.get(&slot_key(m)) {
            // The slot: cryo's fd on the map, inherited, open while the child restores.
            Some(&slot) => reopen(desc, sys::fd::borrow_raw(slot))?,
            None if m.elements_elsewhere => {
                return Err(restore_err(
                    desc,
                    "make the map",
                    std::io::Error::other(
                        "restored on its own, without the description holding its elements",
                    ),
                ))
            }
            None => {
                // A restore of one task on its own: the map is made here, once per id.
                let made = cx.state.get::<Made>();
                let holder = match made.maps.entry(m.map_id) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(recreate(desc, m, &mut made.btfs)?)
                    }
                };
                reopen(desc, holder.as_fd())?
            }
        };
        Ok(Opened::Now(fd))
    }

    fn describe(&self, _desc: &FileDesc, m: &BpfMap) -> String {
        let frozen = if m.frozen { ", frozen" } else { "" };
        let elements = if m.elements_elsewhere {
            "its elements with another description".to_string()
        } else {
            format!("{} elements", m.entries.len())
        };
        format!(
            "BPF map {:?} ({}, id {}, {elements}{frozen})",
            m.name,
            type_name(m.map_type),
            m.map_id
        )
    }
}

/// The maps and BTF objects made by one restore call on its own, by dumped id.
#[derive(Debug, Default)]
struct Made {
    maps: HashMap<u32, OwnedFd>,
    btfs: HashMap<u32, OwnedFd>,
}

/// The slot of map `m` among the objects cryo makes before the tree (shared.rs): apart from
/// the memfd inodes (low numbers), the message queues (bit 62) and the exited pidfds (near
/// u64::MAX).
pub(super) fn slot_key(m: &BpfMap) -> u64 {
    (1 << 61) | u64::from(m.map_id)
}

/// A new description on the map `made` holds (the slot, or a map made here), with `desc`'s
/// access mode and O_NONBLOCK.
fn reopen(desc: &FileDesc, made: BorrowedFd<'_>) -> Result<OwnedFd, FileError> {
    let id = sys::bpf::map_info(made)
        .map_err(|e| restore_err(desc, "BPF_OBJ_GET_INFO_BY_FD on the map made", e))?
        .id;
    let open_flags = match desc.flags as i32 & libc::O_ACCMODE {
        libc::O_RDONLY => BPF_F_RDONLY,
        libc::O_WRONLY => BPF_F_WRONLY,
        _ => 0,
    };
    let fd = sys::bpf::map_fd_by_id(id, open_flags)
        .map_err(|e| restore_err(desc, format!("BPF_MAP_GET_FD_BY_ID {id}"), e))?;
    let extra = desc.flags as i32 & libc::O_NONBLOCK;
    if extra != 0 {
        let old = nix::fcntl::fcntl(&fd, FcntlArg::F_GETFL)
            .map_err(|e| restore_err(desc, "F_GETFL", e.into()))?;
        nix::fcntl::fcntl(&fd, FcntlArg::F_SETFL(OFlag::from_bits_retain(old | extra)))
            .map_err(|e| restore_err(desc, "F_SETFL O_NONBLOCK", e.into()))?;
    }
    set_async(desc, &fd)?;
    Ok(fd)
}

/// Whether this machine has a single NUMA node (0): a map made on a node comes back on it.
fn single_numa_node() -> bool {
    std::fs::read_to_string("/sys/devices/system/node/possible")
        .map_or(true, |s| s.trim() == "0")
}

/// The record of map `map_id`, which fd `open` holds (fdinfo says `frozen`).
fn dump(open: &OpenFd, map_id: u32, frozen: bool) -> Result<BpfMap, FileError> {
    let what = |info: &MapInfo| {
        format!(
            "BPF map {:?} (id {map_id}, {})",
            name_of(&info.name),
            type_name(info.map_type)
        )
    };
    // A read-write description of cryo's: the process's may be read- or write-only.
    let fd = sys::bpf::map_fd_by_id(map_id, 0).map_err(|e| {
        open.dump_err(format!("BPF_MAP_GET_FD_BY_ID {map_id} (BPF map of this fd): {e}"))
    })?;
    let info = sys::bpf::map_info(fd.as_fd())
        .map_err(|e| open.dump_err(format!("BPF_OBJ_GET_INFO_BY_FD of BPF map id {map_id}: {e}")))?;
    if info.id != map_id {
        return Err(open.dump_err(format!(
            "BPF map id {map_id} opened by id is map {} (it went away?)",
            info.id
        )));
    }
    let refuse = |why: &str| Err(open.dump_err(format!("{}: {why} (not supported)", what(&info))));
    if !restorable(info.map_type) {
        return refuse(
            "maps of this type cannot be made again (their values are programs, maps, sockets, \
             devices or stacks, or cannot be read)",
        );
    }
    if info.ifindex != 0 {
        return refuse(&format!("offloaded to device ifindex {}", info.ifindex));
    }
    if info.btf_vmlinux_value_type_id != 0 {
        return refuse("its value is a structure of the kernel's (btf_vmlinux_value_type_id)");
    }
    let btf = if info.btf_id == 0 {
        Vec::new()
    } else {
        let btf_fd = sys::bpf::btf_fd_by_id(info.btf_id).map_err(|e| {
            open.dump_err(format!("{}: BPF_BTF_GET_FD_BY_ID {}: {e}", what(&info), info.btf_id))
        })?;
        let (raw, kernel) = sys::bpf::btf_data(btf_fd.as_fd()).map_err(|e| {
            open.dump_err(format!("{}: read its BTF (id {}): {e}", what(&info), info.btf_id))
        })?;
        if kernel {
            return refuse(&format!("carries the kernel's BTF (btf id {})", info.btf_id));
        }
        if let Some(field) = special_field(&raw) {
            return refuse(&format!(
                "carries BTF (btf id {}) that names {field}: values holding locks, timers, \
                 kernel pointers or lists cannot be read and written back as they are",
                info.btf_id
            ));
        }
        raw
    };
    if info.map_flags & BPF_F_TOKEN_FD != 0 {
        return refuse("made through a BPF token");
    }
    if info.map_flags & BPF_F_NUMA_NODE != 0 && !single_numa_node() {
        return refuse("made on a NUMA node (BPF_F_NUMA_NODE), which the kernel does not show");
    }
    let cpus = if is_percpu(info.map_type) {
        super::aio::possible_cpus()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| open.dump_err("the number of possible CPUs is unknown"))?
    } else {
        1
    };
    let sizes = elem_sizes(info.map_type, info.key_size, info.value_size, cpus);
    let entries = if is_fifo(info.map_type) {
        read_fifo(fd.as_fd(), sizes, frozen)
    } else {
        read_keyed(fd.as_fd(), sizes, info.max_entries, is_array(info.map_type))
    }
    .map_err(|e| open.dump_err(format!("{}: read its elements: {e}", what(&info))))?;
    Ok(BpfMap {
        map_id,
        map_type: info.map_type,
        key_size: info.key_size,
        value_size: info.value_size,
        max_entries: info.max_entries,
        map_flags: info.map_flags,
        name: name_of(&info.name),
        map_extra: info.map_extra,
        frozen,
        possible_cpus: if is_percpu(info.map_type) { cpus } else { 0 },
        entries,
        btf_id: info.btf_id,
        btf,
        btf_key_type_id: info.btf_key_type_id,
        btf_value_type_id: info.btf_value_type_id,
        elements_elsewhere: false,
    })
}

/// The special field (a lock, timer, kernel pointer, list or tree of the BPF runtime) that
/// raw BTF `raw` names, if it names one. Its string section is searched, not its types: a
/// map whose BTF names one anywhere (a libbpf object's BTF holds every type of the object) is
/// refused, which is on the safe side.
fn special_field(raw: &[u8]) -> Option<&'static str> {
    /// The structures the verifier gives special meaning in a map value, and the type tags
    /// of kernel pointers.
    const SPECIAL: [&str; 15] = [
        "bpf_spin_lock",
        "bpf_res_spin_lock",
        "bpf_timer",
        "bpf_wq",
        "bpf_task_work",
        "bpf_list_head",
        "bpf_list_node",
        "bpf_rb_root",
        "bpf_rb_node",
        "bpf_refcount",
        "kptr",
        "kptr_ref",
        "kptr_untrusted",
        "percpu_kptr",
        "uptr",
    ];
    let u32_at = |off: usize| -> Option<usize> {
        Some(u32::from_ne_bytes(raw.get(off..off + 4)?.try_into().ok()?) as usize)
    };
    // struct btf_header: magic, version, flags, hdr_len, type_off, type_len, str_off, str_len.
    let (hdr_len, str_off, str_len) = match (u32_at(4), u32_at(16), u32_at(20)) {
        (Some(h), Some(o), Some(l)) => (h, o, l),
        _ => return Some("(unreadable BTF)"),
    };
    let Some(strings) = raw.get(hdr_len + str_off..hdr_len + str_off + str_len) else {
        return Some("(unreadable BTF)");
    };
    strings
        .split(|&b| b == 0)
        .find_map(|name| SPECIAL.iter().find(|s| s.as_bytes() == name))
        .copied()
}

/// A NUL-padded name as text (the kernel admits only letters, digits, '_' and '.').
fn name_of(name: &[u8; NAME_LEN]) -> String {
    let end = name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    String::from_utf8_lossy(&name[..end]).into_owned()
}

/// Every element of a hash, array or trie map, by batches where the map type has them, else
/// one by one; an array's all-zero values left out (a new array holds zeros).
fn read_keyed(
    fd: BorrowedFd<'_>,
    sizes: ElemSizes,
    max_entries: u32,
    array: bool,
) -> std::io::Result<Vec<BpfMapEntry>> {
    match read_batched(fd, sizes, max_entries, array) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)) => {
            read_one_by_one(fd, sizes, max_entries, array)
        }
        read => read,
    }
}

/// The kernel's ENOTSUPP (not in libc): a map type without batch operations.
const ENOTSUPP: i32 = 524;

/// Every element by BPF_MAP_LOOKUP_BATCH, in its order (a hash map's: bucket by bucket;
/// a bucket larger than the batch: ENOSPC, the batch doubled).
fn read_batched(
    fd: BorrowedFd<'_>,
    sizes: ElemSizes,
    max_entries: u32,
    array: bool,
) -> std::io::Result<Vec<BpfMapEntry>> {
    let mut count = max_entries.clamp(1, 4096);
    let batch_len = sizes.key_size.max(4);
    let mut from: Option<Vec<u8>> = None;
    let mut to = vec![0u8; batch_len];
    let mut entries = Vec::new();
    loop {
        let mut keys = vec![0u8; sizes.key_size * count as usize];
        let mut values = vec![0u8; sizes.value_len * count as usize];
        let (n, more) = match sys::bpf::map_lookup_batch(
            fd,
            sizes,
            from.as_deref(),
            &mut to,
            &mut keys,
            &mut values,
            count,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && count < max_entries => {
                count = count.saturating_mul(2).min(max_entries);
                continue;
            }
            read => read?,
        };
        for i in 0..n {
            let value = &values[i * sizes.value_len..(i + 1) * sizes.value_len];
            if array && value.iter().all(|&b| b == 0) {
                continue;
            }
            entries.push(BpfMapEntry {
                key: keys[i * sizes.key_size..(i + 1) * sizes.key_size].to_vec(),
                value: value.to_vec(),
            });
        }
        if entries.len() > max_entries as usize {
            return Err(std::io::Error::other(format!(
                "more than its {max_entries} elements: it changes while read"
            )));
        }
        if !more {
            return Ok(entries);
        }
        from = Some(to.clone());
    }
}

/// Every element, in BPF_MAP_GET_NEXT_KEY's order.
fn read_one_by_one(
    fd: BorrowedFd<'_>,
    sizes: ElemSizes,
    max_entries: u32,
    array: bool,
) -> std::io::Result<Vec<BpfMapEntry>> {
    let mut entries = Vec::new();
    let mut key: Option<Vec<u8>> = None;
    let mut next = vec![0u8; sizes.key_size];
    let mut value = vec![0u8; sizes.value_len];
    let mut seen = 0u64;
    while sys::bpf::map_next_key(fd, sizes, key.as_deref(), &mut next)? {
        seen += 1;
        if seen > u64::from(max_entries) {
            return Err(std::io::Error::other(format!(
                "more than its {max_entries} elements: it changes while read"
            )));
        }
        if sys::bpf::map_lookup(fd, sizes, Some(&next), &mut value)?
            && !(array && value.iter().all(|&b| b == 0))
        {
            entries.push(BpfMapEntry {
                key: next.clone(),
                value: value.clone(),
            });
        }
        key = Some(next.clone());
    }
    Ok(entries)
}

/// How many keys BPF_MAP_GET_NEXT_KEY walks through (at most `max_entries`).
fn count_keys(fd: BorrowedFd<'_>, sizes: ElemSizes, max_entries: u32) -> std::io::Result<usize> {
    let mut key: Option<Vec<u8>> = None;
    let mut next = vec![0u8; sizes.key_size];
    let mut n = 0usize;
    while sys::bpf::map_next_key(fd, sizes, key.as_deref(), &mut next)? {
        n += 1;
        if n > max_entries as usize {
            return Err(std::io::Error::other("more keys than its max_entries"));
        }
        key = Some(next.clone());
    }
    Ok(n)
}

/// Every element of a queue or stack, in the order they are taken; each pushed back at once
/// in the order that rebuilds it (also when a pop fails), so the process keeps them. A frozen
/// one cannot be popped: only an empty one is read.
fn read_fifo(fd: BorrowedFd<'_>, sizes: ElemSizes, frozen: bool) -> std::io::Result<Vec<BpfMapEntry>> {
    let mut value = vec![0u8; sizes.value_len];
    if frozen {
        if sys::bpf::map_lookup(fd, sizes, None, &mut value)? {
            return Err(std::io::Error::other(
                "frozen with elements: only its head can be read without taking them",
            ));
        }
        return Ok(Vec::new());
    }
    let info = sys::bpf::map_info(fd)?;
    let mut taken = Vec::new();
    let end = loop {
        match sys::bpf::map_pop(fd, sizes, &mut value) {
            Ok(true) => taken.push(value.clone()),
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    push_all(fd, sizes, info.map_type, &taken)
        .map_err(|e| std::io::Error::new(e.kind(), format!("push an element back: {e}")))?;
    end?;
    Ok(taken
        .into_iter()
        .map(|value| BpfMapEntry {
            key: Vec::new(),
            value,
        })
        .collect())
}

/// Pushes `taken` (in the order a queue or stack of type `map_type` gave them) so that it
/// gives them in that order again: a queue's in order, a stack's in reverse.
fn push_all(fd: BorrowedFd<'_>, sizes: ElemSizes, map_type: u32, taken: &[Vec<u8>]) -> std::io::Result<()> {
    let push = |v: &Vec<u8>| sys::bpf::map_update(fd, sizes, None, v, 0);
    if map_type == STACK {
        taken.iter().rev().try_for_each(push)
    } else {
        taken.iter().try_for_each(push)
    }
}

/// Makes map `m` again (described by `desc`): created, filled, frozen if it was. The fd is
/// O_RDWR.
/// `btfs`: the BTF objects loaded so far, by dumped id (maps made with one BTF object share
/// one again).
pub(super) fn recreate(
    desc: &FileDesc,
    m: &BpfMap,
    btfs: &mut HashMap<u32, OwnedFd>,
) -> Result<OwnedFd, FileError> {
    let btf = if m.btf_id == 0 {
        None
    } else {
        if let std::collections::hash_map::Entry::Vacant(v) = btfs.entry(m.btf_id) {
            v.insert(
                sys::bpf::btf_load(&m.btf).map_err(|e| restore_err(desc, "BPF_BTF_LOAD", e))?,
            );
        }
        let fd = btfs.get(&m.btf_id).expect("loaded above");
        Some((fd.as_fd(), m.btf_key_type_id, m.btf_value_type_id))
    };
    let mut name = [0u8; NAME_LEN];
    let n = m.name.len().min(NAME_LEN - 1);
    name[..n].copy_from_slice(&m.name.as_bytes()[..n]);
    let fd = sys::bpf::map_create(&MapCreate {
        map_type: m.map_type,
        key_size: m.key_size,
        value_size: m.value_size,
        max_entries: m.max_entries,
        map_flags: m.map_flags,
        numa_node: 0,
        name,
        map_extra: m.map_extra,
        btf,
    })
    .map_err(|e| restore_err(desc, "BPF_MAP_CREATE", e))?;
    let cpus = if is_percpu(m.map_type) { m.possible_cpus } else { 1 };
    let sizes = elem_sizes(m.map_type, m.key_size, m.value_size, cpus);
    if is_fifo(m.map_type) {
        let values: Vec<Vec<u8>> = m.entries.iter().map(|e| e.value.clone()).collect();
        push_all(fd.as_fd(), sizes, m.map_type, &values)
            .map_err(|e| restore_err(desc, "push the elements", e))?;
    } else {
        let _pinned = matches!(m.map_type, LRU_HASH | LRU_PERCPU_HASH).then(OneCpu::pin);
        fill(fd.as_fd(), sizes, &m.entries).map_err(|e| restore_err(desc, "fill", e))?;
        if matches!(m.map_type, LRU_HASH | LRU_PERCPU_HASH) {
            // An LRU map evicts rather than refuse: every element must still be there.
            let kept = count_keys(fd.as_fd(), sizes, m.max_entries)
                .map_err(|e| restore_err(desc, "count the elements", e))?;
            if kept != m.entries.len() {
                return Err(restore_err(
                    desc,
                    "fill",
                    std::io::Error::other(format!(
                        "{kept} of {} elements kept (evicted while filled)",
                        m.entries.len()
                    )),
                ));
            }
        }
    }
    if m.frozen {
        sys::bpf::map_freeze(fd.as_fd()).map_err(|e| restore_err(desc, "BPF_MAP_FREEZE", e))?;
    }
    Ok(fd)
}

/// The calling thread kept on one CPU of its mask until dropped, when its mask is put back:
/// an LRU map hands free elements to a list of the inserting CPU's, and one filled from two
/// CPUs (the thread moved) may evict while the other CPU's list still holds free ones.
struct OneCpu(Option<Vec<u64>>);

impl OneCpu {
    fn pin() -> Self {
        let me = nix::unistd::Pid::from_raw(0);
        let Ok(saved) = sys::sched::get_affinity(me) else {
            return Self(None);
        };
        let Some((word, bits)) = saved.iter().enumerate().find(|(_, w)| **w != 0) else {
            return Self(None);
        };
        let mut one = vec![0u64; word + 1];
        one[word] = 1 << bits.trailing_zeros();
        match sys::sched::set_affinity(me, &one) {
            Ok(()) => Self(Some(saved)),
            Err(_) => Self(None),
        }
    }
}

impl Drop for OneCpu {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = sys::sched::set_affinity(nix::unistd::Pid::from_raw(0), saved);
        }
    }
}

/// Writes `entries` into the map at `fd` (BPF_ANY) by batches where the map type has them,
/// the rest one by one.
fn fill(fd: BorrowedFd<'_>, sizes: ElemSizes, entries: &[BpfMapEntry]) -> std::io::Result<()> {
    /// Elements per batch: bounded buffers for a large map.
    const BATCH: usize = 4096;
    let mut done = 0;
    while done < entries.len() {
        let chunk = &entries[done..(done + BATCH).min(entries.len())];
        let keys: Vec<u8> = chunk.iter().flat_map(|e| e.key.iter().copied()).collect();
        let values: Vec<u8> = chunk.iter().flat_map(|e| e.value.iter().copied()).collect();
        match sys::bpf::map_update_batch(fd, sizes, &keys, &values, chunk.len() as u32) {
            Ok(()) => done += chunk.len(),
            Err((n, e))
                if n == 0
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
                    ) =>
            {
                break;
            }
            Err((n, e)) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("BPF_MAP_UPDATE_BATCH at element {}: {e}", done + n),
                ))
            }
        }
    }
    for e in &entries[done..] {
        sys::bpf::map_update(fd, sizes, Some(&e.key), &e.value, 0)
            .map_err(|err| std::io::Error::new(err.kind(), format!("BPF_MAP_UPDATE_ELEM: {err}")))?;
    }
    Ok(())
}

/// The maps used by something outside the dump, each with who: a program (it keeps the map
/// it was loaded with), a map of maps, a process not in `members` (nor cryo). Programs and
/// maps that go away meanwhile are passed over.
fn users_outside(members: &HashSet<i32>) -> std::io::Result<HashMap<u32, String>> {
    let mut users = HashMap::new();
    let mut id = 0;
    while let Some(prog) = sys::bpf::next_id(id, false)? {
        id = prog;
        for map in sys::bpf::prog_map_ids(prog)?.unwrap_or_default() {
            users.entry(map).or_insert_with(|| format!("BPF program id {prog}"));
        }
    }
    let mut id = 0;
    while let Some(outer) = sys::bpf::next_id(id, true)? {
        id = outer;
        for inner in inner_maps(outer)? {
            users
                .entry(inner)
                .or_insert_with(|| format!("the map of maps id {outer}"));
        }
    }
    for (map, pin) in pinned_maps(members) {
        users
            .entry(map)
            .or_insert_with(|| format!("its pin {}, in a BPF filesystem", pin.display()));
    }
    for (pid, fd) in super::outside::fds_outside(members)? {
        let is_map = std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .is_ok_and(|l| l.as_os_str() == "anon_inode:bpf-map");
        if !is_map {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
            continue;
        };
        if let Some(map) = field(&text, "map_id").and_then(|v| v.parse::<u32>().ok()) {
            users
                .entry(map)
                .or_insert_with(|| format!("pid {pid} (fd {fd})"));
        }
    }
    Ok(users)
}

/// The maps pinned in the BPF filesystems mounted in cryo's mount namespace or in one of
/// `members`' (a pin keeps the map it was made with, which a process opening it later
/// would get instead of the restored one): each map's id and a pin of it, as cryo reaches
/// it. At most [`PIN_WALK_LIMIT`] entries are looked at per filesystem; what cannot be read
/// is passed over.
fn pinned_maps(members: &HashSet<i32>) -> Vec<(u32, std::path::PathBuf)> {
    use crate::task::mount_ns::{as_seen_by, mountinfo};
    let mut roots: Vec<crate::task::mount_ns::NamespacePath> = Vec::new();
    let mut devs = HashSet::new();
    let mut spaces = HashSet::new();
    // cryo (None), then the processes of the dump.
    let holders = std::iter::once(None).chain(members.iter().map(|&p| Some(nix::unistd::Pid::from_raw(p))));
    for holder in holders {
        let who = holder.map_or_else(|| "self".to_string(), |p| p.to_string());
        let Ok(ns) = super::mount_views::namespace_of(&who) else {
            continue;
        };
        if !spaces.insert(ns) {
            continue;
        }
        let text = match holder {
            Some(pid) => crate::task::mount_ns::namespace_mountinfo(pid),
            None => std::fs::read_to_string("/proc/self/mountinfo"),
        };
        let Ok(text) = text else {
            continue;
        };
        for m in mountinfo::parse(&text) {
            if m.fstype != "bpf" || !devs.insert(m.dev.clone()) {
                continue;
            }
            let point = mountinfo::unescape(&m.point);
            roots.push(match holder {
                Some(pid) => as_seen_by(pid, &point),
                None => crate::task::mount_ns::NamespacePath::plain(point.into()),
            });
        }
    }
    let mut pins = Vec::new();
    // Each root held while its pins are walked (and their paths used: below, through it).
    for root in &roots {
        let mut stack = vec![root.to_path_buf()];
        let mut seen = 0;
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                seen += 1;
                if seen > PIN_WALK_LIMIT {
                    break;
                }
                let path = entry.path();
                match entry.file_type() {
                    Ok(t) if t.is_dir() => stack.push(path),
                    Ok(t) if t.is_file() => {
                        if let Some(id) = pinned_map_id(&path) {
                            pins.push((id, path));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    pins
}

/// How many entries of one BPF filesystem [`pinned_maps`] looks at.
const PIN_WALK_LIMIT: usize = 100_000;

/// The id of the map pinned at `path`, if a map is.
fn pinned_map_id(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let fd = sys::bpf::obj_get(&c).ok()?;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd))).ok()?;
    (link.as_os_str() == "anon_inode:bpf-map")
        .then(|| sys::bpf::map_info(fd.as_fd()).ok().map(|i| i.id))
        .flatten()
}

/// The ids of the maps held in map `id` if it is a map of maps (a lookup from a system call
/// gives the inner map's id); empty for another map or one gone meanwhile.
fn inner_maps(id: u32) -> std::io::Result<Vec<u32>> {
    let fd = match sys::bpf::map_fd_by_id(id, BPF_F_RDONLY) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let info = sys::bpf::map_info(fd.as_fd())?;
    if !matches!(info.map_type, ARRAY_OF_MAPS | HASH_OF_MAPS) {
        return Ok(Vec::new());
    }
    let sizes = elem_sizes(info.map_type, info.key_size, info.value_size, 1);
    let values = read_keyed(fd.as_fd(), sizes, info.max_entries, false)?;
    Ok(values
        .iter()
        .filter_map(|e| e.value.get(..4))
        .map(|v| u32::from_ne_bytes(v.try_into().expect("4 bytes")))
        .filter(|&v| v != 0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_values_hold_a_rounded_slot_per_cpu() {
        assert_eq!(elem_sizes(PERCPU_ARRAY, 4, 12, 2).value_len, 32);
        assert_eq!(elem_sizes(HASH, 4, 12, 2).value_len, 12);
        assert_eq!(elem_sizes(LRU_PERCPU_HASH, 8, 8, 3).value_len, 24);
    }

    #[test]
    fn types_are_named_as_the_kernel_does() {
        assert_eq!(type_name(HASH), "hash");
        assert_eq!(type_name(3), "prog_array");
        assert_eq!(type_name(QUEUE), "queue");
        assert_eq!(type_name(33), "arena");
        assert_eq!(type_name(99), "unknown");
    }

    #[test]
    fn names_stop_at_the_first_nul() {
        let mut n = [0u8; NAME_LEN];
        n[..3].copy_from_slice(b"abc");
        assert_eq!(name_of(&n), "abc");
    }
}
