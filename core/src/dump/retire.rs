//! `cryo kill -D DIR`: ends the processes a `--leave-running` dump left running without a
//! word to their TCP peers, so that the image restores against connections that never saw
//! them go.
//!
//! Killing such a process normally closes its sockets: the peers get a FIN or a RST and the
//! connections the image holds are over. Here the tree is frozen again, every connection is
//! captured in repair mode and compared with the image (a connection that exchanged bytes
//! since the dump cannot be restored from it: refused, nothing done), the dump's network lock
//! goes back over them, and the processes die with their sockets in repair mode: nothing is
//! sent. The lock id is written into the image's inventory, so `cryo restore` (or `cryo
//! unlock`) removes it, exactly as after a dump that killed its target.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use cryo_proto::image::{file_desc::Kind, FileDesc, Inventory, ProcessEntry};
use cryo_proto::ImageKind;
use nix::unistd::Pid;
use tracing::{info, info_span};

use super::error::KillError;
use super::tree::resolve_trees;
use super::unlock::lock_id_for;
use crate::error::{Error, Result};
use crate::freeze::FrozenTask;
use crate::image::{names, ImageDir};
use crate::sockets::{self, DumpSockets, SocketDumpOptions};

/// What `cryo kill` did.
#[derive(Debug, Clone, Default)]
pub struct Retired {
    /// The processes killed.
    pub pids: Vec<Pid>,
    /// The connections now held silent for the restore.
    pub connections: usize,
    /// The network lock left installed (empty: the image has no connection).
    pub network_lock: String,
}

/// Kills the processes the `--leave-running` dump in `dir` left running, silently for their
/// TCP peers. Refused, with everything left as it was, when the processes are not those of
/// the image or a connection moved on since the dump.
pub fn kill_left_running(dir: &Path) -> Result<Retired> {
    let _span = info_span!("kill", dir = %dir.display()).entered();
    let images = ImageDir::open(dir)?;
    let mut inventory: Inventory = images.read_single(names::INVENTORY, ImageKind::Inventory)?;
    let dir_buf = || dir.to_path_buf();
    if !inventory.leave_running {
        return Err(KillError::NotLeftRunning { dir: dir_buf() }.into());
    }
    if !inventory.network_lock.is_empty() {
        return Err(KillError::AlreadyLocked {
            dir: dir_buf(),
            lock: inventory.network_lock.clone(),
        }
        .into());
    }
    let pstree: Vec<ProcessEntry> = images.read(names::PSTREE, ImageKind::Pstree)?;
    let descs: Vec<FileDesc> = images.read(names::FILES, ImageKind::Files)?;
    let image_connections: HashMap<u64, &cryo_proto::image::Socket> = descs
        .iter()
        .filter_map(|d| match &d.kind {
            Some(Kind::Socket(s)) if sockets::is_connection(s) => Some((s.ino, s)),
            _ => None,
        })
        .collect();

    // The image names a PID namespace's processes by their pids there, not the host's the
    // running tree has.
    if inventory.pid_ns != 0 {
        return Err(Error::target(
            Pid::from_raw(1),
            format!(
                "is the init of pid namespace pid:[{}] in this image: `cryo kill` does not \
                 take a pid namespace yet; refused",
                inventory.pid_ns
            ),
        ));
    }
    // The same processes as in the image, still there.
    let roots: Vec<Pid> = inventory
        .root_pids
        .iter()
        .map(|&p| Pid::from_raw(p))
        .collect();
    let tree = resolve_trees(&roots)?;
    let live: Vec<Pid> = tree
        .iter()
        .filter(|m| !m.is_zombie())
        .map(|m| m.pid)
        .collect();
    let imaged: HashSet<i32> = pstree.iter().filter(|e| !e.zombie).map(|e| e.pid).collect();
    let now: HashSet<i32> = live.iter().map(|p| p.as_raw()).collect();
    if now != imaged {
        let mut gone: Vec<_> = imaged.difference(&now).collect();
        let mut new: Vec<_> = now.difference(&imaged).collect();
        gone.sort();
        new.sort();
        return Err(KillError::TreesChanged {
            dir: dir_buf(),
            gone: gone.into_iter().copied().collect(),
            new: new.into_iter().copied().collect(),
        }
        .into());
    }

    let mut frozen = Vec::with_capacity(live.len());
    for &pid in &live {
        frozen.push(FrozenTask::freeze(pid)?);
    }
    let lock_id = lock_id_for(dir);
    let mut held = DumpSockets::collect(
        &live,
        &SocketDumpOptions {
            tcp_established: true,
            // A connection waiting in an accept queue is one the image does not have.
            skip_in_flight: false,
            tcp_close: false,
            lock_id: lock_id.clone(),
            leave_running: false,
        },
        // No guardian here: the processes are to die silently anyway.
        |_| {},
    )?;
    let mut seen = 0;
    for (&pid, dump) in live.iter().zip(held.tasks()) {
        for (ino, now) in dump.connections() {
            let Some(then) = image_connections.get(&ino) else {
                return Err(KillError::NewConnection {
                    pid,
                    connection: sockets::describe(now),
                }
                .into());
            };
            if let Some(moved) = sockets::connection_moved(now, then) {
                return Err(KillError::ConnectionMoved {
                    pid,
                    connection: sockets::describe(now),
                    moved: moved.to_string(),
                }
                .into());
            }
            seen += 1;
        }
    }
    if seen != image_connections.len() {
        return Err(KillError::ConnectionsClosed {
            dir: dir_buf(),
            closed: image_connections.len() - seen,
            total: image_connections.len(),
        }
        .into());
    }
    // Record the lock before killing: if writing fails, nothing is lost yet.
    let network_lock = if seen > 0 { lock_id } else { String::new() };
    inventory.network_lock = network_lock.clone();
    images.replace(names::INVENTORY, ImageKind::Inventory, &[inventory])?;
    held.silence_before_kill()?;
    let dying = crate::freeze::kill_tree(frozen)?;
    let _ = held.finish_killed();
    dying.into_iter().for_each(crate::freeze::Dying::wait_gone);
    info!(
        processes = live.len(),
        connections = seen,
        "killed; connections held for the restore"
    );
    Ok(Retired {
        pids: live,
        connections: seen,
        network_lock,
    })
}
