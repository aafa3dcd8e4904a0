#!/usr/bin/env bash
# Builds the CPU image's runtime stage (deploy/docker/Dockerfile) without an image registry, and
# runs it (deploy/README.md: Image):
#   deploy/docker/build-local.sh [BINARY] [TAG]   # defaults: target/release/adstream,
#                                                 # localhost/adstream:<version>
# 1. makes a Debian bookworm base with debootstrap --variant=minbase (from the Debian mirror;
#    cached in $ADSTREAM_BASE_ROOTFS, default /var/tmp/adstream-image/bookworm-minbase), trimmed
#    like debian:bookworm-slim (no docs, man pages or locales), and imports it into podman;
# 2. builds the Dockerfile's runtime stage, verbatim, with buildah on that base; the builder
#    stage is replaced by the binary given (built on this machine: same Debian release);
# 3. runs the image: adstream --version, adstream validate of the shipped pipeline, the user, the
#    shared libraries (ldd) and /bin/sh;
# 4. saves it as an OCI archive ($ADSTREAM_IMAGE_OUT, default target/image/).
# Needs root, debootstrap, buildah and podman (apt-get install debootstrap buildah podman).
set -euo pipefail
cd "$(dirname "$0")/../.."

binary=${1:-target/release/adstream}
version=$(awk '/^\[/ { section = $0 } section == "[workspace.package]" && /^version *=/ {
    gsub(/.*= *"|".*/, ""); print; exit }' Cargo.toml)
tag=${2:-localhost/adstream:$version}
rootfs=${ADSTREAM_BASE_ROOTFS:-/var/tmp/adstream-image/bookworm-minbase}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
base=localhost/adstream-base:bookworm-minbase
out=${ADSTREAM_IMAGE_OUT:-target/image}

for tool in debootstrap buildah podman; do
    command -v "$tool" >/dev/null || { echo "build-local.sh: $tool is needed (apt-get install debootstrap buildah podman)" >&2; exit 1; }
done
[ -x "$binary" ] || { echo "build-local.sh: no binary $binary (cargo build --release)" >&2; exit 1; }

# 1. The base.
if [ ! -x "$rootfs/bin/sh" ]; then
    echo "build-local.sh: debootstrap --variant=minbase bookworm $rootfs" >&2
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >&2
    # As debian:bookworm-slim: dpkg leaves out docs, man pages and translations; no caches.
    cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
SLIM
    # apt keeps no downloaded packages, caches or translations (as in Debian's official images).
    cat > "$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CLEAN'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CLEAN
    echo 'Acquire::Languages "none";' > "$rootfs/etc/apt/apt.conf.d/docker-no-languages"
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$rootfs"/usr/share/{man,groff,info,locale,lintian,linda}/* \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
fi
if ! podman image exists "$base"; then
    tar --numeric-owner -C "$rootfs" -c . | podman import - "$base" >&2
fi

# 2. The runtime stage of the Dockerfile, on the local base, with the given binary.
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
install -D -m 0755 "$binary" "$context/out/adstream"
install -D -m 0644 pipelines/ads.toml "$context/pipelines/ads.toml"
runtime=$(sed -n '/^FROM .* AS runtime$/,$p' deploy/docker/Dockerfile)
grep -qx 'FROM debian:bookworm-slim AS runtime' <<<"$runtime" \
    || { echo "build-local.sh: the Dockerfile has no 'FROM debian:bookworm-slim AS runtime'" >&2; exit 1; }
{
    echo "FROM scratch AS builder"
    echo "COPY out/adstream /out/adstream"
    sed "s#^FROM debian:bookworm-slim AS runtime\$#FROM $base AS runtime#" <<<"$runtime"
} > "$context/Dockerfile"
buildah build --isolation=chroot --pull=never --layers=false --build-arg "VERSION=$version" \
    -f "$context/Dockerfile" -t "$tag" "$context" >&2

# 3. Run it. Where podman's defaults cannot start a container (as in a VM with hybrid cgroups,
# where crun refuses to run, and no CAP_SYS_RESOURCE to set rlimits to podman's defaults), use
# runc with limits below the current ones. ADSTREAM_PODMAN_RUNTIME and ADSTREAM_PODMAN_RUN_OPTS
# set them outright.
runtime_opt=()
run_opts=()
if [ -n "${ADSTREAM_PODMAN_RUNTIME:-}${ADSTREAM_PODMAN_RUN_OPTS:-}" ]; then
    [ -z "${ADSTREAM_PODMAN_RUNTIME:-}" ] || runtime_opt=(--runtime "$ADSTREAM_PODMAN_RUNTIME")
    read -r -a run_opts <<<"${ADSTREAM_PODMAN_RUN_OPTS:-}"
elif ! podman run --rm --network=none "$tag" --version >/dev/null 2>&1; then
    runtime_opt=(--runtime runc)
    n=$(( $(ulimit -Hn) / 2 )) p=16384
    run_opts=(--ulimit "nofile=$n:$n" --ulimit "nproc=$p:$p")
    echo "build-local.sh: podman run fails with its defaults; using ${runtime_opt[*]} ${run_opts[*]}" >&2
fi
run() { podman "${runtime_opt[@]}" run --rm --network=none "${run_opts[@]}" "$@"; }
[ "$(run "$tag" --version)" = "adstream $version" ] || { echo "build-local.sh: --version" >&2; exit 1; }
run "$tag" validate /etc/adstream/pipeline.toml
[ "$(run --entrypoint /usr/bin/id "$tag")" = "uid=10001(adstream) gid=10001(adstream) groups=10001(adstream)" ] \
    || { echo "build-local.sh: the image does not run as adstream (10001)" >&2; exit 1; }
[ "$(run --entrypoint /usr/bin/stat "$tag" -c '%u:%g %a' /var/lib/adstream)" = "10001:10001 750" ] \
    || { echo "build-local.sh: /var/lib/adstream is not adstream's" >&2; exit 1; }
if run --entrypoint /usr/bin/ldd "$tag" /usr/bin/adstream | grep 'not found'; then
    echo "build-local.sh: shared libraries missing in the image" >&2; exit 1
fi
run --entrypoint /bin/sh "$tag" -c 'test -d /etc/ssl/certs && echo "/bin/sh runs"'

# 4. Save it.
mkdir -p "$out"
archive="$out/adstream-$version.oci.tar"
rm -f "$archive"
podman save --format oci-archive -o "$archive" "$tag" >&2
echo "build-local.sh: $tag: $(podman image inspect --format '{{.Size}}' "$tag") bytes" \
    "(base $(podman image inspect --format '{{.Size}}' "$base")); $archive: $(stat -c %s "$archive") bytes" >&2
