//! `unix-pair TYPE`: a socketpair of TYPE (stream, seqpacket, dgram) at fds 50 and 51, both
//! in this process: messages, descriptors in flight, credentials and shutdowns on either end.
//!
//! ```text
//! unix-pair TYPE             (TYPE: stream | seqpacket | dgram) a socketpair at fds 50 and 51
//!                            send SIDE MSG -> ok (writes MSG on end SIDE, 0 or 1, one message)
//!                            recv SIDE -> <msg>|<msg>|... | empty (reads every message waiting
//!                            on end SIDE, one read each, without blocking)
//!                            pass SIDE WHAT... -> ok (one message "fds" on end SIDE carrying a
//!                            descriptor per WHAT, closed here after: pipe:DATA the read end of a
//!                            new pipe holding DATA, its write end kept at fd 60; file:PATH:OFF
//!                            PATH read-only at offset OFF; sock:DATA one end of a new stream
//!                            socketpair with DATA waiting in it, the other end kept at fd 61)
//!                            take SIDE -> <msg> <item>... (one recvmsg; per descriptor
//!                            pipe:<data> (kept at 63) | file:<offset>:<rest> (kept at 64) |
//!                            sock:<what waits> (kept at 62))
//!                            pipe-write DATA -> ok (fd 60)   pipe-read -> <data> (fd 63)
//!                            sock-send DATA -> ok (from 61)  sock-recv -> <msgs> | empty (62)
//!                            shut SIDE -> ok (SHUT_WR)   send-nosig SIDE MSG -> ok | err ...
//!                            send-creds SIDE MSG UID GID [PID] -> ok (with SCM_CREDENTIALS,
//!                            PID defaults to its own)   passcred SIDE -> ok (SO_PASSCRED on)
//!                            recv-creds SIDE -> <msg> <pid> <uid> <gid> | <msg> none | empty
//!                            (SO_PASSCRED on, then one message)
//! ```

use std::path::Path;

use super::sys::{self, cvt};
use super::unix::{self, UNIX_A, UNIX_B};
use super::unix_msg::{
    pass, recv_creds, sendmsg, set_passcred, take, PIPE_TAKEN, PIPE_WRITER, SOCK_KEPT, SOCK_TAKEN,
};
use super::{failed, io_err, unknown, Mode};

struct UnixPair;

/// `unix-pair TYPE`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let ty = match args.first().map(String::as_str).unwrap_or("stream") {
        "stream" => libc::SOCK_STREAM,
        "seqpacket" => libc::SOCK_SEQPACKET,
        "dgram" => libc::SOCK_DGRAM,
        other => return Err(format!("unknown socket type {other:?}")),
    };
    unix::socketpair(ty).map_err(failed("socketpair"))?;
    Ok(Box::new(UnixPair))
}

/// End `s` of the pair: "0" is fd 50, anything else fd 51.
fn side(s: &str) -> i32 {
    if s == "0" {
        UNIX_A
    } else {
        UNIX_B
    }
}

impl Mode for UnixPair {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("send", [s, msg]) => {
                unix::send(side(s), msg.as_bytes()).map_err(io_err)?;
                Ok("ok".into())
            }
            ("recv", [s]) => unix::recv_all(side(s)).map_err(io_err),
            ("pass", [s, what @ ..]) => pass(side(s), what),
            ("take", [s]) => take(side(s)).map_err(io_err),
            ("close", [s]) => {
                sys::close(side(s));
                Ok("ok".into())
            }
            ("pipe-write", [data]) => sys::write_all(PIPE_WRITER, data.as_bytes())
                .map(|()| "ok".into())
                .map_err(io_err),
            ("pipe-read", []) => sys::read_available(PIPE_TAKEN, 4096)
                .map(|d| String::from_utf8_lossy(&d).into_owned())
                .map_err(io_err),
            ("sock-send", [data]) => unix::send(SOCK_KEPT, data.as_bytes())
                .map(|()| "ok".into())
                .map_err(io_err),
            ("sock-recv", []) => unix::recv_all(SOCK_TAKEN).map_err(io_err),
            ("shut", [s]) => {
                // SAFETY: shutdown takes no pointers.
                cvt(unsafe { libc::shutdown(side(s), libc::SHUT_WR) })
                    .map(|_| "ok".into())
                    .map_err(io_err)
            }
            ("send-nosig", [s, msg]) => {
                unix::send_flags(side(s), msg.as_bytes(), libc::MSG_NOSIGNAL)
                    .map(|()| "ok".into())
                    .map_err(io_err)
            }
            ("send-creds", [s, msg, uid, gid, pid @ ..]) => {
                let num = |t: &str| t.parse::<u32>().map_err(|_| format!("bad number {t:?}"));
                let pid = match pid {
                    [p] => num(p).map(|p| p as i32),
                    _ => Ok(std::process::id() as i32),
                };
                match (num(uid), num(gid), pid) {
                    (Ok(uid), Ok(gid), Ok(pid)) => {
                        let creds = libc::ucred { pid, uid, gid };
                        sendmsg(side(s), msg.as_bytes(), &[], Some(creds))
                            .map(|()| "ok".into())
                            .map_err(io_err)
                    }
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
                }
            }
            ("passcred", [s]) => set_passcred(side(s)).map(|()| "ok".into()).map_err(io_err),
            ("recv-creds", [s]) => recv_creds(side(s)).map_err(io_err),
            _ => unknown(verb),
        }
    }
}
