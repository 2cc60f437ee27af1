//! System V IPC objects of a dump: what the kernel lists of them (/proc/sysvipc/*), the IPC
//! namespace they live in, and one module per object (shm.rs: shared memory segments).
//!
//! ```text
//! namespace  only the IPC namespace cryo runs in: a process of another one is refused
//!            when it holds a SysV object (cryo does not restore IPC namespaces)
//! ids        /proc/sys/kernel/{shm,sem,msg}_next_id: the next object made gets this id,
//!            so a restore gives every object the id the processes know it by
//! ```

pub(crate) mod shm;

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::unistd::Pid;

/// Why a SysV IPC object could not be dumped or restored.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// A process of the dump holds an object cryo cannot bring back.
    #[error("pid {pid}: {what}: {detail}")]
    Refused {
        /// The process.
        pid: Pid,
        /// The object ("SysV shared memory segment 3 (key 0x1234) at 0x7f...").
        what: String,
        /// Why.
        detail: String,
    },
    /// At restore, this machine has another object where the image's must go.
    #[error("{what}: {detail}")]
    Taken {
        /// The object of the image.
        what: String,
        /// What holds its id or key here.
        detail: String,
    },
    /// A list of /proc/sysvipc could not be read or parsed.
    #[error("read {path}: {source}", path = path.display())]
    List {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// A step making or attaching an object failed.
    #[error("{what}: {op}: {source}")]
    Step {
        /// The object.
        what: String,
        /// The step.
        op: String,
        /// The kernel's answer.
        source: io::Error,
    },
}

/// One row of a /proc/sysvipc list: column name -> value.
type Row = HashMap<String, i64>;

/// The rows of /proc/sysvipc/`name` (shm, sem, msg) of cryo's IPC namespace, by column name
/// (the header line names them; perms are octal there).
fn list(name: &str) -> Result<Vec<Row>, IpcError> {
    let path = PathBuf::from(format!("/proc/sysvipc/{name}"));
    let text = std::fs::read_to_string(&path).map_err(|source| IpcError::List {
        path: path.clone(),
        source,
    })?;
    parse_list(&text).map_err(|detail| IpcError::List {
        path,
        source: io::Error::new(io::ErrorKind::InvalidData, detail),
    })
}

fn parse_list(text: &str) -> Result<Vec<Row>, String> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or("no header line")?
        .split_whitespace()
        .collect();
    let mut rows = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let mut row = Row::new();
        for (col, value) in header.iter().zip(line.split_whitespace()) {
            let radix = if *col == "perms" { 8 } else { 10 };
            let v = i64::from_str_radix(value, radix)
                .map_err(|e| format!("column {col} value {value:?}: {e}"))?;
            row.insert((*col).to_string(), v);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Whether `pid` lives in the IPC namespace cryo runs in.
fn same_namespace(pid: Pid) -> io::Result<bool> {
    let theirs = std::fs::metadata(crate::proc::dir(pid).join("ns/ipc"))?;
    let ours = std::fs::metadata("/proc/self/ns/ipc")?;
    Ok((theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()))
}

/// Makes the next object of `kind` (shm, sem, msg) created in cryo's IPC namespace get `id`.
fn set_next_id(kind: &str, id: i32) -> io::Result<()> {
    std::fs::write(format!("/proc/sys/kernel/{kind}_next_id"), id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_sysvipc_list() {
        let text = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid\n\
                    \x20   4660         3  1600                  8192   100   101      2     0     0\n";
        let rows = parse_list(text).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["key"], 4660);
        assert_eq!(rows[0]["shmid"], 3);
        assert_eq!(rows[0]["perms"], 0o1600);
        assert_eq!(rows[0]["nattch"], 2);
    }
}
