//! `cryo show`: an image directory as readable text or JSON.
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
//! The JSON is the records as they are, inside
//! `{"format_version", "dir", "inventory", "processes": [{"pstree", "core", "mm"}], "files"}`,
//! with two readability changes: bytes fields (`xstate`, `raw`, `data`) become
//! `{"len": N}` (plus `"hex"` when at most 64 bytes), and a VMA's `kind` is its name
//! (`"anon"`, `"file-private"`, ...) rather than its number.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read as _;
use std::path::Path;

use cryo_proto::image::{
    FileDesc, Inventory, MmCore, ProcessEntry, TaskCore, ThreadCore, Vma, VmaKind,
};
use cryo_proto::{ImageError, ImageKind};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::error::Result;
use crate::image::{names, ImageDir};
pub(crate) use crate::proc::join;

/// The page size of the images (x86_64).
const PAGE_SIZE: u64 = 4096;

/// O_LARGEFILE as fdinfo shows it (libc says 0 on x86_64, where it is implied).
const LARGEFILE: i32 = 0o100000;

/// Bytes fields of the schema, summarised in JSON.
const BYTES_FIELDS: &[&str] = &["xstate", "raw", "data"];

/// Bytes fields at most this long also get their contents, in hex, in JSON.
const HEX_LIMIT: usize = 64;

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
        Ok(Self {
            major,
            minor,
            inventory,
            processes,
            files,
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

/// The image directory `dir` as readable text (see the module docs for the layout).
pub fn render_text(dir: &Path) -> Result<String> {
    let img = Loaded::read(dir)?;
    let inv = &img.inventory;
    let mut out = String::new();
    let _ = writeln!(out, "image directory {}", dir.display());
    let _ = writeln!(
        out,
        "format {}.{}  checkpoint {}  created {} (unix ms)",
        img.major, img.minor, inv.checkpoint_id, inv.created_unix_ms
    );
    let mut options = Vec::new();
    if inv.shell_job {
        options.push("shell-job");
    }
    if inv.tcp_established {
        options.push("tcp-established");
    }
    if inv.leave_running {
        options.push("leave-running");
    }
    let lock = format!("network-lock={}", inv.network_lock);
    if !inv.network_lock.is_empty() {
        options.push(&lock);
    }
    let _ = writeln!(
        out,
        "kernel {}  cryo {}  roots {}  options: {}",
        inv.kernel_release,
        inv.cryo_version,
        join(&inv.root_pids),
        if options.is_empty() {
            "none".to_string()
        } else {
            options.join(" ")
        }
    );
    let _ = writeln!(
        out,
        "vdso {} bytes, crc32c {:#010x}",
        inv.vdso_size, inv.vdso_crc32c
    );
    let _ = writeln!(
        out,
        "{}, {}",
        plural(img.processes.len(), "process", "processes"),
        plural(
            img.files.len(),
            "open file description",
            "open file descriptions"
        )
    );
    for p in &img.processes {
        out.push('\n');
        render_process(&mut out, &img, p);
    }
    Ok(out)
}

fn render_process(out: &mut String, img: &Loaded, p: &Process) {
    let (e, core, mm) = (&p.entry, &p.core, &p.mm);
    if e.zombie {
        let _ = writeln!(
            out,
            "process {} (zombie, wait status {:#x})  ppid {}  pgid {}  sid {}",
            e.pid, e.exit_status, e.ppid, e.pgid, e.sid
        );
        return;
    }
    let _ = writeln!(
        out,
        "process {} ({})  ppid {}  pgid {}  sid {}",
        e.pid, core.comm, e.ppid, e.pgid, e.sid
    );
    let mut line = format!(
        "  cwd {}  root {}  umask {:03o}",
        core.cwd, core.root, core.umask
    );
    if let Some(c) = &core.creds {
        let _ = write!(line, "  uid {}  gid {}", c.uid, c.gid);
        if c.euid != c.uid || c.egid != c.gid {
            let _ = write!(line, " (euid {} egid {})", c.euid, c.egid);
        }
    }
    let _ = writeln!(out, "{line}");
    if let Some(exe) = (mm.exe_file_id != 0).then(|| file_name(img, mm.exe_file_id)) {
        let _ = writeln!(out, "  exe {exe}");
    }
    let handlers: Vec<u32> = core
        .sigactions
        .iter()
        .filter(|a| a.handler != 0)
        .map(|a| a.signo)
        .collect();
    let _ = writeln!(
        out,
        "  signals: handlers for [{}], {} shared pending; {} rlimits",
        join(&handlers),
        core.shared_pending.len(),
        core.rlimits.len()
    );
    if core.threads.is_empty() {
        let _ = writeln!(out, "  no threads");
    }
    for t in &core.threads {
        render_thread(out, t);
    }
    for fd in &core.fds {
        let what = match img.file(fd.file_id) {
            Some(f) => describe_file(f),
            None => "(missing from files.img)".to_string(),
        };
        let cloexec = if fd.cloexec { "  cloexec" } else { "" };
        let _ = writeln!(
            out,
            "  fd {} -> {what}{cloexec}  [file {}]",
            fd.fd, fd.file_id
        );
    }
    for v in &mm.vmas {
        let _ = writeln!(out, "  vma {}", describe_vma(img, v));
    }
    let pages: u64 = mm.pages.iter().map(|r| r.npages).sum();
    let file = mm
        .pages_file
        .as_ref()
        .map(|r| format!("  {} ({} bytes)", r.name, r.size))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  pages {pages} ({}) in {} runs over {} vmas{file}",
        human_bytes(pages * PAGE_SIZE),
        mm.pages.len(),
        mm.vmas.len()
    );
    let _ = writeln!(
        out,
        "  brk {:#x}-{:#x}  stack {:#x}  args {:#x}-{:#x}  env {:#x}-{:#x}  auxv {} words",
        mm.start_brk,
        mm.brk,
        mm.start_stack,
        mm.arg_start,
        mm.arg_end,
        mm.env_start,
        mm.env_end,
        mm.auxv.len()
    );
}

fn render_thread(out: &mut String, t: &ThreadCore) {
    let regs = match &t.regs {
        Some(r) => format!(
            "rip {:#018x}  rsp {:#018x}  orig_rax {}",
            r.rip, r.rsp, r.orig_rax as i64
        ),
        None => "no registers".to_string(),
    };
    let _ = writeln!(
        out,
        "  thread {} ({})  {regs}  xstate {} bytes  blocked {:#x}  {} pending",
        t.tid,
        t.comm,
        t.xstate.len(),
        t.blocked,
        t.pending.len()
    );
}

/// What an open file description is, as its kind shows it, with its flags.
fn describe_file(f: &FileDesc) -> String {
    crate::files::show_line(f, &open_flags(f.flags))
}

/// The path of file `id`, for exe and file mappings.
fn file_name(img: &Loaded, id: u32) -> String {
    match img.file(id) {
        Some(f) => crate::files::name(f),
        None => format!("file {id} (missing from files.img)"),
    }
}

/// `start-end prot kind name`, with the size.
fn describe_vma(img: &Loaded, v: &Vma) -> String {
    let prot = [
        (libc::PROT_READ, 'r'),
        (libc::PROT_WRITE, 'w'),
        (libc::PROT_EXEC, 'x'),
    ]
    .iter()
    .map(|&(bit, c)| if v.prot & bit as u32 != 0 { c } else { '-' })
    .chain(std::iter::once(
        if v.map_flags & libc::MAP_SHARED as u32 != 0 {
            's'
        } else {
            'p'
        },
    ))
    .collect::<String>();
    let name = if !v.name.is_empty() {
        v.name.clone()
    } else if v.file_id != 0 {
        file_name(img, v.file_id)
    } else {
        String::new()
    };
    let mut s = format!(
        "{:016x}-{:016x} {prot} {:<12} {:>9}",
        v.start,
        v.end,
        vma_kind_name(v.kind),
        human_bytes(v.end.saturating_sub(v.start)),
    );
    if v.pgoff != 0 {
        let _ = write!(s, " @{:#x}", v.pgoff);
    }
    if !name.is_empty() {
        let _ = write!(s, " {name}");
    }
    s.trim_end().to_string()
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

/// open(2) flags as `O_RDONLY|O_APPEND|...`, unknown bits in octal.
fn open_flags(flags: u32) -> String {
    let flags = flags as i32;
    let mut parts = vec![match flags & libc::O_ACCMODE {
        libc::O_RDONLY => "O_RDONLY",
        libc::O_WRONLY => "O_WRONLY",
        libc::O_RDWR => "O_RDWR",
        _ => "O_ACCMODE",
    }
    .to_string()];
    let mut rest = flags & !libc::O_ACCMODE;
    for (bit, name) in [
        (libc::O_PATH, "O_PATH"),
        (libc::O_SYNC, "O_SYNC"),
        (libc::O_DSYNC, "O_DSYNC"),
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_NONBLOCK, "O_NONBLOCK"),
        (libc::O_DIRECT, "O_DIRECT"),
        (LARGEFILE, "O_LARGEFILE"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
        (libc::O_NOFOLLOW, "O_NOFOLLOW"),
        (libc::O_NOATIME, "O_NOATIME"),
        (libc::O_CLOEXEC, "O_CLOEXEC"),
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_NOCTTY, "O_NOCTTY"),
        (libc::O_TRUNC, "O_TRUNC"),
        (libc::O_ASYNC, "O_ASYNC"),
    ] {
        if bit != 0 && rest & bit == bit {
            parts.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        parts.push(format!("{rest:#o}"));
    }
    parts.join("|")
}

/// `1 process`, `2 processes`.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `123 B`, `4.0 KiB`, `1.5 MiB`, `2.00 GiB`.
fn human_bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let f = n as f64;
    if n < 1024 {
        format!("{n} B")
    } else if f < KIB * KIB {
        format!("{:.1} KiB", f / KIB)
    } else if f < KIB * KIB * KIB {
        format!("{:.1} MiB", f / (KIB * KIB))
    } else {
        format!("{:.2} GiB", f / (KIB * KIB * KIB))
    }
}

/// The image directory `dir` as one JSON object (see the module docs for its shape).
pub fn to_json(dir: &Path) -> Result<Value> {
    let img = Loaded::read(dir)?;
    let processes: Vec<Value> = img
        .processes
        .iter()
        .map(|p| {
            let mut mm = to_value(&p.mm);
            if let Some(vmas) = mm.get_mut("vmas").and_then(Value::as_array_mut) {
                for vma in vmas {
                    if let Some(kind) = vma.get_mut("kind") {
                        let name = kind.as_i64().map(|k| vma_kind_name(k as i32));
                        if let Some(name) = name {
                            *kind = Value::String(name);
                        }
                    }
                }
            }
            json!({
                "pstree": to_value(&p.entry),
                "core": to_value(&p.core),
                "mm": mm,
            })
        })
        .collect();
    let mut value = json!({
        "format_version": format!("{}.{}", img.major, img.minor),
        "dir": dir.display().to_string(),
        "inventory": to_value(&img.inventory),
        "processes": processes,
        "files": img.files.iter().map(to_value).collect::<Vec<_>>(),
    });
    summarise_bytes(&mut value);
    Ok(value)
}

/// A record as JSON. The schema types hold only numbers, strings, bools, vectors and
/// options, which always serialize.
fn to_value<T: serde::Serialize>(record: &T) -> Value {
    serde_json::to_value(record).unwrap_or_else(|e| json!({ "error": e.to_string() }))
}

/// Replaces every bytes field (an array of numbers under a key in [`BYTES_FIELDS`]) with
/// `{"len": N}`, plus `"hex"` when it is short.
fn summarise_bytes(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let bytes = BYTES_FIELDS.contains(&key.as_str())
                    && v.as_array()
                        .is_some_and(|a| a.iter().all(|x| x.as_u64().is_some_and(|b| b < 256)));
                if bytes {
                    let data: Vec<u8> = v
                        .as_array()
                        .map(|a| a.iter().filter_map(|x| x.as_u64()).map(|b| b as u8))
                        .into_iter()
                        .flatten()
                        .collect();
                    let mut summary = json!({ "len": data.len() });
                    if data.len() <= HEX_LIMIT {
                        summary["hex"] =
                            Value::String(data.iter().fold(String::new(), |mut s, b| {
                                let _ = write!(s, "{b:02x}");
                                s
                            }));
                    }
                    *v = summary;
                } else {
                    summarise_bytes(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(summarise_bytes),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    use cryo_proto::image::{
        Creds, FdEntry, PageRun, Pipe, RawFileRef, RegularFile, SigInfo, X86Regs,
    };

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
                kind: Some(file_desc::Kind::Pipe(Pipe {
                    ino: 987_654,
                    capacity: 65536,
                    data: vec![b'x'; 6000],
                    fifo_path: String::new(),
                })),
            },
            FileDesc {
                id: 3,
                flags: libc::O_RDWR as u32,
                pos: 0,
                kind: Some(file_desc::Kind::CharDevice("/dev/null".into())),
            },
            FileDesc {
                id: 4,
                flags: libc::O_RDONLY as u32,
                pos: 0,
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
