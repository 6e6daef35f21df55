#!/usr/bin/env bash
# Install edgert as a systemd service on a Debian-like device (Raspberry Pi OS,
# Debian 12, Ubuntu), or into the root filesystem of an image being built.
#
#   sudo deploy/install.sh                          # this checkout, on this device
#   sudo deploy/install.sh edgert-0.1.0-py3-none-any.whl
#   sudo EDGERT_ROOT=/mnt/rootfs deploy/install.sh  # into an image's root filesystem
#
# What it does, on the device or inside the image alike:
# - Debian's python3-venv, python3-zmq and python3-msgpack (with apt-get, when
#   missing): the compiled dependencies come built for the device, so nothing
#   compiles there (armhf has no wheels for them). EDGERT_NATS_SERVER=1 adds
#   Debian's nats-server. EDGERT_APT=0 skips apt-get.
# - a virtualenv /opt/edgert/venv made by the device's own /usr/bin/python3,
#   with --system-site-packages, and edgert with its pure-Python dependencies;
# - the user `edgert` (groups dialout and gpio);
# - /etc/edgert/gateway.toml, root:edgert 0640, from deploy/gateway.toml when
#   there is none (an existing config is never overwritten): `embedded = true`
#   only when nats-server is installed;
# - the unit (enabled) and the udev rules; on a running system it starts it.
#
# An image (EDGERT_ROOT with /usr/bin/python3 in it) is installed into with
# chroot, so every path, the interpreter and the wheels are the image's own. An
# image of another architecture (arm64, armhf on an x86-64 host) needs
# qemu-user-static and binfmt-support on the host (Debian's packages). Run as
# root. EDGERT_ROOT without a Python in it is a staging root (a package being
# built): the venv is made with PYTHON (default python3) on this host, then its
# paths are rewritten to the ones the target will have; the target must have
# EDGERT_TARGET_PYTHON (default /usr/bin/python3.X, the same X) and this host's
# architecture.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
src=${1:-$here}
root=${EDGERT_ROOT:-}
root=${root%/}
python=${PYTHON:-python3}
prefix=/opt/edgert/venv
conf=/etc/edgert/gateway.toml
deb_pkgs="python3-venv python3-zmq python3-msgpack"
[ "${EDGERT_NATS_SERVER:-0}" = 1 ] && deb_pkgs="$deb_pkgs nats-server"

say() { echo "install.sh: $*"; }
die() {
  echo "install.sh: $*" >&2
  exit 2
}

if [ -z "$root" ]; then
  mode=system
elif [ -x "$root/usr/bin/python3" ]; then
  mode=image
else
  mode=staging
fi
[ "$(id -u)" = 0 ] || [ "$mode" = staging ] || die "run as root (sudo)"

# `in_target CMD...` runs CMD with the target's paths: on this system as it
# is, in an image under chroot (through qemu-user when its architecture is not
# this host's).
in_target() {
  if [ "$mode" = image ]; then
    chroot "$root" "$@"
  else
    "$@"
  fi
}

work=$(mktemp -d)
mounted=()
cleanup() {
  local m
  for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$work"
  [ "$mode" != image ] || rm -rf "$root/tmp/edgert-install"
}
trap cleanup EXIT

if [ "$mode" = image ]; then
  if ! chroot "$root" /bin/true 2>/dev/null; then
    die "cannot run programs of $root here: for an image of another architecture, apt-get install qemu-user-static binfmt-support (then /proc/sys/fs/binfmt_misc lists qemu-aarch64 and qemu-arm)"
  fi
  # What apt-get and pip need inside: /proc, /dev, name resolution.
  if [ ! -e "$root/proc/self" ]; then
    mount -t proc proc "$root/proc" && mounted+=("$root/proc")
  fi
  if [ ! -c "$root/dev/null" ] || [ ! -e "$root/dev/urandom" ]; then
    mount --bind /dev "$root/dev" && mounted+=("$root/dev")
  fi
  if [ ! -s "$root/etc/resolv.conf" ] && [ -s /etc/resolv.conf ]; then
    cp --remove-destination /etc/resolv.conf "$root/etc/resolv.conf"
  fi
fi

# 1. Debian's packages for what is compiled (and its Python, venv support).
if [ "$mode" != staging ] && [ "${EDGERT_APT:-1}" != 0 ] && [ -x "$root/usr/bin/apt-get" ]; then
  missing=()
  for p in $deb_pkgs; do
    in_target dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    apt() { in_target env DEBIAN_FRONTEND=noninteractive apt-get -q -y "$@"; }
    apt install --no-install-recommends "${missing[@]}" >"$work/apt.log" 2>&1 ||
      { apt update >>"$work/apt.log" 2>&1 && apt install --no-install-recommends "${missing[@]}" >>"$work/apt.log" 2>&1; } ||
      { cat "$work/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
  fi
fi

# 2. The virtualenv, made by the target's own Python.
if [ "$mode" = system ]; then
  py=$python
  [ -z "${PYTHON:-}" ] && [ -x /usr/bin/python3 ] && py=/usr/bin/python3
elif [ "$mode" = image ]; then
  py=/usr/bin/python3
else
  py=$python
fi
in_target "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "edgert needs Python 3.11 or newer ($py in ${root:-/} is older)"

mkdir -p "$root/opt/edgert" "$root/etc/edgert" "$root/etc/systemd/system" "$root/etc/udev/rules.d"
case "$src" in
  /*) ;;
  *) src=$PWD/$src ;;
esac
if [ "$mode" = staging ]; then
  # A staging root has no Python of its own: build with this host's, then give
  # every path the value it has on the target.
  rm -rf "${root:?}$prefix"
  "$python" -m venv "$root$prefix"
  pip=("$root$prefix/bin/python" -m pip)
else
  in_target "$py" -m venv --system-site-packages "$prefix"
  pip=("$root$prefix/bin/python" -m pip)
  # An image's venv runs only in the image: build the wheel with this host's pip.
  [ "$mode" = image ] && pip=("$python" -m pip)
fi
case "$src" in
  *.whl) cp "$src" "$work/" ;;
  *)
    "${pip[@]}" wheel --quiet --no-deps --wheel-dir "$work" "$src" >"$work/wheel.log" 2>&1 ||
      { cat "$work/wheel.log" >&2; die "could not build a wheel of $src"; }
    ;;
esac
wheel=$(ls "$work"/edgert-*.whl)
pip_opts=()
if [ "$mode" = image ]; then
  # The dependencies are fetched here, by this host's pip (and its index and
  # proxy settings): pip in the image then installs offline, and fast under
  # emulation. They are pure Python; the host's pyzmq and msgpack wheels that
  # come along go unused, Debian's in the image satisfy those requirements.
  mkdir -p "$root/tmp/edgert-install"
  "$python" -m pip download --quiet --dest "$root/tmp/edgert-install" "$wheel" >"$work/download.log" 2>&1 ||
    { cat "$work/download.log" >&2; die "could not download the dependencies of $wheel"; }
  cp "$wheel" "$root/tmp/edgert-install/"
  wheel=/tmp/edgert-install/$(basename "$wheel")
  pip_opts=(--no-index --find-links /tmp/edgert-install)
fi
# With --system-site-packages, pyzmq and msgpack are Debian's. edgert is
# reinstalled each time: the same version number may be newer code.
vpy=$root$prefix/bin/python3
[ "$mode" = image ] && vpy=$prefix/bin/python3
in_target "$vpy" -m pip install --quiet --no-warn-script-location ${pip_opts[@]+"${pip_opts[@]}"} "$wheel" >"$work/pip.log" 2>&1 &&
  in_target "$vpy" -m pip install --quiet --no-warn-script-location ${pip_opts[@]+"${pip_opts[@]}"} --no-deps --force-reinstall "$wheel" >>"$work/pip.log" 2>&1 ||
  { cat "$work/pip.log" >&2; die "pip install edgert failed"; }
if [ "$mode" = staging ]; then
  ver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  target_py=${EDGERT_TARGET_PYTHON:-/usr/bin/python$ver}
  grep -rlI --null -F "$root$prefix" "$root$prefix" | xargs -0 -r sed -i "s|$root$prefix|$prefix|g"
  # The compiled modules name their source files too (tracebacks show them): again,
  # with the target's paths.
  "$python" -m compileall -q -f -s "$root" -p / "$root$prefix/lib" >"$work/compile.log" 2>&1 ||
    { cat "$work/compile.log" >&2; die "could not compile $root$prefix/lib"; }
  ln -sfn "$target_py" "$root$prefix/bin/python"
  for link in python3 "python$ver"; do ln -sfn python "$root$prefix/bin/$link"; done
  sed -i -e "s|^home = .*|home = $(dirname "$target_py")|" \
    -e "s|^executable = .*|executable = $target_py|" "$root$prefix/pyvenv.cfg"
  say "staged for a target with $target_py (Python $ver) on $(uname -m)"
fi

# 3. The service user, in the target's /etc/passwd.
if [ "$mode" = system ]; then
  getent group gpio >/dev/null || groupadd --system gpio
  id edgert >/dev/null 2>&1 || useradd --system --home-dir /var/lib/edgert --shell /usr/sbin/nologin edgert
  usermod -aG dialout,gpio edgert
elif [ -e "$root/etc/passwd" ] && [ "$(id -u)" = 0 ]; then
  has() { grep -q "^$2:" "$root/etc/$1"; }
  has group gpio || groupadd --root "$root" --system gpio
  has group dialout || groupadd --root "$root" --system dialout
  has passwd edgert ||
    useradd --root "$root" --system --home-dir /var/lib/edgert --shell /usr/sbin/nologin --user-group edgert
  usermod --root "$root" -aG dialout,gpio edgert
else
  say "warning: no $root/etc/passwd (or not root): create the user on the target: useradd --system --user-group --groups dialout,gpio --home-dir /var/lib/edgert --shell /usr/sbin/nologin edgert"
fi
gid=$(awk -F: '$1 == "edgert" { print $3 }' "$root/etc/group" 2>/dev/null || true)

# 4. The config: the installed default, or the one already there.
nats_server=
for p in /usr/sbin/nats-server /usr/bin/nats-server /usr/local/bin/nats-server "$prefix/bin/nats-server"; do
  if [ -x "$root$p" ]; then nats_server=$p && break; fi
done
if [ ! -e "$root$conf" ]; then
  id=$(cat "$root/etc/hostname" 2>/dev/null || hostname)
  id=$(printf '%s' "${EDGERT_ID:-$id}" | tr -c 'A-Za-z0-9_-' '-' | sed 's/^-*//;s/-*$//')
  embedded=false
  if [ -n "$nats_server" ]; then
    embedded=true
    # Debian's nats-server package enables its own service on 127.0.0.1:4222,
    # the port of the gateway's embedded server: the gateway runs its own.
    wants=$root/etc/systemd/system/multi-user.target.wants/nats-server.service
    if [ -L "$wants" ]; then
      case $mode in
        system) systemctl disable --now nats-server >/dev/null 2>&1 || true ;;
        image) chroot "$root" deb-systemd-helper disable nats-server.service >/dev/null 2>&1 || true ;;
      esac
      rm -f "$wants"
      say "disabled nats-server.service: the gateway starts its own on 127.0.0.1:4222 (embedded = true)"
    fi
  fi
  sed -e "s/@ID@/${id:-gateway}/" -e "s/@EMBEDDED@/$embedded/g" "$here/deploy/gateway.toml" >"$work/gateway.toml"
  install -m 0640 "$work/gateway.toml" "$root$conf"
  if [ "$embedded" = true ]; then
    say "wrote $conf: gateway '${id:-gateway}', embedded NATS ($nats_server); edit it for your hardware"
  else
    say "wrote $conf: gateway '${id:-gateway}', no nats-server here, so embedded = false: it connects to nats://127.0.0.1:4222 (run one there, or set url; EDGERT_NATS_SERVER=1 installs Debian's)"
  fi
fi
if [ -n "$gid" ]; then
  chown "0:$gid" "$root$conf" && chmod 0640 "$root$conf"
fi

# Validate it: on this system everything `run` needs (`edgert check`); for an
# image only the file itself (ports and directories are the build host's).
if [ "$mode" = system ]; then
  "$prefix/bin/edgert" check "$conf"
else
  validate='import sys
from edgert.config import load
cfg = load(sys.argv[1])
names = ", ".join(f"{d.name} ({d.type})" for d in cfg.drivers) or "none"
print(f"{sys.argv[2]}: ok: gateway {cfg.gateway.id!r}, drivers: {names}")'
  if [ "$mode" = image ]; then
    chroot "$root" "$prefix/bin/python3" -c "$validate" "$conf" "$conf"
  else
    site=$(echo "$root$prefix"/lib/python*/site-packages)
    PYTHONPATH=$site "$python" -c "$validate" "$root$conf" "$conf"
  fi
fi

# 5. The unit and the udev rules.
install -m 0644 "$here/deploy/edgert.service" "$root/etc/systemd/system/edgert.service"
install -m 0644 "$here/deploy/99-edgert.rules" "$root/etc/udev/rules.d/99-edgert.rules"
if [ "$mode" = system ]; then
  udevadm control --reload 2>/dev/null && udevadm trigger 2>/dev/null || true
  systemctl daemon-reload
  systemctl enable --now edgert
  say "edgert is running: systemctl status edgert; sudo $prefix/bin/edgert status"
else
  mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
  ln -sfn /etc/systemd/system/edgert.service "$root/etc/systemd/system/multi-user.target.wants/edgert.service"
  say "installed under $root ($mode); edgert.service starts at boot"
fi
