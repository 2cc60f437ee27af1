//! /proc/PID/stat, read and parsed with no engine error: the files of a task (the shell
//! job's terminal) read it too, below the engine's error type.

use std::fs;
use std::io;

use nix::unistd::Pid;

/// The fields of /proc/PID/stat the engine uses.
#[derive(Debug, Clone, Default)]
pub struct Stat {
    /// Command name (as in stat, truncated to 15 bytes by the kernel).
    pub comm: String,
    /// Scheduler state letter.
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Process group.
    pub pgid: i32,
    /// Session.
    pub sid: i32,
    /// Controlling terminal device, 0 for none.
    pub tty_nr: u32,
    /// Foreground process group of the controlling terminal (-1 for none).
    pub tpgid: i32,
    /// PF_* flags.
    pub flags: u32,
    /// mm fields.
    pub start_code: u64,
    /// End of code.
    pub end_code: u64,
    /// Start of the stack.
    pub start_stack: u64,
    /// Start of data.
    pub start_data: u64,
    /// End of data.
    pub end_data: u64,
    /// Start of the heap.
    pub start_brk: u64,
    /// Start of the arguments.
    pub arg_start: u64,
    /// End of the arguments.
    pub arg_end: u64,
    /// Start of the environment.
    pub env_start: u64,
    /// End of the environment.
    pub env_end: u64,
    /// The wait status of a zombie.
    pub exit_code: i32,
    /// When the process started, in clock ticks since boot (field 22).
    pub start_ticks: u64,
    /// The signal its parent gets when it ends (clone's exit signal, field 38): SIGCHLD for a
    /// fork.
    pub exit_signal: i32,
}

/// Reads and parses /proc/PID/stat; a text that does not parse is `InvalidData`.
pub(crate) fn read(pid: Pid) -> io::Result<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))
}

/// Reads and parses the stat file at `path` (of another proc mount than cryo's /proc).
pub(crate) fn read_at(path: &std::path::Path) -> io::Result<Stat> {
    let text = fs::read_to_string(path)?;
    parse_stat(&text).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))
}

/// The stat of thread `tid` of `pid` (its own flags, state...).
pub(crate) fn read_thread(pid: Pid, tid: Pid) -> io::Result<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))?;
    parse_stat(&text).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))
}

fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] is field 3 (state).
    let f = |n: usize| -> Option<u64> { rest.get(n - 3)?.parse().ok() };
    let i = |n: usize| -> Option<i32> { rest.get(n - 3)?.parse().ok() };
    Some(Stat {
        comm,
        state: rest.first()?.chars().next()?,
        ppid: i(4)?,
        pgid: i(5)?,
        sid: i(6)?,
        tty_nr: f(7)? as u32,
        tpgid: i(8)?,
        flags: f(9)? as u32,
        start_code: f(26)?,
        end_code: f(27)?,
        start_stack: f(28)?,
        start_data: f(45)?,
        end_data: f(46)?,
        start_brk: f(47)?,
        arg_start: f(48)?,
        arg_end: f(49)?,
        env_start: f(50)?,
        env_end: f(51)?,
        exit_code: i(52).unwrap_or(0),
        start_ticks: f(22)?,
        exit_signal: i(38).unwrap_or(libc::SIGCHLD),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_with_parens_and_spaces() {
        let line = "12 (a) b (c) S 1 12 12 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 1 1 1 1 2 3 4 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 5 6 7 8 9 10 11 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.comm, "a) b (c");
        assert_eq!(s.ppid, 1);
        assert_eq!(s.start_data, 5);
        assert_eq!(s.env_end, 11);
        assert_eq!(s.start_ticks, 1);
    }
}
