#!/bin/bash
# Run one CRIU zdtm static or transition test through a killing `cryo dump` and a `cryo
# restore`, the way CRIU's test/zdtm.py does it with criu, and print exactly one line:
#   NAME PASS            (crfail tests whose dump or restore cryo refused, as CRIU does:
#                         NAME PASS (crfail: ...))
#   NAME FAIL <reason>
#   NAME SKIP <reason>
#
#   CRYO=/abs/cryo ZDTM=/abs/.../zdtm/static FLAV=h|ns|uns [LOGSFX=.x] tools/zdtm/run1.sh NAME
#
# ZDTM: the static or transition test directory build.sh made (its parent's parent is
# zdtm.py's working directory, criu/test: hooks run there and the ns flavours use it as their
# root). A transition test (a directory not named static) is dumped, as zdtm.py does, a random
# time under a second after its pid file appears, while it works (forks, writes pipes,
# sockets); NAP=SECONDS fixes that time (to repeat a run).
# LOGDIR (default /tmp/zdtm-logs): NAME.FLAV$LOGSFX/ there keeps cryo's dump.log and
# restore.log, their stderr, the test's output and, for a failure, the images (made, as
# zdtm.py's, in criu/test/dump/zdtm/static/NAME/PID/1: some .desc options are relative to it).
# NOAUTO=1: run a 'noauto' test too (zdtm.py runs them when named: `zdtm.py run -t NAME`).
# NOCR=1: start and stop the test without dump and restore (zdtm.py's --nocr), to tell a
# failure of the environment from cryo's.
# Root only. One test at a time: tests share their directory and the zdtmtst cgroups.
#
# Protocol (zdtm.py's zdtm_test and criu classes): `make NAME.cleanout`, `make NAME.pid`
# (the test daemonizes and writes its pid file once ready; ns/uns: the test library itself
# makes the namespaces, ZDTM_NEWNS=1, and the pid file holds the namespace's init), the
# .hook's --post-start/--pre-dump/--pre-restore/--post-restore/--clean, `cryo dump --tree PID`
# with zdtm.py's criu command line (the .desc's opts and dopts), the test gone, `cryo restore
# --restore-detached --pidfile` (opts, ropts), SIGTERM to the restored pid, the test gone,
# the last line of NAME.out holding PASS. .desc flags: noauto skips, suid keeps the test
# root (else ZDTM_UID/GID/GROUPS), crfail expects the dump or restore to fail (a test cryo
# restores anyway fails, "unexpected success", as in zdtm.py); 'flavor', 'arch' and
# 'feature' (asked of `cryo check --feature`) and NAME.checkskip skip.
set -u
NAME=${1:?usage: run1.sh NAME}
: "${CRYO:?CRYO: absolute path of the cryo binary}" "${ZDTM:?ZDTM: the built zdtm/static or zdtm/transition directory}"
FLAV=${FLAV:-h}
LOGSFX=${LOGSFX:-}
LOGDIR=${LOGDIR:-/tmp/zdtm-logs}
export TMPDIR=${TMPDIR:-/tmp}

ZDTM=$(cd "$ZDTM" && pwd) || exit 1
TOP=$(cd "$ZDTM/../.." && pwd)                      # zdtm.py's cwd (criu/test)
REL=$(basename "$(dirname "$ZDTM")")/$(basename "$ZDTM")   # zdtm/static
PIDF=$ZDTM/$NAME.pid
OUTF=$ZDTM/$NAME.out
WORK=$LOGDIR/$NAME.$FLAV$LOGSFX
DUMPS=$TOP/dump/$REL/$NAME
IMG=
PID=
TROOT=
ROOT=
DEVP=
MAKEPID=
MNT_BEFORE=
LINKS_BEFORE=
DUMPED=
CRYOPID=

line() { # the one line; squeezed to one short line
	local r
	r=$(printf '%s' "$*" | tr '\n\t' '  ' | sed 's/  */ /g; s/ $//')
	echo "$NAME ${r:0:300}"
}

alive() { # pid exists and is not a zombie
	local st
	[ -n "$1" ] || return 1
	st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

wait_gone() { # pid seconds: polls, as zdtm.py's wait_pid_die
	local i=0 n=$(($2 * 10))
	while alive "$1"; do
		i=$((i + 1))
		[ $i -ge $n ] && return 1
		sleep 0.1
	done
	return 0
}

descendants() { # pid: its descendants (by parent pid: /proc/PID/task/TID/children may be absent)
	ps -e -o pid=,ppid= | awk -v root="$1" '
		{ parent[$1] = $2; pids[NR] = $1 }
		END {
			keep[root] = 1
			do {
				more = 0
				for (i in pids) {
					p = pids[i]
					if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; more = 1; print p }
				}
			} while (more)
		}'
}

kill_tree() { # zdtm.py kills the test (SIGKILL); its children too, so none outlives a failure
	local p all
	[ -n "$1" ] || return 0
	alive "$1" || return 0
	all="$1 $(descendants "$1")"
	for p in $all; do kill -STOP "$p" 2>/dev/null; done
	for p in $all; do kill -KILL "$p" 2>/dev/null; done
	wait_gone "$1" 10
}

hook() { # zdtm.py's try_run_hook: NAME.hook ARG, in criu/test
	[ -x "$ZDTM/$NAME.hook" ] || return 0
	# The system's python3 first: the one python3-protobuf (pycriu) is installed for.
	(cd "$TOP" && PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH "$REL/$NAME.hook" "$@") >>"$WORK/hook.log" 2>&1
}

left_mounts() { # the mounts made since MNT_BEFORE in our namespace by the test or its hooks
	# (on its files or zdtm's /tmp/zdtm_*: mnt_ext_*, cgroup_*): newest first
	[ -n "$MNT_BEFORE" ] || return 0
	awk -v before="$MNT_BEFORE" -v top="$TOP/" -v tmp="$TMPDIR/zdtm" '
		BEGIN { n = split(before, b, " "); for (i = 1; i <= n; i++) old[b[i]] = 1 }
		!($1 in old) {
			m = $5; gsub(/\\040/, " ", m)
			if (index(m, top) == 1 || index(m, tmp) == 1) print $1, m
		}' /proc/self/mountinfo | sort -rn | cut -d" " -f2-
}

zdtm_links() { # the names of the zdtm* links of our network namespace
	ip -o link show 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); if ($2 ~ /^zdtm/) print $2 }'
}

# The propagation of our root as the test found it: a test or its hook that makes / shared
# leaves every later mount of ours in a peer group (cryo's own mount namespace tests, run on
# the same host afterwards, then see a "master:" they do not expect).
ROOT_PROPAGATION=$(findmnt -no PROPAGATION / 2>/dev/null)

cleanup() {
	# What the test left mounted in our namespace would change the next tests' (zdtm.py leaves
	# it: a later mnt_ext_* run finds its mount point covered).
	left_mounts | while IFS= read -r m; do umount -l "$m" 2>/dev/null; done
	MNT_BEFORE=
	case "$ROOT_PROPAGATION" in
	private | shared | slave | unbindable)
		[ "$(findmnt -no PROPAGATION /)" = "$ROOT_PROPAGATION" ] ||
			mount --make-"$ROOT_PROPAGATION" / 2>/dev/null
		;;
	esac
	# Likewise the zdtm* links a hook made in our network namespace and left (cr_veth.hook's
	# bridge zdtmbr0: macvlan.hook, run later, fails to make it again).
	if [ -n "$LINKS_BEFORE" ]; then
		for l in $(zdtm_links); do
			case " $LINKS_BEFORE " in *" $l "*) ;; *) ip link del "$l" 2>/dev/null ;; esac
		done
		LINKS_BEFORE=
	fi
	if [ -n "$CRYOPID" ]; then kill -KILL "$CRYOPID" 2>/dev/null; wait "$CRYOPID" 2>/dev/null; fi
	# make waits for the test's starter, which waits for the test: all of them.
	if [ -n "$MAKEPID" ]; then kill_tree "$MAKEPID"; wait "$MAKEPID" 2>/dev/null; fi
	if [ -n "$ROOT" ]; then
		umount -l "$ROOT" 2>/dev/null
		umount -l "$DEVP" 2>/dev/null
		rmdir "$ROOT" "$TROOT/root" "$DEVP" "$TROOT" 2>/dev/null
	fi
}

finish() { # verdict...: print, clean up, keep the logs (and the images of a failure)
	if [ -n "$IMG" ] && [ -d "$IMG" ]; then
		cp "$IMG"/*.log "$WORK/" 2>/dev/null
		[ "$1" = PASS ] || mv "$IMG" "$WORK/img" 2>/dev/null
	fi
	rm -rf "$DUMPS"
	[ -f "$OUTF" ] && cp "$OUTF" "$WORK/test.out" 2>/dev/null
	[ -f "$OUTF.inprogress" ] && cp "$OUTF.inprogress" "$WORK/test.out.inprogress" 2>/dev/null
	cleanup
	line "$@"
	exit 0
}

fail() { # reason: zdtm.py's failure path: the test killed, --clean hook
	# Before its pid is read (a hook failing while it starts), the pid file may name it.
	kill_tree "${PID:-$(head -n1 "$PIDF" 2>/dev/null)}"
	hook --clean
	finish FAIL "$@"
}

run_cryo() { # OUTFILE ARGS...: cryo in the background, waited for (a TERM is taken at once)
	local out=$1 rc
	shift
	(cd "$TOP" && exec "$CRYO" "$@") >"$out" 2>&1 </dev/null &
	CRYOPID=$!
	wait "$CRYOPID"
	rc=$?
	CRYOPID=
	return $rc
}

test_result() { # the last line of NAME.out; without one, "no NAME.out" and what the test
	# wrote before it ended (NAME.out.inprogress: the test died before renaming it)
	local r
	r=$(grep -v '^[[:space:]]*$' "$OUTF" 2>/dev/null | tail -n1)
	if [ -z "$r" ]; then
		r="no $NAME.out"
		[ -f "$OUTF.inprogress" ] && r="$r; .out.inprogress ends: $(grep -v '^[[:space:]]*$' "$OUTF.inprogress" | tail -n2)"
	fi
	printf '%s' "$r"
}

cryo_error() { # file: the error cryo printed, short
	local e
	e=$(grep -m1 'cryo: error:' "$1" 2>/dev/null | sed 's/^cryo: error: //')
	[ -n "$e" ] || e=$(grep -v '^\s*$' "$1" 2>/dev/null | tail -n1)
	printf '%s' "${e:-no message}"
}

[ "$(id -u)" = 0 ] || { line SKIP "not root"; exit 0; }
case $FLAV in h | ns | uns) ;; *) line SKIP "unknown flavour $FLAV"; exit 0 ;; esac
[ -x "$ZDTM/$NAME" ] && [ -f "$ZDTM/$NAME" ] || { line SKIP "not built"; exit 0; }

# The .desc: a Python literal, read as zdtm.py reads it.
DESC=$(python3 - "$ZDTM/$NAME.desc" <<'PY'
import os, shlex, sys
p = sys.argv[1]
d = {}
if os.access(p, os.F_OK) and os.path.getsize(p) > 0:
    with open(p) as f:
        d = eval(f.read())
def put(k, v):
    print("D_%s=%s" % (k, shlex.quote(v)))
put("flavor", d.get("flavor", "h ns uns"))
put("flags", d.get("flags", ""))
put("opts", d.get("opts", ""))
put("dopts", d.get("dopts", ""))
put("ropts", d.get("ropts", ""))
put("feature", d.get("feature", ""))
put("arch", d.get("arch", os.uname().machine))
put("bind", d.get("bind") or "")
put("timeout", str(int(d.get("timeout") or 30)))
put("deps", "\n".join(d.get("deps", [])))
PY
) || { line FAIL "cannot read $NAME.desc"; exit 0; }
eval "$DESC"
flag() { case " $D_flags " in *" $1 "*) return 0 ;; esac; return 1; }
CRFAIL=
flag crfail && CRFAIL=1

# Skips, in zdtm.py's order.
[ "$D_arch" = "$(uname -m)" ] || { line SKIP "arch $D_arch"; exit 0; }
[ "${NOAUTO:-}" = 1 ] || { flag noauto && { line SKIP "noauto (manual run only)"; exit 0; }; }
# zdtm.py --norst skips the tests that need a restore to pass.
[ -n "${NORST:-}" ] && flag reqrst && { line SKIP "reqrst (NORST)"; exit 0; }
for f in $D_feature; do
	"$CRYO" check --no-default-config -verbosity=0 --feature "$f" >/dev/null 2>&1 ||
		{ line SKIP "no $f feature"; exit 0; }
done
if [ -x "$ZDTM/$NAME.checkskip" ]; then
	(cd "$TOP" && "$REL/$NAME.checkskip") >/dev/null 2>&1 || { line SKIP "checkskip failed"; exit 0; }
fi
case " $D_flavor " in *" $FLAV "*) ;; *) line SKIP "flavour $FLAV not in '$D_flavor'"; exit 0 ;; esac
if [ "$FLAV" = uns ]; then
	"$CRYO" check --no-default-config -verbosity=0 --feature userns >/dev/null 2>&1 ||
		{ line SKIP "no userns feature"; exit 0; }
fi

rm -rf "$WORK" "$DUMPS"
mkdir -p "$WORK" || { line FAIL "cannot make $WORK"; exit 0; }
trap 'cleanup' EXIT
trap 'kill_tree "${PID:-$DUMPED}"; finish FAIL "interrupted (timeout?)"' INT TERM

# What a killed test left mounted on its files (zdtm.py leaves it: the next run then fails
# to start), deepest first, then zdtm's cleanout.
awk -v p="$ZDTM/$NAME." '{ m = $5; gsub(/\\040/, " ", m); if (index(m, p) == 1) print m }' \
	/proc/self/mountinfo | sort -r | while IFS= read -r m; do umount -l "$m"; done
(cd "$TOP" && make --no-print-directory -C "$REL" "$NAME.cleanout") >>"$WORK/make.log" 2>&1
MNT_BEFORE=$(awk '{ printf "%s ", $1 }' /proc/self/mountinfo)
LINKS_BEFORE=" $(zdtm_links | tr '\n' ' ')"

export ZDTM_THREAD_BOMB=5
# zdtm.py's pre-dump-notify tests (pid_reuse, pidfd_store_sk) talk to it on fds 100 and 101
# between pre-dumps; with none (as here and in zdtm.py's default run) they wait on them.
flag pre-dump-notify && export ZDTM_NOTIFY_FDIN=100 ZDTM_NOTIFY_FDOUT=101
if ! flag suid; then
	# Numbers as in criu and zdtm.py.
	export ZDTM_UID=18943 ZDTM_GID=58467 ZDTM_GROUPS="27495 48244"
	chmod a+w "$ZDTM"
fi

# copy_one FILE: into the ns root (TOP), as zdtm.py's ns_flavor.__copy_one.
copy_one() {
	local t=$TOP$1
	[ -e "$t" ] && return 0
	mkdir -p "$(dirname "$t")" && cp -pL "$1" "$t.tso.$$" && mv "$t.tso.$$" "$t"
}
copy_libs() { # BINARY: the libraries ldd names (vdso left out)
	local l
	for l in $(ldd "$1" 2>/dev/null | awk '/^\t/ && !/linux-vdso|linux-gate|not a dynamic/ { if ($2 == "=>") print $3; else print $1 }'); do
		[ -e "$l" ] || return 1
		copy_one "$l" || return 1
	done
}

START_DIR=$TOP
if [ "$FLAV" != h ]; then
	# zdtm.py's ns_flavor: a tests root whose root/root is criu/test bound, a tmpfs for /dev.
	TROOT=$(mktemp -d "$TMPDIR/criu-root-XXXXXX")
	ROOT=$TROOT/root/root
	DEVP=$TROOT/dev
	mkdir -p "$ROOT" "$DEVP"
	mount -t tmpfs criu-test-dev "$DEVP" || fail "mount the tests' /dev"
	chmod 777 "$DEVP"
	chmod 755 "$TROOT" "$TROOT/root"
	(
		flock 9
		if [ ! -e "$TOP/.constructed" ]; then
			for d in /bin /sbin /etc /lib /lib64 /dev /tmp /usr /proc /run; do
				mkdir -p "$TOP$d" && chmod 777 "$TOP$d"
			done
			for d in /bin /sbin /lib /lib64; do ln -sfn "..$d" "$TOP/usr$d"; done
			touch "$TOP/.constructed" && chmod 600 "$TOP/.constructed"
		fi
	) 9>"$TOP/.construct.lock"
	mkdir -m 755 "$DEVP/pts" "$DEVP/net"
	mknod -m 666 "$DEVP/tty" c 5 0
	mknod -m 666 "$DEVP/null" c 1 3
	mknod -m 666 "$DEVP/autofs" c 10 235
	for n in net/tun rtc; do
		[ -c "/dev/$n" ] || continue
		mknod -m 666 "$DEVP/$n" c "$((16#$(stat -c %t "/dev/$n")))" "$((16#$(stat -c %T "/dev/$n")))"
	done
	[ "$FLAV" = uns ] && chmod go+rwx "$TOP"
	mount --make-private --bind "$TOP" "$ROOT" || fail "bind the tests' root"
	copy_libs "$ZDTM/$NAME" || fail "copy the libraries of $NAME into the root"
	while IFS= read -r dep; do
		[ -n "$dep" ] || continue
		ok=
		IFS='|' read -ra alts <<<"$dep"
		for a in "${alts[@]}"; do
			if [ -e "$a" ]; then copy_one "$a" && copy_libs "$a" && ok=1; break; fi
		done
		[ -n "$ok" ] || fail "deps check $dep failed"
	done <<<"$D_deps"
	export ZDTM_NEWNS=1 ZDTM_ROOT=$ROOT ZDTM_DEV=$DEVP
	export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
	[ -n "$D_bind" ] && export ZDTM_BIND=$D_bind
	[ "$FLAV" = uns ] && export ZDTM_USERNS=1
	START_DIR=$ROOT
fi

# Start: make NAME.pid, the --post-start hook beside it (as zdtm.py: some hooks talk to the
# test while it starts), bounded by the .desc's timeout.
(cd "$START_DIR" && exec make --no-print-directory -C "$REL" "$NAME.pid") >>"$WORK/make.log" 2>&1 </dev/null &
MAKEPID=$!
hook --post-start || fail "hook --post-start"
i=0
while kill -0 "$MAKEPID" 2>/dev/null; do
	i=$((i + 1))
	[ $i -ge $((D_timeout * 10)) ] && fail "start: make $NAME.pid timed out"
	sleep 0.1
done
wait "$MAKEPID"
rc=$?
MAKEPID=
PID=$(head -n1 "$PIDF" 2>/dev/null)
[ $rc = 0 ] || fail "start: make $NAME.pid exited $rc: $(tail -n1 "$OUTF" 2>/dev/null)"
alive "$PID" || fail "start: no process ${PID:-(no pid file)}"
[ "$FLAV" != h ] && chmod 700 "$TROOT/root"
if [ "$(basename "$ZDTM")" != static ]; then
	# zdtm.py's start for a test that is not static: "Wait less than a second to give the
	# test chance to move into some semi-random state" (time.sleep(random.random())).
	nap=${NAP:-$(printf '0.%03d' $((RANDOM % 1000)))}
	echo "transition: dump $nap s after the start" >>"$WORK/make.log"
	sleep "$nap"
fi

if [ "${NOCR:-}" = 1 ]; then
	kill -TERM "$PID" 2>/dev/null
	wait_gone "$PID" "$D_timeout" || fail "nocr: the test did not exit on SIGTERM"
	PID=
	hook --clean
	r=$(test_result)
	grep -qw PASS <<<"$r" && [ -f "$OUTF" ] || finish FAIL "nocr: result: $r"
	finish PASS "(nocr)"
fi

# The visible state (visible-state.py: zdtm.py's check_visible_state, and more) before and
# after each cycle; a difference fails the test, however the test's own check ends.
case " $D_opts $D_dopts $D_ropts " in *cgroup*) export VISIBLE_IGNORE=cgroup ;; esac
# Connections restored closed (--tcp-close) or left behind (--skip-in-flight), on purpose.
case " $D_opts $D_dopts $D_ropts " in
*--tcp-close* | *--skip-in-flight*) export VISIBLE_IGNORE=${VISIBLE_IGNORE:+$VISIBLE_IGNORE,}socket ;;
esac
visible() { # FILE
	"$(dirname "$0")/visible-state.py" "$PID" "$FLAV" >"$1" 2>>"$WORK/visible.err"
}
check_visible() { # BEFORE AFTER WHAT
	local d
	[ "${VISIBLE:-1}" = 1 ] || return 0
	d=$(diff -a "$1" "$2" | grep '^[<>]' | head -n 6)
	[ -z "$d" ] || fail "visible state after $3: $d"
}

CROPTS=($D_opts --pidfile "$PIDF")
[ "$FLAV" != h ] && CROPTS+=(--root "$ROOT")
DOPTS=("${CROPTS[@]}" $D_dopts)
[ "$FLAV" != h ] && DOPTS+=(--external "mnt[/dev]:ZDTM_DEV")
ROPTS=("${CROPTS[@]}" $D_ropts)
[ "$FLAV" != h ] && ROPTS+=(--external "mnt[ZDTM_DEV]:$DEVP")
# NORST=1: zdtm.py's --norst: a dump that leaves the test running, no restore.
# ITERS=N: zdtm.py's --iters: N cycles, each dumping what the last one restored.
NORST=${NORST:-}
ITERS=${ITERS:-1}
[ -n "$NORST" ] && { ITERS=1; DOPTS+=(--leave-running); }

for ((ITER = 1; ITER <= ITERS; ITER++)); do
	# zdtm.py's image directory: dump/zdtm/static/NAME/PID/ITER in criu/test, mode 0777.
	IMG=$DUMPS/$PID/$ITER
	mkdir -p "$IMG" && chmod 777 "$IMG" || fail "cannot make $IMG"
	[ "${VISIBLE:-1}" = 1 ] && visible "$WORK/state.$ITER.before"

	# Dump, as zdtm.py's criu.dump.
	export ZDTM_TEST_PID=$PID
	hook --pre-dump || fail "hook --pre-dump"
	echo "$CRYO dump --log-file dump.log --images-dir $IMG --verbosity=4 --tree $PID ${DOPTS[*]} --timeout 10" >>"$WORK/dump.cmd"
	run_cryo "$WORK/dump.out" dump --log-file dump.log --images-dir "$IMG" --verbosity=4 --tree "$PID" \
		"${DOPTS[@]}" --timeout 10
	rc=$?
	if [ $rc != 0 ]; then
		if [ -n "$CRFAIL" ] && [ $rc -lt 128 ]; then
			# Expected by zdtm.py: the test must go on unharmed and pass.
			kill -TERM "$PID" 2>/dev/null
			wait_gone "$PID" "$D_timeout" || fail "crfail: dump refused, then the test did not stop"
			PID=
			hook --clean
			r=$(test_result)
			grep -qw PASS <<<"$r" && [ -f "$OUTF" ] || finish FAIL "crfail: dump refused, then the test failed: $r"
			finish PASS "(crfail: dump refused: $(cryo_error "$WORK/dump.out"))"
		fi
		fail "dump (rc $rc): $(cryo_error "$WORK/dump.out")"
	fi
	if [ -n "$NORST" ]; then
		alive "$PID" || fail "dump --leave-running: the test is gone"
		if [ "${VISIBLE:-1}" = 1 ]; then
			visible "$WORK/state.$ITER.after"
			check_visible "$WORK/state.$ITER.before" "$WORK/state.$ITER.after" "dump --leave-running"
		fi
		break
	fi
	wait_gone "$PID" "$D_timeout" || fail "dump: the test still runs after a killing dump"
	rm -f "$PIDF"
	DUMPED=$PID
	PID=

	# Restore, as zdtm.py's criu.restore.
	hook --pre-restore || fail "hook --pre-restore"
	echo "$CRYO restore --log-file restore.log --images-dir $IMG --verbosity=4 ${ROPTS[*]} --restore-detached" >>"$WORK/restore.cmd"
	run_cryo "$WORK/restore.out" restore --log-file restore.log --images-dir "$IMG" --verbosity=4 \
		"${ROPTS[@]}" --restore-detached
	rc=$?
	PID=$(head -n1 "$PIDF" 2>/dev/null)
	if [ $rc != 0 ]; then
		if [ -n "$CRFAIL" ] && [ $rc -lt 128 ]; then
			kill_tree "$PID"
			hook --clean
			finish PASS "(crfail: restore refused: $(cryo_error "$WORK/restore.out"))"
		fi
		fail "restore (rc $rc): $(cryo_error "$WORK/restore.out")"
	fi
	alive "$PID" || fail "restore: no restored process ${PID:-(no pid file)}"
	[ "$FLAV" = h ] && [ "$PID" != "$DUMPED" ] && fail "restore: pid $PID, dumped as $DUMPED"
	export ZDTM_TEST_PID=$PID ZDTM_IMG_DIR=$IMG
	hook --post-restore || fail "hook --post-restore"
	if [ "${VISIBLE:-1}" = 1 ]; then
		visible "$WORK/state.$ITER.after"
		check_visible "$WORK/state.$ITER.before" "$WORK/state.$ITER.after" "restore $ITER"
	fi
done

# Stop: SIGTERM, the test checks its state and writes PASS or FAIL.
kill -TERM "$PID" 2>/dev/null || fail "stop: kill $PID"
wait_gone "$PID" "$D_timeout" || fail "stop: the test did not exit on SIGTERM"
PID=
r=$(test_result)
if ! { grep -qw PASS <<<"$r" && [ -f "$OUTF" ]; }; then
	e=$(grep -iE 'fail|err|!=|mismatch|differ' "$OUTF" 2>/dev/null | head -n1)
	r=${e:-$r}
	hook --clean
	finish FAIL "result: $r"
fi
hook --clean || finish FAIL "hook --clean"
[ -n "$CRFAIL" ] && finish FAIL "crfail: cryo dumped and restored it (unexpected success, as zdtm.py counts it)"
finish PASS
