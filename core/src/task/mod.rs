//! The per-task kernel objects both pipelines handle, one module each with its dump and
//! restore side by side.
//!
//! ```text
//! namespaces  UTS made again with its names; other kinds cryo's or refused
//! userns    a user namespace one level below cryo's: its maps, made again by its top process
//! mount_ns  a mount namespace's own tmpfs and bind mounts, made again
//! binfmt_misc  a binfmt_misc instance's registered formats, registered again
//! attrs     nice, policy, affinity, ioprio, slack, pdeathsig, MCE, oom, loginuid, dumpable...
//! process   credentials, rlimits, umask, personality, name, cwd/root, session and group
//! security  per-thread ids, capabilities, securebits, no_new_privs, seccomp (restored last)
//! landlock  a thread in a Landlock domain (or confined by another LSM): refused at dump
//! threads   registers, syscall restart, per-thread state (mask, altstack, robust list, rseq)
//! signals   dispositions and queued signals
//! timers    interval timers and POSIX timers
//! ```

pub mod attrs;
pub mod binfmt_misc;

pub mod cgroup_roots;
pub mod cgroup_settings;
pub mod cgroups;
pub mod keyrings;
pub mod landlock;
pub mod mount_ns;
pub mod namespaces;
pub mod netns;
pub mod pidns;
pub mod process;
pub mod security;
pub mod sharing;
pub mod signals;
pub mod threads;
pub mod timers;
pub mod userns;
