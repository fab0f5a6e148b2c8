#!/usr/bin/env bash
# Builds progsync_<version>_amd64.deb with dpkg-deb: the two binaries (with the daemon's resource
# bundle), the systemd units, sysusers and tmpfiles entries, the example configuration as
# /etc/progsync/progsyncd.yaml, and the shell completions and man pages ArgumentParser generates.
# Usage: scripts/package-deb.sh [--debug] [-o DIR]
#   default  a release build; from scratch ~15 min on 2 cores, and more for the man pages (the
#            plugin builds every product of the package in release).
#   --debug  packages the debug binaries already built (`swift build`), for the packaging test:
#            the same layout and files, larger binaries.
# The Swift runtime libraries the binaries use are copied next to them (the binaries look in
# their own folder, $ORIGIN, after the toolchain's): --static-swift-stdlib does not link with
# this toolchain (Foundation's ICU symbols are missing from its static libraries).
# The version is VERSION's; the binaries name the git commit (`progsyncd --version`).
set -euo pipefail
cd "$(dirname "$0")/.."
config=release out=.build
while [ $# -gt 0 ]; do
    case "$1" in
        --debug) config=debug ;;
        -o) out=$2; shift ;;
        *) echo "usage: $0 [--debug] [-o DIR]" >&2; exit 2 ;;
    esac
    shift
done
command -v dpkg-deb >/dev/null || { echo "package-deb: dpkg-deb is missing (apt-get install dpkg)" >&2; exit 1; }
version=$(tr -d ' \n' < VERSION)

if [ "$config" = release ]; then
    echo "package-deb: release build (slow the first time)" >&2
    swift build -c release --product progsyncd
    swift build -c release --product progsync
    manual_config=release
else
    manual_config=debug
fi
bin=$(swift build -c "$config" --show-bin-path)
for b in progsyncd progsync; do
    [ -x "$bin/$b" ] || { echo "package-deb: $bin/$b is missing; run swift build${config/release/ -c release}" >&2; exit 1; }
done

root=$(mktemp -d "${TMPDIR:-/tmp}/progsync-deb.XXXXXX")
trap 'rm -rf "$root"' EXIT
lib=$root/usr/lib/progsync
install -d "$lib" "$root/usr/bin" "$root/etc/progsync" "$root/DEBIAN" \
    "$root/usr/lib/systemd/system" "$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d" \
    "$root/usr/share/doc/progsync" "$root/usr/share/man/man1" \
    "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
    "$root/usr/share/fish/vendor_completions.d"

# The binaries live together with the resource bundle the daemon finds next to its executable
# (the 2021 programme); /usr/bin has links.
install -m 755 "$bin/progsyncd" "$bin/progsync" "$lib/"
# Release binaries without their symbol tables, as Debian ships them; debug ones as built.
[ "$config" = debug ] || strip --strip-unneeded "$lib/progsyncd" "$lib/progsync"
# The Swift runtime, from the toolchain that built them.
toolchain_lib=$(cd "$(dirname "$(readlink -f "$(command -v swift)")")/../lib/swift/linux" && pwd)
ldd "$lib/progsyncd" "$lib/progsync" | awk -v dir="$toolchain_lib/" 'index($3, dir) == 1 { print $3 }' | sort -u \
    | while read -r so; do install -m 644 "$so" "$lib/"; done
cp -r "$bin/progsync_ProgSyncDaemon.resources" "$lib/"
chmod -R u=rwX,go=rX "$lib/progsync_ProgSyncDaemon.resources"
ln -s ../lib/progsync/progsyncd "$root/usr/bin/progsyncd"
ln -s ../lib/progsync/progsync "$root/usr/bin/progsync"

# systemd: the units as Deploy/systemd has them, with Debian's paths.
for unit in Deploy/systemd/*.service Deploy/systemd/*.timer; do
    sed -e 's|/usr/local/bin/|/usr/bin/|g' -e 's|/usr/local/share/doc/|/usr/share/doc/|g' "$unit" \
        > "$root/usr/lib/systemd/system/$(basename "$unit")"
done
install -m 644 Deploy/systemd/progsyncd.sysusers "$root/usr/lib/sysusers.d/progsyncd.conf"
install -m 644 Deploy/systemd/progsyncd.tmpfiles "$root/usr/lib/tmpfiles.d/progsyncd.conf"
install -m 640 Config/progsyncd.example.yaml "$root/etc/progsync/progsyncd.yaml"
install -m 644 README.md Docs/local-api.openapi.yaml "$root/usr/share/doc/progsync/"

# Completions and man pages, from the binaries themselves.
for b in progsyncd progsync; do
    "$bin/$b" --generate-completion-script bash > "$root/usr/share/bash-completion/completions/$b"
    "$bin/$b" --generate-completion-script zsh > "$root/usr/share/zsh/vendor-completions/_$b"
    "$bin/$b" --generate-completion-script fish > "$root/usr/share/fish/vendor_completions.d/$b.fish"
done
echo "package-deb: man pages (ArgumentParser's generate-manual plugin, $manual_config)" >&2
swift package --disable-sandbox plugin generate-manual --configuration "$manual_config" >&2
for b in progsyncd progsync; do
    page=$(find .build/plugins/GenerateManual/outputs -name "$b.1" | head -1)
    [ -n "$page" ] || { echo "package-deb: generate-manual wrote no $b.1" >&2; exit 1; }
    gzip -9n < "$page" > "$root/usr/share/man/man1/$b.1.gz"
done

# Package metadata. The daemon's own user and folders come from sysusers/tmpfiles at install.
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: progsync
Version: $version
Architecture: amd64
Maintainer: progsync maintainers <progsync@localhost>
Depends: libc6, libstdc++6, libgcc-s1, libcurl4 | libcurl4t64, libsqlite3-0, zlib1g
Installed-Size: $size
Section: net
Priority: optional
Description: partner replica of a multi-agency programme's records
 progsyncd keeps a signed, replicated copy of the programme's records and syncs it with the
 partner organisations over mutual TLS; progsync is its command-line client.
CONTROL
echo "/etc/progsync/progsyncd.yaml" > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
# Into another root (dpkg --root with DPKG_ROOT set) there is no running system to set up.
if [ "$1" = configure ] && [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
    systemd-sysusers progsyncd.conf || true
    systemd-tmpfiles --create progsyncd.conf || true
    chgrp progsync /etc/progsync/progsyncd.yaml 2>/dev/null || true
    systemctl daemon-reload || true
fi
POSTINST
chmod 755 "$root/DEBIAN/postinst"

mkdir -p "$out"
deb="$out/progsync_${version}_amd64.deb"
# xz for a release; the debug binaries are large and only for the test, so fast gzip there.
compression=(-Zxz)
[ "$config" = release ] || compression=(-Zgzip -z1)
dpkg-deb --root-owner-group "${compression[@]}" --build "$root" "$deb" >&2
echo "$deb"
