//! `waits`: two threads in waits a stop makes fail with EINTR (man 7 signal), both without a
//! timeout: one in epoll_wait on an eventfd, one in sigwaitinfo for SIGUSR2; a third in an
//! hour's nanosleep and a fourth in poll without timeout on a pipe (restart blocks the kernel
//! keeps: a restore must sleep the time left, poll again); a fifth in sem_timedwait with a
//! deadline an hour ahead (a futex wait with an absolute timeout: a restore waits on to it).
//! Each records what every return of its wait gave and waits again.
//!
//! ```text
//! waits   tids     -> <epoll thread tid> <sigwait thread tid> <sleeping thread tid>
//!                     <polling thread tid> <semaphore thread tid>
//!         wake     -> ok (the eventfd and the pipe written, SIGUSR2 sent to the sigwait
//!                     thread, the semaphore posted)
//!         results  -> epoll <r,r...> sigwait <r,r...> sleep <r,r...> poll <r,r...>
//!                     sem <r,r...>
//!                     (r: events, the signal, 0, or errno N; none before the first return)
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use super::{failed, sys, unknown, Mode};

struct Waits {
    eventfd: i32,
    epoll_tid: Arc<AtomicI32>,
    sigwait_tid: Arc<AtomicI32>,
    sleep_tid: Arc<AtomicI32>,
    poll_tid: Arc<AtomicI32>,
    sem_tid: Arc<AtomicI32>,
    pipe_write: i32,
    semaphore: Arc<sys::Semaphore>,
    epoll: Arc<Mutex<Vec<String>>>,
    sigwait: Arc<Mutex<Vec<String>>>,
    sleep: Arc<Mutex<Vec<String>>>,
    poll: Arc<Mutex<Vec<String>>>,
    sem: Arc<Mutex<Vec<String>>>,
}

/// What a wait returned: its value, or `errno N`.
fn outcome(ret: std::io::Result<usize>) -> String {
    match ret {
        Ok(n) => n.to_string(),
        Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(0)),
    }
}

/// `waits`
pub fn start(_args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    // Blocked in every thread (they inherit it): only sigwaitinfo takes it.
    sys::block_signal(libc::SIGUSR2).map_err(failed("block SIGUSR2"))?;
    let eventfd = sys::eventfd(0, 0).map_err(failed("eventfd"))?;
    let epfd = sys::epoll().map_err(failed("epoll_create"))?;
    sys::epoll_add(epfd, eventfd, libc::EPOLLIN as u32, 0).map_err(failed("epoll_ctl"))?;
    let (pipe_read, pipe_write) = sys::pipe().map_err(failed("pipe"))?;
    let w = Waits {
        eventfd,
        epoll_tid: Arc::default(),
        sigwait_tid: Arc::default(),
        sleep_tid: Arc::default(),
        poll_tid: Arc::default(),
        sem_tid: Arc::default(),
        pipe_write,
        semaphore: Arc::new(sys::Semaphore::new().map_err(failed("sem_init"))?),
        epoll: Arc::default(),
        sigwait: Arc::default(),
        sleep: Arc::default(),
        poll: Arc::default(),
        sem: Arc::default(),
    };
    let (tid, log) = (Arc::clone(&w.epoll_tid), Arc::clone(&w.epoll));
    std::thread::spawn(move || {
        tid.store(sys::gettid(), Ordering::SeqCst);
        loop {
            let ret = sys::epoll_wait(epfd, -1).map(|ready| ready.len());
            if ret.as_ref().is_ok_and(|&n| n > 0) {
                let _ = sys::read(eventfd, &mut [0u8; 8]);
            }
            log.lock().unwrap().push(outcome(ret));
        }
    });
    let (tid, log) = (Arc::clone(&w.sigwait_tid), Arc::clone(&w.sigwait));
    std::thread::spawn(move || {
        tid.store(sys::gettid(), Ordering::SeqCst);
        loop {
            let got = outcome(sys::sigwaitinfo(libc::SIGUSR2).map(|s| s as usize));
            log.lock().unwrap().push(got);
        }
    });
    let (tid, log) = (Arc::clone(&w.sleep_tid), Arc::clone(&w.sleep));
    std::thread::spawn(move || {
        tid.store(sys::gettid(), Ordering::SeqCst);
        loop {
            let got = outcome(sys::nanosleep_secs(3600).map(|()| 0));
            log.lock().unwrap().push(got);
        }
    });
    let (tid, log) = (Arc::clone(&w.poll_tid), Arc::clone(&w.poll));
    std::thread::spawn(move || {
        tid.store(sys::gettid(), Ordering::SeqCst);
        loop {
            let ret = sys::poll_in(pipe_read, -1).map(usize::from);
            if ret.as_ref().is_ok_and(|&n| n > 0) {
                let _ = sys::read(pipe_read, &mut [0u8; 1]);
            }
            log.lock().unwrap().push(outcome(ret));
        }
    });
    let (tid, log) = (Arc::clone(&w.sem_tid), Arc::clone(&w.sem));
    let semaphore = Arc::clone(&w.semaphore);
    std::thread::spawn(move || {
        tid.store(sys::gettid(), Ordering::SeqCst);
        loop {
            let got = outcome(semaphore.timed_wait_secs(3600).map(|()| 0));
            log.lock().unwrap().push(got);
        }
    });
    Ok(Box::new(w))
}

impl Mode for Waits {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("tids", []) => {
                // The threads say who they are as they start.
                let tid = |t: &AtomicI32| loop {
                    match t.load(Ordering::SeqCst) {
                        0 => std::thread::yield_now(),
                        tid => break tid,
                    }
                };
                Ok(format!(
                    "{} {} {} {} {}",
                    tid(&self.epoll_tid),
                    tid(&self.sigwait_tid),
                    tid(&self.sleep_tid),
                    tid(&self.poll_tid),
                    tid(&self.sem_tid)
                ))
            }
            ("wake", []) => {
                sys::write_all(self.eventfd, &1u64.to_ne_bytes())
                    .map_err(failed("write the eventfd"))?;
                sys::write_all(self.pipe_write, b"x").map_err(failed("write the pipe"))?;
                let tid = self.sigwait_tid.load(Ordering::SeqCst);
                sys::tgkill(std::process::id() as i32, tid, libc::SIGUSR2)
                    .map_err(failed("tgkill"))?;
                self.semaphore.post().map_err(failed("sem_post"))?;
                Ok("ok".into())
            }
            ("results", []) => {
                let show = |v: &Mutex<Vec<String>>| {
                    let v = v.lock().unwrap();
                    if v.is_empty() {
                        "none".to_string()
                    } else {
                        v.join(",")
                    }
                };
                Ok(format!(
                    "epoll {} sigwait {} sleep {} poll {} sem {}",
                    show(&self.epoll),
                    show(&self.sigwait),
                    show(&self.sleep),
                    show(&self.poll),
                    show(&self.sem)
                ))
            }
            _ => unknown(verb),
        }
    }
}
