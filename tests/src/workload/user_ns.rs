//! `user-ns SETTING...`: a process in a user namespace of its own, one level below ours. This
//! process clones it (CLONE_NEWUSER, with CLONE_NEWPID for `pidns`: the namespace's init),
//! writes its maps from outside as `unshare -U` does, and only waits for it (ending as it
//! ends); the process answers the commands from inside.
//!
//! ```text
//! settings
//! uid=IN:OUT:N[,...]   its uid_map (default 0:0:1: `unshare -U -r` as root)
//! gid=IN:OUT:N[,...]   its gid_map (default 0:0:1)
//! setgroups=allow      leave setgroups allowed (default: deny, written before gid_map)
//! pidns                the namespace's init too (`unshare -Urpf`): it is pid 1
//! root                 inside, first: uids and gids 0 there (`unshare -r`; where 0 is not
//!                      our root, the control dir and fifos must be open to it)
//! uts=HOST             inside: unshare(CLONE_NEWUTS) (owned by the user namespace), sethostname
//! net                  inside: unshare(CLONE_NEWNET) (owned by the user namespace), lo up,
//!                      net.ipv4.ip_local_port_range 40000 50000
//! ping                 inside, with `net`: net.ipv4.ping_group_range 0 0, a ping socket
//! ipc                  inside: unshare(CLONE_NEWIPC) (owned by the user namespace),
//!                      kernel.msgmax 4000, a segment (key 0x5eed, 4096 bytes, mode 0640)
//!                      holding "cryo-userns-ipc" and a queue (key 0x5eee) holding (1 "one")
//! mnt=DIR              inside: unshare(CLONE_NEWNS) (owned by the user namespace), a tmpfs
//!                      on DIR (size=1m,mode=0751,uid=1,gid=1) holding `file` ("cryo-tmpfs",
//!                      owner 1:1, mode 0640) and `sock`, a listener's (owner 1:1)
//! linked=near|far      inside: DIR/linked (DIR: the control dir) written "cryo-linked", a
//!                      second link to it (near: DIR/linked.other; far: DIR/far/linked.other),
//!                      opened read-write, its first name removed, then "+more" appended
//! linked=tmpfs         with `mnt=DIR`, inside: DIR/sub/linked written "cryo-linked", a second
//!                      link DIR/linked.other, opened, then DIR/sub/linked and DIR/sub removed
//! linked=tmpfile       with `mnt=DIR`, inside: a file made by open(DIR, O_TMPFILE|O_RDWR),
//!                      written "cryo-linked"
//!     linked-flags -> its description's F_GETFL, octal
//! landlock             inside, last: a Landlock domain handling file reads (allowed beneath
//!                      /proc /usr /lib /lib64 /etc)
//! become=ID            inside: groups ID+1,ID+2, gids and uids ID (keeping the
//!                      capabilities: PR_SET_KEEPCAPS, then capset effective = permitted)
//! child                inside: a child answering `child` (forked after `uts`, `become`)
//! thread               inside: a second thread, answering `thread` (made last)
//! zombie               inside: a child that exits at once (code 7), left unreaped
//! nested               inside: a child in a user namespace of its own below (a second level)
//! shared               this process joins the user namespace too (setns) and stays outside
//!                      the dump
//!
//! commands
//! ids            uid R E S gid R E S groups G,G   (getresuid, getresgid, getgroups)
//! maps           uid_map;gid_map;setgroups, spaces collapsed, lines joined with ','
//! caps           CapInh CapPrm CapEff CapBnd CapAmb   (/proc/self/status), securebits HEX
//! sethostname N  sethostname(N), then the nodename uname reads
//! hostname       the nodename
//! ns KIND        the link /proc/self/ns/KIND
//! sysctl PATH    the value of /proc/sys/PATH
//! ip ARGS        the output of `ip ARGS` run inside, lines joined by `|`
//! settled        waits until no IPv6 address is tentative: ok
//! ping-socket    the ping socket's SO_TYPE and SO_PROTOCOL; ping_group_range
//! ipc            the segment's key, mode, owner, creator and text; the queue's message count
//! mnt            DIR/file's text, owner and mode; DIR/sock's owner (connected to); the tmpfs's
//!                options as mountinfo shows them
//! outside        its pid as /proc (mounted outside) names it: the link /proc/self
//! child          the child's getpid getppid and ids, from the child
//! thread         the second thread's gettid and ids, from that thread
//! zombie         the zombie's pid
//! linked         the held file's inode, links, size, its fd's link, and its text
//! reap           waits for the zombie: PID exited CODE
//! ```

use std::io;
use std::path::Path;

use super::{failed, io_err, sys, unknown, Mode};

/// `user-ns`
pub fn start(args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    let mut uid_map = "0 0 1\n".to_string();
    let mut gid_map = uid_map.clone();
    let mut deny = true;
    let has = |name: &str| args.iter().any(|a| a == name);
    for a in args {
        let map =
            |v: &str| -> String { v.split(',').map(|l| l.replace(':', " ") + "\n").collect() };
        if let Some(v) = a.strip_prefix("uid=") {
            uid_map = map(v);
        } else if let Some(v) = a.strip_prefix("gid=") {
            gid_map = map(v);
        } else if a == "setgroups=allow" {
            deny = false;
        }
    }
    let mut flags = libc::CLONE_NEWUSER;
    if has("pidns") {
        flags |= libc::CLONE_NEWPID;
    }
    let (go_rd, go_wr) = sys::pipe().map_err(failed("pipe"))?;
    let inner = sys::fork_sharing(flags).map_err(failed("clone into a user namespace"))?;
    if inner != 0 {
        sys::close(go_rd);
        let write = |name: &str, text: &str| std::fs::write(format!("/proc/{inner}/{name}"), text);
        let written = (|| {
            if deny {
                write("setgroups", "deny")?;
            }
            write("uid_map", &uid_map)?;
            write("gid_map", &gid_map)
        })();
        if let Err(e) = written {
            eprintln!("user-ns: write the maps: {e}");
            sys::signal(inner, libc::SIGKILL).ok();
            std::process::exit(1);
        }
        if has("shared") {
            let ns = std::fs::File::open(format!("/proc/{inner}/ns/user")).expect("its ns");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER).expect("setns");
        }
        sys::write_all(go_wr, b"g").ok();
        wait_for(inner);
    }
    sys::close(go_wr);
    let mut go = [0u8; 1];
    match sys::read(go_rd, &mut go) {
        Ok(1) => {}
        other => return Err(format!("no go from outside: {other:?}")),
    }
    sys::close(go_rd);
    if has("root") {
        // SAFETY: single-threaded here; setresgid and setresuid take numbers.
        unsafe {
            sys::cvt(libc::setresgid(0, 0, 0)).map_err(failed("setresgid 0"))?;
            sys::cvt(libc::setresuid(0, 0, 0)).map_err(failed("setresuid 0"))?;
        }
    }
    // A session of its own: the dump takes it from its leader.
    sys::setsid().map_err(failed("setsid"))?;
    if let Some(host) = args.iter().find_map(|a| a.strip_prefix("uts=")) {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS)
            .map_err(|e| format!("unshare uts: {e}"))?;
        nix::unistd::sethostname(host).map_err(|e| format!("sethostname: {e}"))?;
    }
    if has("net") {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("unshare net: {e}"))?;
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .map_err(failed("ip link set lo up"))?;
        if !up.success() {
            return Err(format!("ip link set lo up: {up}"));
        }
    }
    if has("net") {
        std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 50000")
            .map_err(failed("write ip_local_port_range"))?;
    }
    let ping = if has("ping") {
        std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 0")
            .map_err(failed("write ping_group_range"))?;
        // SAFETY: socket takes numbers; the fd is ours, kept for the `ping` command.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP) };
        Some(sys::cvt(fd).map_err(failed("ping socket"))?)
    } else {
        None
    };
    if has("ipc") {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWIPC)
            .map_err(|e| format!("unshare ipc: {e}"))?;
        make_ipc_objects().map_err(failed("ipc objects"))?;
    }
    let mnt = args
        .iter()
        .find_map(|a| a.strip_prefix("mnt="))
        .map(String::from);
    if let Some(dir) = &mnt {
        make_tmpfs(dir).map_err(failed("tmpfs"))?;
    }
    if let Some(id) = args.iter().find_map(|a| a.strip_prefix("become=")) {
        let id: u32 = id.parse().map_err(|_| format!("bad become={id}"))?;
        become_keeping_caps(id).map_err(failed("become"))?;
    }
    let mut child = None;
    if has("child") || has("nested") {
        let (ask_rd, ask_wr) = sys::pipe().map_err(failed("pipe"))?;
        let (tell_rd, tell_wr) = sys::pipe().map_err(failed("pipe"))?;
        let nested = has("nested");
        match sys::fork().map_err(failed("fork"))? {
            0 => {
                if nested {
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
                        .expect("a nested user namespace");
                }
                sys::close(ask_wr);
                sys::close(tell_rd);
                let mut byte = [0u8; 1];
                while matches!(sys::read(ask_rd, &mut byte), Ok(1)) {
                    let me = format!("{} {} {}", std::process::id(), sys::getppid(), ids());
                    let _ = sys::write_all(tell_wr, me.as_bytes());
                }
                // SAFETY: _exit takes a number.
                unsafe { libc::_exit(0) }
            }
            _ => {
                sys::close(ask_rd);
                sys::close(tell_wr);
                child = Some((ask_wr, tell_rd));
            }
        }
    }
    let zombie = if has("zombie") {
        match sys::fork().map_err(failed("fork"))? {
            // SAFETY: _exit takes a number.
            0 => unsafe { libc::_exit(7) },
            pid => {
                // Dead before we answer, left unreaped (WNOWAIT).
                // SAFETY: info is a valid siginfo_t for waitid to fill.
                let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                let flags = libc::WEXITED | libc::WNOWAIT;
                // SAFETY: as above; P_PID with the child's pid.
                if unsafe { libc::waitid(libc::P_PID, pid as u32, &mut info, flags) } < 0 {
                    return Err(format!("waitid: {}", io::Error::last_os_error()));
                }
                Some(pid)
            }
        }
    } else {
        None
    };
    let thread = has("thread").then(|| {
        let (ask, asked) = std::sync::mpsc::channel::<()>();
        let (tell, told) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for () in asked {
                // SAFETY: gettid takes nothing.
                let tid = unsafe { libc::gettid() };
                if tell.send(format!("{tid} {}", ids())).is_err() {
                    break;
                }
            }
        });
        (ask, told)
    });
    let linked = args
        .iter()
        .find_map(|a| a.strip_prefix("linked="))
        .map(|kind| match (kind, &mnt) {
            ("tmpfs", Some(on)) => hold_linked_in_removed_dir(Path::new(on)),
            ("tmpfs", None) => Err(io::Error::other("linked=tmpfs wants mnt=DIR")),
            ("tmpfile", Some(on)) => hold_tmpfile(Path::new(on)),
            ("tmpfile", None) => Err(io::Error::other("linked=tmpfile wants mnt=DIR")),
            (far, _) => hold_linked(dir, far == "far"),
        })
        .transpose()
        .map_err(failed("linked"))?;
    if has("landlock") {
        let readable: Vec<&str> = ["/proc", "/usr", "/lib", "/lib64", "/etc"]
            .into_iter()
            .filter(|p| Path::new(p).exists())
            .collect();
        sys::landlock(&readable, 0, 0).map_err(failed("landlock"))?;
    }
    Ok(Box::new(UserNs {
        child,
        thread,
        zombie,
        mnt,
        ping,
        linked,
    }))
}

/// `linked=`: the file, held open by its removed name (see the module doc).
fn hold_linked(dir: &Path, far: bool) -> io::Result<std::fs::File> {
    use std::io::Write;
    let name = dir.join("linked");
    std::fs::write(&name, "cryo-linked")?;
    let other = if far {
        std::fs::create_dir(dir.join("far"))?;
        dir.join("far/linked.other")
    } else {
        dir.join("linked.other")
    };
    std::fs::hard_link(&name, other)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(&name)?;
    std::fs::remove_file(&name)?;
    file.write_all(b"+more")?;
    Ok(file)
}

/// `linked=tmpfs`: the file, held open by its removed name in a removed directory of the
/// tmpfs (see the module doc).
fn hold_linked_in_removed_dir(on: &Path) -> io::Result<std::fs::File> {
    std::fs::create_dir(on.join("sub"))?;
    let name = on.join("sub/linked");
    std::fs::write(&name, "cryo-linked")?;
    std::fs::hard_link(&name, on.join("linked.other"))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(&name)?;
    std::fs::remove_file(&name)?;
    std::fs::remove_dir(on.join("sub"))?;
    Ok(file)
}

/// `linked=tmpfile`: an unnamed file of the tmpfs (see the module doc).
fn hold_tmpfile(on: &Path) -> io::Result<std::fs::File> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(on)?;
    file.write_all(b"cryo-linked")?;
    Ok(file)
}

const SHM_KEY: i32 = 0x5eed;
const MSG_KEY: i32 = 0x5eee;
const SHM_TEXT: &[u8] = b"cryo-userns-ipc";

/// `ipc`: kernel.msgmax, the segment and the queue (see the module doc).
fn make_ipc_objects() -> io::Result<()> {
    std::fs::write("/proc/sys/kernel/msgmax", "4000")?;
    // SAFETY: shmget takes no pointers.
    let shm = sys::cvt(unsafe { libc::shmget(SHM_KEY, 4096, libc::IPC_CREAT | 0o640) })?;
    // SAFETY: msgget takes no pointers.
    let msg = sys::cvt(unsafe { libc::msgget(MSG_KEY, libc::IPC_CREAT | 0o600) })?;
    // SAFETY: a new mapping of the segment, written within its 4096 bytes, then detached.
    unsafe {
        let at = libc::shmat(shm, std::ptr::null(), 0);
        if at as isize == -1 {
            return Err(io::Error::last_os_error());
        }
        std::ptr::copy_nonoverlapping(SHM_TEXT.as_ptr(), at.cast::<u8>(), SHM_TEXT.len());
        libc::shmdt(at);
    }
    super::sysv_ipc::msgsnd(msg, 1, b"one")
}

/// `ipc`: `key mode uid gid cuid cgid TEXT; messages N` of the objects as seen from inside.
fn ipc_objects() -> io::Result<String> {
    // SAFETY: shmget and msgget take no pointers; IPC_STAT fills the structs we own; the
    // segment is mapped read-only, read within its size and detached.
    unsafe {
        let shm = sys::cvt(libc::shmget(SHM_KEY, 0, 0))?;
        let mut ds: libc::shmid_ds = std::mem::zeroed();
        sys::cvt(libc::shmctl(shm, libc::IPC_STAT, &mut ds))?;
        let at = libc::shmat(shm, std::ptr::null(), libc::SHM_RDONLY);
        if at as isize == -1 {
            return Err(io::Error::last_os_error());
        }
        let text = std::slice::from_raw_parts(at.cast::<u8>(), SHM_TEXT.len()).to_vec();
        libc::shmdt(at);
        let msg = sys::cvt(libc::msgget(MSG_KEY, 0))?;
        let mut mds: libc::msqid_ds = std::mem::zeroed();
        sys::cvt(libc::msgctl(msg, libc::IPC_STAT, &mut mds))?;
        let p = ds.shm_perm;
        Ok(format!(
            "{:#x} {:o} {} {} {} {} {}; messages {}",
            p.__key,
            p.mode & 0o777,
            p.uid,
            p.gid,
            p.cuid,
            p.cgid,
            String::from_utf8_lossy(&text),
            mds.msg_qnum
        ))
    }
}

/// `mnt=DIR`: a mount namespace of its own (its mounts private), the tmpfs on `dir`.
fn make_tmpfs(dir: &str) -> io::Result<()> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    fill_tmpfs(dir)
}

/// The tmpfs on `dir` and what it holds (see [`make_tmpfs`]).
fn fill_tmpfs(dir: &str) -> io::Result<()> {
    use nix::mount::{mount, MsFlags};
    use std::os::unix::fs::PermissionsExt;
    mount(
        Some("cryo-userns-tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m,mode=0751,uid=1,gid=1"),
    )?;
    let file = Path::new(dir).join("file");
    std::fs::write(&file, "cryo-tmpfs")?;
    std::os::unix::fs::chown(&file, Some(1), Some(1))?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640))?;
    // A listener bound there, its file given to 1:1 too (leaked: it lives as long as we do).
    let sock = std::os::unix::net::UnixListener::bind(Path::new(dir).join("sock"))?;
    std::os::unix::fs::chown(Path::new(dir).join("sock"), Some(1), Some(1))?;
    std::mem::forget(sock);
    Ok(())
}

/// `mnt`: `TEXT uid gid mode; sock uid gid; OPTIONS` of DIR/file, DIR/sock (answering a
/// connection) and DIR's tmpfs.
fn tmpfs_state(dir: &str) -> io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let file = Path::new(dir).join("file");
    let text = std::fs::read_to_string(&file)?;
    let md = std::fs::metadata(&file)?;
    let sock = Path::new(dir).join("sock");
    std::os::unix::net::UnixStream::connect(&sock)?;
    let smd = std::fs::metadata(&sock)?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let options = mountinfo
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some(dir))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("")
        .to_string();
    Ok(format!(
        "{text} {} {} {:o}; sock {} {}; {options}",
        md.uid(),
        md.gid(),
        md.mode() & 0o7777,
        smd.uid(),
        smd.gid()
    ))
}

/// Waits for `inner` and ends as it ended: killed by the same signal, or with its code.
fn wait_for(inner: i32) -> ! {
    let mut status = 0;
    // SAFETY: status is a valid int for waitpid to fill; signal, kill and _exit take numbers.
    unsafe {
        while libc::waitpid(inner, &mut status, 0) < 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            libc::signal(sig, libc::SIG_DFL);
            libc::kill(libc::getpid(), sig);
        }
        libc::_exit(libc::WEXITSTATUS(status))
    }
}

/// Groups `id`+1 and `id`+2, gids and uids `id`, with the capabilities kept and effective.
fn become_keeping_caps(id: u32) -> io::Result<()> {
    let groups = [id + 1, id + 2];
    let mut header = [0x2008_0522u32, 0];
    let mut data = [0u32; 6];
    // SAFETY: single-threaded here; each call takes numbers or pointers to our live locals.
    unsafe {
        sys::cvt(libc::setgroups(groups.len(), groups.as_ptr()))?;
        sys::cvt(libc::setresgid(id, id, id))?;
        sys::cvt(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0))?;
        sys::cvt(libc::setresuid(id, id, id))?;
        sys::cvt(libc::syscall(libc::SYS_capget, header.as_mut_ptr(), data.as_mut_ptr()) as i32)?;
        // Effective (words 0 and 3) = permitted (words 1 and 4).
        (data[0], data[3]) = (data[1], data[4]);
        sys::cvt(libc::syscall(libc::SYS_capset, header.as_mut_ptr(), data.as_ptr()) as i32)?;
    }
    Ok(())
}

/// `uid R E S gid R E S groups G,G` as the calling process sees them.
fn ids() -> String {
    let (mut r, mut e, mut s) = (0, 0, 0);
    let (mut gr, mut ge, mut gs) = (0, 0, 0);
    let mut groups = [0 as libc::gid_t; 64];
    // SAFETY: each call fills the integers or the array (of the length passed) we own.
    let n = unsafe {
        libc::getresuid(&mut r, &mut e, &mut s);
        libc::getresgid(&mut gr, &mut ge, &mut gs);
        libc::getgroups(groups.len() as i32, groups.as_mut_ptr())
    };
    let groups: Vec<String> = groups[..n.max(0) as usize]
        .iter()
        .map(|g| g.to_string())
        .collect();
    format!(
        "uid {r} {e} {s} gid {gr} {ge} {gs} groups {}",
        groups.join(",")
    )
}

/// A file of /proc/self, its lines with spaces collapsed, joined with ','.
fn collapsed(name: &str) -> io::Result<String> {
    let text = std::fs::read_to_string(format!("/proc/self/{name}"))?;
    Ok(text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(","))
}

struct UserNs {
    /// The child's ends: ask, answer.
    child: Option<(i32, i32)>,
    /// The second thread's ends: ask, answer.
    thread: Option<(
        std::sync::mpsc::Sender<()>,
        std::sync::mpsc::Receiver<String>,
    )>,
    /// The unreaped child's pid.
    zombie: Option<i32>,
    /// The file held by its removed name (`linked=`).
    linked: Option<std::fs::File>,
    /// The tmpfs's mount point (`mnt=DIR`).
    mnt: Option<String>,
    /// The ping socket (`ping`).
    ping: Option<i32>,
}

impl Mode for UserNs {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("ids", []) => Ok(ids()),
            ("ip", args) => super::netns::run_ip(args),
            ("settled", []) => super::netns::settled().map(|()| "ok".into()),
            ("maps", []) => Ok(format!(
                "{};{};{}",
                collapsed("uid_map").map_err(io_err)?,
                collapsed("gid_map").map_err(io_err)?,
                collapsed("setgroups").map_err(io_err)?
            )),
            ("caps", []) => {
                let status = std::fs::read_to_string("/proc/self/status").map_err(io_err)?;
                let field = |name: &str| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                        .unwrap_or("")
                        .trim()
                        .to_string()
                };
                // SAFETY: PR_GET_SECUREBITS takes no pointer.
                let securebits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
                Ok(format!(
                    "{} securebits {securebits:#x}",
                    ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
                        .map(field)
                        .join(" ")
                ))
            }
            ("sethostname", [name]) => {
                nix::unistd::sethostname(name).map_err(|e| e.to_string())?;
                Ok(hostname())
            }
            ("hostname", []) => Ok(hostname()),
            ("ns", [kind]) => std::fs::read_link(format!("/proc/self/ns/{kind}"))
                .map(|l| l.to_string_lossy().into_owned())
                .map_err(io_err),
            ("sysctl", [path]) => std::fs::read_to_string(format!("/proc/sys/{path}"))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .map_err(io_err),
            ("ipc", []) => ipc_objects().map_err(io_err),
            ("ping-socket", []) => {
                let fd = self.ping.ok_or("no ping socket")?;
                let opt = |name| {
                    let (mut v, mut len) = (0i32, 4 as libc::socklen_t);
                    // SAFETY: v and len are ours, of the sizes passed.
                    let r = unsafe {
                        libc::getsockopt(
                            fd,
                            libc::SOL_SOCKET,
                            name,
                            (&mut v as *mut i32).cast(),
                            &mut len,
                        )
                    };
                    sys::cvt(r).map(|_| v).map_err(io_err)
                };
                Ok(format!(
                    "type {} protocol {}; range {}",
                    opt(libc::SO_TYPE)?,
                    opt(libc::SO_PROTOCOL)?,
                    std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
                        .map_err(io_err)?
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                ))
            }
            ("mnt", []) => tmpfs_state(self.mnt.as_deref().ok_or("no mnt=")?).map_err(io_err),
            ("outside", []) => std::fs::read_link("/proc/self")
                .map(|l| l.to_string_lossy().into_owned())
                .map_err(io_err),
            ("child", []) => {
                let (ask, answer) = self.child.ok_or("no child")?;
                sys::write_all(ask, b"?").map_err(io_err)?;
                let mut buf = [0u8; 256];
                let n = sys::read(answer, &mut buf).map_err(io_err)?;
                Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
            }
            ("linked", []) => {
                use std::io::{Read, Seek};
                use std::os::fd::AsRawFd;
                use std::os::unix::fs::MetadataExt;
                let mut file = self.linked.as_ref().ok_or("no linked file")?;
                let meta = file.metadata().map_err(io_err)?;
                let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
                    .map_err(io_err)?;
                let mut text = String::new();
                file.rewind().map_err(io_err)?;
                file.read_to_string(&mut text).map_err(io_err)?;
                Ok(format!(
                    "ino {} links {} size {} {} {text}",
                    meta.ino(),
                    meta.nlink(),
                    meta.size(),
                    link.display()
                ))
            }
            ("linked-flags", []) => {
                use std::os::fd::AsRawFd;
                let file = self.linked.as_ref().ok_or("no linked file")?;
                // SAFETY: F_GETFL on our own fd.
                let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
                Ok(format!("{flags:o}"))
            }
            ("zombie", []) => self
                .zombie
                .map(|z| z.to_string())
                .ok_or_else(|| "no zombie".into()),
            ("reap", []) => {
                let pid = self.zombie.ok_or("no zombie")?;
                let mut status = 0;
                // SAFETY: status is a valid int for waitpid to fill.
                let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if got != pid {
                    return Err(format!(
                        "waitpid {pid}: {got} {}",
                        io::Error::last_os_error()
                    ));
                }
                Ok(format!("{pid} exited {}", libc::WEXITSTATUS(status)))
            }
            ("thread", []) => {
                let (ask, answer) = self.thread.as_ref().ok_or("no thread")?;
                ask.send(()).map_err(|e| e.to_string())?;
                answer.recv().map_err(|e| e.to_string())
            }
            _ => unknown(verb),
        }
    }
}

/// The nodename uname reads.
fn hostname() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.nodename().to_string_lossy().into_owned())
        .unwrap_or_default()
}
