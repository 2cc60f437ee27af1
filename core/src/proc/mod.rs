//! What /proc tells about a task without stopping it: maps, stat, status, auxv and friends.

use std::fs;
use std::io;
use std::path::PathBuf;

use nix::unistd::Pid;

pub use task_stat::Stat;

pub(crate) mod task_stat;

/// The /proc directory of `pid`.
pub fn dir(pid: Pid) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}"))
}

/// The id of this boot (/proc/sys/kernel/random/boot_id): readings of the clocks that count
/// from boot mean nothing on another.
pub(crate) fn boot_id() -> io::Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_string())
}

/// When process `pid` started, in seconds since the epoch, rounded down (boot time from
/// /proc/stat plus its start in ticks; both are rounded, so compare with a second's margin).
pub(crate) fn started_at(pid: Pid) -> io::Result<i64> {
    let ticks = task_stat::read(pid)?.start_ticks;
    let stat = fs::read_to_string("/proc/stat")?;
    let btime: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "/proc/stat: no btime"))?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&hz| hz > 0)
        .unwrap_or(100);
    Ok(btime + (ticks / hz as u64) as i64)
}

/// Why /proc could not tell about a task.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The task is gone (its /proc directory is).
    #[error("pid {pid}: no such process")]
    Gone {
        /// The task.
        pid: Pid,
    },
    /// A file of its /proc directory could not be read.
    #[error("pid {pid}: read /proc/{pid}/{file}: {source}")]
    Read {
        /// The task.
        pid: Pid,
        /// The file under /proc/PID.
        file: String,
        /// The kernel's answer.
        source: io::Error,
    },
    /// A file of its /proc directory reads as something this cryo cannot parse.
    #[error("pid {pid}: cannot parse /proc/{pid}/{file}{}", .line.as_ref().map(|l| format!(" line {l:?}")).unwrap_or_default())]
    Parse {
        /// The task.
        pid: Pid,
        /// The file under /proc/PID.
        file: &'static str,
        /// The line at fault, where there is one.
        line: Option<String>,
    },
    /// Its working or root directory is a process's directory of /proc, which names that
    /// process (gone, or another one, by the time of a restore).
    #[error("pid {pid}: its {what} {path} is a process's directory of /proc: not supported (a restore would find another process there, or none)")]
    ProcessDirectory {
        /// The task.
        pid: Pid,
        /// "working directory" or "root directory".
        what: &'static str,
        /// The path the kernel gives.
        path: String,
    },
    /// Its working or root directory cannot be found again by a restore.
    #[error("pid {pid}: its {what} {path} was deleted: not supported yet")]
    DeletedDirectory {
        /// The task.
        pid: Pid,
        /// "working directory" or "root directory".
        what: &'static str,
        /// The path the kernel gives, without " (deleted)".
        path: String,
    },
}

/// A `Result` of reading /proc.
pub type Result<T> = std::result::Result<T, ProcError>;

/// An fd of namespace `kind` ("net", "mnt") of the calling process's ancestor `generations`
/// up, found by the parent pids /proc shows (each ancestor made before its children, and
/// running): /proc/PPID.../ns/KIND.
pub(crate) fn ancestors_namespace(generations: usize, kind: &str) -> io::Result<std::fs::File> {
    let mut pid = "self".to_string();
    for _ in 0..generations {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        pid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .map(|p| p.trim().to_string())
            .filter(|p| p != "0")
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    }
    std::fs::File::open(format!("/proc/{pid}/ns/{kind}"))
}

/// The text of `/proc/PID/NAME`.
pub(crate) fn read(pid: Pid, name: &str) -> Result<String> {
    fs::read_to_string(dir(pid).join(name)).map_err(|e| read_err(pid, name, e))
}

impl ProcError {
    /// The task is gone: its /proc directory is, or reading it answered ESRCH (it is being
    /// released).
    pub fn vanished(&self) -> bool {
        match self {
            ProcError::Gone { .. } => true,
            ProcError::Read { source, .. } => source.raw_os_error() == Some(libc::ESRCH),
            _ => false,
        }
    }
}

fn read_err(pid: Pid, name: &str, e: io::Error) -> ProcError {
    if e.kind() == io::ErrorKind::NotFound {
        ProcError::Gone { pid }
    } else {
        ProcError::Read {
            pid,
            file: name.to_string(),
            source: e,
        }
    }
}

/// One line of /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// PROT_* bits.
    pub prot: u32,
    /// Shared (`s`) rather than private (`p`).
    pub shared: bool,
    /// File offset.
    pub pgoff: u64,
    /// Device of the mapped file (major, minor).
    pub dev: (u32, u32),
    /// Inode of the mapped file, 0 for anonymous memory.
    pub ino: u64,
    /// The path or pseudo-name (`[heap]`, `[stack]`, `[vdso]`...), empty for anonymous memory.
    pub name: String,
}

impl MapEntry {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// Parses /proc/PID/maps.
pub fn maps(pid: Pid) -> Result<Vec<MapEntry>> {
    let text = read(pid, "maps")?;
    text.lines()
        .map(|line| {
            parse_map_line(line).ok_or_else(|| ProcError::Parse {
                pid,
                file: "maps",
                line: Some(line.to_string()),
            })
        })
        .collect()
}

fn parse_map_line(line: &str) -> Option<MapEntry> {
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?.as_bytes();
    let pgoff = u64::from_str_radix(fields.next()?, 16).ok()?;
    let dev = fields.next()?;
    let ino: u64 = fields.next()?.parse().ok()?;
    let name = fields.next().unwrap_or("").trim_start().to_string();
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    if perms.len() < 4 {
        return None;
    }
    let mut prot = 0;
    if perms[0] == b'r' {
        prot |= libc::PROT_READ as u32;
    }
    if perms[1] == b'w' {
        prot |= libc::PROT_WRITE as u32;
    }
    if perms[2] == b'x' {
        prot |= libc::PROT_EXEC as u32;
    }
    Some(MapEntry {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        prot,
        shared: perms[3] == b's',
        pgoff,
        dev: (
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        ),
        ino,
        name,
    })
}

/// PF_KTHREAD: a kernel thread.
pub const PF_KTHREAD: u32 = 0x0020_0000;

/// Parses /proc/PID/stat.
pub fn stat(pid: Pid) -> Result<Stat> {
    task_stat::read(pid).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => ProcError::Parse {
            pid,
            file: "stat",
            line: None,
        },
        _ => read_err(pid, "stat", e),
    })
}

/// /proc/PID/status as key/value pairs.
pub fn status(pid: Pid) -> Result<Vec<(String, String)>> {
    Ok(parse_status(&read(pid, "status")?))
}

/// /proc/PID/task/TID/status (one thread's) as key/value pairs.
pub fn thread_status(pid: Pid, tid: Pid) -> Result<Vec<(String, String)>> {
    Ok(parse_status(&read(pid, &format!("task/{tid}/status"))?))
}

fn parse_status(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// One field of a parsed status.
pub fn status_field<'a>(status: &'a [(String, String)], key: &str) -> Option<&'a str> {
    status
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A hexadecimal mask of a status line (SigPnd, ShdPnd, SigBlk, CapEff...); None if absent or
/// not one.
pub fn status_mask(status: &[(String, String)], key: &str) -> Option<u64> {
    status_field(status, key).and_then(|v| u64::from_str_radix(v, 16).ok())
}

/// The auxiliary vector (pairs of u64), as the process started with it.
pub fn auxv(pid: Pid) -> Result<Vec<u64>> {
    let raw = fs::read(dir(pid).join("auxv")).map_err(|e| read_err(pid, "auxv", e))?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect())
}

/// The personality flags.
pub fn personality(pid: Pid) -> Result<u32> {
    let text = read(pid, "personality")?;
    u32::from_str_radix(text.trim(), 16).map_err(|_| ProcError::Parse {
        pid,
        file: "personality",
        line: None,
    })
}

/// The thread ids of `pid`.
pub fn tids(pid: Pid) -> Result<Vec<Pid>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir(pid).join("task")).map_err(|e| read_err(pid, "task", e))? {
        let entry = entry.map_err(|e| read_err(pid, "task", e))?;
        if let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(Pid::from_raw(tid));
        }
    }
    out.sort();
    Ok(out)
}

/// The children of every thread of `pid`.
pub fn children(pid: Pid) -> Result<Vec<Pid>> {
    let mut out = Vec::new();
    for tid in tids(pid)? {
        let name = format!("task/{tid}/children");
        let text = match read(pid, &name) {
            // A thread that ended since the listing: its children went to another thread
            // (read before or after it; a tree read while it runs is checked once frozen).
            Err(e) if e.vanished() && tid != pid && dir(pid).exists() => continue,
            other => other?,
        };
        out.extend(
            text.split_whitespace()
                .filter_map(|s| s.parse().ok())
                .map(Pid::from_raw),
        );
    }
    Ok(out)
}

/// The target of a /proc/PID symlink (cwd, root, exe...).
pub fn link(pid: Pid, name: &str) -> Result<PathBuf> {
    fs::read_link(dir(pid).join(name)).map_err(|e| read_err(pid, name, e))
}

/// stat of what the /proc/PID symlink `name` (cwd, root, fd/N) leads to.
pub fn stat_link(pid: Pid, name: &str) -> Result<fs::Metadata> {
    fs::metadata(dir(pid).join(name)).map_err(|e| read_err(pid, name, e))
}

/// The working directory of `pid`.
#[derive(Debug, PartialEq, Eq)]
pub enum Cwd {
    /// A path, and whether it was removed (the path without " (deleted)").
    Path(String, bool),
    /// /proc/N of process N, gone since (reaped): the directory is unhashed.
    GoneProcess(i32),
    /// MOUNT/N of process N of the proc mounted at MOUNT (the process's own PID namespace's),
    /// gone since.
    GoneNamespaceProcess(String, i32),
}

/// N when `path` (a link of `pid`: its cwd, an fd) reads "/proc/N (deleted)", the directory
/// of a process N gone (reaped) since, and `pid` is in cryo's PID namespace (the /proc it
/// sees is cryo's, where N is free now): a restore makes it again with a process N that ends
/// at once ([`crate::task::process::in_gone_process_dir`]).
pub fn gone_process_dir(pid: Pid, path: &str) -> Option<i32> {
    let n = path
        .strip_prefix("/proc/")
        .and_then(|rest| rest.strip_suffix(" (deleted)"))
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|&n| n > 0 && !dir(Pid::from_raw(n)).exists())?;
    let ns = |p: &str| {
        fs::metadata(format!("/proc/{p}/ns/pid"))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok()
    };
    let theirs = ns(&pid.to_string());
    (theirs.is_some() && theirs == ns("self")).then_some(n)
}

/// The working directory of `pid`. A process's directory of /proc is refused (it names a
/// process: another one, or none, by the time of a restore) but for one whose process was
/// gone when the dump ran, when `pid` is in cryo's PID namespace (its /proc is cryo's).
pub fn cwd(pid: Pid) -> Result<Cwd> {
    let path = link(pid, "cwd")?.to_string_lossy().into_owned();
    if let Some(n) = gone_process_dir(pid, &path) {
        return Ok(Cwd::GoneProcess(n));
    }
    if let Some((mount, n)) = crate::files::procfs::gone_namespace_process_dir(pid, &path) {
        return Ok(Cwd::GoneNamespaceProcess(mount, n));
    }
    refuse_process_directory(pid, "working directory", &path)?;
    Ok(match path.strip_suffix(" (deleted)") {
        Some(gone) => Cwd::Path(gone.to_string(), true),
        None => Cwd::Path(path, false),
    })
}

/// The working (`cwd`) or root (`root`) directory of `pid`, as a path a restore can chdir or
/// chroot to; a deleted one is refused.
pub fn dir_link(pid: Pid, name: &'static str) -> Result<String> {
    let path = link(pid, name)?.to_string_lossy().into_owned();
    let what = if name == "cwd" {
        "working directory"
    } else {
        "root directory"
    };
    refuse_process_directory(pid, what, &path)?;
    match path.strip_suffix(" (deleted)") {
        Some(gone) => Err(ProcError::DeletedDirectory {
            pid,
            what,
            path: gone.to_string(),
        }),
        None => Ok(path),
    }
}

/// Refuses `path`, the `what` of `pid`, when it is in a process's directory of /proc
/// (/proc/N or below, N a pid: the process's own too, whose pid a restore into a new PID
/// namespace changes).
fn refuse_process_directory(pid: Pid, what: &'static str, path: &str) -> Result<()> {
    let first = path
        .strip_prefix("/proc/")
        .and_then(|rest| rest.split(['/', ' ']).next());
    match first {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            Err(ProcError::ProcessDirectory {
                pid,
                what,
                path: path.to_string(),
            })
        }
        _ => Ok(()),
    }
}

/// A list as `1,2,3` (pids, signal numbers), as /proc and the environment of hooks write it.
pub(crate) fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The first process outside `members` (and other than cryo) with a thread in the namespace
/// of kind `kind` (/proc/PID/task/TID/ns/KIND) and inode `inode`; a process whose threads
/// cannot all be read is judged by those that can.
pub(crate) fn outsider_in_namespace(kind: &str, inode: u64, members: &[Pid]) -> Option<Pid> {
    let me = nix::unistd::getpid();
    let numbers = |dir: PathBuf| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    };
    numbers("/proc".into())
        .map(Pid::from_raw)
        .filter(|p| *p != me && !members.contains(p))
        .find(|p| {
            let dir = dir(*p).join("task");
            numbers(dir.clone()).any(|tid| {
                std::fs::metadata(dir.join(format!("{tid}/ns/{kind}")))
                    .is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == inode)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let e = parse_map_line(
            "7f1c2a000000-7f1c2a021000 rw-p 00001000 08:01 1234                       /usr/lib/x (deleted)",
        )
        .unwrap();
        assert_eq!(e.start, 0x7f1c2a000000);
        assert_eq!(e.prot, 3);
        assert!(!e.shared);
        assert_eq!(e.pgoff, 0x1000);
        assert_eq!(e.dev, (8, 1));
        assert_eq!(e.name, "/usr/lib/x (deleted)");
        let anon = parse_map_line("7ffd1000-7ffd3000 rw-s 00000000 00:00 0 ").unwrap();
        assert!(anon.shared);
        assert_eq!(anon.name, "");
    }

    #[test]
    fn parses_own_stat() {
        let s = stat(nix::unistd::getpid()).unwrap();
        assert_eq!(s.ppid, nix::unistd::getppid().as_raw());
        assert!(s.arg_end > s.arg_start);
    }
}
