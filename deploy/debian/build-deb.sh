#!/usr/bin/env bash
# Builds the Debian package of adstream from a built binary (deploy/README.md: Debian package):
#   deploy/debian/build-deb.sh target/release/adstream OUTDIR   # -> OUTDIR/adstream_<version>_<arch>.deb
# The version is the workspace's (Cargo.toml); Depends is computed from the binary's shared
# libraries (dpkg-shlibdeps, from dpkg-dev; without it, ldd + dpkg -S, unversioned).
# Contents: /usr/bin/adstream, the systemd unit and sysusers entry of deploy/systemd, and the
# conffiles /etc/adstream/pipeline.toml (pipelines/ads.toml) and /etc/adstream/adstream.env
# (mode 0600, the example). The service is never enabled or started by the package.
# Needs dpkg-deb; no root (dpkg-deb --root-owner-group). SOURCE_DATE_EPOCH sets the timestamps
# (default: the last commit's date), so the same inputs give the same package.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 BINARY OUTDIR" >&2
    exit 2
fi
binary=$1
outdir=$2
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ -x "$binary" ] || { echo "build-deb.sh: $binary is not an executable" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "build-deb.sh: dpkg-deb is needed (apt-get install dpkg)" >&2; exit 1; }

# The workspace's version: `version = "..."` under [workspace.package].
version=$(awk '/^\[/ { section = $0 } section == "[workspace.package]" && /^version *=/ {
    gsub(/.*= *"|".*/, ""); print; exit }' "$repo/Cargo.toml")
[ -n "$version" ] || { echo "build-deb.sh: no [workspace.package] version in Cargo.toml" >&2; exit 1; }
# The binary must be this version's (a stale binary would be packaged under the wrong name).
reported=$("$binary" --version)
[ "$reported" = "adstream $version" ] \
    || { echo "build-deb.sh: $binary says '$reported', Cargo.toml says $version" >&2; exit 1; }
arch=$(dpkg --print-architecture)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
umask 022
install -D -m 0755 "$binary" "$root/usr/bin/adstream"
install -D -m 0644 "$repo/deploy/systemd/adstream.service" "$root/usr/lib/systemd/system/adstream.service"
install -D -m 0644 "$repo/deploy/systemd/adstream.sysusers" "$root/usr/lib/sysusers.d/adstream.conf"
install -D -m 0644 "$repo/pipelines/ads.toml" "$root/etc/adstream/pipeline.toml"
install -D -m 0600 "$repo/deploy/systemd/adstream.env.example" "$root/etc/adstream/adstream.env"
install -D -m 0644 "$here/copyright" "$root/usr/share/doc/adstream/copyright"
sed "s/@VERSION@/$version/; s/@DATE@/$(date -u -R -d "@$SOURCE_DATE_EPOCH")/" "$here/changelog" \
    | gzip -9n > "$root/usr/share/doc/adstream/changelog.Debian.gz"
chmod 0644 "$root/usr/share/doc/adstream/changelog.Debian.gz"

# Depends: the packages of the binary's shared libraries.
if command -v dpkg-shlibdeps >/dev/null; then
    mkdir -p "$work/src/debian"
    printf 'Source: adstream\n\nPackage: adstream\nArchitecture: any\n' > "$work/src/debian/control"
    depends=$(cd "$work/src" && dpkg-shlibdeps -O "$root/usr/bin/adstream" 2>/dev/null \
        | sed -n 's/^shlibs:Depends=//p')
else
    echo "build-deb.sh: no dpkg-shlibdeps (dpkg-dev): Depends from ldd + dpkg -S, unversioned" >&2
    # Merged /usr: dpkg knows a library under /lib or /usr/lib, whichever its package says.
    depends=$(ldd "$root/usr/bin/adstream" | awk '/=> \// { print $3 }' | while read -r lib; do
            for p in "$lib" "/usr$lib" "${lib#/usr}"; do
                if owner=$(dpkg -S "$p" 2>/dev/null); then echo "${owner%%:*}"; break; fi
            done
        done | sort -u | paste -sd, - | sed 's/,/, /g')
fi
[ -n "$depends" ] || { echo "build-deb.sh: could not compute Depends" >&2; exit 1; }

mkdir -p "$root/DEBIAN"
installed_size=$(du -sk --apparent-size "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: adstream
Version: $version
Architecture: $arch
Maintainer: adstream maintainers <adstream@example.invalid>
Installed-Size: $installed_size
Depends: $depends
Recommends: systemd
Section: net
Priority: optional
Homepage: https://github.com/adstream/adstream
Description: stateful ads stream processing in one timely dataflow
 adstream reads ad events from Kafka and keeps the spend ledger, serves ads
 (OpenRTB), trains the ranking model online and writes reports.
 .
 The package installs the binary, a hardened systemd unit (not enabled) and
 an example configuration in /etc/adstream: set the brokers and secrets there,
 then systemctl enable --now adstream.
CONTROL
printf '/etc/adstream/pipeline.toml\n/etc/adstream/adstream.env\n' > "$root/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "$here/$script" "$root/DEBIAN/$script"
done
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' \
    | LC_ALL=C sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/control" "$root/DEBIAN/conffiles"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$outdir"
deb="$outdir/adstream_${version}_${arch}.deb"
dpkg-deb --build --root-owner-group "$root" "$deb" >/dev/null
echo "$deb"
