//! `bpf [OPTION...]`: BPF maps this process made with bpf(2), and what it sees in them.
//!
//! ```text
//! fd 60  hash "cryo_hash" (u32 -> u64, 16 entries): 1 -> 100, 2 -> 200, 3 -> 300
//! fd 61  array "cryo_array" (u32 -> u64, 8): [0] = 7, [5] = 55
//! fd 62  percpu_array "cryo_pcpu" (u32 -> u64, 4): [1] = 10 + cpu on each possible CPU
//! fd 63  array "cryo_frozen" (u32 -> u64, 2): [0] = 42, then frozen
//! fd 64  queue "cryo_queue" (u32, 8): 1, 2, 3 pushed
//! fd 65  stack "cryo_stack" (u32, 8): 1, 2, 3 pushed
//! fd 66  the hash map of fd 60 again (BPF_MAP_GET_FD_BY_ID, BPF_F_RDONLY): a description
//!        of its own, read-only, without FD_CLOEXEC
//! fd 69  the array map of fd 61 again (BPF_F_WRONLY), O_NONBLOCK
//! fd 67  lpm_trie "cryo_lpm" (BPF_F_NO_PREALLOC, {u32 prefixlen, 4 bytes} -> u32):
//!        10.0.0.0/8 -> 8, 10.1.0.0/16 -> 16
//! fd 68  lru_hash "cryo_lru" (u32 -> u64, 8): K -> 10 K for K = 1..8 (full: what it kept)
//!   child      a child forked holding fd 60, asked over two pipes ("get K", "put K V")
//!   progarray  fd 70: a prog_array map
//!   prog       fd 71: a socket filter program (r0 = 0; exit)
//!   sockfilter fd 77: a UDP socket with that program attached (SO_ATTACH_BPF), no fd of
//!              the program left
//!   btf        fd 72: an array map "cryo_btf" with BTF (key `int`, type 1; value `long`,
//!              type 2): [1] = 11
//!   big=N      fd 75: a hash map "cryo_big" (u32 -> u64) of N elements: K -> 3 K
//!   inflight   a stream socketpair at fds 50, 51; a hash map "cryo_flight" (1 -> 111)
//!              sent from 50 (SCM_RIGHTS) and closed here: only in flight
//!   spinlock   fd 74: an array map with BTF whose value holds a `struct bpf_spin_lock`
//!   mmap       fd 73: an array map made BPF_F_MMAPABLE (u32 -> u64, 512), mapped shared
//!              read-write, [0] = 5 written through the mapping
//! get FD K -> V | none        put FD K V -> ok        pop FD -> V | empty     push FD V -> ok
//! pcpu -> the values of [1] of fd 62, one per CPU, comma-separated
//! lpm A.B.C.D -> the value of the longest prefix (/32 lookup) | none
//! info FD -> type key_size value_size max_entries map_flags frozen accmode cloexec name
//!            (fdinfo and BPF_OBJ_GET_INFO_BY_FD)
//! id FD -> the map id (fdinfo)
//! take-map -> the message on fd 51 and what its map holds: "map 1=V info..." (fd 76)
//! fl FD -> the access mode and O_NONBLOCK of FD (F_GETFL, octal)
//! keys FD -> the u32 keys of map FD, sorted, comma-separated (BPF_MAP_GET_NEXT_KEY)
//! count FD -> the number of elements of map FD (u32 -> u64) and the sum of their values
//! btf FD -> btf_id key_type_id value_type_id (BPF_OBJ_GET_INFO_BY_FD)
//! child get K | child put K V -> as above, through the child's fd 60
//! ```

use std::io;
use std::path::Path;

use super::kids::{answer_each, ChildPipes};
use super::{failed, sys, Mode};

const HASH_FD: i32 = 60;
const PCPU_FD: i32 = 62;

/// `union bpf_attr`, as 128 zeroed bytes with fields at the offsets of linux/bpf.h.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Attr([0; 128])
    }
    fn u32(mut self, off: usize, v: u32) -> Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(mut self, off: usize, v: u64) -> Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn name(mut self, off: usize, name: &str) -> Self {
        self.0[off..off + name.len()].copy_from_slice(name.as_bytes());
        self
    }
}

/// bpf(`cmd`, `attr`): the pointers in `attr` must be valid for `cmd` (the callers' job).
fn bpf(cmd: i32, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: `attr` is 128 writable bytes; the pointers the callers put in it point to
    // buffers alive for the call, of the sizes the map's key and value sizes say.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), 128u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

fn map_create(t: u32, key: u32, value: u32, max: u32, flags: u32, name: &str) -> io::Result<i32> {
    let mut a = Attr::new()
        .u32(0, t)
        .u32(4, key)
        .u32(8, value)
        .u32(12, max)
        .u32(16, flags)
        .name(28, name);
    bpf(0, &mut a).map(|fd| fd as i32)
}

fn update(fd: i32, key: Option<&[u8]>, value: &[u8]) -> io::Result<()> {
    let mut a = Attr::new()
        .u32(0, fd as u32)
        .u64(8, key.map_or(0, |k| k.as_ptr() as u64))
        .u64(16, value.as_ptr() as u64);
    bpf(2, &mut a).map(drop)
}

/// Lookup (cmd 1) or pop (cmd 21) into `value`; false on ENOENT.
fn lookup(cmd: i32, fd: i32, key: Option<&[u8]>, value: &mut [u8]) -> io::Result<bool> {
    let mut a = Attr::new()
        .u32(0, fd as u32)
        .u64(8, key.map_or(0, |k| k.as_ptr() as u64))
        .u64(16, value.as_mut_ptr() as u64);
    match bpf(cmd, &mut a) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

fn put_u64(fd: i32, k: u32, v: u64) -> io::Result<()> {
    update(fd, Some(&k.to_ne_bytes()), &v.to_ne_bytes())
}

fn get_u64(fd: i32, k: u32) -> io::Result<Option<u64>> {
    let mut v = [0u8; 8];
    Ok(lookup(1, fd, Some(&k.to_ne_bytes()), &mut v)?.then(|| u64::from_ne_bytes(v)))
}

fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut n = 0;
    for part in text.trim().split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.parse().map_err(|_| io::Error::other("cpu list"))?;
                let b: usize = b.parse().map_err(|_| io::Error::other("cpu list"))?;
                b - a + 1
            }
            None => 1,
        };
    }
    Ok(n)
}

/// A /32 key of the LPM trie, or a prefix of `len` bits.
fn lpm_key(addr: [u8; 4], len: u32) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&len.to_ne_bytes());
    k[4..].copy_from_slice(&addr);
    k
}

/// A BTF blob of `types` (their encoded words) and `strings` (starting with NUL).
fn btf_blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
    let types: Vec<u8> = types.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let mut b = Vec::new();
    b.extend_from_slice(&0xeb9fu16.to_ne_bytes());
    b.push(1); // version
    b.push(0); // flags
    b.extend_from_slice(&24u32.to_ne_bytes()); // hdr_len
    b.extend_from_slice(&0u32.to_ne_bytes()); // type_off
    b.extend_from_slice(&(types.len() as u32).to_ne_bytes());
    b.extend_from_slice(&(types.len() as u32).to_ne_bytes()); // str_off
    b.extend_from_slice(&(strings.len() as u32).to_ne_bytes());
    b.extend_from_slice(&types);
    b.extend_from_slice(strings);
    b
}

/// BTF_KIND_INT, BTF_KIND_STRUCT in a type's info word.
const KIND_INT: u32 = 1 << 24;
const KIND_STRUCT: u32 = 4 << 24;

/// An array map "NAME" (2 entries) whose key is BTF type 1 and value BTF type `value`, of
/// BTF object `blob` loaded here.
fn btf_map(name: &str, blob: &[u8], value: u32, value_size: u32) -> io::Result<i32> {
    let mut a = Attr::new()
        .u64(0, blob.as_ptr() as u64)
        .u32(16, blob.len() as u32);
    let btf = bpf(18, &mut a)? as i32;
    let mut a = Attr::new()
        .u32(0, 2)
        .u32(4, 4)
        .u32(8, value_size)
        .u32(12, 2)
        .name(28, name)
        .u32(48, btf as u32)
        .u32(52, 1)
        .u32(56, value);
    let fd = bpf(0, &mut a).map(|fd| fd as i32);
    sys::close(btf);
    fd
}

/// BTF: 1 `int` (4 bytes), 2 `long` (8 bytes).
fn btf_ints() -> Vec<u8> {
    btf_blob(&[1, KIND_INT, 4, 32, 5, KIND_INT, 8, 64], b"\0int\0long\0")
}

/// BTF: 1 `int`, 2 `struct bpf_spin_lock { int val; }`, 3 `struct val { struct
/// bpf_spin_lock lock; int v; }`.
fn btf_spin_lock() -> Vec<u8> {
    // Strings: 1 "int", 5 "bpf_spin_lock", 19 "val", 23 "lock", 28 "v".
    let strings = b"\0int\0bpf_spin_lock\0val\0lock\0v\0";
    btf_blob(
        &[
            1,
            KIND_INT,
            4,
            32, // int
            5,
            KIND_STRUCT | 1,
            4,
            19,
            1,
            0, // bpf_spin_lock { int val @0 }
            19,
            KIND_STRUCT | 2,
            8,
            23,
            2,
            0,
            28,
            1,
            32, // val { lock @0, v @32 bits }
        ],
        strings,
    )
}

/// The UDP socket of the `sockfilter` option.
const SOCKFILTER_FD: i32 = 77;

/// A socket filter program: r0 = 0; exit.
fn prog() -> io::Result<i32> {
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    let mut a = Attr::new()
        .u32(0, 1) // BPF_PROG_TYPE_SOCKET_FILTER
        .u32(4, 2)
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64);
    bpf(5, &mut a).map(|fd| fd as i32)
}

/// `bpf [child] [progarray] [prog] [btf]`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    Ok(Box::new(Bpf::start(args).map_err(failed("bpf"))?))
}

/// The `bpf` mode (see the module doc).
struct Bpf {
    child: Option<ChildPipes>,
}

impl Bpf {
    fn start(opts: &[String]) -> io::Result<Self> {
        let has = |o: &str| opts.iter().any(|x| x == o);
        let hash = sys::move_fd(map_create(1, 4, 8, 16, 0, "cryo_hash")?, HASH_FD)?;
        for (k, v) in [(1, 100), (2, 200), (3, 300)] {
            put_u64(hash, k, v)?;
        }
        let array = sys::move_fd(map_create(2, 4, 8, 8, 0, "cryo_array")?, 61)?;
        put_u64(array, 0, 7)?;
        put_u64(array, 5, 55)?;
        let pcpu = sys::move_fd(map_create(6, 4, 8, 4, 0, "cryo_pcpu")?, PCPU_FD)?;
        let values: Vec<u8> = (0..possible_cpus()?)
            .flat_map(|cpu| (10 + cpu as u64).to_ne_bytes())
            .collect();
        update(pcpu, Some(&1u32.to_ne_bytes()), &values)?;
        let frozen = sys::move_fd(map_create(2, 4, 8, 2, 0, "cryo_frozen")?, 63)?;
        put_u64(frozen, 0, 42)?;
        bpf(22, &mut Attr::new().u32(0, frozen as u32))?;
        for (t, fd, name) in [(22, 64, "cryo_queue"), (23, 65, "cryo_stack")] {
            let q = sys::move_fd(map_create(t, 0, 4, 8, 0, name)?, fd)?;
            for v in 1u32..=3 {
                update(q, None, &v.to_ne_bytes())?;
            }
        }
        let id = map_id(hash)?;
        // BPF_MAP_GET_FD_BY_ID with BPF_F_RDONLY (open_flags at offset 8).
        let ro = bpf(14, &mut Attr::new().u32(0, id).u32(8, 1 << 3))? as i32;
        let ro = sys::move_fd(ro, 66)?;
        // SAFETY: F_SETFD on our own fd, no pointers.
        sys::cvt(unsafe { libc::fcntl(ro, libc::F_SETFD, 0) })?;
        // The array again, write-only (BPF_F_WRONLY), made O_NONBLOCK.
        let wo = bpf(14, &mut Attr::new().u32(0, map_id(array)?).u32(8, 1 << 4))? as i32;
        let wo = sys::move_fd(wo, 69)?;
        // SAFETY: F_SETFL on our own fd, no pointers.
        sys::cvt(unsafe { libc::fcntl(wo, libc::F_SETFL, libc::O_NONBLOCK) })?;
        // BPF_F_NO_PREALLOC, as an LPM trie requires.
        let lpm = sys::move_fd(map_create(11, 8, 4, 16, 1, "cryo_lpm")?, 67)?;
        update(lpm, Some(&lpm_key([10, 0, 0, 0], 8)), &8u32.to_ne_bytes())?;
        update(lpm, Some(&lpm_key([10, 1, 0, 0], 16)), &16u32.to_ne_bytes())?;
        let lru = sys::move_fd(map_create(9, 4, 8, 8, 0, "cryo_lru")?, 68)?;
        for k in 1..=8 {
            put_u64(lru, k, u64::from(k) * 10)?;
        }
        if has("progarray") {
            sys::move_fd(map_create(3, 4, 4, 4, 0, "cryo_progs")?, 70)?;
        }
        if has("prog") {
            sys::move_fd(prog()?, 71)?;
        }
        if has("sockfilter") {
            // SAFETY: socket takes numbers.
            let sock = sys::cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) })?;
            let sock = sys::move_fd(sock, SOCKFILTER_FD)?;
            let program = prog()?;
            // SAFETY: SO_ATTACH_BPF reads the int the pointer points at, alive for the call.
            sys::cvt(unsafe {
                libc::setsockopt(
                    sock,
                    libc::SOL_SOCKET,
                    libc::SO_ATTACH_BPF,
                    (&program as *const i32).cast(),
                    4,
                )
            })?;
            // The socket holds the program: no fd of it is left to be refused instead.
            sys::close(program);
        }
        if has("btf") {
            let fd = sys::move_fd(btf_map("cryo_btf", &btf_ints(), 2, 8)?, 72)?;
            put_u64(fd, 1, 11)?;
        }
        if has("spinlock") {
            sys::move_fd(btf_map("cryo_locked", &btf_spin_lock(), 3, 8)?, 74)?;
        }
        if has("mmap") {
            let fd = sys::move_fd(map_create(2, 4, 8, 512, 1 << 10, "cryo_mmap")?, 73)?;
            // SAFETY: a new shared mapping of 4096 bytes of our map fd, at an address the
            // kernel picks; nothing else uses it.
            let at = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            if at == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: the mapping is 4096 writable bytes, 8-aligned (page-aligned).
            unsafe { at.cast::<u64>().write(5) };
        }
        if let Some(n) = opts.iter().find_map(|o| o.strip_prefix("big=")) {
            let n: u32 = n.parse().map_err(|_| io::Error::other("big=N"))?;
            let big = sys::move_fd(map_create(1, 4, 8, n, 0, "cryo_big")?, 75)?;
            for k in 0..n {
                put_u64(big, k, u64::from(k) * 3)?;
            }
        }
        if has("inflight") {
            let (a, _b) = super::unix::socketpair(libc::SOCK_STREAM)?;
            let map = map_create(1, 4, 8, 4, 0, "cryo_flight")?;
            put_u64(map, 1, 111)?;
            super::unix_msg::sendmsg(a, b"map", &[map], None)?;
            sys::close(map);
        }
        let mut child = None;
        if has("child") {
            let (a_rd, a_wr) = sys::pipe()?;
            let (b_rd, b_wr) = sys::pipe()?;
            // the workload is single-threaded here; the child only makes syscalls.
            let kid = sys::fork()?;
            if kid == 0 {
                answer_each(a_rd, b_wr, |msg| {
                    let words: Vec<&str> = msg.split_whitespace().collect();
                    keyed(HASH_FD, &words).unwrap_or_else(|e| format!("err {e}"))
                });
                std::process::exit(3)
            }
            child = Some(ChildPipes {
                to_child: a_wr,
                from_child: b_rd,
            });
        }
        Ok(Self { child })
    }
}

/// The map id fdinfo shows for `fd`.
fn map_id(fd: i32) -> io::Result<u32> {
    fdinfo_field(fd, "map_id")?
        .parse()
        .map_err(|_| io::Error::other("map_id"))
}

fn fdinfo_field(fd: i32, key: &str) -> io::Result<String> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
        .ok_or_else(|| io::Error::other(format!("no {key} in fdinfo of {fd}")))
}

/// `get K` and `put K V` on map `fd` (u32 -> u64).
fn keyed(fd: i32, words: &[&str]) -> io::Result<String> {
    let num = |s: &str| -> io::Result<u64> {
        s.parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("bad number {s:?}")))
    };
    match words {
        ["get", k] => Ok(get_u64(fd, num(k)? as u32)?.map_or("none".into(), |v| v.to_string())),
        ["put", k, v] => put_u64(fd, num(k)? as u32, num(v)?).map(|()| "ok".into()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "get K | put K V",
        )),
    }
}

/// The name BPF_OBJ_GET_INFO_BY_FD gives map `fd`.
fn map_name(fd: i32) -> io::Result<String> {
    let bytes = map_info(fd)?;
    let name = &bytes[24..40];
    let end = name.iter().position(|&b| b == 0).unwrap_or(16);
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// BPF_OBJ_GET_INFO_BY_FD of map `fd`: the 88 bytes of struct bpf_map_info.
fn map_info(fd: i32) -> io::Result<Vec<u8>> {
    let mut info = [0u64; 11];
    let mut a = Attr::new()
        .u32(0, fd as u32)
        .u32(4, 88)
        .u64(8, info.as_mut_ptr() as u64);
    bpf(15, &mut a)?;
    Ok(info.iter().flat_map(|w| w.to_ne_bytes()).collect())
}

impl Bpf {
    fn answer(&mut self, verb: &str, args: &[&str]) -> io::Result<String> {
        let fd_of = |s: &str| -> io::Result<i32> {
            s.parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "FD"))
        };
        match (verb, args) {
            ("get", [fd, k]) => keyed(fd_of(fd)?, &["get", k]),
            ("put", [fd, k, v]) => keyed(fd_of(fd)?, &["put", k, v]),
            ("pop", [fd]) => {
                let mut v = [0u8; 4];
                Ok(if lookup(21, fd_of(fd)?, None, &mut v)? {
                    u32::from_ne_bytes(v).to_string()
                } else {
                    "empty".into()
                })
            }
            ("push", [fd, v]) => {
                let v: u32 = v
                    .parse()
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "V"))?;
                update(fd_of(fd)?, None, &v.to_ne_bytes()).map(|()| "ok".into())
            }
            ("pcpu", []) => {
                let n = possible_cpus()?;
                let mut v = vec![0u8; 8 * n];
                if !lookup(1, PCPU_FD, Some(&1u32.to_ne_bytes()), &mut v)? {
                    return Ok("none".into());
                }
                Ok(v.chunks(8)
                    .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")).to_string())
                    .collect::<Vec<_>>()
                    .join(","))
            }
            ("lpm", [addr]) => {
                let ip: std::net::Ipv4Addr = addr
                    .parse()
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "A.B.C.D"))?;
                let mut v = [0u8; 4];
                Ok(if lookup(1, 67, Some(&lpm_key(ip.octets(), 32)), &mut v)? {
                    u32::from_ne_bytes(v).to_string()
                } else {
                    "none".into()
                })
            }
            ("info", [fd]) => {
                let fd = fd_of(fd)?;
                let f = |k: &str| fdinfo_field(fd, k);
                let flags =
                    u32::from_str_radix(&f("flags")?, 8).map_err(|_| io::Error::other("flags"))?;
                // SAFETY: F_GETFD on our own fd, no pointers.
                let fd_flags = sys::cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
                Ok(format!(
                    "{} {} {} {} {} {} {} {} {}",
                    f("map_type")?,
                    f("key_size")?,
                    f("value_size")?,
                    f("max_entries")?,
                    f("map_flags")?,
                    f("frozen")?,
                    flags & libc::O_ACCMODE as u32,
                    fd_flags & libc::FD_CLOEXEC != 0,
                    map_name(fd)?
                ))
            }
            ("id", [fd]) => map_id(fd_of(fd)?).map(|id| id.to_string()),
            ("take-map", []) => {
                let (data, fds, _) = super::unix_msg::recvmsg(51)?;
                let [map] = fds[..] else {
                    return Err(io::Error::other(format!("{} fds received", fds.len())));
                };
                let map = sys::move_fd(map, 76)?;
                let v = get_u64(map, 1)?.map_or("none".into(), |v| v.to_string());
                let info = self.answer("info", &["76"])?;
                Ok(format!("{} 1={v} {info}", String::from_utf8_lossy(&data)))
            }
            ("fl", [fd]) => {
                // SAFETY: F_GETFL on an fd number, no pointers.
                let fl = sys::cvt(unsafe { libc::fcntl(fd_of(fd)?, libc::F_GETFL) })?;
                Ok(format!("{:o}", fl & (libc::O_ACCMODE | libc::O_NONBLOCK)))
            }
            ("count", [fd]) => {
                let fd = fd_of(fd)?;
                let (mut n, mut sum) = (0u64, 0u64);
                let mut next = [0u8; 4];
                let mut at: Option<[u8; 4]> = None;
                loop {
                    let mut a = Attr::new()
                        .u32(0, fd as u32)
                        .u64(8, at.as_ref().map_or(0, |k| k.as_ptr() as u64))
                        .u64(16, next.as_mut_ptr() as u64);
                    match bpf(4, &mut a) {
                        Ok(_) => {}
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
                        Err(e) => return Err(e),
                    }
                    n += 1;
                    sum += get_u64(fd, u32::from_ne_bytes(next))?.unwrap_or(0);
                    at = Some(next);
                }
                Ok(format!("{n} {sum}"))
            }
            ("keys", [fd]) => {
                let fd = fd_of(fd)?;
                let mut keys = Vec::new();
                let mut next = [0u8; 4];
                let mut at: Option<[u8; 4]> = None;
                loop {
                    let mut a = Attr::new()
                        .u32(0, fd as u32)
                        .u64(8, at.as_ref().map_or(0, |k| k.as_ptr() as u64))
                        .u64(16, next.as_mut_ptr() as u64);
                    match bpf(4, &mut a) {
                        Ok(_) => {}
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
                        Err(e) => return Err(e),
                    }
                    keys.push(u32::from_ne_bytes(next));
                    at = Some(next);
                }
                keys.sort_unstable();
                Ok(keys
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","))
            }
            ("btf", [fd]) => {
                let b = map_info(fd_of(fd)?)?;
                let at = |off: usize| u32::from_ne_bytes(b[off..off + 4].try_into().expect("4"));
                Ok(format!("{} {} {}", at(64), at(68), at(72)))
            }
            ("child", words) => {
                let pipes = self
                    .child
                    .as_ref()
                    .ok_or_else(|| io::Error::other("no child"))?;
                pipes.ask(&words.join(" "))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown command {verb:?}"),
            )),
        }
    }
}

impl Mode for Bpf {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        self.answer(verb, args).map_err(|e| e.to_string())
    }
}
