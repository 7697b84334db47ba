#!/usr/bin/env bash
# Checks the README on a minimal Debian 12: builds a chroot from Debian's
# packages (debootstrap --variant=minbase bookworm: no compiler, no Python,
# no Boost or Thrift), copies a clone of this repository's HEAD in and runs
# there what a new user would run. Needs root, debootstrap and network.
#
#   scripts/minimal-debian.sh quickstart   # apt-get install make; make run (curl answers); make test
#   scripts/minimal-debian.sh wheel        # the wheel of dist/ in a chroot without any -dev package:
#                                          # pip install, serve hello, ldd, a native Thrift app
#
# Each step prints how long it took. Slow (it builds a Debian system, then the
# quick start builds the C++ core twice and runs every test: 6 to 8 minutes on
# 2 shared cores, the wheel check 2 to 3), so not in CI.
# Environment: BPS_CHROOT_DIR (default /tmp/bps-minimal-debian) holds the
# debootstrap tarball (made once) and the chroots; BPS_MIRROR the Debian mirror;
# BPS_KEEP=1 keeps the chroot afterwards.
set -euo pipefail

mode=${1:-quickstart}
src=$(cd "$(dirname "$0")/.." && pwd)
work=${BPS_CHROOT_DIR:-/tmp/bps-minimal-debian}
mirror=${BPS_MIRROR:-http://deb.debian.org/debian}
tarball=$work/bookworm-minbase.tar.gz
root=$work/root-$mode
# make run serves on the default localhost:9090; the wheel checks use --bind.
port=${BPS_PORT:-9090}

[ "$(id -u)" = 0 ] || { echo "minimal-debian.sh: run as root (debootstrap, chroot, mount)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "minimal-debian.sh: apt-get install debootstrap" >&2; exit 2; }

step_start=0
step() { step_start=$(date +%s); echo "=== $*"; }
took() { echo "=== $1 took $(( $(date +%s) - step_start )) s"; }

mkdir -p "$work"
if [ ! -f "$tarball" ]; then
  step "debootstrap --variant=minbase bookworm"
  debootstrap --variant=minbase --make-tarball="$tarball.tmp" bookworm "$work/tarball-tmp" "$mirror"
  mv "$tarball.tmp" "$tarball" && rm -rf "$work/tarball-tmp"
  took "debootstrap (download)"
fi

bg_groups=()
cleanup() {
  # The servers first (each started in its own process group), then the
  # mounts; the tree is removed only once nothing of the host is mounted in it.
  for g in "${bg_groups[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  sleep 1
  for g in "${bg_groups[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
  for m in dev/pts dev/shm dev proc sys; do
    if mountpoint -q "$root/$m"; then umount -l "$root/$m"; fi
  done
  if grep -q " $root/" /proc/mounts; then
    echo "minimal-debian.sh: mounts left under $root, not removing it" >&2
  elif [ "${BPS_KEEP:-0}" != 1 ]; then
    rm -rf "$root"
  fi
}
trap cleanup EXIT

rm -rf "$root"
step "unpack a fresh minbase chroot into $root"
debootstrap --variant=minbase --unpack-tarball="$tarball" bookworm "$root" "$mirror" >/dev/null
took "chroot"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# What the Debian installer writes (debootstrap leaves /etc/hosts out), so
# that localhost, the default --bind, resolves as on an installed machine.
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
mount --bind /dev/shm "$root/dev/shm"

# A clone of HEAD, as a user would get it (no build output, no venv).
clone=$root/root/baseplate-serve
git clone -q --no-checkout "$src" "$clone"
git -C "$clone" fetch -q "$src" HEAD
git -C "$clone" checkout -q --detach FETCH_HEAD
echo "clone: $(git -C "$clone" log --oneline -1)"

# A host behind a TLS-intercepting egress proxy trusts a local CA: pass it on
# (Debian's ca-certificates adds it to the system bundle, and pip is told to
# use that bundle instead of its own). An ordinary machine has none.
extra_env=()
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  extra_env=(PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
  echo "passing on the host's local CA certificates (PIP_CERT)"
fi

chroot_env=(/usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "${extra_env[@]}")
in_chroot() { chroot "$root" "${chroot_env[@]}" /bin/bash -euo pipefail -c "$1"; }
# Starts "$1" in the chroot in the background, in a process group of its own
# (bg_pid is its leader, and with `exec` the server itself), output to "$2".
in_chroot_bg() {
  setsid chroot "$root" "${chroot_env[@]}" /bin/bash -euo pipefail -c "$1" > "$2" 2>&1 &
  bg_pid=$!
  bg_groups+=("$bg_pid")
}
stop_bg() {  # SIGTERM to the whole group, then wait (bounded) for the leader
  kill -TERM -- "-$1" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$1" 2>/dev/null || return 0; sleep 1; done
  kill -KILL -- "-$1" 2>/dev/null || true
}

# Waits (bounded) until localhost:$port answers and prints the body.
wait_hello() {  # seconds, pid of what should serve
  for _ in $(seq 1 "$1"); do
    if body=$(curl -fsS "http://127.0.0.1:$port/" 2>/dev/null); then echo "curl: $body"; return 0; fi
    kill -0 "$2" 2>/dev/null || return 1
    sleep 1
  done
  return 1
}

case $mode in
quickstart)
  step "apt-get install make (the README's first line)"
  in_chroot "apt-get update -qq && apt-get install -y -qq make >/dev/null"
  took "apt-get install make"
  step "make run"
  in_chroot_bg "cd /root/baseplate-serve && exec make run" "$work/make-run.log"
  run_pid=$bg_pid
  if wait_hello 3600 "$run_pid"; then took "make run (until curl answered)"; else echo "make run did not serve; see $work/make-run.log"; tail -30 "$work/make-run.log"; exit 1; fi
  stop_bg "$run_pid"  # make run serves in the foreground, as for a user until Ctrl-C
  grep "baseplate_serve:" "$work/make-run.log" | tail -6
  step "make test"
  in_chroot "cd /root/baseplate-serve && make test" > "$work/make-test.log" 2>&1 || { tail -60 "$work/make-test.log"; exit 1; }
  took "make test"
  grep -E "tests passed|[0-9]+ passed" "$work/make-test.log" | tail -3
  ;;
wheel)
  port=${BPS_PORT:-19090}  # not make run's, so that both checks can run at once
  wheel=$(ls "$src"/dist/baseplate_serve-*manylinux*.whl 2>/dev/null | head -1 || true)
  [ -n "$wheel" ] || { echo "minimal-debian.sh: no manylinux wheel in dist/ (make wheel)" >&2; exit 2; }
  cp "$wheel" "$root/root/"
  step "apt-get install python3-venv (no -dev package, no Boost, no Thrift)"
  in_chroot "apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv curl ca-certificates >/dev/null"
  took "apt-get"
  step "pip install the wheel into a venv"
  in_chroot "python3 -m venv /root/venv && /root/venv/bin/pip install -q /root/$(basename "$wheel")"
  took "pip install"
  in_chroot "if dpkg -l | awk '/^ii/ {print \$2}' | grep -- '-dev\$'; then exit 1; fi; echo 'no -dev package installed'"
  echo "=== ldd of _core*.so"
  in_chroot "ldd /root/venv/lib/python3*/site-packages/baseplate_serve/_core*.so"
  in_chroot "if ldd /root/venv/lib/python3*/site-packages/baseplate_serve/_core*.so | grep 'not found'; then exit 1; fi"
  step "baseplate-serve examples/hello/hello.ini"
  in_chroot_bg "cd /root/baseplate-serve/examples/hello && exec /root/venv/bin/baseplate-serve --bind 127.0.0.1:$port hello.ini" "$work/wheel-serve.log"
  serve_pid=$bg_pid
  if wait_hello 60 "$serve_pid"; then took "start-up"; else cat "$work/wheel-serve.log"; exit 1; fi
  stop_bg "$serve_pid"
  cat "$work/wheel-serve.log"
  step "a native Thrift app built against the installed SDK (the native app prerequisites, without libthrift-dev)"
  in_chroot "apt-get install -y -qq --no-install-recommends g++ make libboost-dev thrift-compiler >/dev/null && /root/venv/bin/pip install -q cmake"
  in_chroot "if dpkg -s libthrift-dev >/dev/null 2>&1; then exit 1; fi; echo 'libthrift-dev not installed'"
  in_chroot "cd /root/baseplate-serve/examples/native_thrift && export PATH=/root/venv/bin:\$PATH && cmake -S . -B build -DBaseplateServe_DIR=\$(baseplate-serve --sdk-dir) >/dev/null && cmake --build build >/dev/null && ls build/*.so"
  took "native app build"
  step "baseplate-serve examples/native_thrift/app.ini"
  in_chroot_bg "cd /root/baseplate-serve/examples/native_thrift && exec /root/venv/bin/baseplate-serve --bind 127.0.0.1:$port app.ini" "$work/wheel-thrift.log"
  serve_pid=$bg_pid
  for _ in $(seq 1 120); do  # until the port accepts (bounded), or the server has exited
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || ! kill -0 "$serve_pid" 2>/dev/null; then break; fi
    sleep 1
  done
  took "start-up"
  echo "=== calls with each kind of Python Thrift client (the thrift package came with the wheel)"
  in_chroot "cd /root/baseplate-serve/examples/thrift_echo && /root/venv/bin/python client.py $port" || { stop_bg "$serve_pid"; cat "$work/wheel-thrift.log"; exit 1; }
  echo "=== libthrift in /proc/$serve_pid/maps:"
  grep -o '/[^ ]*libthrift[^ ]*' "/proc/$serve_pid/maps" | sort -u || true
  n=$(grep -o '/[^ ]*libthrift-[^ ]*' "/proc/$serve_pid/maps" | sort -u | wc -l || true)
  stop_bg "$serve_pid"
  cat "$work/wheel-thrift.log"
  [ "$n" = 1 ] || { echo "expected one libthrift, found $n"; exit 1; }
  echo "=== one libthrift in the process"
  ;;
*)
  echo "usage: minimal-debian.sh quickstart|wheel" >&2; exit 2 ;;
esac
echo "=== minimal-debian.sh $mode: OK"
