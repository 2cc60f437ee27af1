//! Restore side, before anything is made: every abstract name the image's unix sockets bind
//! is free in this network namespace, or the restore is refused naming it.
//!
//! A dumped socket may still hold its name after a killing dump: a socket in flight in a
//! cycle (each of two sockets carried in the other's queue, zdtm scm06) outlives every fd of
//! its process until the kernel's unix garbage collector runs, and the kernel runs it only
//! when some other unix socket is released. So a name held by a socket whose inode is a
//! dumped socket's is waited for, after releasing a socket of cryo's own, for up to
//! [`GARBAGE_WAIT`]; a name held by any other socket is refused at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cryo_proto::image::{file_desc::Kind, FileDesc};
use cryo_unix_sockets as unix;

use super::super::SocketError;
use super::groups::UnixLinks;

/// How long a name the dumped socket itself still holds is waited for.
const GARBAGE_WAIT: Duration = Duration::from_secs(2);

/// Between two looks at the names.
const POLL: Duration = Duration::from_millis(5);

/// Refuses the restore unless every abstract name `links` binds is free here (see the module
/// doc), waiting for the dumped sockets of `descs` that still hold one to be collected.
pub(crate) fn check_abstract_names_free(
    links: &UnixLinks,
    descs: &[FileDesc],
) -> Result<(), SocketError> {
    // A socket made in a namespace of a dumped process (sockets/home.rs) binds its name
    // there, not here.
    let elsewhere: std::collections::HashSet<u32> = descs
        .iter()
        .filter(|d| {
            matches!(&d.kind, Some(Kind::Socket(s))
                if matches!(crate::sockets::home::Home::of(s), Some(crate::sockets::home::Home::Dumped(_))))
        })
        .map(|d| d.id)
        .collect();
    let mut names = links.bound_abstract_names();
    names.retain(|(id, _, _)| !elsewhere.contains(id));
    if names.is_empty() {
        return Ok(());
    }
    let dumped: HashMap<u32, u64> = descs
        .iter()
        .filter_map(|d| match &d.kind {
            Some(Kind::Socket(s)) => Some((d.id, s.ino)),
            _ => None,
        })
        .collect();
    let image_inodes: std::collections::HashSet<u64> = dumped.values().copied().collect();
    let deadline = Instant::now() + GARBAGE_WAIT;
    let mut collected = false;
    loop {
        let mut waiting = None;
        // Every socket of the namespace, read once per look (only when a name is held).
        let mut table: Option<HashMap<u32, unix::UnixSockInfo>> = None;
        for (id, ty, name) in &names {
            let err = |why: String| SocketError::AbstractNameTaken {
                ino: dumped.get(id).copied().unwrap_or(0),
                name: name.to_string(),
                why,
            };
            let held = unix::diag::abstract_name_held(*ty, name)
                .map_err(|e| err(format!("probing it failed: {e}")))?;
            if !held {
                continue;
            }
            let table = match &mut table {
                Some(t) => t,
                None => table.insert(unix::dump_all().map_err(|e| err(format!("sock_diag: {e}")))?),
            };
            let holders: Vec<u64> = table
                .values()
                .filter(|s| s.name == *name)
                .map(|s| u64::from(s.inode))
                .collect();
            match holders.iter().find(|h| !image_inodes.contains(h)) {
                Some(other) => {
                    return Err(err(format!(
                        "it is held here by socket:[{other}], not a socket of the image"
                    )))
                }
                None => waiting = Some((err, holders)),
            }
        }
        let Some((err, holders)) = waiting else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(err(format!(
                "the dumped socket {} still holds it after {GARBAGE_WAIT:?}: its process runs \
                 (a --leave-running dump) or the socket is still in flight in a queue",
                holders
                    .iter()
                    .map(|h| format!("socket:[{h}]"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if !collected {
            // Releasing a unix socket is what runs the kernel's garbage collector.
            drop(
                unix::restore::socket(unix::SockType::Dgram)
                    .map_err(|e| err(format!("a socket to release: {e}")))?,
            );
            collected = true;
        }
        std::thread::sleep(POLL);
    }
}
