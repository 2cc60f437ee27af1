//! BPF maps (bpf(BPF_MAP_CREATE)) come back with their type, sizes, flags, name, elements and
//! frozen state, as the restored process sees them through lookups, updates, pops, fdinfo and
//! BPF_OBJ_GET_INFO_BY_FD; each fd with its own access mode and FD_CLOEXEC; a map held by
//! two descriptions and two processes comes back as one map; a dump leaves a queue's and a
//! stack's elements to the original; maps of programs, maps whose BTF holds a lock, program fds and maps
//! used outside the dump are refused at dump, the process left as it was.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{cryo_bin, Workload};

#[track_caller]
fn ok(w: &Workload, line: &str) -> String {
    let reply = w.cmd(line);
    assert!(!reply.starts_with("err"), "{line}: {reply}");
    reply
}

/// The possible CPUs of this machine (a per-CPU value has one slot each).
fn possible_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").expect("cpu list");
    text.trim()
        .split(',')
        .map(|p| match p.split_once('-') {
            Some((a, b)) => b.parse::<usize>().expect("cpu") - a.parse::<usize>().expect("cpu") + 1,
            None => 1,
        })
        .sum()
}

/// `bpf OPTS...`, started.
fn start(opts: &[&str]) -> Workload {
    cryo_bin();
    Workload::spawn("bpf", opts)
}

/// What the workload made (see its module doc), seen from inside it; the queue and stack
/// are left as they are.
#[track_caller]
fn holds_what_it_made(w: &Workload) {
    for (k, v) in [(1, "100"), (2, "200"), (3, "300"), (4, "none")] {
        assert_eq!(ok(w, &format!("get 60 {k}")), v, "hash key {k}");
        assert_eq!(
            ok(w, &format!("get 66 {k}")),
            v,
            "hash key {k} through fd 66"
        );
    }
    for k in 0..8 {
        let want = match k {
            0 => "7",
            5 => "55",
            _ => "0",
        };
        assert_eq!(ok(w, &format!("get 61 {k}")), want, "array index {k}");
    }
    assert_eq!(ok(w, "get 61 8"), "none", "past the array");
    let pcpu: Vec<String> = (0..possible_cpus()).map(|c| (10 + c).to_string()).collect();
    assert_eq!(ok(w, "pcpu"), pcpu.join(","), "one value per CPU");
    assert_eq!(ok(w, "get 63 0"), "42");
    assert_eq!(ok(w, "lpm 10.1.2.3"), "16", "the longest prefix");
    assert_eq!(ok(w, "lpm 10.2.0.1"), "8");
    assert_eq!(ok(w, "lpm 11.0.0.1"), "none");
    // The full LRU map: whatever the workload's own filling kept (it may evict when its
    // thread moves between CPUs), each key with its value.
    let lru = ok(w, "keys 68");
    for k in lru.split(',') {
        let k: u32 = k.parse().expect("key");
        assert_eq!(
            ok(w, &format!("get 68 {k}")),
            (k * 10).to_string(),
            "LRU key {k}"
        );
    }
    // type key value max_entries map_flags frozen accmode cloexec name
    assert_eq!(ok(w, "info 60"), "1 4 8 16 0x0 0 2 true cryo_hash");
    assert_eq!(ok(w, "info 61"), "2 4 8 8 0x0 0 2 true cryo_array");
    assert_eq!(ok(w, "info 62"), "6 4 8 4 0x0 0 2 true cryo_pcpu");
    assert_eq!(ok(w, "info 63"), "2 4 8 2 0x0 1 2 true cryo_frozen");
    assert_eq!(ok(w, "info 64"), "22 0 4 8 0x0 0 2 true cryo_queue");
    assert_eq!(ok(w, "info 65"), "23 0 4 8 0x0 0 2 true cryo_stack");
    assert_eq!(
        ok(w, "info 66"),
        "1 4 8 16 0x0 0 0 false cryo_hash",
        "read-only, inheritable"
    );
    assert_eq!(
        ok(w, "info 69"),
        "2 4 8 8 0x0 0 1 true cryo_array",
        "write-only"
    );
    assert_eq!(ok(w, "fl 69"), "4001", "O_WRONLY|O_NONBLOCK");
    assert_eq!(ok(w, "fl 60"), "2", "O_RDWR");
    assert_eq!(ok(w, "info 67"), "11 8 4 16 0x1 0 2 true cryo_lpm");
    assert_eq!(ok(w, "info 68"), "9 4 8 8 0x0 0 2 true cryo_lru");
}

/// The queue gives 1, 2, 3 and the stack 3, 2, 1, then both are empty.
#[track_caller]
fn queue_and_stack_in_order(w: &Workload) {
    for v in ["1", "2", "3", "empty"] {
        assert_eq!(ok(w, "pop 64"), v, "queue");
    }
    for v in ["3", "2", "1", "empty"] {
        assert_eq!(ok(w, "pop 65"), v, "stack");
    }
}

#[test]
fn maps_of_every_restored_type_come_back_with_their_elements_flags_and_fds() {
    let mut w = start(&[]);
    holds_what_it_made(&w);
    let lru = ok(&w, "keys 68");
    assert!(
        lru.split(',').count() >= 7,
        "the LRU map nearly full: {lru}"
    );
    w.dump_and_restore();
    holds_what_it_made(&w);
    assert_eq!(ok(&w, "keys 68"), lru, "the LRU map keeps every element");
    queue_and_stack_in_order(&w);
    // Updates work, and the two descriptions of the hash map are on one map.
    assert_eq!(ok(&w, "put 60 9 900"), "ok");
    assert_eq!(ok(&w, "get 66 9"), "900", "fd 66 sees fd 60's update");
    let ro = w.cmd("put 66 9 1");
    assert!(
        ro.contains("Operation not permitted"),
        "fd 66 stays read-only: {ro}"
    );
    let frozen = w.cmd("put 63 0 1");
    assert!(
        frozen.contains("Operation not permitted"),
        "frozen: {frozen}"
    );
    assert_eq!(ok(&w, "get 63 0"), "42");
    assert_eq!(ok(&w, "put 61 3 33"), "ok");
    assert_eq!(ok(&w, "get 61 3"), "33");
    assert_eq!(ok(&w, "put 69 4 44"), "ok", "fd 69 writes");
    assert_eq!(ok(&w, "get 61 4"), "44", "into the array of fd 61");
    let wo = w.cmd("get 69 4");
    assert!(
        wo.contains("Operation not permitted"),
        "fd 69 stays write-only: {wo}"
    );
    assert_eq!(ok(&w, "push 64 7"), "ok");
    assert_eq!(ok(&w, "pop 64"), "7");
    assert_eq!(ok(&w, "id 60"), ok(&w, "id 66"), "one map id for both fds");
    w.kill_restored();
}

#[test]
fn a_map_shared_by_parent_and_child_stays_one_map() {
    let mut w = start(&["child"]);
    assert_eq!(ok(&w, "child put 7 70"), "ok");
    assert_eq!(ok(&w, "get 60 7"), "70", "one map before");
    w.dump_and_restore();
    assert_eq!(ok(&w, "child get 7"), "70");
    assert_eq!(ok(&w, "child put 8 80"), "ok");
    assert_eq!(
        ok(&w, "get 60 8"),
        "80",
        "the child's update seen by the parent"
    );
    assert_eq!(ok(&w, "put 60 1 111"), "ok");
    assert_eq!(
        ok(&w, "child get 1"),
        "111",
        "the parent's update seen by the child"
    );
    w.kill_restored();
}

#[test]
fn leave_running_leaves_the_queue_and_the_stack_to_the_original() {
    let mut w = start(&[]);
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    holds_what_it_made(&w);
    let show = w.show(&img, false);
    show.assert_success();
    assert!(
        show.stdout.contains("BPF map \"cryo_queue\" (queue, id ")
            && show.stdout.contains("3 elements"),
        "{show}"
    );
    queue_and_stack_in_order(&w);
    w.kill_original();
    w.restore_background(&img);
    queue_and_stack_in_order(&w);
    w.kill_restored();
}

#[test]
fn a_prog_array_is_refused_naming_pid_fd_map_and_type() {
    let w = start(&["progarray"]);
    w.assert_dump_refused("70", "prog_array");
    w.assert_dump_refused("70", "BPF map \"cryo_progs\" (id ");
    assert_eq!(ok(&w, "get 60 1"), "100", "the maps are as they were");
    queue_and_stack_in_order(&w);
}

#[test]
fn a_map_with_btf_comes_back_with_its_btf_type_ids_and_elements() {
    let mut w = start(&["btf"]);
    let before = ok(&w, "btf 72");
    let (id, types) = before.split_once(' ').expect("btf id and types");
    assert_ne!(id, "0", "made with BTF");
    assert_eq!(types, "1 2");
    w.dump_and_restore();
    let after = ok(&w, "btf 72");
    let (id, types) = after.split_once(' ').expect("btf id and types");
    assert_ne!(id, "0", "BTF again: {after}");
    assert_eq!(types, "1 2", "the key and value type ids");
    assert_eq!(ok(&w, "info 72"), "2 4 8 2 0x0 0 2 true cryo_btf");
    assert_eq!(ok(&w, "get 72 1"), "11");
    assert_eq!(ok(&w, "get 72 0"), "0");
    assert_eq!(ok(&w, "put 72 0 5"), "ok");
    assert_eq!(ok(&w, "get 72 0"), "5");
    w.kill_restored();
}

#[test]
fn a_map_whose_btf_holds_a_spin_lock_is_refused_naming_pid_fd_and_the_lock() {
    let w = start(&["spinlock"]);
    w.assert_dump_refused("74", "names bpf_spin_lock");
    queue_and_stack_in_order(&w);
}

#[test]
fn a_bpf_program_fd_is_refused_naming_pid_fd_and_kind() {
    let w = start(&["prog"]);
    w.assert_dump_refused("71", "bpf-prog");
    queue_and_stack_in_order(&w);
}

#[test]
fn a_socket_with_an_ebpf_filter_is_refused_naming_pid_fd_and_the_filter() {
    let w = start(&["sockfilter"]);
    w.assert_dump_refused("77", "eBPF filter (SO_ATTACH_BPF)");
    queue_and_stack_in_order(&w);
}

#[test]
fn a_map_also_held_by_a_process_outside_the_dump_is_refused_naming_it() {
    let w = start(&[]);
    let id: u32 = ok(&w, "id 60").parse().expect("map id");
    // BPF_MAP_GET_FD_BY_ID in this test process: the map is held outside the dump.
    let mut attr = [0u64; 16];
    attr[0] = u64::from(id);
    // SAFETY: `attr` is 128 bytes with no pointers in it (map_id, next_id, open_flags 0).
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 14, attr.as_mut_ptr(), 128u32) };
    assert!(
        fd >= 0,
        "BPF_MAP_GET_FD_BY_ID: {}",
        std::io::Error::last_os_error()
    );
    w.assert_dump_refused("60", &format!("pid {} (fd {fd})", std::process::id()));
    // SAFETY: our own fd, closed once.
    unsafe { libc::close(fd as i32) };
    queue_and_stack_in_order(&w);
}

#[test]
fn a_map_mapped_into_memory_is_refused_naming_pid_and_the_mapping() {
    let w = start(&["mmap"]);
    assert_eq!(ok(&w, "get 73 0"), "5", "written through the mapping");
    // The memory dump refuses it: "pid P: mapped file /proc/P/map_files/A-B:
    // anon_inode:bpf-map is not a regular file (not supported)".
    w.dump(&w.path("img"), &[])
        .assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_mentions("anon_inode:bpf-map is not a regular file");
    w.assert_untouched();
    assert_eq!(ok(&w, "get 73 0"), "5");
    queue_and_stack_in_order(&w);
}

/// bpf(`cmd`) with the 128 bytes of `attr`.
/// A new fd (of the test's) on map `id`: BPF_MAP_GET_FD_BY_ID.
#[track_caller]
fn map_fd_by_id(id: u32) -> i64 {
    let mut attr = [0u64; 16];
    attr[0] = u64::from(id);
    let map = bpf(14, &mut attr);
    assert!(
        map >= 0,
        "BPF_MAP_GET_FD_BY_ID: {}",
        std::io::Error::last_os_error()
    );
    map
}

fn bpf(cmd: i32, attr: &mut [u64; 16]) -> i64 {
    // SAFETY: `attr` is 128 bytes; the pointers the callers put in it point to buffers alive
    // for the call.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 128u32) }
}

#[test]
fn a_map_a_program_outside_the_dump_uses_is_refused_naming_the_program() {
    let w = start(&[]);
    let id: u32 = ok(&w, "id 61").parse().expect("map id");
    let map = map_fd_by_id(id);
    // A socket filter that loads the map's address (ld_imm64 with BPF_PSEUDO_MAP_FD), then
    // returns 0: the program keeps the map once the map fd is closed.
    let insns: [u64; 4] = [0x18 | 0x11 << 8 | (map as u64) << 32, 0, 0xb7, 0x95];
    let license = c"GPL";
    let mut attr = [0u64; 16];
    attr[0] = 1 | 4 << 32; // BPF_PROG_TYPE_SOCKET_FILTER, 4 instructions
    attr[1] = insns.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    let prog = bpf(5, &mut attr);
    let loaded = std::io::Error::last_os_error();
    // SAFETY: our own fd, closed once.
    unsafe { libc::close(map as i32) };
    assert!(prog >= 0, "BPF_PROG_LOAD: {loaded}");
    w.assert_dump_refused("61", "also used by BPF program id");
    // SAFETY: our own fd, closed once.
    unsafe { libc::close(prog as i32) };
    assert_eq!(ok(&w, "get 61 5"), "55");
    queue_and_stack_in_order(&w);
}

/// A map pinned in a BPF filesystem: the pin keeps the map, which a process opening it after a
/// restore would get instead of the restored one. Refused at dump naming pid, fd and the pin
/// (before: restored, the pin left on the old map).
#[test]
fn a_pinned_map_is_refused_naming_its_pin() {
    let w = start(&[]);
    let id: u32 = ok(&w, "id 60").parse().expect("map id");
    let _fs = cryo_tests::Mount::bpffs(&w.path("bpffs"));
    let map = map_fd_by_id(id);
    let pin = w.path("bpffs/pinned");
    let pin_c = std::ffi::CString::new(pin.to_str().expect("a UTF-8 path")).unwrap();
    let mut attr = [0u64; 16];
    attr[0] = pin_c.as_ptr() as u64;
    attr[1] = map as u64; // bpf_fd
    let pinned = bpf(6, &mut attr);
    let err = std::io::Error::last_os_error();
    // SAFETY: our own fd, closed once.
    unsafe { libc::close(map as i32) };
    assert_eq!(pinned, 0, "BPF_OBJ_PIN: {err}");
    w.assert_dump_refused("60", &format!("its pin {}", pin.display()));
}

#[test]
fn a_map_held_in_a_map_of_maps_outside_the_dump_is_refused_naming_it() {
    let w = start(&[]);
    let id: u32 = ok(&w, "id 60").parse().expect("map id");
    let map = map_fd_by_id(id);
    // An array of maps (1 slot, inner maps like fd `map`) holding the workload's hash map.
    let mut attr = [0u64; 16];
    attr[0] = 12 | 4 << 32; // BPF_MAP_TYPE_ARRAY_OF_MAPS, key_size 4
    attr[1] = 4 | 1 << 32; // value_size 4, max_entries 1
    attr[2] = (map as u64) << 32; // map_flags 0, inner_map_fd
    let outer = bpf(0, &mut attr);
    assert!(
        outer >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let key = 0u32;
    let value = map as u32;
    let mut attr = [0u64; 16];
    attr[0] = outer as u64;
    attr[1] = &key as *const u32 as u64;
    attr[2] = &value as *const u32 as u64;
    let put = bpf(2, &mut attr);
    let err = std::io::Error::last_os_error();
    // SAFETY: our own fd, closed once.
    unsafe { libc::close(map as i32) };
    assert!(put >= 0, "BPF_MAP_UPDATE_ELEM: {err}");
    w.assert_dump_refused("60", "also used by the map of maps id");
    // SAFETY: our own fd, closed once.
    unsafe { libc::close(outer as i32) };
    assert_eq!(ok(&w, "get 60 1"), "100");
    queue_and_stack_in_order(&w);
}

#[test]
fn a_hash_map_of_200000_elements_comes_back_whole() {
    let n: u64 = 200_000;
    let mut w = start(&[&format!("big={n}")]);
    let whole = format!("{n} {}", 3 * n * (n - 1) / 2);
    assert_eq!(ok(&w, "count 75"), whole);
    let img = w.path("img");
    let dump = std::time::Instant::now();
    w.dump_ok(&img);
    let dump = dump.elapsed();
    let restore = std::time::Instant::now();
    w.restore_background(&img);
    let restore = restore.elapsed();
    eprintln!("{n} elements: dump {dump:?}, restore {restore:?}");
    assert_eq!(ok(&w, "count 75"), whole, "every element with its value");
    assert_eq!(
        ok(&w, "info 75"),
        format!("1 4 8 {n} 0x0 0 2 true cryo_big")
    );
    w.kill_restored();
}

#[test]
fn a_map_only_in_flight_in_a_unix_socket_comes_back_in_flight() {
    let mut w = start(&["inflight"]);
    w.dump_and_restore();
    assert_eq!(
        ok(&w, "take-map"),
        "map 1=111 1 4 8 4 0x0 0 2 true cryo_flight",
        "the map received after restore"
    );
    assert_eq!(ok(&w, "put 76 2 222"), "ok");
    assert_eq!(ok(&w, "get 76 2"), "222");
    w.kill_restored();
}
