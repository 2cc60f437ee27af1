//! `mount-ns [EXTRA...]`: a process in a mount namespace of its own (every mount private), as a
//! sandbox makes one: a tmpfs on DIR/tmp (nosuid,nodev; size=2m,nr_inodes=400,mode=1751)
//! holding files it wrote, one open (fd 40, at offset 5) and one mapped shared, its working
//! directory on it (DIR/tmp/quiet.txt: an access time older than its modification time, never
//! read); DIR/src bound read-only (and nosuid) on DIR/ro,
//! DIR/src/host.txt read-only on DIR/tmp/bound (a file of the tmpfs). EXTRA: `proc` (a proc
//! mounted on DIR/proc), `sysfs` (a sysfs on DIR/sys), `mqueue` (an mqueue on DIR/mq),
//! `mqueue-own` (an IPC namespace of its own made, its mqueue on DIR/mq), `devpts` (a new
//! devpts instance on DIR/pts; `devpts-busy`: the same, a pty of it open at fd 45), `binfmt`
//! (a binfmt_misc on DIR/binfmt, two formats registered: `cryo-PID-magic`, `cryo-PID-ext`),
//! `ramfs`
//! (a ramfs on DIR/ram), `cgroup2` (a cgroup namespace of its own made, the cgroup2
//! hierarchy mounted on DIR/cg: its cgroup), `masked-proc` (a proc on DIR/proc, /dev/null bound on its uptime, its sys bound on itself
//! read-only), `pivot` (before the rest: a tmpfs made the namespace's root
//! with pivot_root, holding binds of /usr, /dev, of this program's directory and of DIR at their
//! paths, and a proc on /proc; `no-proc`: without the proc, the root holding no /proc;
//! `ro-root`: its tmpfs remounted read-only last), `shared` (the tmpfs made shared), `sock-tmpfs` (a unix stream listener bound to
//! DIR/tmp/tmpfs.sock at fd 47, and DIR/tmp/stale.sock, a socket file no socket holds),
//! `overmounted` (zdtm tempfs_overmounted01's two chains of over-mounted mounts on a tmpfs
//! cryo-om on DIR/om: see its setup), `stacked` (tmpfs cryo-under on DIR/stack, tmpfs
//! cryo-over on it at the same point, tmpfs cryo-inner on DIR/stack/c of the upper one, each
//! holding NAME.txt), `protect-kernel` (cryo's /proc/sys bound read-only
//! on itself, as systemd's ProtectKernelTunables= does), `remount-ro:PATH` (the mount of
//! cryo's at PATH remounted read-only in its namespace, as systemd's ProtectSystem= does),
//! `umount:PATH` (a
//! mount of cryo's at PATH unmounted in its namespace), `nested` (a child in a mount namespace made inside this one, with a tmpfs cryo-mnt-inner on
//! DIR/tmp/inner holding `f`; `kids` names it; `nested-ro-root`: its root remounted read-only there; `nested-back`: it forked a child of
//! its own before making it, left in this one's, as zdtm tempfs_subns), `held-before` (DIR/src/host.txt opened at
//! fd 41 and /dev/null at fd 42 before the namespace is made: their mounts are cryo's
//! namespace's), `propagation` (DIR/outer bound on itself and made shared in cryo's namespace
//! before this one is made, which is made a slave of cryo's (`--make-rslave /`, as systemd
//! makes a service's) instead of private: DIR/outer a slave of cryo's; DIR/ro made shared,
//! bound again on DIR/peer (its peer) and on DIR/slave (made its slave); DIR/src bound on
//! DIR/unbind, made unbindable; DIR/src/d a directory to mount on), `covered` (DIR/src bound
//! on DIR/cov, made shared, a tmpfs mounted over it), `fifo` (a FIFO DIR/tmp/fifo on the
//! tmpfs, open O_RDWR at fd 43, "queued in the fifo" written to it), `devnode` (on the
//! tmpfs: DIR/tmp/null, a character device 1:3, mode 0640, owner 1234:5678, with a second
//! name DIR/tmp/null2; a block device DIR/tmp/loop, 7:0), `fanotify` (a fanotify group at
//! fd 57: FAN_MODIFY on the tmpfs's mount, FAN_CLOSE_WRITE on DIR/tmp/fan.txt, which ignores
//! FAN_MODIFY; `fanotify-proc`, after `proc`: one with a mount mark FAN_MODIFY on DIR/proc),
//! `tmpfs-bind` (DIR/tmp/part, holding
//! `f` ("in part"), bound on DIR/tbind; DIR/tbind/f open at fd 44), `sock-before:WHERE` (a
//! unix stream socket bound to DIR/WHERE/before.sock and listening, at fd 47, before the
//! namespace is made: `tmp` puts it under the tmpfs the namespace mounts), `linked-deleted`
//! (DIR/tmp/gone/f, "linked", with a second name DIR/tmp/other, open O_RDWR at fd 48, then
//! DIR/tmp/gone/f and DIR/tmp/gone removed; `linked-deleted-bind`: the same in DIR), `sock-inside` (with `pivot`: DIR bound on /d of
//! the new root too, a unix stream socket bound to /d/inside.sock and listening, at fd 47: its
//! path in the namespace is not its path in cryo's), `inotify-inside` (with `pivot`: DIR
//! bound on /d too, an inotify instance at fd 53 watching /d/watched, IN_CLOSE_WRITE),
//! `ns-fd` (with `pivot`: /proc/self/ns/net opened through the namespace's own /proc at fd
//! 54), `devpts-own` (with `pivot`: a new devpts
//! instance on /dev/pts, ptmxmode=0666, as a container has; a pty made through /dev/ptmx, its
//! master at fd 45, its slave at fd 46, "typed before" and a newline written to the master;
//! `console`: that slave also bound on /console, as a container's /dev/console),
//! `removed` (DIR/gone/sub open at fd 50, then removed, and DIR/gone with it; a FIFO
//! DIR/fifo-gone open O_RDWR at fd 51, "queued" written to it, and a character device
//! DIR/null-gone, 1:3, open O_RDWR at fd 52, both then removed), `jailed` (a child chrooted
//! into DIR/tmp/jail, a directory of the tmpfs, working in /sub, /inside.txt open at fd 60;
//! `kids` names it, `jailed` asks it what it observes), `jailed-maker` (the same, the child
//! first making a mount namespace of its own inside this one, a tmpfs cryo-jail on
//! DIR/tmp/jail-ns, its jail DIR/tmp/jail-ns/jail: the namespace's maker chrooted),
//! `pivoted-kid` (the same child pivoted into that tmpfs instead, the old root detached: no
//! proc, its executable outside its namespace; its jail is its root), `removed-binds`
//! (DIR/tmp/rdir, mode 0751, bound on DIR/tmp/rdir-bound and DIR/tmp/rfile, "removed but
//! bound", mode 0640, on DIR/tmp/rfile-bound, both then removed; `removed-bind-held`: the
//! same, the file open at fd 55 too; `removed-bind-held-kid`: fd 55 then held by a child
//! alone, which `kids` names).
//!
//! ```text
//! fd                  -> <pos> <contents of fd 40, from 0>
//! jailed              -> root-ino:N cwd:PATH fd:<fd 60 from 0> open:<read /inside.txt>
//!                        same:<bool>   (asked of the jailed child)
//! map                 -> the first 16 bytes of the mapping
//! read PATH           -> the contents of PATH | errno N
//! write PATH          -> ok | errno N            (creates or truncates PATH, writes "x")
//! stat PATH           -> <mode octal> <uid> <gid> <mtime sec> <atime ns>   (lstat)
//! readlink PATH       -> its target
//! cwd                 -> getcwd()
//! mount POINT         -> <mount options> <superblock options>  (its /proc/self/mountinfo line)
//! held-before         -> ours:<bool> init's:<bool> <contents> /dev/null ours:<bool>
//!                        init's:<bool>  (whose mountinfo lists the mount of fd 41, then of
//!                        fd 42: this process's, pid 1's)
//! propagation POINT   -> shared:N master:N unbindable, those it has, or "private" (the
//!                        topmost mount on POINT)
//! mounted POINT       -> yes | no              (a mount on POINT in its mountinfo)
//! mount-tmpfs POINT   -> ok | errno N
//! umount POINT        -> ok | errno N
//! bind FROM TO        -> ok | errno N
//! open-ptmx PATH      -> pty N   (a pty made through PATH, a ptmx, then closed)
//! root POINT          -> the root its mountinfo shows for the topmost mount on POINT
//! ls PATH             -> the names in directory PATH, sorted, space-separated
//! mq-create NAME      -> ok | errno N      (mq_open(NAME, O_CREAT), closed)
//! mq-unlink NAME      -> ok | errno N
//! node PATH           -> <c|b|other> <major>:<minor> <mode octal> <uid>:<gid> <nlink> <ino>
//! accept-before       -> ok | errno N  (accepts on fd 47, writes "accepted", closes)
//! linked              -> the link of fd 48 (/proc/self/fd/48)
//! linked-write TEXT   -> ok               (TEXT written through fd 48 at offset 0)
//! pty                 -> <TIOCGPTN of fd 45> <the link of fd 46> same:<bool> (same: fd 46
//!                        is of the devpts on /dev/pts)
//! pty-dev             -> the device of fd 46 (its devpts instance's)
//! removed-dir         -> <device> <links> <the link of fd 50>
//! removed-bound POINT -> same:<bool> <links> on:<point of its mount> <the link of fd 55>
//!                        <its contents from 0>  (same: fd 55 and the bind on POINT are one
//!                        inode)
//! inotify-touch       -> <mask hex> wd<N>   (/d/watched written, the event fd 53 reads)
//! ns-fd               -> same|other   (fd 54 and /proc/self/ns/net: one namespace)
//! removed-fifo        -> <links> <what fd 51 reads now, non-blocking>
//! removed-null        -> <major>:<minor> <links> <the link of fd 52>
//! pty-read            -> what fd 46 reads now, non-blocking
//! pty-write TEXT      -> ok   (TEXT and a newline written to fd 45)
//! fan-write NAME...   -> the events fd 57 reads then: <mask hex> <path>,... (fanotify)
//!                        ("x" written to each DIR/NAME first)
//! fifo                -> same:<bool> <what fd 43 reads now, non-blocking, written back>
//!                        (same: fd 43 and DIR/tmp/fifo are one inode)
//! ```

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::mount::MsFlags;

use super::{failed, io_err, sys, unknown, Mode};

/// The fd the open tmpfs file is kept at.
const FD: i32 = 40;
/// The fd of DIR/src/host.txt opened before the namespace was made (`held-before`).
const HELD_BEFORE: i32 = 41;
/// The fd of the unix listener bound before the namespace was made (`sock-before:WHERE`).
const SOCK_BEFORE: i32 = 47;
/// The fd of the deleted name of a linked file on the tmpfs (`linked-deleted`).
const LINKED_FD: i32 = 48;
/// The fds of the master and the slave of the pty of the namespace's devpts (`devpts-own`).
const PTY_MASTER: i32 = 45;
const PTY_SLAVE: i32 = 46;
/// The fd on its own network namespace (`ns-fd`).
const NS_FD: i32 = 54;
/// The inotify instance watching /d/watched (`inotify-inside`).
const INOTIFY_INSIDE: i32 = 53;
/// The fds of the removed directory, FIFO and device node (`removed`).
const REMOVED_DIR: i32 = 50;
const REMOVED_FIFO: i32 = 51;
const REMOVED_NULL: i32 = 52;
/// The fd of /inside.txt in the jail (`jailed`, `jailed-maker`).
const JAILED_FD: i32 = 60;
/// The request and answer pipes of the jailed child (`jailed`).
const JAIL_ASK: i32 = 61;
const JAIL_ANSWER: i32 = 62;
/// The fd of the FIFO on the tmpfs (`fifo`).
const FIFO_FD: i32 = 43;
/// The fd of the device node on the tmpfs (`devnode`).
const DEVICE_FD: i32 = 46;
/// The fanotify group marking the tmpfs (`fanotify`).
const FANOTIFY_FD: i32 = 57;
/// The mtime (seconds) its files are given, to be found again.
pub const MTIME: i64 = 1_600_000_000;
/// The access time of the open file (2096).
pub const ATIME: i64 = 4_000_000_000;

struct MountNs {
    map: &'static mut [u8],
    kids: Vec<i32>,
    dir: std::path::PathBuf,
}

fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    nix::mount::mount(source, target, fstype, flags, data)
        .map_err(|e| format!("mount {}: {e}", target.display()))
}

/// Makes the mount on `point` read-only in this namespace (a bind remount: its superblock
/// stays as it is).
fn remount_read_only(point: &Path) -> Result<(), String> {
    mount(
        None,
        point,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        None,
    )
}

/// Makes a tmpfs the root of this mount namespace, as a sandbox does (pivot_root), holding
/// binds of /usr, /dev (alone) and of the directory of this program (its libraries and itself, at the paths
/// they had), of DIR, and a proc on /proc; the old root detached.
fn pivot(dir: &Path, also_on_d: bool, with_proc: bool) -> Result<(), String> {
    let new_root = dir.join("newroot");
    std::fs::create_dir_all(&new_root).map_err(failed("mkdir newroot"))?;
    mount(
        Some("cryo-pivot-root"),
        &new_root,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=755"),
    )?;
    let exe = std::env::current_exe().map_err(failed("current_exe"))?;
    let bin = exe.parent().ok_or("the program has no directory")?;
    // Each bound at its own path, and DIR also on /d when asked.
    let mut binds: Vec<(&Path, &Path)> = [Path::new("/usr"), Path::new("/dev"), bin, dir]
        .into_iter()
        .map(|kept| (kept, kept.strip_prefix("/").unwrap_or(kept)))
        .collect();
    if also_on_d {
        binds.push((dir, Path::new("d")));
    }
    for (source, below) in binds {
        let at = new_root.join(below);
        std::fs::create_dir_all(&at).map_err(failed("mkdir in newroot"))?;
        mount(
            Some(&source.to_string_lossy()),
            &at,
            None,
            MsFlags::MS_BIND,
            None,
        )?;
    }
    if with_proc {
        let proc = new_root.join("proc");
        std::fs::create_dir_all(&proc).map_err(failed("mkdir proc"))?;
        mount(Some("proc"), &proc, Some("proc"), MsFlags::empty(), None)?;
    }
    std::env::set_current_dir(&new_root).map_err(failed("chdir newroot"))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| format!("umount the old root: {e}"))?;
    std::env::set_current_dir("/").map_err(failed("chdir /"))?;
    Ok(())
}

/// A fanotify group at FANOTIFY_FD (FAN_CLASS_NOTIF|FAN_NONBLOCK, O_RDONLY|O_LARGEFILE) marking
/// the tmpfs on `tmp`: FAN_MODIFY on its mount (FAN_MARK_MOUNT), FAN_CLOSE_WRITE on the inode
/// of `tmp`/fan.txt (empty), which ignores FAN_MODIFY (FAN_MARK_IGNORED_SURV_MODIFY). No mark
/// asks for what reading a file makes (a dump copies the tmpfs).
fn fanotify_on(tmp: &Path) -> Result<(), String> {
    let marked = tmp.join("fan.txt");
    std::fs::write(&marked, b"").map_err(failed("create fan.txt"))?;
    let fd = sys::fanotify_init(
        libc::FAN_CLASS_NOTIF | libc::FAN_NONBLOCK,
        (libc::O_RDONLY | libc::O_LARGEFILE) as u32,
    )
    .map_err(failed("fanotify_init"))?;
    let mark = |flags: u32, mask: u64, path: &Path| {
        sys::fanotify_mark(fd, libc::FAN_MARK_ADD | flags, mask, path)
    };
    mark(libc::FAN_MARK_MOUNT, libc::FAN_MODIFY, tmp).map_err(failed("mount mark"))?;
    mark(0, libc::FAN_CLOSE_WRITE, &marked).map_err(failed("inode mark"))?;
    mark(
        libc::FAN_MARK_IGNORED_MASK | libc::FAN_MARK_IGNORED_SURV_MODIFY,
        libc::FAN_MODIFY,
        &marked,
    )
    .map_err(failed("ignored mask"))?;
    sys::move_fd(fd, FANOTIFY_FD).map_err(failed("dup2"))?;
    Ok(())
}

/// `mount-ns [proc|sysfs]...`
pub fn start(args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).map_err(failed("mkdir src"))?;
    std::fs::write(src.join("host.txt"), "seen through the bind").map_err(failed("host.txt"))?;
    if args.iter().any(|a| a == "held-before") {
        // Opened in cryo's namespace, before this one is made: its mount is not in ours.
        let fd = sys::open(&src.join("host.txt"), libc::O_RDONLY).map_err(failed("open"))?;
        sys::move_fd(fd, HELD_BEFORE).map_err(failed("dup2"))?;
        let null = sys::open(Path::new("/dev/null"), libc::O_RDWR).map_err(failed("open"))?;
        sys::move_fd(null, HELD_BEFORE + 1).map_err(failed("dup2"))?;
    }
    for place in args.iter().filter_map(|a| a.strip_prefix("sock-before:")) {
        // Bound and listening in cryo's namespace, before this one is made.
        let at = dir.join(place);
        std::fs::create_dir_all(&at).map_err(failed("mkdir"))?;
        let listener = std::os::unix::net::UnixListener::bind(at.join("before.sock"))
            .map_err(failed("bind"))?;
        sys::move_fd(std::os::fd::IntoRawFd::into_raw_fd(listener), SOCK_BEFORE)
            .map_err(failed("dup2"))?;
    }
    let propagation = args.iter().any(|a| a == "propagation");
    if propagation {
        // In cryo's namespace: the test unmounts it.
        let outer = dir.join("outer");
        std::fs::create_dir_all(&outer).map_err(failed("mkdir outer"))?;
        std::fs::create_dir_all(src.join("d")).map_err(failed("mkdir src/d"))?;
        let path = outer.to_string_lossy();
        mount(Some(&path), &outer, None, MsFlags::MS_BIND, None)?;
        mount(None, &outer, None, MsFlags::MS_SHARED, None)?;
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare: {e}"))?;
    let kind = if propagation {
        MsFlags::MS_SLAVE
    } else {
        MsFlags::MS_PRIVATE
    };
    mount(None, Path::new("/"), None, MsFlags::MS_REC | kind, None)?;
    if args.iter().any(|a| a == "pivot") {
        let on_d = args
            .iter()
            .any(|a| a == "sock-inside" || a == "inotify-inside");
        pivot(dir, on_d, !args.iter().any(|a| a == "no-proc"))?;
    }
    let tmp = dir.join("tmp");
    let ro = dir.join("ro");
    for d in [&tmp, &ro] {
        std::fs::create_dir_all(d).map_err(failed("mkdir"))?;
    }
    mount(
        Some("cryo-mnt-tmpfs"),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=2m,nr_inodes=400,mode=1751"),
    )?;
    mount(
        Some(&*src.to_string_lossy()),
        &ro,
        None,
        MsFlags::MS_BIND,
        None,
    )?;
    mount(
        None,
        &ro,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID,
        None,
    )?;
    for extra in args {
        let (fstype, at) = match extra.as_str() {
            "proc" => ("proc", dir.join("proc")),
            "sysfs" => ("sysfs", dir.join("sys")),
            "mqueue" => ("mqueue", dir.join("mq")),
            "mqueue-own" => {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWIPC)
                    .map_err(|e| format!("unshare ipc: {e}"))?;
                ("mqueue", dir.join("mq"))
            }
            "devpts" | "devpts-busy" => ("devpts", dir.join("pts")),
            "ramfs" => ("ramfs", dir.join("ram")),
            "binfmt" => ("binfmt_misc", dir.join("binfmt")),
            "cgroup2" => {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
                    .map_err(|e| format!("unshare cgroup: {e}"))?;
                ("cgroup2", dir.join("cg"))
            }
            "masked-proc" => {
                // /dev/null bound over a file of its own proc, as container runtimes mask
                // /proc/kcore (this one, its uptime).
                let proc = dir.join("proc");
                std::fs::create_dir_all(&proc).map_err(failed("mkdir"))?;
                mount(Some("proc"), &proc, Some("proc"), MsFlags::empty(), None)?;
                mount(
                    Some("/dev/null"),
                    &proc.join("uptime"),
                    None,
                    MsFlags::MS_BIND,
                    None,
                )?;
                // Its sys bound on itself, read-only (as they make /proc/sys).
                let sys_dir = proc.join("sys");
                let path = sys_dir.to_string_lossy();
                mount(Some(&path), &sys_dir, None, MsFlags::MS_BIND, None)?;
                let ro = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
                mount(None, &sys_dir, None, ro, None)?;
                continue;
            }
            "shared" => {
                mount(None, &tmp, None, MsFlags::MS_SHARED, None)?;
                continue;
            }
            "propagation" => {
                let ro_path = ro.to_string_lossy();
                mount(None, &ro, None, MsFlags::MS_SHARED, None)?;
                for (at, then) in [
                    ("peer", None),
                    ("slave", Some(MsFlags::MS_SLAVE)),
                    ("unbind", Some(MsFlags::MS_UNBINDABLE)),
                ] {
                    let at = dir.join(at);
                    std::fs::create_dir_all(&at).map_err(failed("mkdir"))?;
                    let from = if then == Some(MsFlags::MS_UNBINDABLE) {
                        src.to_string_lossy()
                    } else {
                        ro_path.clone()
                    };
                    mount(Some(&from), &at, None, MsFlags::MS_BIND, None)?;
                    if let Some(kind) = then {
                        mount(None, &at, None, kind, None)?;
                    }
                }
                continue;
            }
            "covered" => {
                let cov = dir.join("cov");
                std::fs::create_dir_all(&cov).map_err(failed("mkdir cov"))?;
                mount(
                    Some(&src.to_string_lossy()),
                    &cov,
                    None,
                    MsFlags::MS_BIND,
                    None,
                )?;
                mount(None, &cov, None, MsFlags::MS_SHARED, None)?;
                mount(
                    Some("cryo-cover"),
                    &cov,
                    Some("tmpfs"),
                    MsFlags::empty(),
                    None,
                )?;
                continue;
            }
            "stacked" => {
                // Two tmpfs on one point, a third on a directory of the upper one, and a
                // fourth over their parent directory's own: each holding a file.
                let stack = dir.join("stack");
                std::fs::create_dir_all(&stack).map_err(failed("mkdir stack"))?;
                for (name, at) in [
                    ("cryo-under", stack.clone()),
                    ("cryo-over", stack.clone()),
                    ("cryo-inner", stack.join("c")),
                ] {
                    std::fs::create_dir_all(&at).map_err(failed("mkdir"))?;
                    mount(
                        Some(name),
                        &at,
                        Some("tmpfs"),
                        MsFlags::empty(),
                        Some("size=64k"),
                    )?;
                    std::fs::write(at.join(format!("{name}.txt")), name)
                        .map_err(failed("write"))?;
                }
                continue;
            }
            "overmounted" => {
                // zdtm tempfs_overmounted01, on a tmpfs cryo-om on DIR/om: a tmpfs cryo-om1 on
                // om/a (holding one.txt and b/c), bound on om/b; its /b bound over om/a; that
                // bind of om/b moved onto om/a/c, on the bind made after it. A tmpfs cryo-om2
                // on om/b (holding b/z), bound on om/b/b, its /b bound over that one.
                let om = dir.join("om");
                std::fs::create_dir_all(&om).map_err(failed("mkdir om"))?;
                mount(Some("cryo-om"), &om, Some("tmpfs"), MsFlags::empty(), None)?;
                let (a, b) = (om.join("a"), om.join("b"));
                std::fs::create_dir(&a).map_err(failed("mkdir a"))?;
                std::fs::create_dir(&b).map_err(failed("mkdir b"))?;
                mount(Some("cryo-om1"), &a, Some("tmpfs"), MsFlags::empty(), None)?;
                std::fs::write(a.join("one.txt"), "one").map_err(failed("write"))?;
                mount(
                    Some(&*a.to_string_lossy()),
                    &b,
                    None,
                    MsFlags::MS_BIND,
                    None,
                )?;
                std::fs::create_dir_all(a.join("b/c")).map_err(failed("mkdir a/b/c"))?;
                std::fs::write(a.join("b/two.txt"), "two").map_err(failed("write"))?;
                mount(
                    Some(&*a.join("b").to_string_lossy()),
                    &a,
                    None,
                    MsFlags::MS_BIND,
                    None,
                )?;
                mount(
                    Some(&*b.to_string_lossy()),
                    &a.join("c"),
                    None,
                    MsFlags::MS_MOVE,
                    None,
                )?;
                mount(Some("cryo-om2"), &b, Some("tmpfs"), MsFlags::empty(), None)?;
                std::fs::create_dir_all(b.join("b/z")).map_err(failed("mkdir b/b/z"))?;
                mount(
                    Some(&*b.to_string_lossy()),
                    &b.join("b"),
                    None,
                    MsFlags::MS_BIND,
                    None,
                )?;
                mount(
                    Some(&*b.join("b/b").to_string_lossy()),
                    &b.join("b"),
                    None,
                    MsFlags::MS_BIND,
                    None,
                )?;
                continue;
            }
            "fifo" => {
                fifo_at(&tmp.join("fifo"), FIFO_FD, b"queued in the fifo")?;
                continue;
            }
            "fanotify" => {
                fanotify_on(&tmp)?;
                continue;
            }
            "fanotify-proc" => {
                let fd = sys::fanotify_init(libc::FAN_CLASS_NOTIF | libc::FAN_NONBLOCK, 0)
                    .map_err(failed("fanotify_init"))?;
                let flags = libc::FAN_MARK_ADD | libc::FAN_MARK_MOUNT;
                sys::fanotify_mark(fd, flags, libc::FAN_MODIFY, &dir.join("proc"))
                    .map_err(failed("mount mark on proc"))?;
                sys::move_fd(fd, FANOTIFY_FD).map_err(failed("dup2"))?;
                continue;
            }
            "devnode" => {
                use nix::sys::stat::{makedev, mknod, Mode, SFlag};
                let null = tmp.join("null");
                let perms = Mode::from_bits_truncate(0o640);
                mknod(&null, SFlag::S_IFCHR, perms, makedev(1, 3))
                    .map_err(|e| format!("mknod: {e}"))?;
                std::fs::set_permissions(&null, std::fs::Permissions::from_mode(0o640))
                    .map_err(failed("chmod"))?;
                std::os::unix::fs::chown(&null, Some(1234), Some(5678)).map_err(failed("chown"))?;
                std::fs::hard_link(&null, tmp.join("null2")).map_err(failed("link"))?;
                mknod(&tmp.join("loop"), SFlag::S_IFBLK, perms, makedev(7, 0))
                    .map_err(|e| format!("mknod: {e}"))?;
                // One held open (on a tmpfs without nodev, a /dev of the namespace's own): the
                // holder opens it again in the namespace made again.
                let devs = dir.join("devs");
                std::fs::create_dir_all(&devs).map_err(failed("mkdir devs"))?;
                mount(
                    Some("cryo-devs"),
                    &devs,
                    Some("tmpfs"),
                    MsFlags::empty(),
                    None,
                )?;
                mknod(&devs.join("null"), SFlag::S_IFCHR, perms, makedev(1, 3))
                    .map_err(|e| format!("mknod: {e}"))?;
                let fd =
                    sys::open(&devs.join("null"), libc::O_RDWR).map_err(failed("open null"))?;
                sys::move_fd(fd, DEVICE_FD).map_err(failed("dup2"))?;
                // A file of the tmpfs a mount over its directory hides.
                let under = tmp.join("under");
                std::fs::create_dir(&under).map_err(failed("mkdir under"))?;
                std::fs::write(under.join("f"), "hidden").map_err(failed("write under/f"))?;
                mount(
                    Some("cryo-over"),
                    &under,
                    Some("tmpfs"),
                    MsFlags::empty(),
                    None,
                )?;
                continue;
            }
            "tmpfs-bind" => {
                let part = tmp.join("part");
                std::fs::create_dir(&part).map_err(failed("mkdir part"))?;
                std::fs::write(part.join("f"), "in part").map_err(failed("write f"))?;
                let tbind = dir.join("tbind");
                std::fs::create_dir_all(&tbind).map_err(failed("mkdir tbind"))?;
                mount(
                    Some(&part.to_string_lossy()),
                    &tbind,
                    None,
                    MsFlags::MS_BIND,
                    None,
                )?;
                let fd = sys::open(&tbind.join("f"), libc::O_RDONLY).map_err(failed("open"))?;
                sys::move_fd(fd, 44).map_err(failed("dup2"))?;
                continue;
            }
            "removed-binds" | "removed-bind-held" | "removed-bind-held-kid" => {
                // Binds of a directory and a file of the tmpfs, both then removed (zdtm's
                // mntns_deleted); `removed-bind-held`: the file open at fd 55 too.
                let rdir = tmp.join("rdir");
                std::fs::create_dir(&rdir).map_err(failed("mkdir rdir"))?;
                std::fs::set_permissions(&rdir, std::fs::Permissions::from_mode(0o751))
                    .map_err(failed("chmod rdir"))?;
                let rfile = tmp.join("rfile");
                std::fs::write(&rfile, "removed but bound").map_err(failed("write rfile"))?;
                std::fs::set_permissions(&rfile, std::fs::Permissions::from_mode(0o640))
                    .map_err(failed("chmod rfile"))?;
                std::fs::create_dir(tmp.join("rdir-bound")).map_err(failed("mkdir"))?;
                std::fs::write(tmp.join("rfile-bound"), "").map_err(failed("write"))?;
                for (from, to) in [(&rdir, "rdir-bound"), (&rfile, "rfile-bound")] {
                    mount(
                        Some(&from.to_string_lossy()),
                        &tmp.join(to),
                        None,
                        MsFlags::MS_BIND,
                        None,
                    )?;
                }
                if extra != "removed-binds" {
                    let fd = sys::open(&rfile, libc::O_RDWR).map_err(failed("open rfile"))?;
                    sys::move_fd(fd, 55).map_err(failed("dup2"))?;
                }
                std::fs::remove_dir(&rdir).map_err(failed("rmdir rdir"))?;
                std::fs::remove_file(&rfile).map_err(failed("unlink rfile"))?;
                continue;
            }
            "linked-deleted" | "linked-deleted-bind" => {
                // A name of an inode with another link, deleted with its directory: on the
                // tmpfs, or on DIR (a bind of cryo's path under `pivot`).
                let tmp = if extra == "linked-deleted" { &tmp } else { dir };
                let gone = tmp.join("gone");
                std::fs::create_dir(&gone).map_err(failed("mkdir gone"))?;
                std::fs::write(gone.join("f"), "linked").map_err(failed("write gone/f"))?;
                std::fs::hard_link(gone.join("f"), tmp.join("other")).map_err(failed("link"))?;
                let fd = sys::open(&gone.join("f"), libc::O_RDWR).map_err(failed("open"))?;
                sys::move_fd(fd, LINKED_FD).map_err(failed("dup2"))?;
                std::fs::remove_file(gone.join("f")).map_err(failed("unlink gone/f"))?;
                std::fs::remove_dir(&gone).map_err(failed("rmdir gone"))?;
                continue;
            }
            "sock-tmpfs" => {
                // A listener bound on the tmpfs, and a stale socket file beside it.
                let listener = std::os::unix::net::UnixListener::bind(tmp.join("tmpfs.sock"))
                    .map_err(failed("bind tmpfs.sock"))?;
                sys::move_fd(std::os::fd::IntoRawFd::into_raw_fd(listener), SOCK_BEFORE)
                    .map_err(failed("dup2"))?;
                drop(
                    std::os::unix::net::UnixListener::bind(tmp.join("stale.sock"))
                        .map_err(failed("bind stale.sock"))?,
                );
                continue;
            }
            "sock-inside" => {
                let listener = std::os::unix::net::UnixListener::bind("/d/inside.sock")
                    .map_err(failed("bind /d/inside.sock"))?;
                sys::move_fd(std::os::fd::IntoRawFd::into_raw_fd(listener), SOCK_BEFORE)
                    .map_err(failed("dup2"))?;
                continue;
            }
            "ns-fd" => {
                let fd = sys::open(Path::new("/proc/self/ns/net"), libc::O_RDONLY)
                    .map_err(failed("open /proc/self/ns/net"))?;
                sys::move_fd(fd, NS_FD).map_err(failed("dup2"))?;
                continue;
            }
            "inotify-inside" => {
                std::fs::write("/d/watched", b"").map_err(failed("create /d/watched"))?;
                let fd = sys::inotify().map_err(failed("inotify_init1"))?;
                sys::add_watch(fd, Path::new("/d/watched"), libc::IN_CLOSE_WRITE)
                    .map_err(failed("add_watch"))?;
                sys::move_fd(fd, INOTIFY_INSIDE).map_err(failed("dup2"))?;
                continue;
            }
            "devpts-own" => {
                mount(
                    Some("devpts"),
                    Path::new("/dev/pts"),
                    Some("devpts"),
                    MsFlags::empty(),
                    Some("newinstance,ptmxmode=0666"),
                )?;
                let master = sys::open(Path::new("/dev/ptmx"), libc::O_RDWR | libc::O_NOCTTY)
                    .map_err(failed("open /dev/ptmx"))?;
                sys::move_fd(master, PTY_MASTER).map_err(failed("dup2"))?;
                // SAFETY: unlockpt on the master this process just opened.
                if unsafe { libc::unlockpt(PTY_MASTER) } < 0 {
                    return Err(format!("unlockpt: {}", std::io::Error::last_os_error()));
                }
                let slave = sys::open(Path::new(&pty_name()?), libc::O_RDWR | libc::O_NOCTTY)
                    .map_err(failed("open the slave"))?;
                sys::move_fd(slave, PTY_SLAVE).map_err(failed("dup2"))?;
                sys::write_all(PTY_MASTER, b"typed before\n").map_err(failed("write"))?;
                if args.iter().any(|a| a == "console") {
                    // Its slave bound on /console, as a container's /dev/console.
                    std::fs::write("/console", "").map_err(failed("make /console"))?;
                    mount(
                        Some(&pty_name()?),
                        Path::new("/console"),
                        None,
                        MsFlags::MS_BIND,
                        None,
                    )?;
                }
                continue;
            }
            "removed" => {
                let fifo = dir.join("fifo-gone");
                fifo_at(&fifo, REMOVED_FIFO, b"queued")?;
                std::fs::remove_file(&fifo).map_err(failed("unlink fifo-gone"))?;
                let null = dir.join("null-gone");
                sys::mknod_char(&null, 1, 3).map_err(failed("mknod null-gone"))?;
                let fd = sys::open(&null, libc::O_RDWR).map_err(failed("open null-gone"))?;
                sys::move_fd(fd, REMOVED_NULL).map_err(failed("dup2"))?;
                std::fs::remove_file(&null).map_err(failed("unlink null-gone"))?;
                let gone = dir.join("gone");
                std::fs::create_dir_all(gone.join("sub")).map_err(failed("mkdir gone/sub"))?;
                let fd = sys::open(&gone.join("sub"), libc::O_RDONLY | libc::O_DIRECTORY)
                    .map_err(failed("open gone/sub"))?;
                sys::move_fd(fd, REMOVED_DIR).map_err(failed("dup2"))?;
                std::fs::remove_dir(gone.join("sub")).map_err(failed("rmdir gone/sub"))?;
                std::fs::remove_dir(&gone).map_err(failed("rmdir gone"))?;
                continue;
            }
            "nested" | "held-before" | "pivot" | "jailed" | "jailed-maker" | "pivoted-kid"
            | "no-proc" | "ro-root" | "console" | "nested-ro-root" | "nested-back" => continue,
            _ if extra.starts_with("sock-before:") => continue,
            "protect-kernel" => {
                // /proc/sys bound read-only on itself, as systemd's ProtectKernelTunables=.
                let sys = Path::new("/proc/sys");
                mount(Some("/proc/sys"), sys, None, MsFlags::MS_BIND, None)?;
                remount_read_only(sys)?;
                continue;
            }
            _ if extra.starts_with("remount-ro:") => {
                // A mount of cryo's made read-only here, as systemd's ProtectSystem= does.
                remount_read_only(Path::new(&extra["remount-ro:".len()..]))?;
                continue;
            }
            _ if extra.starts_with("umount:") => {
                let point = &extra["umount:".len()..];
                nix::mount::umount2(point, nix::mount::MntFlags::empty())
                    .map_err(|e| format!("umount {point}: {e}"))?;
                continue;
            }
            other => {
                return Err(format!(
                    "bad extra {other:?}: proc|sysfs|mqueue|shared|nested"
                ))
            }
        };
        std::fs::create_dir_all(&at).map_err(failed("mkdir"))?;
        mount(Some(fstype), &at, Some(fstype), MsFlags::empty(), None)?;
        if extra == "devpts-busy" {
            let ptmx = sys::open(&at.join("ptmx"), libc::O_RDWR | libc::O_NOCTTY)
                .map_err(failed("open ptmx"))?;
            sys::move_fd(ptmx, 45).map_err(failed("dup2"))?;
        }
        if extra == "binfmt" {
            // Two formats no file of the machine matches (the instance is the whole user
            // namespace's): a magic with a mask, disabled, and an extension with a ':' and a
            // byte that is no UTF-8 in it.
            let pid = std::process::id();
            let magic = format!(
                "|cryo-{pid}-magic|M|7|\\x00cryo\\xfe{pid}|\\xff\\x0f\\xf0{}|/bin/cryo-interp|OCP",
                "\\xff".repeat(pid.to_string().len() + 3)
            );
            let mut extension = format!("|cryo-{pid}-ext|E||cr:yo").into_bytes();
            extension.extend_from_slice(b"\xff");
            extension.extend_from_slice(format!("{pid}||/bin/cryo-interp|P").as_bytes());
            for line in [magic.as_bytes(), &extension] {
                std::fs::write(at.join("register"), line).map_err(failed("register"))?;
            }
            std::fs::write(at.join(format!("cryo-{pid}-magic")), "0").map_err(failed("disable"))?;
        }
    }
    // Files of its own on the tmpfs.
    let sub = tmp.join("sub");
    std::fs::create_dir(&sub).map_err(failed("mkdir sub"))?;
    let data = tmp.join("data.txt");
    std::fs::write(&data, "tmpfs file written before the dump").map_err(failed("data"))?;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o640))
        .map_err(failed("chmod"))?;
    std::os::unix::fs::symlink("data.txt", tmp.join("link")).map_err(failed("symlink"))?;
    std::os::unix::fs::chown(&data, Some(1234), Some(5678)).map_err(failed("chown"))?;
    let mapped = sub.join("mapped");
    let mut page = b"mapped from tmpfs".to_vec();
    page.resize(4096, b'.');
    std::fs::write(&mapped, &page).map_err(failed("mapped"))?;
    // A file of cryo's bound read-only on a file of the tmpfs.
    let bound = tmp.join("bound");
    std::fs::write(&bound, "").map_err(failed("bound"))?;
    let host = src.join("host.txt");
    mount(
        Some(&*host.to_string_lossy()),
        &bound,
        None,
        MsFlags::MS_BIND,
        None,
    )?;
    mount(
        None,
        &bound,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        None,
    )?;
    let fd = sys::open(&data, libc::O_RDWR).map_err(failed("open data"))?;
    let fd = sys::move_fd(fd, FD).map_err(failed("move fd"))?;
    sys::set_times(fd, (MTIME, 0), (MTIME, 0)).map_err(failed("times"))?;
    let mfd = sys::open(&mapped, libc::O_RDWR).map_err(failed("open mapped"))?;
    let map = sys::map(4096, libc::MAP_SHARED, mfd).map_err(failed("map"))?;
    sys::close(mfd);
    // Read by anything but O_NOATIME, its access time (older than its modification) moves.
    let quiet = tmp.join("quiet.txt");
    std::fs::write(&quiet, "untouched").map_err(failed("quiet"))?;
    let qfd = sys::open(&quiet, libc::O_RDONLY).map_err(failed("open quiet"))?;
    sys::set_times(qfd, (MTIME - 100, 0), (MTIME, 0)).map_err(failed("times"))?;
    sys::close(qfd);
    let mut five = [0u8; 5];
    sys::read(fd, &mut five).map_err(failed("read"))?;
    // Ahead of now: its reads never move it (relatime), so it must come back as it is.
    sys::set_times(fd, (ATIME, 0), (MTIME, 0)).map_err(failed("times"))?;
    std::env::set_current_dir(&sub).map_err(failed("chdir"))?;
    if args.iter().any(|a| a == "ro-root") {
        // Its superblock, as a nested container's (zdtm mntns_pivot_root_ro).
        mount(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    let mut kids = Vec::new();
    if args.iter().any(|a| a == "nested") {
        kids.push(nested_child(
            &tmp,
            args.iter().any(|a| a == "nested-ro-root"),
            args.iter().any(|a| a == "nested-back"),
        )?);
    }
    let jail = tmp.join("jail");
    for (arg, how) in [
        ("jailed", Jail::Chroot),
        ("jailed-maker", Jail::ChrootOwnNamespace),
        ("pivoted-kid", Jail::PivotOwnNamespace),
    ] {
        if args.iter().any(|a| a == arg) {
            kids.push(jailed_child(&jail, how)?);
        }
    }
    if args.iter().any(|a| a == "removed-bind-held-kid") {
        // Fd 55 held by a child alone (zdtm mntns_deleted: the test's daemon holds it).
        match sys::fork().map_err(failed("fork"))? {
            0 => loop {
                // SAFETY: pause takes no arguments.
                unsafe { libc::pause() };
            },
            pid => {
                sys::close(55);
                kids.push(pid);
            }
        }
    }
    Ok(Box::new(MountNs {
        map,
        kids,
        dir: dir.to_path_buf(),
    }))
}

/// How the jailed child gets into its jail.
#[derive(Clone, Copy, PartialEq)]
enum Jail {
    /// chroot into JAIL, in this namespace.
    Chroot,
    /// A mount namespace of its own first, a tmpfs (cryo-jail) on JAIL/../jail-ns there,
    /// then chroot into its directory `jail`.
    ChrootOwnNamespace,
    /// A mount namespace of its own, a tmpfs (cryo-jail) on JAIL/../jail-ns made its root
    /// (pivot_root, the old root detached: no proc, its executable not there).
    PivotOwnNamespace,
}

/// Makes JAIL (a directory of the tmpfs, no mount of its own) holding `sub` and
/// `inside.txt` ("written in the jail", open O_RDWR at [`JAILED_FD`]), chroots there and
/// moves to /sub.
fn enter_jail(jail: &Path) -> Result<(), String> {
    std::fs::create_dir_all(jail.join("sub")).map_err(failed("mkdir jail/sub"))?;
    nix::unistd::chroot(jail).map_err(|e| format!("chroot: {e}"))?;
    std::env::set_current_dir("/sub").map_err(failed("chdir /sub"))?;
    let fd = sys::open(
        Path::new("/inside.txt"),
        libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC,
    )
    .map_err(failed("open /inside.txt"))?;
    sys::move_fd(fd, JAILED_FD).map_err(failed("dup2"))?;
    sys::write_all(JAILED_FD, b"written in the jail").map_err(failed("write"))
}

/// What a process in the jail observes: its root's inode, its working directory, what its
/// fd [`JAILED_FD`] reads from 0, what /inside.txt reads and whether the two are one inode.
fn jail_view() -> String {
    let ino = |p: &str| std::fs::metadata(p).map(|m| m.ino()).unwrap_or(0);
    let mut buf = vec![0u8; 64];
    let n = sys::pread_all(JAILED_FD, &mut buf).unwrap_or(0);
    let fd_ino = sys::fstat_ino(JAILED_FD).unwrap_or(1);
    format!(
        "root-ino:{} cwd:{} fd:{} open:{} same:{}",
        ino("/"),
        std::env::current_dir().map_or_else(|e| e.to_string(), |d| d.display().to_string()),
        String::from_utf8_lossy(&buf[..n]),
        std::fs::read_to_string("/inside.txt").unwrap_or_else(|e| e.to_string()),
        fd_ino == ino("/inside.txt"),
    )
}

/// Forks a child that goes into JAIL as `how` says ([`enter_jail`]) and answers
/// [`jail_view`] to each byte on its request pipe (kept at [`JAIL_ASK`] here, the answers at
/// [`JAIL_ANSWER`]).
fn jailed_child(jail: &Path, how: Jail) -> Result<i32, String> {
    let (ask_rd, ask_wr) = sys::pipe().map_err(failed("pipe"))?;
    let (ans_rd, ans_wr) = sys::pipe().map_err(failed("pipe"))?;
    match sys::fork().map_err(failed("fork"))? {
        0 => {
            sys::close(ask_wr);
            sys::close(ans_rd);
            let above = jail.parent().unwrap_or(jail).join("jail-ns");
            let own_ns = || {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                    .map_err(|e| e.to_string())
                    .and_then(|()| std::fs::create_dir_all(&above).map_err(|e| e.to_string()))
                    .and_then(|()| {
                        mount(
                            Some("cryo-jail"),
                            &above,
                            Some("tmpfs"),
                            MsFlags::empty(),
                            Some("size=64k"),
                        )
                    })
            };
            let made = match how {
                Jail::Chroot => enter_jail(jail),
                Jail::ChrootOwnNamespace => own_ns().and_then(|()| enter_jail(&above.join("jail"))),
                Jail::PivotOwnNamespace => own_ns().and_then(|()| {
                    std::env::set_current_dir(&above).map_err(|e| e.to_string())?;
                    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
                    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
                        .map_err(|e| format!("umount the old root: {e}"))?;
                    enter_jail(Path::new("/"))
                }),
            };
            let _ = sys::write_all(ans_wr, if made.is_ok() { b"y\n" } else { b"n\n" });
            let mut b = [0u8; 1];
            while sys::read(ask_rd, &mut b).is_ok_and(|n| n == 1) {
                let _ = sys::write_all(ans_wr, format!("{}\n", jail_view()).as_bytes());
            }
            std::process::exit(0);
        }
        pid => {
            sys::close(ask_rd);
            sys::close(ans_wr);
            sys::move_fd(ask_wr, JAIL_ASK).map_err(failed("dup2"))?;
            sys::move_fd(ans_rd, JAIL_ANSWER).map_err(failed("dup2"))?;
            if jail_answer()? != "y" {
                return Err("the jailed child could not chroot".into());
            }
            Ok(pid)
        }
    }
}

/// One line the jailed child wrote.
fn jail_answer() -> Result<String, String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while sys::read(JAIL_ANSWER, &mut b).map_err(failed("read"))? == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Makes a FIFO at `path`, opens it O_RDWR|O_NONBLOCK at `fd` and writes `bytes` to it.
fn fifo_at(path: &Path, fd: i32, bytes: &[u8]) -> Result<(), String> {
    sys::mkfifo(path).map_err(failed("mkfifo"))?;
    let opened = sys::open(path, libc::O_RDWR | libc::O_NONBLOCK).map_err(failed("open"))?;
    sys::move_fd(opened, fd).map_err(failed("dup2"))?;
    sys::write_all(fd, bytes).map_err(failed("write"))
}

/// The path of the slave of the pty whose master is fd [`PTY_MASTER`].
fn pty_name() -> Result<String, String> {
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes the pty's number into `n`, alive for the call.
    let r = unsafe { libc::ioctl(PTY_MASTER, libc::TIOCGPTN, &mut n as *mut libc::c_uint) };
    if r < 0 {
        return Err(format!("TIOCGPTN: {}", std::io::Error::last_os_error()));
    }
    Ok(format!("/dev/pts/{n}"))
}

/// Forks a child that makes a mount namespace of its own inside this one, with a tmpfs
/// (cryo-mnt-inner) on TMP/inner holding `f`, and waits there; returns once it did.
fn nested_child(tmp: &Path, ro_root: bool, back: bool) -> Result<i32, String> {
    let inner = tmp.join("inner");
    std::fs::create_dir(&inner).map_err(failed("mkdir inner"))?;
    let (rd, wr) = sys::pipe().map_err(failed("pipe"))?;
    match sys::fork().map_err(failed("fork"))? {
        0 => {
            sys::close(rd);
            // `nested-back`: a child of its own forked first, left in this one's namespace.
            if back && sys::fork().map_err(failed("fork"))? == 0 {
                sys::close(wr);
                loop {
                    // SAFETY: pause takes no arguments.
                    unsafe { libc::pause() };
                }
            }
            let made = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    mount(
                        Some("cryo-mnt-inner"),
                        &inner,
                        Some("tmpfs"),
                        MsFlags::empty(),
                        Some("size=64k"),
                    )
                })
                .and_then(|()| {
                    std::fs::write(inner.join("f"), "only the child sees this")
                        .map_err(|e| e.to_string())
                })
                .and_then(|()| match ro_root {
                    // Its root read-only in its namespace alone (zdtm mntns_ro_root).
                    true => remount_read_only(Path::new("/")),
                    false => Ok(()),
                });
            let _ = sys::write_all(wr, if made.is_ok() { b"y" } else { b"n" });
            sys::close(wr);
            loop {
                // SAFETY: pause takes no arguments.
                unsafe { libc::pause() };
            }
        }
        pid => {
            sys::close(wr);
            let mut said = [0u8; 1];
            let n = sys::read(rd, &mut said).map_err(failed("read"))?;
            sys::close(rd);
            if n != 1 || said[0] != b'y' {
                return Err("the nested child could not make its namespace".into());
            }
            Ok(pid)
        }
    }
}

impl Mode for MountNs {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        let errno = |e: std::io::Error| format!("errno {}", e.raw_os_error().unwrap_or(0));
        match (verb, args) {
            ("linked", []) => std::fs::read_link(format!("/proc/self/fd/{LINKED_FD}"))
                .map(|l| l.display().to_string())
                .map_err(io_err),
            ("linked-write", [text]) => sys::pwrite_at(LINKED_FD, text.as_bytes(), 0)
                .map(|()| "ok".to_string())
                .map_err(io_err),
            ("accept-before", []) => {
                // SAFETY: accept4 on an fd this process owns, no address asked.
                let conn = unsafe {
                    libc::accept4(SOCK_BEFORE, std::ptr::null_mut(), std::ptr::null_mut(), 0)
                };
                if conn < 0 {
                    return Ok(errno(std::io::Error::last_os_error()));
                }
                let sent = sys::write_all(conn, b"accepted");
                sys::close(conn);
                sent.map(|()| "ok".to_string()).map_err(io_err)
            }
            ("held-before", []) => {
                // Whose mountinfo lists the mount of fds 41 and 42: ours, pid 1's (cryo's
                // namespace).
                let lists = |fd: i32, who: &str| -> Result<bool, String> {
                    let id = sys::mount_id_of(fd)?;
                    Ok(std::fs::read_to_string(format!("/proc/{who}/mountinfo"))
                        .is_ok_and(|t| t.lines().any(|l| l.split(' ').next() == Some(id.as_str()))))
                };
                let mut buf = vec![0u8; 64];
                let n = sys::pread_all(HELD_BEFORE, &mut buf).map_err(io_err)?;
                Ok(format!(
                    "ours:{} init's:{} {} /dev/null ours:{} init's:{}",
                    lists(HELD_BEFORE, "self")?,
                    lists(HELD_BEFORE, "1")?,
                    String::from_utf8_lossy(&buf[..n]),
                    lists(HELD_BEFORE + 1, "self")?,
                    lists(HELD_BEFORE + 1, "1")?,
                ))
            }
            ("fd", []) => {
                let pos = sys::tell(FD).map_err(io_err)?;
                let mut buf = vec![0u8; 256];
                let n = sys::pread_all(FD, &mut buf).map_err(io_err)?;
                Ok(format!("{pos} {}", String::from_utf8_lossy(&buf[..n])))
            }
            ("map", []) => Ok(String::from_utf8_lossy(&self.map[..16]).into_owned()),
            ("read", [path]) => Ok(std::fs::read_to_string(path).unwrap_or_else(errno)),
            ("bytes", [path]) => Ok(std::fs::read(path)
                .map(|b| b.escape_ascii().to_string())
                .unwrap_or_else(errno)),
            ("write", [path]) => Ok(std::fs::write(path, "x")
                .map(|()| "ok".to_string())
                .unwrap_or_else(errno)),
            ("stat", [path]) => {
                let m = std::fs::symlink_metadata(path).map_err(io_err)?;
                Ok(format!(
                    "{:o} {} {} {} {}",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid(),
                    m.mtime(),
                    m.atime() * 1_000_000_000 + m.atime_nsec()
                ))
            }
            ("readlink", [path]) => Ok(std::fs::read_link(path)
                .map_err(io_err)?
                .to_string_lossy()
                .into_owned()),
            ("jailed", []) => {
                sys::write_all(JAIL_ASK, b"?").map_err(failed("ask"))?;
                jail_answer()
            }
            ("kids", []) => Ok(self
                .kids
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(" ")),
            ("cwd", []) => Ok(std::env::current_dir()
                .map_err(io_err)?
                .to_string_lossy()
                .into_owned()),
            ("mount", [point]) => {
                let line = mountinfo_line(point)?;
                let f: Vec<&str> = line.split(' ').collect();
                let sep = f.iter().position(|&x| x == "-").unwrap_or(f.len());
                Ok(format!("{} {}", f[5], f.get(sep + 3).unwrap_or(&"")))
            }
            ("propagation", [point]) => {
                let line = mountinfo_line(point)?;
                let fields: Vec<&str> = line
                    .split(' ')
                    .skip(6)
                    .take_while(|f| *f != "-")
                    .filter(|f| {
                        f.starts_with("shared:") || f.starts_with("master:") || *f == "unbindable"
                    })
                    .collect();
                Ok(if fields.is_empty() {
                    "private".to_string()
                } else {
                    fields.join(" ")
                })
            }
            ("pty", []) => {
                let dev = |p: &str| {
                    std::fs::metadata(p)
                        .map(|m| m.dev())
                        .map_err(|e| format!("stat {p}: {e}"))
                };
                let same = dev("/proc/self/fd/46")? == dev("/dev/pts")?;
                let name = std::fs::read_link("/proc/self/fd/46").map_err(io_err)?;
                let name = name.display();
                Ok(format!(
                    "{} {name} same:{same}",
                    pty_name()?.trim_start_matches("/dev/pts/")
                ))
            }
            ("ns-fd", []) => {
                let ino = |p: &str| std::fs::metadata(p).map(|m| m.ino()).map_err(io_err);
                let same = ino(&format!("/proc/self/fd/{NS_FD}"))? == ino("/proc/self/ns/net")?;
                Ok(if same { "same" } else { "other" }.into())
            }
            ("inotify-touch", []) => {
                std::fs::write("/d/watched", b"x").map_err(io_err)?;
                sys::poll_in(INOTIFY_INSIDE, 2000).map_err(io_err)?;
                let event = sys::read_available(INOTIFY_INSIDE, 4096).map_err(io_err)?;
                if event.len() < 16 {
                    return Ok("none".into());
                }
                let wd = i32::from_ne_bytes(event[0..4].try_into().expect("4 bytes"));
                let mask = u32::from_ne_bytes(event[4..8].try_into().expect("4 bytes"));
                Ok(format!("{mask:x} wd{wd}"))
            }
            ("removed-fifo", []) => {
                let meta =
                    std::fs::metadata(format!("/proc/self/fd/{REMOVED_FIFO}")).map_err(io_err)?;
                let got = sys::read_available(REMOVED_FIFO, 4096).map_err(io_err)?;
                Ok(format!(
                    "{} {}",
                    meta.nlink(),
                    String::from_utf8_lossy(&got)
                ))
            }
            ("removed-null", []) => {
                let link = format!("/proc/self/fd/{REMOVED_NULL}");
                let meta = std::fs::metadata(&link).map_err(io_err)?;
                let name = std::fs::read_link(&link).map_err(io_err)?;
                let rdev = meta.rdev();
                Ok(format!(
                    "{}:{} {} {}",
                    nix::sys::stat::major(rdev),
                    nix::sys::stat::minor(rdev),
                    meta.nlink(),
                    name.display()
                ))
            }
            ("removed-bound", [point]) => {
                // Fd 55 (`removed-bind-held`) against the bind on POINT.
                let link = "/proc/self/fd/55";
                let held = std::fs::metadata(link).map_err(io_err)?;
                let shown = std::fs::metadata(point).map_err(io_err)?;
                let same = (held.dev(), held.ino()) == (shown.dev(), shown.ino());
                let name = std::fs::read_link(link).map_err(io_err)?;
                let fdinfo = std::fs::read_to_string("/proc/self/fdinfo/55").map_err(io_err)?;
                let mnt_id = fdinfo
                    .lines()
                    .find_map(|l| l.strip_prefix("mnt_id:"))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default();
                let table = std::fs::read_to_string("/proc/self/mountinfo").map_err(io_err)?;
                let on = table
                    .lines()
                    .find(|l| l.split(' ').next() == Some(mnt_id.as_str()))
                    .and_then(|l| l.split(' ').nth(4))
                    .unwrap_or("?")
                    .to_string();
                let mut buf = [0u8; 64];
                let n = sys::pread_all(55, &mut buf).map_err(io_err)?;
                Ok(format!(
                    "same:{same} {} on:{on} {} {}",
                    held.nlink(),
                    name.display(),
                    String::from_utf8_lossy(&buf[..n])
                ))
            }
            ("removed-dir", []) => {
                let link = format!("/proc/self/fd/{REMOVED_DIR}");
                let meta = std::fs::metadata(&link).map_err(io_err)?;
                let name = std::fs::read_link(&link).map_err(io_err)?;
                Ok(format!(
                    "{} {} {}",
                    meta.dev(),
                    meta.nlink(),
                    name.display()
                ))
            }
            ("pty-dev", []) => std::fs::metadata("/proc/self/fd/46")
                .map(|m| m.dev().to_string())
                .map_err(io_err),
            ("pty-read", []) => {
                let got = sys::read_available(PTY_SLAVE, 4096).map_err(io_err)?;
                Ok(String::from_utf8_lossy(&got).trim_end().to_string())
            }
            ("pty-write", [text]) => {
                sys::write_all(PTY_MASTER, format!("{text}\n").as_bytes()).map_err(io_err)?;
                Ok("ok".into())
            }
            ("open-ptmx", [path]) => {
                let fd =
                    sys::open(Path::new(path), libc::O_RDWR | libc::O_NOCTTY).map_err(io_err)?;
                let mut n: libc::c_uint = 0;
                // SAFETY: TIOCGPTN writes the pty's number into `n`, alive for the call.
                let r = unsafe { libc::ioctl(fd, libc::TIOCGPTN, &mut n as *mut libc::c_uint) };
                sys::close(fd);
                if r < 0 {
                    return Err(io_err(std::io::Error::last_os_error()));
                }
                Ok(format!("pty {n}"))
            }
            ("root", [point]) => Ok(mountinfo_line(point)?
                .split(' ')
                .nth(3)
                .unwrap_or("")
                .to_string()),
            ("ls", [path]) => {
                let mut names: Vec<String> = std::fs::read_dir(path)
                    .map_err(io_err)?
                    .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                    .collect();
                names.sort();
                Ok(names.join(" "))
            }
            ("mq-create", [name]) => {
                let name = name.trim_start_matches('/');
                Ok(sys::mq_open(name, libc::O_CREAT | libc::O_RDWR, None)
                    .map(|q| {
                        sys::close(q);
                        "ok".to_string()
                    })
                    .unwrap_or_else(errno))
            }
            ("mq-unlink", [name]) => Ok(sys::mq_unlink(name.trim_start_matches('/'))
                .map(|()| "ok".to_string())
                .unwrap_or_else(errno)),
            ("fd-device", []) => {
                let link =
                    std::fs::read_link(format!("/proc/self/fd/{DEVICE_FD}")).map_err(io_err)?;
                let m = sys::fstat(DEVICE_FD).map_err(io_err)?;
                let wrote = sys::write_all(DEVICE_FD, b"x").is_ok();
                Ok(format!(
                    "{} {}:{} wrote:{wrote}",
                    link.display(),
                    nix::sys::stat::major(m.st_rdev),
                    nix::sys::stat::minor(m.st_rdev)
                ))
            }
            ("node", [path]) => {
                use std::os::unix::fs::FileTypeExt;
                let m = std::fs::symlink_metadata(path).map_err(io_err)?;
                let kind = match m.file_type() {
                    t if t.is_char_device() => "c",
                    t if t.is_block_device() => "b",
                    _ => "other",
                };
                Ok(format!(
                    "{kind} {}:{} {:o} {}:{} {} {}",
                    nix::sys::stat::major(m.rdev()),
                    nix::sys::stat::minor(m.rdev()),
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid(),
                    m.nlink(),
                    m.ino()
                ))
            }
            ("fan-write", names) => {
                for name in names {
                    std::fs::write(self.dir.join(name), b"x").map_err(io_err)?;
                }
                super::notify::fanotify_events(FANOTIFY_FD)
            }
            ("fifo", []) => {
                let at = std::fs::metadata(self.dir.join("tmp/fifo")).map_err(io_err)?;
                let held = sys::fstat(FIFO_FD).map_err(io_err)?;
                let mut buf = vec![0u8; 256];
                let n = sys::read(FIFO_FD, &mut buf).unwrap_or(0);
                sys::write_all(FIFO_FD, &buf[..n]).map_err(io_err)?;
                Ok(format!(
                    "same:{} {}",
                    (at.dev(), at.ino()) == (held.st_dev, held.st_ino),
                    String::from_utf8_lossy(&buf[..n])
                ))
            }
            ("mounted", [point]) => Ok(if mountinfo_line(point).is_ok() {
                "yes"
            } else {
                "no"
            }
            .to_string()),
            ("mount-tmpfs", [point]) => Ok(nix::mount::mount(
                Some("cryo-probe"),
                *point,
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .map(|()| "ok".to_string())
            .unwrap_or_else(|e| errno(e.into()))),
            ("umount", [point]) => Ok(nix::mount::umount2(*point, nix::mount::MntFlags::empty())
                .map(|()| "ok".to_string())
                .unwrap_or_else(|e| errno(e.into()))),
            ("bind", [from, to]) => Ok(nix::mount::mount(
                Some(*from),
                *to,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map(|()| "ok".to_string())
            .unwrap_or_else(|e| errno(e.into()))),
            _ => unknown(verb),
        }
    }
}

/// The line of this process's mountinfo for the topmost mount on `point`.
fn mountinfo_line(point: &str) -> Result<String, String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(io_err)?;
    let want = point.replace(' ', "\\040");
    text.lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(want.as_str()))
        .map(str::to_string)
        .ok_or_else(|| format!("no mount on {point}"))
}
