//! Pre-copy (`dump --to --pre-copy`): memory streamed while the processes run, round after
//! round, so the frozen dump sends only what changed since; and the receiver's merge of the
//! rounds into one ordinary pages image.
//!
//! ```text
//! sender (running target)                      receiver (stream/, before it commits)
//!   track writes (dirty.rs)
//!   round 0: scan (write-protect), read, send  precopy-0-pages-PID.img  raw pages
//!            every present page                precopy-0-PID.img        PreCopyRound (runs)
//!   round n: the pages written since n-1       precopy-n-...
//!   ... until a round is small (< 1 MiB or < 1% of the first), stops shrinking, or 8 rounds
//! frozen dump: pages-PID.img holds the pages  mm-PID.img precopied: pages of earlier rounds
//!   written since the last round (and those    merge: pages-PID.img rebuilt in address
//!   of VMAs not tracked); the clean ones are   order, the latest round's copy of each
//!   MmCore.precopied                           precopied page; rounds removed
//! ```
//!
//! Order matters while the target runs: a round's scan write-protects the pages it reports
//! BEFORE they are read, so a write during the read marks the page written again and the next
//! round (or the final dump) sends it again. A page is left out of the final pages image only
//! if a round sent it whole, its VMA is still tracked, and it was not written since.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use cryo_proto::image::{MmCore, PageRun, PreCopyRound, RawFileRef, Vma};
use cryo_proto::ImageKind;
use nix::unistd::Pid;
use tracing::{debug, info};

use super::dirty::Tracker;
use super::error::MemoryError;
use super::{IO_CHUNK, PAGE};
use crate::dump::CommitError;
use crate::error::{Error, Result};
use crate::image::{names, ImageDir};

/// At most this many rounds before the final (frozen) dump.
pub const MAX_ROUNDS: u32 = 8;
/// A round this small ends the pre-copy.
pub const SMALL_ROUND: u64 = 1 << 20;

/// Where a round's files go while the target runs: `(name, size, contents)`, sent at once
/// (the stream to the receiver the final image goes to).
#[derive(Clone)]
pub struct PreCopySink(Arc<SinkFn>);

type SinkFn =
    dyn Fn(&str, u64, &mut dyn Read) -> std::result::Result<(), CommitError> + Send + Sync;

impl PreCopySink {
    /// A sink calling `f(name, size, contents)` for each file of each round.
    pub fn new(
        f: impl Fn(&str, u64, &mut dyn Read) -> std::result::Result<(), CommitError>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for PreCopySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PreCopySink")
    }
}

/// `precopy-R-PID.img`: the runs of round R of task PID.
pub fn round_name(round: u32, pid: Pid) -> String {
    format!("precopy-{round}-{pid}.img")
}

/// The round and pid of a round's record named `name` (`precopy-R-PID.img`), if it is one.
pub fn round_of(name: &str) -> Option<(u32, Pid)> {
    let (round, pid) = name
        .strip_prefix("precopy-")?
        .strip_suffix(".img")?
        .split_once('-')?;
    Some((round.parse().ok()?, Pid::from_raw(pid.parse().ok()?)))
}

/// `precopy-R-pages-PID.img`: the pages of round R of task PID.
pub fn round_pages_name(round: u32, pid: Pid) -> String {
    format!("precopy-{round}-pages-{pid}.img")
}

/// The pages of `runs` of a running process, read in order; a run that cannot be read whole
/// (unmapped meanwhile) reads as zeros and is marked failed (not sent).
struct RunsReader<'a> {
    pid: Pid,
    runs: &'a [PageRun],
    run: usize,
    at: u64,
    failed: Vec<bool>,
}

impl Read for RunsReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(run) = self.runs.get(self.run) else {
            return Ok(0);
        };
        let len = run.npages * PAGE;
        let n = ((len - self.at) as usize).min(buf.len());
        let buf = &mut buf[..n];
        if !self.failed[self.run] {
            match crate::sys::process::vm_read(self.pid, run.addr + self.at, buf) {
                Ok(got) if got == n => {}
                _ => self.failed[self.run] = true,
            }
        }
        if self.failed[self.run] {
            buf.fill(0);
        }
        self.at += n as u64;
        if self.at == len {
            self.run += 1;
            self.at = 0;
        }
        Ok(n)
    }
}

/// What the rounds did.
#[derive(Debug, Default, Clone)]
pub struct Rounds {
    /// Bytes of pages sent in each round.
    pub bytes: Vec<u64>,
}

/// What the frozen dump of one process takes from its pre-copy.
#[derive(Debug, Default)]
pub struct Earlier {
    /// The pages whose latest copy a round sent, not written since: address ranges, sorted
    /// and disjoint.
    pub pages: Vec<(u64, u64)>,
    /// The VMAs cryo registered: "uw" on a VMA inside one of them is cryo's own flag.
    pub registered: Vec<(u64, u64)>,
}

impl Earlier {
    /// Whether VmFlags "uw" on the VMA `start..end` is cryo's tracking.
    pub fn tracks(&self, start: u64, end: u64) -> bool {
        self.registered.iter().any(|&(s, e)| s <= start && end <= e)
    }
}

/// The pre-copy of a dump: one tracker per process, and the pages each round sent.
#[derive(Debug, Default)]
pub struct PreCopy {
    trackers: HashMap<Pid, Tracker>,
    /// Trackers of processes already dumped: closed with the pre-copy, after the images are
    /// out (unregistering a large address space takes a while; a killed process needs none).
    retired: Vec<Tracker>,
    /// Per process: the ranges of pages a round sent whole (their latest copy is on the
    /// receiver), in the order sent.
    sent: HashMap<Pid, Vec<(u64, u64)>>,
    /// Bytes per round.
    pub rounds: Rounds,
}

impl PreCopy {
    /// Tracks `pids` and runs the rounds, sending each to `sink`; returns once the next round
    /// would not be worth it. Any failure drops the trackers: the processes run on as before.
    pub fn run(pids: &[Pid], sink: &PreCopySink) -> Result<Self> {
        let mut this = Self::default();
        for &pid in pids {
            this.trackers.insert(pid, Tracker::start(pid)?);
        }
        for round in 0..MAX_ROUNDS {
            crate::interrupt::check("during pre-copy")
                .map_err(crate::dump::error::DumpError::from)?;
            let started = std::time::Instant::now();
            let mut bytes = 0;
            for &pid in pids {
                bytes += this.round(round, pid, sink)?;
            }
            info!(
                round,
                bytes,
                ms = started.elapsed().as_secs_f64() * 1e3,
                "pre-copy round sent"
            );
            this.rounds.bytes.push(bytes);
            crate::interrupt::pause_point("pre-copy-round");
            let first = this.rounds.bytes[0];
            let shrank = round == 0 || bytes < this.rounds.bytes[round as usize - 1];
            if bytes <= SMALL_ROUND || bytes.saturating_mul(100) <= first || !shrank {
                break;
            }
        }
        Ok(this)
    }

    /// One round of one process: the pages written since the last, write-protected, read
    /// and sent. Returns the bytes sent.
    fn round(&mut self, round: u32, pid: Pid, sink: &PreCopySink) -> Result<u64> {
        let Some(tracker) = self.trackers.get(&pid) else {
            return Ok(0);
        };
        let regions = tracker.written()?;
        // Page-cache pages come back from their file, the zero page needs no copy.
        let mut runs = Vec::new();
        let mut offset = 0;
        for r in &regions {
            if r.categories
                & (crate::sys::pagemap::PAGE_IS_FILE | crate::sys::pagemap::PAGE_IS_PFNZERO)
                != 0
            {
                continue;
            }
            let npages = (r.end - r.start) / PAGE;
            runs.push(PageRun {
                addr: r.start,
                npages,
                offset,
            });
            offset += npages * PAGE;
        }
        let mut reader = RunsReader {
            pid,
            runs: &runs,
            run: 0,
            at: 0,
            failed: vec![false; runs.len()],
        };
        let send = |name: &str, size: u64, contents: &mut dyn Read| {
            (sink.0)(name, size, contents).map_err(|why| {
                Error::from(crate::dump::error::DumpError::Commit {
                    why: format!("pre-copy round {round}: {why}").into(),
                })
            })
        };
        send(&round_pages_name(round, pid), offset, &mut reader)?;
        let failed = reader.failed;
        let sent: Vec<PageRun> = runs
            .into_iter()
            .zip(failed)
            .filter_map(|(r, failed)| (!failed).then_some(r))
            .collect();
        let record = PreCopyRound {
            pid: pid.as_raw(),
            round,
            runs: sent.clone(),
            pages_file: round_pages_name(round, pid),
            anon_vmas: if round == 0 {
                tracker.anon().to_vec()
            } else {
                Vec::new()
            },
        };
        let bytes = cryo_proto::frame::encode(ImageKind::PreCopyRound, &[record]);
        send(
            &round_name(round, pid),
            bytes.len() as u64,
            &mut bytes.as_slice(),
        )?;
        self.sent
            .entry(pid)
            .or_default()
            .extend(sent.iter().map(|r| (r.addr, r.addr + r.npages * PAGE)));
        debug!(%pid, round, bytes = offset, "round sent");
        Ok(offset)
    }

    /// The last scan of `pid` (frozen now): the pages whose latest copy a round sent and
    /// which were not written since; `None` for a process not tracked. Its registrations stay
    /// until the pre-copy is dropped (the dump ignores their "uw": [`Earlier::tracks`]).
    pub fn finish(&mut self, pid: Pid) -> Result<Option<Earlier>> {
        let Some(tracker) = self.trackers.remove(&pid) else {
            return Ok(None);
        };
        let clean = tracker.clean()?;
        let registered = tracker.registered().to_vec();
        self.retired.push(tracker);
        let sent = coalesce(self.sent.remove(&pid).unwrap_or_default());
        let clean = coalesce(clean.iter().map(|r| (r.start, r.end)).collect());
        Ok(Some(Earlier {
            pages: intersect(&sent, &clean),
            registered,
        }))
    }
}

/// Sorted, disjoint ranges covering `ranges`.
pub(crate) fn coalesce(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// The ranges in both `a` and `b` (each sorted and disjoint).
fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let (s, e) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
        if s < e {
            out.push((s, e));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Splits `runs` (in address order, with their offsets in the pages image) into the runs
/// still to write and the pages a pre-copy round already sent (`earlier`: sorted, disjoint
/// ranges); offsets are recomputed. A run is split, never joined with another (runs never
/// span two VMAs).
pub fn split_runs(runs: Vec<PageRun>, earlier: &[(u64, u64)]) -> (Vec<PageRun>, Vec<PageRun>) {
    let mut write: Vec<PageRun> = Vec::new();
    let mut precopied: Vec<PageRun> = Vec::new();
    let mut offset = 0;
    let mut j = 0;
    for run in runs {
        let end = run.addr + run.npages * PAGE;
        let mut pos = run.addr;
        while j < earlier.len() && earlier[j].1 <= pos {
            j += 1;
        }
        while pos < end {
            match earlier.get(j) {
                Some(&(s, e)) if s <= pos => {
                    let to = e.min(end);
                    precopied.push(PageRun {
                        addr: pos,
                        npages: (to - pos) / PAGE,
                        offset: 0,
                    });
                    pos = to;
                    if e <= pos {
                        j += 1;
                    }
                }
                next => {
                    let to = next.map_or(end, |&(s, _)| s.min(end));
                    write.push(PageRun {
                        addr: pos,
                        npages: (to - pos) / PAGE,
                        offset,
                    });
                    offset += to - pos;
                    pos = to;
                }
            }
        }
    }
    (write, precopied)
}

/// A page of the merged image: where its bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Source {
    /// Index into the list of source files.
    file: usize,
    offset: u64,
}

/// `npages` pages from `addr` on, at consecutive offsets of one source file from `src` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stretch {
    addr: u64,
    npages: u64,
    src: Source,
}

/// Appends a stretch to `list`, or extends its last one when the two follow each other in
/// memory and in the same file.
fn push_stretch(list: &mut Vec<Stretch>, addr: u64, npages: u64, src: Source) {
    if npages == 0 {
        return;
    }
    match list.last_mut() {
        Some(last)
            if last.src.file == src.file
                && last.addr + last.npages * PAGE == addr
                && last.src.offset + last.npages * PAGE == src.offset =>
        {
            last.npages += npages
        }
        _ => list.push(Stretch { addr, npages, src }),
    }
}

/// The receiver's merge: rebuilds each process's pages image from the final dump's pages
/// and the latest round's copy of each page it marked `precopied`, then removes the rounds.
/// Afterwards the directory is an ordinary image. Returns whether there was anything to merge.
/// `crc_of(name)` gives the crc32c of a file the caller already checked (the receiver: each
/// file's checksum as received), sparing a read of the largest round.
pub fn merge(images: &ImageDir, crc_of: &dyn Fn(&str) -> Option<u32>) -> Result<bool> {
    merge_with(images, crc_of, &Appended::default())
}

/// The receiver's share of the merge done while the processes run: each process's later
/// rounds' pages files appended to its first round's as they arrive ([`Appended::received`]),
/// so the merge, while the processes are frozen, does not copy them again (11-28 ms for the
/// 10-33 MB of a redis writing 4 MB/s).
#[derive(Debug, Default)]
pub struct Appended {
    /// Per pid.
    bases: HashMap<i32, AppendedTo>,
}

/// A process's first round's pages file and what was appended to it.
#[derive(Debug)]
struct AppendedTo {
    /// Its name.
    base: String,
    /// Its own size, as received.
    own: u64,
    /// The later rounds' pages files appended to it, in order: (name, where it starts, size).
    later: Vec<(String, u64, u64)>,
}

impl Appended {
    /// File `name` of an image being received arrived whole and checked: a pre-copy round's
    /// pages file after its process's first is appended to that first one (which keeps its
    /// own bytes as they were; the merge knows where the appended ones start). Other files
    /// are left alone.
    pub fn received(&mut self, images: &ImageDir, name: &str) -> Result<()> {
        let Some((round, pid)) = name
            .strip_prefix("precopy-")
            .and_then(|r| r.strip_suffix(".img"))
            .and_then(|r| r.split_once("-pages-"))
            .and_then(|(r, p)| Some((r.parse::<u32>().ok()?, p.parse::<i32>().ok()?)))
        else {
            return Ok(());
        };
        let io = |what: &str, e| Error::sys(Pid::from_raw(pid), format!("{what} {name}"), e);
        match self.bases.get_mut(&pid) {
            None => {
                let size = images
                    .open_raw(name)?
                    .metadata()
                    .map_err(|e| io("stat", e))?
                    .len();
                self.bases.insert(
                    pid,
                    AppendedTo {
                        base: name.to_string(),
                        own: size,
                        later: Vec::new(),
                    },
                );
            }
            Some(AppendedTo { base, own, later }) => {
                // Rounds come in order; anything else is left to the merge to judge.
                let base_round = base
                    .strip_prefix("precopy-")
                    .and_then(|r| r.split_once('-'))
                    .and_then(|(r, _)| r.parse::<u32>().ok());
                if base_round.is_none_or(|b| b >= round) {
                    return Ok(());
                }
                let from = images.open_raw(name)?;
                let size = from.metadata().map_err(|e| io("stat", e))?.len();
                let to = std::fs::OpenOptions::new()
                    .write(true)
                    .open(images.file(base))
                    .map_err(|e| io("open the first round for", e))?;
                let at = *own + later.iter().map(|(_, _, n)| n).sum::<u64>();
                copy_whole(&from, &to, size, at).map_err(|e| io("append", e))?;
                to.sync_all().map_err(|e| io("fsync after", e))?;
                later.push((name.to_string(), at, size));
            }
        }
        Ok(())
    }
}

/// [`merge`], with the rounds appended already on arrival.
pub fn merge_with(
    images: &ImageDir,
    crc_of: &dyn Fn(&str) -> Option<u32>,
    appended: &Appended,
) -> Result<bool> {
    let mut rounds: BTreeMap<i32, Vec<(u32, String)>> = BTreeMap::new();
    let mut mms = Vec::new();
    let mut others = Vec::new();
    let entries = std::fs::read_dir(images.path())
        .map_err(|e| Error::sys(Pid::this(), format!("list {}", images.path().display()), e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name
            .strip_prefix("precopy-")
            .and_then(|r| r.strip_suffix(".img"))
        {
            let parts: Vec<&str> = rest.split('-').collect();
            match parts.as_slice() {
                [r, pid] => {
                    if let (Ok(r), Ok(pid)) = (r.parse::<u32>(), pid.parse::<i32>()) {
                        rounds.entry(pid).or_default().push((r, name.clone()));
                        continue;
                    }
                }
                [_, "pages", _] => {
                    others.push(name.clone());
                    continue;
                }
                _ => {}
            }
            return Err(MemoryError::PreCopyMerge {
                pid: Pid::from_raw(0),
                detail: format!("unexpected file {name:?}"),
            }
            .into());
        } else if let Some(pid) = name
            .strip_prefix("mm-")
            .and_then(|r| r.strip_suffix(".img"))
            .and_then(|p| p.parse::<i32>().ok())
        {
            mms.push(pid);
        }
    }
    let mut merged_any = false;
    for pid in mms {
        let pid = Pid::from_raw(pid);
        let mut mm: MmCore = images.read_single(&names::mm(pid), ImageKind::Mm)?;
        let mut pid_rounds = rounds.remove(&pid.as_raw()).unwrap_or_default();
        if mm.precopied.is_empty() && pid_rounds.is_empty() {
            continue;
        }
        pid_rounds.sort();
        let early = appended.bases.get(&pid.as_raw());
        merge_task(images, pid, &mut mm, &pid_rounds, crc_of, early)?;
        images.replace(&names::mm(pid), ImageKind::Mm, std::slice::from_ref(&mm))?;
        sync(images, &names::mm(pid))?;
        merged_any = true;
    }
    if let Some((pid, _)) = rounds.into_iter().next() {
        return Err(MemoryError::PreCopyMerge {
            pid: Pid::from_raw(pid),
            detail: "pre-copy rounds of a process the image does not hold".into(),
        }
        .into());
    }
    for name in others {
        let _ = std::fs::remove_file(images.file(&name));
    }
    Ok(merged_any)
}

fn sync(images: &ImageDir, name: &str) -> Result<()> {
    File::open(images.file(name))
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::sys(Pid::this(), format!("fsync {name}"), e))
}

/// Merges one process: see [`merge`].
fn merge_task(
    images: &ImageDir,
    pid: Pid,
    mm: &mut MmCore,
    rounds: &[(u32, String)],
    crc_of: &dyn Fn(&str) -> Option<u32>,
    early: Option<&AppendedTo>,
) -> Result<()> {
    let bad = |detail: String| Error::from(MemoryError::PreCopyMerge { pid, detail });
    // Later rounds appended to the first on arrival: that first one must be this merge's
    // base, and its own bytes end where they did.
    if let Some(AppendedTo { base, .. }) = early {
        if rounds
            .first()
            .map(|(r, _)| round_pages_name(*r, pid))
            .as_ref()
            != Some(base)
        {
            return Err(bad(format!(
                "rounds were appended to {base:?}, which is not the first round"
            )));
        }
    }
    // Each step's end, in microseconds since the start, for the debug log: the merge is
    // part of a pre-copy's downtime.
    let t0 = std::time::Instant::now();
    let us = || t0.elapsed().as_micros() as u64;
    // Source files: 0 the final pages image (if any), then each round's pages.
    let mut files: Vec<File> = Vec::new();
    let final_file = match &mm.pages_file {
        Some(raw) => Some(images.check_raw(raw)?),
        None => None,
    };
    files.push(match final_file {
        Some(f) => f,
        None => File::open("/dev/null").map_err(|e| Error::sys(pid, "open /dev/null", e))?,
    });
    // The latest round's copy of each page.
    // The first round (nearly every page) by its runs; the later ones, small, page by page.
    let mut first_runs: Vec<PageRun> = Vec::new();
    // (page address, where), every later round's pages in order: sorted below, the latest
    // copy of each page kept (a sorted list searched is cheaper than a hashed map for the
    // hundreds of thousands of lookups of a large process, made while it is frozen).
    let mut latest: Vec<(u64, Source)> = Vec::new();
    for (round, name) in rounds {
        let record: PreCopyRound = images.read_single(name, ImageKind::PreCopyRound)?;
        let pages_name = round_pages_name(*round, pid);
        if record.pid != pid.as_raw() || record.round != *round || record.pages_file != pages_name {
            return Err(bad(format!(
                "{name} names pid {} round {} file {:?}",
                record.pid, record.round, record.pages_file
            )));
        }
        let file = images.open_raw(&pages_name)?;
        let size = file
            .metadata()
            .map_err(|e| Error::sys(pid, format!("stat {pages_name}"), e))?
            .len();
        files.push(file);
        let idx = files.len() - 1;
        // The first round's runs lie in its own bytes, not in what was appended to it.
        let size = match early {
            Some(AppendedTo { own, .. }) if idx == 1 => *own,
            _ => size,
        };
        for run in &record.runs {
            if run.offset % PAGE != 0
                || run
                    .npages
                    .checked_mul(PAGE)
                    .and_then(|l| l.checked_add(run.offset))
                    .is_none_or(|e| e > size)
            {
                return Err(bad(format!(
                    "{name}: run at {:#x} lies outside {pages_name}",
                    run.addr
                )));
            }
            if idx == 1 {
                first_runs.push(*run);
                continue;
            }
            for i in 0..run.npages {
                latest.push((
                    run.addr + i * PAGE,
                    Source {
                        file: idx,
                        offset: run.offset + i * PAGE,
                    },
                ));
            }
        }
    }
    first_runs.sort_by_key(|r| r.addr);
    // Stable: of the copies of a page, the last in the list is the latest round's.
    latest.sort_by_key(|(addr, _)| *addr);
    let mut kept: Vec<(u64, Source)> = Vec::with_capacity(latest.len());
    for (addr, src) in latest {
        match kept.last_mut() {
            Some(last) if last.0 == addr => last.1 = src,
            _ => kept.push((addr, src)),
        }
    }
    let latest = kept;
    // Stretches of pages, each from one source file at consecutive offsets: the final
    // pages by their runs, the pages sent earlier cut where a later round has a page (a
    // stretch of the first round between two). Counted page by page, the hundreds of
    // thousands of pages of a GiB cost the frozen processes 7 ms.
    let mut stretches: Vec<Stretch> = mm
        .pages
        .iter()
        .map(|run| Stretch {
            addr: run.addr,
            npages: run.npages,
            src: Source {
                file: 0,
                offset: run.offset,
            },
        })
        .collect();
    // The pages sent earlier, in address order, found in the later rounds' list and else in
    // the first round's runs by a cursor over each (both sorted): no search per page.
    let mut precopied = mm.precopied.clone();
    precopied.sort_by_key(|r| r.addr);
    let (mut later_at, mut first_at) = (0usize, 0usize);
    for run in &precopied {
        let (mut addr, end) = (run.addr, run.addr + run.npages * PAGE);
        while addr < end {
            while latest.get(later_at).is_some_and(|(a, _)| *a < addr) {
                later_at += 1;
            }
            if let Some((_, src)) = latest.get(later_at).filter(|(a, _)| *a == addr) {
                push_stretch(&mut stretches, addr, 1, *src);
                addr += PAGE;
                continue;
            }
            while first_runs
                .get(first_at)
                .is_some_and(|r| r.addr + r.npages * PAGE <= addr)
            {
                first_at += 1;
            }
            let Some(first) = first_runs.get(first_at).filter(|r| r.addr <= addr) else {
                return Err(bad(format!(
                    "the page at {addr:#x} is marked sent earlier, but no round has it"
                )));
            };
            // Up to the end of the run, of the first round's run, or a later round's page.
            let to = end
                .min(first.addr + first.npages * PAGE)
                .min(latest.get(later_at).map_or(u64::MAX, |(a, _)| *a));
            let src = Source {
                file: 1,
                offset: first.offset + (addr - first.addr),
            };
            push_stretch(&mut stretches, addr, (to - addr) / PAGE, src);
            addr = to;
        }
    }
    // Stable: two sorted stretches (the final pages, the earlier ones) merged in one pass.
    stretches.sort_by_key(|s| s.addr);
    let listed_us = us();
    if stretches
        .windows(2)
        .any(|w| w[0].addr + w[0].npages * PAGE > w[1].addr)
    {
        return Err(bad(
            "a page both in the pages image and marked sent earlier".into(),
        ));
    }
    let npages: u64 = stretches.iter().map(|s| s.npages).sum();
    // The first round (all the memory, received and fsync'd while the process ran) becomes
    // the pages image as it is; what later rounds and the final dump sent is appended. Runs
    // point anywhere in the file, so only the pages that changed are copied and synced while
    // the process is frozen (the pages it replaced stay behind, unreferenced).
    let name = names::pages(pid);
    let tmp = format!("{name}.merge");
    let base = rounds.first().map(|_| 1usize);
    let base_crc = rounds
        .first()
        .and_then(|(r, _)| crc_of(&round_pages_name(*r, pid)));
    let out = match base {
        Some(_) => {
            let first = round_pages_name(rounds[0].0, pid);
            std::fs::rename(images.file(&first), images.file(&tmp))
                .map_err(|e| Error::sys(pid, format!("rename {first}"), e))?;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(images.file(&tmp))
                .map_err(|e| Error::sys(pid, format!("open {tmp}"), e))?
        }
        None => images.create_raw(&tmp)?,
    };
    let io = |e: std::io::Error| Error::sys(pid, format!("merge pages into {tmp}"), e);
    let mut end = out.metadata().map_err(io)?.len();
    let base_len = early.map_or(end, |e| e.own);
    let mut appended_crc = 0u32;
    // Where each stretch went: its offset in the output (`src.file` 0 for all).
    let mut placed: Vec<Stretch> = Vec::with_capacity(stretches.len());
    // A source file most of whose pages are latest copies (the final dump's pages, a round
    // written over little since) is appended whole, in one copy in the kernel
    // (copy_file_range): page by page, scattered as a process's writes are, costs a read
    // and a write per stretch while the process is frozen (40 ms for the 7,000 pages of 28
    // MiB a redis writing 4 MB/s left). A file mostly superseded by later rounds is copied
    // page by page, so the image does not grow by copies nothing refers to.
    let mut referenced = vec![0u64; files.len()];
    for s in &stretches {
        referenced[s.src.file] += s.npages;
    }
    // Per source file appended whole: where it starts in the output, and its size.
    let mut whole_at: Vec<Option<(u64, u64)>> = vec![None; files.len()];
    // Those appended on arrival first, in the order they were (their bytes follow the
    // first round's in the file already).
    for (name, at, size) in early.map_or(&[][..], |e| &e.later[..]) {
        let idx = rounds
            .iter()
            .position(|(r, _)| round_pages_name(*r, pid) == *name)
            .map(|i| i + 1)
            .ok_or_else(|| bad(format!("{name} was appended but is no round of the image")))?;
        let crc = match crc_of(name) {
            Some(crc) => crc,
            None => crate::image::crc_of_file(&files[idx], *size).map_err(io)?,
        };
        appended_crc = crc32c::crc32c_combine(appended_crc, crc, *size as usize);
        whole_at[idx] = Some((*at, *size));
    }
    let early_len: u64 = early.map_or(0, |e| e.later.iter().map(|(_, _, n)| n).sum());
    if base_len + early_len != end {
        return Err(bad(format!("{tmp} is not the size its rounds add up to")));
    }
    for (idx, file) in files.iter().enumerate() {
        if whole_at[idx].is_some() {
            continue;
        }
        if Some(idx) == base || referenced[idx] == 0 {
            continue;
        }
        let size = file.metadata().map_err(io)?.len();
        if size == 0 || referenced[idx] * PAGE * 2 < size {
            continue;
        }
        copy_whole(file, &out, size, end).map_err(io)?;
        // Known already (checked on arrival, or with the final pages image), else read.
        let known = match idx {
            0 => mm.pages_file.as_ref().map(|raw| raw.crc32c),
            i => crc_of(&round_pages_name(rounds[i - 1].0, pid)),
        };
        let crc = match known {
            Some(crc) => crc,
            None => crate::image::crc_of_file(file, size).map_err(io)?,
        };
        appended_crc = crc32c::crc32c_combine(appended_crc, crc, size as usize);
        whole_at[idx] = Some((end, size));
        end += size;
    }
    let mut buf = vec![0u8; IO_CHUNK as usize];
    for stretch in &stretches {
        let Stretch { addr, npages, src } = *stretch;
        let len = npages * PAGE;
        if Some(src.file) == base {
            push_stretch(&mut placed, addr, npages, Source { file: 0, ..src });
            continue;
        }
        if let Some((at, size)) = whole_at[src.file] {
            // As the read of a page beyond the file would fail below.
            if src.offset + len > size {
                return Err(bad(format!(
                    "the page at {:#x} lies beyond the end of its pages file",
                    addr + (size.saturating_sub(src.offset) / PAGE) * PAGE
                )));
            }
            push_stretch(
                &mut placed,
                addr,
                npages,
                Source {
                    file: 0,
                    offset: at + src.offset,
                },
            );
            continue;
        }
        // Copied a chunk at a time: one read, appended.
        let mut done = 0;
        while done < len {
            let n = (len - done).min(IO_CHUNK);
            let chunk = &mut buf[..n as usize];
            files[src.file]
                .read_exact_at(chunk, src.offset + done)
                .map_err(io)?;
            out.write_all_at(chunk, end).map_err(io)?;
            appended_crc = crc32c::crc32c_append(appended_crc, chunk);
            push_stretch(
                &mut placed,
                addr + done,
                n / PAGE,
                Source {
                    file: 0,
                    offset: end,
                },
            );
            end += n;
            done += n;
        }
    }
    out.sync_all().map_err(io)?;
    let appended_us = us();
    let crc = match base_crc {
        Some(c) => crc32c::crc32c_combine(c, appended_crc, (end - base_len) as usize),
        None => crate::image::crc_of_file(&out, end).map_err(io)?,
    };
    std::fs::rename(images.file(&tmp), images.file(&name)).map_err(io)?;
    let runs = runs_of(&placed, &mm.vmas);
    let written = end;
    mm.pages = runs;
    mm.precopied.clear();
    mm.pages_file = Some(RawFileRef {
        name,
        size: written,
        crc32c: crc,
    });
    for (_, round_file) in rounds {
        let _ = std::fs::remove_file(images.file(round_file));
    }
    debug!(
        %pid,
        pages = npages,
        rounds = rounds.len(),
        appended = end - base_len,
        listed_us,
        appended_us,
        us = us(),
        "pre-copy rounds merged"
    );
    Ok(())
}

/// Copies the first `len` bytes of `from` to `to` at offset `at`, in the kernel.
fn copy_whole(from: &File, to: &File, len: u64, at: u64) -> std::io::Result<()> {
    let (mut off_in, mut off_out) = (0i64, at as i64);
    while (off_in as u64) < len {
        let left = (len - off_in as u64) as usize;
        match nix::fcntl::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), left) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Page runs of sorted stretches placed in the pages file (their offsets there), a run never
/// spanning two VMAs.
fn runs_of(placed: &[Stretch], vmas: &[Vma]) -> Vec<PageRun> {
    let mut runs: Vec<PageRun> = Vec::with_capacity(placed.len());
    // VMAs in address order, as the maps list them: the one holding `addr` (or the index of
    // the next, with `false`).
    let vma_of = |addr: u64| {
        let i = vmas.partition_point(|v| v.end <= addr);
        (i, vmas.get(i).is_some_and(|v| v.start <= addr))
    };
    let mut last_vma = None;
    for stretch in placed {
        let (mut addr, end) = (stretch.addr, stretch.addr + stretch.npages * PAGE);
        while addr < end {
            let (i, inside) = vma_of(addr);
            // To the end of its VMA, or (outside any) to the start of the next.
            let to = match vmas.get(i) {
                Some(v) if inside => end.min(v.end),
                Some(v) => end.min(v.start),
                None => end,
            };
            let vma = inside.then_some(i);
            let offset = stretch.src.offset + (addr - stretch.addr);
            let npages = (to - addr) / PAGE;
            match runs.last_mut() {
                Some(r)
                    if r.addr + r.npages * PAGE == addr
                        && r.offset + r.npages * PAGE == offset
                        && vma == last_vma =>
                {
                    r.npages += npages
                }
                _ => runs.push(PageRun {
                    addr,
                    npages,
                    offset,
                }),
            }
            last_vma = vma;
            addr = to;
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(addr: u64, npages: u64, offset: u64) -> PageRun {
        PageRun {
            addr,
            npages,
            offset,
        }
    }

    #[test]
    fn splits_runs_into_written_and_earlier() {
        let runs = vec![run(0x1000, 4, 0), run(0x10000, 1, 4 * PAGE)];
        let earlier = [(0x2000, 0x4000), (0x10000, 0x11000)];
        let (write, pre) = split_runs(runs, &earlier);
        assert_eq!(write, vec![run(0x1000, 1, 0), run(0x4000, 1, PAGE)]);
        assert_eq!(pre, vec![run(0x2000, 2, 0), run(0x10000, 1, 0)]);
    }

    #[test]
    fn intersects_and_coalesces_ranges() {
        let sent = coalesce(vec![(0x5000, 0x8000), (0x1000, 0x3000), (0x2000, 0x4000)]);
        assert_eq!(sent, vec![(0x1000, 0x4000), (0x5000, 0x8000)]);
        let clean = [(0x0, 0x2000), (0x3000, 0x6000), (0x7000, 0x9000)];
        assert_eq!(
            intersect(&sent, &clean),
            vec![
                (0x1000, 0x2000),
                (0x3000, 0x4000),
                (0x5000, 0x6000),
                (0x7000, 0x8000)
            ]
        );
    }

    #[test]
    fn merged_runs_stop_at_vma_and_file_boundaries() {
        let vmas = vec![
            Vma {
                start: 0x1000,
                end: 0x3000,
                ..Vma::default()
            },
            Vma {
                start: 0x3000,
                end: 0x5000,
                ..Vma::default()
            },
        ];
        let placed = |addr, npages, offset| Stretch {
            addr,
            npages,
            src: Source { file: 0, offset },
        };
        // One stretch across the two VMAs, one page further on, one outside them.
        let pages = [
            placed(0x1000, 3, 0),
            placed(0x4000, 1, 9 * PAGE),
            placed(0x6000, 2, 20 * PAGE),
        ];
        assert_eq!(
            runs_of(&pages, &vmas),
            vec![
                run(0x1000, 2, 0),
                run(0x3000, 1, 2 * PAGE),
                run(0x4000, 1, 9 * PAGE),
                run(0x6000, 2, 20 * PAGE)
            ]
        );
    }
}
