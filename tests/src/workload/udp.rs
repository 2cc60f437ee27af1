//! `udp ADDR`: a bound UDP socket; a datagram sent to it while it is checkpointed must
//! arrive after the restore.
//!
//! ```text
//! udp ADDR                   port -> <port>   recv -> <len> <checksum> <from> (one datagram)
//! ```

use std::net::UdpSocket;
use std::path::Path;

use super::{failed, io_err, unknown, Mode};
use crate::protocol;

struct Udp(UdpSocket);

/// `udp ADDR`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let addr = args.first().map(String::as_str).unwrap_or("127.0.0.1:0");
    Ok(Box::new(Udp(UdpSocket::bind(addr).map_err(failed(addr))?)))
}

impl Mode for Udp {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("port", []) => Ok(self.0.local_addr().map_err(io_err)?.port().to_string()),
            ("recv", []) => {
                let mut buf = vec![0u8; 65536];
                let (n, from) = self.0.recv_from(&mut buf).map_err(io_err)?;
                Ok(format!("{} {from}", protocol::len_and_checksum(&buf[..n])))
            }
            _ => unknown(verb),
        }
    }
}
