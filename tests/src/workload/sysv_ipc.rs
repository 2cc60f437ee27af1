//! `sysv-ipc KEY`: a System V semaphore set and a message queue this process uses.
//!
//! ```text
//! sysv-ipc KEY    semaphore set (key KEY, 3 semaphores, mode 0640, values 1 5 0 by semop)
//!                 and message queue (key KEY+1, mode 0620, qbytes 4000) holding (1 "one"),
//!                 (2 "two"), (1 "three"), both made as uid 1000 gid 100 then given to
//!                 uid 1001 gid 101
//!                 semvals -> v0 v1 v2     semop NUM DELTA -> ok (IPC_NOWAIT)
//!                 undo -> ok (a semop with SEM_UNDO)
//!                 semstat -> key id mode uid gid cuid cgid nsems
//!                 msgstat -> key id mode uid gid cuid cgid qbytes qnum
//!                 msgrcv TYPE -> <type> <text> (IPC_NOWAIT)   msgsnd TYPE TEXT -> ok
//!                 rm -> ok (IPC_RMID of both)
//! ```

use std::io;
use std::path::Path;

use super::{failed, sys, Mode};

/// `sysv-ipc KEY`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let key: i32 = args
        .first()
        .and_then(|k| k.parse().ok())
        .ok_or("sysv-ipc: KEY expected")?;
    Ok(Box::new(SysvIpc::start(key).map_err(failed("sysv-ipc"))?))
}

/// The `sysv-ipc` mode (see the module doc).
struct SysvIpc {
    sem: i32,
    msg: i32,
}

fn semop(id: i32, num: u16, delta: i16, flags: i16) -> io::Result<()> {
    let mut op = libc::sembuf {
        sem_num: num,
        sem_op: delta,
        sem_flg: flags,
    };
    // SAFETY: one sembuf, alive for the call.
    sys::cvt(unsafe { libc::semop(id, &mut op, 1) }).map(drop)
}

pub(super) fn msgsnd(id: i32, mtype: i64, text: &[u8]) -> io::Result<()> {
    let mut buf = mtype.to_ne_bytes().to_vec();
    buf.extend_from_slice(text);
    // SAFETY: `buf` holds a long and `text.len()` bytes.
    sys::cvt(unsafe { libc::msgsnd(id, buf.as_ptr().cast(), text.len(), libc::IPC_NOWAIT) })
        .map(drop)
}

impl SysvIpc {
    fn start(key: i32) -> io::Result<Self> {
        // SAFETY: plain id changes of this single-threaded process; the saved ids stay 0.
        sys::cvt(unsafe { libc::setegid(100) })?;
        // SAFETY: as above.
        sys::cvt(unsafe { libc::seteuid(1000) })?;
        let flags = libc::IPC_CREAT | libc::IPC_EXCL;
        // SAFETY: semget and msgget take no pointers.
        let made = sys::cvt(unsafe { libc::semget(key, 3, flags | 0o600) }).and_then(|sem| {
            // SAFETY: as above.
            let msg = sys::cvt(unsafe { libc::msgget(key + 1, flags | 0o600) })?;
            Ok((sem, msg))
        });
        // SAFETY: back to root (the saved uid is 0).
        sys::cvt(unsafe { libc::seteuid(0) })?;
        // SAFETY: as above.
        sys::cvt(unsafe { libc::setegid(0) })?;
        let (sem, msg) = made?;
        // SAFETY: zeroed semid_ds is valid; IPC_SET reads uid, gid, mode through semun.buf.
        let mut sds: libc::semid_ds = unsafe { std::mem::zeroed() };
        sds.sem_perm.uid = 1001;
        sds.sem_perm.gid = 101;
        sds.sem_perm.mode = 0o640;
        // SAFETY: `sds` is a valid buffer.
        sys::cvt(unsafe { libc::semctl(sem, 0, libc::IPC_SET, &mut sds as *mut libc::semid_ds) })?;
        // SAFETY: zeroed msqid_ds is valid; IPC_SET reads uid, gid, mode, qbytes.
        let mut mds: libc::msqid_ds = unsafe { std::mem::zeroed() };
        mds.msg_perm.uid = 1001;
        mds.msg_perm.gid = 101;
        mds.msg_perm.mode = 0o620;
        mds.msg_qbytes = 4000;
        // SAFETY: `mds` is a valid buffer.
        sys::cvt(unsafe { libc::msgctl(msg, libc::IPC_SET, &mut mds) })?;
        semop(sem, 0, 1, 0)?;
        semop(sem, 1, 5, 0)?;
        for (t, text) in [(1, "one"), (2, "two"), (1, "three")] {
            msgsnd(msg, t, text.as_bytes())?;
        }
        Ok(Self { sem, msg })
    }

    fn answer(&mut self, verb: &str, args: &[&str]) -> io::Result<String> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
        match (verb, args) {
            ("semvals", []) => {
                let mut v = [0u16; 3];
                // SAFETY: GETALL writes 3 unsigned shorts, the set's size, into `v`.
                sys::cvt(unsafe { libc::semctl(self.sem, 0, libc::GETALL, v.as_mut_ptr()) })?;
                Ok(format!("{} {} {}", v[0], v[1], v[2]))
            }
            ("semop", [num, delta]) => {
                let num = num.parse().map_err(|_| bad("NUM"))?;
                let delta = delta.parse().map_err(|_| bad("DELTA"))?;
                semop(self.sem, num, delta, libc::IPC_NOWAIT as i16)?;
                Ok("ok".into())
            }
            ("undo", []) => {
                semop(self.sem, 2, 1, (libc::IPC_NOWAIT | libc::SEM_UNDO) as i16)?;
                Ok("ok".into())
            }
            ("seminfo", []) => {
                // The namespace's limits as semctl(SEM_INFO) gives them (kernel.sem).
                // SAFETY: zeroed seminfo is valid; SEM_INFO fills it.
                let mut info: libc::seminfo = unsafe { std::mem::zeroed() };
                // SAFETY: `info` is a valid buffer for SEM_INFO.
                sys::cvt(unsafe {
                    libc::semctl(0, 0, libc::SEM_INFO, &mut info as *mut libc::seminfo)
                })?;
                Ok(format!(
                    "{} {} {} {}",
                    info.semmsl, info.semmns, info.semopm, info.semmni
                ))
            }
            ("semstat", []) => {
                // SAFETY: zeroed semid_ds is valid; IPC_STAT fills it.
                let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
                // SAFETY: `ds` is a valid buffer.
                sys::cvt(unsafe {
                    libc::semctl(self.sem, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds)
                })?;
                let p = &ds.sem_perm;
                Ok(format!(
                    "{} {} {:o} {} {} {} {} {}",
                    p.__key, self.sem, p.mode, p.uid, p.gid, p.cuid, p.cgid, ds.sem_nsems
                ))
            }
            ("msgstat", []) => {
                // SAFETY: zeroed msqid_ds is valid; IPC_STAT fills it.
                let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
                // SAFETY: `ds` is a valid buffer.
                sys::cvt(unsafe { libc::msgctl(self.msg, libc::IPC_STAT, &mut ds) })?;
                let p = &ds.msg_perm;
                Ok(format!(
                    "{} {} {:o} {} {} {} {} {} {}",
                    p.__key,
                    self.msg,
                    p.mode,
                    p.uid,
                    p.gid,
                    p.cuid,
                    p.cgid,
                    ds.msg_qbytes,
                    ds.msg_qnum
                ))
            }
            ("msgrcv", [t]) => {
                let t: libc::c_long = t.parse().map_err(|_| bad("TYPE"))?;
                let mut buf = [0u8; 8 + 256];
                // SAFETY: `buf` holds a long and 256 bytes of text.
                let n = unsafe {
                    libc::msgrcv(self.msg, buf.as_mut_ptr().cast(), 256, t, libc::IPC_NOWAIT)
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                let mtype = i64::from_ne_bytes(buf[..8].try_into().expect("8 bytes"));
                Ok(format!(
                    "{mtype} {}",
                    String::from_utf8_lossy(&buf[8..8 + n as usize])
                ))
            }
            ("msgsnd", [t, text]) => {
                msgsnd(
                    self.msg,
                    t.parse().map_err(|_| bad("TYPE"))?,
                    text.as_bytes(),
                )?;
                Ok("ok".into())
            }
            ("rm", []) => {
                // SAFETY: IPC_RMID reads no argument.
                sys::cvt(unsafe { libc::semctl(self.sem, 0, libc::IPC_RMID) })?;
                // SAFETY: as above.
                sys::cvt(unsafe { libc::msgctl(self.msg, libc::IPC_RMID, std::ptr::null_mut()) })?;
                Ok("ok".into())
            }
            _ => Err(bad(&format!("unknown command {verb:?}"))),
        }
    }
}

impl Mode for SysvIpc {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        self.answer(verb, args).map_err(|e| e.to_string())
    }
}
