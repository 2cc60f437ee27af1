//! Process and thread attributes (issue 12, docs/state-coverage.md): each test starts an
//! `attrs` workload with the attributes it checks set at start, reads them from inside (the
//! main thread with `get KEY`, a second thread with `tget KEY`), dumps, and reads them again
//! from inside the restored process. Each attribute has two tests:
//!
//! ```text
//! ATTR::restored               dump (the original is killed), restore, read again
//! ATTR::kept_by_leave_running  dump --leave-running, read again in the original
//! ```
//!
//! The first read checks the workload set what was asked (so no test passes because the
//! attribute was never set); every mismatch after the dump is listed in the failure.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{cryo_bin, Workload};

/// What the workload answers to each command of `expect`, against what it should.
#[track_caller]
fn check(w: &Workload, expect: &[(&str, String)], when: &str) {
    let wrong: Vec<String> = expect
        .iter()
        .filter_map(|(command, want)| {
            let got = w.cmd(command);
            (got != *want).then(|| format!("`{command}` is {got:?}, should be {want:?}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{when}: {}\n{w:?}", wrong.join("; "));
}

/// `expect` with owned replies, as the tests whose replies are computed have them.
fn owned<'a>(expect: &[(&'a str, &str)]) -> Vec<(&'a str, String)> {
    expect.iter().map(|(c, v)| (*c, v.to_string())).collect()
}

/// Sets `settings`, checks `expect`, dumps, restores, checks `expect` from inside the
/// restored process.
#[track_caller]
/// Whether this host can make `settings`: cpuid faulting (ARCH_SET_CPUID) needs a CPU that
/// has it (/proc/cpuinfo flag cpuid_fault; ENODEV without), which some virtual machines lack.
fn host_can(settings: &[&str]) -> bool {
    let wants_cpuid = settings.iter().any(|s| s.contains("cpuid="));
    let has = || {
        std::fs::read_to_string("/proc/cpuinfo")
            .is_ok_and(|t| t.split_whitespace().any(|f| f == "cpuid_fault"))
    };
    if wants_cpuid && !has() {
        eprintln!("skipped: this CPU has no cpuid faulting (no cpuid_fault in /proc/cpuinfo)");
        return false;
    }
    true
}

fn restored(settings: &[&str], expect: &[(&str, String)]) {
    cryo_bin();
    if !host_can(settings) {
        return;
    }
    let mut w = Workload::spawn("attrs", settings);
    check(&w, expect, "as set, before the dump");
    w.dump_and_restore();
    check(&w, expect, "after the restore");
}

/// Sets `settings`, checks `expect`, dumps with --leave-running, checks `expect` again in
/// the original.
#[track_caller]
fn kept_by_leave_running(settings: &[&str], expect: &[(&str, String)]) {
    cryo_bin();
    if !host_can(settings) {
        return;
    }
    let w = Workload::spawn("attrs", settings);
    check(&w, expect, "as set, before the dump");
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    w.assert_untouched();
    check(&w, expect, "in the original after a --leave-running dump");
}

/// One module per attribute, with the two tests: `NAME: [SETTINGS] => [(COMMAND, REPLY)...];`,
/// or `@module NAME: [SETTINGS] => EXPR` where EXPR computes the (command, reply) list.
macro_rules! attr_tests {
    (@module $(#[$doc:meta])* $name:ident: [$($setting:expr),* $(,)?] => $expect:expr) => {
        $(#[$doc])*
        mod $name {
            const SETTINGS: &[&str] = &[$($setting),*];

            #[test]
            fn restored() {
                super::restored(SETTINGS, &$expect);
            }

            #[test]
            fn kept_by_leave_running() {
                super::kept_by_leave_running(SETTINGS, &$expect);
            }
        }
    };
    ($($(#[$doc:meta])* $name:ident: [$($setting:expr),* $(,)?] => [$(($command:expr, $reply:expr)),* $(,)?];)*) => {$(
        attr_tests!(@module $(#[$doc])* $name: [$($setting),*] => super::owned(&[$(($command, $reply)),*]));
    )*};
}

attr_tests! {
    /// setpriority(PRIO_PROCESS, 0, 5): the nice value of the main thread.
    nice: ["nice=5"] => [("get nice", "5")];

    /// Nice is per thread: the second thread's own value differs from the main thread's.
    nice_per_thread: ["nice=5", "thread", "t.nice=9"] => [
        ("get nice", "5"),
        ("tget nice", "9"),
    ];

    /// SCHED_BATCH, inherited by a thread created afterwards.
    sched_batch: ["sched=batch", "thread"] => [
        ("get sched", "batch 0"),
        ("tget sched", "batch 0"),
    ];

    /// SCHED_DEADLINE in both threads, each with its own runtime, deadline and period, the
    /// main thread's with SCHED_FLAG_RECLAIM (set after the thread: a deadline task cannot
    /// clone).
    sched_deadline: [
        "thread",
        "deadline=2000000:9000000:10000000:0x2",
        "t.deadline=1000000:20000000:30000000",
    ] => [
        ("get sched", "deadline 0"),
        ("get deadline", "2000000 9000000 10000000 flags 0x2"),
        ("tget sched", "deadline 0"),
        ("tget deadline", "1000000 20000000 30000000 flags 0x0"),
    ];

    /// SCHED_IDLE in the second thread only.
    sched_idle_in_a_thread: ["thread", "t.sched=idle"] => [
        ("get sched", "other 0"),
        ("tget sched", "idle 0"),
    ];

    /// SCHED_FIFO priority 10 with SCHED_RESET_ON_FORK in the main thread, SCHED_RR 5 in the
    /// second (restoring them needs CAP_SYS_NICE and an RT budget in cryo's cgroup).
    sched_realtime: ["sched=fifo:10:reset", "thread", "t.sched=rr:5"] => [
        ("get sched", "fifo 10 reset"),
        ("tget sched", "rr 5"),
    ];

    /// CPU affinity: the main thread on CPU 1, the second on CPU 0 (needs 2 CPUs).
    affinity: ["affinity=1", "thread", "t.affinity=0"] => [
        ("get affinity", "1"),
        ("tget affinity", "0"),
    ];

    /// ioprio_set: best effort level 3 in the main thread, the idle class in the second.
    ioprio: ["ioprio=be:3", "thread", "t.ioprio=idle"] => [
        ("get ioprio", "be 3"),
        ("tget ioprio", "idle 0"),
    ];

    /// /proc/self/oom_score_adj raised to 500 (raising needs no privilege).
    oom_score_adj: ["oom=500"] => [("get oom", "500")];

    /// /proc/self/coredump_filter: anonymous shared, file-backed private and ELF headers only
    /// (not the default 0x33), seen from a thread too (it belongs to the mm).
    coredump_filter: ["coredump-filter=0x16", "thread"] => [
        ("get coredump-filter", "00000016"),
        ("tget coredump-filter", "00000016"),
    ];

    /// The nice value of the workload's autogroup (it leads its session, so the autogroup is
    /// its own), seen from a thread too.
    autogroup_nice: ["autogroup=7", "thread"] => [
        ("get autogroup", "7"),
        ("tget autogroup", "7"),
    ];

    /// An empty anonymous session keyring of its own (pam_keyinit's, systemd's): a new one
    /// like it, with its permissions, for the process and its threads (cryo has none).
    session_keyring: ["keyring=3f1b0000", "thread"] => [
        ("get session-keyring", "keyring;0;0;3f1b0000;_ses keys 0"),
        ("tget session-keyring", "keyring;0;0;3f1b0000;_ses keys 0"),
    ];

    /// A session keyring with user keys, as systemd gives a service (its invocation_id): the
    /// keys come back with their payloads, permissions and owners.
    session_keyring_with_user_keys: [
        "keyring=3f1b0000",
        "key=invocation_id:5f0c2a1e9d8b4c7a",
        "key=other:x y",
        "thread",
    ] => [
        ("get session-keyring", "keyring;0;0;3f1b0000;_ses keys 2"),
        (
            "get session-keys",
            "user;0;0;3f010000;invocation_id=5f0c2a1e9d8b4c7a user;0;0;3f010000;other=x y"
        ),
        ("tget session-keyring", "keyring;0;0;3f1b0000;_ses keys 2"),
    ];

    /// No session keyring of its own: keyctl finds the user's session keyring, after the
    /// restore too.
    no_session_keyring: ["thread"] => [
        ("get session-keyring", "user"),
        ("tget session-keyring", "user"),
    ];

    /// PR_SET_TIMERSLACK, per thread.
    timerslack: ["timerslack=120000", "thread", "t.timerslack=77000"] => [
        ("get timerslack", "120000"),
        ("tget timerslack", "77000"),
    ];

    /// A thread's default timer slack (what its PR_SET_TIMERSLACK 0 gives back) is its
    /// creator's slack when it was made: 120000 here, the main thread's own since 90000 and
    /// the thread's 77000. Before: the thread was made with the main thread's slack of then
    /// (`tget timerslack-default` 90000).
    timerslack_default: [
        "timerslack=120000",
        "thread",
        "timerslack=90000",
        "t.timerslack=77000",
    ] => [
        ("get timerslack", "90000"),
        ("tget timerslack", "77000"),
        ("tget timerslack-default", "120000"),
        ("tget timerslack", "77000"),
    ];

    /// A thread made by a real-time thread (SCHED_FIFO with reset-on-fork: the thread is
    /// SCHED_OTHER) starts with its creator's slack, 0, as its slack and its default. Before:
    /// it came back with cryo's (`tget timerslack` 50000).
    timerslack_of_a_thread_a_real_time_one_made: ["sched=fifo:10:reset", "thread"] => [
        ("get timerslack", "0"),
        ("tget timerslack", "0"),
        ("tget timerslack-default", "0"),
        ("tget sched", "other 0"),
    ];

    /// PR_SET_DUMPABLE 0 (the dump itself then needs CAP_SYS_PTRACE, which root has).
    not_dumpable: ["dumpable=0"] => [("get dumpable", "0")];

    /// PR_SET_PDEATHSIG, per thread (signals whose default is to be ignored: SIGWINCH,
    /// SIGURG), so the test's own thread ending can do no harm.
    pdeathsig: ["pdeathsig=28", "thread", "t.pdeathsig=23"] => [
        ("get pdeathsig", "28"),
        ("tget pdeathsig", "23"),
    ];

    /// PR_SET_CHILD_SUBREAPER.
    child_subreaper: ["subreaper=1"] => [("get subreaper", "1")];

    /// PR_SET_THP_DISABLE.
    thp_disable: ["thp-disable=1"] => [
        ("get thp-disable", "1"),
    ];

    /// PR_MCE_KILL: early in the main thread, late in the second.
    mce_kill: ["mce=early", "thread", "t.mce=late"] => [
        ("get mce", "1"),
        ("tget mce", "0"),
    ];

    /// ARCH_SET_CPUID: cpuid faulting in the main thread, not in the second (which turned it
    /// off again after inheriting it).
    cpuid_faulting_in_the_main_thread: ["cpuid=off", "thread", "t.cpuid=on"] => [
        ("get cpuid", "0"),
        ("tget cpuid", "1"),
    ];

    /// ARCH_SET_CPUID: cpuid faulting in the second thread only.
    cpuid_faulting_in_a_thread: ["thread", "t.cpuid=off"] => [
        ("get cpuid", "1"),
        ("tget cpuid", "0"),
    ];

    /// PR_SET_NO_NEW_PRIVS in the main thread only, after the second thread started.
    no_new_privs: ["thread", "nnp=1"] => [
        ("get nnp", "1"),
        ("get status:NoNewPrivs", "1"),
        ("tget nnp", "0"),
    ];

    /// PR_SET_SECUREBITS: NOROOT, NOROOT_LOCKED, NO_SETUID_FIXUP, KEEP_CAPS.
    securebits: ["securebits=0x17"] => [("get securebits", "0x17")];

    /// capset: permitted KILL, SETGID, SETUID, NET_BIND_SERVICE; effective KILL and
    /// NET_BIND_SERVICE; inheritable NET_BIND_SERVICE.
    capabilities: ["caps=0x4e0:0x420:0x400"] => [("get caps", "0x4e0 0x420 0x400")];

    /// The ambient set: NET_BIND_SERVICE raised (it must be permitted and inheritable).
    ambient_capabilities: ["caps=0x4e0:0x420:0x400", "ambient=10"] => [
        ("get caps", "0x4e0 0x420 0x400"),
        ("get status:CapAmb", "0000000000000400"),
    ];

    /// setfsuid(1000) in the second thread only.
    fsuid_per_thread: ["thread", "t.fsuid=1000"] => [
        ("get ids", "uid 0 0 0 0 gid 0 0 0 0 groups none"),
        ("tget ids", "uid 0 0 0 1000 gid 0 0 0 0 groups none"),
    ];

    /// The second thread alone takes uid and gid 1000 (zdtm thread_different_uid_gid): each
    /// thread's session keyring lookups fall back to its own user's. Before: refused ("a
    /// thread that joined a session keyring of its own").
    ids_per_thread: ["thread", "t.thread-ids=1000"] => [
        ("get ids", "uid 0 0 0 0 gid 0 0 0 0 groups none"),
        ("tget ids", "uid 1000 1000 1000 1000 gid 1000 1000 1000 1000 groups none"),
        ("get session-keyring", "user"),
        ("tget session-keyring", "user"),
    ];

    /// A seccomp filter making getcpu fail with ENOMSG (42).
    seccomp_filter: ["seccomp=42"] => [
        ("get getcpu", "errno 42"),
        ("get seccomp", "mode 2 filters 1"),
    ];

    /// Two stacked filters answering the same call: the one installed last wins, so the
    /// order matters.
    seccomp_stacked_filters: ["seccomp=42", "seccomp=43"] => [
        ("get getcpu", "errno 43"),
        ("get seccomp", "mode 2 filters 2"),
    ];

    /// A filter shared by both threads, and one more the second thread installed on itself.
    seccomp_per_thread: ["seccomp=42", "thread", "t.seccomp=44"] => [
        ("get getcpu", "errno 42"),
        ("get seccomp", "mode 2 filters 1"),
        ("tget getcpu", "errno 44"),
        ("tget seccomp", "mode 2 filters 2"),
    ];

    /// A filter the main thread put on both threads with SECCOMP_FILTER_FLAG_TSYNC.
    seccomp_tsync: ["thread", "seccomp-tsync=45"] => [
        ("get getcpu", "errno 45"),
        ("tget getcpu", "errno 45"),
        ("tget seccomp", "mode 2 filters 1"),
    ];

    /// A thread in seccomp strict mode, blocked in read(): the dump must not make it call
    /// anything else (it would be killed), and it must come back strict.
    seccomp_strict_thread: ["strict-thread"] => [
        ("strict", "seccomp 1 alive"),
        ("get seccomp", "mode 0 filters 0"),
    ];

    /// A filter answering brk(0) with ENOMSG in the main thread: the program never asks again
    /// once started, but a dump or restore that makes it call brk(0) remotely meets the
    /// filter, unless it suspends seccomp for its remote calls (PTRACE_O_SUSPEND_SECCOMP).
    seccomp_filter_meets_remote_calls: ["thread", "seccomp-brk0=42"] => [
        ("get brk0", "errno 42"),
        ("get seccomp", "mode 2 filters 1"),
        ("tget brk0", "ok"),
    ];

    /// Every piece of security state at once, set in the order a program would (the order a
    /// restore must respect): bounding set, securebits, capabilities, no_new_privs, seccomp.
    security_state_together: [
        "bnd-drop=22",
        "securebits=0x10",
        "caps=0x4e0:0x420:0x400",
        "nnp=1",
        "seccomp=42",
    ] => [
        ("get securebits", "0x10"),
        ("get caps", "0x4e0 0x420 0x400"),
        ("get nnp", "1"),
        ("get getcpu", "errno 42"),
        ("get seccomp", "mode 2 filters 1"),
    ];

    /// Soft and hard resource limits, lowered (lowering needs no privilege).
    rlimits: ["rlimit=nofile:200:300", "rlimit=core:0:4096", "rlimit=cpu:1000:2000"] => [
        ("get rlimit:nofile", "200 300"),
        ("get rlimit:core", "0 4096"),
        ("get rlimit:cpu", "1000 2000"),
    ];

    /// umask.
    umask: ["umask=027"] => [("get umask", "027")];

    /// No parent-death signal (the restore's own, which makes a process of the tree die
    /// with its parent until it is whole, does not stay).
    no_pdeathsig: ["umask=022"] => [("get pdeathsig", "0")];

    /// /proc/self/loginuid set to 1000 (the audit login uid; the session id the kernel then
    /// assigns is not checked: no interface sets it).
    loginuid: ["loginuid=1000"] => [("get loginuid", "1000")];

    /// The private futex hash sized by the process (PR_FUTEX_HASH_SET_SLOTS) before its
    /// second thread: 4 slots, kept when threads come (before: 16, the kernel's own).
    futex_hash_chosen: ["futex-hash=4", "thread"] => [
        ("get futex-hash", "4"),
        ("tget futex-hash", "4"),
    ];

    /// The global futex hash chosen (0) by a process with threads (before: 16), and 64 slots
    /// chosen by a single-threaded one (before: 0, none yet).
    futex_hash_global: ["thread", "futex-hash=0"] => [("get futex-hash", "0")];
    futex_hash_single_thread: ["futex-hash=64"] => [("get futex-hash", "64")];

    /// The hash the kernel made at the second thread (16), and none in a process without
    /// threads (0): the same after the restore.
    futex_hash_default: ["thread"] => [("get futex-hash", "16")];
    futex_hash_none: ["umask=022"] => [("get futex-hash", "0")];

    /// The timer id restore mode (PR_TIMER_CREATE_RESTORE_IDS) the process turned on, with a
    /// POSIX timer made before: on after the restore, which makes the timer with it and
    /// turned it off after (before: 0). Without it, off (the restore's own use does not stay).
    timer_restore_ids_on: ["posix-timer=3600", "timer-restore-ids=1"] => [
        ("get timer-restore-ids", "1"),
    ];
    timer_restore_ids_off: ["posix-timer=3600"] => [("get timer-restore-ids", "0")];

    /// membarrier registrations: private expedited and global expedited, registered by the
    /// main thread, seen (and the private expedited barrier working) in the second thread
    /// too: they belong to the mm.
    membarrier: ["thread", "membarrier=private-expedited", "membarrier=global-expedited"] => [
        ("get membarrier", "registrations 0x14 private-expedited ok"),
        ("tget membarrier", "registrations 0x14 private-expedited ok"),
    ];

    /// membarrier: the sync-core and rseq flavours. Each marks the private expedited
    /// registration as made (0x10) without enabling the plain private expedited barrier: the
    /// dump must not register it.
    membarrier_sync_core_rseq: ["membarrier=sync-core", "membarrier=rseq"] => [
        ("get membarrier", "registrations 0x150 private-expedited errno 1"),
    ];

    /// membarrier: sync-core and the plain private expedited barrier, both registered (the
    /// same 0x50 as sync-core alone shows, but the barrier works).
    membarrier_sync_core_and_private: [
        "membarrier=sync-core",
        "membarrier=private-expedited",
    ] => [
        ("get membarrier", "registrations 0x50 private-expedited ok"),
    ];

    /// Syscall user dispatch in a thread other than the main one, its selector on BLOCK while
    /// it waits in a read (cryo's calls in it would be dispatched as SIGSYS unless it turns
    /// dispatch off while the process is frozen): a call it makes outside the exempt code
    /// still raises SIGSYS afterwards.
    syscall_user_dispatch: ["thread", "dispatch-thread"] => [
        ("dispatch", "dispatch on"),
        ("tget nice", "0"),
    ];

    /// PR_SET_TSC: rdtsc faults in the second thread only (set after it started: a thread
    /// inherits its creator's).
    tsc_sigsegv_in_a_thread: ["thread", "t.tsc=sigsegv"] => [
        ("get tsc", "1"),
        ("tget tsc", "2"),
    ];

    /// PR_SET_TSC in the main thread, then a thread that turned it back on.
    tsc_sigsegv_in_the_main_thread: ["tsc=sigsegv", "thread", "t.tsc=enable"] => [
        ("get tsc", "2"),
        ("tget tsc", "1"),
    ];

    /// personality: ADDR_NO_RANDOMIZE | UNAME26.
    personality: ["personality=0x60000"] => [("get personality", "0x60000")];

    /// personality(2) sets the calling thread's only: a second thread with its own
    /// (READ_IMPLIES_EXEC | ADDR_NO_RANDOMIZE) keeps it, the main thread keeps UNAME26.
    personality_per_thread: ["personality=0x20000", "thread", "t.personality=0x440000"] => [
        ("get personality", "0x20000"),
        ("tget personality", "0x440000"),
    ];

    /// A process running as nobody (65534, every id, no groups, both threads): unprivileged at
    /// dump time, so root without CAP_SYS_RESOURCE cannot read its limits with prlimit. It
    /// also lost its capabilities and, changing uid, its dumpable flag.
    another_uid: ["rlimit=nofile:200:300", "thread", "user=65534"] => [
        ("get ids", "uid 65534 65534 65534 65534 gid 65534 65534 65534 65534 groups none"),
        ("tget ids", "uid 65534 65534 65534 65534 gid 65534 65534 65534 65534 groups none"),
        ("get caps", "0x0 0x0 0x0"),
        ("get dumpable", "0"),
        ("get rlimit:nofile", "200 300"),
    ];
}

/// Anonymous memory named with PR_SET_VMA_ANON_NAME, private and shared: the names as
/// /proc/self/maps shows them, and the memory's contents. A kernel built without
/// CONFIG_ANON_VMA_NAME (the one of these machines) cannot name memory: nothing to check then.
mod anon_vma_names {
    use cryo_tests::{cryo_bin, Workload};

    const SETTINGS: &[&str] = &[
        "anon-name=cryo-heap",
        "shmem-name=cryo-ring",
        "anon-name=second",
    ];

    fn expect() -> Vec<(&'static str, String)> {
        super::owned(&[(
            "get anon-names",
            "[anon:cryo-heap] ok; [anon_shmem:cryo-ring] ok; [anon:second] ok",
        )])
    }

    /// Whether this kernel names memory; says so when not.
    fn kernel_names_memory() -> bool {
        cryo_bin();
        let w = Workload::spawn("attrs", &["anon-name=probe"]);
        let reply = w.cmd("get anon-names");
        if reply.starts_with("unsupported") {
            eprintln!("skipped: {reply}");
            return false;
        }
        true
    }

    #[test]
    fn restored() {
        if kernel_names_memory() {
            super::restored(SETTINGS, &expect());
        }
    }

    #[test]
    fn kept_by_leave_running() {
        if kernel_names_memory() {
            super::kept_by_leave_running(SETTINGS, &expect());
        }
    }
}

/// The capability sets of the test process (root, as the workload starts): CapPrm, CapBnd.
fn own_caps() -> (u64, u64) {
    let hex = |field: &str| {
        let v = cryo_tests::status_field(std::process::id() as i32, field)
            .unwrap_or_else(|| panic!("no {field} in our status"));
        u64::from_str_radix(&v, 16).expect("hex capability set")
    };
    (hex("CapPrm"), hex("CapBnd"))
}

attr_tests!(@module
    /// PR_CAPBSET_DROP of SYS_BOOT (22) and MKNOD (27) in the main thread: root's bounding set
    /// less those there, root's whole set in the second thread.
    bounding_set: ["thread", "bnd-drop=22,27"] => {
        let (_, bnd) = super::own_caps();
        [
            ("get status:CapBnd", format!("{:016x}", bnd & !(1 << 22 | 1 << 27))),
            ("tget status:CapBnd", format!("{bnd:016x}")),
        ]
    }
);

attr_tests!(@module
    /// capset in the second thread only (the raw call acts on one thread): NET_BIND_SERVICE
    /// alone there, root's full sets in the main thread.
    capabilities_per_thread: ["thread", "t.caps=0x400:0x400:0x0"] => {
        let (prm, _) = super::own_caps();
        [
            ("get caps", format!("{prm:#x} {prm:#x} 0x0")),
            ("tget caps", "0x400 0x400 0x0".to_string()),
        ]
    }
);

/// The CPU masks a process never changed come back whole in every thread: a restore keeps
/// cryo, and the processes it forks, on one CPU until their own masks are set back.
#[test]
fn an_untouched_cpu_mask_comes_back_whole_in_every_thread() {
    cryo_bin();
    let mut w = Workload::spawn("attrs", &["thread"]);
    let (main, second) = (w.cmd("get affinity"), w.cmd("tget affinity"));
    w.dump_and_restore();
    assert_eq!(w.cmd("get affinity"), main, "the main thread's mask");
    assert_eq!(w.cmd("tget affinity"), second, "the second thread's mask");
    let status = std::fs::read_to_string(format!("/proc/{}/status", w.pid())).unwrap();
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let allowed = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("Cpus_allowed_list:"))
            .map(str::to_string)
    };
    assert_eq!(allowed(&status), allowed(&ours), "as this test's own");
}

/// The alternate signal stacks of the main thread and of a second thread (per thread, at the
/// same address, same size, the second's SS_AUTODISARM), the command line and an environment variable: as before after a
/// restore.
#[test]
fn altstacks_per_thread_command_line_and_environment_come_back() {
    cryo_bin();
    let mut w = Workload::spawn_configured(
        cryo_tests::control_dir(),
        "attrs",
        &["altstack=65536", "thread", "t.altstack-autodisarm=32768"],
        |c| {
            c.env("CRYO_ATTRS_MARK", "kept");
        },
    );
    let main = w.cmd("get altstack");
    let second = w.cmd("tget altstack");
    assert!(main.starts_with("size 65536 flags 0 at "), "{main}");
    // SS_AUTODISARM (before 2026-12-07 lost: flags 0 after restore).
    assert!(
        second.starts_with("size 32768 flags -2147483648 at "),
        "{second}"
    );
    let cmdline = w.cmd("get cmdline");
    assert!(cmdline.contains("attrs altstack=65536 thread"), "{cmdline}");
    assert_eq!(w.cmd("get environ-has"), "true");
    w.dump_and_restore();
    assert_eq!(w.cmd("get altstack"), main, "the main thread's");
    assert_eq!(w.cmd("tget altstack"), second, "the second thread's");
    assert_eq!(w.cmd("get cmdline"), cmdline);
    assert_eq!(w.cmd("get environ-has"), "true");
    w.kill_restored();
}

/// RLIMIT_DATA, and RLIMIT_AS, just above what the process uses: the restore maps its memory
/// with the limits still its own and sets them after. Before: the restore, after the dump's
/// kill, failed mapping the last areas ("mmap ...: Cannot allocate memory").
#[test]
fn tight_data_and_address_space_limits_come_back() {
    cryo_bin();
    for tight in ["data", "as"] {
        let mut w = Workload::spawn("attrs", &[&format!("rlimit-tight={tight}")]);
        let get = format!("get rlimit:{tight}");
        let limit = w.cmd(&get);
        assert!(!limit.starts_with("-1"), "{tight}: {limit}");
        w.dump_and_restore();
        assert_eq!(w.cmd(&get), limit, "{tight}");
        w.kill_restored();
    }
}

/// The main thread's default timer slack is its creator's slack at the fork: here the test
/// thread's 130000 (the workload's own slack is 90000). After a restore, and in the original
/// after a `--leave-running` dump (cryo reads it by resetting the slack for a moment). Before:
/// the restored main thread had cryo's slack as its default (`get timerslack-default` 50000).
#[test]
fn the_main_threads_default_timer_slack_is_the_one_it_was_made_with() {
    cryo_bin();
    // The spawned workload's main thread takes this thread's slack as its default.
    nix::sys::prctl::set_timerslack(130_000).unwrap();
    let w = Workload::spawn("attrs", &["timerslack=90000"]);
    nix::sys::prctl::set_timerslack(0).unwrap();
    let mut w = w;
    let expect = owned(&[
        ("get timerslack-default", "130000"),
        ("get timerslack", "90000"),
    ]);
    check(&w, &expect, "as set, before the dump");
    let img = w.path("img-left");
    w.dump(&img, &["--leave-running"]).assert_success();
    check(&w, &expect, "in the original after a --leave-running dump");
    w.dump_and_restore();
    check(&w, &expect, "after the restore");
    w.kill_restored();
}
