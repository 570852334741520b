#!/usr/bin/env bash
# Builds the guest's busybox: Debian 12's busybox source, its patches and its
# static configuration (what busybox-static ships), linked against musl
# instead of glibc, with images/busybox/voidbox.config applied on top.
#
# Why: every command the guest runs through busybox pays the C library's
# start-up, and under TCG glibc's static start-up (IRELATIVE relocations,
# CPU feature probing, TLS set-up) costs about 1 ms of emulated work per
# exec; musl's about 0.1 ms. See docs/benchmarks.md.
#
# Output: target/guest/busybox, rebuilt only when this script, the config
# fragment or musl change. Sources are fetched from the Debian archive and
# checked against the hashes below.
set -euo pipefail
cd "$(dirname "$0")/.."

version=1.35.0
debian_revision=4+deb12u1
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
pool="$mirror/pool/main/b/busybox"
orig="busybox_${version}.orig.tar.bz2"
orig_sha256=faeeb244c35a348a334f4a59e44626ee870fb07b6884d68c10ae8bc19f83a694
debian="busybox_${version}-${debian_revision}.debian.tar.xz"
debian_sha256=1cacbe095ef4880ea7879933c8e3c5075d1527cd6fbcb626a9b41e5daefd1a46
fragment=images/busybox/voidbox.config

out=target/guest
downloads="$out/downloads"
build="$out/busybox-build"
src="$build/busybox-$version"
stamp="$out/busybox.inputs"

for tool in musl-gcc curl bzip2 patch; do
  if ! command -v "$tool" >/dev/null; then
    echo "build-busybox: $tool not found (scripts/setup.sh installs it)" >&2
    exit 1
  fi
done

inputs=$( (cat "$0" "$fragment"; dpkg-query -W -f='${Version}' musl-dev) | sha256sum | cut -d' ' -f1)
if [ -x "$out/busybox" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$inputs" ]; then
  echo "$out/busybox"
  exit 0
fi

fetch() { # file sha256
  local file=$1 want=$2 path="$downloads/$1"
  if ! echo "$want  $path" | sha256sum --check --status 2>/dev/null; then
    mkdir -p "$downloads"
    curl -fsSL --retry 3 -o "$path.part" "$pool/$file"
    if ! echo "$want  $path.part" | sha256sum --check --status; then
      echo "build-busybox: $file from $pool does not match its pinned sha256" >&2
      exit 1
    fi
    mv "$path.part" "$path"
  fi
}
fetch "$orig" "$orig_sha256"
fetch "$debian" "$debian_sha256"

rm -rf "$build"
mkdir -p "$build"
tar -xjf "$downloads/$orig" -C "$build"
tar -xJf "$downloads/$debian" -C "$src"
while read -r patch; do
  case "$patch" in '' | '#'*) continue ;; esac
  patch -p1 -s -d "$src" <"$src/debian/patches/$patch"
done <"$src/debian/patches/series"

# Debian's static configuration, then our fragment: every option it names
# is removed and re-added with our value.
cp "$src/debian/config/pkg/static" "$src/.config"
grep -E '^(CONFIG_|# CONFIG_)' "$fragment" | grep -oE 'CONFIG_[A-Z0-9_]+' | while read -r option; do
  sed -i -E "/^(# )?$option[= ]/d" "$src/.config"
done
grep -E '^(CONFIG_|# CONFIG_)' "$fragment" >>"$src/.config"

# musl-gcc sees only musl's headers; busybox also needs the kernel's UAPI
# headers (linux-libc-dev), and nothing else from glibc's include tree.
headers="$PWD/$build/uapi"
mkdir -p "$headers"
for dir in linux asm-generic mtd; do ln -s "/usr/include/$dir" "$headers/$dir"; done
ln -s "/usr/include/$(gcc -dumpmachine)/asm" "$headers/asm"

# The build date busybox prints is the Debian upload's, as in Debian's own
# builds, so the same inputs give the same binary (and image hash).
SOURCE_DATE_EPOCH=$(date -d "$(sed -n 's/^ -- .*>  //p' "$src/debian/changelog" | head -n 1)" +%s)
export SOURCE_DATE_EPOCH

log="$build/build.log"
# oldconfig asks about options neither file names; `yes ''` takes their
# defaults (fed through a process substitution: under pipefail, yes's
# SIGPIPE would fail a pipeline).
if ! (make -C "$src" oldconfig < <(yes '') && make -C "$src" -j"$(nproc)" \
  CC="musl-gcc -isystem $headers" HOSTCC=gcc busybox) >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "build-busybox: build failed; full log in $log" >&2
  exit 1
fi
for option in $(grep -oE '^# CONFIG_[A-Z0-9_]+' "$fragment" | cut -c3-); do
  if grep -q "^$option=y" "$src/.config"; then
    echo "build-busybox: $option is still enabled after oldconfig" >&2
    exit 1
  fi
done
if [ "$("$src/busybox" sh -c 'echo ok')" != ok ]; then
  echo "build-busybox: the built busybox does not run" >&2
  exit 1
fi
cp "$src/busybox" "$out/busybox.part"
mv "$out/busybox.part" "$out/busybox"
echo "$inputs" >"$stamp"
echo "$out/busybox"
