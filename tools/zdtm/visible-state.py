#!/usr/bin/env python3
"""What a zdtm test's processes show of themselves through /proc, one line per attribute.

    visible-state.py PID FLAV

zdtm.py's check_visible_state compares, before the dump and after the restore, each
process's fd numbers, its mappings (merged, with their protection and map_files mode) and
its mounts. This prints those and more that a process can read of itself (fd targets, flags
and positions, status and stat fields, per-thread masks and credentials, limits, timers),
every line prefixed by the process (and thread) it belongs to, so two prints taken before
and after compare with `diff`. Numbers that name kernel objects made again by any restore
(pipe and socket inodes, mount ids, start times) are left out, and the audit session id,
which a restore that writes the loginuid cannot keep (docs/state-coverage.md, a known gap).

FLAV h: the tree of PID (by parent pid, in our pid namespace). ns, uns: every process of
PID's pid namespace (PID is its init, as zdtm's pid file names it), read through
/proc/PID/root/proc, keyed by its pid there.
"""
import os
import re
import sys

ROOT_PID, FLAV = sys.argv[1], sys.argv[2]
# What the test's options change on purpose (VISIBLE_IGNORE=cgroup: --cgroup-root,
# --manage-cgroups move the processes to other cgroups; socket: --tcp-close, --skip-in-flight
# bring connections back closed).
IGNORE = os.environ.get("VISIBLE_IGNORE", "").split(",")
PROC = "/proc" if FLAV == "h" else "/proc/%s/root/proc" % ROOT_PID
out = []


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").replace("\0", " ")
    except OSError:
        return None


def tree(root):
    parent = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        st = read("/proc/%s/stat" % p)
        if st is None:
            continue
        parent[p] = st[st.rindex(")") + 2:].split()[1]
    keep = [root]
    more = True
    while more:
        more = False
        for p, pp in parent.items():
            if pp in keep and p not in keep:
                keep.append(p)
                more = True
    return keep


def pids():
    if FLAV == "h":
        return tree(ROOT_PID)
    return [p for p in os.listdir(PROC) if p.isdigit()]


ANON_INO = re.compile(r"^(pipe|socket|anon_inode:\[[a-z_]+\]|anon_inode):\[\d+\]$")


def link(path):
    try:
        t = os.readlink(path)
    except OSError as e:
        return "?%d" % e.errno
    m = ANON_INO.match(t)
    if m:
        return m.group(1) + ":[*]"
    # An O_TMPFILE file's name is its inode number, made again by any restore.
    return re.sub(r"/#\d+ \(deleted\)$", "/#INO (deleted)", t)


STATUS_KEYS = ("Umask", "State", "Uid", "Gid", "Groups", "NStgid", "NSpid", "NSpgid",
               "NSsid", "Threads", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt",
               "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp",
               "Seccomp_filters", "Speculation_Store_Bypass", "SpeculationIndirectBranch",
               "Cpus_allowed_list", "Mems_allowed_list", "THP_enabled", "untag_mask",
               "x86_Thread_features", "x86_Thread_features_locked")
THREAD_STATUS_KEYS = ("State", "Uid", "Gid", "Groups", "SigPnd", "SigBlk", "CapInh", "CapPrm",
                      "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp",
                      "Seccomp_filters", "Cpus_allowed_list")
# stat fields (1-based, as proc(5)) a process sets or sees: state, ppid, pgrp, session,
# tty_nr, tpgid, flags (less the PF_ bits any fork changes), priority, nice, num_threads,
# exit_signal, rt_priority, policy.
STAT_FIELDS = {3: "state", 4: "ppid", 5: "pgrp", 6: "session", 7: "tty_nr", 8: "tpgid",
               18: "priority", 19: "nice", 20: "num_threads", 38: "exit_signal",
               40: "rt_priority", 41: "policy"}


def status(prefix, path, keys):
    text = read(path) or ""
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k in keys:
            v = " ".join(v.split())
            if k == "State":
                # Running or sleeping is a matter of the instant; stopped, traced or a
                # zombie is not.
                v = v.split()[0] if v else v
                v = "R|S" if v in ("R", "S", "D") else v
            out.append("%s status %s %s" % (prefix, k, v))


def stat(prefix, path):
    st = read(path)
    if st is None:
        return
    fields = ["pid", "comm"] + st[st.rindex(")") + 2:].split()
    for i, name in STAT_FIELDS.items():
        if name == "ppid" and fields[0] == FIRST and FLAV == "h":
            continue  # the root's parent: the starter before, whoever reaps it after
        if i - 1 < len(fields):
            v = fields[i - 1]
            if name == "state" and v in ("R", "S", "D"):
                v = "R|S"
            out.append("%s stat %s %s" % (prefix, name, v))


def maps(prefix, base):
    # zdtm.py's: adjacent mappings of one protection merged, map_files' mode added; and the
    # path, which zdtm.py leaves out.
    merged = []
    for line in (read(base + "/maps") or "").splitlines():
        parts = line.split(None, 5)
        start, end = (int(x, 16) for x in parts[0].split("-"))
        prot = parts[1]
        path = parts[5].strip() if len(parts) > 5 else ""
        path = re.sub(r"^socket:\[\d+\]$", "socket:[*]", path)
        try:
            mode = oct(os.lstat("%s/map_files/%s" % (base, parts[0])).st_mode)
        except OSError:
            mode = "-"
        if merged and merged[-1][1] == start and merged[-1][2:] == [prot, mode, path]:
            merged[-1][1] = end
        else:
            merged.append([start, end, prot, mode, path])
    for start, end, prot, mode, path in merged:
        out.append("%s map %x-%x %s %s %s" % (prefix, start, end, prot, mode, path))


def smaps_flags(prefix, base):
    # VmFlags of each mapping (madvise, mlock, dontdump...), keyed by its start.
    start = None
    for line in (read(base + "/smaps") or "").splitlines():
        m = re.match(r"^([0-9a-f]+)-[0-9a-f]+ ", line)
        if m:
            start = m.group(1)
        elif line.startswith("VmFlags:") and start:
            flags = " ".join(sorted(line.split()[1:]))
            out.append("%s vmflags %s %s" % (prefix, start, flags))


SYS_PIDFD_OPEN, SYS_PIDFD_GETFD = 434, 438
_libc = None


def socket_view(pid, n):
    """A socket's own view (type, family, names, SO_RCVBUF...) through a pidfd_getfd copy:
    what getsockname, getpeername and getsockopt tell its process. Host pids only."""
    global _libc
    import ctypes
    import socket
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    pidfd = _libc.syscall(SYS_PIDFD_OPEN, int(pid), 0)
    if pidfd < 0:
        return "?pidfd"
    fd = _libc.syscall(SYS_PIDFD_GETFD, pidfd, int(n), 0)
    os.close(pidfd)
    if fd < 0:
        return "?getfd"
    try:
        sk = socket.socket(fileno=fd)
    except OSError as e:
        os.close(fd)
        return "?%d" % e.errno
    view = ["family=%d" % sk.family, "type=%d" % sk.type]
    for what, call in (("name", sk.getsockname), ("peer", sk.getpeername)):
        try:
            v = call()
            view.append("%s=%s" % (what, v if v else "-"))
        except OSError as e:
            view.append("%s=?%d" % (what, e.errno))
    for name, opt in (("reuseaddr", socket.SO_REUSEADDR), ("keepalive", socket.SO_KEEPALIVE),
                      ("error", socket.SO_ERROR), ("acceptconn", socket.SO_ACCEPTCONN),
                      ("oobinline", socket.SO_OOBINLINE), ("rcvlowat", socket.SO_RCVLOWAT),
                      ("broadcast", socket.SO_BROADCAST), ("priority", 12), ("mark", 36),
                      ("passcred", 16)):
        try:
            view.append("%s=%d" % (name, sk.getsockopt(socket.SOL_SOCKET, opt)))
        except OSError:
            pass
    if sk.family in (socket.AF_INET, socket.AF_INET6) and sk.type == socket.SOCK_STREAM:
        # (TCP_MAXSEG and TCP_QUICKACK change with the traffic.)
        for name, opt in (("nodelay", socket.TCP_NODELAY), ("cork", socket.TCP_CORK),
                          ("keepidle", socket.TCP_KEEPIDLE),
                          ("keepintvl", socket.TCP_KEEPINTVL), ("keepcnt", socket.TCP_KEEPCNT),
                          ("user_timeout", 18)):
            try:
                view.append("%s=%d" % (name, sk.getsockopt(socket.IPPROTO_TCP, opt)))
            except OSError:
                pass
    sk.detach()
    os.close(fd)
    return " ".join(view)


def fds(prefix, base):
    try:
        nums = sorted(os.listdir(base + "/fd"), key=int)
    except OSError:
        return
    for n in nums:
        info = read("%s/fdinfo/%s" % (base, n)) or ""
        kv = {}
        extra = []
        for line in info.splitlines():
            k, _, v = line.partition(":")
            v = v.strip()
            if k in ("pos", "flags"):
                kv[k] = v
            elif k in ("lock", "tfd", "inotify", "fanotify", "clockid", "ticks",
                       "settime flags", "it_value", "it_interval", "eventfd-count",
                       "eventfd-id", "sigmask", "fanotify flags", "semaphore-mode"):
                if k == "tfd":
                    v = re.sub(r"ino:\s*\S+\s+sdev:\s*\S+", "", v)
                if k == "inotify":
                    v = re.sub(r"ino:\S+ sdev:\S+", "", v)
                if k == "lock":
                    v = re.sub(r"^\d+:\s*", "", v)
                    v = re.sub(r"\s\d+\s+[0-9a-f]+:[0-9a-f]+:\d+\s", " PID DEV:INO ", v)
                if k == "eventfd-id":
                    continue
                if k == "it_value":
                    continue  # runs down with time
                extra.append("%s=%s" % (k, " ".join(v.split())))
        # An epoll's targets are listed in the kernel's order of their files' addresses.
        extra.sort()
        target = link("%s/fd/%s" % (base, n))
        m = re.match(r"^(\w+):\[\d+\]$", target)
        if m and m.group(1) not in ("pipe", "socket"):
            # A namespace's fd: the process's own namespace of that kind, or another one (any
            # restore makes namespaces again, with other inode numbers).
            own = link("%s/ns/%s" % (base, m.group(1)))
            target = "%s:[%s]" % (m.group(1), "own" if own == target else "*")
        if target == "socket:[*]" and FLAV == "h" and "socket" not in IGNORE:
            extra.append(socket_view(base.rsplit("/", 1)[1], n))
        if target.endswith(".out.inprogress") or target.endswith(".out"):
            kv["pos"] = "(the test's log)"  # the test writes to it whenever it likes
        out.append("%s fd %s %s flags=%s pos=%s %s" % (prefix, n, target,
                                                     kv.get("flags"), kv.get("pos"),
                                                     " ".join(extra)))


def mounts(prefix, base):
    # zdtm.py's fields: root, mount point, options, shared?, master?
    r = re.compile(r"^\S+\s\S+\s\S+\s(\S+)\s(\S+)\s(\S+)\s[^-]*?(shared)?[^-]*?(master)?[^-]*?-")
    lines = []
    for line in (read(base + "/mountinfo") or "").splitlines():
        m = r.match(line)
        if m:
            lines.append(" ".join(g or "-" for g in m.groups()))
    for line in sorted(lines):
        out.append("%s mount %s" % (prefix, line))


def simple(prefix, base, name):
    v = read("%s/%s" % (base, name))
    if v is not None:
        out.append("%s %s %s" % (prefix, name, " | ".join(v.strip().splitlines())))


our_mntns = os.readlink("/proc/self/ns/mnt")
ALL = sorted(pids(), key=int)
FIRST = ROOT_PID if FLAV == "h" else "1"
for pid in ALL:
    base = "%s/%s" % (PROC, pid)
    if read(base + "/stat") is None:
        continue
    p = "pid %s" % pid
    if (read(base + "/stat") or "").split(") ")[-1].startswith("Z"):
        # A zombie: what wait and kill see of it (its other fields are what it had at exit).
        status(p, base + "/status", ("State", "Uid", "Gid"))
        stat(p, base + "/stat")
        continue
    status(p, base + "/status", STATUS_KEYS)
    stat(p, base + "/stat")
    for name in ("comm", "cmdline", "environ", "personality", "oom_score_adj", "loginuid",
                 "timerslack_ns", "limits", "timers", "cgroup", "autogroup", "setgroups",
                 "uid_map", "gid_map", "projid_map", "attr/current",
                 "coredump_filter", "cwd", "root", "exe"):
        if name in ("cwd", "root", "exe"):
            out.append("%s %s %s" % (p, name, link("%s/%s" % (base, name))))
        elif name == "autogroup":
            v = read("%s/%s" % (base, name))
            if v is not None:
                out.append("%s autogroup nice %s" % (p, v.split()[-1]))
        elif name == "cgroup" and "cgroup" in IGNORE:
            continue
        else:
            simple(p, base, name)
    for ns in sorted(os.listdir(base + "/ns") if os.path.isdir(base + "/ns") else []):
        # Which processes share a namespace, not its inode: the inode of the root's.
        same = link("%s/ns/%s" % (base, ns)) == link("%s/%s/ns/%s" % (PROC, FIRST, ns))
        out.append("%s ns %s %s" % (p, ns, "as-root" if same else "own"))
    maps(p, base)
    smaps_flags(p, base)
    fds(p, base)
    # Mounts: those of the test's own mount namespace only (the host's change with
    # whatever else runs here).
    try:
        own_mnt = os.readlink(base + "/ns/mnt") != our_mntns
    except OSError:
        own_mnt = False
    if own_mnt:
        mounts(p, base)
    for tid in sorted(os.listdir(base + "/task"), key=int):
        if tid == pid:
            continue
        tb = "%s/task/%s" % (base, tid)
        t = "%s tid %s" % (p, tid)
        status(t, tb + "/status", THREAD_STATUS_KEYS)
        stat(t, tb + "/stat")
        simple(t, tb, "comm")
        simple(t, tb, "timerslack_ns") if os.path.exists(tb + "/timerslack_ns") else None

print("\n".join(out))
