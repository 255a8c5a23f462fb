#!/usr/bin/env bash
# Install liftwatch on a terminal, as deploy/INSTALL.md describes it (the guide is
# this script's manual; keep the two in step). Run as root from a clone:
#
#   sudo deploy/install.sh [--config FILE] [--tls-dir DIR] [--credentials FILE]
#                          [--python PYTHON] [--root DIR]
#
# It makes the system user `liftwatch` (with the gpio, i2c and dialout groups that
# exist here), the directories with their owners and modes, a virtualenv holding
# liftwatch and its runtime dependencies only (no test or plotting tools), and the
# systemd unit. It does not start the agent: commission first (INSTALL.md step 4).
# Running it again upgrades in place (restarting an agent that runs) and keeps the
# config, keys and data.
#
# --root DIR installs every path under DIR (DIR/etc/liftwatch, DIR/opt/liftwatch, ...),
# for tests; the user is always the machine's real `liftwatch`, and systemd is left
# alone. Paths written into the unit are the installed ones.
set -euo pipefail
umask 022  # the venv must be readable by the service user whatever root's umask is

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=""
PYTHON=/usr/bin/python3  # Debian's build: see INSTALL.md on pyenv and shared builds
CONFIG_SRC=""
TLS_SRC=""
CRED_SRC=""
USER_NAME=liftwatch
GROUPS_WANTED=(gpio i2c dialout)

die() { echo "install: $*" >&2; exit 1; }
say() { echo "install: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=${2%/}; shift 2 ;;
        --python) PYTHON=$2; shift 2 ;;
        --config) CONFIG_SRC=$2; shift 2 ;;
        --tls-dir) TLS_SRC=$2; shift 2 ;;
        --credentials) CRED_SRC=$2; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "run as root (sudo): it adds a system user and sets owners"
[ -z "$ROOT" ] || [ -d "$ROOT" ] || die "--root $ROOT is not a directory"
[ -z "$CONFIG_SRC" ] || [ -f "$CONFIG_SRC" ] || die "--config $CONFIG_SRC: no such file"
[ -z "$TLS_SRC" ] || [ -d "$TLS_SRC" ] || die "--tls-dir $TLS_SRC: no such directory"
[ -z "$CRED_SRC" ] || [ -f "$CRED_SRC" ] || die "--credentials $CRED_SRC: no such file"
"$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || die "$PYTHON must be Python >= 3.11 with venv (sudo apt-get install python3-venv)"

ETC=$ROOT/etc/liftwatch
DATA=$ROOT/var/lib/liftwatch
OPT=$ROOT/opt/liftwatch
VENV=$OPT/venv
UNIT=$ROOT/etc/systemd/system/liftwatch.service

# ---- 1. the service user and its device groups
if id -u "$USER_NAME" >/dev/null 2>&1; then
    say "user $USER_NAME exists"
else
    useradd --system --user-group --home-dir /var/lib/liftwatch --no-create-home \
        --shell /usr/sbin/nologin --comment "liftwatch lift-monitoring agent" "$USER_NAME"
    say "user $USER_NAME created"
fi
groups_here=()
for g in "${GROUPS_WANTED[@]}"; do
    if getent group "$g" >/dev/null; then
        groups_here+=("$g")
    else
        say "group $g does not exist on this machine: skipped (it exists on Raspberry Pi OS)"
    fi
done
if [ ${#groups_here[@]} -gt 0 ]; then
    usermod --append --groups "$(IFS=,; echo "${groups_here[*]}")" "$USER_NAME"
    say "user $USER_NAME in groups: ${groups_here[*]}"
fi

# ---- 2. directories, owners, modes
# /etc/liftwatch: root-owned, writable by the liftwatch group, setgid (new files get
# the group): `liftwatch calibrate`, run as the service user, replaces the config and
# writes its .bak there. The running service cannot write it (ProtectSystem=strict).
install -d -m 2770 -o root -g "$USER_NAME" "$ETC"
chmod 2770 "$ETC"  # install -d leaves an existing directory's setgid bit as it was
install -d -m 0750 -o root -g "$USER_NAME" "$ETC/tls"
install -d -m 0750 -o "$USER_NAME" -g "$USER_NAME" "$DATA"
install -d -m 0755 -o root -g root "$OPT" "$(dirname "$UNIT")"

# ---- 3. the virtualenv: liftwatch and its runtime dependencies, nothing else
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
    say "virtualenv $VENV made from $PYTHON"
fi
# Build from a clean copy of the sources: building in place would leave root-owned
# build/ and *.egg-info folders in the clone.
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
tar -C "$SRC" --exclude=./.venv --exclude=./.git --exclude=./build --exclude='*.egg-info' \
    --exclude=__pycache__ --exclude=./tests --exclude=./hil_tests --exclude=./bench \
    -cf - . | tar -C "$build" -xf -
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --upgrade --upgrade-strategy only-if-needed "$build" 2>&1 | { grep -v "is ignored" || true; } >&2
"$VENV/bin/python" -c "import liftwatch.agent.cli" || die "the agent does not import in $VENV"
cp "$SRC/README.md" "$SRC/deploy/INSTALL.md" "$OPT/"
say "liftwatch $("$VENV/bin/python" -c \
    'import importlib.metadata as m; print(m.version("liftwatch"))') in $VENV"

# ---- 4. the terminal's config and secrets (only when given; a config is never replaced)
if [ -n "$CONFIG_SRC" ]; then
    if [ -e "$ETC/terminal.toml" ]; then
        say "$ETC/terminal.toml exists: kept (not replaced by $CONFIG_SRC)"
    else
        install -m 0640 -o root -g "$USER_NAME" "$CONFIG_SRC" "$ETC/terminal.toml"
        say "config $ETC/terminal.toml (root:$USER_NAME 0640)"
    fi
fi
if [ -n "$TLS_SRC" ]; then
    for f in ca.pem client.pem; do
        [ ! -f "$TLS_SRC/$f" ] || install -m 0644 -o root -g root "$TLS_SRC/$f" "$ETC/tls/$f"
    done
    # the key: readable by the service through its group, by no other user; root-owned,
    # so the service cannot change it (a 0600 root key would be unreadable by it)
    [ ! -f "$TLS_SRC/client.key" ] \
        || install -m 0640 -o root -g "$USER_NAME" "$TLS_SRC/client.key" "$ETC/tls/client.key"
    say "TLS files in $ETC/tls: $(cd "$ETC/tls" && echo *)"
fi
if [ -n "$CRED_SRC" ]; then
    install -m 0640 -o root -g "$USER_NAME" "$CRED_SRC" "$ETC/credentials.toml"
    say "credentials $ETC/credentials.toml (root:$USER_NAME 0640)"
fi

# ---- 5. the systemd unit (installed; started by the technician after commissioning)
sed -e "s#/opt/liftwatch#$OPT#g" -e "s#/etc/liftwatch#$ETC#g" \
    -e "s#^ReadWritePaths=/var/lib/liftwatch#ReadWritePaths=$DATA#" \
    -e "s#^SupplementaryGroups=.*#SupplementaryGroups=${groups_here[*]:-}#" \
    "$SRC/deploy/liftwatch.service" > "$UNIT.tmp"
chmod 0644 "$UNIT.tmp"
mv "$UNIT.tmp" "$UNIT"
if [ -n "$ROOT" ]; then
    say "unit $UNIT written (--root: systemd not told)"
elif [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if systemctl is-active --quiet liftwatch; then
        systemctl restart liftwatch
        say "unit reloaded; the running agent restarted on the new version"
    else
        say "unit installed; after commissioning: systemctl enable --now liftwatch"
    fi
else
    say "unit $UNIT installed; systemd is not running here, so it was not loaded"
fi
