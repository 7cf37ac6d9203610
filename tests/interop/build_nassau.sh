#!/bin/sh
# Build Nassau's SoupBinTCP classes and tests/interop/NassauPeer.java with javac alone (no
# Maven: Nassau's build wants plugins and com.paritytrading.foundation from Maven Central).
#
#   tests/interop/build_nassau.sh [NASSAU_DIR] [FOUNDATION_DIR]
#
# Without directories it clones github.com/paritytrading/nassau and
# github.com/paritytrading/foundation (tag 1.0.0, the version Nassau's pom names) into
# build/interop/. Needs a JDK (apt-get install default-jdk-headless). The classes go to
# build/interop/classes; tests/test_nassau_interop.py runs when they are there (or where
# MOLDUDP64_NASSAU_CLASSES points).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work="$root/build/interop"
mkdir -p "$work"
nassau=${1:-$work/nassau}
foundation=${2:-$work/foundation}
[ -d "$nassau" ] || git clone -q https://github.com/paritytrading/nassau "$nassau"
[ -d "$foundation" ] || git clone -q https://github.com/paritytrading/foundation "$foundation"
git -C "$foundation" checkout -q 1.0.0 2>/dev/null || echo "note: foundation not at tag 1.0.0"
classes="$work/classes"
rm -rf "$classes"
mkdir -p "$classes"
core="$nassau/libraries/core/src/main/java/com/paritytrading/nassau"
javac -nowarn -d "$classes" \
    "$foundation"/src/main/java/com/paritytrading/foundation/*.java \
    "$core"/*.java "$core"/soupbintcp/*.java \
    "$here/NassauPeer.java"
echo "built $classes (nassau $(git -C "$nassau" rev-parse --short HEAD), foundation $(git -C "$foundation" describe --tags 2>/dev/null || git -C "$foundation" rev-parse --short HEAD))"
