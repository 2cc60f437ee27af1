//! `aio`: AIO contexts made with the raw io_setup syscall (no libaio), reads of
//! /proc/self/exe submitted and reaped on them, completions left in a ring, a poll request in
//! flight; each context named by its index (0: the one made at start).
//!
//! ```text
//! aio        ctx [I] -> <context I's id: its ring's address, hex>
//!            read [I] -> <bytes read by one IOCB_CMD_PREAD of 4096 bytes on context I, reaped>
//!            spin N -> <N reads on context 0, each reaped: moves its head and tail on>
//!            setup [N] -> <index of a new context (io_setup(N), 8 by default)>
//!            destroy I -> ok (io_destroy of context I: its ring goes, its slot frees)
//!            pending N -> <K: reads on context 0, data 100.., offsets 4096 apart, not reaped; N of
//!                    them, or the K that went in before EAGAIN (no slot left)>
//!            reap N -> <"DATA:RES" of the N completions io_getevents gives context 0, in order>
//!            ring [I] -> <"id nr head tail" of context I's ring, read from the ring>
//!            protect I -> ok (context I's ring made read-only: mprotect PROT_READ)
//!            perms I -> <the permissions /proc/self/maps shows for context I's ring: "r--s">
//!            poll -> <fd of a pipe's write end: an IOCB_CMD_POLL for POLLIN, data 9, of its
//!                    read end is on context 0, in flight until the pipe has data>
//!            fork -> <pid of a child that pauses: it has the rings mapped, not the contexts>
//! ```

use std::io;
use std::path::Path;

use super::{failed, parse_u64, sys, unknown, Mode};

/// The `aio` mode.
struct Aio {
    /// Context ids by index (0 once destroyed).
    ctxs: Vec<u64>,
    fd: i32,
    buf: Vec<u8>,
    /// The iocbs of `pending` and `poll`, alive until reaped: boxed, so their addresses (the
    /// completions' obj) stay put as the list grows.
    #[allow(clippy::vec_box)]
    iocbs: Vec<Box<Iocb>>,
    /// The buffers of `pending` reads.
    bufs: Vec<Vec<u8>>,
}

/// `aio`
pub fn start(_args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let ctx = setup(8).map_err(failed("io_setup"))?;
    let fd = sys::open(Path::new("/proc/self/exe"), libc::O_RDONLY).map_err(failed("open"))?;
    let mut me = Aio {
        ctxs: vec![ctx],
        fd,
        buf: vec![0; 4096],
        iocbs: Vec::new(),
        bufs: Vec::new(),
    };
    me.read(0).map_err(failed("the first read"))?;
    Ok(Box::new(me))
}

/// A new context for `events` requests.
fn setup(events: u64) -> io::Result<u64> {
    let mut ctx = 0u64;
    // SAFETY: io_setup writes the context id into `ctx`, alive for the call.
    sys::cvt(unsafe { libc::syscall(libc::SYS_io_setup, events, &mut ctx as *mut u64) } as i32)?;
    Ok(ctx)
}

/// `struct iocb` from linux/aio_abi.h (x86_64, little endian).
#[repr(C)]
#[derive(Default)]
struct Iocb {
    data: u64,
    key: u32,
    rw_flags: u32,
    opcode: u16,
    reqprio: i16,
    fildes: u32,
    buf: u64,
    nbytes: u64,
    offset: i64,
    reserved2: u64,
    flags: u32,
    resfd: u32,
}

/// `struct io_event` from linux/aio_abi.h.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

/// IOCB_CMD_PREAD and IOCB_CMD_POLL.
const PREAD: u16 = 0;
const POLL: u16 = 5;

impl Aio {
    fn ctx(&self, i: usize) -> io::Result<u64> {
        match self.ctxs.get(i) {
            Some(&c) if c != 0 => Ok(c),
            _ => Err(io::Error::other(format!("no context {i}"))),
        }
    }

    fn submit(ctx: u64, cb: &mut Iocb) -> io::Result<()> {
        let mut list = [cb as *mut Iocb];
        // SAFETY: one iocb pointer, to `cb`; its buffer outlives the request (the caller's).
        let n = unsafe { libc::syscall(libc::SYS_io_submit, ctx, 1, list.as_mut_ptr()) };
        if n != 1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn getevents(ctx: u64, n: usize) -> io::Result<Vec<IoEvent>> {
        let mut evs = vec![IoEvent::default(); n];
        // SAFETY: room for `n` io_events; no timeout: waits for `n` completions.
        let got = unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                ctx,
                n as i64,
                n as i64,
                evs.as_mut_ptr(),
                std::ptr::null_mut::<libc::timespec>(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        evs.truncate(got as usize);
        Ok(evs)
    }

    /// One IOCB_CMD_PREAD of 4096 bytes on context `i`, submitted and reaped.
    fn read(&mut self, i: usize) -> io::Result<i64> {
        let ctx = self.ctx(i)?;
        let mut cb = Iocb {
            data: 7,
            opcode: PREAD,
            fildes: self.fd as u32,
            buf: self.buf.as_mut_ptr() as u64,
            nbytes: self.buf.len() as u64,
            ..Iocb::default()
        };
        Self::submit(ctx, &mut cb)?;
        let ev = Self::getevents(ctx, 1)?;
        match ev.first() {
            Some(e) if e.data == 7 => Ok(e.res),
            Some(e) => Err(io::Error::other(format!("reaped data {}", e.data))),
            None => Err(io::Error::other("no completion")),
        }
    }

    /// Up to `n` reads on context 0, not reaped; stops at EAGAIN (no slot left). Returns how
    /// many went in.
    fn pending(&mut self, n: u64) -> io::Result<u64> {
        let ctx = self.ctx(0)?;
        for k in 0..n {
            let mut buf = vec![0u8; 4096];
            let mut cb = Box::new(Iocb {
                data: 100 + k,
                opcode: PREAD,
                fildes: self.fd as u32,
                buf: buf.as_mut_ptr() as u64,
                nbytes: 4096,
                offset: (k * 4096) as i64,
                ..Iocb::default()
            });
            match Self::submit(ctx, &mut cb) {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(k),
                r => r?,
            }
            self.iocbs.push(cb);
            self.bufs.push(buf);
        }
        Ok(n)
    }

    fn poll(&mut self) -> io::Result<i32> {
        let ctx = self.ctx(0)?;
        // A fifo opened by name takes no poll request (EINVAL): a pipe does.
        let (fd, wr) = sys::pipe()?;
        let mut cb = Box::new(Iocb {
            data: 9,
            opcode: POLL,
            fildes: fd as u32,
            buf: libc::POLLIN as u64,
            ..Iocb::default()
        });
        Self::submit(ctx, &mut cb)?;
        self.iocbs.push(cb);
        Ok(wr)
    }

    /// The pages of the ring at `ctx`: (nr + 1) io_event slots of 32 bytes.
    fn ring_pages(&self, ctx: u64) -> usize {
        // SAFETY: the ring's header, mapped readable by io_setup; nr is its second word.
        let nr = unsafe { *(ctx as *const u32).add(1) } as usize;
        (nr + 1) * 32 / 4096
    }

    fn ring(&self, i: usize) -> io::Result<String> {
        let ctx = self.ctx(i)?;
        // SAFETY: the context id is the address of its ring, mapped readable by io_setup;
        // the first four words are id, nr, head, tail.
        let w = unsafe { std::slice::from_raw_parts(ctx as *const u32, 4) };
        Ok(format!("{} {} {} {}", w[0], w[1], w[2], w[3]))
    }
}

impl Mode for Aio {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        let index = |args: &[&str]| -> Result<usize, String> {
            match args {
                [] => Ok(0),
                [i] => parse_u64(i).map(|i| i as usize),
                _ => Err("one index at most".into()),
            }
        };
        let err = |e: io::Error| e.to_string();
        match (verb, args) {
            ("ctx", a) => Ok(format!("{:#x}", self.ctx(index(a)?).map_err(err)?)),
            ("read", a) => self.read(index(a)?).map(|n| n.to_string()).map_err(err),
            ("spin", [n]) => {
                for _ in 0..parse_u64(n)? {
                    self.read(0).map_err(err)?;
                }
                Ok("ok".into())
            }
            ("setup", a) => {
                let events = match a {
                    [] => 8,
                    [n] => parse_u64(n)?,
                    _ => return Err("one number of events at most".into()),
                };
                self.ctxs.push(setup(events).map_err(err)?);
                Ok((self.ctxs.len() - 1).to_string())
            }
            ("destroy", [i]) => {
                let i = parse_u64(i)? as usize;
                let ctx = self.ctx(i).map_err(err)?;
                // SAFETY: io_destroy takes the context id.
                sys::cvt(unsafe { libc::syscall(libc::SYS_io_destroy, ctx) } as i32)
                    .map_err(err)?;
                self.ctxs[i] = 0;
                Ok("ok".into())
            }
            ("pending", [n]) => self
                .pending(parse_u64(n)?)
                .map(|k| k.to_string())
                .map_err(err),
            ("reap", [n]) => {
                let evs = Self::getevents(self.ctx(0).map_err(err)?, parse_u64(n)? as usize)
                    .map_err(err)?;
                let seen: Vec<String> = evs
                    .iter()
                    .map(|e| format!("{}:{}", e.data, e.res))
                    .collect();
                Ok(seen.join(" "))
            }
            ("ring", a) => self.ring(index(a)?).map_err(err),
            ("protect", [i]) => {
                let ctx = self.ctx(parse_u64(i)? as usize).map_err(err)?;
                let len = 4096 * self.ring_pages(ctx);
                // SAFETY: the ring's own pages, made read-only (the kernel writes through its
                // own mapping; the process only reads it).
                sys::cvt(unsafe { libc::mprotect(ctx as *mut libc::c_void, len, libc::PROT_READ) })
                    .map_err(err)?;
                Ok("ok".into())
            }
            ("perms", [i]) => {
                let ctx = self.ctx(parse_u64(i)? as usize).map_err(err)?;
                let maps = std::fs::read_to_string("/proc/self/maps").map_err(err)?;
                let line = maps
                    .lines()
                    .find(|l| l.starts_with(&format!("{ctx:x}-")))
                    .ok_or("no mapping at the context id")?;
                Ok(line.split_whitespace().nth(1).unwrap_or("").to_string())
            }
            ("poll", []) => self.poll().map(|wr| wr.to_string()).map_err(err),
            ("fork", []) => sys::fork_paused().map(|p| p.to_string()).map_err(err),
            _ => unknown(verb),
        }
    }
}
