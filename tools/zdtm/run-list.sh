#!/bin/bash
# Run tools/zdtm/run1.sh over a list of zdtm static tests, one at a time, each bounded by
# `timeout 300`, printing run1.sh's line for each and the counts at the end.
#
#   CRYO=/abs/cryo ZDTM=/abs/.../zdtm/static FLAV=h|ns|uns [LOGSFX=.x] [LOGDIR=...] \
#       tools/zdtm/run-list.sh LISTFILE
#
# LISTFILE: one test name a line (as in lists/*.txt); blank lines and # comments skipped.
# Before the first test it mounts the cgroup hierarchies name=zdtmtst and
# name=zdtmtst.defaultroot with a holder group, as zdtm.py's zdtm_mount_cgroups does (the
# cgroup tests need them to exist before any dump), and removes the holder at the end; and
# makes the huge page pool at least 20 pages for the run, as zdtm.py does.
set -u
LIST=${1:?usage: run-list.sh LISTFILE}
: "${CRYO:?}" "${ZDTM:?}"
export CRYO ZDTM FLAV=${FLAV:-h} LOGSFX=${LOGSFX:-} LOGDIR=${LOGDIR:-/tmp/zdtm-logs}
HERE=$(cd "$(dirname "$0")" && pwd)
TMO=${TMO:-300}
mkdir -p "$LOGDIR"

# zdtm_mount_cgroups / zdtm_umount_cgroups.
HOLDER=holder.zdtm-run-$$
cgroups() { # mkdir|rmdir
	local d i
	d=$(mktemp -d "${TMPDIR:-/tmp}/zdtm-cg.XXXXXX") || return
	for i in zdtmtst zdtmtst.defaultroot; do
		mount -t cgroup -o none,name=$i zdtm "$d" 2>/dev/null || continue
		"$1" "$d/$HOLDER" 2>/dev/null
		umount -l "$d"
	done
	rmdir "$d"
}
cgroups mkdir
# zdtm.py's set_nr_hugepages(20) for the run (maps09, maps10, memfd02-hugetlb, shm-hugetlb...):
# raised to 20 if lower, put back at the end if still ours.
HP=/proc/sys/vm/nr_hugepages
hp_orig=$(cat $HP)
[ "$hp_orig" -lt 20 ] && echo 20 >$HP
hp_set=$(cat $HP)
trap 'cgroups rmdir; [ "$(cat $HP)" = "$hp_set" ] && [ "$hp_orig" -lt "$hp_set" ] && echo "$hp_orig" >$HP' EXIT

pass=0 fail=0 skip=0
while IFS= read -r name || [ -n "$name" ]; do
	name=${name%%#*}
	name=$(echo $name)
	[ -n "$name" ] || continue
	out=$(timeout -k 30 "$TMO" "$HERE/run1.sh" "$name" 2>>"$LOGDIR/run-list.stderr$LOGSFX")
	rc=$?
	res=$(printf '%s\n' "$out" | awk -v n="$name" '$1 == n' | tail -n1)
	if [ -z "$res" ]; then
		if [ $rc = 124 ] || [ $rc = 137 ]; then
			res="$name FAIL timeout (${TMO} s)"
		else
			res="$name FAIL harness: run1.sh exited $rc without a verdict"
		fi
	fi
	echo "$res"
	case $(echo "$res" | awk '{print $2}') in
	PASS) pass=$((pass + 1)) ;;
	SKIP) skip=$((skip + 1)) ;;
	*) fail=$((fail + 1)) ;;
	esac
done <"$LIST"
echo "zdtm $FLAV: $pass passed, $fail failed, $skip skipped"
