//! What the modes that fork share: a child holding one fd of a pair, how a forked child
//! ends, and a child asked questions over two pipes.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;

use super::sys;

/// Forks a child that runs `child` with fd `theirs` (closing `ours`), while this process keeps
/// `ours` (closing `theirs`). Returns the child's pid.
pub fn fork_holding(ours: i32, theirs: i32, child: fn(i32) -> !) -> io::Result<libc::pid_t> {
    // the workload is single-threaded here; the child only makes syscalls.
    let kid = sys::fork()?;
    if kid == 0 {
        sys::close(ours);
        child(theirs);
    }
    sys::close(theirs);
    Ok(kid)
}

/// Ends a forked child: status 0 when `result` is Ok, else 3 with the error on stderr
/// (`what` names the child).
pub fn exit_child(what: &str, result: io::Result<()>) -> ! {
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{what}: {e}");
            3
        }
    };
    // SAFETY: ends the forked process.
    unsafe { libc::_exit(code) };
}

/// The command line that runs this binary as `cryo-workload DIR ARGS...`.
pub fn workload_argv(dir: &str, args: &[String]) -> Vec<CString> {
    let exe = std::env::current_exe()
        .unwrap_or_else(|e| super::control::fatal(&format!("current_exe: {e}")));
    let mut argv: Vec<CString> = vec![CString::new(exe.as_os_str().as_bytes()).expect("no NUL")];
    argv.push(CString::new(dir).expect("no NUL"));
    argv.extend(
        args.iter()
            .map(|a| CString::new(a.as_str()).expect("no NUL")),
    );
    argv
}

/// Replaces this (forked) process by `argv`; exits 127 if it cannot.
pub fn exec(argv: &[CString]) -> ! {
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: argv and its pointer array outlive execv, which returns only on failure.
    unsafe {
        libc::execv(ptrs[0], ptrs.as_ptr());
        libc::_exit(127)
    }
}

/// Ends this process the way wait status `status` says its child ended: killed by the same
/// signal (its default action), or exiting with the same code.
pub fn die_like(status: i32) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: dying by the child's signal, with its default action.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
    std::process::exit(libc::WEXITSTATUS(status));
}

/// Forks a child that computes `answer` (in its copy of this process) and writes it back over a
/// pipe, then exits as `what`; returns the answer once the child is reaped.
pub fn answer_from_child(what: &str, answer: impl FnOnce() -> String) -> io::Result<String> {
    let (r, w) = sys::pipe()?;
    let kid = sys::fork()?;
    if kid == 0 {
        sys::close(r);
        let result = sys::write_all(w, answer().as_bytes());
        exit_child(what, result);
    }
    sys::close(w);
    let mut answer = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let n = sys::read(r, &mut buf)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    sys::close(r);
    sys::reap(kid)?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// A forked child's answering loop: reads one message at a time (up to 256 bytes) from `rd`
/// and writes `answer(message)` to `wr`, until `rd` reaches its end or fails; the caller then
/// ends the child its own way.
pub fn answer_each(rd: i32, wr: i32, mut answer: impl FnMut(&str) -> String) {
    let mut buf = [0u8; 256];
    loop {
        let n = match sys::read(rd, &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        let reply = answer(&msg);
        let _ = sys::write_all(wr, reply.as_bytes());
    }
}

/// Forks a child asked questions over two pipes: `child(questions, answers)` runs in it (this
/// process's ends closed there); this process keeps the other ends, returned with the pid.
pub fn fork_asked(
    child: impl FnOnce(i32, i32) -> std::convert::Infallible,
) -> io::Result<(libc::pid_t, ChildPipes)> {
    let (q_rd, q_wr) = sys::pipe()?;
    let (a_rd, a_wr) = sys::pipe()?;
    // the workload is single-threaded here; the child only makes syscalls.
    let pid = sys::fork()?;
    if pid == 0 {
        sys::close(q_wr);
        sys::close(a_rd);
        child(q_rd, a_wr);
    }
    sys::close(q_rd);
    sys::close(a_wr);
    Ok((
        pid,
        ChildPipes {
            to_child: q_wr,
            from_child: a_rd,
        },
    ))
}

/// The two pipes to a child that answers one message with one message.
pub struct ChildPipes {
    /// Where this process writes its question.
    pub to_child: i32,
    /// Where the child writes its answer.
    pub from_child: i32,
}

impl ChildPipes {
    /// Sends `msg` and waits for the child's answer (one read of up to 256 bytes).
    pub fn ask(&self, msg: &str) -> io::Result<String> {
        sys::write_all(self.to_child, msg.as_bytes())?;
        let mut buf = [0u8; 256];
        let n = sys::read(self.from_child, &mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}
