//! The files module against real processes (run as root).
//!
//! A python3 child sets up its fds (a file at an offset with O_APPEND, a dup'ed fd, a deleted
//! file also mapped, pipes with unread data, a FIFO, /dev/null, a directory) and waits on its
//! stdin. The test dumps it with `FileTable`, checks the records, checks the child's pipe data
//! was not consumed, then restores the fds in a fresh process: this test binary re-executed
//! with `CRYO_FILES_HELPER` set runs only `restore_helper`, which calls `restore_task_fds`,
//! inspects itself through /proc/self and writes a report the test reads.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use cryo_core::files::{self, FdDumpOptions, FileError, FileTable};
use cryo_core::image::{names, ImageDir};
use cryo_proto::image::{file_desc::Kind, FdEntry, FileDesc, RawFileRef, RegularFile, TaskCore};
use cryo_proto::ImageKind;
use nix::fcntl::{FcntlArg, OFlag};
use nix::unistd::Pid;

const HELPER_ENV: &str = "CRYO_FILES_HELPER";
const ORDER_ENV: &str = "CRYO_FILES_MAP_FIRST";
const MAPPED_ENV: &str = "CRYO_FILES_MAPPED_ID";

/// Sets up the fds of the dumped child; argv[1] is its directory.
const SETUP: &str = r#"
import os, sys, mmap, fcntl
os.closerange(3, 65536)
d = sys.argv[1]
def place(fd, n, inheritable=True):
    os.dup2(fd, n, inheritable=inheritable)
    os.close(fd)
p = os.path.join(d, "append.txt")
with open(p, "w") as f: f.write("0123456789")
fd = os.open(p, os.O_WRONLY | os.O_APPEND)
os.lseek(fd, 3, os.SEEK_SET)
place(fd, 10)
p = os.path.join(d, "read.txt")
with open(p, "w") as f: f.write("abcdefghijklmnopqrstuvwxyz")
fd = os.open(p, os.O_RDONLY)
place(fd, 11, inheritable=False)
os.lseek(11, 5, os.SEEK_SET)
os.dup2(11, 12)
p = os.path.join(d, "deleted.bin")
data = bytes(range(256)) * 64
with open(p, "wb") as f: f.write(data)
fd = os.open(p, os.O_RDWR)
place(fd, 13)
os.lseek(13, 7, os.SEEK_SET)
m = mmap.mmap(13, len(data), mmap.MAP_SHARED, mmap.PROT_READ)
os.unlink(p)
r, w = os.pipe()
fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 131072)
os.write(w, b"both ends " + b"x" * 100000)
place(r, 14)
place(w, 15)
r, w = os.pipe()
os.write(w, b"read end only")
os.close(w)
os.set_blocking(r, False)
place(r, 16)
r, w = os.pipe()
os.write(w, b"write end only")
place(w, 17)
os.close(r)
f = os.path.join(d, "fifo")
os.mkfifo(f)
fd = os.open(f, os.O_RDWR)
os.write(fd, b"fifo data\n")
place(fd, 18)
place(os.open("/dev/null", os.O_RDWR), 19)
place(os.open(d, os.O_RDONLY | os.O_DIRECTORY), 20)
place(os.open(os.path.join(d, "append.txt"), os.O_PATH), 21)
place(os.open(os.path.join(d, "read.txt"), os.O_RDONLY), 22)
os.lseek(22, 9, os.SEEK_SET)
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "drain":
        got = []
        for fd in (14, 16, 18):
            os.set_blocking(fd, False)
            try:
                got.append(os.read(fd, 1 << 20))
            except BlockingIOError:
                got.append(b"")
        print(" ".join("%d:%d:%s" % (len(g), sum(g) % 65536, g[:10].hex()) for g in got), flush=True)
"#;

/// A python3 child running `script` with `dir` as argv[1], ready when this returns.
struct Py {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Py {
    fn spawn(script: &str, dir: &Path) -> Self {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn python3");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read ready");
        assert_eq!(line.trim(), "ready", "python setup failed");
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("write command");
        let mut reply = String::new();
        self.stdout.read_line(&mut reply).expect("read reply");
        reply.trim().to_string()
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cryo-files-")
        .tempdir()
        .expect("temp dir")
}

/// `len:sum%65536:hex of the first 10 bytes`, as the python child reports data.
fn summary(data: &[u8]) -> String {
    let sum: u64 = data.iter().map(|&b| u64::from(b)).sum();
    let head: String = data.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("{}:{}:{head}", data.len(), sum % 65536)
}

fn desc_of<'a>(descs: &'a [FileDesc], fds: &[FdEntry], fd: RawFd) -> &'a FileDesc {
    let e = fds.iter().find(|e| e.fd == fd).expect("fd dumped");
    descs.iter().find(|d| d.id == e.file_id).expect("desc")
}

fn entry(fds: &[FdEntry], fd: RawFd) -> &FdEntry {
    fds.iter().find(|e| e.fd == fd).expect("fd dumped")
}

fn regular(desc: &FileDesc) -> &RegularFile {
    match &desc.kind {
        Some(Kind::Regular(r)) => r,
        other => panic!("not a regular file: {other:?}"),
    }
}

fn pipe(desc: &FileDesc) -> &cryo_proto::image::Pipe {
    match &desc.kind {
        Some(Kind::Pipe(p)) => p,
        other => panic!("not a pipe: {other:?}"),
    }
}

const ACC: u32 = libc::O_ACCMODE as u32;

/// The start-end of the mapping of `name (deleted)` in /proc/PID/maps.
fn map_files_link(pid: Pid, name: &str) -> PathBuf {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let line = maps
        .lines()
        .find(|l| l.contains(name))
        .unwrap_or_else(|| panic!("{name} not mapped: {maps}"));
    let range = line.split_whitespace().next().expect("range");
    PathBuf::from(format!("/proc/{pid}/map_files/{range}"))
}

#[test]
fn fds_are_dumped_once_per_description_and_restored_at_their_numbers() {
    let dir = tempdir();
    let work = dir.path().join("work");
    fs::create_dir(&work).unwrap();
    let images = ImageDir::create(&dir.path().join("img")).expect("image dir");
    let mut py = Py::spawn(SETUP, &work);
    let pid = py.pid();

    let mut table = FileTable::new();
    let fds = table
        .dump_task_fds(pid, &images, &FdDumpOptions::default())
        .expect("dump");
    let mapped = map_files_link(pid, "deleted.bin");
    let mapped_id = table
        .add_mapped_file(pid, &mapped, &images)
        .expect("mapped");
    assert_eq!(
        table.add_mapped_file(pid, &mapped, &images).unwrap(),
        mapped_id,
        "one id per mapped file"
    );
    let exe_id = table
        .add_mapped_file(pid, &PathBuf::from(format!("/proc/{pid}/exe")), &images)
        .expect("exe");
    let descs = table.into_descs();

    // The records.
    let numbers: Vec<RawFd> = fds.iter().map(|e| e.fd).collect();
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    assert_eq!(numbers, sorted, "sorted by fd");
    for n in [0, 1, 2, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22] {
        assert!(numbers.contains(&n), "fd {n} missing from {numbers:?}");
    }
    let append = desc_of(&descs, &fds, 10);
    assert!(regular(append).path.ends_with("/work/append.txt"));
    assert_eq!(append.flags & ACC, libc::O_WRONLY as u32);
    assert_ne!(append.flags & libc::O_APPEND as u32, 0);
    assert_eq!(append.pos, 3);
    assert!(!entry(&fds, 10).cloexec);

    assert_eq!(entry(&fds, 11).file_id, entry(&fds, 12).file_id, "dup");
    assert!(entry(&fds, 11).cloexec);
    assert!(!entry(&fds, 12).cloexec);
    assert_eq!(desc_of(&descs, &fds, 11).pos, 5);
    assert_ne!(
        entry(&fds, 11).file_id,
        entry(&fds, 22).file_id,
        "same file opened twice: two descriptions"
    );
    assert_eq!(desc_of(&descs, &fds, 22).pos, 9);
    let o_path = desc_of(&descs, &fds, 21);
    assert_ne!(o_path.flags & libc::O_PATH as u32, 0);
    assert!(regular(o_path).path.ends_with("/work/append.txt"));

    let deleted = desc_of(&descs, &fds, 13);
    let reg = regular(deleted);
    assert!(reg.deleted);
    assert!(reg.path.ends_with("/work/deleted.bin"), "{}", reg.path);
    assert_eq!(reg.size, 16384);
    assert_eq!(deleted.pos, 7);
    let ghost = reg.contents.clone().expect("contents");
    assert_eq!(fs::metadata(images.file(&ghost.name)).unwrap().len(), 16384);
    // python's mmap object keeps its own dup of fd 13: the same description.
    let same_inode: Vec<&FdEntry> = fds
        .iter()
        .filter(|e| {
            let d = descs.iter().find(|d| d.id == e.file_id).unwrap();
            matches!(&d.kind, Some(Kind::Regular(r)) if r.ino == reg.ino)
        })
        .collect();
    assert!(
        same_inode.iter().all(|e| e.file_id == deleted.id),
        "{same_inode:?}"
    );
    let mapped_desc = descs.iter().find(|d| d.id == mapped_id).unwrap();
    assert_ne!(
        mapped_id, deleted.id,
        "a mapping is a description of its own"
    );
    assert_eq!(mapped_desc.flags, libc::O_RDONLY as u32);
    assert_eq!(
        regular(mapped_desc).contents.as_ref(),
        Some(&ghost),
        "fd and mapping share one ghost image"
    );
    assert!(!regular(descs.iter().find(|d| d.id == exe_id).unwrap()).deleted);

    let (rd, wr) = (desc_of(&descs, &fds, 14), desc_of(&descs, &fds, 15));
    assert_ne!(rd.id, wr.id, "each end is a description");
    assert_eq!(pipe(rd).ino, pipe(wr).ino);
    assert_eq!(rd.flags & ACC, libc::O_RDONLY as u32);
    assert_eq!(wr.flags & ACC, libc::O_WRONLY as u32);
    assert_eq!(pipe(rd).capacity, 131072);
    let both: Vec<u8> = [&pipe(rd).data[..], &pipe(wr).data[..]].concat();
    assert_eq!(both.len(), 100_010, "data stored once");
    assert!(both.starts_with(b"both ends x"));
    let ro = desc_of(&descs, &fds, 16);
    assert_eq!(pipe(ro).data, b"read end only");
    assert_ne!(ro.flags & libc::O_NONBLOCK as u32, 0);
    assert_eq!(pipe(desc_of(&descs, &fds, 17)).data, b"write end only");
    let fifo = desc_of(&descs, &fds, 18);
    assert!(pipe(fifo).fifo_path.ends_with("/work/fifo"));
    assert_eq!(pipe(fifo).data, b"fifo data\n");
    assert_eq!(fifo.flags & ACC, libc::O_RDWR as u32);
    assert_eq!(
        desc_of(&descs, &fds, 19).kind,
        Some(Kind::CharDevice("/dev/null".into()))
    );
    assert!(matches!(
        &desc_of(&descs, &fds, 20).kind,
        Some(Kind::Directory(d)) if Path::new(&d.path) == work
    ));

    // The dump consumed nothing.
    let want = [
        summary(&[&b"both ends "[..], &[b'x'; 100_000][..]].concat()),
        summary(b"read end only"),
        summary(b"fifo data\n"),
    ]
    .join(" ");
    assert_eq!(py.cmd("drain"), want);
    let mut only_write = fs::File::open(format!("/proc/{pid}/fd/17")).unwrap();
    nix::fcntl::fcntl(&only_write, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
    let mut buf = [0u8; 64];
    let n = only_write.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"write end only");
    drop(py);

    // Restore, in a fresh process, in both orders of fds and mappings.
    images
        .write(names::FILES, ImageKind::Files, &descs)
        .expect("write files.img");
    let core = TaskCore {
        pid: pid.as_raw(),
        fds: fds.clone(),
        ..Default::default()
    };
    images
        .write(&names::core(pid), ImageKind::Core, &[core])
        .expect("write core");
    for map_first in [false, true] {
        let report = run_helper(images.path(), pid, mapped_id, map_first);
        assert_eq!(report, "ok", "restore (mapping first: {map_first})");
        assert!(
            !work.join("deleted.bin").exists(),
            "the recreated deleted file was left behind"
        );
    }
}

/// Runs `restore_helper` in a fresh process of this binary; returns its report.
fn run_helper(images: &Path, pid: Pid, mapped_id: u32, map_first: bool) -> String {
    let report = images.join("report.txt");
    let _ = fs::remove_file(&report);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "restore_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, images)
        .env("CRYO_FILES_PID", pid.to_string())
        .env(MAPPED_ENV, mapped_id.to_string())
        .env(ORDER_ENV, if map_first { "1" } else { "0" })
        .stdin(Stdio::null())
        .output()
        .expect("run helper");
    fs::read_to_string(&report).unwrap_or_else(|e| {
        format!(
            "no report ({e}); status {}; stdout {}; stderr {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The restore side; does nothing unless run by `run_helper`.
#[test]
fn restore_helper() {
    let Ok(images) = std::env::var(HELPER_ENV) else {
        return;
    };
    let images = PathBuf::from(images);
    let result = restore_and_check(&images);
    let text = match result {
        Ok(()) => "ok".to_string(),
        Err(e) => e,
    };
    // fds 0-2 are the restored task's now: the report goes to a file, and the process ends
    // here, before the harness writes anything.
    fs::write(images.join("report.txt"), text).expect("write report");
    std::process::exit(0);
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// `flags` and `pos` of /proc/self/fdinfo/N.
fn fdinfo(fd: RawFd) -> Result<(u32, u64), String> {
    let text = fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).map_err(|e| e.to_string())?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
            .ok_or(format!("fdinfo {fd}: no {key}"))
    };
    let flags = u32::from_str_radix(&field("flags:")?, 8).map_err(|e| e.to_string())?;
    let pos = field("pos:")?
        .parse()
        .map_err(|e: std::num::ParseIntError| e.to_string())?;
    Ok((flags, pos))
}

fn link(fd: RawFd) -> String {
    fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("<{e}>"))
}

/// Everything queued in pipe fd `fd`, read through a new read-only open of it (which also
/// works for a write end).
fn drain(fd: RawFd) -> Result<Vec<u8>, String> {
    let path = format!("/proc/self/fd/{fd}");
    let file = fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    nix::fcntl::fcntl(&file, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match nix::unistd::read(&file, &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EAGAIN) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read fd {fd}: {e}")),
        }
    }
}

fn restore_and_check(images_path: &Path) -> Result<(), String> {
    // Never dropped: restoring the fds closes the directory's fd (or puts a restored fd at
    // its number), which is the restored table's to close now, not this ImageDir's.
    let images =
        std::mem::ManuallyDrop::new(ImageDir::open(images_path).map_err(|e| e.to_string())?);
    let pid: i32 = std::env::var("CRYO_FILES_PID").unwrap().parse().unwrap();
    let mapped_id: u32 = std::env::var(MAPPED_ENV).unwrap().parse().unwrap();
    let map_first = std::env::var(ORDER_ENV).as_deref() == Ok("1");
    let descs: Vec<FileDesc> = images
        .read(names::FILES, ImageKind::Files)
        .map_err(|e| e.to_string())?;
    let core: TaskCore = images
        .read_single(&names::core(Pid::from_raw(pid)), ImageKind::Core)
        .map_err(|e| e.to_string())?;
    let fds = core.fds;
    files::validate(&descs, &[&fds], &images).map_err(|e| format!("validate: {e}"))?;
    let max_fd = fds.iter().map(|e| e.fd).max().unwrap_or(0);

    let mut keep: Vec<OwnedFd> = Vec::new();
    if map_first {
        let fd = files::open_for_mapping(&descs, mapped_id, false, &images)
            .map_err(|e| format!("open_for_mapping first: {e}"))?;
        keep.push(high(fd, max_fd + 100)?);
    }
    let keep_raw: Vec<RawFd> = keep.iter().map(|f| f.as_raw_fd()).collect();
    files::restore_task_fds(&descs, &fds, &images, &keep_raw)
        .map_err(|e| format!("restore_task_fds: {e}"))?;
    if !map_first {
        let fd = files::open_for_mapping(&descs, mapped_id, false, &images)
            .map_err(|e| format!("open_for_mapping after: {e}"))?;
        keep.push(fd);
    }

    // Exactly the dumped fds and the kept ones are open.
    let listing = fs::read_dir("/proc/self/fd").map_err(|e| e.to_string())?;
    let listed: Vec<RawFd> = listing
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    // The listing's own fd is closed by now.
    let mut open: Vec<RawFd> = listed
        .into_iter()
        .filter(|fd| fs::read_link(format!("/proc/self/fd/{fd}")).is_ok())
        .collect();
    open.sort_unstable();
    let mut want: Vec<RawFd> = fds
        .iter()
        .map(|e| e.fd)
        .chain(keep_raw.iter().copied())
        .collect();
    if !map_first {
        want.push(keep[0].as_raw_fd());
    }
    want.sort_unstable();
    ensure!(open == want, "open fds {open:?}, want {want:?}");

    // Flags, offsets, close-on-exec.
    for e in &fds {
        let desc = descs.iter().find(|d| d.id == e.file_id).unwrap();
        let (flags, pos) = fdinfo(e.fd)?;
        let cloexec = flags & libc::O_CLOEXEC as u32 != 0;
        ensure!(
            cloexec == e.cloexec,
            "fd {}: cloexec {cloexec}, want {}",
            e.fd,
            e.cloexec
        );
        let mask = (libc::O_ACCMODE
            | libc::O_APPEND
            | libc::O_NONBLOCK
            | libc::O_DIRECTORY
            | libc::O_PATH) as u32;
        ensure!(
            flags & mask == desc.flags & mask,
            "fd {} ({}): flags {:o}, want {:o}",
            e.fd,
            link(e.fd),
            flags,
            desc.flags
        );
        if !matches!(desc.kind, Some(Kind::Pipe(_))) {
            ensure!(pos == desc.pos, "fd {}: pos {pos}, want {}", e.fd, desc.pos);
        }
    }
    let fds_by_number: BTreeMap<RawFd, &FdEntry> = fds.iter().map(|e| (e.fd, e)).collect();
    ensure!(
        files::same_description(Pid::this(), 11, Pid::this(), 12).map_err(|e| e.to_string())?,
        "fds 11 and 12 are no longer one description"
    );
    ensure!(
        !files::same_description(Pid::this(), 11, Pid::this(), 22).map_err(|e| e.to_string())?,
        "fds 11 and 22 became one description"
    );
    ensure!(
        !files::same_description(Pid::this(), 14, Pid::this(), 15).map_err(|e| e.to_string())?,
        "pipe ends 14 and 15 became one description"
    );
    ensure!(
        link(10).ends_with("/work/append.txt"),
        "fd 10 is {}",
        link(10)
    );
    ensure!(link(19) == "/dev/null", "fd 19 is {}", link(19));
    ensure!(link(20).ends_with("/work"), "fd 20 is {}", link(20));
    ensure!(
        link(14) == link(15),
        "14 and 15 are not one pipe: {} {}",
        link(14),
        link(15)
    );

    // The deleted file: recreated once, deleted again, contents and offset back.
    let l13 = link(13);
    ensure!(
        l13.ends_with("/work/deleted.bin (deleted)"),
        "fd 13 is {l13}"
    );
    let f13 = fs::metadata("/proc/self/fd/13").map_err(|e| e.to_string())?;
    ensure!(f13.nlink() == 0, "the recreated file still has links");
    let map_fd = keep.last().unwrap();
    let fm =
        fs::metadata(format!("/proc/self/fd/{}", map_fd.as_raw_fd())).map_err(|e| e.to_string())?;
    ensure!(
        (fm.dev(), fm.ino()) == (f13.dev(), f13.ino()),
        "the mapping and fd 13 are not one recreated file"
    );
    let mut contents = Vec::new();
    fs::File::open("/proc/self/fd/13")
        .and_then(|mut f| f.read_to_end(&mut contents))
        .map_err(|e| e.to_string())?;
    let want: Vec<u8> = (0..64).flat_map(|_| 0u8..=255).collect();
    ensure!(contents == want, "contents of the deleted file differ");
    ensure!(f13.mode() & 0o7777 == 0o644, "mode {:o}", f13.mode());

    // Pipes: capacity and data back.
    let cap = nix::fcntl::fcntl(
        fs::File::open("/proc/self/fd/14")
            .map_err(|e| e.to_string())?
            .as_fd(),
        FcntlArg::F_GETPIPE_SZ,
    )
    .map_err(|e| e.to_string())?;
    ensure!(cap == 131072, "pipe capacity {cap}");
    let data14 = drain(14)?;
    ensure!(
        data14.len() == 100_010 && data14.starts_with(b"both ends x"),
        "pipe 14 holds {} bytes",
        data14.len()
    );
    ensure!(drain(16)? == b"read end only", "pipe 16");
    ensure!(drain(17)? == b"write end only", "pipe 17");
    ensure!(drain(18)? == b"fifo data\n", "fifo 18");
    // The write end of 16's pipe was not held: the reader sees EOF.
    let (flags16, _) = fdinfo(16)?;
    ensure!(
        flags16 & libc::O_NONBLOCK as u32 != 0,
        "fd 16 lost O_NONBLOCK"
    );
    ensure!(fds_by_number.contains_key(&18), "fifo fd");
    Ok(())
}

/// `fd` moved to `min` or above.
fn high(fd: OwnedFd, min: RawFd) -> Result<OwnedFd, String> {
    let raw = nix::fcntl::fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(min)).map_err(|e| e.to_string())?;
    // SAFETY: F_DUPFD_CLOEXEC just returned `raw` as a new fd of this process, owned by no one.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

// ---- refusals -------------------------------------------------------------

/// Dumps a python child that put `setup`'s fd at 50; returns the error.
fn refused(setup: &str, opts: &FdDumpOptions) -> (Pid, Result<Vec<FdEntry>, FileError>) {
    let dir = tempdir();
    let script = format!(
        "import os, sys, socket\nos.closerange(3, 65536)\n{setup}\nprint('ready', flush=True)\nsys.stdin.read()\n"
    );
    let py = Py::spawn(&script, dir.path());
    let images = ImageDir::create(&dir.path().join("img")).unwrap();
    let result = FileTable::new().dump_task_fds(py.pid(), &images, opts);
    (py.pid(), result)
}

fn assert_refused(setup: &str, words: &[&str]) {
    let (pid, result) = refused(setup, &FdDumpOptions::default());
    let err = result.expect_err("the dump should be refused").to_string();
    assert!(err.contains(&format!("pid {pid} ")), "{err}");
    assert!(err.contains(" fd 50:"), "{err}");
    for w in words {
        assert!(err.contains(w), "{err:?} should mention {w:?}");
    }
}

#[test]
fn a_socket_is_refused_naming_pid_fd_and_kind() {
    assert_refused(
        "s = socket.socket(); fd = s.detach(); os.dup2(fd, 50); os.close(fd)",
        &["socket", "not supported yet", "socket:["],
    );
}

#[test]
fn an_epoll_target_closed_since_registration_is_dumped_with_the_fd_that_holds_it() {
    // The eventfd registered as fd 3 lives on at fd 4 only: the epoll (fd 50) still names 3,
    // and the dump finds the file at 4 (files/epoll.rs; restored end to end in
    // tests/tests/events.rs).
    let (_, result) = refused(
        "import select\ne = os.eventfd(0); ep = select.epoll(); ep.register(e)\n\
         os.dup2(ep.fileno(), 50); ep.close(); d = os.dup(e); os.close(e)",
        &FdDumpOptions::default(),
    );
    let fds = result.expect("an epoll whose target fd was closed is dumped");
    assert!(fds.iter().any(|e| e.fd == 50) && fds.iter().any(|e| e.fd == 4));
}

#[test]
fn an_io_uring_is_refused_naming_pid_fd_and_kind() {
    // io_uring_setup(4, params) through ctypes.
    assert_refused(
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n\
         params = ctypes.create_string_buffer(120)\n\
         fd = libc.syscall(425, 4, params)\nassert fd >= 0, ctypes.get_errno()\n\
         os.dup2(fd, 50); os.close(fd)",
        &["io_uring", "anon_inode:[io_uring]"],
    );
}

#[test]
fn a_memfd_and_an_eventfd_are_dumped() {
    let (_, result) = refused(
        "fd = os.memfd_create('x'); os.write(fd, b'abc'); os.dup2(fd, 50); os.close(fd)\n\
         fd = os.eventfd(3); os.dup2(fd, 51); os.close(fd)",
        &FdDumpOptions::default(),
    );
    let fds = result.expect("memfds and eventfds are dumped");
    assert!(fds.iter().any(|e| e.fd == 50) && fds.iter().any(|e| e.fd == 51));
}

#[test]
fn pty_ends_pass_the_task_table_and_are_paired_over_the_whole_dump() {
    // A pty end is refused or kept only once every task's table is known (files::pty): the
    // per-task table dumps both a slave (its master held here, by the test) and a master.
    // The end-to-end refusals are in tests/tests/terminals.rs.
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = nix::unistd::ttyname(&pty.slave).unwrap();
    let setup = format!(
        "fd = os.open('{}', os.O_RDWR | os.O_NOCTTY); os.dup2(fd, 50); os.close(fd)",
        slave.display()
    );
    for shell_job in [false, true] {
        let (_, result) = refused(&setup, &FdDumpOptions { shell_job });
        let fds = result.expect("the table dumps the slave");
        assert!(fds.iter().any(|e| e.fd == 50));
    }
    let setup = "m, s = os.openpty(); os.dup2(m, 50); os.close(s); os.close(m)";
    let (_, result) = refused(setup, &FdDumpOptions { shell_job: true });
    let fds = result.expect("the table dumps the master");
    assert!(fds.iter().any(|e| e.fd == 50));
}

// ---- validation -------------------------------------------------------------

fn regular_desc(id: u32, path: &str, pos: u64) -> FileDesc {
    FileDesc {
        id,
        flags: libc::O_RDONLY as u32,
        pos,
        parent_mount_namespace: false,
        in_mount_namespace: false,
        rw_hint: 0,
        kind: Some(Kind::Regular(regular_record(path))),
    }
}

/// The record a dump would make of `path` (stat of the file when it exists, as restore
/// checks it is the same file).
fn regular_record(path: &str) -> RegularFile {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(path) else {
        return RegularFile {
            path: path.into(),
            size: 10,
            ..Default::default()
        };
    };
    RegularFile {
        path: path.into(),
        dev: meta.dev(),
        ino: meta.ino(),
        mode: meta.mode(),
        size: meta.size(),
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ..Default::default()
    }
}

#[test]
fn validate_names_what_is_wrong() {
    let dir = tempdir();
    let images = ImageDir::create(&dir.path().join("img")).unwrap();
    let file = dir.path().join("f");
    fs::write(&file, b"0123456789").unwrap();
    let path = file.to_str().unwrap();
    let ok = [regular_desc(1, path, 4)];
    let fds = [FdEntry {
        fd: 3,
        file_id: 1,
        cloexec: false,
    }];
    files::validate(&ok, &[&fds], &images).expect("valid");

    let gone = [regular_desc(1, "/nonexistent/cryo/file", 0)];
    let err = files::validate(&gone, &[], &images)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/cryo/file") && err.contains("gone"),
        "{err}"
    );

    fs::write(&file, b"01").unwrap();
    let err = files::validate(&ok, &[], &images).unwrap_err().to_string();
    assert!(err.contains(path) && err.contains("offset 4"), "{err}");

    let dup = [regular_desc(1, path, 0), regular_desc(1, path, 0)];
    let err = files::validate(&dup, &[], &images).unwrap_err().to_string();
    assert!(
        err.contains("file 1") && err.contains("two records"),
        "{err}"
    );

    let dangling = [FdEntry {
        fd: 7,
        file_id: 9,
        cloexec: false,
    }];
    let err = files::validate(&ok[..0], &[&dangling], &images)
        .unwrap_err()
        .to_string();
    assert!(err.contains("fd 7") && err.contains("file 9"), "{err}");

    // A damaged ghost image.
    let mut raw = images.create_raw("ghost-5.img").unwrap();
    raw.write_all(b"hello").unwrap();
    let ghost = FileDesc {
        id: 5,
        flags: libc::O_RDONLY as u32,
        pos: 0,
        parent_mount_namespace: false,
        in_mount_namespace: false,
        rw_hint: 0,
        kind: Some(Kind::Regular(RegularFile {
            path: "/tmp/gone".into(),
            size: 5,
            deleted: true,
            contents: Some(RawFileRef {
                name: "ghost-5.img".into(),
                size: 5,
                crc32c: crc32c::crc32c(b"hellO"),
            }),
            ..Default::default()
        })),
    };
    let err = files::validate(&[ghost], &[], &images)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("file 5") && err.contains("ghost-5.img"),
        "{err}"
    );
}

// ---- mappings -----------------------------------------------------------------

#[test]
fn a_deleted_file_only_mapped_is_recreated_once() {
    let dir = tempdir();
    let setup = r#"
import os, sys, mmap
os.closerange(3, 65536)
p = os.path.join(sys.argv[1], "mapped.bin")
with open(p, "wb") as f: f.write(b"mapped contents" * 100)
fd = os.open(p, os.O_RDWR)
m = mmap.mmap(fd, 1500, mmap.MAP_SHARED)
os.close(fd)
os.unlink(p)
print("ready", flush=True)
sys.stdin.read()
"#;
    let py = Py::spawn(setup, dir.path());
    let images = ImageDir::create(&dir.path().join("img")).unwrap();
    let mut table = FileTable::new();
    let link = map_files_link(py.pid(), "mapped.bin");
    let id = table
        .add_mapped_file(py.pid(), &link, &images)
        .expect("mapped");
    drop(py);
    let descs = table.into_descs();
    let reg = regular(&descs[0]);
    assert!(reg.deleted && reg.size == 1500, "{reg:?}");
    files::validate(&descs, &[], &images).expect("valid");

    let first = files::open_for_mapping(&descs, id, true, &images).expect("first open");
    let second = files::open_for_mapping(&descs, id, false, &images).expect("second open");
    let (a, b) = (
        fs::metadata(format!("/proc/self/fd/{}", first.as_raw_fd())).unwrap(),
        fs::metadata(format!("/proc/self/fd/{}", second.as_raw_fd())).unwrap(),
    );
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "recreated twice");
    assert_eq!(a.nlink(), 0, "the recreated file is deleted");
    assert_eq!(a.len(), 1500);
    assert!(!dir.path().join("mapped.bin").exists());
    let mut contents = Vec::new();
    fs::File::from(second).read_to_end(&mut contents).unwrap();
    assert_eq!(contents, b"mapped contents".repeat(100));
    let (flags, _) = fdinfo(first.as_raw_fd()).unwrap();
    assert_eq!(flags & ACC, libc::O_RDWR as u32);
}
