//! This demo as the workload's TCP client: it reads the workload's tick lines without
//! blocking, checks each follows the one before, answers them, and in the end checks the
//! workload got every line it sent.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};

use anyhow::{bail, Context as _};

use crate::ticks::TcpTick;
use crate::TIMEOUT;

/// A line the workload sent on the connection, and this demo's answer to it, if any.
#[derive(Debug, Clone)]
pub(crate) struct Exchange {
    pub(crate) tick: TcpTick,
    pub(crate) answer: Option<String>,
}

/// This demo as the workload's TCP client: a non-blocking socket read with poll.
pub(crate) struct Client {
    pub(crate) stream: TcpStream,
    pub(crate) local: SocketAddr,
    pub(crate) peer: SocketAddr,
    /// Bytes of an unfinished line.
    partial: Vec<u8>,
    /// Every line received, in order, with the answer sent.
    pub(crate) lines: Vec<Exchange>,
    /// Tick lines up to this one are answered.
    pub(crate) answer_until: u64,
    /// Bytes received and sent.
    pub(crate) bytes_in: usize,
    pub(crate) bytes_out: usize,
    /// `(bytes_in, bytes_out)` when the checkpoint started.
    pub(crate) at_checkpoint: (usize, usize),
    /// Lines sent, and the latest.
    sent: u64,
    last_sent: String,
}

impl Client {
    pub(crate) fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
            .with_context(|| format!("connect to the workload at {addr}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        stream.set_nonblocking(true).context("O_NONBLOCK")?;
        let local = stream.local_addr().context("the client's address")?;
        Ok(Self {
            stream,
            local,
            peer: addr,
            partial: Vec::new(),
            lines: Vec::new(),
            answer_until: u64::MAX,
            bytes_in: 0,
            bytes_out: 0,
            at_checkpoint: (0, 0),
            sent: 0,
            last_sent: String::new(),
        })
    }

    /// The last tick received on the connection (0 if none).
    pub(crate) fn last_n(&self) -> u64 {
        self.lines.last().map_or(0, |l| l.tick.n)
    }

    /// Reads whatever has arrived, without blocking; checks every line follows the one before
    /// and answers it. An EOF or an error (a reset) fails.
    pub(crate) fn pump(&mut self) -> anyhow::Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => bail!(
                    "the workload closed the TCP connection (EOF) after {} tick lines",
                    self.last_n()
                ),
                Ok(len) => {
                    self.bytes_in += len;
                    self.partial.extend_from_slice(&buf[..len]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(e).context(format!(
                        "the TCP connection failed after {} tick lines",
                        self.last_n()
                    ))
                }
            }
            while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.partial.drain(..=end).collect();
                let text = String::from_utf8_lossy(&raw);
                let tick = TcpTick::parse(&text)
                    .with_context(|| format!("unexpected line on the TCP connection: {text:?}"))?;
                let want = self.last_n() + 1;
                if tick.n != want {
                    let what = if tick.n < want { "a repeat" } else { "a gap" };
                    bail!(
                        "the TCP tick lines went from tick={} to tick={} ({what}; expected tick={want})",
                        self.last_n(),
                        tick.n
                    );
                }
                let answer = (tick.n <= self.answer_until)
                    .then(|| self.answer(tick.n))
                    .transpose()?;
                self.lines.push(Exchange { tick, answer });
            }
        }
    }

    /// Sends this demo's line for tick `n`.
    fn answer(&mut self, n: u64) -> anyhow::Result<String> {
        self.send(format!("ack={n}"))
    }

    /// Sends `line` (and a newline).
    pub(crate) fn send(&mut self, line: String) -> anyhow::Result<String> {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .with_context(|| format!("send {line:?} on the TCP connection"))?;
        self.bytes_out += line.len() + 1;
        self.sent += 1;
        self.last_sent.clone_from(&line);
        Ok(line)
    }

    /// Checks, once the answers stopped, that the workload got every line sent; says what
    /// went over the connection before and after the checkpoint `last`.
    pub(crate) fn verify(&self) -> anyhow::Result<String> {
        let Some(end) = self.lines.last() else {
            bail!("no line on the TCP connection");
        };
        if end.tick.got != self.sent || end.tick.last != self.last_sent {
            bail!(
                "the workload did not get every line this demo sent on the TCP connection: it \
                 counts {} (latest {:?}), this demo sent {} (latest {:?})",
                end.tick.got,
                end.tick.last,
                self.sent,
                self.last_sent
            );
        }
        let (before_in, before_out) = self.at_checkpoint;
        Ok(format!(
            "the TCP connection {} -> {} went on, never reset or closed: tick lines 1..={} \
             without a gap or a repeat, and the workload got all {} lines this demo sent (latest \
             {:?}); bytes received/sent by this demo: {before_in}/{before_out} before the \
             checkpoint, {}/{} since",
            self.local,
            self.peer,
            end.tick.n,
            self.sent,
            self.last_sent,
            self.bytes_in - before_in,
            self.bytes_out - before_out,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// A client connected to a listener of this test, which writes the workload's side.
    fn client_and_server() -> (Client, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = Client::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    /// Pumps until `n` tick lines arrived or the pump fails.
    fn pump_until(client: &mut Client, n: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        while client.last_n() < n {
            client.pump()?;
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn tcp_tick(n: u64, got: u64) -> String {
        TcpTick {
            n,
            got,
            last: if got == 0 {
                String::new()
            } else {
                format!("ack={got}")
            },
        }
        .line()
    }

    #[test]
    fn tcp_ticks_are_answered_and_counted() {
        let (mut client, mut server) = client_and_server();
        client.answer_until = 2;
        server
            .write_all((tcp_tick(1, 0) + &tcp_tick(2, 1)).as_bytes())
            .unwrap();
        pump_until(&mut client, 2).unwrap();
        server.write_all(tcp_tick(3, 2).as_bytes()).unwrap();
        pump_until(&mut client, 3).unwrap();
        let mut got = [0u8; 12];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ack=1\nack=2\n");
        assert!(client.verify().unwrap().contains("got all 2 lines"));
    }

    #[test]
    fn tcp_gap_repeat_and_eof_fail() {
        let (mut client, mut server) = client_and_server();
        server
            .write_all((tcp_tick(1, 0) + &tcp_tick(3, 1)).as_bytes())
            .unwrap();
        let err = format!("{:#}", pump_until(&mut client, 3).unwrap_err());
        assert!(err.contains("a gap"), "{err}");

        let (mut client, mut server) = client_and_server();
        server
            .write_all((tcp_tick(1, 0) + &tcp_tick(1, 0)).as_bytes())
            .unwrap();
        let err = format!("{:#}", pump_until(&mut client, 2).unwrap_err());
        assert!(err.contains("a repeat"), "{err}");

        let (mut client, server) = client_and_server();
        drop(server);
        let err = format!("{:#}", pump_until(&mut client, 1).unwrap_err());
        assert!(err.contains("EOF"), "{err}");
    }

    #[test]
    fn tcp_lost_line_fails() {
        let (mut client, mut server) = client_and_server();
        client.answer_until = 1;
        server.write_all(tcp_tick(1, 0).as_bytes()).unwrap();
        pump_until(&mut client, 1).unwrap();
        // The workload says it got nothing.
        server.write_all(tcp_tick(2, 0).as_bytes()).unwrap();
        pump_until(&mut client, 2).unwrap();
        let err = client.verify().unwrap_err().to_string();
        assert!(err.contains("did not get every line"), "{err}");
    }
}
