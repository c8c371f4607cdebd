#!/usr/bin/env bash
# Build the Malleable container image with no registry: compile the static
# binary here, then build the Dockerfile's runtime stage (FROM scratch) around
# it on the local Docker engine.
#
#   scripts/image.sh [TAG]      (default malleable:dev)
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-malleable:dev}
version=$(git describe --always --dirty 2>/dev/null || echo dev)

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
echo "==> building static binary (version $version)"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$ctx/out/malleable" ./cmd/malleable
mkdir -p "$ctx/out/data"
cp scripts/container.ini "$ctx/out/appliance.ini"

# The runtime stage of the Dockerfile, reading from this context instead of
# the build stage: one definition of the image for both paths.
sed -n '/^FROM scratch/,$p' Dockerfile | sed 's#COPY --from=build \(--chown=[^ ]* \)\{0,1\}/out/#COPY \1out/#' > "$ctx/Dockerfile"
grep -q '^FROM scratch' "$ctx/Dockerfile" || { echo "image.sh: no 'FROM scratch' stage in Dockerfile" >&2; exit 1; }

echo "==> docker build -t $tag"
docker build -q -t "$tag" "$ctx" >/dev/null
docker image inspect "$tag" --format '==> {{.RepoTags}} {{.Size}} bytes, user {{.Config.User}}'
