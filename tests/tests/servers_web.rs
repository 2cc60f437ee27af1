//! Real web and cache servers from Debian's packages, dumped and restored with live clients
//! held by the test (outside the dumped tree): nginx (a root master and two workers running
//! as www-data, the listener shared by all three, keep-alive connections spread over both
//! workers) and redis-server (plain clients, one inside MULTI, one subscribed).
//!
//! Each client sends its next request on the SAME connection after the restore and must get
//! the right answer (no reset, no EOF), and a new client must be accepted.
//!
//! Needs the engine (`cargo build -p cryo`), nginx and redis-server (`apt-get install nginx
//! redis-server`; .ci/run installs them).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cryo_tests::servers::{
    free_port, holder_of_connection, listening_ports, read_until, require, tree_of, wait_for,
    ServerTree,
};
use cryo_tests::{control_dir, cryo_bin, CryoOutput};

/// Generous: a client retransmits on its own backoff timer once the network lock is gone.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Keep-alive clients each nginx worker must hold at the dump.
const PER_WORKER: usize = 4;

// ---------------------------------------------------------------- nginx

/// nginx in its own dir: master (the test's child, `daemon off`) and two workers as www-data.
struct Nginx {
    tree: ServerTree,
    port: u16,
}

fn nginx_conf(dir: &Path, port: u16, listen_opts: &str) -> String {
    let d = dir.display();
    format!(
        "daemon off;
master_process on;
worker_processes 2;
user www-data;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 512; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_timeout 600s;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{port}{listen_opts};
    location / {{ return 200 \"hello $request_uri\\n\"; }}
  }}
}}
"
    )
}

impl Nginx {
    /// Starts nginx on a free port (another try on a fresh port if it lost that one), with
    /// `listen_opts` after its `listen` address (` reuseport`: one listener per worker).
    fn start(listen_opts: &str) -> Self {
        let nginx = require("nginx", "nginx");
        for _ in 0..5 {
            let dir = control_dir();
            // The workers (www-data) write the access log opened by the master, and read nothing
            // else of the dir; the master makes the temp dirs as root.
            let port = free_port();
            let conf = dir.path().join("nginx.conf");
            fs::write(&conf, nginx_conf(dir.path(), port, listen_opts)).expect("write nginx.conf");
            let mut cmd = Command::new(&nginx);
            cmd.arg("-p").arg(dir.path()).arg("-c").arg(&conf);
            let mut tree = ServerTree::spawn(dir, cmd);
            let up = wait_for("nginx listening with two workers", START_TIMEOUT, || {
                if tree.root_exited() {
                    return Ok(false);
                }
                let root = tree.root();
                let workers = tree_of(root).len() - 1;
                if listening_ports(root).contains(&port) && workers == 2 {
                    Ok(true)
                } else {
                    Err(format!(
                        "{workers} workers, ports {:?}",
                        listening_ports(root)
                    ))
                }
            });
            if up {
                tree.pids();
                return Nginx { tree, port };
            }
            let log = fs::read_to_string(tree.path("error.log")).unwrap_or_default();
            assert!(
                log.contains("Address already in use"),
                "nginx exited at start:\n{}\n{log}",
                tree.log()
            );
        }
        panic!("nginx lost its port five times");
    }

    fn workers(&self) -> Vec<i32> {
        tree_of(self.tree.root())[1..].to_vec()
    }

    /// Waits until the access log has `want` lines (a worker logs a request after sending
    /// its response) and checks it gets no more than that.
    #[track_caller]
    fn assert_access_log_lines(&self, want: usize) {
        let path = self.tree.path("access.log");
        let lines = || {
            fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .count()
        };
        wait_for("the access log's lines", START_TIMEOUT, || match lines() {
            n if n >= want => Ok(()),
            n => Err(format!("{n} lines of {want}")),
        });
        assert_eq!(lines(), want, "lines in the access log");
    }
}

/// One keep-alive HTTP/1.1 connection.
struct HttpClient {
    stream: TcpStream,
}

impl HttpClient {
    fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        HttpClient { stream }
    }

    fn port(&self) -> u16 {
        self.stream.local_addr().unwrap().port()
    }

    fn send(&mut self, path: &str) -> Result<(), String> {
        self.stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: cryo\r\n\r\n").as_bytes())
            .map_err(|e| format!("send GET {path}: {e}"))
    }

    /// Reads one response and checks it is nginx's 200 for `path`, keeping the connection.
    fn receive(&mut self, path: &str) -> Result<(), String> {
        let what = format!("response to GET {path} on client port {}", self.port());
        let mut body_len = None;
        let got = read_until(&mut self.stream, &what, |got| {
            let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                return false;
            };
            let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            body_len = Some((end + 4, len));
            got.len() >= end + 4 + len
        })?;
        let (start, len) = body_len.expect("a whole head");
        let head = String::from_utf8_lossy(&got[..start]);
        let body = String::from_utf8_lossy(&got[start..start + len]);
        if !head.starts_with("HTTP/1.1 200 ") || !head.contains("Connection: keep-alive") {
            return Err(format!("{what}: unexpected head {head:?}"));
        }
        if body != format!("hello {path}\n") {
            return Err(format!("{what}: body {body:?}"));
        }
        if got.len() != start + len {
            return Err(format!(
                "{what}: {} bytes too many",
                got.len() - start - len
            ));
        }
        Ok(())
    }

    fn get(&mut self, path: &str) -> Result<(), String> {
        self.send(path)?;
        self.receive(path)
    }
}

/// Opens keep-alive clients in bursts (each served once) until each worker holds at least
/// [`PER_WORKER`] of them; returns them with the worker holding each.
fn clients_on_both_workers(nginx: &Nginx) -> Vec<(HttpClient, i32)> {
    let workers = nginx.workers();
    assert_eq!(workers.len(), 2, "nginx should run two workers");
    let mut clients = Vec::new();
    for burst in 0..40 {
        let mut fresh: Vec<HttpClient> = (0..8).map(|_| HttpClient::connect(nginx.port)).collect();
        for (i, c) in fresh.iter_mut().enumerate() {
            c.send(&format!("/burst/{burst}/{i}")).unwrap();
        }
        for (i, c) in fresh.iter_mut().enumerate() {
            c.receive(&format!("/burst/{burst}/{i}")).unwrap();
        }
        for c in fresh {
            let holder =
                holder_of_connection(nginx.port, c.port(), &workers).unwrap_or_else(|| {
                    panic!(
                        "no worker of {workers:?} holds the connection of client {}",
                        c.port()
                    )
                });
            clients.push((c, holder));
        }
        let counts = count_by_worker(&clients);
        if workers
            .iter()
            .all(|w| counts.get(w).copied().unwrap_or(0) >= PER_WORKER)
        {
            return clients;
        }
    }
    panic!(
        "after 320 connections the workers hold {:?}",
        count_by_worker(&clients)
    );
}

fn count_by_worker(clients: &[(HttpClient, i32)]) -> BTreeMap<i32, usize> {
    let mut counts = BTreeMap::new();
    for (_, w) in clients {
        *counts.entry(*w).or_insert(0) += 1;
    }
    counts
}

/// Every client asks again on its own connection, and the same worker answers.
fn every_client_is_served_again(nginx: &Nginx, clients: &mut [(HttpClient, i32)], tag: &str) {
    for (i, (c, _)) in clients.iter_mut().enumerate() {
        c.send(&format!("/{tag}/{i}")).unwrap();
    }
    for (i, (c, worker)) in clients.iter_mut().enumerate() {
        c.receive(&format!("/{tag}/{i}")).unwrap_or_else(|e| {
            panic!(
                "client {i} (worker {worker}): {e}\n--- error.log\n{}",
                fs::read_to_string(nginx.tree.path("error.log")).unwrap_or_default()
            )
        });
        assert_eq!(
            holder_of_connection(nginx.port, c.port(), &nginx.workers()),
            Some(*worker),
            "client {i}'s connection should still be held by worker {worker}"
        );
    }
}

/// The shared mappings of `pid` (`rw-s` lines of its maps): address, device and inode, which
/// name the very object (nginx's `/dev/zero (deleted)` zone of accept mutex and counters).
fn shared_mappings(pid: i32) -> Vec<String> {
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|p| p.ends_with('s'))
        })
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {} {}", f[0], f[1], f[3], f[4])
        })
        .collect()
}

/// The master and both workers map the same shared zone (one object, not three copies).
#[track_caller]
fn assert_one_shared_zone(nginx: &Nginx) -> Vec<String> {
    let master = shared_mappings(nginx.tree.root());
    assert!(!master.is_empty(), "nginx's master maps no shared memory");
    for w in nginx.workers() {
        assert_eq!(shared_mappings(w), master, "worker {w}'s shared mappings");
    }
    master
}

/// The signal owner of every fd of the master and workers that has one, by process.
fn signal_owners(nginx: &Nginx) -> BTreeMap<i32, BTreeMap<i32, (i32, i32)>> {
    tree_of(nginx.tree.root())
        .into_iter()
        .map(|p| (p, cryo_tests::servers::fd_owners(p)))
        .collect()
}

fn report_time(what: &str, out: &CryoOutput, took: Duration) {
    eprintln!(
        "{what}: cryo ran {:.1} ms: {} {}",
        took.as_secs_f64() * 1e3,
        out.stdout.trim(),
        out.stderr.trim()
    );
}

#[test]
fn nginx_master_and_two_workers_keep_their_keep_alive_clients_across_a_restore() {
    dump_and_restore_nginx_with_clients("");
}

/// `listen ... reuseport`: two listeners on one port (SO_REUSEPORT), each worker accepting
/// on its own, all three processes holding both.
#[test]
fn nginx_with_reuseport_listeners_keeps_its_clients_across_a_restore() {
    dump_and_restore_nginx_with_clients(" reuseport");
}

fn dump_and_restore_nginx_with_clients(listen_opts: &str) {
    cryo_bin();
    let mut nginx = Nginx::start(listen_opts);
    if !listen_opts.is_empty() {
        let listeners = cryo_tests::servers::socket_inodes(nginx.tree.root())
            .into_iter()
            .filter(|ino| {
                cryo_tests::servers::tcp_entries().iter().any(|e| {
                    e.inode == *ino
                        && e.local_port == nginx.port
                        && e.state == cryo_tests::servers::TCP_LISTEN
                })
            })
            .count();
        assert_eq!(
            listeners, 2,
            "one reuseport listener per worker in the master"
        );
    }
    let workers = nginx.workers();
    let mut clients = clients_on_both_workers(&nginx);
    let served = clients.len();
    let zone = assert_one_shared_zone(&nginx);
    let owners = signal_owners(&nginx);
    assert!(
        owners.values().any(|o| !o.is_empty()),
        "nginx's channels should have a signal owner"
    );
    eprintln!(
        "nginx {} with workers {workers:?}: clients per worker {:?}",
        nginx.tree.root(),
        count_by_worker(&clients)
    );
    nginx.assert_access_log_lines(served);

    let img = nginx.tree.path("img");
    let t = std::time::Instant::now();
    let out = nginx.tree.dump(&img, &["--tcp-established"]);
    report_time("dump", &out, t.elapsed());
    let t = std::time::Instant::now();
    let out = nginx.tree.restore_detached(&img);
    report_time("restore", &out, t.elapsed());
    assert_eq!(
        nginx.workers(),
        workers,
        "the same workers, with their pids, under the master"
    );
    for w in &workers {
        let uid = cryo_tests::status_field(*w, "Uid").unwrap();
        assert!(
            uid.starts_with("33\t"),
            "worker {w} should run as www-data: Uid {uid}"
        );
    }

    assert_eq!(
        signal_owners(&nginx),
        owners,
        "the channels' signal owners (the master), fd by fd"
    );
    // One zone again, at its address (its inode is the restore's: a new object).
    let zone_after = assert_one_shared_zone(&nginx);
    let addresses = |z: &[String]| -> Vec<String> {
        z.iter()
            .map(|m| m.split(' ').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(addresses(&zone_after), addresses(&zone));
    every_client_is_served_again(&nginx, &mut clients, "after");
    let mut fresh = HttpClient::connect(nginx.port);
    fresh.get("/new").expect("a new client after the restore");
    fresh.get("/new/again").expect("the new client, kept alive");
    // The log opened O_APPEND by the master goes on where it was, written by the workers.
    nginx.assert_access_log_lines(2 * served + 2);
}

#[test]
fn nginx_dumped_with_leave_running_keeps_serving_its_clients() {
    cryo_bin();
    let mut nginx = Nginx::start("");
    let workers = nginx.workers();
    let mut clients = clients_on_both_workers(&nginx);
    let served = clients.len();
    let img = nginx.tree.path("img");
    nginx
        .tree
        .dump(&img, &["--tcp-established", "--leave-running"]);
    assert!(!nginx.tree.root_exited(), "the master should run on");
    assert_eq!(nginx.workers(), workers);
    every_client_is_served_again(&nginx, &mut clients, "left-running");
    HttpClient::connect(nginx.port)
        .get("/new")
        .expect("a new client after the dump");
    nginx.assert_access_log_lines(2 * served + 1);
}

// ---------------------------------------------------------------- redis

/// redis-server in its own dir, in the foreground, without persistence.
struct Redis {
    tree: ServerTree,
    port: u16,
}

impl Redis {
    fn start() -> Self {
        let redis = require("redis-server", "redis-server");
        for _ in 0..5 {
            let dir = control_dir();
            let port = free_port();
            let mut cmd = Command::new(&redis);
            cmd.current_dir(dir.path())
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(dir.path());
            let mut tree = ServerTree::spawn(dir, cmd);
            let up = wait_for("redis answering PING", START_TIMEOUT, || {
                if tree.root_exited() {
                    return Ok(false);
                }
                let mut c = Resp::try_connect(port).map_err(|e| e.to_string())?;
                match c.call(&["PING"]) {
                    Ok(Reply::Simple(s)) if s == "PONG" => Ok(true),
                    other => Err(format!("PING: {other:?}")),
                }
            });
            if up {
                tree.pids();
                return Redis { tree, port };
            }
            assert!(
                tree.log().contains("Address already in use"),
                "redis exited at start:\n{}",
                tree.log()
            );
        }
        panic!("redis lost its port five times");
    }
}

/// One RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

/// A RESP connection to redis.
struct Resp {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Resp {
    fn try_connect(port: u16) -> std::io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        Ok(Resp {
            stream,
            buf: Vec::new(),
        })
    }

    fn connect(port: u16) -> Self {
        Self::try_connect(port).expect("connect to redis")
    }

    fn send(&mut self, args: &[&str]) -> Result<(), String> {
        let mut msg = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            msg.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        self.stream
            .write_all(&msg)
            .map_err(|e| format!("send {args:?}: {e}"))
    }

    /// Parses one reply at the start of `b`: the reply and its length, or None if incomplete.
    fn parse(b: &[u8]) -> Option<(Reply, usize)> {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let line = String::from_utf8_lossy(&b[1..nl]).into_owned();
        let rest = nl + 2;
        match b.first()? {
            b'+' => Some((Reply::Simple(line), rest)),
            b'-' => Some((Reply::Error(line), rest)),
            b':' => Some((Reply::Int(line.parse().ok()?), rest)),
            b'$' => {
                let n: i64 = line.parse().ok()?;
                if n < 0 {
                    return Some((Reply::Bulk(None), rest));
                }
                let end = rest + n as usize;
                (b.len() >= end + 2).then(|| (Reply::Bulk(Some(b[rest..end].to_vec())), end + 2))
            }
            b'*' => {
                let n: usize = line.parse().ok()?;
                let mut at = rest;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let (r, len) = Self::parse(&b[at..])?;
                    items.push(r);
                    at += len;
                }
                Some((Reply::Array(items), at))
            }
            _ => None,
        }
    }

    fn receive(&mut self, what: &str) -> Result<Reply, String> {
        let what = format!(
            "reply to {what} on client port {}",
            self.stream.local_addr().unwrap().port()
        );
        let mut pending = std::mem::take(&mut self.buf);
        let mut parsed = None;
        let more = read_until(&mut self.stream, &what, |got| {
            let mut all = pending.clone();
            all.extend_from_slice(got);
            parsed = Self::parse(&all);
            parsed.is_some()
        })?;
        pending.extend_from_slice(&more);
        let (reply, len) = parsed.expect("a whole reply");
        self.buf = pending.split_off(len);
        Ok(reply)
    }

    fn call(&mut self, args: &[&str]) -> Result<Reply, String> {
        self.send(args)?;
        self.receive(&args.join(" "))
    }

    #[track_caller]
    fn expect(&mut self, args: &[&str], want: Reply) {
        let got = self.call(args).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, want, "redis {args:?}");
    }
}

#[test]
fn redis_clients_in_a_transaction_and_subscribed_go_on_after_a_restore() {
    redis_clients_go_on(false);
}

#[test]
fn redis_dumped_with_leave_running_keeps_its_clients_as_they_were() {
    redis_clients_go_on(true);
}

/// Clients of every kind (plain, named in db 3, inside MULTI, subscribed) go on after a
/// killing dump and restore, or after a `--leave-running` dump of the running server.
fn redis_clients_go_on(leave_running: bool) {
    cryo_bin();
    let mut redis = Redis::start();
    let ok = || Reply::Simple("OK".into());
    let queued = || Reply::Simple("QUEUED".into());
    let mut plain = Resp::connect(redis.port);
    plain.expect(&["SET", "k1", "v1"], ok());
    let big = "x".repeat(300_000);
    plain.expect(&["SET", "big", &big], ok());
    let mut named = Resp::connect(redis.port);
    named.expect(&["CLIENT", "SETNAME", "before-dump"], ok());
    named.expect(&["SELECT", "3"], ok());
    named.expect(&["SET", "in-db-3", "yes"], ok());
    let mut tx = Resp::connect(redis.port);
    tx.expect(&["MULTI"], ok());
    tx.expect(&["SET", "k2", "v2"], queued());
    tx.expect(&["INCR", "counter"], queued());
    let mut sub = Resp::connect(redis.port);
    sub.expect(
        &["SUBSCRIBE", "news"],
        Reply::Array(vec![bulk("subscribe"), bulk("news"), Reply::Int(1)]),
    );

    let img = redis.tree.path("img");
    if leave_running {
        redis
            .tree
            .dump(&img, &["--tcp-established", "--leave-running"]);
    } else {
        let t = std::time::Instant::now();
        let out = redis.tree.dump(&img, &["--tcp-established"]);
        report_time("redis dump", &out, t.elapsed());
        let t = std::time::Instant::now();
        let out = redis.tree.restore_detached(&img);
        report_time("redis restore", &out, t.elapsed());
    }

    plain.expect(&["GET", "k1"], bulk("v1"));
    plain.expect(&["STRLEN", "big"], Reply::Int(big.len() as i64));
    named.expect(&["CLIENT", "GETNAME"], bulk("before-dump"));
    named.expect(&["GET", "in-db-3"], bulk("yes"));
    tx.expect(&["EXEC"], Reply::Array(vec![ok(), Reply::Int(1)]));
    plain.expect(&["PUBLISH", "news", "restored"], Reply::Int(1));
    let msg = sub
        .receive("the published message")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        msg,
        Reply::Array(vec![bulk("message"), bulk("news"), bulk("restored")])
    );
    let mut fresh = Resp::connect(redis.port);
    fresh.expect(&["GET", "k2"], bulk("v2"));
    fresh.expect(&["DBSIZE"], Reply::Int(4));
    assert!(!redis.tree.root_exited());
}
