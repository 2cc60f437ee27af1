//! A process tree in a network namespace of its own with loopback only (a sandbox's) comes
//! back in a new one: lo's state, MTU and addresses, the namespace's sysctls, and its sockets
//! over lo (a listener, a connection between two processes of the dump, a UDP socket with a
//! datagram waiting). What is not made again (another interface, the namespace shared with a
//! process outside the dump) is refused at dump, by name.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::process::{Command, Stdio};

use cryo_tests::{cryo_bin, Workload};

/// The options of the workload: lo up with MTU 9000 and an extra address, two sysctls changed.
const SANDBOX: &[&str] = &[
    "mtu=9000",
    "addr=10.9.9.9/32",
    "sysctl=net/ipv4/ping_group_range=0,100",
    "sysctl=net/ipv4/ip_local_port_range=40000,40100",
];

/// What the process reads of its namespace: lo's link and addresses, its routes, the sysctls.
fn view(w: &Workload) -> Vec<String> {
    [
        "ip -o link show lo",
        "ip -o addr show dev lo",
        "ip route show table all",
        "ip -6 route show table all",
        "sysctl net/ipv4/ping_group_range",
        "sysctl net/ipv4/ip_local_port_range",
    ]
    .iter()
    .map(|c| w.cmd(c))
    .collect()
}

fn ours() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_tree_in_a_network_namespace_of_its_own_comes_back_in_a_new_one_with_lo_sysctls_and_sockets() {
    cryo_bin();
    let mut w = Workload::spawn("netns", SANDBOX);
    let before = view(&w);
    assert!(
        before[0].contains("mtu 9000") && before[0].contains("UP"),
        "{}",
        before[0]
    );
    assert!(before[1].contains("10.9.9.9/32"), "{}", before[1]);
    assert_eq!(before[4], "0\t100");
    let original_ns = w.cmd("ns");
    assert_ne!(original_ns, ours());
    // Held open, the original namespace outlives its processes: its inode is not reused.
    let _original = std::fs::File::open(format!("/proc/{}/ns/net", w.pid())).unwrap();
    assert_eq!(w.cmd("talk 1000"), "1000");

    // --leave-running leaves it as it was, its connection working.
    let left = w.path("left");
    w.dump(&left, &["--tcp-established", "--leave-running"])
        .assert_success();
    w.assert_untouched();
    assert_eq!(view(&w), before, "--leave-running changed its namespace");
    assert_eq!(
        w.cmd("talk 3000"),
        "3000",
        "--leave-running: the connection"
    );
    assert_eq!(w.cmd("accept-new"), "ok", "--leave-running: the listener");

    let img = w.path("img");
    w.dump(&img, &["--tcp-established"]).assert_success();
    w.wait_original();
    w.restore_background(&img);
    let ns = w.cmd("ns");
    assert_ne!(ns, ours(), "restored into cryo's network namespace");
    assert_ne!(
        ns, original_ns,
        "the original's namespace is gone: a new one"
    );
    assert_eq!(view(&w), before, "lo, routes and sysctls as dumped");
    let kid = w.cmd("kid");
    assert_eq!(
        std::fs::read_link(format!("/proc/{kid}/ns/net"))
            .unwrap()
            .to_string_lossy(),
        ns,
        "the child shares its parent's namespace"
    );
    assert_eq!(w.cmd("udp-queued"), "queued before the dump");
    assert_eq!(w.cmd("udp"), "ok");
    assert_eq!(
        w.cmd("talk 100000"),
        "100000",
        "bytes both ways over the restored connection"
    );
    assert_eq!(w.cmd("accept-new"), "ok", "the restored listener accepts");
}

#[test]
fn a_namespace_with_lo_down_comes_back_down() {
    cryo_bin();
    let mut w = Workload::spawn("netns", &["down"]);
    let before = w.cmd("ip -o link show lo");
    assert!(!before.contains("UP"), "{before}");
    w.dump_and_restore();
    assert_ne!(w.cmd("ns"), ours());
    assert_eq!(w.cmd("ip -o link show lo"), before);
    assert_eq!(w.cmd("ip -o addr show dev lo"), "");
}

#[test]
fn a_veth_interface_in_the_namespace_is_refused_naming_pid_and_interface() {
    cryo_bin();
    let w = Workload::spawn("netns", &["veth=cryo-v0"]);
    let out = w.dump(&w.path("img"), &["--tcp-established"]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    let pid = w.pid();
    let inode = w.cmd("ns");
    let inode = inode.trim_start_matches("net:[").trim_end_matches(']');
    assert!(
        out.stderr.contains(&format!(
            "pid {pid}: its network namespace (net:[{inode}]) holds network interface cryo-v0"
        )) || out.stderr.contains(&format!(
            "pid {pid}: its network namespace (net:[{inode}]) holds network interface cryo-v0-p"
        )),
        "{}",
        out.stderr
    );
    w.assert_untouched();
    assert_eq!(w.cmd("talk 10"), "10");
}

#[test]
fn a_network_namespace_shared_with_a_process_outside_the_dump_is_refused_naming_it() {
    cryo_bin();
    let w = Workload::spawn("netns", &[]);
    let mut other = Command::new("nsenter")
        .arg(format!("--net=/proc/{}/ns/net", w.pid()))
        .args(["sh", "-c", "echo joined; exec sleep 1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("nsenter");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(other.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "joined\n");
    let out = w.dump(&w.path("img"), &["--tcp-established"]);
    let _ = other.kill();
    let _ = other.wait();
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    let inode = w.cmd("ns");
    assert!(
        out.stderr.contains(&format!(
            "pid {}: its network namespace ({inode}) is shared with pid {}, which is not in the dump",
            w.pid(),
            other.id()
        )),
        "{}",
        out.stderr
    );
    w.assert_untouched();
}

#[test]
fn a_route_a_fresh_namespace_would_not_have_is_refused_naming_it() {
    cryo_bin();
    let w = Workload::spawn("netns", &["route=10.77.0.0/16"]);
    let out = w.dump(&w.path("img"), &["--tcp-established"]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    let inode = w.cmd("ns");
    assert!(
        out.stderr.contains(&format!(
            "pid {}: its network namespace ({inode}) has route inet type 1 10.77.0.0/16 table 254",
            w.pid()
        )),
        "{}",
        out.stderr
    );
    w.assert_untouched();
    assert_eq!(w.cmd("talk 10"), "10");
}

#[test]
fn a_socket_made_before_the_process_left_cryos_namespace_is_refused_naming_pid_and_fd() {
    cryo_bin();
    let w = Workload::spawn("netns", &["early"]);
    let out = w.dump(&w.path("img"), &["--tcp-established"]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    let fd = w.cmd("early-fd");
    assert!(
        out.stderr.contains(&format!("pid {} fd {fd}", w.pid()))
            && out
                .stderr
                .contains("socket of another network namespace than its process's"),
        "{}",
        out.stderr
    );
    w.assert_untouched();
    assert_eq!(w.cmd("talk 10"), "10");
}

#[test]
fn a_child_back_in_cryos_network_namespace_below_a_parent_in_another_comes_back_in_cryos() {
    cryo_bin();
    let mut w = Workload::spawn("netns", &["back", "addr=10.9.9.9/32"]);
    let ns_of = |pid: &str| {
        std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(ns_of(&w.cmd("back-kid")), ours());
    w.dump(&w.path("img"), &["--tcp-established"])
        .assert_success();
    w.wait_original();
    w.restore_background(&w.path("img"));
    let back = w.cmd("back-kid");
    assert_eq!(
        ns_of(&back),
        ours(),
        "the child is back in cryo's namespace"
    );
    assert_ne!(w.cmd("ns"), ours(), "its parent is in one of its own");
    assert!(w.cmd("ip -o addr show dev lo").contains("10.9.9.9/32"));
    assert_eq!(w.cmd("talk 1000"), "1000");
}

#[test]
fn an_nftables_table_in_the_namespace_is_refused_naming_it() {
    cryo_bin();
    let w = Workload::spawn("netns", &[]);
    // A table made inside the workload's namespace by a thread of the test that joins it.
    let ns = std::fs::File::open(format!("/proc/{}/ns/net", w.pid())).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let tuple = cryo_netns::ConnTuple::new(
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            );
            cryo_netns::NetworkLock::install("sandbox-rules", &[tuple])
                .unwrap()
                .keep();
        })
        .join()
        .unwrap()
    });
    let out = w.dump(&w.path("img"), &["--tcp-established"]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    let inode = w.cmd("ns");
    assert!(
        out.stderr.contains(&format!(
            "pid {}: its network namespace ({inode}) holds nftables table inet cryo-sandbox-rules",
            w.pid()
        )),
        "{}",
        out.stderr
    );
    w.assert_untouched();
    assert_eq!(w.cmd("talk 10"), "10");
}
