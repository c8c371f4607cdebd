package smartproxy

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// bmcRoute is a BMC request after routing: the route's kind, the :host and
// its optional trailing segments (:action, :function, :sensor).
type bmcRoute struct {
	kind string
	host string
	args []string
}

func (rt bmcRoute) arg(i int) string {
	if i < len(rt.args) {
		return rt.args[i]
	}
	return ""
}

// bmcShape is one Sinatra route below /:host: a fixed prefix and up to
// opt optional segments, each after an optional slash.
type bmcShape struct {
	put    bool
	prefix []string
	kind   string
	opt    int
}

var bmcShapes = []bmcShape{
	{false, nil, "host", 0},
	{false, []string{"test"}, "test", 0},
	{false, []string{"chassis"}, "chassis", 0},
	{false, []string{"chassis", "power"}, "power", 1},
	{false, []string{"lan"}, "lan", 1},
	{false, []string{"chassis", "identify"}, "identify", 1},
	{false, []string{"chassis", "config"}, "config", 1},
	{false, []string{"fru"}, "fru", 1},
	{false, []string{"bmc"}, "bmc", 1},
	{false, []string{"sensors"}, "sensors", 2},
	{true, []string{"chassis", "power"}, "power", 1},
	{true, []string{"chassis", "config"}, "config", 2},
	{true, []string{"chassis", "identify"}, "identify", 1},
	{true, []string{"bmc"}, "bmc", 1},
}

// segments splits an escaped path below a mount point into unescaped
// segments; "" and "/" have none.
func segments(rest string) ([]string, bool) {
	rest = strings.TrimPrefix(rest, "/")
	if rest == "" {
		return nil, true
	}
	segs := strings.Split(rest, "/")
	for i, s := range segs {
		u, err := url.PathUnescape(s)
		if err != nil {
			return nil, false
		}
		segs[i] = u
	}
	return segs, true
}

// parseBMCRoute matches a request against the BMC module's routes with
// Sinatra's semantics: a literal route wins over :host, and a trailing
// slash is allowed only where an optional segment could follow.
func parseBMCRoute(r *http.Request, rest string) (bmcRoute, bool) {
	get, put := isGet(r), r.Method == http.MethodPut
	segs, ok := segments(rest)
	if !ok || (!get && !put) {
		return bmcRoute{}, false
	}
	if get {
		switch strings.Join(segs, "/") {
		case "":
			return bmcRoute{kind: "resources"}, true
		case "providers":
			return bmcRoute{kind: "providers"}, true
		case "providers/installed":
			return bmcRoute{kind: "installed"}, true
		case "host":
			return bmcRoute{kind: "hostmsg"}, true
		}
	}
	if len(segs) == 0 || segs[0] == "" {
		return bmcRoute{}, false
	}
	tail := segs[1:]
	for _, sh := range bmcShapes {
		if sh.put != put || len(tail) < len(sh.prefix) || !slices.Equal(tail[:len(sh.prefix)], sh.prefix) {
			continue
		}
		if args, ok := optional(tail[len(sh.prefix):], sh.opt); ok {
			return bmcRoute{kind: sh.kind, host: segs[0], args: args}, true
		}
	}
	return bmcRoute{}, false
}

// optional matches up to n optional segments, with one trailing slash
// allowed when fewer than n are given.
func optional(tail []string, n int) ([]string, bool) {
	if k := len(tail); k > 0 && tail[k-1] == "" && k-1 < n {
		tail = tail[:k-1]
	}
	if len(tail) > n || slices.Contains(tail, "") {
		return nil, false
	}
	return tail, true
}
