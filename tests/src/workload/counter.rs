//! `counter`: nothing of its own, only the common commands: the smallest process to
//! checkpoint.

use std::path::Path;

use super::{unknown, Mode};

struct Counter;

impl Mode for Counter {
    fn command(&mut self, verb: &str, _args: &[&str]) -> Result<String, String> {
        unknown(verb)
    }
}

/// `counter`
pub fn start(_args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    Ok(Box::new(Counter))
}
