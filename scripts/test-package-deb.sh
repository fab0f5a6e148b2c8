#!/usr/bin/env bash
# The packaging test: builds the .deb from the debug binaries (scripts/package-deb.sh --debug;
# the release build takes ~15 min from scratch, too long for every CI run, and the layout is the
# same), installs it with dpkg into a throwaway root, and checks the files and --version.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/progsync-deb-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "test-package-deb: $*" >&2; exit 1; }

deb=$(scripts/package-deb.sh --debug -o "$work")
version=$(tr -d ' \n' < VERSION)
[ "$(basename "$deb")" = "progsync_${version}_amd64.deb" ] || fail "unexpected file name $deb"
# (No `| grep -q` here: with pipefail, grep leaving early fails the writer with SIGPIPE.)
[ "$(dpkg-deb --field "$deb" Package)" = progsync ] || fail "no control data"

# A throwaway root with an empty dpkg database. Dependencies are the host's business there; the
# maintainer scripts run outside a chroot with DPKG_ROOT set, and so do nothing to this machine.
root=$work/root
mkdir -p "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/triggers"
touch "$root/var/lib/dpkg/status"
dpkg --root="$root" --force-depends --force-script-chrootless --log=/dev/null -i "$deb" > "$work/dpkg.log" 2>&1 \
    || fail "dpkg -i into $root failed: $(cat "$work/dpkg.log")"
[ "$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${Status}' progsync)" = "install ok installed" ] || fail "not installed"

for f in usr/bin/progsyncd usr/bin/progsync usr/lib/progsync/progsyncd usr/lib/progsync/progsync \
    usr/lib/progsync/progsync_ProgSyncDaemon.resources/programme-2021.json \
    usr/lib/systemd/system/progsyncd.service usr/lib/systemd/system/progsync-reconcile.service \
    usr/lib/systemd/system/progsync-reconcile.timer usr/lib/sysusers.d/progsyncd.conf \
    usr/lib/tmpfiles.d/progsyncd.conf etc/progsync/progsyncd.yaml \
    usr/share/man/man1/progsyncd.1.gz usr/share/man/man1/progsync.1.gz \
    usr/share/bash-completion/completions/progsync usr/share/bash-completion/completions/progsyncd \
    usr/share/zsh/vendor-completions/_progsync usr/share/fish/vendor_completions.d/progsync.fish \
    usr/share/doc/progsync/README.md; do
    [ -e "$root/$f" ] || fail "missing /$f"
done
grep -q "^ExecStart=/usr/bin/progsyncd " "$root/usr/lib/systemd/system/progsyncd.service" || fail "the unit does not start /usr/bin/progsyncd"
! grep -rq /usr/local/ "$root/usr/lib/systemd/system" || fail "a unit still names /usr/local"
grep -q "^/etc/progsync/progsyncd.yaml$" "$root/var/lib/dpkg/info/progsync.conffiles" || fail "the configuration is not a conffile"
page=$(zcat "$root/usr/share/man/man1/progsync.1.gz")
grep -q "^\.Sh NAME" <<< "$page" || fail "progsync.1 is not a man page"
grep -q "records" <<< "$page" || fail "progsync.1 does not list the subcommands"
grep -q "progsync" "$root/usr/share/bash-completion/completions/progsync" || fail "empty bash completion"

# The installed binaries run, through the /usr/bin links, and name their version.
for b in progsyncd progsync; do
    line=$("$root/usr/bin/$b" --version) || fail "$b --version failed"
    case "$line" in "$b $version (commit "*")") ;; *) fail "$b --version printed: $line" ;; esac
done
# The installed daemon runs from the package alone: its resource bundle (the 2021 programme) and
# the Swift runtime from the package's folder. The binaries would fall back to the build
# folder's bundle and look in the toolchain first, so both are hidden (bind mounts in a private
# mount namespace; as root, else the check runs without hiding and says so).
data=$work/data
built=$(swift build --show-bin-path)/progsync_ProgSyncDaemon.resources
toolchain_lib=$(cd "$(dirname "$(readlink -f "$(command -v swift)")")/../lib/swift/linux" && pwd)
[ -e "$root/usr/lib/progsync/libswiftCore.so" ] || fail "the Swift runtime is not in the package"
mkdir "$work/empty"
if [ "$(id -u)" -eq 0 ] && unshare -m true 2>/dev/null; then
    unshare -m sh -c 'mount --bind "$1" "$2" && mount --bind "$1" "$3" && exec "$4" --data-dir "$5" --log-level error' sh \
        "$work/empty" "$built" "$toolchain_lib" "$root/usr/bin/progsyncd" "$data" > "$work/daemon.log" 2>&1 &
else
    echo "test-package-deb: not root: the build folder's resource bundle stays visible" >&2
    "$root/usr/bin/progsyncd" --data-dir "$data" --log-level error > "$work/daemon.log" 2>&1 &
fi
pid=$!
for _ in $(seq 1 200); do [ -S "$data/progsync.sock" ] && break; sleep 0.1; done
total=$("$root/usr/bin/progsync" --socket "$data/progsync.sock" --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["records"]["total"])') || total=?
kill -TERM "$pid"; wait "$pid" || true
[ "$total" != "?" ] && [ "$total" -gt 100 ] || fail "the installed daemon did not load the programme (records: $total): $(tail -5 "$work/daemon.log")"

dpkg --root="$root" --force-script-chrootless --log=/dev/null -r progsync >/dev/null || fail "dpkg -r failed"
[ ! -e "$root/usr/bin/progsyncd" ] || fail "removing left /usr/bin/progsyncd"
echo "test-package-deb: $(basename "$deb") installs into a throwaway root; both binaries print $version"
