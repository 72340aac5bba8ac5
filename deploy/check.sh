#!/usr/bin/env bash
# deploy/check.sh: the container deployment, end to end, on this machine.
#
# Builds the image from Containerfile with the static probe-user already built in
# target/$TARGET/release, runs it as docs/deploy.md says (not root, only CAP_BPF and CAP_PERFMON,
# no_new_privs, read-only, seccomp on), makes TCP connects on the host and checks that
#   1. the container printed the exact stap line for a connect made on the host, and that its
#      process holds exactly CAP_BPF + CAP_PERFMON, no_new_privs, as uid 65534;
#   2. the image's default command (--metrics 0.0.0.0:9779, in its own network namespace,
#      port published on loopback) counts a connect made on the host in tcpconn_connects_total.
# Removes its containers and image, and prints one line: "OK: ..." (exit 0), "FAIL: ..." (exit 1),
# or "SKIP: podman not available" (exit 0) when no container engine is installed.
# Run it as root: rootless Podman puts the container in a user namespace, where CAP_BPF and
# CAP_PERFMON cannot load tracing programs.
#
# Environment: ENGINE=podman|docker (default: podman; docker runs the container as --user 0,
# since Docker does not make added capabilities ambient for a non-root user), TARGET (default
# x86_64-unknown-linux-musl), ATTACH (probe-user --attach; default auto), RUNTIME (podman
# --runtime; default: podman's own, else runc where the default cannot start a container, as
# crun in a hybrid cgroup layout), KEEP=1 keeps the image.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
TARGET=${TARGET:-x86_64-unknown-linux-musl}
ATTACH=${ATTACH:-auto}
ENGINE=${ENGINE:-podman}
BIN=target/$TARGET/release/probe-user
TAG=localhost/probe-user:check-$$
WORK=
CONTAINERS=()
LISTENER=

fail() { echo "FAIL: $*"; exit 1; }

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    [ -n "$LISTENER" ] && kill "$LISTENER" 2>/dev/null
    [ -n "$WORK" ] || return 0
    for c in "${CONTAINERS[@]}"; do "$ENGINE" rm -f "$c" >/dev/null 2>&1; done
    [ "${KEEP:-0}" = 1 ] || "$ENGINE" rmi -f "$TAG" >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v "$ENGINE" >/dev/null 2>&1; then
    if [ "$ENGINE" = podman ]; then echo "SKIP: podman not available"; exit 0; fi
    fail "$ENGINE is not installed"
fi
[ -x "$BIN" ] || fail "no static binary at $BIN (cargo build --release --target $TARGET)"
command -v python3 >/dev/null || fail "python3 is needed for the listener and the connects"
WORK=$(mktemp -d /tmp/probe-deploy-check.XXXXXX) || fail "cannot create a temporary directory"

# Engine options every run gets.
RUN=("$ENGINE")
OPTS=(--cap-drop=ALL --cap-add=BPF --cap-add=PERFMON
      --security-opt no-new-privileges --read-only
      -v /sys/kernel/btf:/sys/kernel/btf:ro)
if [ "$ENGINE" = podman ]; then
    [ -n "${RUNTIME:-}" ] && RUN+=(--runtime "$RUNTIME")
    # Rootful podman raises nofile and nproc by default, which a runtime without
    # CAP_SYS_RESOURCE (a sandbox) cannot do; lowering them is always allowed.
    OPTS+=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
    # Older containers-common default profiles let bpf() and perf_event_open() through only with
    # CAP_SYS_ADMIN (Docker's and containerd's also accept CAP_BPF / CAP_PERFMON): use the
    # default profile with those two rules added, never seccomp=unconfined.
    # (containers-common 0.60+ has the bpf rule, and a working perf_event_open rule only since
    # late 2025; for a profile that already has both, the rewrite changes nothing in effect.)
    DEFAULT_PROFILE=
    for f in /etc/containers/seccomp.json /usr/share/containers/seccomp.json; do
        if [ -f "$f" ]; then DEFAULT_PROFILE=$f; break; fi
    done
    if [ -n "$DEFAULT_PROFILE" ]; then
        python3 - "$DEFAULT_PROFILE" "$WORK/seccomp.json" <<'EOF' || fail "cannot derive a seccomp profile from $DEFAULT_PROFILE"
import json, sys
profile = json.load(open(sys.argv[1]))
gated = {"bpf": "CAP_BPF", "perf_event_open": "CAP_PERFMON"}
rules = []
for rule in profile["syscalls"]:
    names = [n for n in rule["names"] if n in gated]
    if not names:
        rules.append(rule)
        continue
    if len(names) < len(rule["names"]):
        rules.append(dict(rule, names=[n for n in rule["names"] if n not in gated]))
    for name in names:
        cap = gated[name]
        if rule["action"] == "SCMP_ACT_ALLOW":
            rules.append(dict(rule, names=[name]))
        else:  # the denial, when the capability that allows it is absent too
            caps = rule.get("excludes", {}).get("caps", [])
            caps = caps + [cap] if cap not in caps else caps
            rules.append(dict(rule, names=[name], excludes=dict(rule.get("excludes", {}), caps=caps)))
for name, cap in gated.items():
    allow = {"names": [name], "action": "SCMP_ACT_ALLOW", "args": [],
             "includes": {"caps": [cap]}, "excludes": {}}
    if not any(r["names"] == [name] and r["action"] == "SCMP_ACT_ALLOW"
               and r.get("includes", {}).get("caps") == [cap] for r in rules):
        rules.append(allow)
profile["syscalls"] = rules
json.dump(profile, open(sys.argv[2], "w"), indent=1)
EOF
        OPTS+=(--security-opt "seccomp=$WORK/seccomp.json")
    fi
else
    OPTS+=(--user 0:0)
fi

# A build context with only what Containerfile copies (not all of target/).
mkdir -p "$WORK/ctx/target/$TARGET/release" || fail "cannot create $WORK"
{ cp Containerfile "$WORK/ctx/" && cp "$BIN" "$WORK/ctx/target/$TARGET/release/"; } || fail "cannot copy into $WORK/ctx"
BUILD_OPTS=()
[ "$ENGINE" = podman ] && BUILD_OPTS=(--layers=false)  # no intermediate images left behind
"$ENGINE" build -q "${BUILD_OPTS[@]}" -f "$WORK/ctx/Containerfile" --build-arg "TARGET=$TARGET" -t "$TAG" "$WORK/ctx" \
    >"$WORK/build.log" 2>&1 || fail "$ENGINE build failed: $(tail -1 "$WORK/build.log")"

# podman: if its default runtime cannot start this image at all, try runc.
if [ "$ENGINE" = podman ] && [ -z "${RUNTIME:-}" ]; then
    if ! podman run --rm "${OPTS[@]}" "$TAG" --version \
        >"$WORK/smoke.log" 2>&1; then
        command -v runc >/dev/null \
            || fail "podman cannot start a container here: $(tail -1 "$WORK/smoke.log")"
        RUN+=(--runtime runc)
        "${RUN[@]}" run --rm "${OPTS[@]}" "$TAG" --version >"$WORK/smoke.log" 2>&1 \
            || fail "podman cannot start a container here (default runtime nor runc): $(tail -1 "$WORK/smoke.log")"
    fi
fi

# Starts a container (name $1, then run options, then the image and its arguments) and waits
# for probe-user's banner.
start() {
    local name=$1; shift
    CONTAINERS+=("$name")
    "${RUN[@]}" run -d --name "$name" "$@" >"$WORK/$name.id" 2>"$WORK/$name.err" \
        || fail "$name did not start: $(tail -1 "$WORK/$name.err")"
    for _ in $(seq 100); do
        if "$ENGINE" logs "$name" 2>&1 | grep -q '^\(Tracing\|Counting\) TCP connects'; then return 0; fi
        if [ "$("$ENGINE" inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != true ]; then
            fail "$name exited: $("$ENGINE" logs "$name" 2>&1 | tail -1)"
        fi
        sleep 0.2
    done
    fail "$name printed no banner in 20 s: $("$ENGINE" logs "$name" 2>&1 | tail -1)"
}

# A listener on the host; `connect` makes one connect to it and prints "SRCPORT".
python3 - "$WORK/port" <<'EOF' &
import socket, sys
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
open(sys.argv[1], "w").write(str(listener.getsockname()[1]))
while True:
    listener.accept()[0].close()
EOF
LISTENER=$!
for _ in $(seq 50); do [ -s "$WORK/port" ] && break; sleep 0.1; done
PORT=$(cat "$WORK/port" 2>/dev/null) || fail "the host listener did not start"
connect() {
    python3 -c 'import socket,sys; c=socket.create_connection(("127.0.0.1", int(sys.argv[1]))); print(c.getsockname()[1]); c.close()' "$PORT"
}

# 1. stap lines, from the host's network namespace, filtered to the listener's port.
start probe-check-stap-$$ "${OPTS[@]}" --net=host "$TAG" --attach "$ATTACH" --filter-port "$PORT"
PID=$("$ENGINE" inspect -f '{{.State.Pid}}' probe-check-stap-$$)
STATUS=$(cat "/proc/$PID/status" 2>/dev/null) || fail "cannot read /proc/$PID/status of the container"
CAPEFF=$(awk '/^CapEff:/ {print $2}' <<<"$STATUS")
NNP=$(awk '/^NoNewPrivs:/ {print $2}' <<<"$STATUS")
UID_=$(awk '/^Uid:/ {print $2}' <<<"$STATUS")
[ "$CAPEFF" = 000000c000000000 ] || fail "container process has CapEff $CAPEFF, not exactly CAP_BPF+CAP_PERFMON (000000c000000000)"
[ "$NNP" = 1 ] || fail "container process lacks no_new_privs (NoNewPrivs: $NNP)"
EXPECT_UID=65534; [ "$ENGINE" = docker ] && EXPECT_UID=0
[ "$UID_" = "$EXPECT_UID" ] || fail "container process runs as uid $UID_, not $EXPECT_UID"
SPORT=$(connect) || fail "connect to the host listener on port $PORT failed"
LINE=": tcp_v4_connect src=127.0.0.1:$SPORT dst=127.0.0.1:$PORT"
for _ in $(seq 50); do
    "$ENGINE" logs probe-check-stap-$$ 2>/dev/null | grep -qF -- "$LINE" && break
    sleep 0.1
done
LOGS=$("$ENGINE" logs probe-check-stap-$$ 2>&1)
grep -qF -- "$LINE" <<<"$LOGS" || fail "no line '...$LINE' in the container's output (last: $(tail -1 <<<"$LOGS"))"
BACKEND=$(grep -o '^Tracing TCP connects ([^)]*)' <<<"$LOGS" | head -1)

# 2. The image's default command: metrics on 0.0.0.0:9779 in the container's own network
#    namespace, published on the host's loopback; a connect on the host must be counted.
MPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start probe-check-metrics-$$ "${OPTS[@]}" -p "127.0.0.1:$MPORT:9779" "$TAG"
connect >/dev/null || fail "second connect to the host listener failed"
SERIES="connects_total{family=\"ipv4\",dport=\"$PORT\"} 1"
for _ in $(seq 50); do
    BODY=$(python3 -c 'import sys,urllib.request; print(urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=5).read().decode())' "$MPORT" 2>&1)
    grep -qF "$SERIES" <<<"$BODY" && break
    sleep 0.1
done
NOTE=""
if ! grep -qF "tcpconn_$SERIES" <<<"$BODY"; then
    fail "no tcpconn_$SERIES on the published metrics port (got: $(grep connects_total <<<"$BODY" | head -3 | tr '\n' ' '))"
fi

echo "OK: $ENGINE ${RUN[*]:1} image from $BIN, uid $UID_ with only CAP_BPF+CAP_PERFMON: printed '$(grep -F -- "$LINE" <<<"$LOGS" | head -1)' [$BACKEND], and counted the connect on the published metrics port${NOTE}"
exit 0
