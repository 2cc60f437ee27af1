//! The lines the demo and its workload agree on: the workload's log line per tick, its line
//! per tick on the TCP connection, the fixed-width input file and pipe chunks, and the
//! names of its files.
//!
//! ```text
//! workload.log   tick=7 file="input line 0607" offset=9712 pipe="pipe-00007"
//! TCP            tick=7 got=6 last="ack=6"
//! ```

/// The log file in the workload's directory.
pub const LOG: &str = "workload.log";
/// The regular file it reads one line of per tick.
pub const INPUT: &str = "input.txt";
/// Lines in the input file; the first half is read before the first tick.
pub const INPUT_LINES: u64 = 1200;
/// Every input line has this length, so a line number and an offset say the same thing.
pub const LINE_LEN: u64 = 16;
/// Chunks queued in the pipe before the first tick.
pub const PIPE_CHUNKS: u64 = 600;
/// Every chunk has this length.
pub const CHUNK_LEN: usize = 10;
/// What the workload writes on its original stdout once ready.
pub const READY: &str = "ready";
/// What the workload writes on its original stdout before its address, first thing.
pub const LISTENING: &str = "listening ";

/// Line `n` (from 1) of the input file.
pub fn input_line(n: u64) -> String {
    format!("input line {n:04}\n")
}

/// Chunk `n` (from 1) of the pipe.
pub fn pipe_chunk(n: u64) -> String {
    format!("pipe-{n:05}")
}

/// One tick as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    /// The counter.
    pub n: u64,
    /// The input line read this tick, without its newline, or `EOF`.
    pub file: String,
    /// The input file's offset after the read.
    pub offset: u64,
    /// The pipe chunk read this tick, or `EMPTY`.
    pub pipe: String,
}

impl Tick {
    /// The log line, with its newline.
    pub fn line(&self) -> String {
        format!(
            "tick={} file=\"{}\" offset={} pipe=\"{}\"\n",
            self.n, self.file, self.offset, self.pipe
        )
    }

    /// Parses a log line written by [`Tick::line`]; other lines give `None`.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.trim_end().strip_prefix("tick=")?;
        let (n, rest) = rest.split_once(" file=\"")?;
        let (file, rest) = rest.split_once("\" offset=")?;
        let (offset, rest) = rest.split_once(" pipe=\"")?;
        let pipe = rest.strip_suffix('"')?;
        Some(Self {
            n: n.parse().ok()?,
            file: file.to_string(),
            offset: offset.parse().ok()?,
            pipe: pipe.to_string(),
        })
    }

    /// The number of the input line read, if one was.
    pub fn file_line(&self) -> Option<u64> {
        self.file.strip_prefix("input line ")?.parse().ok()
    }

    /// The number of the pipe chunk read, if one was.
    pub fn pipe_chunk(&self) -> Option<u64> {
        self.pipe.strip_prefix("pipe-")?.parse().ok()
    }
}

/// What the workload sends its TCP client every tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpTick {
    /// The tick's counter.
    pub n: u64,
    /// How many lines the client had sent, as far as the workload has read.
    pub got: u64,
    /// The latest line the client sent (empty if none yet).
    pub last: String,
}

impl TcpTick {
    /// The line sent, with its newline.
    pub fn line(&self) -> String {
        format!("tick={} got={} last=\"{}\"\n", self.n, self.got, self.last)
    }

    /// Parses a line written by [`TcpTick::line`].
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.trim_end().strip_prefix("tick=")?;
        let (n, rest) = rest.split_once(" got=")?;
        let (got, rest) = rest.split_once(" last=\"")?;
        let last = rest.strip_suffix('"')?;
        Some(Self {
            n: n.parse().ok()?,
            got: got.parse().ok()?,
            last: last.to_string(),
        })
    }
}

/// Every tick in a log's text, in order.
pub fn ticks(log: &str) -> Vec<Tick> {
    log.lines().filter_map(Tick::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_widths() {
        assert_eq!(input_line(1).len() as u64, LINE_LEN);
        assert_eq!(input_line(INPUT_LINES).len() as u64, LINE_LEN);
        assert_eq!(pipe_chunk(1).len(), CHUNK_LEN);
        assert_eq!(pipe_chunk(PIPE_CHUNKS).len(), CHUNK_LEN);
    }

    #[test]
    fn tick_round_trip() {
        let tick = Tick {
            n: 7,
            file: "input line 0607".into(),
            offset: 9712,
            pipe: pipe_chunk(7),
        };
        assert_eq!(
            tick.line(),
            "tick=7 file=\"input line 0607\" offset=9712 pipe=\"pipe-00007\"\n"
        );
        assert_eq!(Tick::parse(&tick.line()), Some(tick.clone()));
        assert_eq!(tick.file_line(), Some(607));
        assert_eq!(tick.pipe_chunk(), Some(7));
        let log = format!("workload pid=1 started\n{}garbage\n", tick.line());
        assert_eq!(ticks(&log), [tick]);
    }

    #[test]
    fn tcp_tick_round_trip() {
        let tick = TcpTick {
            n: 7,
            got: 6,
            last: "ack=6".into(),
        };
        assert_eq!(tick.line(), "tick=7 got=6 last=\"ack=6\"\n");
        assert_eq!(TcpTick::parse(&tick.line()), Some(tick));
        assert_eq!(
            TcpTick::parse("tick=1 file=\"x\" offset=1 pipe=\"y\""),
            None
        );
    }

    #[test]
    fn eof_and_empty_parse() {
        let t = Tick::parse("tick=900 file=\"EOF\" offset=19200 pipe=\"EMPTY\"").unwrap();
        assert_eq!((t.file_line(), t.pipe_chunk()), (None, None));
    }
}
