//! The demo's four steps, printed as they happen: start the workload and be its TCP client,
//! checkpoint it, restore it, and check that it went on where it stopped (see the crate doc).

use std::path::Path;

use anyhow::{bail, Context as _};

use crate::engine::Engine;
use crate::process::{read_log, Workload};
use crate::report::{dir_size, mib, ms, verify};
use crate::ticks::{ticks, INPUT, LOG};
use crate::WORKLOAD_COMMAND;

/// Ticks the workload logs before the dump.
const TICKS_BEFORE: u64 = 5;
/// Ticks to see after the restore.
const TICKS_AFTER: usize = 5;
/// What this demo sends on the connection while the workload is checkpointed.
const MEANWHILE: &str = "sent-while-checkpointed";
/// Lines of the connection shown before the checkpoint.
const TCP_SHOWN_BEFORE: usize = 3;

/// Runs the four steps in `dir`, printing each as it happens.
pub(crate) fn demo(dir: &Path, engine: Engine) -> anyhow::Result<()> {
    let log_path = dir.join(LOG);
    let log = || read_log(&log_path);

    // 1. The workload, and the demo as its TCP client.
    let exe = std::env::current_exe().context("find the cryo binary")?;
    let (mut task, mut client) = Workload::start(&exe, dir, TICKS_BEFORE)?;
    let pid = task.pid;
    println!();
    println!(
        "1. started the workload: pid {pid}, `{} {WORKLOAD_COMMAND} {}`",
        exe.display(),
        dir.display()
    );
    println!(
        "   in a session of its own with no terminal, it ticks every 100 ms: it counts, reads the \
         next line of {} (opened, already read halfway), drains one chunk of a pipe it holds \
         both ends of, and sends a line to its TCP client",
        INPUT
    );
    println!(
        "   this demo is that client: connected {} -> {}, it answers every tick line with one \
         of its own",
        client.local, client.peer
    );
    // Every tick line up to the one the workload was ready at, each answered.
    task.wait_ticks(&mut client, &log_path, 0, TICKS_BEFORE)
        .context("before the checkpoint")?;
    let before = log()?;
    for line in before.lines() {
        println!("   | {line}");
    }

    // 2. Checkpoint, in kill mode, with the established connection.
    client.at_checkpoint = (client.bytes_in, client.bytes_out);
    let images = dir.join("img");
    let summary = engine
        .dump(pid, &images)
        .with_context(|| format!("checkpoint of the workload (pid {pid}) failed"))?;
    if engine == Engine::Cryo {
        task.wait_gone()
            .context("after the checkpoint the workload should be gone")?;
    }
    let (size, files) = dir_size(&images)?;
    println!();
    println!(
        "2. checkpointed pid {pid} into {}: {files} files, {} ({} of pages), frozen {}, total {}",
        images.display(),
        mib(size),
        mib(summary.pages_bytes),
        ms(summary.frozen),
        ms(summary.total)
    );
    if engine == Engine::Cryo {
        println!(
            "   the dump killed it: pid {pid} is gone; its end of the connection is in the images"
        );
    } else {
        println!("   rehearsal: pid {pid} is stopped, not gone");
    }
    let dumped = log()?;
    let before_ticks = ticks(&dumped);
    let last = before_ticks
        .last()
        .cloned()
        .context("the workload's log has no tick")?;
    println!("   its last tick: {}", last.line().trim_end());
    // The client end is still open and unreset while the workload is gone, and a line sent
    // now waits for the restored workload (the network lock drops it, TCP sends it again).
    client
        .pump()
        .context("the TCP connection while the workload was checkpointed")?;
    let meanwhile = client
        .send(MEANWHILE.to_string())
        .context("while the workload was checkpointed")?;
    println!("   sent it {meanwhile:?} on the connection meanwhile");

    // 3. Restore, detached: the restored process is our child again.
    let restored = engine
        .restore(pid, &images)
        .with_context(|| format!("restore of the workload from {} failed", images.display()))?;
    // Every restored process is killed on the way out, whatever happens next. The
    // rehearsal's workload is the same process, still in `task`.
    let mut others = Vec::new();
    if engine == Engine::Cryo {
        for &root in &restored.roots {
            if root == pid {
                task = Workload::adopt(root);
            } else {
                others.push(Workload::adopt(root));
            }
        }
    }
    if restored.roots != [pid] {
        bail!(
            "restore brought back pid(s) {}, expected {pid}",
            restored
                .roots
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    println!();
    println!("3. restored pid {pid} in {}", ms(restored.elapsed));
    // A few more ticks, all answered but the last: the one after shows the workload's count.
    let answer_until = last.n + TICKS_AFTER as u64;
    client.answer_until = answer_until;
    let after = task
        .wait_ticks(
            &mut client,
            &log_path,
            before_ticks.len() + TICKS_AFTER,
            answer_until + 1,
        )
        .context("after the restore")?;
    let new_ticks = &after[before_ticks.len()..][..TICKS_AFTER];
    println!("   its log around the checkpoint:");
    println!("   | {}", last.line().trim_end());
    println!("   | ---- checkpoint, kill, restore ----");
    for tick in new_ticks {
        println!("   | {}", tick.line().trim_end());
    }
    println!(
        "   the TCP connection around the checkpoint (<- from the workload, -> from this demo):"
    );
    let shown_from = client
        .lines
        .iter()
        .position(|l| l.tick.n + TCP_SHOWN_BEFORE as u64 > last.n)
        .unwrap_or(0);
    for line in &client.lines[shown_from..] {
        if line.tick.n == last.n + 1 {
            println!("   | ---- checkpoint, kill, restore: same connection, never closed ----");
            println!("   | {:<33} -> {MEANWHILE}", "");
        }
        let tick = line.tick.line();
        match &line.answer {
            Some(answer) => println!("   | <- {:<30} -> {answer}", tick.trim_end()),
            None => println!("   | <- {}", tick.trim_end()),
        }
    }

    // 4. It went on where it stopped.
    let verdict = verify(&last, new_ticks)?;
    let tcp_verdict = client.verify()?;
    task.stop();
    println!();
    println!("4. ok: {verdict}");
    println!("   {tcp_verdict}");
    println!("   stopped the restored workload");
    Ok(())
}
