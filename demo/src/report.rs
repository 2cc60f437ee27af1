//! What the demo concludes and the figures it prints: whether the restored workload went on
//! exactly where it stopped, and the sizes and times of the checkpoint.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::ticks::{Tick, INPUT, LINE_LEN};

/// Checks that the ticks after the restore continue `last` exactly: counter, input line and
/// offset, pipe chunk. Returns a one-line summary.
pub(crate) fn verify(last: &Tick, after: &[Tick]) -> anyhow::Result<String> {
    let Some(first) = after.first() else {
        bail!("no tick after the restore");
    };
    let mut problems = Vec::new();
    if first.n != last.n + 1 {
        problems.push(format!(
            "the counter went from {} to {} (expected {})",
            last.n,
            first.n,
            last.n + 1
        ));
    }
    match (last.file_line(), first.file_line()) {
        (Some(a), Some(b)) if b == a + 1 => {}
        _ => problems.push(format!(
            "the input file went from {:?} to {:?} (expected the next line)",
            last.file, first.file
        )),
    }
    if first.offset != last.offset + LINE_LEN {
        problems.push(format!(
            "the input offset went from {} to {} (expected {})",
            last.offset,
            first.offset,
            last.offset + LINE_LEN
        ));
    }
    match (last.pipe_chunk(), first.pipe_chunk()) {
        (Some(a), Some(b)) if b == a + 1 => {}
        _ => problems.push(format!(
            "the pipe went from {:?} to {:?} (expected the next chunk)",
            last.pipe, first.pipe
        )),
    }
    for pair in after.windows(2) {
        if pair[1].n != pair[0].n + 1 {
            problems.push(format!(
                "after the restore the counter jumped from {} to {}",
                pair[0].n, pair[1].n
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "the restored workload did not continue where it stopped: {}",
            problems.join("; ")
        );
    }
    Ok(format!(
        "the counter went on {} -> {}, {} went on at line {} (offset {} -> {}), the pipe at {}",
        last.n,
        first.n,
        INPUT,
        first.file_line().unwrap_or_default(),
        last.offset,
        first.offset,
        first.pipe
    ))
}

/// Total size and number of the files in `dir`.
pub(crate) fn dir_size(dir: &Path) -> anyhow::Result<(u64, usize)> {
    let mut total = (0, 0);
    for entry in fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let meta = entry
            .and_then(|e| e.metadata())
            .with_context(|| format!("list {}", dir.display()))?;
        total.0 += meta.len();
        total.1 += 1;
    }
    Ok(total)
}

/// `1.5 MiB`.
pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `12.3 ms`.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticks::{input_line, pipe_chunk};

    fn tick(n: u64) -> Tick {
        let line = 600 + n;
        Tick {
            n,
            file: input_line(line).trim_end().to_string(),
            offset: line * LINE_LEN,
            pipe: pipe_chunk(n),
        }
    }

    #[test]
    fn continuing_ticks_pass() {
        let verdict = verify(&tick(7), &[tick(8), tick(9)]).unwrap();
        assert!(verdict.contains("7 -> 8"), "{verdict}");
    }

    #[test]
    fn restarted_counter_fails() {
        let err = verify(&tick(7), &[tick(1), tick(2)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("from 7 to 1"), "{err}");
    }

    #[test]
    fn lost_pipe_and_rewound_file_fail() {
        let mut t = tick(8);
        t.pipe = "EMPTY".into();
        t.offset = 0;
        t.file = input_line(1).trim_end().to_string();
        let err = verify(&tick(7), &[t]).unwrap_err().to_string();
        assert!(
            err.contains("pipe") && err.contains("input file") && err.contains("offset"),
            "{err}"
        );
    }

    #[test]
    fn nothing_after_fails() {
        assert!(verify(&tick(7), &[]).is_err());
    }
}
