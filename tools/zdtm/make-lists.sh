#!/bin/bash
# Write lists/h.txt, lists/ns.txt, lists/uns.txt: every zdtm static test built in ZDTM whose
# .desc allows that flavour (zdtm.py's `-a` set: the executables of the directory but the
# .checkskip and .hook scripts, route_rules and criu-rtc.so). Skips (noauto, arch, feature,
# checkskip) are left to run1.sh, which reports each.
# Given the transition directory, it writes lists/transition.txt instead: every transition
# test built (a few are h only: run1.sh skips them in the other flavours, naming the .desc's).
#
#   tools/zdtm/make-lists.sh ZDTM_STATIC_DIR
#   tools/zdtm/make-lists.sh ZDTM_TRANSITION_DIR
set -eu
ZDTM=${1:?usage: make-lists.sh ZDTM_STATIC_DIR}
OUT=$(cd "$(dirname "$0")" && pwd)/lists
mkdir -p "$OUT"
python3 - "$ZDTM" "$OUT" <<'PY'
import os, stat, sys
zdtm, out = sys.argv[1], sys.argv[2]
names = []
for f in sorted(os.listdir(zdtm)):
    p = os.path.join(zdtm, f)
    st = os.lstat(p)
    if not stat.S_ISREG(st.st_mode) or not st.st_mode & stat.S_IXUSR:
        continue
    if f.endswith(".checkskip") or f.endswith(".hook") or f in ("route_rules", "criu-rtc.so"):
        continue
    names.append(f)
def desc(n):
    p = os.path.join(zdtm, n + ".desc")
    if os.access(p, os.F_OK) and os.path.getsize(p) > 0:
        with open(p) as fd:
            return eval(fd.read())
    return {}
if os.path.basename(os.path.normpath(zdtm)) == "transition":
    with open(os.path.join(out, "transition.txt"), "w") as fd:
        fd.write("".join(n + "\n" for n in names))
    print("transition", len(names))
    sys.exit(0)
for flav in ("h", "ns", "uns"):
    l = [n for n in names if flav in desc(n).get("flavor", "h ns uns").split()]
    with open(os.path.join(out, flav + ".txt"), "w") as fd:
        fd.write("".join(n + "\n" for n in l))
    print(flav, len(l))
PY
