//! `aio`: an AIO context made with the raw io_setup syscall (no libaio), one read submitted
//! and its completion reaped.
//!
//! ```text
//! aio        ctx -> <the context id: its ring's address, hex>
//!            read -> <bytes read by one more IOCB_CMD_PREAD of /proc/self/exe, reaped>
//! ```

use std::io;
use std::path::Path;

use super::{failed, sys, unknown, Mode};

/// The `aio` mode.
struct Aio {
    ctx: u64,
    fd: i32,
    buf: Vec<u8>,
}

/// `aio`
pub fn start(_args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let mut ctx = 0u64;
    // SAFETY: io_setup writes the context id into `ctx`, alive for the call.
    sys::cvt(unsafe { libc::syscall(libc::SYS_io_setup, 8, &mut ctx as *mut u64) } as i32)
        .map_err(failed("io_setup"))?;
    let fd = sys::open(Path::new("/proc/self/exe"), libc::O_RDONLY).map_err(failed("open"))?;
    let mut me = Aio {
        ctx,
        fd,
        buf: vec![0; 4096],
    };
    me.read().map_err(failed("the first read"))?;
    Ok(Box::new(me))
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
#[derive(Default)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

impl Aio {
    /// One IOCB_CMD_PREAD (0) of 4096 bytes, submitted and reaped.
    fn read(&mut self) -> io::Result<i64> {
        let mut cb = Iocb {
            data: 7,
            opcode: 0,
            fildes: self.fd as u32,
            buf: self.buf.as_mut_ptr() as u64,
            nbytes: self.buf.len() as u64,
            ..Iocb::default()
        };
        let mut list = [&mut cb as *mut Iocb];
        // SAFETY: one iocb pointer, to `cb`, whose buffer lives as long as `self`.
        let n = unsafe { libc::syscall(libc::SYS_io_submit, self.ctx, 1, list.as_mut_ptr()) };
        if n != 1 {
            return Err(io::Error::last_os_error());
        }
        let mut ev = IoEvent::default();
        // SAFETY: room for one io_event; no timeout: waits for the completion.
        let got = unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                self.ctx,
                1,
                1,
                &mut ev as *mut IoEvent,
                std::ptr::null_mut::<libc::timespec>(),
            )
        };
        if got != 1 {
            return Err(io::Error::last_os_error());
        }
        Ok(ev.res)
    }
}

impl Mode for Aio {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("ctx", []) => Ok(format!("{:#x}", self.ctx)),
            ("read", []) => self
                .read()
                .map(|n| n.to_string())
                .map_err(|e| e.to_string()),
            _ => unknown(verb),
        }
    }
}
