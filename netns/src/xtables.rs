//! Legacy iptables and ip6tables tables of a namespace (x_tables, not nf_tables): read whole
//! from the kernel (IPT_SO_GET_INFO, IPT_SO_GET_ENTRIES) and written back whole into another
//! namespace (IPT_SO_SET_REPLACE, then IPT_SO_SET_ADD_COUNTERS).
//!
//! The kernel speaks in raw structs on a raw IP socket (`SOL_IP`, or `SOL_IPV6` with the same
//! option numbers), laid out as on x86_64:
//!
//! ```text
//! ipt_getinfo (84)      name[32] valid_hooks hook_entry[5] underflow[5] num_entries size
//! ipt_get_entries (40)  name[32] size pad[4] | entries[size]
//! ipt_replace (96)      name[32] valid_hooks num_entries size hook_entry[5] underflow[5]
//!                       num_counters *counters(@88) | entries[size]
//! xt_counters_info (40) name[32] num_counters pad[4] | xt_counters[num_counters]
//! ipt_entry (112)       ip(84) nfcache target_offset:u16@88 next_offset:u16@90 comefrom
//!                       xt_counters{pcnt,bcnt}@96 | matches.. target
//! ip6t_entry (168)      ipv6(136) nfcache target_offset:u16@140 next_offset:u16@142
//!                       comefrom pad[4] xt_counters@152 | matches.. target
//! ```
//!
//! The entries blob goes back exactly as GET_ENTRIES gave it: matches and targets come out in
//! their user form (names and revisions, kernel-private data zeroed), jumps are offsets into
//! the blob itself, and the kernel clears each entry's counters and `comefrom` on the way in
//! (check_entry_size_and_hooks), so the values the blob carries there are harmless. Replacing
//! zeroes the counters; ADD_COUNTERS then adds the saved ones to the fresh zeroes.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;

use crate::error::NetnsError;
use crate::sys;

/// `XT_TABLE_MAXNAMELEN`: a table's name and its NUL.
const NAME_LEN: usize = 32;
/// `NF_INET_NUMHOOKS`.
const NUM_HOOKS: usize = 5;
/// `IPT_SO_GET_INFO` / `IP6T_SO_GET_INFO` (getsockopt).
const SO_GET_INFO: libc::c_int = 64;
/// `IPT_SO_GET_ENTRIES` / `IP6T_SO_GET_ENTRIES` (getsockopt).
const SO_GET_ENTRIES: libc::c_int = 65;
/// `IPT_SO_SET_REPLACE` / `IP6T_SO_SET_REPLACE` (setsockopt).
const SO_SET_REPLACE: libc::c_int = 64;
/// `IPT_SO_SET_ADD_COUNTERS` / `IP6T_SO_SET_ADD_COUNTERS` (setsockopt).
const SO_SET_ADD_COUNTERS: libc::c_int = 65;
/// `sizeof(struct ipt_getinfo)`: the kernel wants exactly this length.
const GETINFO_SIZE: usize = 84;
/// `sizeof(struct ipt_get_entries)`: 36 bytes padded to the 8-alignment of the entries.
const GET_ENTRIES_HEADER: usize = 40;
/// `sizeof(struct xt_counters_info)`: 36 bytes padded to the 8-alignment of the counters.
const COUNTERS_INFO_HEADER: usize = 40;
/// How often a read or replace racing with another writer of the table is tried again.
const ATTEMPTS: usize = 8;

/// The address family of a legacy table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyFamily {
    /// iptables (`ip_tables`).
    Ipv4,
    /// ip6tables (`ip6_tables`).
    Ipv6,
}

impl LegacyFamily {
    /// The tool that manages this family's tables, as errors name it.
    fn tool(self) -> &'static str {
        match self {
            LegacyFamily::Ipv4 => "iptables",
            LegacyFamily::Ipv6 => "ip6tables",
        }
    }

    /// The file of /proc/thread-self/net listing the family's tables.
    fn names_file(self) -> &'static str {
        match self {
            LegacyFamily::Ipv4 => "ip_tables_names",
            LegacyFamily::Ipv6 => "ip6_tables_names",
        }
    }

    fn domain(self) -> libc::c_int {
        match self {
            LegacyFamily::Ipv4 => libc::AF_INET,
            LegacyFamily::Ipv6 => libc::AF_INET6,
        }
    }

    fn level(self) -> libc::c_int {
        match self {
            LegacyFamily::Ipv4 => libc::SOL_IP,
            LegacyFamily::Ipv6 => libc::SOL_IPV6,
        }
    }

    /// The socket option's name, for errors.
    fn option(self, op: Op) -> &'static str {
        match (self, op) {
            (LegacyFamily::Ipv4, Op::GetInfo) => "IPT_SO_GET_INFO",
            (LegacyFamily::Ipv4, Op::GetEntries) => "IPT_SO_GET_ENTRIES",
            (LegacyFamily::Ipv4, Op::Replace) => "IPT_SO_SET_REPLACE",
            (LegacyFamily::Ipv4, Op::AddCounters) => "IPT_SO_SET_ADD_COUNTERS",
            (LegacyFamily::Ipv6, Op::GetInfo) => "IP6T_SO_GET_INFO",
            (LegacyFamily::Ipv6, Op::GetEntries) => "IP6T_SO_GET_ENTRIES",
            (LegacyFamily::Ipv6, Op::Replace) => "IP6T_SO_SET_REPLACE",
            (LegacyFamily::Ipv6, Op::AddCounters) => "IP6T_SO_SET_ADD_COUNTERS",
        }
    }

    /// `sizeof(struct ipt_entry)` / `sizeof(struct ip6t_entry)`: the fixed part of an entry.
    fn entry_size(self) -> usize {
        match self {
            LegacyFamily::Ipv4 => 112,
            LegacyFamily::Ipv6 => 168,
        }
    }

    /// Offset of `target_offset` (u16) in an entry; `next_offset` (u16) follows it.
    fn target_offset_at(self) -> usize {
        match self {
            LegacyFamily::Ipv4 => 88,
            LegacyFamily::Ipv6 => 140,
        }
    }

    /// Offset of `struct xt_counters` in an entry.
    fn counters_at(self) -> usize {
        match self {
            LegacyFamily::Ipv4 => 96,
            LegacyFamily::Ipv6 => 152,
        }
    }
}

#[derive(Clone, Copy)]
enum Op {
    GetInfo,
    GetEntries,
    Replace,
    AddCounters,
}

/// One legacy table as the kernel hands it out (IPT_SO_GET_INFO + IPT_SO_GET_ENTRIES).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyTable {
    /// iptables or ip6tables.
    pub family: LegacyFamily,
    /// "filter", "nat", "mangle", "raw", "security".
    pub name: String,
    /// Bit `h` set: hook `h` (NF_INET_PRE_ROUTING..NF_INET_POST_ROUTING) has a chain.
    pub valid_hooks: u32,
    /// Offset in `entries` of each hook's first rule.
    pub hook_entry: [u32; 5],
    /// Offset in `entries` of each hook's policy entry.
    pub underflow: [u32; 5],
    /// How many entries `entries` holds.
    pub num_entries: u32,
    /// The entries blob exactly as GET_ENTRIES returned it (its length is the info's size).
    pub entries: Vec<u8>,
    /// (packets, bytes) of each entry, in blob order.
    pub counters: Vec<(u64, u64)>,
}

impl LegacyTable {
    /// "iptables table filter" / "ip6tables table nat": how errors and comparisons name it.
    pub fn describe(&self) -> String {
        describe(self.family, &self.name)
    }
}

fn describe(family: LegacyFamily, name: &str) -> String {
    format!("{} table {name}", family.tool())
}

/// The error of a step on table `what` (its `describe()`).
// A variant naming the table and the step (NetnsError::Xtables) would fit better; Netlink's
// free-form step carries both meanwhile.
fn fail(what: &str, step: &str, errno: Errno) -> NetnsError {
    NetnsError::Netlink {
        step: format!("{what}: {step}"),
        errno,
    }
}

/// Every legacy iptables and ip6tables table of the calling thread's network namespace: the
/// names from /proc/thread-self/net/ip_tables_names and ip6_tables_names (a missing file
/// means the module is not loaded: no table), iptables first, each family in the order of
/// its file. Only listed tables are read: reading a table's info instantiates it in a
/// namespace that did not have it.
pub fn capture() -> Result<Vec<LegacyTable>, NetnsError> {
    let mut tables = Vec::new();
    for family in [LegacyFamily::Ipv4, LegacyFamily::Ipv6] {
        let names = table_names(family)?;
        if names.is_empty() {
            continue;
        }
        let sock = open(family)?;
        for name in names {
            tables.push(read_table(sock.as_fd(), family, &name)?);
        }
    }
    Ok(tables)
}

/// Writes `tables` into the calling thread's network namespace: each one replaced whole (its
/// info read first, which instantiates it in a fresh namespace and gives the number of
/// counters the replace hands back), then its counters put back (replacing zeroes them).
///
/// Tables are instantiated last to first: the kernel lists the newest table first, so a
/// fresh namespace then lists them in `tables`' order, as the captured one did. A table
/// already replaced stays so if a later one fails.
pub fn restore(tables: &[LegacyTable]) -> Result<(), NetnsError> {
    let mut v4 = None;
    let mut v6 = None;
    for table in tables.iter().rev() {
        let slot = match table.family {
            LegacyFamily::Ipv4 => &mut v4,
            LegacyFamily::Ipv6 => &mut v6,
        };
        let sock = match slot {
            Some(sock) => sock,
            None => slot.insert(open(table.family)?),
        };
        write_table(sock.as_fd(), table)?;
    }
    Ok(())
}

/// The names listed in the family's names file (none if the file is missing).
fn table_names(family: LegacyFamily) -> Result<Vec<String>, NetnsError> {
    let path = Path::new("/proc/thread-self/net").join(family.names_file());
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(NetnsError::Read { path, error }),
    }
}

fn open(family: LegacyFamily) -> Result<OwnedFd, NetnsError> {
    sys::raw_ip_socket(family.domain()).map_err(|errno| NetnsError::Netlink {
        step: format!("{}: open raw socket", family.tool()),
        errno,
    })
}

/// The table's name as the kernel's `char name[32]`: NUL-terminated, NUL-padded.
fn name_field(what: &str, name: &str) -> Result<[u8; NAME_LEN], NetnsError> {
    if name.is_empty() || name.len() >= NAME_LEN || name.contains('\0') {
        return Err(fail(
            what,
            "name is not 1 to 31 bytes without NUL",
            Errno::EINVAL,
        ));
    }
    let mut field = [0; NAME_LEN];
    field[..name.len()].copy_from_slice(name.as_bytes());
    Ok(field)
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

/// What IPT_SO_GET_INFO says of a table.
struct Info {
    valid_hooks: u32,
    hook_entry: [u32; NUM_HOOKS],
    underflow: [u32; NUM_HOOKS],
    num_entries: u32,
    size: u32,
}

fn get_info(
    sock: BorrowedFd<'_>,
    family: LegacyFamily,
    name: &[u8; NAME_LEN],
    what: &str,
) -> Result<Info, NetnsError> {
    let step = family.option(Op::GetInfo);
    let mut buf = [0u8; GETINFO_SIZE];
    buf[..NAME_LEN].copy_from_slice(name);
    let len = sys::getsockopt_inout(sock, family.level(), SO_GET_INFO, &mut buf)
        .map_err(|errno| fail(what, step, errno))?;
    if len != GETINFO_SIZE {
        return Err(fail(what, step, Errno::EPROTO));
    }
    let hooks = |at: usize| std::array::from_fn(|h| u32_at(&buf, at + 4 * h));
    Ok(Info {
        valid_hooks: u32_at(&buf, 32),
        hook_entry: hooks(36),
        underflow: hooks(56),
        num_entries: u32_at(&buf, 76),
        size: u32_at(&buf, 80),
    })
}

/// Reads one table. The table may change between GET_INFO and GET_ENTRIES (another
/// iptables): the kernel then refuses the size with EAGAIN, or the blob holds another number
/// of entries, and both are read again.
fn read_table(
    sock: BorrowedFd<'_>,
    family: LegacyFamily,
    name: &str,
) -> Result<LegacyTable, NetnsError> {
    let what = describe(family, name);
    let name_bytes = name_field(&what, name)?;
    let step = family.option(Op::GetEntries);
    for _ in 0..ATTEMPTS {
        let info = get_info(sock, family, &name_bytes, &what)?;
        let mut buf = vec![0u8; GET_ENTRIES_HEADER + info.size as usize];
        buf[..NAME_LEN].copy_from_slice(&name_bytes);
        put_u32(&mut buf, NAME_LEN, info.size);
        match sys::getsockopt_inout(sock, family.level(), SO_GET_ENTRIES, &mut buf) {
            Err(Errno::EAGAIN) => continue,
            Err(errno) => return Err(fail(&what, step, errno)),
            Ok(len) if len != buf.len() => return Err(fail(&what, step, Errno::EPROTO)),
            Ok(_) => {}
        }
        let entries = buf.split_off(GET_ENTRIES_HEADER);
        let counters = match entry_counters(family, &entries) {
            Ok(c) => c,
            Err(detail) => {
                return Err(fail(&what, &format!("{step}: {detail}"), Errno::EPROTO));
            }
        };
        if counters.len() != info.num_entries as usize {
            continue;
        }
        return Ok(LegacyTable {
            family,
            name: name.to_string(),
            valid_hooks: info.valid_hooks,
            hook_entry: info.hook_entry,
            underflow: info.underflow,
            num_entries: info.num_entries,
            entries,
            counters,
        });
    }
    Err(fail(
        &what,
        &format!("{step}: the table kept changing while read"),
        Errno::EAGAIN,
    ))
}

/// Walks an entries blob and returns each entry's (packets, bytes), or what is wrong with
/// it. The checks are the kernel's own on a replace (alignment, sizes, offsets in bounds),
/// so a blob that passes here is walked the same way there.
fn entry_counters(family: LegacyFamily, entries: &[u8]) -> Result<Vec<(u64, u64)>, String> {
    let fixed = family.entry_size();
    // xt_entry_target's header (u16 target_size and name[29] + revision).
    let target_header = 32;
    let mut counters = Vec::new();
    let mut off = 0;
    while off < entries.len() {
        if off + fixed > entries.len() {
            return Err(format!(
                "entry at {off} overruns the blob of {}",
                entries.len()
            ));
        }
        let e = &entries[off..];
        let at = family.target_offset_at();
        let target_offset = u16::from_ne_bytes([e[at], e[at + 1]]) as usize;
        let next_offset = u16::from_ne_bytes([e[at + 2], e[at + 3]]) as usize;
        if next_offset < fixed + target_header || next_offset & 7 != 0 {
            return Err(format!("entry at {off}: bad next_offset {next_offset}"));
        }
        if off + next_offset > entries.len() {
            return Err(format!(
                "entry at {off} overruns the blob of {}",
                entries.len()
            ));
        }
        if target_offset < fixed || target_offset + target_header > next_offset {
            return Err(format!("entry at {off}: bad target_offset {target_offset}"));
        }
        let c = family.counters_at();
        counters.push((u64_at(e, c), u64_at(e, c + 8)));
        off += next_offset;
    }
    Ok(counters)
}

/// Replaces one table with `table` and puts its counters back.
fn write_table(sock: BorrowedFd<'_>, table: &LegacyTable) -> Result<(), NetnsError> {
    let what = table.describe();
    let name = name_field(&what, &table.name)?;
    // Refuse what the kernel would misread rather than have it guess: the counters must be
    // one per entry of a well-formed blob.
    let walked = entry_counters(table.family, &table.entries)
        .map_err(|detail| fail(&what, &format!("image: {detail}"), Errno::EINVAL))?;
    if walked.len() != table.num_entries as usize || table.counters.len() != walked.len() {
        return Err(fail(
            &what,
            &format!(
                "image: {} entries in the blob, {} said, {} counters",
                walked.len(),
                table.num_entries,
                table.counters.len()
            ),
            Errno::EINVAL,
        ));
    }
    let size = u32::try_from(table.entries.len())
        .map_err(|_| fail(&what, "image: blob over 4 GiB", Errno::EINVAL))?;

    let step = table.family.option(Op::Replace);
    let mut replaced = false;
    for _ in 0..ATTEMPTS {
        // Instantiates the table in a namespace that lacks it, and says how many entries
        // (so counters) the table being replaced has: the kernel wants that number exactly.
        let here = get_info(sock, table.family, &name, &what)?;
        if here.valid_hooks != table.valid_hooks {
            return Err(fail(
                &what,
                &format!(
                    "{step}: hooks {:#x} here, {:#x} in the image",
                    here.valid_hooks, table.valid_hooks
                ),
                Errno::EINVAL,
            ));
        }
        let mut buf = vec![0u8; sys::XT_REPLACE_HEADER + table.entries.len()];
        buf[..NAME_LEN].copy_from_slice(&name);
        put_u32(&mut buf, 32, table.valid_hooks);
        put_u32(&mut buf, 36, table.num_entries);
        put_u32(&mut buf, 40, size);
        for h in 0..NUM_HOOKS {
            put_u32(&mut buf, 44 + 4 * h, table.hook_entry[h]);
            put_u32(&mut buf, 64 + 4 * h, table.underflow[h]);
        }
        put_u32(&mut buf, sys::XT_REPLACE_NUM_COUNTERS_AT, here.num_entries);
        buf[sys::XT_REPLACE_HEADER..].copy_from_slice(&table.entries);
        // The replaced table's counters land here; nothing needs them.
        let mut old = vec![0u8; here.num_entries as usize * sys::XT_COUNTERS_SIZE];
        match sys::xt_set_replace(
            sock,
            table.family.level(),
            SO_SET_REPLACE,
            &mut buf,
            &mut old,
        ) {
            // Someone changed the table since GET_INFO, so num_counters is stale.
            Err(Errno::EAGAIN) => continue,
            Err(errno) => return Err(fail(&what, step, errno)),
            Ok(()) => {
                replaced = true;
                break;
            }
        }
    }
    if !replaced {
        return Err(fail(
            &what,
            &format!("{step}: the table kept changing"),
            Errno::EAGAIN,
        ));
    }

    let mut buf = vec![0u8; COUNTERS_INFO_HEADER + table.counters.len() * sys::XT_COUNTERS_SIZE];
    buf[..NAME_LEN].copy_from_slice(&name);
    put_u32(&mut buf, NAME_LEN, table.num_entries);
    for (i, (packets, bytes)) in table.counters.iter().enumerate() {
        let at = COUNTERS_INFO_HEADER + i * sys::XT_COUNTERS_SIZE;
        buf[at..at + 8].copy_from_slice(&packets.to_ne_bytes());
        buf[at + 8..at + 16].copy_from_slice(&bytes.to_ne_bytes());
    }
    sys::setsockopt_bytes(sock, table.family.level(), SO_SET_ADD_COUNTERS, &buf)
        .map_err(|errno| fail(&what, table.family.option(Op::AddCounters), errno))
}

#[cfg(test)]
mod tests {
    use std::net::{TcpStream, UdpSocket};
    use std::process::Command;
    use std::time::Duration;

    use super::*;
    use crate::ns::run_in_new;

    /// Runs `tool args`, panicking with its name if it is missing or fails; returns stdout.
    fn run(tool: &str, args: &[&str]) -> String {
        let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
            panic!("{tool} cannot be run ({e}): the iptables package provides it")
        });
        assert!(
            out.status.success(),
            "{tool} {}: {}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// `tool -c` (a *-save) without its `#` lines, which carry dates.
    fn save(tool: &str) -> String {
        run(tool, &["-c"])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    fn names(family: LegacyFamily) -> Vec<String> {
        table_names(family).expect("read names file")
    }

    /// Equal tables, or a panic naming the first table and field that differ.
    fn assert_same(got: &[LegacyTable], want: &[LegacyTable]) {
        let list = |t: &[LegacyTable]| t.iter().map(|t| t.describe()).collect::<Vec<_>>();
        assert_eq!(list(got), list(want), "tables");
        for (g, w) in got.iter().zip(want) {
            let what = w.describe();
            assert_eq!(g.valid_hooks, w.valid_hooks, "{what}: valid_hooks");
            assert_eq!(g.hook_entry, w.hook_entry, "{what}: hook_entry");
            assert_eq!(g.underflow, w.underflow, "{what}: underflow");
            assert_eq!(g.num_entries, w.num_entries, "{what}: num_entries");
            assert_eq!(g.counters, w.counters, "{what}: counters");
            assert_eq!(g.entries.len(), w.entries.len(), "{what}: size");
            if let Some(at) = g.entries.iter().zip(&w.entries).position(|(a, b)| a != b) {
                panic!("{what}: entries differ first at byte {at}");
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn xtables_round_trip_keeps_rules_policies_and_counters() {
        let ipt = |args: &[&str]| run("iptables-legacy", &[&["-w"], args].concat());
        let ip6t = |args: &[&str]| run("ip6tables-legacy", &[&["-w"], args].concat());
        let (a, a_save4, a_save6) = run_in_new(|| {
            ipt(&[
                "-A",
                "INPUT",
                "-i",
                "lo",
                "-p",
                "tcp",
                "-m",
                "state",
                "--state",
                "NEW,ESTABLISHED",
                "-j",
                "ACCEPT",
            ]);
            ipt(&["-A", "INPUT", "-j", "DROP"]);
            ipt(&["-N", "mine"]);
            ipt(&["-A", "mine", "-p", "udp", "--dport", "53", "-j", "RETURN"]);
            ipt(&["-A", "OUTPUT", "-j", "mine"]);
            ipt(&["-P", "FORWARD", "DROP"]);
            ipt(&[
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "--dport",
                "1",
                "-j",
                "REDIRECT",
                "--to-ports",
                "2",
            ]);
            // Counters past 32 bits, set by iptables itself (through ADD_COUNTERS too).
            ipt(&[
                "-t",
                "mangle",
                "-A",
                "FORWARD",
                "-c",
                "5000000000",
                "6000000000000",
                "-j",
                "ACCEPT",
            ]);
            ip6t(&["-A", "OUTPUT", "-p", "udp", "--dport", "9", "-j", "ACCEPT"]);

            // Real traffic on loopback (up in a namespace of run_in_new) counts.
            let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
            udp.send_to(b"x", "127.0.0.1:53").expect("send udp");
            let udp6 = UdpSocket::bind("[::1]:0").expect("bind udp6");
            udp6.send_to(b"x", "[::1]:9").expect("send udp6");
            // Through nat OUTPUT's REDIRECT; nobody listens on 2, so refused (or timed out).
            let _ = TcpStream::connect_timeout(
                &"127.0.0.1:1".parse().unwrap(),
                Duration::from_millis(300),
            );

            let tables = capture().expect("capture A");
            (
                tables,
                save("iptables-legacy-save"),
                save("ip6tables-legacy-save"),
            )
        })
        .expect("namespace A");

        // The capture holds what was made, with counters from traffic and from -c.
        let find = |family, name: &str| {
            a.iter()
                .find(|t| t.family == family && t.name == name)
                .unwrap_or_else(|| panic!("{} not captured", describe(family, name)))
        };
        for name in ["filter", "nat", "mangle"] {
            find(LegacyFamily::Ipv4, name);
        }
        let filter = find(LegacyFamily::Ipv4, "filter");
        assert!(
            filter.counters.iter().any(|&(p, _)| p > 0),
            "no traffic counted: {:?}",
            filter.counters
        );
        let mangle = find(LegacyFamily::Ipv4, "mangle");
        assert!(mangle
            .counters
            .contains(&(5_000_000_000, 6_000_000_000_000)));
        let filter6 = find(LegacyFamily::Ipv6, "filter");
        assert!(
            filter6.counters.iter().any(|&(p, _)| p > 0),
            "no ipv6 traffic counted"
        );
        assert!(a_save4.contains(":mine - [0:0]"), "{a_save4}");
        assert!(a_save4.contains(":FORWARD DROP"), "{a_save4}");

        let (b, b_save4, b_save6) = run_in_new(|| {
            restore(&a).expect("restore into B");
            let tables = capture().expect("capture B");
            (
                tables,
                save("iptables-legacy-save"),
                save("ip6tables-legacy-save"),
            )
        })
        .expect("namespace B");

        assert_same(&b, &a);
        assert_eq!(b_save4, a_save4);
        assert_eq!(b_save6, a_save6);
    }

    #[test]
    fn xtables_capture_of_a_namespace_without_tables_is_empty_and_creates_none() {
        run_in_new(|| {
            assert_eq!(capture().expect("capture"), Vec::new());
            assert_eq!(names(LegacyFamily::Ipv4), Vec::<String>::new());
            assert_eq!(names(LegacyFamily::Ipv6), Vec::<String>::new());
        })
        .expect("namespace");
    }

    #[test]
    fn xtables_capture_reads_only_the_tables_that_exist() {
        run_in_new(|| {
            run(
                "ip6tables-legacy",
                &["-w", "-t", "raw", "-A", "PREROUTING", "-j", "ACCEPT"],
            );
            let tables = capture().expect("capture");
            let got: Vec<_> = tables.iter().map(|t| t.describe()).collect();
            assert_eq!(got, ["ip6tables table raw"]);
            assert_eq!(names(LegacyFamily::Ipv4), Vec::<String>::new());
            assert_eq!(names(LegacyFamily::Ipv6), ["raw"]);
        })
        .expect("namespace");
    }

    #[test]
    fn xtables_restore_refusals_name_the_table() {
        run_in_new(|| {
            run("iptables-legacy", &["-w", "-A", "INPUT", "-j", "ACCEPT"]);
            let filter = capture().expect("capture").remove(0);
            assert_eq!(filter.describe(), "iptables table filter");

            // No such table in the kernel.
            let nosuch = LegacyTable {
                name: "nosuch".into(),
                ..filter.clone()
            };
            let err = restore(&[nosuch]).expect_err("nosuch restored").to_string();
            assert!(err.contains("iptables table nosuch"), "{err}");
            assert!(err.contains("IPT_SO_GET_INFO"), "{err}");

            // The kernel refuses a blob whose policy is not ACCEPT or DROP.
            let mut bad = filter.clone();
            let policy = bad.underflow[1] as usize; // NF_INET_LOCAL_IN
            let verdict_at = policy + 112 + 32;
            bad.entries[verdict_at..verdict_at + 4].copy_from_slice(&(-5i32).to_ne_bytes());
            let err = restore(&[bad]).expect_err("bad policy restored");
            assert_eq!(err.errno(), Errno::EINVAL);
            let err = err.to_string();
            assert!(
                err.contains("iptables table filter: IPT_SO_SET_REPLACE"),
                "{err}"
            );

            // Counters that do not match the entries are refused before the kernel sees them.
            let mut short = filter.clone();
            short.counters.pop();
            let err = restore(&[short])
                .expect_err("short counters restored")
                .to_string();
            assert!(err.contains("iptables table filter: image"), "{err}");

            // None of these changed the table.
            assert_same(&capture().expect("capture"), std::slice::from_ref(&filter));
        })
        .expect("namespace");
    }

    #[test]
    fn xtables_entry_walk_refuses_malformed_blobs() {
        let mut entry = vec![0u8; 152];
        entry[88..90].copy_from_slice(&112u16.to_ne_bytes());
        entry[90..92].copy_from_slice(&152u16.to_ne_bytes());
        entry[96..104].copy_from_slice(&7u64.to_ne_bytes());
        entry[104..112].copy_from_slice(&9u64.to_ne_bytes());
        assert_eq!(entry_counters(LegacyFamily::Ipv4, &entry), Ok(vec![(7, 9)]));
        assert!(entry_counters(LegacyFamily::Ipv4, &entry[..151]).is_err());
        assert!(entry_counters(LegacyFamily::Ipv6, &entry).is_err());
        let mut odd = entry.clone();
        odd[90..92].copy_from_slice(&148u16.to_ne_bytes());
        assert!(entry_counters(LegacyFamily::Ipv4, &odd).is_err());
        let mut target = entry;
        target[88..90].copy_from_slice(&130u16.to_ne_bytes());
        assert!(entry_counters(LegacyFamily::Ipv4, &target).is_err());
    }
}
