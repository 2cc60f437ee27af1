//! Open files of a task: dumped once per open file description, restored at their numbers.
//! (Interim: mapped files only; the full module lands from the files branch.)

use std::os::fd::{OwnedFd, RawFd};
use std::path::Path;

use cryo_proto::image::{file_desc, FdEntry, FileDesc, RegularFile};
use nix::unistd::Pid;

use crate::image::ImageDir;

/// Why a file of a task could not be dumped or restored.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// An fd the engine does not handle.
    #[error("pid {pid} fd {fd}: {detail}")]
    Unsupported {
        /// The task.
        pid: i32,
        /// The fd.
        fd: i32,
        /// What it is and why it is refused.
        detail: String,
    },
    /// A file could not be read or opened.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Options of the fd dump.
#[derive(Debug, Clone, Default)]
pub struct FdDumpOptions {
    /// Dump the controlling terminal.
    pub shell_job: bool,
}

/// The open file descriptions of a dump.
#[derive(Debug, Default)]
pub struct FileTable {
    descs: Vec<FileDesc>,
}

impl FileTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Dumps the fds of a frozen task.
    pub fn dump_task_fds(
        &mut self,
        _pid: Pid,
        _images: &ImageDir,
        _opts: &FdDumpOptions,
    ) -> Result<Vec<FdEntry>, FileError> {
        Ok(Vec::new())
    }

    /// Registers a mapped file.
    pub fn add_mapped_file(
        &mut self,
        _pid: Pid,
        link: &Path,
        _images: &ImageDir,
    ) -> Result<u32, FileError> {
        let path = std::fs::read_link(link).map_err(|e| FileError::Io {
            path: link.display().to_string(),
            source: e,
        })?;
        let path = path.to_string_lossy().into_owned();
        if let Some(d) = self.descs.iter().find(|d| match &d.kind {
            Some(file_desc::Kind::Regular(r)) => r.path == path,
            _ => false,
        }) {
            return Ok(d.id);
        }
        let id = self.descs.len() as u32 + 1;
        self.descs.push(FileDesc {
            id,
            flags: 0,
            pos: 0,
            kind: Some(file_desc::Kind::Regular(RegularFile {
                path,
                ..Default::default()
            })),
        });
        Ok(id)
    }

    /// The descriptions collected.
    pub fn into_descs(self) -> Vec<FileDesc> {
        self.descs
    }
}

/// Checks the descriptions before restore.
pub fn validate(
    _descs: &[FileDesc],
    _fds_of_tasks: &[&[FdEntry]],
    _images: &ImageDir,
) -> Result<(), FileError> {
    Ok(())
}

/// Opens the fds of a task in the restore child.
pub fn restore_task_fds(
    _descs: &[FileDesc],
    _fds: &[FdEntry],
    _images: &ImageDir,
    _keep: &[RawFd],
) -> Result<(), FileError> {
    Ok(())
}

/// Opens a mapped file in the restore child.
pub fn open_for_mapping(
    descs: &[FileDesc],
    id: u32,
    writable: bool,
    _images: &ImageDir,
) -> Result<OwnedFd, FileError> {
    let path = descs
        .iter()
        .find(|d| d.id == id)
        .and_then(|d| match &d.kind {
            Some(file_desc::Kind::Regular(r)) => Some(r.path.clone()),
            _ => None,
        })
        .unwrap_or_default();
    std::fs::OpenOptions::new()
        .read(true)
        .write(writable)
        .open(&path)
        .map(OwnedFd::from)
        .map_err(|e| FileError::Io { path, source: e })
}
