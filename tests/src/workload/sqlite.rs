//! `sqlite DB`: a python3 child holding a sqlite3 connection to DB, driven one SQL statement
//! per command over two pipes (the child is part of the dumped tree). Its locks on the
//! database are what the tests check.
//!
//! ```text
//! sqlite DB            sql STATEMENT -> ok <rows, as python's repr> | err <message>
//! ```

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use super::{failed, unknown, Mode};

/// The child: one statement per line, one reply per line; no busy timeout, autocommit unless
/// a statement opens a transaction.
const SCRIPT: &str = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
for line in sys.stdin:
    try:
        rows = db.execute(line.strip()).fetchall()
        print("ok " + repr(rows), flush=True)
    except Exception as e:
        print("err " + str(e), flush=True)
"#;

struct Sqlite {
    // Kept so its pipes stay open; it exits at the end of its input.
    _child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

/// `sqlite DB`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let db = args.first().ok_or("sqlite mode needs a DB path")?;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT, db])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(failed("python3"))?;
    let input = child.stdin.take().ok_or("no stdin")?;
    let output = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    Ok(Box::new(Sqlite {
        _child: child,
        input,
        output,
    }))
}

impl Mode for Sqlite {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match verb {
            "sql" => {
                writeln!(self.input, "{}", args.join(" ")).map_err(|e| e.to_string())?;
                let mut reply = String::new();
                self.output
                    .read_line(&mut reply)
                    .map_err(|e| e.to_string())?;
                Ok(reply.trim_end().to_string())
            }
            _ => unknown(verb),
        }
    }
}
