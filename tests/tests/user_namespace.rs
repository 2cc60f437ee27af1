//! A process tree in a user namespace of its own (issue 12), one level below cryo's: restored
//! in a new one with the same maps and setgroups, the same ids and capabilities as the
//! process sees them from inside, root's powers there (sethostname in the UTS namespace it
//! owns); with the tree's own PID namespace owned by it (`unshare -Urpf`), threads and
//! children too, and in ours (`unshare -Ur`: cryo gives their pids through ns_last_pid).
//! Its network, IPC and mount namespaces made inside it (`unshare -Urnim`) come back owned by
//! the new one, with their state. Refused at dump, naming pid, thread, the user namespace and
//! why: a nested one, one shared with a process outside the dump.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{cryo_bin, Workload};

/// What a process of `w` observes of its user namespace and itself, from inside.
fn observed(w: &Workload) -> Vec<String> {
    ["maps", "ids", "caps", "hostname"]
        .iter()
        .map(|c| format!("{c}: {}", w.cmd(c)))
        .collect()
}

/// The user namespace link of process `pid` (as we see it).
fn user_ns(pid: impl std::fmt::Display) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/user"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The inode of the user namespace that owns namespace `kind` of process `pid`
/// (NS_GET_USERNS), and that of the user namespace `pid` is in.
pub(crate) fn owner_and_own(pid: impl std::fmt::Display, kind: &str) -> (u64, u64) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/{kind}")).unwrap();
    // SAFETY: NS_GET_USERNS (_IO(0xb7, 1)) takes no argument and answers a new fd.
    let owner = unsafe { libc::ioctl(ns.as_raw_fd(), 0xb701) };
    assert!(
        owner >= 0,
        "NS_GET_USERNS: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the fd was just returned to us and nothing else owns it.
    let owner = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(owner) });
    let own = std::fs::metadata(format!("/proc/{pid}/ns/user")).unwrap();
    (owner.metadata().unwrap().ino(), own.ino())
}

/// Dumps `w` (killed), restores it, and checks that it observes what it did, in a new user
/// namespace: not ours, not the original's.
fn dump_and_restore_in_a_new_one(w: &mut Workload) -> Vec<String> {
    let before = observed(w);
    let original = w.cmd("ns user");
    assert_ne!(
        original,
        user_ns("self"),
        "the original is in one of its own"
    );
    // Held so that its inode number is not given to the new one once the original is gone.
    let _original_held = std::fs::File::open(format!("/proc/{}/ns/user", w.pid())).unwrap();
    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_background(&img);
    let after = observed(w);
    assert_eq!(after, before, "observed from inside after the restore");
    let restored = w.cmd("ns user");
    assert_ne!(
        restored,
        user_ns("self"),
        "restored into cryo's user namespace"
    );
    assert_ne!(restored, original, "the original's namespace is gone");
    let (owner, own) = owner_and_own(w.pid(), "uts");
    assert_eq!(
        owner, own,
        "its UTS namespace is owned by its user namespace"
    );
    assert_eq!(
        w.cmd("sethostname cryo-after"),
        "cryo-after",
        "root in its namespace renames its own UTS namespace"
    );
    before
}

#[test]
fn a_process_in_a_user_namespace_of_its_own_comes_back_in_a_new_one() {
    cryo_bin();
    // `unshare -U -r --uts` as root: 0 0 1, setgroups deny, every capability inside.
    let mut w = Workload::spawn("user-ns", &["uts=cryo-userns"]);
    let before = dump_and_restore_in_a_new_one(&mut w);
    assert_eq!(
        before,
        [
            "maps: 0 0 1;0 0 1;deny",
            "ids: uid 0 0 0 gid 0 0 0 groups ",
            "caps: 0000000000000000 000001ffffffffff 000001ffffffffff 000001ffffffffff \
             0000000000000000 securebits 0x0",
            "hostname: cryo-userns",
        ]
    );
}

/// Maps of many lines (inside 0 is outside 0, 1.. is 100000.., gids 200000..), setgroups
/// allowed, the process uid 1000 inside (100999 for us) with groups 1001 and 1002, keeping its
/// capabilities.
const MANY_LINES: &[&str] = &[
    "uid=0:0:1,1:100000:65536",
    "gid=0:0:1,1:200000:65536",
    "setgroups=allow",
    "become=1000",
];

#[test]
fn a_process_with_a_map_of_many_lines_comes_back_with_its_ids_inside() {
    cryo_bin();
    let mut w = Workload::spawn("user-ns", &[MANY_LINES, &["uts=cryo-userns-map"]].concat());
    assert_eq!(
        w.cmd("maps"),
        "0 0 1,1 100000 65536;0 0 1,1 200000 65536;allow"
    );
    assert_eq!(
        cryo_tests::status_field(w.pid(), "Uid").unwrap(),
        "100999\t100999\t100999\t100999",
        "as we see it"
    );
    let before = dump_and_restore_in_a_new_one(&mut w);
    assert_eq!(
        before[1..3],
        [
            "ids: uid 1000 1000 1000 gid 1000 1000 1000 groups 1001,1002",
            "caps: 0000000000000000 000001ffffffffff 000001ffffffffff 000001ffffffffff \
             0000000000000000 securebits 0x10"
        ],
        "inside"
    );
}

#[test]
fn a_tree_in_a_user_namespace_owning_its_pid_namespace_comes_back_with_its_pids() {
    cryo_bin();
    // `unshare -Urpf --uts`: the init (pid 1) with a child and a second thread.
    let mut w = Workload::spawn(
        "user-ns",
        &["pidns", "uts=cryo-userns-pid", "child", "thread"],
    );
    assert_eq!(w.pid(), 1, "the namespace's init answers");
    let child = w.cmd("child");
    assert!(child.starts_with("2 1 uid 0 0 0"), "{child}");
    let outside = w.cmd("outside");
    let img = w.path("img");
    let out = w.cryo(&["dump", "-t", &outside, "-D", img.to_str().unwrap()]);
    out.assert_success();
    w.wait_original();
    w.restore_background(&img);
    assert_eq!(w.cmd("pid"), "1", "getpid() in the restored init");
    assert_eq!(w.cmd("child"), child, "the child, from inside");
    assert_eq!(w.cmd("maps"), "0 0 1;0 0 1;deny");
    assert_eq!(w.cmd("hostname"), "cryo-userns-pid");
    assert_eq!(w.cmd("sethostname cryo-pid-after"), "cryo-pid-after");
    let restored = w.cmd("outside");
    assert_ne!(user_ns(&restored), user_ns("self"));
    let tasks = std::fs::read_dir(format!("/proc/{restored}/task"))
        .unwrap()
        .count();
    assert_eq!(tasks, 2, "its two threads");
    // Its pid inside (1) names no process of ours: ended here, or the clean-up waits for it.
    cryo_tests::Pidfd::open(restored.parse().unwrap())
        .unwrap()
        .signal(libc::SIGKILL)
        .unwrap();
}

#[test]
fn a_second_thread_in_a_user_namespace_in_cryos_pid_namespace_comes_back_with_its_tid() {
    cryo_bin();
    // `unshare -Ur` with a threaded program: no PID namespace of its own, so the process may
    // not choose its thread's tid (clone3 set_tid); cryo gives it through ns_last_pid.
    let mut w = Workload::spawn(
        "user-ns",
        &[MANY_LINES, &["uts=cryo-userns-thread", "thread"]].concat(),
    );
    let thread = w.cmd("thread");
    let tid: i32 = thread.split(' ').next().unwrap().parse().unwrap();
    assert_ne!(tid, w.pid(), "a second thread");
    assert!(
        thread.ends_with("uid 1000 1000 1000 gid 1000 1000 1000 groups 1001,1002"),
        "{thread}"
    );
    let before = dump_and_restore_in_a_new_one(&mut w);
    assert_eq!(
        w.cmd("thread"),
        thread,
        "the thread answers, with its tid and ids"
    );
    assert_eq!(before[3], "hostname: cryo-userns-thread");
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", w.pid()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert!(tasks.contains(&tid.to_string()), "{tasks:?}");
}

#[test]
fn a_leave_running_dump_leaves_the_process_in_its_user_namespace_working() {
    cryo_bin();
    let w = Workload::spawn("user-ns", &["uts=cryo-userns-left"]);
    let before = observed(&w);
    let ns = w.cmd("ns user");
    w.dump(&w.path("img"), &["--leave-running"])
        .assert_success();
    assert_eq!(observed(&w), before, "after a --leave-running dump");
    assert_eq!(w.cmd("ns user"), ns);
    assert_eq!(w.cmd("sethostname cryo-still"), "cryo-still");
    // A copy beside it, in new PID and network namespaces (`restore --pidns --netns`): in a
    // user namespace of its own too.
    let before = observed(&w);
    let copy = w.restore_copy_in_namespaces(&w.path("img"));
    let copy_fd = cryo_tests::Pidfd::open(copy).unwrap();
    let original = w.stop_original();
    assert_eq!(
        w.cmd("ns user"),
        format!("user:[{}]", owner_and_own(copy, "uts").1)
    );
    assert_ne!(w.cmd("ns user"), ns, "the copy's user namespace is its own");
    let mut after = observed(&w);
    // The copy has the names of the dump, the original was renamed after it.
    assert_eq!(after[3], "hostname: cryo-userns-left");
    after[3] = before[3].clone();
    assert_eq!(after, before, "the copy, from inside");
    assert_eq!(w.cmd("sethostname cryo-copy"), "cryo-copy");
    copy_fd.signal(libc::SIGKILL).unwrap();
    assert!(
        copy_fd.wait_exit(cryo_tests::CMD_TIMEOUT),
        "the copy did not die"
    );
    original.signal(libc::SIGCONT).unwrap();
    assert_eq!(w.cmd("hostname"), "cryo-still", "the original kept its own");
}

/// What a process of `w` (`user-ns net ipc mnt=DIR`) observes of the network, IPC and mount
/// namespaces it made inside its user namespace.
fn observed_inside(w: &Workload) -> Vec<String> {
    [
        "sysctl net/ipv4/ip_local_port_range",
        "sysctl kernel/msgmax",
        "ipc",
        "mnt",
    ]
    .iter()
    .map(|c| format!("{c}: {}", w.cmd(c)))
    .collect()
}

#[test]
fn network_ipc_and_mount_namespaces_made_inside_the_user_namespace_come_back_owned_by_it() {
    cryo_bin();
    // `unshare -Urnim` with a map beyond root (inside 1 is 100000 outside): a network
    // namespace with a sysctl set, an IPC namespace with a segment, a queue and a sysctl, a
    // mount namespace with a tmpfs whose root and file inside 1 owns.
    let mut w = Workload::spawn(
        "user-ns",
        &[
            MANY_LINES[0],
            MANY_LINES[1],
            "uts=cryo-userns-all",
            "net",
            "ipc",
            "mnt=/srv",
        ],
    );
    let before = observed_inside(&w);
    assert_eq!(
        before[..3],
        [
            "sysctl net/ipv4/ip_local_port_range: 40000 50000",
            "sysctl kernel/msgmax: 4000",
            "ipc: 0x5eed 640 0 0 0 0 cryo-userns-ipc; messages 1",
        ]
    );
    assert!(
        before[3].starts_with("mnt: cryo-tmpfs 1 1 640; sock 1 1; ")
            && before[3].contains("mode=751"),
        "{before:?}"
    );
    dump_and_restore_in_a_new_one(&mut w);
    assert_eq!(
        observed_inside(&w),
        before,
        "observed from inside after the restore"
    );
    // Made again, not the original's (whose inode numbers may be given again once it is
    // gone): owned by the new user namespace.
    for kind in ["net", "ipc", "mnt"] {
        let (owner, own) = owner_and_own(w.pid(), kind);
        assert_eq!(
            owner, own,
            "its {kind} namespace is owned by its user namespace"
        );
    }
}

#[test]
fn files_it_made_come_back_with_their_owners_where_its_maps_leave_our_root_unmapped() {
    cryo_bin();
    // As a container's (zdtm's uns flavour): inside 0 is 200000 outside, our root is no one
    // there. The restored process is our root outside until its ids are set, last: what it
    // makes again for its owners inside (the tmpfs's file, its socket file) is made as its
    // namespace's root (before: the restore failed making the tmpfs's file, EOVERFLOW), its
    // ping socket as its root group (before: refused at dump, cryo's group not in range).
    let mut w = spawn_root_unmapped(&[
        "uts=cryo-userns-unmapped",
        "net",
        "ping",
        "ipc",
        "mnt=/srv",
        "zombie",
    ]);
    let observed = |w: &Workload| [&observed_inside(w)[2..], &[w.cmd("ping-socket")]].concat();
    let before = observed(&w);
    // A zombie, root inside (200000 outside): made again with its ids as the namespace names
    // them (before 2026-12-07's fix, the restore failed setting the host's ids inside).
    let zombie = w.cmd("zombie");
    let ids = |pid: &str| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .filter(|l| l.starts_with("Uid:") || l.starts_with("Gid:"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let zombie_ids = ids(&zombie);
    assert!(zombie_ids.starts_with("Uid:\t200000"), "{zombie_ids}");
    assert_eq!(
        before[0],
        "ipc: 0x5eed 640 0 0 0 0 cryo-userns-ipc; messages 1"
    );
    assert!(
        before[1].starts_with("mnt: cryo-tmpfs 1 1 640; sock 1 1; "),
        "{before:?}"
    );
    // A ping socket, which only a group of ping_group_range (0 inside) may make.
    assert_eq!(before[2], "type 2 protocol 1; range 0 0");
    dump_and_restore_in_a_new_one(&mut w);
    assert_eq!(
        observed(&w),
        before,
        "observed from inside after the restore"
    );
    assert_eq!(ids(&zombie), zombie_ids, "the zombie's ids");
    assert_eq!(w.cmd("reap"), format!("{zombie} exited 7"), "reaped inside");
}

#[test]
fn a_landlocked_process_in_a_user_namespace_is_refused() {
    cryo_bin();
    let w = Workload::spawn("user-ns", &["landlock"]);
    let out = w.dump(&w.path("img"), &[]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    let pid = w.pid();
    assert!(
        out.stderr.contains(&format!(
            "pid {pid} thread {pid}: Landlock domain cannot be restored"
        )),
        "{}",
        out.stderr
    );
    w.assert_untouched();
}

/// Asserts that dumping `w` is refused naming its pid, thread, user namespace and `why`, and
/// leaves it working.
fn assert_refused(w: &Workload, pid: i32, why: &str) {
    let out = w.dump(&w.path("img"), &[]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    let named = format!("pid {pid} thread {pid}: in user namespace user:[");
    assert!(
        out.stderr.contains(&named) && out.stderr.contains(why),
        "{named} ... {why}: {}",
        out.stderr
    );
    w.assert_untouched();
    assert!(!w.cmd("ids").is_empty(), "the target answers");
}

#[test]
fn a_nested_user_namespace_is_refused() {
    cryo_bin();
    let w = Workload::spawn("user-ns", &["nested"]);
    let child: i32 = w.cmd("child").split(' ').next().unwrap().parse().unwrap();
    assert_refused(&w, child, "nested: its parent is user:[");
}

#[test]
fn a_user_namespace_shared_with_a_process_outside_the_dump_is_refused() {
    cryo_bin();
    let w = Workload::spawn("user-ns", &["shared"]);
    assert_refused(&w, w.pid(), "which is not in the dump");
}

#[test]
fn a_child_forked_inside_a_user_namespace_in_cryos_pid_namespace_comes_back_with_its_pid() {
    cryo_bin();
    // `unshare -Ur` with a program that forks and runs threads: neither the process nor its
    // child may choose pids in our PID namespace; cryo's pid broker sets ns_last_pid for them.
    let mut w = Workload::spawn(
        "user-ns",
        &["uts=cryo-userns-child", "child", "zombie", "thread"],
    );
    let child = w.cmd("child");
    let child_pid = child.split(' ').next().unwrap().to_string();
    assert!(
        child.starts_with(&format!("{child_pid} {} uid 0 0 0", w.pid())),
        "{child}"
    );
    let thread = w.cmd("thread");
    let zombie = w.cmd("zombie");
    dump_and_restore_in_a_new_one(&mut w);
    assert_eq!(
        w.cmd("child"),
        child,
        "the child, from inside, with its pid"
    );
    let stat = std::fs::read_to_string(format!("/proc/{zombie}/stat")).unwrap();
    let after_comm = stat.rsplit(") ").next().unwrap().to_string();
    assert!(
        after_comm.starts_with(&format!("Z {} ", w.pid())),
        "a zombie of its parent: {stat}"
    );
    assert_eq!(w.cmd("reap"), format!("{zombie} exited 7"), "reaped inside");
    assert_eq!(w.cmd("thread"), thread, "the thread, with its tid");
    assert_eq!(
        user_ns(&child_pid),
        user_ns(w.pid()),
        "the child in its parent's user namespace"
    );
}

#[test]
fn a_removed_name_of_a_file_linked_in_its_directory_comes_back_in_a_new_user_namespace() {
    cryo_bin();
    // zdtm unlink_fstat03 in a user namespace: the restored process may not open the inode
    // by its handle (open_by_handle_at wants CAP_DAC_READ_SEARCH over the initial user
    // namespace); its other name in the same directory leads to it.
    let mut w = Workload::spawn("user-ns", &["uts=cryo-userns-linked", "linked=near"]);
    let before = w.cmd("linked");
    let deleted = format!(" {} (deleted) ", w.path("linked").display());
    assert!(
        before.contains(" links 1 size 16 ") && before.contains(&deleted),
        "{before}"
    );
    dump_and_restore_in_a_new_one(&mut w);
    assert_eq!(
        w.cmd("linked"),
        before,
        "the same inode, held by its removed name, seen from inside"
    );
}

/// A removed name of a file linked elsewhere on its tmpfs, in a directory removed too (zdtm
/// unlink_regular00 in the uns flavour), where the maps leave our root unmapped: the fd reads
/// its removed name again. Before: it read the other name, not deleted (the directory and the
/// link made back by our root, unmapped there, failed EOVERFLOW; the link by AT_EMPTY_PATH
/// wants CAP_DAC_READ_SEARCH over the initial user namespace).
#[test]
fn a_removed_name_in_a_removed_directory_of_its_tmpfs_comes_back_where_our_root_is_unmapped() {
    cryo_bin();
    let mut w = spawn_root_unmapped(&["uts=cryo-userns-linked-tmpfs", "mnt=/srv", "linked=tmpfs"]);
    // Past the inode number (a new tmpfs is made): links, size, the fd's link, the text.
    let seen = |w: &Workload| {
        let linked = w.cmd("linked");
        linked
            .split_once(" links ")
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or(linked)
    };
    let before = seen(&w);
    assert_eq!(
        before, "1 size 11 /srv/sub/linked (deleted) cryo-linked",
        "{before}"
    );
    dump_and_restore_in_a_new_one(&mut w);
    assert_eq!(seen(&w), before, "seen from inside after the restore");
}

#[test]
fn a_file_made_by_o_tmpfile_on_its_tmpfs_comes_back_so_where_our_root_is_unmapped() {
    cryo_bin();
    let mut w = spawn_root_unmapped(&["uts=cryo-userns-tmpfile", "mnt=/srv", "linked=tmpfile"]);
    let flags = w.cmd("linked-flags");
    let text = |w: &Workload| w.cmd("linked").rsplit(' ').next().unwrap().to_owned();
    assert_eq!(text(&w), "cryo-linked");
    dump_and_restore_in_a_new_one(&mut w);
    // Before: reopened (O_TMPFILE cannot be made there by cryo's unmapped root: EOVERFLOW),
    // its flags without O_TMPFILE (zdtm fd01, unlink_fstat041 in the uns flavour).
    assert_eq!(w.cmd("linked-flags"), flags, "its flags after the restore");
    assert_eq!(text(&w), "cryo-linked");
}

/// The dump of `w` (a `linked=far` file, no other name in its directory) refused naming its
/// pid, the file and the user namespace; the process untouched, its file as it was.
fn refused_for_its_linked_file(w: &Workload) {
    let out = w.dump(&w.path("img"), &[]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    assert!(
        out.stderr.contains(&format!("pid {}", w.pid()))
            && out
                .stderr
                .contains("deleted name of a file linked elsewhere")
            && out.stderr.contains("user namespace"),
        "{}",
        out.stderr
    );
    w.assert_untouched();
    assert!(w.cmd("linked").ends_with(" cryo-linked+more"));
}

#[test]
fn a_removed_name_of_a_file_linked_only_in_another_directory_is_refused_in_a_user_namespace() {
    cryo_bin();
    let w = Workload::spawn("user-ns", &["linked=far"]);
    refused_for_its_linked_file(&w);
}

#[test]
fn a_removed_name_linked_only_in_another_directory_is_refused_in_a_user_and_mount_namespace() {
    cryo_bin();
    // As above, in a mount namespace of its own too, the file on a mount it shares with cryo
    // (not its own tmpfs, which the restore copies and where another name would be found).
    let w = Workload::spawn(
        "user-ns",
        &[MANY_LINES[0], MANY_LINES[1], "mnt=/srv", "linked=far"],
    );
    refused_for_its_linked_file(&w);
}

/// The `user-ns` workload as root of a user namespace whose maps leave our root unmapped
/// (inside 0 is 200000 and 300000 outside, as a container's: zdtm's uns flavour), with
/// `args` besides: its control dir and fifos opened to it.
fn spawn_root_unmapped(args: &[&str]) -> Workload {
    let dir = cryo_tests::control_dir();
    let open_to_all = |path: &std::path::Path, mode| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open_to_all(dir.path(), 0o711);
    let fifos = [dir.path().join("cmd"), dir.path().join("out")];
    let mut all = vec!["uid=0:200000:65536", "gid=0:300000:65536", "root"];
    all.extend_from_slice(args);
    Workload::spawn_configured(dir, "user-ns", &all, |_| {
        fifos.iter().for_each(|f| open_to_all(f, 0o666))
    })
}
