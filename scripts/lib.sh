# Shared helpers for the scripts in this folder; source it, don't run it.

# ensure_go puts Go on PATH (Debian images keep it in /usr/local/go) and
# checks the version go.mod needs.
ensure_go() {
	if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
		export PATH=/usr/local/go/bin:$PATH
	fi
	command -v go >/dev/null 2>&1 || { echo "Go 1.26 or later is required: https://go.dev/dl" >&2; exit 1; }
	export PATH=$(go env GOPATH)/bin:$PATH
}

# ensure_apt installs the Debian packages named as arguments that are not
# installed yet; apt-get runs only when something is missing.
ensure_apt() {
	local missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	local sudo=
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	echo "==> apt-get update (package lists; up to a minute)"
	$sudo apt-get update -qq
	echo "==> apt-get install ${missing[*]} (downloads and installs; can take several minutes)"
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	echo "==> installed ${missing[*]}"
}

# ensure_modules downloads the Go modules go.mod needs, saying so first: on
# a fresh machine that is minutes of silence otherwise.
ensure_modules() {
	# Offline, this only checks that every module is in the cache.
	GOPROXY=off go mod download >/dev/null 2>&1 && return 0
	echo "==> go mod download (first run: fetches the Go modules; can take a few minutes)"
	go mod download
	echo "==> Go modules ready"
}

# ensure_go_tool installs a Go tool at a pinned version unless present.
ensure_go_tool() {
	local name=$1 pkg=$2
	command -v "$name" >/dev/null 2>&1 && return 0
	echo "==> go install $pkg (builds $name; a minute or two)"
	go install "$pkg"
}
