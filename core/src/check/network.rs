//! Network probes, through the crates the engine dumps and restores sockets with:
//! cryo-tcp-repair (a loopback connection captured, closed silently and restored), its
//! inet sock_diag lookup of a listener, cryo-unix-sockets' unix sock_diag query, and the
//! network lock of cryo-netns (a scratch table installed and removed as a dump does).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use cryo_netns::NetworkLock;

use super::error::{at, CheckError, Outcome};

/// The inode of a socket (as sock_diag names it).
fn inode(sock: impl AsFd) -> Outcome<u64> {
    let dup = sock.as_fd().try_clone_to_owned().map_err(at("dup"))?;
    let meta = std::fs::File::from(dup).metadata().map_err(at("fstat"))?;
    Ok(meta.ino())
}

/// A loopback connection captured in repair mode, closed without a packet, restored from
/// the capture and used: the dump and restore of an established TCP socket.
pub(super) fn probe_tcp_repair() -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(at("listen on 127.0.0.1"))?;
    let addr = listener.local_addr().map_err(at("getsockname"))?;
    let client = TcpStream::connect(addr).map_err(at("connect"))?;
    let (mut server, _) = listener.accept().map_err(at("accept"))?;
    let client = OwnedFd::from(client);
    let state = {
        let repair = cryo_tcp_repair::Repair::enter(client.as_fd()).map_err(at("repair"))?;
        let state = repair.capture().map_err(at("capture"))?;
        repair.hold();
        state
    };
    cryo_tcp_repair::close_silently(client).map_err(at("close silently"))?;
    let restored = cryo_tcp_repair::restore(&state).map_err(at("restore"))?;
    let restored = restored.finish_quiet().map_err(at("leave repair"))?;
    let mut restored = TcpStream::from(restored);
    restored
        .write_all(b"cryo")
        .map_err(at("send on the restored socket"))?;
    server
        .set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(at("SO_RCVTIMEO"))?;
    let mut got = [0u8; 4];
    server
        .read_exact(&mut got)
        .map_err(at("receive from the restored socket"))?;
    cryo_tcp_repair::close_silently(OwnedFd::from(restored)).map_err(at("close silently"))?;
    if &got != b"cryo" {
        return Err(CheckError::unexpected(
            "receive from the restored socket",
            format!("{got:?}"),
        ));
    }
    Ok(format!(
        "a loopback connection captured (seq {}), closed silently, restored and used",
        state.send_seq
    ))
}

/// Our own pair, looked up by inode as a dump looks up each unix socket.
pub(super) fn probe_unix_diag() -> Outcome {
    let (a, b) = UnixStream::pair().map_err(at("socketpair"))?;
    let (ia, ib) = (inode(&a)?, inode(&b)?);
    let mut diag = cryo_unix_sockets::DiagSocket::new().map_err(at("sock_diag socket"))?;
    let info = diag
        .query(ia as u32)
        .map_err(at("unix_diag query"))?
        .ok_or_else(|| {
            CheckError::unexpected("unix_diag query", format!("socket:[{ia}] not found"))
        })?;
    if info.peer != Some(ib as u32) {
        return Err(CheckError::unexpected(
            "unix_diag query",
            format!("socket:[{ia}] has peer {:?}, expected {ib}", info.peer),
        ));
    }
    Ok(format!("socket:[{ia}] found with its peer socket:[{ib}]"))
}

/// Our own listener, looked up by inode as a dump reads a listener's backlog.
pub(super) fn probe_inet_diag() -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(at("listen on 127.0.0.1"))?;
    let addr = listener.local_addr().map_err(at("getsockname"))?;
    let ino = inode(&listener)?;
    let found = cryo_tcp_repair::listener_diag(addr, ino)
        .map_err(at("inet_diag dump"))?
        .ok_or_else(|| {
            CheckError::unexpected("inet_diag dump", format!("listener {addr} not found"))
        })?;
    Ok(format!("listener {addr} found, backlog {}", found.backlog))
}

/// A lock over no connection installed and removed in one nftables transaction each.
pub(super) fn probe_nftables() -> Outcome {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let id = format!("check-{}-{nanos}", std::process::id());
    let mut lock = NetworkLock::install(&id, &[]).map_err(at("install the lock"))?;
    let table = lock.table_name().to_string();
    let removed = lock.release().map_err(at("release the lock"))?;
    if !removed {
        return Err(CheckError::unexpected(
            "release the lock",
            format!("table {table} was already gone"),
        ));
    }
    Ok(format!("table inet {table} installed and deleted"))
}

/// A fresh network namespace's firewall (a lock's table in it: sets, elements and rules)
/// captured, made again in another fresh one and read back the same, as a restore of a
/// namespace of the dump does.
pub(super) fn probe_netns_firewall() -> Outcome {
    use cryo_netns::firewall;
    let made = cryo_netns::run_in_new(|| {
        let tuple = cryo_netns::ConnTuple::new(
            "127.0.0.1:1".parse().expect("address"),
            "127.0.0.1:2".parse().expect("address"),
        );
        NetworkLock::install("probe", &[tuple])
            .map_err(|e| cryo_netns::NetnsError::Unrestorable {
                what: "a lock's table".into(),
                why: e.to_string(),
            })?
            .keep();
        firewall::capture()
    })
    .map_err(at("a fresh network namespace"))?
    .map_err(at("install a table, then read the firewall"))?;
    let again = cryo_netns::run_in_new(|| {
        firewall::restore(&made)?;
        firewall::capture()
    })
    .map_err(at("a fresh network namespace"))?
    .map_err(at("make the firewall again, then read it"))?;
    if let Some(difference) = firewall::first_difference(&made, &again) {
        return Err(CheckError::unexpected("compare", difference));
    }
    Ok(format!(
        "{} nftables objects made again the same",
        made.nft.len()
    ))
}
