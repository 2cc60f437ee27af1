//! Interval timers (setitimer) and POSIX timers (timer_create): read from /proc and by
//! remote calls in the frozen task, recreated in the restored one with the same ids
//! (PR_TIMER_CREATE_RESTORE_IDS) and the time they had left; an absolute CLOCK_REALTIME
//! timer with its deadline, found on the realtime base of /proc/timer_list; a timer whose own
//! signal was pending made to expire at once, so that it queues it again itself.
//!
//! ```text
//! dump     /proc/PID/timers (id, signal, notify, clock), timer_gettime in the task,
//!          /proc/timer_list (CLOCK_REALTIME timers: which base), the SI_TIMER siginfos of
//!          the pending lists (read after) taken out (tie_pending_signals); at a killing
//!          dump's last read of the queues, a timer's signal queued since left out: the
//!          restored timer queues it again (queues_again)
//! restore  timer_create with the id, timer_settime: time left, TIMER_ABSTIME deadline, or
//!          at once (pending signal: then cryo waits until it is queued)
//! ```

use std::io;

use cryo_proto::image::{ITimer, PosixTimer, SigInfo, TaskCore};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::remote::{Remote, Scratch};
use crate::restore::error::RestoreError;
use crate::sys::ptrace as pt;

const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
const SIGEV_SIGNAL: i32 = 0;
const SIGEV_NONE: i32 = 1;
const SIGEV_THREAD_ID: i32 = 4;

fn words(raw: &[u8]) -> Vec<u64> {
    raw.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
}

/// The three interval timers that are armed, asked of the task itself (in one stop).
pub fn dump_itimers(pid: Pid, remote: &Remote, scratch: &Scratch) -> Result<Vec<ITimer>> {
    // struct itimerval: it_interval {sec, usec}, it_value {sec, usec}.
    const ITIMERVAL_LEN: usize = 32;
    let raw = scratch
        .batch_reading(remote, 3, ITIMERVAL_LEN, |which, slot| {
            (libc::SYS_getitimer, [which as u64, slot, 0, 0, 0, 0])
        })
        .map_err(|e| Error::sys(pid, format!("getitimer({})", e.index), e.error))?;
    let mut out = Vec::new();
    for (which, raw) in (0..).zip(raw.chunks_exact(ITIMERVAL_LEN)) {
        let w = words(raw);
        let interval_us = w[0] * 1_000_000 + w[1];
        let value_us = w[2] * 1_000_000 + w[3];
        if value_us != 0 || interval_us != 0 {
            out.push(ITimer {
                which,
                value_us,
                interval_us,
            });
        }
    }
    Ok(out)
}

/// Every POSIX timer of the task: /proc/PID/timers for how it was made, timer_gettime in the
/// task for where it stands (all in one stop).
pub fn dump_posix(pid: Pid, remote: &Remote, scratch: &Scratch) -> Result<Vec<PosixTimer>> {
    let text = std::fs::read_to_string(crate::proc::dir(pid).join("timers"))
        .map_err(|e| Error::sys(pid, "read /proc/PID/timers", e))?;
    let mut timers = parse_proc_timers(&text)
        .ok_or_else(|| Error::target(pid, format!("cannot parse /proc/{pid}/timers")))?;
    refuse_gone_targets(pid, &timers)?;
    // The realtime clock around the reads, for the CLOCK_REALTIME timers' deadlines.
    let before = realtime_ns();
    // struct itimerspec: it_interval {sec, nsec}, it_value {sec, nsec}.
    const ITIMERSPEC_LEN: usize = 32;
    let raw = scratch
        .batch_reading(remote, timers.len(), ITIMERSPEC_LEN, |i, slot| {
            (
                libc::SYS_timer_gettime,
                [timers[i].id as u64, slot, 0, 0, 0, 0],
            )
        })
        .map_err(|e| {
            let id = timers.get(e.index).map_or(-1, |t| t.id);
            Error::sys(pid, format!("timer_gettime({id})"), e.error)
        })?;
    let after = realtime_ns();
    for (t, raw) in timers.iter_mut().zip(raw.chunks_exact(ITIMERSPEC_LEN)) {
        let w = words(raw);
        t.interval_ns = w[0] * 1_000_000_000 + w[1];
        t.value_ns = w[2] * 1_000_000_000 + w[3];
    }
    let armed = |t: &PosixTimer| t.value_ns != 0 || t.interval_ns != 0;
    if timers
        .iter()
        .any(|t| t.clockid == libc::CLOCK_REALTIME && armed(t))
    {
        let list = std::fs::read_to_string("/proc/timer_list")
            .map_err(|e| Error::sys(pid, "read /proc/timer_list", e))?;
        let queued = parse_timer_list(&list)
            .ok_or_else(|| Error::target(pid, "cannot parse /proc/timer_list".to_string()))?;
        for t in timers.iter_mut() {
            t.realtime_deadline_ns = realtime_deadline(pid, t, &queued, (before, after))?;
        }
    }
    Ok(timers)
}

/// The realtime clock now (ns since the epoch).
fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A POSIX timer queued on a clock base of some CPU, as /proc/timer_list shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Queued {
    /// On a realtime base (an absolute CLOCK_REALTIME timer) rather than a monotonic one.
    realtime: bool,
    /// Its expiry on the realtime clock (ns since the epoch): a monotonic base's expiry plus
    /// the realtime base's offset from it.
    expires_realtime: u64,
}

/// The POSIX timers (posix_timer_fn) of every process queued on a realtime or monotonic
/// base of /proc/timer_list, every CPU's: `clock N:` opens base N (0 monotonic, 1 realtime,
/// 4 and 5 their soft twins), `.offset:` is the base's offset from the monotonic clock,
/// `#I: <...>, FUNCTION, S:..` a timer, `# expires at SOFT-HARD nsecs` its expiry on the
/// base's clock. None if it cannot be read so.
fn parse_timer_list(text: &str) -> Option<Vec<Queued>> {
    let mut out = Vec::new();
    let mut base: Option<u32> = None;
    // Per CPU, the realtime base's offset (read before its timers are listed: clock 1 comes
    // after clock 0, whose expiries are converted once the offset is known).
    let mut offset: Option<u64> = None;
    let mut pending_mono: Vec<u64> = Vec::new();
    let mut posix = false;
    let flush = |pending: &mut Vec<u64>, offset: Option<u64>, out: &mut Vec<Queued>| {
        if let Some(off) = offset {
            out.extend(pending.drain(..).map(|e| Queued {
                realtime: false,
                expires_realtime: e.wrapping_add(off),
            }));
        }
    };
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("cpu:") {
            if !pending_mono.is_empty() {
                // A CPU whose realtime base was not listed: no offset to convert with.
                return None;
            }
            base = None;
            offset = None;
        } else if let Some(n) = trimmed
            .strip_prefix("clock ")
            .and_then(|r| r.strip_suffix(':'))
        {
            base = Some(n.trim().parse().ok()?);
            posix = false;
        } else if let Some(v) = trimmed.strip_prefix(".offset:") {
            if base.map(|b| b % 4) == Some(1) {
                offset = Some(v.trim().strip_suffix("nsecs")?.trim().parse().ok()?);
                flush(&mut pending_mono, offset, &mut out);
            }
        } else if let Some(rest) = trimmed.strip_prefix("# expires at ") {
            if !std::mem::take(&mut posix) {
                continue;
            }
            let soft: u64 = rest.split('-').next()?.trim().parse().ok()?;
            match base.map(|b| b % 4) {
                Some(0) => {
                    pending_mono.push(soft);
                    flush(&mut pending_mono, offset, &mut out);
                }
                Some(1) => out.push(Queued {
                    realtime: true,
                    expires_realtime: soft,
                }),
                _ => {}
            }
        } else if trimmed.starts_with('#') {
            posix = trimmed.contains(", posix_timer_fn,");
        } else if trimmed.starts_with("Tick Device") || trimmed.starts_with("Clock Event") {
            break;
        }
    }
    if !pending_mono.is_empty() {
        return None;
    }
    Some(out)
}

/// How far a queued timer's expiry may lie outside the window the reads allow: rounding of
/// the realtime base's offset, which the kernel updates per CPU.
const DEADLINE_SLACK_NS: u64 = 20_000;

/// The deadline of `t` if it is a CLOCK_REALTIME timer armed with TIMER_ABSTIME. The kernel
/// keeps no flag for it: a relative CLOCK_REALTIME timer runs on the monotonic base (a clock
/// change does not move it), an absolute one on the realtime base, and /proc/timer_list shows
/// both. `t` (its time left read between the realtime clock's `window`) is found there by
/// its expiry. Refused when it cannot be told: not queued (SIGEV_NONE, or it expired and its
/// signal waits), or a timer of the other kind expiring at the same moment.
fn realtime_deadline(
    pid: Pid,
    t: &PosixTimer,
    queued: &[Queued],
    window: (u64, u64),
) -> Result<Option<u64>> {
    if t.clockid != libc::CLOCK_REALTIME || (t.value_ns == 0 && t.interval_ns == 0) {
        return Ok(None);
    }
    let (from, to) = (
        window
            .0
            .saturating_add(t.value_ns)
            .saturating_sub(DEADLINE_SLACK_NS),
        window
            .1
            .saturating_add(t.value_ns)
            .saturating_add(DEADLINE_SLACK_NS),
    );
    let matching: Vec<&Queued> = queued
        .iter()
        .filter(|q| (from..=to).contains(&q.expires_realtime))
        .collect();
    let absolute: Vec<u64> = matching
        .iter()
        .filter(|q| q.realtime)
        .map(|q| q.expires_realtime)
        .collect();
    let relative = matching.iter().any(|q| !q.realtime);
    let refuse = |why: &str| {
        Err(Error::target(
            pid,
            format!(
                "POSIX timer {} on CLOCK_REALTIME: cannot tell whether it was armed with \
                 TIMER_ABSTIME (an absolute deadline) or relative: {why}",
                t.id
            ),
        ))
    };
    if t.notify == SIGEV_NONE {
        return refuse("a SIGEV_NONE timer is never queued in /proc/timer_list");
    }
    match (absolute.first(), relative) {
        (Some(&deadline), false) if absolute.iter().all(|&d| d == deadline) => Ok(Some(deadline)),
        (None, true) => Ok(None),
        (None, false) => refuse(
            "it is not queued in /proc/timer_list (it expired and its signal is pending, or \
             the clock was set meanwhile); a later dump may succeed",
        ),
        _ => refuse(
            "timers of both kinds expire at that moment in /proc/timer_list; a later dump may \
             succeed",
        ),
    }
}

/// `si_code` of a signal a POSIX timer queued.
const SI_TIMER: i32 = -2;

/// The timer id of a pending signal a POSIX timer queued (`si_timerid`, after si_signo,
/// si_errno, si_code and padding), None for another signal.
pub(crate) fn queued_by_timer(info: &SigInfo) -> Option<i32> {
    let id = info.raw.get(16..20)?;
    (info.code == SI_TIMER).then(|| i32::from_ne_bytes([id[0], id[1], id[2], id[3]]))
}

/// Whether `info`, queued to the process after its timers were read (`core`), is a signal
/// its restored timers queue again themselves: a POSIX timer's (SI_TIMER), or the SIGALRM
/// of the real-time interval timer (SI_KERNEL), each armed when read (one that was not could
/// not expire since). It comes back with the time it had left then, so it expires once more
/// after the restore: the signal kept too would come twice.
pub fn queues_again(core: &TaskCore, info: &SigInfo) -> bool {
    const SI_KERNEL: i32 = 0x80;
    if let Some(id) = queued_by_timer(info) {
        return core
            .posix_timers
            .iter()
            .any(|t| t.id == id && t.value_ns != 0);
    }
    info.signo == libc::SIGALRM
        && info.code == SI_KERNEL
        && core.itimers.iter().any(|t| t.which == 0 && t.value_us != 0)
}

/// The clocks on which a periodic timer whose signal is pending comes back with its phase
/// (armed with TIMER_ABSTIME one period before its next expiry, which is the same as a
/// relative arming on them): MONOTONIC, BOOTTIME, TAI.
fn phase_kept_on(clockid: i32) -> bool {
    matches!(
        clockid,
        libc::CLOCK_MONOTONIC | libc::CLOCK_BOOTTIME | libc::CLOCK_TAI
    )
}

/// Takes the signals POSIX timers queued out of `core`'s pending lists (process and threads),
/// marking each timer `signal_pending`: the restore makes the timer queue it again itself, so
/// that it stays tied to it. One whose timer was deleted or re-armed since (one-shot, armed
/// again) is dropped, as the kernel drops it when it would be delivered. Left queued as a
/// signal (not tied): that of a periodic timer blocked in every thread it may go to (its
/// overrun count, kept by the kernel until the delivery, cannot be read), or on a clock
/// where its phase is not kept.
pub fn tie_pending_signals(pid: Pid, core: &mut TaskCore) {
    let timers = &mut core.posix_timers;
    let mut take = |list: &mut Vec<SigInfo>, blocked: u64| {
        let mut kept = Vec::with_capacity(list.len());
        for info in list.drain(..) {
            let Some(id) = queued_by_timer(&info) else {
                kept.push(info);
                continue;
            };
            let Some(t) = timers.iter_mut().find(|t| t.id == id) else {
                // Its timer was deleted: never delivered.
                continue;
            };
            if t.interval_ns == 0 && t.value_ns != 0 {
                // A one-shot timer armed again since it queued it: never delivered.
                continue;
            }
            if t.interval_ns != 0 {
                // Left a queued signal as it is (KNOWN GAP: not tied to its timer, its
                // overrun the one queued): a periodic timer's signal blocked where it may go
                // (its overrun count, kept by the kernel until the delivery, cannot be read:
                // glibc's SIGEV_THREAD timers, a sigwaitinfo loop, whose periodic timers fire
                // while the dump holds the process), or on a clock where the timer's phase
                // would not be kept. Refusing would refuse them all.
                let bit = 1u64 << ((info.signo - 1) & 63);
                if blocked & bit != 0 || !phase_kept_on(t.clockid) {
                    tracing::debug!(%pid, timer = t.id, signo = info.signo, "a periodic timer's pending signal restored as a queued one");
                    kept.push(info);
                    continue;
                }
            }
            t.signal_pending = true;
        }
        *list = kept;
    };
    // A process-directed signal may go to any thread: blocked if blocked in all.
    let all_blocked = core.threads.iter().fold(u64::MAX, |b, t| b & t.blocked);
    take(&mut core.shared_pending, all_blocked);
    for thread in &mut core.threads {
        take(&mut thread.pending, thread.blocked);
    }
}

/// Refuses a timer a restore could not make again (timer_create: EINVAL): one notifying a
/// thread of the process that has ended (SIGEV_THREAD_ID), one on the CPU-time clock of a
/// process or thread that has ended (clock_getcpuclockid of a child reaped since). The pids
/// are checked where the process's PID namespace is cryo's.
fn refuse_gone_targets(pid: Pid, timers: &[PosixTimer]) -> Result<()> {
    let dir = crate::proc::dir(pid);
    use std::os::unix::fs::MetadataExt;
    let in_cryos_pid_namespace = std::fs::metadata(dir.join("ns/pid"))
        .ok()
        .zip(std::fs::metadata("/proc/self/ns/pid").ok())
        .is_some_and(|(theirs, ours)| theirs.ino() == ours.ino());
    for t in timers {
        if t.notify == SIGEV_THREAD_ID && !dir.join(format!("task/{}", t.notify_tid)).exists() {
            return Err(Error::target(
                pid,
                format!(
                    "POSIX timer {} notifies thread {}, which has ended: a restore could not \
                     make it again (timer_create: EINVAL)",
                    t.id, t.notify_tid
                ),
            ));
        }
        // A CPU-time clock of pid P: ~P << 3 | per-thread bit (4) | kind (the kernel's
        // CPUCLOCK_*); negative.
        if t.clockid < 0 && in_cryos_pid_namespace {
            let of = !(t.clockid >> 3);
            let thread = t.clockid & 4 != 0;
            let there = if thread {
                std::path::Path::new(&format!("/proc/{of}/task/{of}")).exists()
                    || dir.join(format!("task/{of}")).exists()
            } else {
                crate::proc::dir(Pid::from_raw(of)).exists()
            };
            if of != 0 && !there {
                return Err(Error::target(
                    pid,
                    format!(
                        "POSIX timer {} is on the CPU-time clock of {} {of}, which has ended: a \
                         restore could not make it again (timer_create: EINVAL)",
                        t.id,
                        if thread { "thread" } else { "process" }
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn parse_proc_timers(text: &str) -> Option<Vec<PosixTimer>> {
    let mut out: Vec<PosixTimer> = Vec::new();
    for line in text.lines() {
        let (key, value) = line.split_once(':')?;
        let value = value.trim();
        match key {
            "ID" => out.push(PosixTimer {
                id: value.parse().ok()?,
                ..Default::default()
            }),
            "signal" => {
                let t = out.last_mut()?;
                let (signo, sigval) = value.split_once('/')?;
                t.signo = signo.parse().ok()?;
                t.sigev_value = u64::from_str_radix(sigval, 16).ok()?;
            }
            "notify" => {
                let t = out.last_mut()?;
                // `HOW/pid.N` or, for SIGEV_THREAD_ID (which the kernel prints as
                // `signal/tid.N`: SIGEV_SIGNAL | SIGEV_THREAD_ID), `HOW/tid.N`.
                let (how, who) = value.split_once('/')?;
                let (target, id) = who.split_once('.')?;
                t.notify = match how {
                    _ if target == "tid" => SIGEV_THREAD_ID,
                    "thread" => SIGEV_THREAD_ID,
                    "signal" => SIGEV_SIGNAL,
                    "none" => SIGEV_NONE,
                    _ => return None,
                };
                t.notify_tid = id.parse().ok()?;
            }
            "ClockID" => out.last_mut()?.clockid = value.parse().ok()?,
            _ => {}
        }
    }
    Some(out)
}

/// Recreates the timers in the restored task (every thread exists already: SIGEV_THREAD_ID
/// timers name one), by calls in its main thread.
pub fn restore(
    remote: &Remote,
    scratch: u64,
    itimers: &[ITimer],
    posix: &[PosixTimer],
) -> Result<()> {
    let pid = remote.tid();
    let sys = |op: String| move |e: io::Error| Error::sys(pid, op, e);
    let split = |ns: u64, unit: u64| [ns / unit, ns % unit];
    // A zero time left would disarm a periodic timer: let it fire at once instead.
    let left = |value: u64, interval: u64| if value == 0 { interval.max(1) } else { value };
    for t in itimers {
        let mut raw = Vec::with_capacity(32);
        for w in split(t.interval_us, 1_000_000)
            .into_iter()
            .chain(split(left(t.value_us, t.interval_us), 1_000_000))
        {
            raw.extend_from_slice(&w.to_ne_bytes());
        }
        pt::write_mem(pid, scratch, &raw).map_err(sys("setitimer".into()))?;
        remote
            .call(libc::SYS_setitimer, &[t.which as u64, scratch, 0])
            .map_err(sys(format!("setitimer({})", t.which)))?;
    }
    if posix.is_empty() {
        return Ok(());
    }
    remote
        .call(libc::SYS_prctl, &[PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0])
        .map_err(sys("prctl(PR_TIMER_CREATE_RESTORE_IDS)".into()))?;
    let mut sorted: Vec<&PosixTimer> = posix.iter().collect();
    sorted.sort_by_key(|t| t.id);
    for t in sorted {
        // struct sigevent (64 bytes): sigev_value, sigev_signo, sigev_notify, thread id.
        let mut ev = vec![0u8; 64];
        ev[0..8].copy_from_slice(&t.sigev_value.to_ne_bytes());
        ev[8..12].copy_from_slice(&t.signo.to_ne_bytes());
        ev[12..16].copy_from_slice(&t.notify.to_ne_bytes());
        ev[16..20].copy_from_slice(&t.notify_tid.to_ne_bytes());
        pt::write_mem(pid, scratch, &ev).map_err(sys("timer_create".into()))?;
        pt::write_mem(pid, scratch + 64, &t.id.to_ne_bytes())
            .map_err(sys("timer_create".into()))?;
        remote
            .call(
                libc::SYS_timer_create,
                &[t.clockid as i64 as u64, scratch, scratch + 64],
            )
            .map_err(sys(format!("timer_create (id {})", t.id)))?;
        let mut got = [0u8; 4];
        pt::read_mem(pid, scratch + 64, &mut got).map_err(sys("timer_create".into()))?;
        if i32::from_ne_bytes(got) != t.id {
            return Err(RestoreError::TimerId {
                pid,
                id: t.id,
                got: i32::from_ne_bytes(got),
            }
            .into());
        }
        let mut its = Vec::with_capacity(32);
        let value = if t.value_ns == 0 && t.interval_ns == 0 {
            0
        } else {
            left(t.value_ns, t.interval_ns)
        };
        for w in split(t.interval_ns, 1_000_000_000)
            .into_iter()
            .chain(split(value, 1_000_000_000))
        {
            its.extend_from_slice(&w.to_ne_bytes());
        }
        // An absolute CLOCK_REALTIME timer keeps its deadline (passed meanwhile, it fires
        // at once, its missed periods counted as overruns, as the kernel does for it).
        let flags = match t.realtime_deadline_ns {
            _ if t.signal_pending => {
                let flags;
                (its, flags) = pending_again(pid, t)?;
                flags
            }
            Some(deadline) if t.clockid == libc::CLOCK_REALTIME => {
                its.truncate(16);
                its.extend_from_slice(&(deadline / 1_000_000_000).to_ne_bytes());
                its.extend_from_slice(&(deadline % 1_000_000_000).to_ne_bytes());
                libc::TIMER_ABSTIME as u64
            }
            _ => 0,
        };
        pt::write_mem(pid, scratch + 128, &its).map_err(sys("timer_settime".into()))?;
        remote
            .call(
                libc::SYS_timer_settime,
                &[t.id as u64, flags, scratch + 128, 0],
            )
            .map_err(sys(format!("timer_settime({})", t.id)))?;
        if t.signal_pending {
            await_timer_signal(pid, t.id)?;
        }
    }
    remote
        .call(libc::SYS_prctl, &[PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0])
        .map_err(sys("prctl(PR_TIMER_CREATE_RESTORE_IDS)".into()))?;
    Ok(())
}

/// The itimerspec and flags that make timer `t` of `pid`, whose signal was pending, expire at
/// once: a one-shot one 1 ns from now (relative; on a CPU-time clock, which does not advance
/// in a stopped process, at 1 ns with TIMER_ABSTIME: the kernel fires a CPU timer whose time
/// has passed as it is set); a periodic one (TIMER_ABSTIME) one period before its next
/// expiry, so that the kernel, when the signal is delivered, moves it on to that expiry (its
/// phase) with no overrun. The clock is read here and moved into the process's time
/// namespace (/proc/PID/timens_offsets).
fn pending_again(pid: Pid, t: &PosixTimer) -> Result<(Vec<u8>, u64)> {
    let split = |ns: u64| [ns / 1_000_000_000, ns % 1_000_000_000];
    let absolute = libc::TIMER_ABSTIME as u64;
    let (value, flags) = if t.interval_ns == 0 {
        (1, if t.clockid < 0 { absolute } else { 0 })
    } else {
        let now = crate::sys::timerfd::clock_now_ns(t.clockid)
            .map_err(|e| Error::sys(pid, format!("clock_gettime({})", t.clockid), e))?;
        let offset = timens_offset(pid, t.clockid)
            .map_err(|e| Error::sys(pid, "read /proc/PID/timens_offsets", e))?;
        let now = (now as i128 + offset) as u64;
        let first = (now + t.value_ns.min(t.interval_ns)).saturating_sub(t.interval_ns);
        (first.max(1), absolute)
    };
    let its = split(t.interval_ns)
        .into_iter()
        .chain(split(value))
        .flat_map(|w| w.to_ne_bytes())
        .collect();
    Ok((its, flags))
}

/// The offset (ns) of `clockid` in the time namespace of `pid`: MONOTONIC and BOOTTIME have
/// one, the others none.
fn timens_offset(pid: Pid, clockid: i32) -> io::Result<i128> {
    if !matches!(clockid, libc::CLOCK_MONOTONIC | libc::CLOCK_BOOTTIME) {
        return Ok(0);
    }
    let text = match std::fs::read_to_string(crate::proc::dir(pid).join("timens_offsets")) {
        Ok(text) => text,
        // A kernel without time namespaces.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let (monotonic, boottime) = crate::sys::timens::parse_offsets(&text)?;
    Ok(i128::from(if clockid == libc::CLOCK_MONOTONIC {
        monotonic
    } else {
        boottime
    }))
}

/// How long a timer made to expire at once may take to queue its signal.
const QUEUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits until timer `id` of `pid` (every thread stopped under cryo) has queued its signal,
/// to the process or to one of its threads.
fn await_timer_signal(pid: Pid, id: i32) -> Result<()> {
    let deadline = std::time::Instant::now() + QUEUE_TIMEOUT;
    let queued = |raw: Vec<[u8; 128]>| {
        raw.iter().any(|r| {
            let info = SigInfo {
                signo: 0,
                code: i32::from_ne_bytes([r[8], r[9], r[10], r[11]]),
                raw: r.to_vec(),
            };
            queued_by_timer(&info) == Some(id)
        })
    };
    loop {
        let peek = |tid: Pid, shared: bool| {
            pt::peek_siginfo(tid, shared).map_err(|e| Error::sys(tid, "read pending signals", e))
        };
        if queued(peek(pid, true)?) {
            return Ok(());
        }
        for tid in crate::proc::tids(pid)? {
            if queued(peek(tid, false)?) {
                return Ok(());
            }
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::sys(
                pid,
                format!("queue the pending signal of POSIX timer {id} again"),
                io::Error::from(io::ErrorKind::TimedOut),
            ));
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shortened /proc/timer_list of this kernel: two CPUs, a relative CLOCK_REALTIME
    /// timer (monotonic base, CPU 0) and an absolute one (realtime base, CPU 1).
    const TIMER_LIST: &str = "Timer List Version: v0.10
HRTIMER_MAX_CLOCK_BASES: 8
now at 51598286802887 nsecs

cpu: 0
 clock 0:
  .base:       0000000099934dea
  .index:      0
  .resolution: 1 nsecs
  .offset:     0 nsecs
active timers:
 #0: <00000000f39ca6f8>, tick_nohz_handler, S:01
 # expires at 51598288000000-51598288000000 nsecs [in 1197113 to 1197113 nsecs]
 #1: <00000000df61c424>, posix_timer_fn, S:01
 # expires at 52416213079955-52416213079955 nsecs [in 554997938792 to 554997938792 nsecs]
 clock 1:
  .base:       000000006ff02c27
  .index:      1
  .resolution: 1 nsecs
  .offset:     1796581369044268247 nsecs
active timers:
 clock 2:
  .base:       00000000aaa1bb13
  .index:      2
  .offset:     0 nsecs
active timers:
cpu: 1
 clock 0:
  .base:       0000000099934dea
  .index:      0
  .offset:     0 nsecs
active timers:
 clock 1:
  .base:       000000006ff02c27
  .index:      1
  .offset:     1796581369044268247 nsecs
active timers:
 #0: <00000000c27484c0>, posix_timer_fn, S:01
 # expires at 1796634007000000000-1796634007000000000 nsecs [in 776740590590 to 776740590590 nsecs]

Tick Device: mode:     1
Broadcast device
Clock Event Device: <NULL>
";

    #[test]
    fn finds_the_posix_timers_of_timer_list_on_both_bases() {
        let q = parse_timer_list(TIMER_LIST).unwrap();
        assert_eq!(
            q,
            vec![
                Queued {
                    realtime: false,
                    expires_realtime: 52416213079955 + 1796581369044268247,
                },
                Queued {
                    realtime: true,
                    expires_realtime: 1796634007000000000,
                },
            ]
        );
    }

    #[test]
    fn tells_an_absolute_realtime_timer_from_a_relative_one_or_refuses() {
        let pid = Pid::from_raw(42);
        let q = parse_timer_list(TIMER_LIST).unwrap();
        let timer = |value_ns: u64| PosixTimer {
            id: 3,
            clockid: libc::CLOCK_REALTIME,
            value_ns,
            ..Default::default()
        };
        // Read between the realtime clock's 1796634000000000000 and 50 us later.
        let window = (1796634000000000000, 1796634000000050000);
        let absolute = timer(7_000_000_000 - 10_000);
        assert_eq!(
            realtime_deadline(pid, &absolute, &q, window).unwrap(),
            Some(1796634007000000000)
        );
        let relative_deadline: u64 = 52416213079955 + 1796581369044268247;
        let relative = timer(100_000_000_000 - 20_000);
        let earlier = (
            relative_deadline - 100_000_000_000,
            relative_deadline - 99_999_950_000,
        );
        assert_eq!(
            realtime_deadline(pid, &relative, &q, earlier).unwrap(),
            None
        );
        // Queued nowhere (expired, its signal pending): refused, naming the timer.
        let gone = timer(3_000_000_000);
        let e = realtime_deadline(pid, &gone, &q, window)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("POSIX timer 3") && e.contains("TIMER_ABSTIME"),
            "{e}"
        );
        // SIGEV_NONE: never queued.
        let none = PosixTimer {
            notify: SIGEV_NONE,
            ..absolute
        };
        assert!(realtime_deadline(pid, &none, &q, window).is_err());
        // Disarmed, or on another clock: nothing to tell.
        assert_eq!(realtime_deadline(pid, &timer(0), &q, window).unwrap(), None);
        let monotonic = PosixTimer {
            clockid: libc::CLOCK_MONOTONIC,
            ..gone
        };
        assert_eq!(
            realtime_deadline(pid, &monotonic, &q, window).unwrap(),
            None
        );
    }

    #[test]
    fn parses_proc_timers() {
        let text = "ID: 0\nsignal: 14/00000000deadbeef\nnotify: signal/pid.42\nClockID: 1\n\
                    ID: 3\nsignal: 34/0000000000000000\nnotify: thread/tid.43\nClockID: 0\n\
                    ID: 4\nsignal: 12/0000000000000000\nnotify: signal/tid.44\nClockID: 1\n";
        let t = parse_proc_timers(text).unwrap();
        assert_eq!(t.len(), 3);
        // What this kernel prints for SIGEV_THREAD_ID (SIGEV_SIGNAL | SIGEV_THREAD_ID).
        assert_eq!(
            (t[2].id, t[2].notify, t[2].notify_tid),
            (4, SIGEV_THREAD_ID, 44)
        );
        assert_eq!((t[0].id, t[0].signo, t[0].sigev_value), (0, 14, 0xdeadbeef));
        assert_eq!(
            (t[0].notify, t[0].notify_tid, t[0].clockid),
            (SIGEV_SIGNAL, 42, 1)
        );
        assert_eq!(
            (t[1].id, t[1].notify, t[1].notify_tid),
            (3, SIGEV_THREAD_ID, 43)
        );
    }
}
