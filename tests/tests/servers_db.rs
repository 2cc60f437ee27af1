//! A database server across dump and restore: PostgreSQL from Debian's packages, run as the
//! `postgres` user, with clients connected over TCP from outside the dumped tree, one of
//! them inside an open transaction, one with a query in flight. The postmaster is the tree's
//! root; its children (checkpointer, background writer, walwriter, autovacuum launcher,
//! logical replication launcher, a logger, one backend per client) share its SysV segment,
//! its shared anonymous mapping (or a second SysV segment), the dynamic segments under
//! /dev/shm (or SysV), the postmaster-death pipe, and each waits on a signalfd in an epoll.
//!
//! Needs the engine (`cargo build -p cryo`) and postgresql (`/usr/lib/postgresql/*/bin`).

use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use cryo_tests::servers_pg::{PgClient, PgServer};
use cryo_tests::{cryo_bin, run_cryo, CryoOutput};

fn cryo(server: &PgServer, tag: &str, args: &[&OsStr]) -> CryoOutput {
    run_cryo(server.dir(), tag, args)
}

fn rows_of(c: &mut PgClient, sql: &str) -> Vec<String> {
    c.ok(sql)
        .rows
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|v| v.unwrap_or_default())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

/// The clients of a scenario, connected before the dump.
struct Clients {
    /// Inside an open transaction that inserted row 2.
    tx: PgClient,
    /// Idle between queries.
    idle: PgClient,
    /// Its query (`pg_sleep`) runs while the server is frozen.
    sleeper: PgClient,
}

fn connect_clients(server: &PgServer) -> Clients {
    let mut tx = server.connect();
    let mut idle = server.connect();
    let sleeper = server.connect();
    tx.ok("CREATE TABLE t (id int PRIMARY KEY, v text)");
    tx.ok("INSERT INTO t VALUES (1, 'before the dump')");
    let begun = tx.ok("BEGIN; INSERT INTO t VALUES (2, 'in the open transaction')");
    assert_eq!(begun.status, 'T', "the client should be in a transaction");
    assert_eq!(
        idle.ok("SELECT count(*) FROM t").value(),
        "1",
        "the open transaction's row is not visible yet"
    );
    Clients { tx, idle, sleeper }
}

fn dump(server: &PgServer, img: &Path, extra: &[&str]) -> (CryoOutput, Duration) {
    let pid = server.pid().to_string();
    let mut args: Vec<&OsStr> = vec![
        "dump".as_ref(),
        "-t".as_ref(),
        pid.as_ref(),
        "-D".as_ref(),
        img.as_os_str(),
        "--tcp-established".as_ref(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let started = Instant::now();
    let out = cryo(server, "dump", &args);
    let took = started.elapsed();
    assert!(
        out.success(),
        "dump failed:\n{out}\n--- server log\n{}",
        server.log()
    );
    (out, took)
}

/// After the dump (and the restore, if any): the transaction commits, the other clients go
/// on on their connections, new connections and a checkpoint work, the unix socket answers,
/// and a fast shutdown is clean. The sleeper's query was answered already.
fn clients_go_on(server: &mut PgServer, clients: Clients, before: &[i32]) {
    let Clients {
        mut tx,
        mut idle,
        sleeper,
    } = clients;
    // The same processes, children of the same postmaster (others may have come since: a
    // backend of a client just gone, an autovacuum worker).
    let now = server.processes();
    let missing: Vec<&i32> = before.iter().filter(|p| !now.contains(p)).collect();
    assert!(
        missing.is_empty() && now[0] == before[0],
        "processes {missing:?} of {before:?} are no longer the postmaster and its children: {now:?}"
    );
    let (tx_pid, idle_pid, tx_addr) = (tx.backend_pid, idle.backend_pid, tx.local_addr());
    let committed = tx
        .query("COMMIT")
        .unwrap_or_else(|e| panic!("{e}\n--- server log\n{}", server.log()));
    assert_eq!(committed.tags, ["COMMIT"], "{committed:?}");
    assert_eq!(committed.status, 'I');
    assert_eq!(tx.local_addr(), tx_addr);
    assert_eq!(tx.ok("SELECT pg_backend_pid()").value(), tx_pid.to_string());
    assert_eq!(
        idle.ok("SELECT pg_backend_pid()").value(),
        idle_pid.to_string(),
        "the idle client should talk to the same backend"
    );
    assert_eq!(
        rows_of(&mut idle, "SELECT id, v FROM t ORDER BY id"),
        ["1|before the dump", "2|in the open transaction"]
    );
    // A new connection (a backend forked by the postmaster now) writes, and a checkpoint
    // runs through the checkpointer, woken by the postmaster's signal on its latch.
    let mut fresh = server.connect();
    fresh.ok("INSERT INTO t VALUES (3, 'after the dump')");
    fresh.ok("CHECKPOINT");
    assert_eq!(idle.ok("SELECT count(*) FROM t").value(), "3");
    assert_eq!(
        tx.ok("SELECT v FROM t WHERE id = 3").value(),
        "after the dump"
    );
    // The unix socket listener in the socket directory answers too.
    let port = server.port().to_string();
    let ready = server.run_as_postgres(
        "pg_isready",
        &[
            "-h".as_ref(),
            server.dir().as_os_str(),
            "-p".as_ref(),
            port.as_ref(),
            "-U".as_ref(),
            "postgres".as_ref(),
            "-d".as_ref(),
            "postgres".as_ref(),
        ],
    );
    assert!(
        ready.status.success(),
        "pg_isready over the unix socket: {}\n{}",
        ready.status,
        String::from_utf8_lossy(&ready.stdout)
    );
    for client in [tx, idle, sleeper, fresh] {
        client.close();
    }

    server.stop_fast();
    let unexpected = server.unexpected_log_lines(&[]);
    assert!(
        unexpected.is_empty(),
        "unexpected lines in the server log:\n{}\n--- server log\n{}",
        unexpected.join("\n"),
        server.log()
    );
    assert!(
        !server.data_dir().join("postmaster.pid").exists(),
        "a clean shutdown removes the pid file"
    );
}

/// The query in flight of the sleeper, sent before a dump.
const SLEEP: &str = "SELECT pg_sleep(1), 'slept'";

#[track_caller]
fn sleeper_wakes(server: &PgServer, sleeper: &mut PgClient) {
    let slept = sleeper
        .receive()
        .unwrap_or_else(|e| panic!("the query in flight: {e}\n--- server log\n{}", server.log()));
    assert_eq!(slept.rows, [[Some(String::new()), Some("slept".into())]]);
}

/// A client over the unix socket sees the listener under the name it was bound to (its
/// peer's name is the listener's: getsockname of the server, getpeername of the client).
#[track_caller]
fn unix_listener_keeps_its_name(server: &PgServer) {
    let path = server.socket_path();
    let mut client = PgClient::connect_unix(&path)
        .unwrap_or_else(|e| panic!("{e}\n--- server log\n{}", server.log()));
    assert_eq!(
        client.unix_peer().as_deref(),
        Some(path.as_path()),
        "the listener's name (the client's peer name)"
    );
    assert_eq!(
        client.ok("SELECT 'over the unix socket'").value(),
        "over the unix socket"
    );
    client.close();
}

/// `cycles` times: dump (killing the tree) with clients connected and a query in flight, a
/// query asked while the server is down, restore detached. Then [`clients_go_on`].
fn dump_and_restore(settings: &[&str], cycles: usize) {
    dump_and_restore_checking(settings, cycles, |_| {});
}

/// [`dump_and_restore`], with `check` of the server before the first dump and after each
/// restore.
fn dump_and_restore_checking(settings: &[&str], cycles: usize, check: impl Fn(&PgServer)) {
    cryo_bin();
    let mut server = PgServer::start_with(settings);
    check(&server);
    let mut clients = connect_clients(&server);
    let before = server.processes();
    for c in [&clients.tx, &clients.idle, &clients.sleeper] {
        assert!(
            before.contains(&c.backend_pid),
            "backend {} should be a child of the postmaster: {before:?}",
            c.backend_pid
        );
    }
    unix_listener_keeps_its_name(&server);
    for cycle in 1..=cycles {
        clients
            .sleeper
            .send(SLEEP)
            .expect("send the query in flight");
        let img = server.dir().join(format!("img-{cycle}"));
        let (_, dump_time) = dump(&server, &img, &[]);
        if let Some(status) = server.reap_killed(&before[1..]) {
            assert!(
                status.signal().is_some(),
                "the dump should have killed the postmaster: {status}"
            );
        }
        // Reaped by the postmaster before it died: no zombie of init holds a pid the restore
        // needs.
        let left: Vec<i32> = before[1..]
            .iter()
            .copied()
            .filter(|&p| cryo_tests::pid_exists(p))
            .collect();
        assert!(
            left.is_empty(),
            "children {left:?} outlived the dump (zombies?)"
        );
        // Asked while nothing runs: the network lock holds it until the restored backend
        // reads it.
        clients
            .idle
            .send("SELECT 'asked while the server was down'")
            .expect("send while the server is down");

        let started = Instant::now();
        let restore = cryo(
            &server,
            &format!("restore-{cycle}"),
            &[
                "restore".as_ref(),
                "-D".as_ref(),
                img.as_os_str(),
                "--detach".as_ref(),
            ],
        );
        let restore_time = started.elapsed();
        assert!(
            restore.success(),
            "restore {cycle} failed:\n{restore}\n--- server log\n{}",
            server.log()
        );
        eprintln!(
            "postgres tree of {} processes ({settings:?}), cycle {cycle}: dump {dump_time:?}, \
             restore {restore_time:?}",
            before.len()
        );
        check(&server);
        sleeper_wakes(&server, &mut clients.sleeper);
        let asked = clients
            .idle
            .receive()
            .unwrap_or_else(|e| panic!("the query asked while down: {e}\n{}", server.log()));
        assert_eq!(asked.value(), "asked while the server was down");
        unix_listener_keeps_its_name(&server);
    }
    clients_go_on(&mut server, clients, &before);
}

#[test]
fn postgres_with_a_client_in_a_transaction_survives_dump_and_restore() {
    dump_and_restore(&[], 2);
}

/// The main shared memory and the dynamic segments as SysV segments (attached by every
/// process: the segments are reattached, not copied), and a logging collector (a child
/// every other process writes to through one pipe), as RHEL's packages configure it.
#[test]
fn postgres_on_sysv_shared_memory_with_a_logging_collector_survives_dump_and_restore() {
    dump_and_restore(
        &[
            "shared_memory_type=sysv",
            "dynamic_shared_memory_type=sysv",
            "logging_collector=on",
        ],
        1,
    );
}

/// The main shared memory in huge pages (huge_pages=on: MAP_SHARED|MAP_ANONYMOUS|MAP_HUGETLB,
/// inherited by every backend): it comes back as one hugetlb object. The host's pool is
/// raised for it (never lowered: memory_hugetlb.rs raises it too).
#[test]
fn postgres_with_huge_pages_on_survives_dump_and_restore() {
    // 16 MB of buffers: about 12 huge pages of 2 MiB, twice over (the original and its
    // restored self may overlap while the first exits), and room for the hugetlb tests.
    let _turn = cryo_tests::huge_pages::turn(48);
    dump_and_restore_checking(&["huge_pages=on", "shared_buffers=16MB"], 1, |server| {
        // Every process of the tree maps the main shared memory in huge pages.
        for pid in server.processes() {
            let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
            let huge = smaps
                .split("\n")
                .skip_while(|l| !(l.ends_with("/anon_hugepage (deleted)") && l.contains(" rw-s ")))
                .take_while(|l| !l.starts_with("VmFlags"))
                .any(|l| {
                    l.split_whitespace().collect::<Vec<_>>() == ["KernelPageSize:", "2048", "kB"]
                });
            assert!(
                huge,
                "pid {pid} maps no shared memory in huge pages:\n{smaps}"
            );
        }
    });
}

#[test]
fn postgres_dumped_with_leave_running_goes_on_unchanged() {
    cryo_bin();
    let mut server = PgServer::start();
    let mut clients = connect_clients(&server);
    let before = server.processes();
    clients
        .sleeper
        .send(SLEEP)
        .expect("send the query in flight");
    let img = server.dir().join("img");
    let (_, dump_time) = dump(&server, &img, &["--leave-running"]);
    eprintln!(
        "postgres tree of {} processes, --leave-running: dump {dump_time:?}",
        before.len()
    );
    for pid in &before {
        assert_eq!(
            cryo_tests::status_field(*pid, "TracerPid").as_deref(),
            Some("0"),
            "pid {pid} left traced"
        );
    }
    sleeper_wakes(&server, &mut clients.sleeper);
    unix_listener_keeps_its_name(&server);
    clients_go_on(&mut server, clients, &before);
}
