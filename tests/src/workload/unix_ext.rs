//! `unix-ext PATH`: a client of a unix listener the test holds, outside the dumped tree.
//!
//! ```text
//! unix-ext PATH              connects to the unix listener at PATH (held by the test)
//! ```

use std::path::Path;

use super::unix::UNIX_A;
use super::{failed, sys, unknown, Mode};

struct UnixExt;

/// `unix-ext PATH`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let path = args.first().ok_or("unix-ext mode needs a PATH")?;
    let s = std::os::unix::net::UnixStream::connect(path).map_err(failed(path))?;
    sys::move_fd(std::os::fd::IntoRawFd::into_raw_fd(s), UNIX_A).map_err(failed("dup2"))?;
    Ok(Box::new(UnixExt))
}

impl Mode for UnixExt {
    fn command(&mut self, verb: &str, _args: &[&str]) -> Result<String, String> {
        unknown(verb)
    }
}
