//! `cryo`: checkpoint/restore of Linux processes, sockets first.
//!
//! This binary is thin: it parses the command line (one module per verb under `commands/`),
//! sets up logging, calls the engine in `cryo-core` and prints. Errors are reported once,
//! here, as `cryo: error: ...` with their whole chain, and exit with status 1.
//!
//! The process stays single-threaded: restore forks from it, and the demo's workload is
//! this binary re-executed, so no logging thread, no runtime.

mod commands;
mod logging;

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

/// Checkpoint and restore Linux processes, with their files, pipes and sockets.
#[derive(Debug, Parser)]
#[command(name = "cryo", version, propagate_version = true)]
struct Cli {
    /// More logging: -v info, -vv debug, -vvv trace (default: warnings only; RUST_LOG
    /// overrides)
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,

    /// Write logs to this file (created 0600, appended to) instead of stderr (-o as CRIU's:
    /// a relative path is taken in dump's or restore's -D, else in the current directory)
    #[arg(short = 'o', long, value_name = "PATH", global = true)]
    log_file: Option<PathBuf>,

    /// Accepted as CRIU's: cryo reads no configuration file (given twice by zdtm.py's feature
    /// gate)
    #[arg(long, global = true, hide = true, action = clap::ArgAction::Count)]
    no_default_config: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checkpoint process trees into an image directory
    Dump(commands::dump::Args),
    /// Restore processes from an image directory
    Restore(commands::restore::Args),
    /// Receive streamed images, keep them, serve them back and restore them
    Serve(commands::serve::Args),
    /// Move running process trees to another host (`cryo serve` there), connections included
    Migrate(commands::migrate::Args),
    /// Print an image directory as text or JSON
    Show(commands::show::Args),
    /// Remove the network lock a dump left installed
    Unlock(commands::unlock::Args),
    /// Kill what a --leave-running dump left running, silently for its TCP peers
    Kill(commands::kill::Args),
    /// Probe the kernel features cryo needs
    Check(commands::check::Args),
    /// Checkpoint a live workload, kill it, restore it and watch it continue
    Demo(commands::demo::Args),
    /// The demo's workload (started by `cryo demo`)
    #[command(name = cryo_demo::WORKLOAD_COMMAND, hide = true)]
    DemoWorkload(commands::demo::WorkloadArgs),
}

fn main() {
    let cli = Cli::parse_from(criu_verbosity(std::env::args_os()));
    let log_file = cli.log_file.as_deref().map(|log| cli.command.log_path(log));
    let logging = logging::init(cli.verbose, log_file.as_deref());
    let result = logging.and_then(|to_file| {
        run(cli.command).inspect_err(|err| {
            if to_file {
                tracing::error!("{}", report(err));
            }
        })
    });
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("cryo: error: {}", report(&err));
            std::process::exit(1);
        }
    }
}

/// The error and its causes, each said once: a cause whose text the message before already
/// holds (an error that words its source into its own message) is not repeated.
fn report(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

impl Command {
    /// Where log file `log` goes: a relative path in the image directory of a dump or
    /// restore (as CRIU's work directory defaults to -D; a dump's directory is made for it
    /// when it does not exist yet), else as given.
    fn log_path(&self, log: &std::path::Path) -> PathBuf {
        let dir = match self {
            Command::Dump(args) => args.images_dir(),
            Command::Restore(args) => args.images_dir(),
            _ => None,
        };
        match dir {
            Some(dir) if log.is_relative() => {
                if matches!(self, Command::Dump(_)) {
                    let _ = std::fs::DirBuilder::new()
                        .mode(0o700)
                        .recursive(false)
                        .create(dir);
                }
                dir.join(log)
            }
            _ => log.to_path_buf(),
        }
    }
}

/// Runs one subcommand; the `Ok` value is the exit status.
fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Dump(args) => commands::dump::run(args),
        Command::Restore(args) => commands::restore::run(args),
        Command::Migrate(args) => commands::migrate::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Show(args) => commands::show::run(args),
        Command::Unlock(args) => commands::unlock::run(args),
        Command::Kill(args) => commands::kill::run(args),
        Command::Check(args) => commands::check::run(args),
        Command::Demo(args) => commands::demo::run(args),
        Command::DemoWorkload(args) => commands::demo::run_workload(args),
    }
}

/// The command line with CRIU's verbosity levels (`-v0` to `-v4`: nothing, errors,
/// warnings, information, debugging) given as cryo's (`-v` information, `-vv` debugging;
/// warnings by default), so a CRIU command line with `-v4` runs unchanged.
fn criu_verbosity(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        // CRIU's long form: --verbosity=N or --verbosity N.
        let level = match a.to_str() {
            Some("--verbosity") => args.next().and_then(|n| n.to_str().map(str::to_owned)),
            Some(s) => s
                .strip_prefix("--verbosity=")
                // zdtm.py's `check --feature` spells it with one dash.
                .or_else(|| s.strip_prefix("-verbosity="))
                .or_else(|| s.strip_prefix("-v").filter(|n| n.len() == 1))
                .map(str::to_owned),
            None => None,
        };
        match level.as_deref() {
            Some("0" | "1" | "2") => {}
            Some("3") => out.push("-v".into()),
            Some("4") => out.push("-vv".into()),
            Some(n)
                if a.to_str()
                    .is_some_and(|s| s.trim_start_matches('-').starts_with("verbosity")) =>
            {
                // Not a level: left for the parser to refuse.
                out.push(format!("--verbosity={n}").into());
            }
            _ => out.push(a),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// An error that words its source into its own message, as most of the engine's do.
    #[derive(Debug)]
    struct Worded(std::io::Error);

    impl std::fmt::Display for Worded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "stat /x: {}", self.0)
        }
    }

    impl std::error::Error for Worded {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let err = anyhow::Error::new(Worded(io)).context("dump of pid 7");
        assert_eq!(
            report(&err),
            "dump of pid 7: stat /x: No such file or directory (os error 2)"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(report(&plain), "outer: inner");
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn dump_tree_accepts_lists_and_repeats() {
        let cli = Cli::try_parse_from([
            "cryo", "dump", "-t", "1,2", "--tree", "3", "-t=4", "-D", "img", "-R",
        ])
        .unwrap();
        let Command::Dump(args) = cli.command else {
            panic!("not dump: {cli:?}");
        };
        let opts = args.options();
        let pids: Vec<i32> = opts.pids.iter().map(|p| p.as_raw()).collect();
        assert_eq!(pids, [1, 2, 3, 4]);
        assert!(opts.leave_running && !opts.shell_job && !opts.tcp_established);
        assert!(!opts.tcp_skip_in_flight);
        assert_eq!(opts.images_dir, PathBuf::from("img"));
    }

    #[test]
    fn dump_skip_in_flight_reaches_the_options() {
        let argv = [
            "cryo",
            "dump",
            "-t",
            "1",
            "-D",
            "img",
            "--tcp-established",
            "--skip-in-flight",
        ];
        let Command::Dump(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not dump");
        };
        let opts = args.options();
        assert!(opts.tcp_established && opts.tcp_skip_in_flight);
    }

    /// A command line written for CRIU: its flags, some given twice (as zdtm's runner
    /// does), reach the options or are accepted for what cryo always does.
    #[test]
    fn criu_command_lines_parse() {
        let argv = [
            "cryo",
            "dump",
            "-t",
            "1",
            "-D",
            "img",
            "--tcp-established",
            "--file-locks",
            "--link-remap",
            "--ghost-limit",
            "8M",
            "--ghost-fiemap",
            "--manage-cgroups",
            "--tcp-established",
            "--network-lock",
            "nftables",
            "--force-irmap",
            "--irmap-scan-path",
            "/zdtm/static",
            "--timeout",
            "10",
            "--pre-dump-mode",
            "splice",
            "--pidfile",
            "dump.pid",
            "--no-default-config",
            "--verbosity=4",
        ];
        let cli = Cli::try_parse_from(criu_verbosity(argv.map(Into::into))).unwrap();
        assert_eq!(cli.verbose, 2, "--verbosity=4");
        let Command::Dump(args) = cli.command else {
            panic!("not dump");
        };
        let opts = args.options();
        assert!(opts.tcp_established);
        assert_eq!(opts.ghost_limit, Some(8 << 20));
        let argv = [
            "cryo",
            "restore",
            "-D",
            "img",
            "-d",
            "--manage-cgroups=ignore",
            "--tcp-close",
            "--tcp-close",
            "--file-locks",
            "--pidfile",
            "pid",
            "--tcp-established",
            "-j",
            "--ext-unix-sk",
            "--skip-in-flight",
            "--cgroup-yard",
            "/",
            "--cgroup-root",
            "/newroot",
            "--cgroup-root",
            "name=zdtmtst:/prefix",
            "--no-mntns-compat-mode",
        ];
        let Command::Restore(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not restore");
        };
        let opts = args.options();
        assert_eq!(opts.cgroups, cryo_core::CgroupMode::Ignore);
        assert_eq!(opts.cgroup_roots.len(), 2);
        assert_eq!(opts.cgroup_roots[1].controller, "name=zdtmtst");
        for refused in [
            &["cryo", "restore", "-D", "img", "--manage-cgroups=props"][..],
            &["cryo", "restore", "-D", "img", "--network-lock", "skip"],
            &[
                "cryo",
                "dump",
                "-t",
                "1",
                "-D",
                "img",
                "--ghost-limit",
                "1T",
            ],
        ] {
            assert!(
                Cli::try_parse_from(refused).is_err(),
                "{refused:?} accepted"
            );
        }
    }

    #[test]
    fn criu_verbosity_levels_and_log_file() {
        let argv = [
            "cryo", "dump", "-t", "1", "-D", "img", "-v4", "-o", "dump.log",
        ];
        let cli = Cli::try_parse_from(criu_verbosity(argv.map(Into::into))).unwrap();
        assert_eq!(cli.verbose, 2);
        assert_eq!(cli.log_file, Some(PathBuf::from("dump.log")));
        assert_eq!(
            cli.command.log_path(std::path::Path::new("dump.log")),
            PathBuf::from("img/dump.log"),
            "relative to -D, as CRIU's"
        );
        let argv = ["cryo", "restore", "-D", "img", "-v2"];
        let cli = Cli::try_parse_from(criu_verbosity(argv.map(Into::into))).unwrap();
        assert_eq!(cli.verbose, 0);
        // zdtm.py's feature gate.
        let argv = [
            "cryo",
            "check",
            "--no-default-config",
            "--no-default-config",
            "-verbosity=0",
            "--feature",
            "mnt_id",
        ];
        let cli = Cli::try_parse_from(criu_verbosity(argv.map(Into::into))).unwrap();
        assert_eq!(cli.verbose, 0);
    }

    #[test]
    fn dump_needs_pids_and_dir() {
        for argv in [
            &["cryo", "dump", "-D", "img"][..],
            &["cryo", "dump", "-t", "1"],
            &["cryo", "dump", "-t", "0", "-D", "img"],
            &["cryo", "dump", "-t", "x", "-D", "img"],
        ] {
            assert!(Cli::try_parse_from(argv).is_err(), "{argv:?} accepted");
        }
    }

    #[test]
    fn streaming_flags() {
        let ok = |argv: &[&str]| {
            Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?} refused: {e}"))
        };
        ok(&[
            "cryo",
            "dump",
            "-t",
            "1",
            "--to",
            "h:1",
            "--name",
            "n",
            "--psk-file",
            "k",
        ]);
        ok(&[
            "cryo",
            "restore",
            "--from",
            "h:1",
            "--name",
            "n",
            "--psk-file",
            "k",
        ]);
        ok(&[
            "cryo",
            "restore",
            "--from",
            "h:1",
            "--name",
            "n",
            "--on-receiver",
        ]);
        ok(&[
            "cryo",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "-D",
            "r",
            "--once",
        ]);
        for argv in [
            // A name without a receiver, a receiver without a name, both destinations.
            &["cryo", "dump", "-t", "1", "--name", "n"][..],
            &["cryo", "dump", "-t", "1", "--to", "h:1"],
            &[
                "cryo", "dump", "-t", "1", "-D", "d", "--to", "h:1", "--name", "n",
            ],
            &["cryo", "restore", "--from", "h:1"],
            &["cryo", "restore", "-D", "d", "--from", "h:1", "--name", "n"],
            &["cryo", "restore", "-D", "d", "--on-receiver"],
            &["cryo", "serve", "--listen", "127.0.0.1:0"],
        ] {
            assert!(Cli::try_parse_from(argv).is_err(), "{argv:?} accepted");
        }
    }

    #[test]
    fn global_flags_anywhere() {
        let cli = Cli::try_parse_from(["cryo", "check", "-vv", "--json"]).unwrap();
        assert_eq!(cli.verbose, 2);
        let cli =
            Cli::try_parse_from(["cryo", "--log-file", "l", "-v", "show", "-D", "d"]).unwrap();
        assert_eq!(cli.verbose, 1);
        assert_eq!(cli.log_file, Some(PathBuf::from("l")));
    }

    #[test]
    fn action_script_on_dump_and_restore() {
        let cli = Cli::try_parse_from([
            "cryo",
            "dump",
            "-t",
            "1",
            "-D",
            "img",
            "--action-script",
            "/x/hook",
        ])
        .unwrap();
        let Command::Dump(args) = cli.command else {
            panic!("not dump");
        };
        let script = args.options().action_script.expect("a script");
        assert_eq!(script.path, PathBuf::from("/x/hook"));
        assert_eq!(script.timeout, Some(cryo_core::DEFAULT_HOOK_TIMEOUT));
        let cli = Cli::try_parse_from([
            "cryo",
            "restore",
            "-D",
            "img",
            "--action-script",
            "hook",
            "--action-script-timeout",
            "0",
        ])
        .unwrap();
        let Command::Restore(args) = cli.command else {
            panic!("not restore");
        };
        let script = args.options().action_script.expect("a script");
        assert!(script.path.is_absolute(), "{script:?}");
        assert_eq!(script.timeout, None);
        // A timeout without a script is a mistake.
        assert!(Cli::try_parse_from([
            "cryo",
            "restore",
            "-D",
            "img",
            "--action-script-timeout",
            "5"
        ])
        .is_err());
    }

    #[test]
    fn restore_detach_spellings() {
        for flag in ["--detach", "-d", "--restore-detached"] {
            let cli = Cli::try_parse_from(["cryo", "restore", "-D", "img", flag]).unwrap();
            let Command::Restore(args) = cli.command else {
                panic!("not restore");
            };
            assert!(args.options().detach, "{flag}");
        }
    }
}
