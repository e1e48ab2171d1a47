#!/usr/bin/env bash
# The image's base, made locally from Debian's own packages (no registry needed): a minimal debootstrap
# root with Python, imported into podman as localhost/citysense-base:<release>. Run as root.
#   deploy/container/make-base.sh [bookworm|trixie]
set -euo pipefail
release=${1:-bookworm}
mirror=$(awk '$1=="deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
root=$(mktemp -d /var/tmp/citysense-base.XXXXXX)
trap 'rm -rf --one-file-system "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd "$release" "$root" "$mirror"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | podman import - "localhost/citysense-base:$release"
