//! Interim command line (replaced by the cli branch).
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let dir = PathBuf::from(get("-D").unwrap_or_default());
    match args.get(1).map(String::as_str) {
        Some("dump") => {
            let pids = get("-t")
                .unwrap_or_default()
                .split(',')
                .map(|p| p.parse().map(cryo_core::Pid::from_raw))
                .collect::<Result<Vec<_>, _>>()?;
            let s = cryo_core::dump::dump(&cryo_core::dump::DumpOptions {
                pids,
                images_dir: dir,
                leave_running: has("--leave-running"),
                shell_job: has("--shell-job"),
                tcp_established: has("--tcp-established"),
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "dumped {:?}: {} bytes, frozen {:?}, total {:?}",
                s.pids, s.pages_bytes, s.frozen, s.total
            );
        }
        Some("restore") => {
            let r = cryo_core::restore::restore(&cryo_core::restore::RestoreOptions {
                images_dir: dir,
                detach: has("--detach"),
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!("restored {:?} in {:?}", r.roots, r.elapsed);
            if has("--detach") {
                println!("{}", r.roots[0]);
            } else {
                let code = r.wait().map_err(|e| anyhow::anyhow!("{e}"))?;
                std::process::exit(code);
            }
        }
        _ => anyhow::bail!("usage"),
    }
    Ok(())
}
