//! `tty [ctty]`: stdio on a terminal the test holds, made the controlling terminal with
//! `ctty`.
//!
//! ```text
//! tty [ctty]                 stdio on a terminal (ctty: made the controlling terminal first)
//!                            line -> ok LINE (reads one line from fd 0, writes "got LINE" to fd 1)
//!                            tty -> <tty_nr> <pgid> <sid> <tpgid> (of /proc/self/stat)
//! ```

use std::path::Path;

use super::{failed, io_err, sys, unknown, Mode};

struct Tty;

/// `tty [ctty]`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    if args.first().map(String::as_str) == Some("ctty") {
        sys::set_ctty(0).map_err(failed("TIOCSCTTY"))?;
    }
    Ok(Box::new(Tty))
}

impl Mode for Tty {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("line", []) => {
                let line = sys::read_line(0).map_err(io_err)?;
                sys::write_all(1, format!("got {line}\n").as_bytes()).map_err(io_err)?;
                Ok(format!("ok {line}"))
            }
            ("tty", []) => {
                let stat = std::fs::read_to_string("/proc/self/stat").map_err(io_err)?;
                let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
                let f: Vec<&str> = rest.split(' ').collect();
                // Fields 5 (pgrp), 6 (session), 7 (tty_nr), 8 (tpgid); f[0] is field 3.
                Ok(format!("{} {} {} {}", f[4], f[2], f[3], f[5]))
            }
            _ => unknown(verb),
        }
    }
}
