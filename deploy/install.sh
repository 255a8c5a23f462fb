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
# systemd unit. /etc/liftwatch and every file in it belong to root, readable by the
# liftwatch group only: the service cannot change its config, broker, credentials or
# CA; it writes only in /var/lib/liftwatch (remote config changes included).
# --config installs the terminal's config (never replacing one already there),
# --tls-dir the operator's ca.pem, client.pem and client.key, --credentials an MQTT
# username/password file (checked, installed as credentials.toml and named in the
# config's uplink.credentials_file), --python the interpreter the virtualenv is made
# from (default /usr/bin/python3: INSTALL.md says why).
# It does not start the agent: commission first (INSTALL.md step 4). Running it again
# upgrades in place (restarting an agent that runs), keeps the config, keys and data,
# and puts the owners and modes of /etc/liftwatch right again.
#
# --root DIR installs every path under DIR (DIR/etc/liftwatch, DIR/opt/liftwatch, ...),
# for tests; the user is always the machine's real `liftwatch`, and systemd is left
# alone. Paths written into the unit and the config are the installed ones.
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
        # the comment block above, whole: it ends at the first line that is not one
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
                   exit 0 ;;
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
# /etc/liftwatch is root's, readable by the liftwatch group and by nobody else: the
# service reads its config, key and credentials there and can change none of them
# (`liftwatch calibrate`, which rewrites the config, is run with sudo). The unit's
# ProtectSystem=strict also mounts it read-only for the service. Its writable state,
# remote config changes included, is /var/lib/liftwatch (StateDirectory=).
# g-s: an earlier version made the directories setgid and group-writable.
install -d -m 0750 -o root -g "$USER_NAME" "$ETC" "$ETC/tls"
# Whatever an earlier version or a hand left in it: root's, read by the group only.
# (Symbolic links are not followed: -type f and -type d skip them.)
find "$ETC" -xdev -type d -exec chown root:"$USER_NAME" {} + -exec chmod u=rwx,g=rx,o=,g-s {} +
find "$ETC" -xdev -type f -exec chown root:"$USER_NAME" {} + -exec chmod 0640 {} +
others=$(find "$ETC" -xdev ! -type f ! -type d)
[ -z "$others" ] || say "warning: not files or directories in $ETC (left alone): $others"
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
cred_new=""
trap 'rm -rf "$build"; [ -z "$cred_new" ] || rm -f "$cred_new"' EXIT
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
# Every file here: root:liftwatch 0640. The credentials are checked by the agent's own
# reader before they are installed, and the config is pointed at them.
if [ -n "$CRED_SRC" ]; then
    cred_new=$ETC/.credentials.toml.new
    install -m 0640 -o root -g "$USER_NAME" "$CRED_SRC" "$cred_new"
    "$VENV/bin/python" "$SRC/deploy/install_credentials.py" check "$cred_new" "$CRED_SRC" \
        || die "--credentials $CRED_SRC refused: nothing installed"
fi
if [ -n "$CONFIG_SRC" ]; then
    if [ -e "$ETC/terminal.toml" ]; then
        say "$ETC/terminal.toml exists: kept (not replaced by $CONFIG_SRC)"
    else
        install -m 0640 -o root -g "$USER_NAME" "$CONFIG_SRC" "$ETC/terminal.toml"
        say "config $ETC/terminal.toml (root:$USER_NAME 0640)"
    fi
fi
if [ -n "$TLS_SRC" ]; then
    for f in ca.pem client.pem client.key; do
        [ ! -f "$TLS_SRC/$f" ] || install -m 0640 -o root -g "$USER_NAME" "$TLS_SRC/$f" "$ETC/tls/$f"
    done
    say "TLS files in $ETC/tls: $(cd "$ETC/tls" && echo *)"
fi
if [ -n "$CRED_SRC" ]; then
    mv -f "$cred_new" "$ETC/credentials.toml"
    say "credentials $ETC/credentials.toml (root:$USER_NAME 0640)"
    if [ -f "$ETC/terminal.toml" ]; then
        "$VENV/bin/python" "$SRC/deploy/install_credentials.py" name-in-config \
            "$ETC/terminal.toml" "$ETC/credentials.toml" || die "$ETC/terminal.toml not changed"
    else
        say "no $ETC/terminal.toml yet: set uplink.credentials_file = \"$ETC/credentials.toml\" in it"
    fi
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
