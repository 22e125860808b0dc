#!/bin/sh
# h2load for `make bench` without root: Debian's nghttp2-client, with the two libraries it needs
# that a base system may lack (libev4, libjemalloc2), unpacked under $1. The system's own apt
# sources are used; nothing is installed system-wide. Exits non-zero, saying why, when it cannot.
set -eu
dest=${1:?usage: fetch_h2load.sh DIR}
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
	echo "h2load: no apt-get and dpkg here, cannot fetch nghttp2-client" >&2
	exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && apt-get download nghttp2-client libev4 libjemalloc2 >/dev/null 2>&1); then
	echo "h2load: apt-get download nghttp2-client libev4 libjemalloc2 failed" >&2
	exit 1
fi
rm -rf "$dest.part"
mkdir -p "$dest.part"
for deb in "$tmp"/*.deb; do
	dpkg -x "$deb" "$dest.part"
done
libs=$(dirname "$(find "$dest.part" -name 'libev.so.4' | head -n 1)")
if ! version=$(LD_LIBRARY_PATH="$libs" "$dest.part/usr/bin/h2load" --version 2>/dev/null); then
	echo "h2load: the fetched binary does not run here" >&2
	exit 1
fi
rm -rf "$dest"
mv "$dest.part" "$dest"
echo "h2load: $version, unpacked under $dest"
