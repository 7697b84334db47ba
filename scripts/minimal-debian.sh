#!/usr/bin/env bash
# Checks the README on a minimal Debian 12: builds a chroot from Debian's
# packages (debootstrap --variant=minbase bookworm: no compiler, no Python,
# no Boost or Thrift), copies a clone of this repository's HEAD in and runs
# there what a new user would run. Needs root, debootstrap and network.
#
#   scripts/minimal-debian.sh quickstart   # apt-get install make; make run (curl answers); make test
#   scripts/minimal-debian.sh wheel        # the wheel of dist/ in a chroot without any -dev package:
#                                          # pip install, serve hello, ldd, a native Thrift plugin
#
# Each step prints how long it took. Slow (the quick start builds the C++ core
# twice and runs every test: about half an hour on 2 cores), so not in CI.
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

cleanup() {
  for m in dev/pts dev/shm dev proc sys; do
    mountpoint -q "$root/$m" && umount -l "$root/$m"
  done
  if [ "${BPS_KEEP:-0}" != 1 ]; then rm -rf "$root"; fi
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

in_chroot() { chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "${extra_env[@]}" /bin/bash -euo pipefail -c "$1"; }

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
  in_chroot "cd /root/baseplate-serve && exec make run" > "$work/make-run.log" 2>&1 &
  run_pid=$!
  if wait_hello 3600 "$run_pid"; then took "make run (until curl answered)"; else echo "make run did not serve; see $work/make-run.log"; tail -30 "$work/make-run.log"; exit 1; fi
  # make run serves in the foreground: stop the server it started.
  server=$(for p in /proc/[0-9]*; do [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && grep -qa baseplate-serve "$p/cmdline" 2>/dev/null && basename "$p"; done | head -1)
  [ -n "$server" ] && kill -TERM "$server"
  wait "$run_pid" || true
  tail -5 "$work/make-run.log"
  step "make test"
  in_chroot "cd /root/baseplate-serve && make test" 2>&1 | tee "$work/make-test.log" | tail -40
  took "make test"
  ;;
wheel)
  wheel=$(ls "$src"/dist/baseplate_serve-*manylinux*.whl 2>/dev/null | head -1)
  [ -n "$wheel" ] || { echo "minimal-debian.sh: no manylinux wheel in dist/ (make wheel)" >&2; exit 2; }
  cp "$wheel" "$root/root/"
  step "apt-get install python3-venv (no -dev package, no Boost, no Thrift)"
  in_chroot "apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv curl ca-certificates >/dev/null"
  took "apt-get"
  step "pip install the wheel into a venv"
  in_chroot "python3 -m venv /root/venv && /root/venv/bin/pip install -q /root/$(basename "$wheel")"
  took "pip install"
  in_chroot "dpkg -l | awk '/^ii/ {print \$2}' | grep -- '-dev\$' && exit 1 || echo 'no -dev package installed'"
  echo "=== ldd of _core*.so"
  in_chroot "ldd /root/venv/lib/python3*/site-packages/baseplate_serve/_core*.so"
  in_chroot "ldd /root/venv/lib/python3*/site-packages/baseplate_serve/_core*.so | grep -q 'not found' && exit 1 || true"
  step "baseplate-serve examples/hello/hello.ini"
  in_chroot "cd /root/baseplate-serve/examples/hello && exec /root/venv/bin/baseplate-serve --bind 127.0.0.1:$port hello.ini" > "$work/wheel-serve.log" 2>&1 &
  serve_pid=$!
  if wait_hello 60 "$serve_pid"; then took "start-up"; else cat "$work/wheel-serve.log"; exit 1; fi
  server=$(for p in /proc/[0-9]*; do [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && grep -qa baseplate-serve "$p/cmdline" 2>/dev/null && basename "$p"; done | head -1)
  kill -TERM "$server"; wait "$serve_pid" || true
  cat "$work/wheel-serve.log"
  step "a native Thrift plugin built against the installed SDK (the plugin prerequisites, without libthrift-dev)"
  in_chroot "apt-get install -y -qq --no-install-recommends g++ make libboost-dev thrift-compiler >/dev/null && /root/venv/bin/pip install -q cmake"
  in_chroot "dpkg -s libthrift-dev >/dev/null 2>&1 && exit 1; ls /usr/lib/*/libthrift* 2>/dev/null; echo 'libthrift-dev not installed'"
  in_chroot "cd /root/baseplate-serve/examples/native_thrift && PATH=/root/venv/bin:\$PATH cmake -S . -B build -DBaseplateServe_DIR=\$(/root/venv/bin/baseplate-serve --sdk-dir) >/dev/null && PATH=/root/venv/bin:\$PATH cmake --build build >/dev/null && ls build/*.so"
  in_chroot "cd /root/baseplate-serve/examples/native_thrift && exec /root/venv/bin/baseplate-serve --bind 127.0.0.1:$port native_thrift.ini" > "$work/wheel-thrift.log" 2>&1 &
  serve_pid=$!
  server=""
  for _ in $(seq 1 60); do
    server=$(for p in /proc/[0-9]*; do [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && grep -qa baseplate-serve "$p/cmdline" 2>/dev/null && basename "$p"; done | head -1)
    [ -n "$server" ] && grep -q "Listening on" "$work/wheel-thrift.log" && break
    sleep 1
  done
  echo "=== libthrift in /proc/$server/maps:"
  grep -o '/[^ ]*libthrift[^ ]*' "/proc/$server/maps" | sort -u
  n=$(grep -o '/[^ ]*libthrift-[^ ]*' "/proc/$server/maps" | sort -u | wc -l)
  kill -TERM "$server"; wait "$serve_pid" || true
  cat "$work/wheel-thrift.log"
  [ "$n" = 1 ] || { echo "expected one libthrift, found $n"; exit 1; }
  echo "=== one libthrift in the process"
  ;;
*)
  echo "usage: minimal-debian.sh quickstart|wheel" >&2; exit 2 ;;
esac
echo "=== minimal-debian.sh $mode: OK"
