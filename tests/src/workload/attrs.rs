//! `attrs SETTING...`: process and thread attributes set at start, in the order given, then
//! read back from inside: by the main thread (`get KEY`), by a second thread (`tget KEY`),
//! and from a thread in seccomp strict mode (`strict`).
//!
//! ```text
//! settings, applied in order (t.NAME=VALUE: applied by the second thread, to itself)
//! thread                  start the second thread (it inherits what is set so far)
//! strict-thread           start a thread in seccomp strict mode, echoing bytes on a pipe
//! dispatch-thread         start a thread with syscall user dispatch on, its selector on
//!                         BLOCK, waiting in a read only libc's syscall() is exempt for
//! nice=N                  setpriority(PRIO_PROCESS, 0)                    this thread
//! sched=POL[:PRIO][:reset] sched_setscheduler, POL other|batch|idle|fifo|rr this thread
//! deadline=RT:DL:PER[:FL] sched_setattr SCHED_DEADLINE (ns; FL flags, hex) this thread
//!                         (after `thread`: a deadline task cannot clone)
//! affinity=CPU[,CPU]      sched_setaffinity                               this thread
//! ioprio=CLASS:LEVEL      ioprio_set, CLASS rt|be|idle                     this thread
//! oom=N                   write /proc/self/oom_score_adj                   process
//! coredump-filter=HEX     write /proc/self/coredump_filter                 process
//! autogroup=N             write /proc/self/autogroup (its session's nice) process
//! timerslack=NS           PR_SET_TIMERSLACK                                this thread
//! altstack=SIZE           sigaltstack on a (leaked) buffer of SIZE bytes    this thread
//! altstack-autodisarm=SIZE  the same, SS_AUTODISARM                        this thread
//! dumpable=N              PR_SET_DUMPABLE                                  process
//! pdeathsig=SIG           PR_SET_PDEATHSIG                                 this thread
//! subreaper=1             PR_SET_CHILD_SUBREAPER                           process
//! thp-disable=1           PR_SET_THP_DISABLE                               process
//! mce=early|late          PR_MCE_KILL                                      this thread
//! nnp=1                   PR_SET_NO_NEW_PRIVS                              this thread
//! securebits=HEX          PR_SET_SECUREBITS                                this thread
//! bnd-drop=CAP[,CAP]      PR_CAPBSET_DROP                                  this thread
//! caps=PRM:EFF:INH        capset, sets in hex                              this thread
//! ambient=CAP             PR_CAP_AMBIENT_RAISE                             this thread
//! fsuid=UID               setfsuid                                         this thread
//! thread-ids=ID           setresgid and setresuid(ID, ID, ID) by raw system calls (glibc's
//!                         would set every thread's)                        this thread
//! seccomp=ERRNO           a filter: getcpu fails with ERRNO                this thread
//! seccomp-tsync=ERRNO     the same filter with TSYNC                       every thread
//! seccomp-notify=1        a filter: getcpu goes to a user-notification listener whose fd
//!                         the process keeps (never call getcpu then)      this thread
//! seccomp-brk0=ERRNO      a filter: brk(0) fails with ERRNO (the process never calls it
//!                         again once started; a remote call in it would)  this thread
//! loginuid=UID            write /proc/self/loginuid (needs CAP_AUDIT_CONTROL) process
//! rlimit=RES:SOFT:HARD    setrlimit, RES a number or nofile|stack|core|cpu|fsize|nproc|memlock|data|as
//! rlimit-tight=data|as    RLIMIT_DATA (RLIMIT_AS) 64 KiB above VmData (VmSize) now
//! umask=OCTAL             umask                                            process
//! personality=HEX         personality                                      process
//! mdwe=FLAGS              PR_SET_MDWE (1: refuse writable+executable)     process
//! mempolicy=bind          set_mempolicy(MPOL_BIND, node 0)                this thread
//! mbind=1                 two pages of anonymous memory mbind to node 0    process
//! ldt=1                   an entry in the local descriptor table (modify_ldt) process
//! keyring=new|PERM|name:NAME join a new anonymous session keyring (with permissions
//!                         PERM, hex), or one named NAME                    this thread
//! key=DESC:PAYLOAD        add a "user" key to the session keyring          this thread
//! expiring-key=DESC:PAYLOAD:SECS
//!                         the same, expiring SECS seconds from now         this thread
//! logon-key=DESC:PAYLOAD  add a "logon" key cryo:DESC (unreadable)         this thread
//! process-keyring=1       make the process keyring                         process
//! thread-keyring=1        make the thread keyring                          this thread
//! tsc=sigsegv|enable      PR_SET_TSC: reading the time stamp counter faults this thread
//! cpuid=on|off            ARCH_SET_CPUID: off makes cpuid fault (SIGSEGV) this thread
//! futex-hash=N            PR_FUTEX_HASH_SET_SLOTS: N slots of its own (0: the global hash) process
//! posix-timer=SECS        a CLOCK_MONOTONIC POSIX timer (SIGEV_NONE) SECS ahead   process
//! timer-restore-ids=1     PR_TIMER_CREATE_RESTORE_IDS: timer_create takes ids process
//! membarrier=CMD          MEMBARRIER_CMD_REGISTER_*, CMD global-expedited|private-expedited|
//!                         sync-core|rseq                                   process
//! anon-name=NAME          3 pages of private anonymous memory, filled, named NAME
//!                         (PR_SET_VMA_ANON_NAME)                          process
//! shmem-name=NAME         the same with 2 pages of shared anonymous memory process
//! uts=HOST:DOMAIN         unshare(CLONE_NEWUTS), sethostname, setdomainname process
//! timens=SEC              a new time namespace, clocks SEC ahead, entered   process
//!                         (before `thread`: setns wants a single thread)
//! timens-children=SEC     the same namespace made for its children only    process
//! cgroup=DIR              join cgroup DIR (write 0 to DIR/cgroup.procs)    process
//! cgroup-thread=DIR       join cgroup DIR of a v1 hierarchy (DIR/tasks)     this thread
//! opendir=DIR             open directory DIR at fd 61                      process
//! unshare=KIND            unshare a namespace, KIND ipc|net|user|cgroup|mnt|pid process
//!                         (mnt: then every mount made private)
//! tmpfs=NAME              mount a tmpfs on DIR/NAME (after unshare=mnt)    process
//! landlock=SCOPED:FLAGS   a Landlock domain (no_new_privs first) handling file reads,
//!                         allowed beneath /proc /usr /lib /lib64 /etc only (so not in DIR);
//!                         SCOPED: LANDLOCK_SCOPE_* bits, FLAGS landlock_restrict_self's
//!                         (0x for hex)                                     this thread
//! user=UID                make DIR and DIR/out reachable for UID, then setgroups([]) and
//!                         setresgid/setresuid(UID) (glibc: every thread)
//!
//! commands
//! get KEY                 KEY as the main thread observes it
//! tget KEY                KEY as the second thread observes it
//! strict                  `seccomp MODE alive`: the strict thread's Seccomp field
//!                         (/proc/self/task/TID/status), then one byte echoed through it
//! dispatch                `dispatch on|off`: whether a call the dispatch thread makes
//!                         outside the exempt code (getppid) raised SIGSYS
//!
//! KEY   reply
//! nice          N                     (getpriority)
//! sched         POL PRIO [reset]      (sched_getscheduler, sched_getparam)
//! affinity      CPU,CPU...            (sched_getaffinity)
//! deadline      RUNTIME DEADLINE PERIOD flags HEX  (sched_getattr)
//! ioprio        CLASS LEVEL           (ioprio_get; CLASS none|rt|be|idle)
//! oom           N                     (/proc/self/oom_score_adj)
//! coredump-filter HEX                 (/proc/self/coredump_filter, as the kernel writes it)
//! autogroup     N                     (the nice of /proc/self/autogroup)
//! timerslack-default  N               (PR_SET_TIMERSLACK 0, PR_GET_TIMERSLACK, the slack set back)
//! timerslack, dumpable, pdeathsig, subreaper, thp-disable, securebits (hex), nnp:  prctl getters
//! mce           N                     (PR_MCE_KILL_GET)
//! tsc           1 | 2                 (PR_GET_TSC: 2 where rdtsc raises SIGSEGV)
//! caps          PRM EFF INH           (capget, hex)
//! ids           uid R E S FS gid R E S FS groups G,G   (/proc/thread-self/status)
//! seccomp       mode M filters F      (/proc/thread-self/status)
//! getcpu        ok | errno N          (the call the seccomp filters answer)
//! brk0          ok | errno N          (the raw brk(0))
//! loginuid, sessionid  N             (/proc/self/loginuid, /proc/self/sessionid)
//! rlimit:RES    SOFT HARD             (getrlimit; unlimited as -1)
//! umask         OCTAL
//! cpuid         1 | 0                 (ARCH_GET_CPUID: 0 where cpuid faults)
//! uts           HOST DOMAIN           (uname: nodename, domainname)
//! clocks        MONOTONIC BOOTTIME    (clock_gettime, ns)
//! personality   HEX
//! altstack      size N flags F at ADDR  (sigaltstack)
//! cmdline       /proc/self/cmdline, NULs as spaces
//! environ-has   true | false          (CRYO_ATTRS_MARK=kept in /proc/self/environ)
//! anon-names    NAME-IN-MAPS ok|changed; ...  (each named mapping: its /proc/self/maps name,
//!               whether its bytes are still the fill), or `unsupported: ...` on a kernel
//!               without CONFIG_ANON_VMA_NAME
//! futex-hash    N                     (PR_FUTEX_HASH_GET_SLOTS)
//! timer-restore-ids  0 | 1            (PR_TIMER_CREATE_RESTORE_IDS_GET)
//! membarrier    registrations HEX private-expedited ok|errno N  (MEMBARRIER_CMD_GET_REGISTRATIONS,
//!               then a MEMBARRIER_CMD_PRIVATE_EXPEDITED, which needs its registration)
//! cgroup:HIER   PATH                  (/proc/thread-self/cgroup; HIER "" for v2)
//! fd61          PATH MODE UID GID     fd 61's path, and its fstat: mode (octal), owner
//! cgfile:HIER:FILE  VALUE             (FILE of its own cgroup of HIER, found from
//!               /proc/thread-self/cgroup and the cgroup mounts; lines joined with ';')
//! status:FIELD  the field of /proc/thread-self/status (CapBnd, CapAmb, NoNewPrivs...)
//! read:PATH     ok | errno N          (reading the file PATH: EACCES (13) under Landlock)
//! ```

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use super::{arg, parse_u64, sys, unknown, Mode};

/// `PR_FUTEX_HASH` (linux/prctl.h, 6.16) and its commands: the process's private futex hash.
const PR_FUTEX_HASH: i32 = 78;
const PR_FUTEX_HASH_SET_SLOTS: u64 = 1;
const PR_FUTEX_HASH_GET_SLOTS: u64 = 2;

/// `PR_TIMER_CREATE_RESTORE_IDS` (linux/prctl.h, 6.14) and its commands.
const PR_TIMER_CREATE_RESTORE_IDS: i32 = 77;
const PR_TIMER_CREATE_RESTORE_IDS_ON: u64 = 1;
const PR_TIMER_CREATE_RESTORE_IDS_GET: u64 = 2;

/// `PR_SET_MDWE` (linux/prctl.h): memory-deny-write-execute.
const PR_SET_MDWE: i32 = 65;

/// arch_prctl codes (asm/prctl.h): the cpuid instruction runs (1) or faults (0).
const ARCH_GET_CPUID: i32 = 0x1011;
const ARCH_SET_CPUID: i32 = 0x1012;
use crate::protocol;

/// membarrier commands (linux/membarrier.h): the registrations by name, the query of them, and
/// the private expedited barrier that fails with EPERM without its registration.
const MEMBARRIER_REGISTER: &[(&str, u32)] = &[
    ("global-expedited", 1 << 2),
    ("private-expedited", 1 << 4),
    ("sync-core", 1 << 6),
    ("rseq", 1 << 8),
];
const MEMBARRIER_CMD_GET_REGISTRATIONS: u32 = 1 << 9;

/// The mappings `anon-name` and `shmem-name` made: address, length, fill byte.
static NAMED: std::sync::Mutex<Vec<(usize, usize, u8)>> = std::sync::Mutex::new(Vec::new());
/// Set when the kernel could not name them (no CONFIG_ANON_VMA_NAME).
static UNNAMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: u32 = 1 << 3;

/// `attrs SETTING...`
pub fn start(args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    let mut attrs = Attrs {
        dir: dir.to_path_buf(),
        second: None,
        strict: None,
        dispatch: None,
    };
    for setting in args {
        match setting.as_str() {
            "thread" => attrs.second = Some(Second::start(dir)?),
            "dispatch-thread" => attrs.dispatch = Some(Dispatch::start()?),
            "strict-thread" => attrs.strict = Some(Strict::start()?),
            s => match s.strip_prefix("t.") {
                Some(s) => {
                    let second = attrs.second.as_ref().ok_or("t.SETTING before thread")?;
                    second.ask(Ask::Apply(s.to_string()))?;
                }
                None => apply(s, &attrs.dir)?,
            },
        }
    }
    Ok(Box::new(attrs))
}

struct Attrs {
    dir: PathBuf,
    second: Option<Second>,
    strict: Option<Strict>,
    dispatch: Option<Dispatch>,
}

impl Mode for Attrs {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("get", [key]) => observe(key),
            ("tget", [key]) => self
                .second
                .as_ref()
                .ok_or("no second thread")?
                .ask(Ask::Observe(key.to_string())),
            ("strict", []) => self.strict.as_ref().ok_or("no strict thread")?.probe(),
            ("dispatch", []) => self.dispatch.as_ref().ok_or("no dispatch thread")?.probe(),
            _ => unknown(verb),
        }
    }
}

/// What the second thread is asked to do, by itself.
enum Ask {
    Apply(String),
    Observe(String),
}

type Request = (Ask, mpsc::Sender<Result<String, String>>);

/// A thread that applies settings to itself and observes them, on request.
struct Second {
    requests: mpsc::Sender<Request>,
}

impl Second {
    fn start(dir: &Path) -> Result<Self, String> {
        let (requests, incoming) = mpsc::channel::<Request>();
        let dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("second".into())
            .spawn(move || {
                for (ask, reply) in incoming {
                    let answer = match ask {
                        Ask::Apply(setting) => apply(&setting, &dir).map(|()| String::new()),
                        Ask::Observe(key) => observe(&key),
                    };
                    let _ = reply.send(answer);
                }
            })
            .map_err(|e| format!("spawn the second thread: {e}"))?;
        Ok(Self { requests })
    }

    fn ask(&self, ask: Ask) -> Result<String, String> {
        let (tx, rx) = mpsc::channel();
        self.requests
            .send((ask, tx))
            .map_err(|_| "the second thread is gone")?;
        rx.recv().map_err(|_| "the second thread did not answer")?
    }
}

/// A thread with syscall user dispatch on, its selector on BLOCK: it waits in a read made
/// through libc's syscall() (exempt), and for each byte read tries a call from elsewhere
/// (getppid), which dispatch turns into SIGSYS, and answers whether it did.
struct Dispatch {
    to_thread: i32,
    from_thread: i32,
}

impl Dispatch {
    fn start() -> Result<Self, String> {
        let (thread_reads, to_thread) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (from_thread, thread_writes) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
        std::thread::Builder::new()
            .name("dispatch".into())
            .spawn(move || {
                let on: &[u8] = if sys::dispatch_on().is_ok() {
                    b"1"
                } else {
                    b"0"
                };
                let _ = sys::write_all(thread_writes, on);
                let mut byte = [0u8; 1];
                loop {
                    sys::dispatch_block(true);
                    if sys::exempt_read(thread_reads, &mut byte) != 1 {
                        continue;
                    }
                    let before = sys::DISPATCHED.load(std::sync::atomic::Ordering::SeqCst);
                    let _ = sys::getppid();
                    let after = sys::DISPATCHED.load(std::sync::atomic::Ordering::SeqCst);
                    sys::dispatch_block(true);
                    let answer: &[u8] = if after > before { b"1" } else { b"0" };
                    sys::exempt_write(thread_writes, answer);
                }
            })
            .map_err(|e| format!("spawn the dispatch thread: {e}"))?;
        let mut on = [0u8; 1];
        match sys::read(from_thread, &mut on) {
            Ok(1) if on == *b"1" => {}
            other => return Err(format!("syscall user dispatch failed: {other:?}")),
        }
        Ok(Self {
            to_thread,
            from_thread,
        })
    }

    fn probe(&self) -> Result<String, String> {
        sys::write_all(self.to_thread, b"?").map_err(|e| format!("to the dispatch thread: {e}"))?;
        let mut answer = [0u8; 1];
        match sys::read(self.from_thread, &mut answer) {
            Ok(1) if answer == *b"1" => Ok("dispatch on".into()),
            Ok(1) => Ok("dispatch off".into()),
            other => Err(format!("from the dispatch thread: {other:?}")),
        }
    }
}

/// A thread in seccomp strict mode: it reads one byte at a time from a pipe and writes it
/// back on another, the only calls strict mode allows it.
struct Strict {
    tid: i32,
    to_thread: i32,
    from_thread: i32,
}

impl Strict {
    fn start() -> Result<Self, String> {
        let (thread_reads, to_thread) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (from_thread, thread_writes) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("strict".into())
            .spawn(move || {
                // The channel may need futex: its last use comes before strict mode.
                let _ = tx.send(sys::gettid());
                // One byte tells how entering strict mode went: a thread that broke its
                // rules would be killed, alone, and never tell.
                let entered: &[u8] = if sys::seccomp_strict().is_ok() {
                    b"1"
                } else {
                    b"0"
                };
                let _ = sys::write_all(thread_writes, entered);
                let mut byte = [0u8; 1];
                loop {
                    if let Ok(1) = sys::read(thread_reads, &mut byte) {
                        let _ = sys::write_all(thread_writes, &byte);
                    }
                }
            })
            .map_err(|e| format!("spawn the strict thread: {e}"))?;
        let tid = rx.recv().map_err(|_| "the strict thread did not start")?;
        let mut entered = [0u8; 1];
        match sys::read(from_thread, &mut entered) {
            Ok(1) if entered == *b"1" => {}
            other => return Err(format!("seccomp strict failed: {other:?}")),
        }
        Ok(Self {
            tid,
            to_thread,
            from_thread,
        })
    }

    fn probe(&self) -> Result<String, String> {
        let mode = field(&format!("/proc/self/task/{}/status", self.tid), "Seccomp")?;
        sys::write_all(self.to_thread, b"?").map_err(|e| format!("write: {e}"))?;
        let mut byte = [0u8; 1];
        match sys::read(self.from_thread, &mut byte) {
            Ok(1) if byte == *b"?" => Ok(format!("seccomp {mode} alive")),
            other => Err(format!("the strict thread answered {other:?}")),
        }
    }
}

/// Applies one `NAME=VALUE` setting to the calling thread (or the process).
/// Where `opendir=DIR` keeps its directory.
const OPENDIR_FD: i32 = 61;

fn apply(setting: &str, dir: &Path) -> Result<(), String> {
    let (name, value) = setting
        .split_once('=')
        .ok_or_else(|| format!("bad setting {setting:?}"))?;
    let fail = |e: std::io::Error| format!("{setting}: {e}");
    let num = |s: &str| parse_u64(s);
    let int = |s: &str| s.parse::<i32>().map_err(|_| format!("bad number {s:?}"));
    let flag =
        |op: i32| -> Result<(), String> { sys::prctl(op, num(value)?, 0).map(drop).map_err(fail) };
    match name {
        "nice" => sys::set_nice(int(value)?).map_err(fail),
        "sched" => {
            let parts: Vec<&str> = value.split(':').collect();
            let mut policy = policy_number(parts[0])?;
            let priority = match parts.get(1) {
                Some(p) => int(p)?,
                None => 0,
            };
            if parts.get(2) == Some(&"reset") {
                policy |= libc::SCHED_RESET_ON_FORK;
            }
            sys::set_scheduler(policy, priority).map_err(fail)
        }
        "affinity" => {
            let cpus = value
                .split(',')
                .map(|c| c.parse().map_err(|_| format!("bad cpu {c:?}")))
                .collect::<Result<Vec<usize>, _>>()?;
            sys::set_affinity(&cpus).map_err(fail)
        }
        "ioprio" => {
            let (class, level) = value.split_once(':').unwrap_or((value, "0"));
            let class = IOPRIO_CLASSES
                .iter()
                .position(|c| *c == class)
                .ok_or_else(|| format!("bad ioprio class {class:?}"))?;
            let level: u32 = arg(&[level.to_string()], 0, 0)?;
            sys::set_ioprio((class as u32) << 13 | level).map_err(fail)
        }
        "oom" => std::fs::write("/proc/self/oom_score_adj", value).map_err(fail),
        "coredump-filter" => std::fs::write("/proc/self/coredump_filter", value).map_err(fail),
        "autogroup" => std::fs::write("/proc/self/autogroup", value).map_err(fail),
        "loginuid" => std::fs::write("/proc/self/loginuid", value).map_err(fail),
        "timerslack" => flag(libc::PR_SET_TIMERSLACK),
        "altstack" | "altstack-autodisarm" => {
            // Leaked: the stack serves the thread for the rest of its life.
            let size = num(value)? as usize;
            let stack = Box::leak(vec![0u8; size].into_boxed_slice());
            let ss = libc::stack_t {
                ss_sp: stack.as_mut_ptr().cast(),
                // SS_AUTODISARM: given up while a handler runs on it.
                ss_flags: if name == "altstack" { 0 } else { 1 << 31 },
                ss_size: size,
            };
            // SAFETY: ss describes a live buffer of ss_size bytes that is never freed.
            if unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) } < 0 {
                return Err(fail(std::io::Error::last_os_error()));
            }
            Ok(())
        }
        "dumpable" => flag(libc::PR_SET_DUMPABLE),
        "pdeathsig" => flag(libc::PR_SET_PDEATHSIG),
        "subreaper" => flag(libc::PR_SET_CHILD_SUBREAPER),
        "thp-disable" => flag(libc::PR_SET_THP_DISABLE),
        "futex-hash" => {
            let slots = parse_u64(value)?;
            sys::prctl(PR_FUTEX_HASH, PR_FUTEX_HASH_SET_SLOTS, slots)
                .map(drop)
                .map_err(fail)
        }
        "posix-timer" => {
            let secs = parse_u64(value)?;
            // SAFETY: sigevent and itimerspec are plain data we own; timer_create fills
            // `timer`, which is never deleted (the process keeps the timer).
            unsafe {
                let mut ev: libc::sigevent = std::mem::zeroed();
                ev.sigev_notify = libc::SIGEV_NONE;
                let mut timer: libc::timer_t = std::mem::zeroed();
                sys::cvt(libc::timer_create(
                    libc::CLOCK_MONOTONIC,
                    &mut ev,
                    &mut timer,
                ))
                .map_err(fail)?;
                let mut when: libc::itimerspec = std::mem::zeroed();
                when.it_value.tv_sec = secs as libc::time_t;
                sys::cvt(libc::timer_settime(timer, 0, &when, std::ptr::null_mut()))
                    .map_err(fail)?;
            }
            Ok(())
        }
        "timer-restore-ids" => {
            let on = parse_u64(value)? * PR_TIMER_CREATE_RESTORE_IDS_ON;
            sys::prctl(PR_TIMER_CREATE_RESTORE_IDS, on, 0)
                .map(drop)
                .map_err(fail)
        }
        "nnp" => flag(libc::PR_SET_NO_NEW_PRIVS),
        "securebits" => flag(libc::PR_SET_SECUREBITS),
        "mce" => {
            let policy = match value {
                "early" => libc::PR_MCE_KILL_EARLY,
                "late" => libc::PR_MCE_KILL_LATE,
                other => return Err(format!("bad mce policy {other:?}")),
            };
            sys::prctl(
                libc::PR_MCE_KILL,
                libc::PR_MCE_KILL_SET as u64,
                policy as u64,
            )
            .map(drop)
            .map_err(fail)
        }
        "bnd-drop" => value.split(',').try_for_each(|cap| {
            sys::prctl(libc::PR_CAPBSET_DROP, num(cap)?, 0)
                .map(drop)
                .map_err(fail)
        }),
        "caps" => {
            let sets: Vec<&str> = value.split(':').collect();
            let [prm, eff, inh] = sets[..] else {
                return Err(format!("bad caps {value:?}: PRM:EFF:INH"));
            };
            sys::capset(num(prm)?, num(eff)?, num(inh)?).map_err(fail)
        }
        "ambient" => sys::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as u64,
            num(value)?,
        )
        .map(drop)
        .map_err(fail),
        "thread-ids" => {
            let id = num(value)? as u32;
            sys::set_thread_ids(id).map_err(fail)
        }
        "fsuid" => {
            let uid = num(value)? as u32;
            sys::setfsuid(uid);
            // setfsuid reports nothing: the previous value it returns is the proof.
            match sys::setfsuid(u32::MAX) {
                now if now == uid => Ok(()),
                now => Err(format!("{setting}: fsuid stayed {now}")),
            }
        }
        "seccomp" => sys::seccomp_filter(
            &errno_filter(libc::SYS_getcpu, num(value)? as u32, false),
            0,
        )
        .map_err(fail),
        "seccomp-brk0" => {
            sys::seccomp_filter(&errno_filter(libc::SYS_brk, num(value)? as u32, true), 0)
                .map_err(fail)
        }
        "seccomp-tsync" => sys::seccomp_filter(
            &errno_filter(libc::SYS_getcpu, num(value)? as u32, false),
            libc::SECCOMP_FILTER_FLAG_TSYNC as u32,
        )
        .map_err(fail),
        "seccomp-notify" => {
            let mut prog = errno_filter(libc::SYS_getcpu, 0, false);
            // The errno answer becomes a notification to the listener.
            for insn in prog.iter_mut().filter(|i| i.k == libc::SECCOMP_RET_ERRNO) {
                insn.k = libc::SECCOMP_RET_USER_NOTIF;
            }
            sys::seccomp_filter(&prog, libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as u32).map_err(fail)
        }
        "rlimit" => {
            let parts: Vec<&str> = value.split(':').collect();
            let [res, soft, hard] = parts[..] else {
                return Err(format!("bad rlimit {value:?}: RES:SOFT:HARD"));
            };
            sys::setrlimit(rlimit_number(res)?, num(soft)?, num(hard)?).map_err(fail)
        }
        "rlimit-tight" => {
            // RLIMIT_DATA or RLIMIT_AS just above what the process uses now (VmData, VmSize):
            // 64 KiB more.
            let (res, field) = match value {
                "data" => (libc::RLIMIT_DATA, "VmData:"),
                "as" => (libc::RLIMIT_AS, "VmSize:"),
                other => return Err(format!("bad rlimit-tight {other:?}: data|as")),
            };
            let status = std::fs::read_to_string("/proc/self/status").map_err(fail)?;
            let kib: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .ok_or_else(|| format!("no {field} in /proc/self/status"))?;
            let limit = (kib + 64) * 1024;
            sys::setrlimit(res, limit, limit).map_err(fail)
        }
        "umask" => {
            let mask = u32::from_str_radix(value, 8).map_err(|_| format!("bad umask {value:?}"))?;
            sys::umask(mask);
            Ok(())
        }
        "personality" => sys::personality(num(value)? as u32).map(drop).map_err(fail),
        "mdwe" => sys::prctl(PR_SET_MDWE, num(value)?, 0)
            .map(drop)
            .map_err(fail),
        "anon-name" | "shmem-name" => {
            let shared = name == "shmem-name";
            let mut named = NAMED.lock().map_err(|_| "poisoned")?;
            let fill = b'a' + named.len() as u8;
            let len = if shared { 2 } else { 3 } * 4096;
            let (addr, kernel_names) = sys::named_anon(len, shared, fill, value).map_err(fail)?;
            if !kernel_names {
                UNNAMED.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            named.push((addr, len, fill));
            Ok(())
        }
        "membarrier" => {
            let command = MEMBARRIER_REGISTER
                .iter()
                .find(|(n, _)| *n == value)
                .ok_or_else(|| format!("bad membarrier command {value:?}"))?
                .1;
            sys::membarrier(command).map(drop).map_err(fail)
        }
        "ldt" => sys::ldt_entry().map_err(fail),
        "keyring" => match value {
            "new" => sys::join_new_session_keyring(None).map_err(fail),
            name if name.starts_with("name:") => {
                sys::join_session_keyring(&name["name:".len()..]).map_err(fail)
            }
            perm => {
                let perm =
                    u32::from_str_radix(perm, 16).map_err(|_| format!("bad perm {perm:?}"))?;
                sys::join_new_session_keyring(Some(perm)).map_err(fail)
            }
        },
        "key" => {
            let (desc, payload) = value.split_once(':').unwrap_or((value, ""));
            sys::add_key("user", desc, payload.as_bytes())
                .map(drop)
                .map_err(fail)
        }
        "expiring-key" => {
            let mut parts = value.splitn(3, ':');
            let (desc, payload) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let secs = parts.next().and_then(|s| s.parse().ok()).unwrap_or(600);
            sys::add_key("user", desc, payload.as_bytes())
                .and_then(|serial| sys::set_key_timeout(serial, secs))
                .map_err(fail)
        }
        "logon-key" => {
            let (desc, payload) = value.split_once(':').unwrap_or((value, ""));
            sys::add_key("logon", &format!("cryo:{desc}"), payload.as_bytes())
                .map(drop)
                .map_err(fail)
        }
        "process-keyring" => sys::keyring_id(sys::KEY_SPEC_PROCESS_KEYRING, true)
            .map(drop)
            .map_err(fail),
        "thread-keyring" => sys::keyring_id(sys::KEY_SPEC_THREAD_KEYRING, true)
            .map(drop)
            .map_err(fail),
        "mempolicy" => sys::bind_thread_to_node0().map_err(fail),
        "mbind" => sys::bound_mapping().map(drop).map_err(fail),
        "tsc" => {
            let mode = match value {
                "enable" => libc::PR_TSC_ENABLE,
                "sigsegv" => libc::PR_TSC_SIGSEGV,
                other => return Err(format!("bad tsc {other:?}: enable|sigsegv")),
            };
            sys::prctl(libc::PR_SET_TSC, mode as u64, 0)
                .map(drop)
                .map_err(fail)
        }
        "cpuid" => {
            let enable = match value {
                "on" => 1,
                "off" => 0,
                other => return Err(format!("bad cpuid {other:?}: on|off")),
            };
            sys::arch_prctl(ARCH_SET_CPUID, enable)
                .map(drop)
                .map_err(fail)
        }
        "uts" => {
            let (host, domain) = value
                .split_once(':')
                .ok_or(format!("bad uts {value:?}: HOST:DOMAIN"))?;
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS)
                .map_err(|e| fail(e.into()))?;
            nix::unistd::sethostname(host).map_err(|e| fail(e.into()))?;
            sys::setdomainname(domain).map_err(fail)
        }
        "deadline" => {
            let parts: Vec<&str> = value.split(':').collect();
            let part = |i: usize| parts.get(i).map_or(Ok(0), |p| num(p));
            sys::set_deadline(part(0)?, part(1)?, part(2)?, part(3)?).map_err(fail)
        }
        "cgroup" | "cgroup-thread" => {
            let file = if name == "cgroup" {
                "cgroup.procs"
            } else {
                "tasks"
            };
            std::fs::write(Path::new(value).join(file), "0").map_err(fail)
        }
        "opendir" => {
            let fd =
                sys::open(Path::new(value), libc::O_RDONLY | libc::O_DIRECTORY).map_err(fail)?;
            sys::move_fd(fd, OPENDIR_FD).map(drop).map_err(fail)
        }
        "timens" | "timens-children" => {
            let flag = nix::sched::CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
            nix::sched::unshare(flag).map_err(|e| fail(e.into()))?;
            let sec = num(value)?;
            std::fs::write(
                "/proc/self/timens_offsets",
                format!("monotonic {sec} 0\nboottime {sec} 0\n"),
            )
            .map_err(fail)?;
            if name == "timens-children" {
                return Ok(());
            }
            let ns = std::fs::File::open("/proc/self/ns/time_for_children").map_err(fail)?;
            nix::sched::setns(ns, flag).map_err(|e| fail(e.into()))
        }
        "unshare" => {
            use nix::sched::CloneFlags;
            let flags = match value {
                "ipc" => CloneFlags::CLONE_NEWIPC,
                "net" => CloneFlags::CLONE_NEWNET,
                "user" => CloneFlags::CLONE_NEWUSER,
                "cgroup" => CloneFlags::CLONE_NEWCGROUP,
                "mnt" => CloneFlags::CLONE_NEWNS,
                "pid" => CloneFlags::CLONE_NEWPID,
                other => {
                    return Err(format!(
                        "bad unshare {other:?}: ipc|net|user|cgroup|mnt|pid"
                    ))
                }
            };
            nix::sched::unshare(flags).map_err(|e| fail(e.into()))?;
            if flags == CloneFlags::CLONE_NEWNS {
                super::sys::make_mounts_private().map_err(fail)?;
            }
            Ok(())
        }
        "tmpfs" => {
            let at = dir.join(value);
            std::fs::create_dir_all(&at).map_err(fail)?;
            nix::mount::mount(
                Some("cryo-test-tmpfs"),
                &at,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|e| fail(e.into()))
        }
        "landlock" => {
            let (scoped, flags) = value.split_once(':').ok_or("landlock=SCOPED:FLAGS")?;
            let readable = ["/proc", "/usr", "/lib", "/lib64", "/etc"];
            let readable: Vec<&str> = readable
                .into_iter()
                .filter(|p| Path::new(p).exists())
                .collect();
            sys::landlock(&readable, num(scoped)?, num(flags)? as u32).map_err(fail)
        }
        "user" => {
            let uid = num(value)? as u32;
            // The command FIFO is open already; each reply opens DIR/out anew.
            sys::chmod(dir, 0o711).map_err(fail)?;
            sys::chmod(&dir.join(protocol::OUT_FIFO), 0o622).map_err(fail)?;
            sys::become_user(uid, uid).map_err(fail)
        }
        other => Err(format!("unknown setting {other:?}")),
    }
}

/// What the calling thread observes of `key` (see the module doc).
fn observe(key: &str) -> Result<String, String> {
    let fail = |e: std::io::Error| format!("{key}: {e}");
    let getter = |op: i32| sys::prctl(op, 0, 0).map(|v| v.to_string()).map_err(fail);
    let int_getter = |op: i32| sys::prctl_get_int(op).map(|v| v.to_string()).map_err(fail);
    let status = |name: &str| field("/proc/thread-self/status", name);
    if let Some(res) = key.strip_prefix("rlimit:") {
        let (soft, hard) = sys::getrlimit(rlimit_number(res)?).map_err(fail)?;
        let show = |v: u64| {
            if v == libc::RLIM_INFINITY {
                "-1".to_string()
            } else {
                v.to_string()
            }
        };
        return Ok(format!("{} {}", show(soft), show(hard)));
    }
    if let Some(name) = key.strip_prefix("status:") {
        return status(name);
    }
    if let Some(path) = key.strip_prefix("read:") {
        return Ok(outcome(std::fs::read(path).map(drop)));
    }
    if let Some(rest) = key.strip_prefix("cgfile:") {
        let (hierarchy, file) = rest
            .split_once(':')
            .ok_or_else(|| format!("bad {key:?}: cgfile:HIER:FILE"))?;
        let path = observe(&format!("cgroup:{hierarchy}"))?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").map_err(fail)?;
        let mount = mounts
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let sep = fields.iter().position(|&f| f == "-")?;
                let (fstype, options) = (fields[sep + 1], fields[sep + 3]);
                let fits = match hierarchy {
                    "" => fstype == "cgroup2",
                    h => {
                        fstype == "cgroup"
                            && h.split(',').all(|c| options.split(',').any(|o| o == c))
                    }
                };
                (fits && fields[3] == "/").then(|| fields[4].to_owned())
            })
            .ok_or_else(|| format!("no mount of hierarchy {hierarchy:?}"))?;
        let text = std::fs::read_to_string(format!("{mount}{path}/{file}")).map_err(fail)?;
        return Ok(text.trim_end_matches('\n').replace('\n', ";"));
    }
    if let Some(hierarchy) = key.strip_prefix("cgroup:") {
        let text = std::fs::read_to_string("/proc/thread-self/cgroup").map_err(fail)?;
        return text
            .lines()
            .find_map(|l| {
                let mut parts = l.splitn(3, ':').skip(1);
                (parts.next() == Some(hierarchy)).then(|| parts.next().unwrap_or("").to_string())
            })
            .ok_or_else(|| format!("no hierarchy {hierarchy:?} in {text:?}"));
    }
    match key {
        "fd61" => {
            use std::os::unix::fs::MetadataExt;
            let fd = format!("/proc/self/fd/{OPENDIR_FD}");
            let path = std::fs::read_link(&fd).map_err(fail)?;
            let meta = std::fs::metadata(&fd).map_err(fail)?;
            Ok(format!(
                "{} {:o} {} {}",
                path.display(),
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            ))
        }
        "nice" => sys::nice().map(|n| n.to_string()).map_err(fail),
        "sched" => {
            let (policy, priority) = sys::scheduler().map_err(fail)?;
            let name = POLICIES
                .iter()
                .find(|(_, n)| *n == policy & !libc::SCHED_RESET_ON_FORK)
                .map_or("?", |(name, _)| name);
            let reset = if policy & libc::SCHED_RESET_ON_FORK != 0 {
                " reset"
            } else {
                ""
            };
            Ok(format!("{name} {priority}{reset}"))
        }
        "deadline" => sys::deadline_params()
            .map(|(runtime, deadline, period, flags)| {
                format!("{runtime} {deadline} {period} flags {flags:#x}")
            })
            .map_err(fail),
        "affinity" => {
            let cpus = sys::affinity().map_err(fail)?;
            Ok(cpus
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(","))
        }
        "ioprio" => {
            let prio = sys::ioprio().map_err(fail)?;
            let class = IOPRIO_CLASSES.get((prio >> 13) as usize).unwrap_or(&"?");
            Ok(format!("{class} {}", prio & 0x1fff))
        }
        "session-keys" => {
            // Each key: KEYCTL_DESCRIBE's text and its payload.
            let keys = sys::keys_of(sys::KEY_SPEC_SESSION_KEYRING).map_err(fail)?;
            Ok(keys
                .iter()
                .map(|(text, payload)| format!("{text}={}", String::from_utf8_lossy(payload)))
                .collect::<Vec<_>>()
                .join(" "))
        }
        "session-keyring" => {
            // "user" where keyctl finds the user's session keyring (none of its own), else
            // what KEYCTL_DESCRIBE shows but the serial, and the number of keys.
            let session = sys::keyring_id(sys::KEY_SPEC_SESSION_KEYRING, false).map_err(fail)?;
            let user = sys::keyring_id(sys::KEY_SPEC_USER_SESSION_KEYRING, false).map_err(fail)?;
            if session == user {
                return Ok("user".into());
            }
            let (text, keys) =
                sys::describe_keyring(sys::KEY_SPEC_SESSION_KEYRING).map_err(fail)?;
            Ok(format!("{text} keys {keys}"))
        }
        "autogroup" => {
            let text = std::fs::read_to_string("/proc/self/autogroup").map_err(fail)?;
            Ok(text.split_whitespace().last().unwrap_or("?").to_string())
        }
        "coredump-filter" => std::fs::read_to_string("/proc/self/coredump_filter")
            .map(|s| s.trim().to_string())
            .map_err(fail),
        "oom" => std::fs::read_to_string("/proc/self/oom_score_adj")
            .map(|s| s.trim().to_string())
            .map_err(fail),
        "timerslack" => getter(libc::PR_GET_TIMERSLACK),
        "timerslack-default" => {
            // PR_SET_TIMERSLACK 0 gives the default back; the slack is then set back (a real-
            // time thread ignores both and reads 0).
            let slack = sys::prctl(libc::PR_GET_TIMERSLACK, 0, 0).map_err(fail)?;
            sys::prctl(libc::PR_SET_TIMERSLACK, 0, 0).map_err(fail)?;
            let default = sys::prctl(libc::PR_GET_TIMERSLACK, 0, 0).map_err(fail)?;
            if slack != 0 {
                sys::prctl(libc::PR_SET_TIMERSLACK, slack as u64, 0).map_err(fail)?;
            }
            Ok(default.to_string())
        }
        "altstack" => {
            // SAFETY: stack_t is plain data; sigaltstack fills it.
            let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
            // SAFETY: a null new stack only reads the current one into `old`.
            if unsafe { libc::sigaltstack(std::ptr::null(), &mut old) } < 0 {
                return Err(fail(std::io::Error::last_os_error()));
            }
            Ok(format!(
                "size {} flags {} at {:#x}",
                old.ss_size, old.ss_flags, old.ss_sp as usize
            ))
        }
        "cmdline" => std::fs::read("/proc/self/cmdline")
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .map_err(fail),
        "environ-has" => std::fs::read("/proc/self/environ")
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .split('\0')
                    .any(|kv| kv == "CRYO_ATTRS_MARK=kept")
                    .to_string()
            })
            .map_err(fail),
        "dumpable" => getter(libc::PR_GET_DUMPABLE),
        "subreaper" => int_getter(libc::PR_GET_CHILD_SUBREAPER),
        "pdeathsig" => int_getter(libc::PR_GET_PDEATHSIG),
        "thp-disable" => getter(libc::PR_GET_THP_DISABLE),
        "futex-hash" => sys::prctl(PR_FUTEX_HASH, PR_FUTEX_HASH_GET_SLOTS, 0)
            .map(|v| v.to_string())
            .map_err(fail),
        "timer-restore-ids" => sys::prctl(
            PR_TIMER_CREATE_RESTORE_IDS,
            PR_TIMER_CREATE_RESTORE_IDS_GET,
            0,
        )
        .map(|v| v.to_string())
        .map_err(fail),
        "nnp" => getter(libc::PR_GET_NO_NEW_PRIVS),
        "securebits" => sys::prctl(libc::PR_GET_SECUREBITS, 0, 0)
            .map(|v| format!("{v:#x}"))
            .map_err(fail),
        "mce" => getter(libc::PR_MCE_KILL_GET),
        "tsc" => int_getter(libc::PR_GET_TSC),

        "caps" => {
            let (prm, eff, inh) = sys::capget().map_err(fail)?;
            Ok(format!("{prm:#x} {eff:#x} {inh:#x}"))
        }
        "ids" => {
            let ids = |name: &str| -> Result<String, String> {
                Ok(status(name)?
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "))
            };
            let groups = status("Groups")?
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(",");
            let groups = if groups.is_empty() {
                "none".to_string()
            } else {
                groups
            };
            Ok(format!(
                "uid {} gid {} groups {groups}",
                ids("Uid")?,
                ids("Gid")?
            ))
        }
        "seccomp" => Ok(format!(
            "mode {} filters {}",
            status("Seccomp")?,
            status("Seccomp_filters")?
        )),
        "getcpu" => Ok(outcome(sys::getcpu())),
        "brk0" => Ok(outcome(sys::brk0())),
        "loginuid" | "sessionid" => std::fs::read_to_string(format!("/proc/self/{key}"))
            .map(|s| s.trim().to_string())
            .map_err(fail),
        "umask" => {
            let mask = sys::umask(0);
            sys::umask(mask);
            Ok(format!("{mask:03o}"))
        }
        "personality" => sys::personality(0xffff_ffff)
            .map(|p| format!("{p:#x}"))
            .map_err(fail),
        "anon-names" => {
            if UNNAMED.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok("unsupported: a kernel without CONFIG_ANON_VMA_NAME".into());
            }
            let maps = std::fs::read_to_string("/proc/self/maps").map_err(fail)?;
            let named = NAMED.lock().map_err(|_| "poisoned")?;
            let seen: Vec<String> = named
                .iter()
                .map(|&(addr, len, fill)| {
                    let range = format!("{:x}-{:x} ", addr, addr + len);
                    let name = maps
                        .lines()
                        .find(|l| l.starts_with(&range))
                        .and_then(|l| l.split_whitespace().nth(5))
                        .unwrap_or("(not one mapping)");
                    let data = if sys::all_bytes(addr, len, fill) {
                        "ok"
                    } else {
                        "changed"
                    };
                    format!("{name} {data}")
                })
                .collect();
            Ok(seen.join("; "))
        }
        "membarrier" => {
            let mask = sys::membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS).map_err(fail)?;
            let expedited = sys::membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED).map(drop);
            Ok(format!(
                "registrations {mask:#x} private-expedited {}",
                outcome(expedited)
            ))
        }
        "cpuid" => sys::arch_prctl(ARCH_GET_CPUID, 0)
            .map(|v| v.to_string())
            .map_err(fail),
        "clocks" => {
            let now = |clock| sys::clock_ns(clock).map_err(fail);
            Ok(format!(
                "{} {}",
                now(libc::CLOCK_MONOTONIC)?,
                now(libc::CLOCK_BOOTTIME)?
            ))
        }
        "kid-clocks" => {
            // What a child forked now reads (in the time namespace made for children).
            let (rd, wr) = sys::pipe().map_err(fail)?;
            let kid = sys::fork().map_err(fail)?;
            if kid == 0 {
                let monotonic = sys::clock_ns(libc::CLOCK_MONOTONIC).unwrap_or(0);
                let boot = sys::clock_ns(libc::CLOCK_BOOTTIME).unwrap_or(0);
                let _ = sys::write_all(wr, format!("{monotonic} {boot}").as_bytes());
                std::process::exit(0);
            }
            sys::close(wr);
            let mut buf = [0u8; 64];
            let n = sys::read(rd, &mut buf).map_err(fail)?;
            sys::close(rd);
            sys::reap(kid).map_err(fail)?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        }
        "uts" => nix::sys::utsname::uname()
            .map(|u| {
                format!(
                    "{} {}",
                    u.nodename().to_string_lossy(),
                    u.domainname().to_string_lossy()
                )
            })
            .map_err(|e| fail(e.into())),
        other => Err(format!("unknown key {other:?}")),
    }
}

/// `ok`, or `errno N` of a failed call.
fn outcome(result: std::io::Result<()>) -> String {
    match result {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
    }
}

/// A field of a `status` file, trimmed.
fn field(path: &str, name: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == name).then(|| v.trim().to_string())
        })
        .ok_or_else(|| format!("no {name} in {path}"))
}

const POLICIES: &[(&str, i32)] = &[
    ("other", libc::SCHED_OTHER),
    ("fifo", libc::SCHED_FIFO),
    ("rr", libc::SCHED_RR),
    ("batch", libc::SCHED_BATCH),
    ("idle", libc::SCHED_IDLE),
    ("deadline", libc::SCHED_DEADLINE),
];

/// By their number: IOPRIO_CLASS_NONE, RT, BE, IDLE.
const IOPRIO_CLASSES: &[&str] = &["none", "rt", "be", "idle"];

fn policy_number(name: &str) -> Result<i32, String> {
    POLICIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| *p)
        .ok_or_else(|| format!("bad policy {name:?}"))
}

fn rlimit_number(name: &str) -> Result<u32, String> {
    let known = [
        ("cpu", libc::RLIMIT_CPU),
        ("fsize", libc::RLIMIT_FSIZE),
        ("stack", libc::RLIMIT_STACK),
        ("core", libc::RLIMIT_CORE),
        ("nproc", libc::RLIMIT_NPROC),
        ("nofile", libc::RLIMIT_NOFILE),
        ("memlock", libc::RLIMIT_MEMLOCK),
        ("data", libc::RLIMIT_DATA),
        ("as", libc::RLIMIT_AS),
    ];
    match known.iter().find(|(n, _)| *n == name) {
        Some((_, r)) => Ok(*r),
        None => parse_u64(name).map(|r| r as u32),
    }
}

/// x86-64 audit architecture (AUDIT_ARCH_X86_64), checked first as every filter should.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// A cBPF seccomp program: syscall `nr` fails with `errno` (only when its first argument is 0
/// if `arg0_zero`), everything else is allowed.
fn errno_filter(nr: i64, errno: u32, arg0_zero: bool) -> Vec<libc::sock_filter> {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let allow = stmt(ret, libc::SECCOMP_RET_ALLOW);
    let fail = stmt(
        ret,
        libc::SECCOMP_RET_ERRNO | (errno & libc::SECCOMP_RET_DATA),
    );
    // struct seccomp_data: nr at offset 0, arch at 4, instruction pointer at 8, args from 16
    // (the low half of args[0] at 16, its high half at 20 on little-endian x86-64).
    let mut prog = vec![
        stmt(load, 4),
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        allow,
        stmt(load, 0),
    ];
    if arg0_zero {
        prog.extend([
            jeq(nr as u32, 0, 5),
            stmt(load, 16),
            jeq(0, 0, 3),
            stmt(load, 20),
            jeq(0, 0, 1),
            fail,
            allow,
        ]);
    } else {
        prog.extend([jeq(nr as u32, 0, 1), fail, allow]);
    }
    prog
}
