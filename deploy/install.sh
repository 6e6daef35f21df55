#!/usr/bin/env bash
# Install edgert as a systemd service on a Debian-like device (Raspberry Pi OS,
# Debian, Yocto with systemd). Run as root from a checkout, or give a wheel:
#
#   sudo deploy/install.sh                 # installs this checkout
#   sudo deploy/install.sh edgert-0.1.0-py3-none-any.whl
#
# It creates the user `edgert` (groups dialout, gpio when present), a virtualenv
# in /opt/edgert/venv, /etc/edgert/gateway.toml (from configs/demo.toml when no
# config is there yet: edit it, then `systemctl restart edgert`), the unit and
# the udev rules. It never overwrites an existing config. Set EDGERT_ROOT to
# install under another root (an image being built); then no user is created
# and systemd is not touched.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
src=${1:-$here}
root=${EDGERT_ROOT:-}
python=${PYTHON:-python3}

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "install.sh: edgert needs Python 3.11 or newer ($python is older)" >&2
  exit 2
}

venv="$root/opt/edgert/venv"
etc="$root/etc/edgert"
mkdir -p "$root/opt/edgert" "$etc" "$root/etc/systemd/system" "$root/etc/udev/rules.d"
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "$src[demo]"  # the demo config embeds nats-server

if [ ! -e "$etc/gateway.toml" ]; then
  install -m 0640 "$here/configs/demo.toml" "$etc/gateway.toml"
  echo "install.sh: wrote $etc/gateway.toml (the demo); edit it for your hardware"
fi
"$venv/bin/edgert" check "$etc/gateway.toml"
install -m 0644 "$here/deploy/edgert.service" "$root/etc/systemd/system/edgert.service"
install -m 0644 "$here/deploy/99-edgert.rules" "$root/etc/udev/rules.d/99-edgert.rules"

if [ -z "$root" ]; then
  getent group gpio >/dev/null || groupadd --system gpio
  id edgert >/dev/null 2>&1 || useradd --system --home-dir /var/lib/edgert --shell /usr/sbin/nologin edgert
  usermod -aG dialout,gpio edgert
  chgrp edgert "$etc/gateway.toml"
  udevadm control --reload 2>/dev/null && udevadm trigger 2>/dev/null || true
  systemctl daemon-reload
  systemctl enable --now edgert
  echo "install.sh: edgert is running: systemctl status edgert; $venv/bin/edgert status --runtime-dir /run/edgert/<gateway id>"
else
  echo "install.sh: installed under $root"
fi
