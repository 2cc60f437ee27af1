//! A live TCP connection handed from one process to another with TCP_REPAIR,
//! without the peer noticing.
//!
//! ```text
//!   C (client) ══ counting stream ══▶ A (echo server) ── state as JSON ──▶ B
//!              ◀══ echo, checked ═══              closes in repair mode     restores, echoes on
//! ```
//!
//! - C sends `u64` counters 0, 1, 2, ... and checks that the echo is exactly
//!   that sequence (no byte lost, duplicated or reordered, no reset).
//! - A echoes for a while, then stops reading so that C's window closes (this
//!   example has no network lock; a closed window keeps C's data in C, where
//!   it cannot hit the gap between A's close and B's restore), or until C has
//!   sent everything and its FIN when the rest fits in A's buffer, captures the
//!   connection in repair mode, passes it to B, and closes its socket in
//!   repair mode (nothing is sent to C).
//! - B restores the connection, leaves repair mode with a window probe, and
//!   echoes until C closes.
//!
//! Run as root: `cargo run -p cryo-examples --example tcp-handoff`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use cryo_tcp_repair::{
    capture_and_leave, close_silently, restore, Repair, TcpConnectionState, TcpState,
};

/// Bytes C sends in total.
const TOTAL: u64 = 8 << 20;
/// Bytes A echoes before handing the connection over.
const HANDOFF_AFTER: u64 = 2 << 20;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        None => role_a(),
        Some("b") => role_b(),
        Some("c") => match args.get(2) {
            Some(addr) => role_c(addr),
            None => Err("c needs an address".into()),
        },
        Some(other) => Err(format!("unknown role {other}").into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "tcp-handoff {}: {e}",
                args.get(1).map(String::as_str).unwrap_or("a")
            );
            ExitCode::FAILURE
        }
    }
}

/// Echoes up to `limit` bytes (None: until EOF); returns how much.
fn echo(s: &mut TcpStream, limit: Option<u64>) -> Res<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0u64;
    loop {
        let want = match limit {
            Some(l) if done >= l => return Ok(done),
            Some(l) => ((l - done) as usize).min(buf.len()),
            None => buf.len(),
        };
        let n = s.read(&mut buf[..want])?;
        if n == 0 {
            return Ok(done);
        }
        s.write_all(&buf[..n])?;
        done += n as u64;
    }
}

fn role_a() -> Res<()> {
    let exe = std::env::current_exe()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut c = Command::new(&exe).arg("c").arg(addr.to_string()).spawn()?;
    let (mut conn, peer) = listener.accept()?;
    println!("A: serving {peer} on {addr}");
    let mut b = Command::new(&exe)
        .arg("b")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut b_in = b.stdin.take().ok_or("b stdin")?;
    let mut b_out = BufReader::new(b.stdout.take().ok_or("b stdout")?);

    let echoed = echo(&mut conn, Some(HANDOFF_AFTER))?;
    println!("A: echoed {echoed} bytes, now letting C's window close");

    // Quiesce: stop reading until C has filled the window we announced, and
    // until C acknowledged all our echo data.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // C still sending may change the queues under a capture: not quiet yet, look again.
        let st = match capture_and_leave(&conn) {
            Ok(st) => st,
            Err(e) if Instant::now() < deadline && e.to_string().contains("changed") => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let w = st.window.ok_or("no window state")?;
        let recv_end = st.recv_seq.wrapping_add(st.recv_queue.len() as u32);
        let window_full = recv_end.wrapping_sub(w.rcv_wup.wrapping_add(w.rcv_wnd)) as i32 >= 0;
        // C sends nothing more once A's window is full, or once C has sent all of it and its
        // FIN (the rest fit in A's receive buffer, autotuned as large as that under load).
        let c_done = st.state == TcpState::CloseWait;
        if (window_full || c_done) && st.send_queue_len() == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "C's window never closed: received up to {recv_end}, window {}+{}, {} bytes \
                 of ours unacknowledged or unsent",
                w.rcv_wup,
                w.rcv_wnd,
                st.send_queue_len()
            )
            .into());
        }
        // Pacing of a condition re-checked at each turn, not synchronisation.
        std::thread::sleep(Duration::from_millis(2));
    }

    let repair = Repair::enter(conn.as_fd())?;
    let state = repair.capture()?;
    repair.hold();
    println!(
        "A: captured {} -> {} ({:?}): {} bytes received not yet read, {} + {} bytes to send",
        state.local,
        state.remote,
        state.state,
        state.recv_queue.len(),
        state.send_queue_sent.len(),
        state.send_queue_unsent.len()
    );
    serde_json::to_writer(&mut b_in, &state)?;
    b_in.write_all(b"\n")?;
    b_in.flush()?;
    let mut line = String::new();
    b_out.read_line(&mut line)?;
    if line.trim() != "ready" {
        return Err(format!("B said {line:?}").into());
    }
    // Closing in repair mode sends neither FIN nor RST; the disconnect frees the
    // address pair for B even if some child of ours still holds a copy of the fd.
    close_silently(conn.into())?;
    b_in.write_all(b"go\n")?;
    b_in.flush()?;
    println!("A: closed its socket in repair mode; B takes over");

    let c_status = c.wait()?;
    let b_status = b.wait()?;
    println!("A: C exited with {c_status}, B exited with {b_status}");
    if c_status.success() && b_status.success() {
        println!("tcp-handoff: OK, the client never noticed");
        Ok(())
    } else {
        Err("handoff failed".into())
    }
}

fn role_b() -> Res<()> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let json = lines.next().ok_or("no state")??;
    let state: TcpConnectionState = serde_json::from_str(&json)?;
    println!("ready");
    std::io::stdout().flush()?;
    let go = lines.next().ok_or("no go")??;
    if go != "go" {
        return Err(format!("expected go, got {go:?}").into());
    }
    let t = Instant::now();
    let restored = restore(&state)?;
    let fd = restored.finish_probe()?;
    eprintln!(
        "B: restored {} -> {} in {:?}, left repair with a window probe",
        state.local,
        state.remote,
        t.elapsed()
    );
    let mut conn = TcpStream::from(fd);
    let echoed = echo(&mut conn, None)?;
    conn.shutdown(Shutdown::Write)?;
    eprintln!("B: echoed {echoed} bytes until C closed");
    Ok(())
}

fn counters(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|i| (i / 8).to_le_bytes()[(i % 8) as usize])
        .collect()
}

fn role_c(addr: &str) -> Res<()> {
    let conn = TcpStream::connect(addr)?;
    let mut writer = conn.try_clone()?;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let mut off = 0u64;
        while off < TOTAL {
            let n = (TOTAL - off).min(32 * 1024) as usize;
            writer.write_all(&counters(off, n))?;
            off += n as u64;
        }
        writer.shutdown(Shutdown::Write)
    });
    let mut reader = conn;
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let want = counters(off, n);
        if let Some(i) = buf[..n].iter().zip(&want).position(|(a, b)| a != b) {
            return Err(format!("C: byte {} of the echo is wrong", off + i as u64).into());
        }
        off += n as u64;
    }
    sender.join().map_err(|_| "sender panicked")??;
    if off != TOTAL {
        return Err(format!("C: echo ended after {off} of {TOTAL} bytes").into());
    }
    eprintln!("C: sent {TOTAL} bytes, got every one back once and in order, no reset");
    Ok(())
}
