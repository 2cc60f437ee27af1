//! Signal dispositions: read from a frozen task by remote rt_sigaction, installed by the
//! restore child itself; queued signals (the process's queue and each thread's) read after
//! the timers, read again right before a killing dump's kill for those that arrived
//! meanwhile ([`take_arrived`]), put back with everything blocked.

use cryo_proto::image::{SigAction, SigInfo, TaskCore};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::remote::{Remote, Scratch};
use crate::sys::signal::{self, KernelSigaction};
use crate::task::{threads, timers};

const NSIG: u32 = 64;

/// Every disposition that is not the default, read in the task itself. Only the signals
/// /proc says are caught or ignored are asked about (each question is a remote syscall),
/// plus SIGCHLD, whose flags matter even with the default handler.
pub fn dump_actions(pid: Pid, remote: &Remote, scratch: &Scratch) -> Result<Vec<SigAction>> {
    let status = crate::proc::status(pid)?;
    let mask = |key: &str| crate::proc::status_mask(&status, key).unwrap_or(!0);
    let set = mask("SigCgt") | mask("SigIgn") | 1 << (libc::SIGCHLD - 1);
    let asked: Vec<u32> = (1..=NSIG)
        .filter(|&signo| {
            signo != libc::SIGKILL as u32
                && signo != libc::SIGSTOP as u32
                && set & (1 << (signo - 1)) != 0
        })
        .collect();
    // struct kernel_sigaction: handler, flags, restorer, mask.
    const ACTION_LEN: usize = 32;
    let raw = scratch
        .batch_reading(remote, asked.len(), ACTION_LEN, |i, slot| {
            (libc::SYS_rt_sigaction, [asked[i] as u64, 0, slot, 8, 0, 0])
        })
        .map_err(|e| {
            let signo = asked.get(e.index).copied().unwrap_or(0);
            Error::sys(pid, format!("rt_sigaction({signo})"), e.error)
        })?;
    let mut out = Vec::new();
    for (&signo, raw) in asked.iter().zip(raw.chunks_exact(ACTION_LEN)) {
        let word =
            |i: usize| u64::from_ne_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        let act = SigAction {
            signo,
            handler: word(0),
            flags: word(1),
            restorer: word(2),
            mask: word(3),
        };
        if act.handler != 0 || act.flags != 0 || act.mask != 0 {
            out.push(act);
        }
    }
    Ok(out)
}

/// The signals queued to a frozen task, as PTRACE_PEEKSIGINFO reads them: its process-wide
/// queue and each thread's (in the order of the tids read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Queued {
    /// The process-wide queue.
    pub shared: Vec<SigInfo>,
    /// Each thread's own queue.
    pub threads: Vec<Vec<SigInfo>>,
}

/// Reads the queues of frozen task `pid`, threads `tids`. The dump reads them after the
/// timers: a timer's signal queued after this read was queued after its timer's state was
/// read, and the restored timer queues it again ([`timers::queues_again`]).
pub fn read_queued(pid: Pid, tids: &[Pid]) -> Result<Queued> {
    let threads = tids
        .iter()
        .map(|&tid| threads::thread_pending(tid))
        .collect::<Result<_>>()?;
    Ok(Queued {
        shared: threads::shared_pending(pid)?,
        threads,
    })
}

/// Brings `core`'s queued signals (as dumped from the queues `seen`) up to the queues read
/// `now`, later: the signals that arrived meanwhile are added after the others (those a
/// timer queues again itself left out), the ones that went away taken out (a SIGCONT
/// discards the queued stop signals, a stop signal the queued SIGCONT). Refused: a signal
/// that arrived and would stop the process (SIGSTOP; SIGTSTP, SIGTTIN, SIGTTOU at their
/// default action) or continue it (SIGCONT, `stopped`), or a SIGCONT that discards the
/// SIGSTOP pending to it when frozen, which the image keeps (`stop_pending`): its stop or
/// continuation would not be in the image. Returns whether `core` changed.
pub fn take_arrived(
    pid: Pid,
    core: &mut TaskCore,
    seen: &Queued,
    now: &Queued,
    stopped: bool,
    stop_pending: bool,
) -> Result<bool> {
    let judge = Judge {
        core,
        stopped,
        stop_pending,
    };
    let mut queues = vec![(pid, arrivals(&seen.shared, &now.shared))];
    for ((seen, now), t) in seen.threads.iter().zip(&now.threads).zip(&core.threads) {
        queues.push((Pid::from_raw(t.tid), arrivals(seen, now)));
    }
    for (tid, a) in &mut queues {
        // A stop signal for a process stopped already changes nothing it can see but its
        // pending set: the image's are those read before the freeze ([`PendingStops`]; the
        // queues leave stop signals out), and one sent during the dump is not kept.
        a.arrived.retain(|info| !judge.stops_the_stopped(info));
        for info in &a.arrived {
            judge.refuse_stop_or_continue(pid, *tid, info)?;
        }
        // A timer's, queued after the timer's state was read: the restored timer queues it.
        a.arrived.retain(|info| !timers::queues_again(core, info));
    }
    let lists = std::iter::once(&mut core.shared_pending)
        .chain(core.threads.iter_mut().map(|t| &mut t.pending));
    let mut changed = false;
    for (list, (_, a)) in lists.zip(queues) {
        for gone in &a.gone {
            if let Some(at) = list.iter().position(|x| same_queued(x, gone)) {
                list.remove(at);
                changed = true;
            }
        }
        changed |= !a.arrived.is_empty();
        list.extend(a.arrived);
    }
    Ok(changed)
}

/// What changed in one queue between two reads.
struct Arrivals {
    /// Queued since, in their order.
    arrived: Vec<SigInfo>,
    /// Read the first time, gone the second.
    gone: Vec<SigInfo>,
}

/// The signals of `now` not in `seen`, and those of `seen` not in `now` (each matched once).
fn arrivals(seen: &[SigInfo], now: &[SigInfo]) -> Arrivals {
    let mut matched = vec![false; seen.len()];
    let mut arrived = Vec::new();
    for info in now {
        match (0..seen.len()).find(|&k| !matched[k] && same_queued(&seen[k], info)) {
            Some(k) => matched[k] = true,
            None => arrived.push(info.clone()),
        }
    }
    let gone = seen
        .iter()
        .zip(&matched)
        .filter(|(_, &m)| !m)
        .map(|(s, _)| s.clone())
        .collect();
    Arrivals { arrived, gone }
}

/// Whether two reads of a queue show the same queued signal: the same bytes, or a timer's
/// signal of the same timer (the kernel counts the timer's overruns in it while it waits).
fn same_queued(a: &SigInfo, b: &SigInfo) -> bool {
    match (timers::queued_by_timer(a), timers::queued_by_timer(b)) {
        (Some(x), Some(y)) => x == y && a.signo == b.signo,
        _ => a.raw == b.raw,
    }
}

/// What a signal that arrived during the dump does to the process (its core as dumped).
struct Judge<'a> {
    core: &'a TaskCore,
    /// The process was stopped (a group stop) when frozen.
    stopped: bool,
    /// Running when frozen, with a SIGSTOP pending that the image keeps.
    stop_pending: bool,
}

impl Judge<'_> {
    /// Whether `info` would stop the process (SIGSTOP; SIGTSTP, SIGTTIN, SIGTTOU at their
    /// default action).
    fn stops(&self, info: &SigInfo) -> bool {
        let default =
            action_of(&self.core.sigactions, info.signo as u32).handler == libc::SIG_DFL as u64;
        match info.signo {
            libc::SIGSTOP => true,
            libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => default,
            _ => false,
        }
    }

    /// Whether `info` is a stop signal for a process stopped already (it stays stopped).
    fn stops_the_stopped(&self, info: &SigInfo) -> bool {
        self.stopped && self.stops(info)
    }

    /// Refuses `info`, queued to `tid` (`pid`: to the process) during the dump, when it
    /// stops or continues the process.
    fn refuse_stop_or_continue(&self, pid: Pid, tid: Pid, info: &SigInfo) -> Result<()> {
        let effect = match info.signo {
            _ if self.stops(info) => "stops it",
            libc::SIGCONT if self.stopped => "continues it (it was stopped)",
            libc::SIGCONT if self.stop_pending => {
                "discards the SIGSTOP pending to it when it was frozen (the image keeps it)"
            }
            _ => return Ok(()),
        };
        let name =
            nix::sys::signal::Signal::try_from(info.signo).map_or("a signal", |s| s.as_str());
        let to = if tid == pid {
            String::new()
        } else {
            format!(" to thread {tid}")
        };
        // kill, sigqueue, tgkill (SI_USER, SI_QUEUE, SI_TKILL...) say who sent it.
        let at = crate::sys::signal::SIGINFO_PID_OFFSET;
        let from = match info.raw.get(at..at + 4) {
            Some(b) if info.code <= 0 => {
                format!(" from pid {}", i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            }
            _ => String::new(),
        };
        Err(Error::target(
            pid,
            format!(
                "{name} ({}){from} was sent{to} during the dump and {effect}: that change is \
                 not in the image; refused (the process runs on and takes it; dump again)",
                info.signo
            ),
        ))
    }
}

/// Installs the dumped dispositions in the calling process (the restore child, signals
/// blocked); every other signal gets its default.
pub fn restore_actions(actions: &[SigAction]) -> std::io::Result<()> {
    for signo in 1..=NSIG {
        if signo == libc::SIGKILL as u32 || signo == libc::SIGSTOP as u32 {
            continue;
        }
        signal::set_action(signo, &action_of(actions, signo))?;
    }
    Ok(())
}

/// Queues the dumped pending signals again (process-wide and thread-directed) in the calling
/// process, whose signals are all blocked, so they wait exactly as before.
pub fn requeue(shared: &[SigInfo], thread: &[SigInfo]) -> std::io::Result<()> {
    for (infos, is_thread) in [(shared, false), (thread, true)] {
        for info in infos {
            let raw: [u8; signal::SIGINFO_LEN] = info.raw.as_slice().try_into().map_err(|_| {
                std::io::Error::other(format!("signal {}: siginfo is not 128 bytes", info.signo))
            })?;
            signal::queue_to_self(&raw, is_thread)?;
        }
    }
    Ok(())
}

/// The disposition of `signo` among the dumped `actions`: SIG_DFL with no flags where they
/// list none.
fn action_of(actions: &[SigAction], signo: u32) -> KernelSigaction {
    actions
        .iter()
        .find(|a| a.signo == signo)
        .map(|a| KernelSigaction {
            handler: a.handler,
            flags: a.flags,
            restorer: a.restorer,
            mask: a.mask,
        })
        .unwrap_or_default()
}

/// The SIGCHLD disposition of a process (its core).
pub fn sigchld_action(core: &cryo_proto::image::TaskCore) -> KernelSigaction {
    action_of(&core.sigactions, libc::SIGCHLD as u32)
}

/// What the SIGCHLD of a child's stop, made again at restore, does to its parent (`parent`,
/// its core as dumped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopNotice {
    /// A SIGCHLD would be queued: the disposition is not SIG_IGN, has no SA_NOCLDSTOP, and
    /// none is pending to the process already (which would absorb it).
    pub sent: bool,
    /// ...and the parent would see it: it is caught (the handler runs again), or blocked in
    /// every thread (it stays pending); SIG_DFL unblocked somewhere drops it unseen.
    pub seen: bool,
    /// The restore can hold it back by giving the disposition SA_NOCLDSTOP meanwhile:
    /// setting SIG_DFL again discards a pending SIGCHLD, so not with one pending to a thread.
    pub suppressible: bool,
}

impl StopNotice {
    /// The notice a stop would give `parent`.
    pub fn of(parent: &cryo_proto::image::TaskCore) -> Self {
        let act = sigchld_action(parent);
        let is = |s: &SigInfo| s.signo == libc::SIGCHLD;
        let shared = parent.shared_pending.iter().any(is);
        let to_thread = parent.threads.iter().flat_map(|t| &t.pending).any(is);
        let caught = act.handler != libc::SIG_DFL as u64 && act.handler != libc::SIG_IGN as u64;
        let sent = act.handler != libc::SIG_IGN as u64
            && act.flags & libc::SA_NOCLDSTOP as u64 == 0
            && !shared;
        let bit = 1u64 << (libc::SIGCHLD - 1);
        let all_block = parent.threads.iter().all(|t| t.blocked & bit != 0);
        StopNotice {
            sent,
            seen: sent && (caught || all_block),
            suppressible: caught || !to_thread,
        }
    }
}

/// The stop signals (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU) as a signal set of /proc (bit n-1:
/// signal n).
pub const STOP_SIGNALS: u64 = 1 << (libc::SIGSTOP - 1)
    | 1 << (libc::SIGTSTP - 1)
    | 1 << (libc::SIGTTIN - 1)
    | 1 << (libc::SIGTTOU - 1);

/// The stop signals pending to a process in a group stop, each in its place: sent to it again
/// while it is stopped, a stop signal waits (no thread of a stopped or traced process wants
/// it: the kernel's wants_signal, so none is woken) until the SIGCONT that wakes the process
/// discards it (prepare_signal flushes every stop signal from every queue), caught or not.
/// Only /proc shows it (SigPnd, ShdPnd), and a tracer. cryo's remote calls take a pending
/// SIGSTOP (the one signal they cannot block) out of its queue, so they are read before the
/// seize, and sent again while the process is traced and stopped: queued whatever the
/// disposition (a traced task ignores no signal), taken by no thread (each goes back into the
/// stop before it looks at its queues, JOBCTL_STOP_PENDING).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingStops {
    /// The process's shared set.
    pub shared: u64,
    /// Each thread's own set, by tid.
    pub threads: Vec<(Pid, u64)>,
}

impl PendingStops {
    /// Reads them from /proc for process `pid`, threads `tids`.
    pub fn read(pid: Pid, tids: &[Pid]) -> Result<Self> {
        let set = |status: &[(String, String)], key: &str| {
            crate::proc::status_mask(status, key).unwrap_or(0) & STOP_SIGNALS
        };
        let threads = tids
            .iter()
            .map(|&tid| Ok((tid, set(&crate::proc::thread_status(pid, tid)?, "SigPnd"))))
            .collect::<Result<_>>()?;
        Ok(PendingStops {
            shared: set(&crate::proc::status(pid)?, "ShdPnd"),
            threads,
        })
    }

    /// As a process entry of the image records them (`tids`, its threads).
    pub fn of_entry(entry: &cryo_proto::image::ProcessEntry, tids: &[Pid]) -> Self {
        PendingStops {
            shared: entry.stop_pending_shared & STOP_SIGNALS,
            threads: tids
                .iter()
                .zip(&entry.stop_pending_threads)
                .map(|(&tid, &set)| (tid, set & STOP_SIGNALS))
                .filter(|&(_, set)| set != 0)
                .collect(),
        }
    }

    /// Records them in `entry` (whose `tids` are set).
    pub fn record(&self, entry: &mut cryo_proto::image::ProcessEntry) {
        entry.stop_pending_shared = self.shared;
        entry.stop_pending_threads = if self.threads.iter().all(|&(_, set)| set == 0) {
            Vec::new()
        } else {
            entry
                .tids
                .iter()
                .map(|&tid| self.of_thread(Pid::from_raw(tid)))
                .collect()
        };
    }

    /// None pending.
    pub fn is_empty(&self) -> bool {
        self.shared == 0 && self.threads.iter().all(|&(_, set)| set == 0)
    }

    /// Only signal `signo` of them.
    pub fn only(mut self, signo: i32) -> Self {
        let bit = 1u64 << (signo - 1);
        self.shared &= bit;
        for (_, set) in &mut self.threads {
            *set &= bit;
        }
        self
    }

    /// Adds signal `signo` to the own sets of threads `tids`.
    pub fn add_to_threads(&mut self, signo: i32, tids: &[Pid]) {
        let bit = 1u64 << (signo - 1);
        for (tid, set) in &mut self.threads {
            if tids.contains(tid) {
                *set |= bit;
            }
        }
    }

    /// Whether SIGSTOP is pending anywhere.
    pub fn has_sigstop(&self) -> bool {
        let bit = 1 << (libc::SIGSTOP - 1);
        self.shared & bit != 0 || self.threads.iter().any(|&(_, set)| set & bit != 0)
    }

    /// Thread `tid`'s own set.
    fn of_thread(&self, tid: Pid) -> u64 {
        self.threads
            .iter()
            .find(|&&(t, _)| t == tid)
            .map_or(0, |&(_, set)| set)
    }

    /// Sends process `pid` (traced and stopped) each of them that `now` lacks: kill for the
    /// shared set, tgkill for a thread's. One pending already is not sent again (a second
    /// would join it: one instance of a signal below SIGRTMIN per set).
    pub fn send_missing(&self, pid: Pid, now: &PendingStops) -> Result<()> {
        let signals = |set: u64| (1..=NSIG as i32).filter(move |&s| set & 1 << (s - 1) != 0);
        for signo in signals(self.shared & !now.shared) {
            nix::sys::signal::Signal::try_from(signo)
                .and_then(|sig| nix::sys::signal::kill(pid, sig))
                .map_err(|e| {
                    Error::sys(
                        pid,
                        format!("send its pending stop signal {signo} again"),
                        e,
                    )
                })?;
        }
        for &(tid, set) in &self.threads {
            for signo in signals(set & !now.of_thread(tid)) {
                signal::tgkill(pid, tid, signo).map_err(|e| {
                    Error::sys(
                        pid,
                        format!("send thread {tid} its pending stop signal {signo} again"),
                        e,
                    )
                })?;
            }
        }
        Ok(())
    }
}

/// Takes the stop signals out of the queues dumped of a stopped process (`core`): their
/// pending sets are recorded apart ([`PendingStops`]) and sent again once the restored
/// process has taken its stop; queued with the others, the first would be taken in place of
/// the stop's own signal, or join it.
pub fn leave_out_stops(core: &mut TaskCore) {
    leave_out(core, STOP_SIGNALS, |_| STOP_SIGNALS);
}

/// Takes out of the queues dumped of a running process (`core`) the stop signals recorded
/// apart in `stops` (each from the set that had it): the restore sends them again before it
/// lets the process go, which takes them then, as it would have.
pub fn leave_out_recorded(core: &mut TaskCore, stops: &PendingStops) {
    leave_out(core, stops.shared, |tid| {
        stops.of_thread(Pid::from_raw(tid))
    });
}

/// Takes out of `core`'s queues the signals of set `shared` (from the process's queue) and
/// those of `own(tid)` (from each thread's).
fn leave_out(core: &mut TaskCore, shared: u64, own: impl Fn(i32) -> u64) {
    let in_set = |set: u64| {
        move |info: &SigInfo| {
            (1..=NSIG as i32).contains(&info.signo) && set & 1 << (info.signo - 1) != 0
        }
    };
    let shared = in_set(shared);
    core.shared_pending.retain(|i| !shared(i));
    for thread in &mut core.threads {
        let own = in_set(own(thread.tid));
        thread.pending.retain(|i| !own(i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryo_proto::image::{TaskCore, ThreadCore};

    /// A parent with SIGCHLD's `handler` and `flags`, threads blocking SIGCHLD as `blocked`
    /// says, and a SIGCHLD pending to the process (`shared`) or to its first thread.
    fn parent(
        handler: u64,
        flags: u64,
        blocked: &[bool],
        shared: bool,
        to_thread: bool,
    ) -> TaskCore {
        let sigchld = || SigInfo {
            signo: libc::SIGCHLD,
            ..Default::default()
        };
        let bit = 1u64 << (libc::SIGCHLD - 1);
        TaskCore {
            sigactions: vec![SigAction {
                signo: libc::SIGCHLD as u32,
                handler,
                flags,
                ..Default::default()
            }],
            shared_pending: if shared { vec![sigchld()] } else { vec![] },
            threads: blocked
                .iter()
                .enumerate()
                .map(|(k, &b)| ThreadCore {
                    blocked: if b { bit } else { 0 },
                    pending: if k == 0 && to_thread {
                        vec![sigchld()]
                    } else {
                        vec![]
                    },
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// A queued siginfo: `signo`, `code`, and at offset 16 `word` (si_pid, or a timer's id).
    fn queued(signo: i32, code: i32, word: i32) -> SigInfo {
        let mut raw = vec![0u8; 128];
        raw[0..4].copy_from_slice(&signo.to_ne_bytes());
        raw[8..12].copy_from_slice(&code.to_ne_bytes());
        raw[16..20].copy_from_slice(&word.to_ne_bytes());
        SigInfo { signo, code, raw }
    }

    #[test]
    fn signals_queued_during_the_dump_are_added_but_those_a_timer_queues_again() {
        const SI_QUEUE: i32 = -1;
        const SI_TIMER: i32 = -2;
        const SI_KERNEL: i32 = 0x80;
        let rt = 35;
        let first = queued(rt, SI_QUEUE, 7);
        let mut core = TaskCore {
            threads: vec![ThreadCore {
                tid: 10,
                ..Default::default()
            }],
            posix_timers: vec![cryo_proto::image::PosixTimer {
                id: 3,
                value_ns: 1_000,
                ..Default::default()
            }],
            itimers: vec![cryo_proto::image::ITimer {
                which: 0,
                value_us: 5,
                interval_us: 0,
            }],
            shared_pending: vec![first.clone()],
            ..Default::default()
        };
        let seen = Queued {
            shared: vec![first.clone()],
            threads: vec![vec![]],
        };
        let same = seen.clone();
        let pid = Pid::from_raw(10);
        assert!(!take_arrived(pid, &mut core, &seen, &same, false, false).unwrap());
        // The armed timer's signal and the real-time interval timer's SIGALRM are queued again
        // by the restored timers; a SIGALRM someone sent is not.
        let alarm_sent = queued(libc::SIGALRM, 0, 99);
        let now = Queued {
            shared: vec![
                first.clone(),
                queued(rt, SI_QUEUE, 8),
                queued(rt + 1, SI_TIMER, 3),
                queued(libc::SIGALRM, SI_KERNEL, 0),
            ],
            threads: vec![vec![alarm_sent.clone()]],
        };
        assert!(take_arrived(pid, &mut core, &seen, &now, false, false).unwrap());
        assert_eq!(core.shared_pending, vec![first, queued(rt, SI_QUEUE, 8)]);
        assert_eq!(core.threads[0].pending, vec![alarm_sent]);
    }

    #[test]
    fn a_stop_or_continue_signal_queued_during_the_dump_is_refused_and_one_discarded_goes() {
        let pid = Pid::from_raw(10);
        let core = || TaskCore {
            threads: vec![ThreadCore {
                tid: 10,
                ..Default::default()
            }],
            ..Default::default()
        };
        let none = Queued {
            shared: vec![],
            threads: vec![vec![]],
        };
        let with = |s: SigInfo| Queued {
            shared: vec![s],
            threads: vec![vec![]],
        };
        let stop = queued(libc::SIGSTOP, 0, 42);
        let err = take_arrived(pid, &mut core(), &none, &with(stop.clone()), false, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SIGSTOP") && err.contains("from pid 42"),
            "{err}"
        );
        let cont = queued(libc::SIGCONT, 0, 42);
        assert!(take_arrived(pid, &mut core(), &none, &with(cont.clone()), true, false).is_err());
        // Not stopped: SIGCONT is a signal like another; the stop signal it discarded goes.
        let mut c = core();
        c.shared_pending = vec![queued(libc::SIGTSTP, 0, 1)];
        let seen = with(queued(libc::SIGTSTP, 0, 1));
        assert!(take_arrived(pid, &mut c, &seen, &with(cont.clone()), false, false).unwrap());
        assert_eq!(c.shared_pending, vec![cont.clone()]);
        // Running with a SIGSTOP pending that the image keeps: a SIGCONT would discard it.
        let err = take_arrived(pid, &mut core(), &none, &with(cont.clone()), false, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("SIGCONT") && err.contains("discards"), "{err}");
    }

    #[test]
    fn a_stops_sigchld_is_seen_where_caught_or_blocked_everywhere_and_not_absorbed() {
        let handler = 0x40_1000;
        let nocldstop = libc::SA_NOCLDSTOP as u64;
        let notice = |core: &TaskCore| {
            let n = StopNotice::of(core);
            (n.sent, n.seen, n.suppressible)
        };
        // Caught: seen, held back by SA_NOCLDSTOP.
        assert_eq!(
            notice(&parent(handler, 0, &[false], false, false)),
            (true, true, true)
        );
        // SIG_DFL with a thread that does not block it: dropped unseen.
        assert_eq!(
            notice(&parent(0, 0, &[true, false], false, false)),
            (true, false, true)
        );
        // SIG_DFL blocked everywhere: it would stay pending.
        assert_eq!(
            notice(&parent(0, 0, &[true, true], false, false)),
            (true, true, true)
        );
        // ...and with one pending to a thread, SIG_DFL set again would discard it.
        assert_eq!(
            notice(&parent(0, 0, &[true], false, true)),
            (true, true, false)
        );
        // One pending to the process absorbs it; SIG_IGN and SA_NOCLDSTOP send none.
        assert!(!notice(&parent(handler, 0, &[true], true, false)).1);
        assert!(!notice(&parent(1, 0, &[true], false, false)).0);
        assert!(!notice(&parent(handler, nocldstop, &[true], false, false)).0);
    }

    #[test]
    fn pending_stops_go_into_the_entry_by_thread_and_come_back_so() {
        use cryo_proto::image::ProcessEntry;
        let bit = |sig: i32| 1u64 << (sig - 1);
        let tids = [Pid::from_raw(10), Pid::from_raw(11), Pid::from_raw(12)];
        let stops = PendingStops {
            shared: bit(libc::SIGSTOP),
            threads: vec![(tids[0], 0), (tids[1], 0), (tids[2], bit(libc::SIGTSTP))],
        };
        let mut entry = ProcessEntry {
            tids: vec![10, 11, 12],
            ..Default::default()
        };
        stops.record(&mut entry);
        assert_eq!(entry.stop_pending_shared, bit(libc::SIGSTOP));
        assert_eq!(entry.stop_pending_threads, vec![0, 0, bit(libc::SIGTSTP)]);
        // Restored with other tids (a restore in a new PID namespace names them so too).
        let made = [Pid::from_raw(20), Pid::from_raw(21), Pid::from_raw(22)];
        let back = PendingStops::of_entry(&entry, &made);
        assert_eq!(back.shared, bit(libc::SIGSTOP));
        assert_eq!(back.threads, vec![(made[2], bit(libc::SIGTSTP))]);
        assert!(back.has_sigstop() && !back.is_empty());
        // None to a thread: nothing recorded per thread.
        let mut entry = ProcessEntry {
            tids: vec![10],
            ..Default::default()
        };
        PendingStops::default().record(&mut entry);
        assert!(entry.stop_pending_threads.is_empty());
        assert!(PendingStops::of_entry(&entry, &made).is_empty());
    }

    #[test]
    fn only_the_recorded_stop_signals_are_left_out_of_a_running_process_queues() {
        let bit = |sig: i32| 1u64 << (sig - 1);
        let mut core = TaskCore {
            shared_pending: vec![queued(libc::SIGSTOP, 0, 1), queued(libc::SIGTSTP, 0, 1)],
            threads: vec![
                ThreadCore {
                    tid: 10,
                    pending: vec![queued(libc::SIGSTOP, -6, 1)],
                    ..Default::default()
                },
                ThreadCore {
                    tid: 11,
                    pending: vec![queued(libc::SIGSTOP, -6, 1), queued(libc::SIGUSR1, -6, 1)],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let stops = PendingStops {
            shared: bit(libc::SIGSTOP),
            threads: vec![
                (Pid::from_raw(10), 0),
                (Pid::from_raw(11), bit(libc::SIGSTOP)),
            ],
        };
        leave_out_recorded(&mut core, &stops);
        let signos = |l: &[SigInfo]| l.iter().map(|i| i.signo).collect::<Vec<_>>();
        assert_eq!(signos(&core.shared_pending), vec![libc::SIGTSTP]);
        // Not recorded: queued after the freeze read, dumped as it is.
        assert_eq!(signos(&core.threads[0].pending), vec![libc::SIGSTOP]);
        assert_eq!(signos(&core.threads[1].pending), vec![libc::SIGUSR1]);
        let only = PendingStops {
            shared: bit(libc::SIGSTOP) | bit(libc::SIGTTIN),
            threads: vec![(Pid::from_raw(10), bit(libc::SIGTSTP))],
        }
        .only(libc::SIGSTOP);
        assert_eq!(only.shared, bit(libc::SIGSTOP));
        assert!(only.threads.iter().all(|&(_, set)| set == 0));
    }

    #[test]
    fn stop_signals_are_left_out_of_the_dumped_queues() {
        let mut core = TaskCore {
            shared_pending: vec![queued(libc::SIGSTOP, 0, 1), queued(libc::SIGUSR1, 0, 1)],
            threads: vec![ThreadCore {
                pending: vec![queued(libc::SIGTTOU, -6, 1), queued(libc::SIGTERM, -6, 1)],
                ..Default::default()
            }],
            ..Default::default()
        };
        leave_out_stops(&mut core);
        let signos = |l: &[SigInfo]| l.iter().map(|i| i.signo).collect::<Vec<_>>();
        assert_eq!(signos(&core.shared_pending), vec![libc::SIGUSR1]);
        assert_eq!(signos(&core.threads[0].pending), vec![libc::SIGTERM]);
    }
}
