//! `cryo show` as text: the layout drawn in the module docs of show/.

use std::fmt::Write as _;
use std::path::Path;

use cryo_proto::image::{FileDesc, ThreadCore, Vma};

use super::{join, vma_kind_name, Loaded, Process};
use crate::error::Result;

/// The page size of the images (x86_64).
pub(super) const PAGE_SIZE: u64 = 4096;

/// O_LARGEFILE as fdinfo shows it (libc says 0 on x86_64, where it is implied).
const LARGEFILE: i32 = 0o100000;

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
    if inv.check_only {
        options.push("check-only");
    }
    // The tree's own PID namespace: the pids shown are its.
    let pid_ns = format!("pid-namespace=pid:[{}]", inv.pid_ns);
    if inv.pid_ns != 0 {
        options.push(&pid_ns);
    }
    let lock = format!("network-lock={}", inv.network_lock);
    if !inv.network_lock.is_empty() {
        options.push(&lock);
    }
    // The dump's `--cgroup-root`s, as given.
    let roots: Vec<String> = inv
        .cgroup_roots
        .iter()
        .map(|r| match r.controller.as_str() {
            "" => format!("cgroup-root={}", r.path),
            c => format!("cgroup-root={c}:{}", r.path),
        })
        .collect();
    options.extend(roots.iter().map(String::as_str));
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
    if let Some(check) = &img.check {
        out.push('\n');
        render_check(&mut out, check);
    }
    Ok(out)
}

/// What a destination judges, from a check image.
fn render_check(out: &mut String, c: &cryo_proto::image::MigrationCheck) {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let _ = writeln!(
        out,
        "check: {} of memory  xcr0 {:#x}  xfeatures {:#x}  kernel features {}",
        human_bytes(c.memory_bytes),
        c.xcr0,
        c.xfeatures,
        if c.kernel_features.is_empty() {
            "none".to_string()
        } else {
            c.kernel_features.join(",")
        }
    );
    let _ = writeln!(out, "  cpu flags: {}", c.cpu_flags.join(" "));
    for h in &c.huge_pages {
        let _ = writeln!(out, "  huge pages: {} of {} kB", h.pages, h.page_size >> 10);
    }
    for f in &c.files {
        let mut line = format!("  file {}  {}", f.path, human_bytes(f.size));
        if !f.sha256.is_empty() {
            let _ = write!(line, "  sha256 {}", hex(&f.sha256));
        }
        if !f.build_id.is_empty() {
            let _ = write!(line, "  build-id {}", hex(&f.build_id));
        }
        let _ = writeln!(out, "{line}  (pid {} {})", f.pid, f.used_as);
    }
    for p in &c.ports {
        let ip = match p.ip.len() {
            4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&p.ip[..]).unwrap_or_default())
                .to_string(),
            16 => format!(
                "[{}]",
                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&p.ip[..]).unwrap_or_default())
            ),
            _ => hex(&p.ip),
        };
        let proto = match p.protocol as i32 {
            libc::IPPROTO_TCP => "tcp",
            libc::IPPROTO_UDP => "udp",
            _ => "?",
        };
        let _ = writeln!(out, "  port {proto} {ip}:{} (pid {})", p.port, p.pid);
    }
    let ids = |ids: &[cryo_proto::image::CheckedId]| {
        ids.iter()
            .map(|i| format!("{} {}", i.id, i.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(out, "  uid {}  gid {}", ids(&c.uids), ids(&c.gids));
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
    let shared: Vec<&str> = [
        (core.files_of_parent, "fd table (CLONE_FILES)"),
        (core.fs_of_parent, "cwd, root and umask (CLONE_FS)"),
    ]
    .into_iter()
    .filter_map(|(yes, what)| yes.then_some(what))
    .collect();
    if !shared.is_empty() {
        let _ = writeln!(out, "  shares its parent's {}", shared.join(" and "));
    }
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
        let ring = mm.aio_rings.iter().find(|r| r.start == v.start);
        if let Some(h) = ring.and_then(|r| cryo_proto::sanity::AioHeader::parse(&r.ring)) {
            let (nr, head, tail) = (u64::from(h.nr.max(1)), u64::from(h.head), u64::from(h.tail));
            let waiting = (tail + nr).saturating_sub(head) % nr;
            let _ = writeln!(
                out,
                "    aio context {:#x}: slot {}, {} events, head {}, tail {} ({waiting} not reaped)",
                v.start, h.id, h.nr, h.head, h.tail
            );
        }
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
    if v.hugetlb_page_size != 0 {
        let _ = write!(s, " [hugetlb {} kB]", v.hugetlb_page_size >> 10);
    }
    if !name.is_empty() {
        let _ = write!(s, " {name}");
    }
    s.trim_end().to_string()
}

/// open(2) flags as `O_RDONLY|O_APPEND|...`, unknown bits in octal.
pub(super) fn open_flags(flags: u32) -> String {
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
pub(super) fn human_bytes(n: u64) -> String {
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
