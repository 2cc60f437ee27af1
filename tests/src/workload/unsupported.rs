//! `unsupported KIND [FD]`: one fd of a kind cryo refuses to dump (io_uring), at a known
//! number, so the refusal can name it.
//!
//! ```text
//! unsupported KIND [FD]      fd     -> FD   (KIND: io_uring)
//! ```

use std::path::Path;

use super::{arg, failed, sys, unknown, Mode};

struct Unsupported {
    fd: i32,
}

/// `unsupported KIND [FD]`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let kind = args.first().map(String::as_str).unwrap_or("io_uring");
    let want: i32 = arg(args, 1, 47)?;
    let fd = match kind {
        "io_uring" => sys::io_uring().map_err(failed("io_uring_setup"))?,
        other => return Err(format!("unknown unsupported kind {other:?}")),
    };
    let fd = sys::move_fd(fd, want).map_err(failed("dup2"))?;
    Ok(Box::new(Unsupported { fd }))
}

impl Mode for Unsupported {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("fd", []) => Ok(self.fd.to_string()),
            _ => unknown(verb),
        }
    }
}
