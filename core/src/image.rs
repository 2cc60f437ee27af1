//! The image directory: a private (0700) directory of framed record files and raw files (0600).

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cryo_proto::frame::{self, create_private};
use cryo_proto::image::RawFileRef;
use cryo_proto::{ImageError, ImageKind};
use prost::Message;

use crate::sys::mmap::Mapping;

/// A `Result` whose error is an [`ImageDirError`].
pub type Result<T, E = ImageDirError> = std::result::Result<T, E>;

/// Why an image directory, or a file in it, cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageDirError {
    /// A record or raw file was refused (bad magic, version, checksum, truncated, bad name).
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A step on the directory itself failed.
    #[error("image directory {}: {step}: {source}", .path.display())]
    Dir {
        /// The directory given with -D.
        path: PathBuf,
        /// What was being done ("cannot create", "is not writable"...).
        step: &'static str,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// The path exists and is something else than a directory.
    #[error("image directory {}: {what}", .path.display())]
    NotADirectory {
        /// The directory given with -D.
        path: PathBuf,
        /// How it was found ("exists and is not a directory", "is not a directory").
        what: &'static str,
    },
    /// A dump is refused into a directory that holds files already.
    #[error(
        "image directory {}: is not empty (holds {entry}); dump into a new or empty directory",
        .path.display()
    )]
    NotEmpty {
        /// The directory given with -D.
        path: PathBuf,
        /// One of the files it holds.
        entry: String,
    },
}

/// File names inside an image directory.
pub mod names {
    use nix::unistd::Pid;

    /// The checkpoint as a whole.
    pub const INVENTORY: &str = "inventory.img";
    /// One record per process.
    pub const PSTREE: &str = "pstree.img";
    /// One record per open file description.
    pub const FILES: &str = "files.img";

    /// Per-process state.
    pub fn core(pid: Pid) -> String {
        format!("core-{pid}.img")
    }
    /// Per-process address space.
    pub fn mm(pid: Pid) -> String {
        format!("mm-{pid}.img")
    }
    /// Per-process raw pages.
    pub fn pages(pid: Pid) -> String {
        format!("pages-{pid}.img")
    }
    /// Contents of the deleted file with description id `id`.
    pub fn ghost(id: u32) -> String {
        format!("ghost-{id}.img")
    }
}

/// An image directory being written (by dump) or read (by restore and show).
#[derive(Debug, Clone)]
pub struct ImageDir {
    path: PathBuf,
}

impl ImageDir {
    /// Makes `path` ready to receive a dump: created 0700 if absent; if present it must be an
    /// empty, writable directory (then its mode is set to 0700).
    pub fn create(path: &Path) -> Result<Self> {
        let bad = |step: &'static str| {
            move |source| ImageDirError::Dir {
                path: path.to_owned(),
                step,
                source,
            }
        };
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut builder = fs::DirBuilder::new();
                std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                builder.create(path).map_err(bad("cannot create"))?;
            }
            Err(e) => return Err(bad("cannot stat")(e)),
            Ok(meta) if !meta.is_dir() => {
                return Err(ImageDirError::NotADirectory {
                    path: path.to_owned(),
                    what: "exists and is not a directory",
                })
            }
            Ok(_) => {
                let mut entries = fs::read_dir(path).map_err(bad("cannot list"))?;
                if let Some(entry) = entries.next() {
                    let entry = entry
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .unwrap_or_default();
                    return Err(ImageDirError::NotEmpty {
                        path: path.to_owned(),
                        entry,
                    });
                }
            }
        }
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(bad("cannot make private (0700)"))?;
        // Root passes permission checks, so probe for real: a read-only mount or an immutable
        // directory must fail now, before the target is frozen.
        let probe = path.join(".cryo-write-probe");
        create_private(&probe).map_err(|e| bad("is not writable")(std::io::Error::other(e)))?;
        fs::remove_file(&probe).map_err(bad("is not writable"))?;
        Ok(Self {
            path: path.to_owned(),
        })
    }

    /// Opens an existing image directory for reading.
    pub fn open(path: &Path) -> Result<Self> {
        let meta = fs::metadata(path).map_err(|source| ImageDirError::Dir {
            path: path.to_owned(),
            step: "cannot open",
            source,
        })?;
        if !meta.is_dir() {
            return Err(ImageDirError::NotADirectory {
                path: path.to_owned(),
                what: "is not a directory",
            });
        }
        Ok(Self {
            path: path.to_owned(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of file `name` inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes a framed record file.
    pub fn write<M: Message>(&self, name: &str, kind: ImageKind, records: &[M]) -> Result<()> {
        frame::write_image(&self.file(name), kind, records)?;
        Ok(())
    }

    /// Replaces a framed record file: written beside it, then renamed over it, so a reader
    /// sees the old file or the new one, whole.
    pub fn replace<M: Message>(&self, name: &str, kind: ImageKind, records: &[M]) -> Result<()> {
        let new = format!("{name}.new");
        let _ = std::fs::remove_file(self.file(&new));
        frame::write_image(&self.file(&new), kind, records)?;
        std::fs::rename(self.file(&new), self.file(name))
            .map_err(|e| ImageError::io(&self.file(name), "rename", e))?;
        Ok(())
    }

    /// Reads and checks a framed record file.
    pub fn read<M: Message + Default>(&self, name: &str, kind: ImageKind) -> Result<Vec<M>> {
        Ok(frame::read_image(&self.file(name), kind)?)
    }

    /// Reads a framed record file that holds exactly one record.
    pub fn read_single<M: Message + Default>(&self, name: &str, kind: ImageKind) -> Result<M> {
        Ok(frame::read_single(&self.file(name), kind)?)
    }

    /// Creates a new private raw file.
    pub fn create_raw(&self, name: &str) -> Result<File> {
        Ok(create_private(&self.file(name))?)
    }

    /// Opens a raw file after checking it against its reference (size and crc32c), so a
    /// truncated or corrupted raw file is refused before anything is restored.
    pub fn check_raw(&self, raw: &RawFileRef) -> Result<File> {
        self.checked(raw).map(|(file, _)| file)
    }

    /// Like [`ImageDir::check_raw`], keeping the checked contents mapped (None when empty):
    /// the restore copies pages out of this same mapping, so they are read only once.
    pub fn map_raw(&self, raw: &RawFileRef) -> Result<Option<Mapping>> {
        self.checked(raw).map(|(_, map)| map)
    }

    fn checked(&self, raw: &RawFileRef) -> Result<(File, Option<Mapping>)> {
        let path = self.file(&raw.name);
        if raw.name.contains('/') || raw.name.is_empty() {
            return Err(ImageError::Invalid {
                path,
                index: 0,
                detail: format!("raw file name {:?} is not a plain file name", raw.name),
            }
            .into());
        }
        let file = File::open(&path).map_err(|e| ImageError::io(&path, "open", e))?;
        let meta = file
            .metadata()
            .map_err(|e| ImageError::io(&path, "stat", e))?;
        if meta.size() != raw.size {
            return Err(ImageError::Truncated {
                path,
                detail: format!("{} bytes, the image says {}", meta.size(), raw.size),
            }
            .into());
        }
        let map = if raw.size == 0 {
            None
        } else {
            Some(
                Mapping::map_file(&file, raw.size as usize, false)
                    .map_err(|e| ImageError::io(&path, "map", e))?,
            )
        };
        let computed = crc_of_bytes(map.as_ref().map_or(&[][..], |m| m.as_slice()));
        if computed != raw.crc32c {
            return Err(ImageError::Checksum {
                path,
                what: "contents".into(),
                stored: raw.crc32c,
                computed,
            }
            .into());
        }
        Ok((file, map))
    }
}

/// crc32c of the first `len` bytes of `file`, read through a mapping (no copy).
pub fn crc_of_file(file: &File, len: u64) -> std::io::Result<u32> {
    if len == 0 {
        return Ok(crc_of_bytes(&[]));
    }
    let map = Mapping::map_file(file, len as usize, false)?;
    Ok(crc_of_bytes(map.as_slice()))
}

/// crc32c of `data`, split over the machine's cores: on the 1 GiB pages of a large process
/// this is a fifth of the dump. The threads are joined before returning, so callers that fork
/// later are single-threaded again.
pub fn crc_of_bytes(data: &[u8]) -> u32 {
    /// Below this, one thread is faster than starting another.
    const SPLIT_MIN: usize = 16 << 20;
    if data.len() < SPLIT_MIN {
        return crc32c::crc32c(data);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 {
        return crc32c::crc32c(data);
    }
    let part = data.len().div_ceil(threads);
    let crcs: Vec<(u32, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = data
            .chunks(part)
            .map(|chunk| scope.spawn(move || (crc32c::crc32c(chunk), chunk.len())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((0, 0)))
            .collect()
    });
    crcs.into_iter()
        .fold(0, |acc, (crc, n)| crc32c::crc32c_combine(acc, crc, n))
}
