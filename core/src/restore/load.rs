//! The first phase of a restore: every image read and checked against the others and this
//! machine (owners, page runs, file references, the vdso) before anything is created.

use cryo_proto::image::{FileDesc, Inventory, MmCore, ProcessEntry, TaskCore};
use cryo_proto::sanity;
use cryo_proto::ImageKind;
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::files;
use crate::image::{names, ImageDir};
use crate::memory;

/// One process of the image, read and checked.
pub(crate) struct TaskImage {
    pub(crate) entry: ProcessEntry,
    pub(crate) core: TaskCore,
    pub(crate) mm: MmCore,
    /// The pages image, mapped when it was checked; the fill copies from it.
    pub(crate) pages: Option<crate::sys::mmap::Mapping>,
}

impl TaskImage {
    /// Its parent's core among `tasks`; `None` for a root.
    pub(crate) fn parent_core<'t>(&self, tasks: &'t [TaskImage]) -> Option<&'t TaskCore> {
        let by = forked_by(&self.entry);
        tasks.iter().find(|p| p.entry.pid == by).map(|p| &p.core)
    }
}

/// The process whose fork `entry` is at restore, what it inherits from: its parent, or the
/// parent of the zombie leader of its session that forks it (`fork_parent`).
pub(crate) fn forked_by(entry: &ProcessEntry) -> i32 {
    match entry.fork_parent {
        0 => entry.ppid,
        by => by,
    }
}

/// The images of a restore, read and checked: nothing exists yet.
pub(crate) struct Loaded {
    /// The image directory.
    pub images: ImageDir,
    /// Its inventory.
    pub inventory: Inventory,
    /// The live processes, in image order; in creation order once planned.
    pub tasks: Vec<TaskImage>,
    /// The zombies.
    pub zombies: Vec<ProcessEntry>,
    /// Every description.
    pub descs: Vec<FileDesc>,
    /// The unix sockets made together and what they carry.
    pub links: crate::sockets::UnixLinks,
    /// The SysV semaphore sets and message queues (ipc.img), checked against this machine.
    pub ipc: cryo_proto::image::SysvIpc,
    /// The descriptions taken from fds of cryo's caller (`--inherit-fd`).
    pub given: files::inherit::Given,
}

impl Loaded {
    /// The address pairs of the image's TCP connections, as the network lock names them.
    pub fn lock_tuples(&self) -> Vec<cryo_netns::ConnTuple> {
        crate::sockets::lock_tuples(&self.descs)
    }

    /// Reads every image and checks it against the others and this machine, before anything
    /// is created.
    /// The descriptions `inherit` names are taken from fds of cryo's caller (`--inherit-fd`):
    /// matched and checked against those fds instead of this machine.
    pub fn read(images: ImageDir, inherit: &[files::InheritFd]) -> Result<Self> {
        let inventory: Inventory = images.read_single(names::INVENTORY, ImageKind::Inventory)?;
        if inventory.check_only {
            return Err(Error::ImageDir {
                path: images.path().to_path_buf(),
                detail: "a check image (`dump --check-only`, no pages): judge a host with \
                         `cryo restore --check-only`, restore a full dump"
                    .into(),
            });
        }
        let pstree: Vec<ProcessEntry> = images.read(names::PSTREE, ImageKind::Pstree)?;
        let descs: Vec<FileDesc> = images.read(names::FILES, ImageKind::Files)?;
        let invalid = |name: &str, detail: String| {
            Error::Image(cryo_proto::ImageError::Invalid {
                path: images.file(name),
                index: 0,
                detail,
            })
        };
        let mut tasks = Vec::new();
        let mut zombies = Vec::new();
        let limits = limits_here(inventory.pid_ns != 0);
        for (index, entry) in pstree.into_iter().enumerate() {
            sanity::check_entry(&entry, &limits).map_err(|detail| {
                Error::Image(cryo_proto::ImageError::Invalid {
                    path: images.file(names::PSTREE),
                    index,
                    detail,
                })
            })?;
            if entry.zombie {
                zombies.push(entry);
                continue;
            }
            let pid = Pid::from_raw(entry.pid);
            let core: TaskCore = images.read_single(&names::core(pid), ImageKind::Core)?;
            let mm: MmCore = images.read_single(&names::mm(pid), ImageKind::Mm)?;
            if core.pid != entry.pid || mm.pid != entry.pid {
                return Err(invalid(
                    &names::core(pid),
                    format!("belongs to pid {}, not {pid}", core.pid),
                ));
            }
            if core.threads.first().map(|t| t.tid) != Some(entry.pid) {
                return Err(invalid(
                    &names::core(pid),
                    "the first thread is not the main thread".into(),
                ));
            }
            if !mm.precopied.is_empty() {
                return Err(invalid(
                    &names::mm(pid),
                    "pages of pre-copy rounds not merged (a streamed image its receiver did \
                     not commit)"
                        .into(),
                ));
            }
            let Some(pages) = &mm.pages_file else {
                return Err(invalid(&names::mm(pid), "no pages file".into()));
            };
            if pages.name != names::pages(pid) {
                return Err(invalid(
                    &names::mm(pid),
                    format!("pages file {:?} is not this pid's", pages.name),
                ));
            }
            sanity::check_core(&core, &limits)
                .map_err(|detail| invalid(&names::core(pid), detail))?;
            sanity::check_mm(&mm, pages.size, &limits)
                .map_err(|detail| invalid(&names::mm(pid), detail))?;
            crate::files::aio::check_host(pid, &mm)?;
            let known = |id: u32| descs.iter().any(|d| d.id == id);
            for vma in &mm.vmas {
                if vma.file_id != 0 && !known(vma.file_id) {
                    return Err(invalid(
                        &names::mm(pid),
                        format!("VMA {:#x} maps unknown file {}", vma.start, vma.file_id),
                    ));
                }
            }
            if !known(mm.exe_file_id) {
                return Err(invalid(
                    &names::mm(pid),
                    format!("unknown exe file {}", mm.exe_file_id),
                ));
            }
            let pages = images.map_raw(pages)?;
            tasks.push(TaskImage {
                entry,
                core,
                mm,
                pages,
            });
        }
        let fds: Vec<&[cryo_proto::image::FdEntry]> =
            tasks.iter().map(|t| t.core.fds.as_slice()).collect();
        let held: Vec<(i32, &[cryo_proto::image::FdEntry])> = tasks
            .iter()
            .map(|t| (t.entry.pid, t.core.fds.as_slice()))
            .collect();
        let given = files::inherit::resolve(inherit, &descs, &held)?;
        let links = files::validate_except(&descs, &fds, &images, |id| given.contains(id))?;
        files::epoll::check_holders(&descs, &held)?;
        files::epoll::check_in_flight(&descs, &held, &links)?;
        let ipc = crate::ipc::read(&images)?;
        // The huge pages the hugetlb memory takes, free here now (else nothing is made).
        memory::hugetlb::check_host(tasks.iter().map(|t| &t.mm), &descs)?;
        let ours = memory::vdso_identity(nix::unistd::getpid())?;
        if (inventory.vdso_size, inventory.vdso_crc32c) != ours {
            return Err(invalid(
                names::INVENTORY,
                format!(
                    "the image was taken with another vdso ({} bytes, crc {:#x}; this kernel's: {} bytes, \
                     crc {:#x}): restore on the kernel it was dumped on ({})",
                    inventory.vdso_size, inventory.vdso_crc32c, ours.0, ours.1, inventory.kernel_release
                ),
            ));
        }
        Ok(Self {
            images,
            inventory,
            tasks,
            zombies,
            descs,
            links,
            ipc,
            given,
        })
    }

    /// A shell job joins the process group `cryo restore` runs in
    /// ([`adopt_shell_job`](crate::task::process::adopt_shell_job)).
    pub fn adopt_shell_job(&mut self) -> Result<()> {
        if !self.inventory.shell_job {
            return Ok(());
        }
        // Zombies too: one in the job's group comes back in cryo's with the rest of it.
        let tasks = self.tasks.iter_mut().map(|t| &mut t.entry);
        let mut entries: Vec<&mut ProcessEntry> = tasks.chain(&mut self.zombies).collect();
        crate::task::process::adopt_shell_job(&mut entries, &self.inventory.root_pids)
    }
}

fn read_sys(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The limits of this machine and of this process that the records are checked against.
/// The pids of a tree in a PID namespace of its own (`own_pid_namespace`) are that
/// namespace's, made again in a new one: since Linux 6.14 each has its own pid_max, a new
/// one the most there may be, so they may exceed cryo's (zdtm transition/thread-bomb in a
/// namespace: tids past 32768 were refused). A pid beyond what the new namespace takes
/// fails its clone3 instead.
fn limits_here(own_pid_namespace: bool) -> sanity::Limits {
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1 << 20, |(_, hard)| hard);
    sanity::Limits {
        pid_max: if own_pid_namespace {
            i64::from(crate::task::pidns::PID_MAX_LIMIT)
        } else {
            read_sys("/proc/sys/kernel/pid_max").map_or(1 << 22, |v| v as i64)
        },
        nofile,
        max_map_count: read_sys("/proc/sys/vm/max_map_count").map_or(1 << 16, |v| v as usize),
    }
}
