//! `file PATH`: a regular file open read-only, read one byte per command: its offset must
//! survive.
//!
//! ```text
//! file PATH                  next   -> <offset> <byte> | eof <offset>     pos -> <offset>
//! ```

use std::path::Path;

use super::{failed, io_err, sys, unknown, Mode};

struct File {
    fd: i32,
}

/// `file PATH`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let path = args.first().ok_or("file mode needs a PATH")?;
    let fd = sys::open(Path::new(path), libc::O_RDONLY).map_err(failed(path))?;
    Ok(Box::new(File { fd }))
}

impl Mode for File {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("next", []) => {
                let off = sys::tell(self.fd).map_err(io_err)?;
                let mut b = [0u8; 1];
                match sys::read(self.fd, &mut b).map_err(io_err)? {
                    0 => Ok(format!("eof {off}")),
                    _ => Ok(format!("{off} {}", b[0])),
                }
            }
            ("pos", []) => Ok(sys::tell(self.fd).map_err(io_err)?.to_string()),
            _ => unknown(verb),
        }
    }
}
