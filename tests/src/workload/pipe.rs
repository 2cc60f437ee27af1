//! `pipe [LEN] [SEED]`: a pipe holding LEN bytes, both ends kept open: its contents must
//! survive.
//!
//! ```text
//! pipe [LEN] [SEED]          drain  -> <len> <checksum>   take N -> <len> <checksum>
//! ```

use std::path::Path;

use super::{arg, count, failed, io_err, seed_arg, sys, unknown, Mode};
use crate::protocol;

struct Pipe {
    rd: i32,
}

/// `pipe [LEN] [SEED]`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let len: usize = arg(args, 0, 40_000)?;
    if len > 65536 {
        return Err("pipe mode holds at most 65536 bytes".into());
    }
    let seed = seed_arg(args, 1)?;
    let (rd, wr) = sys::pipe().map_err(failed("pipe"))?;
    sys::write_all(wr, &protocol::pattern(len, seed)).map_err(failed("write"))?;
    // Both ends stay open: the write end too, so the pipe is whole.
    Ok(Box::new(Pipe { rd }))
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
            _ => unknown(verb),
        }
    }
}
