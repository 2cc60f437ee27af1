//! The objects of a restore made once by cryo before the tree is forked, each by its kind:
//! the shared memory objects (memfds and shared anonymous memory: memfd.rs, shmem.rs), which
//! the processes reopen from their slots (shmem.rs: Slots), and the pidfds of exited
//! processes (pidfd.rs), which they take from theirs, and the POSIX message queues
//! (mqueue.rs), which they reopen from theirs, and the BPF maps (bpf_map.rs), which they
//! open again by the id their slot's map has.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use cryo_proto::image::{file_desc::Kind, FileDesc};
use tracing::debug;

use super::shmem::{create_anon, object_of};
use super::{bpf_map, describe, memfd, mqueue, restore_err, FileError};
use crate::sys;
use crate::image::ImageDir;

/// One object made by cryo for the restore.
#[derive(Debug)]
struct Object {
    ino: u64,
    fd: OwnedFd,
    /// Memfd seals still to add (once every process is mapped).
    seals: u32,
    what: String,
    id: u32,
}

/// The objects of a restore made by cryo before the tree is forked.
#[derive(Debug, Default)]
pub struct SharedObjects {
    objects: Vec<Object>,
    /// The named message queues made: unlinked again unless the restore passed its point of
    /// no return ([`SharedObjects::keep`]).
    queues: Vec<String>,
    kept: std::sync::atomic::AtomicBool,
}

impl Drop for SharedObjects {
    fn drop(&mut self) {
        if !self.kept.load(std::sync::atomic::Ordering::Relaxed) {
            mqueue::unlink_made(&self.queues);
        }
    }
}

/// The BPF map record of `d`, if it is one.
fn map_of(d: &FileDesc) -> Option<&cryo_proto::image::BpfMap> {
    match &d.kind {
        Some(Kind::BpfMap(m)) => Some(m),
        _ => None,
    }
}

impl SharedObjects {
    /// Makes every memfd and shared anonymous memory object that description ids `used`
    /// refer to (by an fd or a VMA), once per object, with its contents and size. The memfds
    /// of descriptions `seal_first` (mapped shared through a writable fd yet never to be made
    /// writable: only a write seal in place at mmap time does that) are sealed at once;
    /// the others once every process is mapped ([`SharedObjects::seal`]), as are those a
    /// shared mapping through descriptions `mapped_writable` may write.
    pub fn create(
        descs: &[FileDesc],
        used: &BTreeSet<u32>,
        seal_first: &BTreeSet<u32>,
        mapped_writable: &BTreeSet<u32>,
        images: &ImageDir,
    ) -> Result<Self, FileError> {
        let mut made = Self::default();
        made.make_queues(descs, used)?;
        made.make_bpf_maps(descs, used)?;
        let mut objects: Vec<Object> = std::mem::take(&mut made.objects);
        for desc in descs.iter().filter(|d| used.contains(&d.id)) {
            let Some(ino) = object_of(desc) else { continue };
            if objects.iter().any(|o| o.ino == ino) {
                continue;
            }
            let of_object = |ids: &BTreeSet<u32>| {
                descs
                    .iter()
                    .any(|d| ids.contains(&d.id) && object_of(d) == Some(ino))
            };
            let first = of_object(seal_first) && !of_object(mapped_writable);
            let (fd, seals) = match &desc.kind {
                Some(Kind::Memfd(m)) if first => (memfd::recreate(desc, m, images, true)?, 0),
                Some(Kind::Memfd(m)) => (memfd::recreate(desc, m, images, false)?, m.seals),
                Some(Kind::Shmem(s)) => (
                    create_anon(s, images)
                        .map_err(|e| restore_err(desc, "create the shared memory", e))?,
                    0,
                ),
                _ => continue,
            };
            debug!(id = desc.id, ino, what = %describe(desc), "shared memory object made");
            objects.push(Object {
                ino,
                fd,
                seals,
                what: describe(desc),
                id: desc.id,
            });
        }
        // Made here, before any process of the tree has its pid: the process made to end
        // takes a pid no restored process needs.
        for (desc, fd) in super::pidfd::make_exited(descs, used)? {
            objects.push(Object {
                ino: super::pidfd::exited_slot_key(desc).expect("a pidfd of an exited process"),
                fd,
                seals: 0,
                what: describe(desc),
                id: desc.id,
            });
        }
        // cryo's own namespaces a process holds an fd of.
        for (key, desc, fd) in super::procfs::make_cryos_namespaces(descs, used)? {
            objects.push(Object {
                ino: key,
                fd,
                seals: 0,
                what: describe(desc),
                id: desc.id,
            });
        }
        made.objects = objects;
        Ok(made)
    }

    /// Makes every POSIX message queue of `descs` that `used` refers to, once per queue.
    fn make_queues(&mut self, descs: &[FileDesc], used: &BTreeSet<u32>) -> Result<(), FileError> {
        for desc in descs.iter().filter(|d| used.contains(&d.id)) {
            let Some(Kind::PosixMqueue(q)) = &desc.kind else { continue };
            let key = mqueue::slot_key(q);
            if self.objects.iter().any(|o| o.ino == key) {
                continue;
            }
            let (fd, made) = mqueue::recreate(desc, q)?;
            if made && !q.deleted {
                self.queues.push(q.name.clone());
            }
            debug!(id = desc.id, name = %q.name, "message queue made");
            self.objects.push(Object {
                ino: key,
                fd,
                seals: 0,
                what: describe(desc),
                id: desc.id,
            });
        }
        Ok(())
    }

    /// Makes every BPF map of `descs` that `used` refers to, once per map, from the record
    /// that holds its elements (a description in flight may hold them).
    fn make_bpf_maps(&mut self, descs: &[FileDesc], used: &BTreeSet<u32>) -> Result<(), FileError> {
        let mut wanted: std::collections::BTreeMap<u32, &FileDesc> = descs
            .iter()
            .filter(|d| used.contains(&d.id))
            .filter_map(|d| map_of(d).map(|m| (m.map_id, d)))
            .collect();
        // The BTF objects, loaded once per dumped id; the maps hold them once made.
        let mut btfs = std::collections::HashMap::new();
        for desc in descs {
            let Some(m) = map_of(desc).filter(|m| !m.elements_elsewhere) else {
                continue;
            };
            if wanted.remove(&m.map_id).is_none() {
                continue;
            }
            let fd = bpf_map::recreate(desc, m, &mut btfs)?;
            debug!(id = desc.id, map_id = m.map_id, "BPF map made");
            self.objects.push(Object {
                ino: bpf_map::slot_key(m),
                fd,
                seals: 0,
                what: describe(desc),
                id: desc.id,
            });
        }
        if let Some((map_id, desc)) = wanted.into_iter().next() {
            return Err(FileError::Invalid {
                id: desc.id,
                detail: format!("BPF map id {map_id}: no record holds its elements"),
            });
        }
        Ok(())
    }

    /// (dumped inode, cryo's fd) of every object, in slot order.
    pub fn fds(&self) -> impl Iterator<Item = (u64, RawFd)> + '_ {
        self.objects.iter().map(|o| (o.ino, o.fd.as_raw_fd()))
    }

    /// The restore has passed its point of no return: the message queues made stay.
    pub fn keep(&self) {
        self.kept.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Adds the memfd seals: once every process has made its mappings, before any runs.
    pub fn seal(&self) -> Result<(), FileError> {
        for o in self.objects.iter().filter(|o| o.seals != 0) {
            sys::memfd::add_seals(o.fd.as_fd(), o.seals).map_err(|source| FileError::Restore {
                id: o.id,
                what: o.what.clone(),
                op: format!("F_ADD_SEALS {:#x}", o.seals),
                source,
            })?;
        }
        Ok(())
    }
}
