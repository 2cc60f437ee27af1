//! `pipe [LEN] [SEED]`: a pipe holding LEN bytes, both ends kept open: its contents must
//! survive; then packets queued (pipe(7) packet mode), the write end closed, FIFOs opened in
//! the control directory, each end's poll(2) as the process sees it.
//!
//! ```text
//! pipe [LEN] [SEED]          drain  -> <len> <checksum>   take N -> <len> <checksum>
//!                            packets N... -> ok  (the write end set O_DIRECT, then one write
//!                              of N bytes each: one packet each, a page at most)
//!                            stream N -> ok  (the write end without O_DIRECT, N bytes)
//!                            reads N -> <the length of each non-blocking read(2) of N bytes
//!                              until none is ready, space-separated> | none
//!                            close-writer -> ok
//!                            poll [FD] -> <poll revents of FD (default: the read end), hex>
//!                              for POLLIN|POLLOUT: 1 IN, 4 OUT, 8 ERR, 10 HUP
//!                            fifo NAME -> ok  (mkfifo in the control directory)
//!                            open-fifo NAME r|w -> <fd>  (O_NONBLOCK)
//!                            close FD -> ok
//!                            put FD N -> ok  (N bytes written to FD)
//!                            kid-fifo NAME -> <poll revents of the child's end, hex>  (a
//!                              child opens NAME O_RDONLY|O_NONBLOCK, then a writer it
//!                              closes: its end saw one)
//!                            kid-poll -> <poll revents of the child's FIFO end, hex>
//!                            read-fd FD -> <the text a read of what FD holds gives (up
//!                              to 4096 bytes, without blocking)> | empty
//!                            say FD TEXT -> ok  (TEXT written to FD)
//!                            flags-of FD -> <F_GETFL of FD, octal>
//! ```

use std::path::{Path, PathBuf};

use super::kids::{answer_each, exit_child, fork_asked, ChildPipes};
use super::{arg, count, failed, io_err, seed_arg, sys, unknown, Mode};
use crate::protocol;

struct Pipe {
    rd: i32,
    wr: Option<i32>,
    dir: PathBuf,
    kid: Option<ChildPipes>,
}

/// `pipe [LEN] [SEED]`
pub fn start(args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    let len: usize = arg(args, 0, 40_000)?;
    if len > 65536 {
        return Err("pipe mode holds at most 65536 bytes".into());
    }
    let seed = seed_arg(args, 1)?;
    let (rd, wr) = sys::pipe().map_err(failed("pipe"))?;
    sys::write_all(wr, &protocol::pattern(len, seed)).map_err(failed("write"))?;
    // Both ends stay open: the write end too, so the pipe is whole.
    Ok(Box::new(Pipe {
        rd,
        wr: Some(wr),
        dir: dir.to_path_buf(),
        kid: None,
    }))
}

impl Pipe {
    fn wr(&self) -> Result<i32, String> {
        self.wr.ok_or_else(|| "the write end is closed".to_string())
    }

    /// Sets or clears O_DIRECT (packet mode) on the write end.
    fn packet_mode(&self, on: bool) -> Result<i32, String> {
        let wr = self.wr()?;
        let flags = sys::file_flags(wr).map_err(io_err)?;
        let flags = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        sys::set_file_flags(wr, flags).map_err(io_err)?;
        Ok(wr)
    }
}

impl Mode for Pipe {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("drain", []) => {
                let data = sys::read_available(self.rd, usize::MAX).map_err(io_err)?;
                Ok(protocol::len_and_checksum(&data))
            }
            ("take", [n]) => {
                let data = sys::read_available(self.rd, count(n)?).map_err(io_err)?;
                Ok(protocol::len_and_checksum(&data))
            }
            ("packets", sizes) if !sizes.is_empty() => {
                let wr = self.packet_mode(true)?;
                for (i, n) in sizes.iter().enumerate() {
                    let data = protocol::pattern(count(n)?, i as u64 + 1);
                    sys::write_all(wr, &data).map_err(io_err)?;
                }
                Ok("ok".into())
            }
            ("stream", [n]) => {
                let wr = self.packet_mode(false)?;
                sys::write_all(wr, &protocol::pattern(count(n)?, 7)).map_err(io_err)?;
                Ok("ok".into())
            }
            ("reads", [n]) => {
                let mut buf = vec![0u8; count(n)?];
                let mut sizes = Vec::new();
                while sys::poll_revents(self.rd).map_err(io_err)? & libc::POLLIN != 0 {
                    match sys::read(self.rd, &mut buf).map_err(io_err)? {
                        0 => break,
                        got => sizes.push(got.to_string()),
                    }
                }
                Ok(if sizes.is_empty() {
                    "none".into()
                } else {
                    sizes.join(" ")
                })
            }
            ("close-writer", []) => {
                sys::close(self.wr()?);
                self.wr = None;
                Ok("ok".into())
            }
            ("poll", []) => Ok(format!("{:x}", sys::poll_revents(self.rd).map_err(io_err)?)),
            ("poll", [fd]) => {
                let fd = fd.parse().map_err(|_| format!("bad fd {fd:?}"))?;
                Ok(format!("{:x}", sys::poll_revents(fd).map_err(io_err)?))
            }
            ("fifo", [name]) => {
                sys::mkfifo(&self.dir.join(name)).map_err(io_err)?;
                Ok("ok".into())
            }
            ("open-fifo", [name, mode]) => {
                let access = match *mode {
                    "r" => libc::O_RDONLY,
                    "w" => libc::O_WRONLY,
                    _ => return Err(format!("bad mode {mode:?}")),
                };
                let fd =
                    sys::open(&self.dir.join(name), access | libc::O_NONBLOCK).map_err(io_err)?;
                Ok(fd.to_string())
            }
            ("close", [fd]) => {
                sys::close(fd.parse().map_err(|_| format!("bad fd {fd:?}"))?);
                Ok("ok".into())
            }
            ("put", [fd, n]) => {
                let fd = fd.parse().map_err(|_| format!("bad fd {fd:?}"))?;
                sys::write_all(fd, &protocol::pattern(count(n)?, 9)).map_err(io_err)?;
                Ok("ok".into())
            }
            ("read-fd", [fd]) => {
                let fd = fd.parse().map_err(|_| format!("bad fd {fd:?}"))?;
                let data = sys::read_available(fd, 4096).map_err(io_err)?;
                Ok(if data.is_empty() {
                    "empty".into()
                } else {
                    String::from_utf8_lossy(&data).into_owned()
                })
            }
            ("say", [fd, text]) => {
                let fd = fd.parse().map_err(|_| format!("bad fd {fd:?}"))?;
                sys::write_all(fd, text.as_bytes()).map_err(io_err)?;
                Ok("ok".into())
            }
            ("flags-of", [fd]) => {
                let fd = fd.parse().map_err(|_| format!("bad fd {fd:?}"))?;
                Ok(format!("{:o}", sys::file_flags(fd).map_err(io_err)?))
            }
            ("kid-fifo", [name]) => {
                let path = self.dir.join(name);
                let (_, kid) = fork_asked(move |questions, answers| {
                    let end = sys::open(&path, libc::O_RDONLY | libc::O_NONBLOCK);
                    let end = end.and_then(|end| {
                        sys::close(sys::open(&path, libc::O_WRONLY | libc::O_NONBLOCK)?);
                        Ok(end)
                    });
                    let end = match end {
                        Ok(end) => end,
                        Err(e) => exit_child("pipe kid-fifo child", Err(e)),
                    };
                    answer_each(questions, answers, |_| match sys::poll_revents(end) {
                        Ok(revents) => format!("{revents:x}"),
                        Err(e) => format!("err {e}"),
                    });
                    exit_child("pipe kid-fifo child", Ok(()))
                })
                .map_err(io_err)?;
                let first = kid.ask("poll").map_err(io_err)?;
                self.kid = Some(kid);
                Ok(first)
            }
            ("kid-poll", []) => {
                let kid = self.kid.as_ref().ok_or("no kid-fifo child")?;
                kid.ask("poll").map_err(io_err)
            }
            _ => unknown(verb),
        }
    }
}
