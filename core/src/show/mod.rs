//! `cryo show`: an image directory as readable text (text.rs) or JSON (json.rs).
//!
//! Every record file is read through [`ImageDir`], so it is checked (magic, version,
//! checksums) exactly as restore would check it; a missing or damaged file fails the whole
//! show with the error naming it. Raw files (pages, ghost contents) are named, not read.
//!
//! The text is a compact `criu show`:
//!
//! ```text
//! image directory /tmp/img
//! format 1.0  checkpoint 3f9c...  created 1700000000123 (unix ms)
//! kernel 6.18.44  cryo 0.1.0  roots 1234  options: none
//!
//! process 1234 (sleep)  ppid 1000  pgid 1234  sid 1234
//!   cwd /root  root /  umask 022  uid 0  gid 0
//!   thread 1234 (sleep)  rip 0x00007f0000001234  rsp 0x00007ffc00000100  xstate 2696 bytes
//!   fd 0 -> /dev/null (char device)  flags O_RDWR  [file 1]
//!   fd 3 -> pipe:[4242]  6 bytes queued  flags O_RDONLY  [file 2]
//!   vma 0000555555554000-0000555555556000 r-xp file-private /usr/bin/sleep
//!   pages 12 (48 KiB) in 3 runs  pages-1234.img
//! ```
//!
//! A check image (`dump --check-only`) ends with what a destination judges:
//!
//! ```text
//! check: 64.0 MiB of memory  xcr0 0x2e7  xfeatures 0x7  kernel features tcp_repair
//!   cpu flags: fpu vme de pse ...
//!   file /usr/bin/sleep  35.3 KiB  sha256 0f1e...  build-id 9a8b...  (pid 1234 exe)
//!   port tcp 0.0.0.0:8080 (pid 1234)
//!   uid 0 root  gid 0 root
//! ```
//!
//! The JSON is the records as they are, inside
//! `{"format_version", "dir", "inventory", "processes": [{"pstree", "core", "mm"}], "files"}`
//! (and `"check"` for a check image),
//! with two readability changes: bytes fields (`xstate`, `raw`, `data`, `sha256`, `build_id`) become
//! `{"len": N}` (plus `"hex"` when at most 64 bytes), and a VMA's `kind` is its name
//! (`"anon"`, `"file-private"`, ...) rather than its number.

mod json;
mod text;

use std::fs::File;
use std::io::Read as _;
use std::path::Path;

use cryo_proto::image::{
    FileDesc, Inventory, MigrationCheck, MmCore, ProcessEntry, TaskCore, VmaKind,
};
use cryo_proto::{ImageError, ImageKind};
use nix::unistd::Pid;

use crate::error::Result;
use crate::image::{names, ImageDir};
pub(crate) use crate::proc::join;
pub use json::to_json;
pub use text::render_text;

/// One process of the image: its pstree record, core and mm.
struct Process {
    entry: ProcessEntry,
    core: TaskCore,
    mm: MmCore,
}

/// Every record file of an image directory, read and checked.
struct Loaded {
    major: u16,
    minor: u16,
    inventory: Inventory,
    processes: Vec<Process>,
    files: Vec<FileDesc>,
    /// What a destination judges (check.img), in an image of `dump --check-only`.
    check: Option<MigrationCheck>,
}

impl Loaded {
    fn read(dir: &Path) -> Result<Self> {
        let images = ImageDir::open(dir)?;
        let inventory: Inventory = images.read_single(names::INVENTORY, ImageKind::Inventory)?;
        let (major, minor) = format_version(&images.file(names::INVENTORY))?;
        let entries: Vec<ProcessEntry> = images.read(names::PSTREE, ImageKind::Pstree)?;
        let files: Vec<FileDesc> = images.read(names::FILES, ImageKind::Files)?;
        let processes = entries
            .into_iter()
            .map(|entry| {
                let pid = Pid::from_raw(entry.pid);
                if entry.zombie {
                    // A zombie has no state of its own beyond its pstree record.
                    return Ok(Process {
                        core: TaskCore::default(),
                        mm: MmCore::default(),
                        entry,
                    });
                }
                Ok(Process {
                    core: images.read_single(&names::core(pid), ImageKind::Core)?,
                    mm: images.read_single(&names::mm(pid), ImageKind::Mm)?,
                    entry,
                })
            })
            .collect::<Result<_>>()?;
        let check = match inventory.check_only {
            true => Some(images.read_single(names::CHECK, ImageKind::MigrationCheck)?),
            false => None,
        };
        Ok(Self {
            major,
            minor,
            inventory,
            processes,
            files,
            check,
        })
    }

    fn file(&self, id: u32) -> Option<&FileDesc> {
        self.files.iter().find(|f| f.id == id)
    }
}

/// The format version in the header of an image file (u16 LE at bytes 8 and 10), read after
/// the file passed its checks.
fn format_version(path: &Path) -> Result<(u16, u16)> {
    let mut header = [0u8; 12];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(|e| ImageError::io(path, "read header", e))?;
    Ok((
        u16::from_le_bytes([header[8], header[9]]),
        u16::from_le_bytes([header[10], header[11]]),
    ))
}

/// A VMA kind as a short name: `anon`, `file-private`, `vvar-vclock`...
fn vma_kind_name(kind: i32) -> String {
    match VmaKind::try_from(kind) {
        Ok(k) => k
            .as_str_name()
            .trim_start_matches("VMA_KIND_")
            .to_ascii_lowercase()
            .replace('_', "-"),
        Err(_) => format!("kind-{kind}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    use cryo_proto::image::{
        Creds, FdEntry, PageRun, Pipe, RawFileRef, RegularFile, SigInfo, X86Regs,
    };

    use cryo_proto::image::{file_desc, ThreadCore, Vma};
    use serde_json::json;

    use super::json::summarise_bytes;
    use super::text::{human_bytes, open_flags, PAGE_SIZE};
    use super::*;

    /// A temporary directory removed on drop (core has no tempfile dependency).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "cryo-show-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const PID: i32 = 4321;

    /// Writes a small but complete image directory: one process, one thread, a regular file,
    /// a pipe with queued data, a char device, three VMAs.
    fn sample(root: &Path) -> PathBuf {
        let dir = root.join("img");
        let images = ImageDir::create(&dir).unwrap();
        let pid = Pid::from_raw(PID);
        images
            .write(
                names::INVENTORY,
                ImageKind::Inventory,
                &[Inventory {
                    checkpoint_id: "ckpt-0123456789".into(),
                    created_unix_ms: 1_700_000_000_123,
                    kernel_release: "6.18.0-test".into(),
                    cryo_version: "0.1.0".into(),
                    root_pids: vec![PID],
                    vdso_size: 8192,
                    vdso_crc32c: 0xdead_beef,
                    leave_running: true,
                    ..Default::default()
                }],
            )
            .unwrap();
        images
            .write(
                names::PSTREE,
                ImageKind::Pstree,
                &[ProcessEntry {
                    pid: PID,
                    ppid: 1,
                    pgid: PID,
                    sid: PID,
                    tids: vec![PID],
                    ..Default::default()
                }],
            )
            .unwrap();
        let files = [
            FileDesc {
                id: 1,
                flags: (libc::O_WRONLY | libc::O_APPEND) as u32,
                pos: 1234,
                parent_mount_namespace: false,
                in_mount_namespace: false,
                rw_hint: 0,
                kind: Some(file_desc::Kind::Regular(RegularFile {
                    path: "/tmp/demo/log".into(),
                    size: 1234,
                    ..Default::default()
                })),
            },
            FileDesc {
                id: 2,
                flags: (libc::O_RDONLY | libc::O_NONBLOCK) as u32,
                pos: 0,
                parent_mount_namespace: false,
                in_mount_namespace: false,
                rw_hint: 0,
                kind: Some(file_desc::Kind::Pipe(Pipe {
                    ino: 987_654,
                    capacity: 65536,
                    data: vec![b'x'; 6000],
                    fifo_path: String::new(),
                    ..Default::default()
                })),
            },
            FileDesc {
                id: 3,
                flags: libc::O_RDWR as u32,
                pos: 0,
                parent_mount_namespace: false,
                in_mount_namespace: false,
                rw_hint: 0,
                kind: Some(file_desc::Kind::CharDevice("/dev/null".into())),
            },
            FileDesc {
                id: 4,
                flags: libc::O_RDONLY as u32,
                pos: 0,
                parent_mount_namespace: false,
                in_mount_namespace: false,
                rw_hint: 0,
                kind: Some(file_desc::Kind::Regular(RegularFile {
                    path: "/usr/bin/demo".into(),
                    ..Default::default()
                })),
            },
        ];
        images
            .write(names::FILES, ImageKind::Files, &files)
            .unwrap();
        let fd = |fd, file_id| FdEntry {
            fd,
            file_id,
            cloexec: fd > 2,
        };
        images
            .write(
                &names::core(pid),
                ImageKind::Core,
                &[TaskCore {
                    pid: PID,
                    comm: "demo-task".into(),
                    umask: 0o22,
                    creds: Some(Creds::default()),
                    cwd: "/tmp/demo".into(),
                    root: "/".into(),
                    fds: vec![fd(0, 3), fd(1, 1), fd(2, 1), fd(4, 2)],
                    threads: vec![ThreadCore {
                        tid: PID,
                        comm: "demo-task".into(),
                        regs: Some(X86Regs {
                            rip: 0x7f00_dead_beef,
                            rsp: 0x7ffc_0000_1000,
                            ..Default::default()
                        }),
                        xstate: vec![0; 2696],
                        pending: vec![SigInfo {
                            signo: 10,
                            code: 0,
                            raw: vec![7; 128],
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            )
            .unwrap();
        let vma = |start: u64, pages: u64, prot: i32, kind: VmaKind, file_id, name: &str| Vma {
            start,
            end: start + pages * PAGE_SIZE,
            prot: prot as u32,
            map_flags: libc::MAP_PRIVATE as u32,
            kind: kind as i32,
            file_id,
            name: name.into(),
            ..Default::default()
        };
        images
            .write(
                &names::mm(pid),
                ImageKind::Mm,
                &[MmCore {
                    pid: PID,
                    exe_file_id: 4,
                    vmas: vec![
                        vma(
                            0x5555_0000_0000,
                            2,
                            libc::PROT_READ | libc::PROT_EXEC,
                            VmaKind::FilePrivate,
                            4,
                            "",
                        ),
                        vma(
                            0x5555_0001_0000,
                            8,
                            libc::PROT_READ | libc::PROT_WRITE,
                            VmaKind::Heap,
                            0,
                            "[heap]",
                        ),
                        vma(
                            0x7ffc_0000_0000,
                            4,
                            libc::PROT_READ | libc::PROT_WRITE,
                            VmaKind::Stack,
                            0,
                            "[stack]",
                        ),
                    ],
                    pages: vec![
                        PageRun {
                            addr: 0x5555_0001_0000,
                            npages: 3,
                            offset: 0,
                        },
                        PageRun {
                            addr: 0x7ffc_0000_0000,
                            npages: 2,
                            offset: 3 * PAGE_SIZE,
                        },
                    ],
                    pages_file: Some(RawFileRef {
                        name: names::pages(pid),
                        size: 5 * PAGE_SIZE,
                        crc32c: 0,
                    }),
                    ..Default::default()
                }],
            )
            .unwrap();
        dir
    }

    #[test]
    fn text_shows_version_pid_threads_fds_vmas() {
        let tmp = TempDir::new();
        let dir = sample(&tmp.0);
        let text = render_text(&dir).unwrap();
        for needle in [
            &format!(
                "format {}.{}",
                cryo_proto::FORMAT_MAJOR,
                cryo_proto::FORMAT_MINOR
            ),
            "1 process, 4 open file descriptions",
            "checkpoint ckpt-0123456789",
            "options: leave-running",
            &format!("process {PID} (demo-task)  ppid 1  pgid {PID}  sid {PID}"),
            &format!("thread {PID} (demo-task)  rip 0x00007f00deadbeef  rsp 0x00007ffc00001000"),
            "xstate 2696 bytes",
            "1 pending",
            "fd 0 -> /dev/null (char device)  flags O_RDWR  [file 3]",
            "fd 1 -> /tmp/demo/log  pos 1234  flags O_WRONLY|O_APPEND  [file 1]",
            "fd 4 -> pipe:[987654]  6000 bytes queued (capacity 65536)  flags O_RDONLY|O_NONBLOCK  cloexec  [file 2]",
            "exe /usr/bin/demo",
            "vma 0000555500000000-0000555500002000 r-xp file-private",
            "/usr/bin/demo",
            "heap",
            "[stack]",
            "pages 5 (20.0 KiB) in 2 runs over 3 vmas",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        assert_eq!(
            format_version(&dir.join(names::INVENTORY)).unwrap(),
            (cryo_proto::FORMAT_MAJOR, cryo_proto::FORMAT_MINOR)
        );
    }

    #[test]
    fn json_has_records_and_summarised_bytes() {
        let tmp = TempDir::new();
        let dir = sample(&tmp.0);
        let v = to_json(&dir).unwrap();
        assert_eq!(
            v["format_version"],
            format!("{}.{}", cryo_proto::FORMAT_MAJOR, cryo_proto::FORMAT_MINOR)
        );
        assert_eq!(v["inventory"]["checkpoint_id"], "ckpt-0123456789");
        let p = &v["processes"][0];
        assert_eq!(p["pstree"]["pid"], PID);
        assert_eq!(p["core"]["comm"], "demo-task");
        let thread = &p["core"]["threads"][0];
        assert_eq!(thread["xstate"], json!({ "len": 2696 }));
        assert_eq!(thread["pending"][0]["raw"], json!({ "len": 128 }));
        assert_eq!(thread["regs"]["rip"], 0x7f00_dead_beef_u64);
        assert_eq!(p["mm"]["vmas"][1]["kind"], "heap");
        // auxv and other repeated numbers are not bytes and stay as they are.
        assert!(p["mm"]["auxv"].is_array());
        let files = v["files"].as_array().unwrap();
        assert_eq!(files.len(), 4);
        assert_eq!(files[1]["kind"]["Pipe"]["data"], json!({ "len": 6000 }));
        assert_eq!(files[0]["kind"]["Regular"]["path"], "/tmp/demo/log");
    }

    #[test]
    fn short_bytes_get_hex() {
        let mut v = json!({ "data": [1, 2, 255], "auxv": [1, 2, 3] });
        summarise_bytes(&mut v);
        assert_eq!(
            v,
            json!({ "data": { "len": 3, "hex": "0102ff" }, "auxv": [1, 2, 3] })
        );
    }

    #[test]
    fn missing_dir_is_named() {
        let tmp = TempDir::new();
        let missing = tmp.0.join("nope");
        let err = render_text(&missing).unwrap_err().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }

    #[test]
    fn missing_file_is_named() {
        let tmp = TempDir::new();
        let dir = sample(&tmp.0);
        std::fs::remove_file(dir.join(names::mm(Pid::from_raw(PID)))).unwrap();
        let err = to_json(&dir).unwrap_err().to_string();
        assert!(err.contains(&format!("mm-{PID}.img")), "{err}");
    }

    #[test]
    fn damaged_file_is_refused() {
        let tmp = TempDir::new();
        let dir = sample(&tmp.0);
        let path = dir.join(names::PSTREE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let err = render_text(&dir).unwrap_err().to_string();
        assert!(
            err.contains("pstree.img") && err.contains("checksum"),
            "{err}"
        );
    }

    #[test]
    fn flags_and_kinds_read_well() {
        assert_eq!(open_flags(0), "O_RDONLY");
        assert_eq!(
            open_flags((libc::O_RDWR | libc::O_CLOEXEC | 0o40000000) as u32),
            "O_RDWR|O_CLOEXEC|0o40000000"
        );
        assert_eq!(vma_kind_name(VmaKind::VvarVclock as i32), "vvar-vclock");
        assert_eq!(vma_kind_name(99), "kind-99");
        assert_eq!(human_bytes(5 * PAGE_SIZE), "20.0 KiB");
    }
}
