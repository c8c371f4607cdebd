// Package hil is the allocator that speaks to a real Hardware Isolation
// Layer server: Client allocates nodes to projects over HIL's REST API and
// drives their power through OBMd's 307 redirects. It returns the sentinel
// errors of allocator/node, plus ErrUnauthorized.
//
// Every call is idempotent where HIL's semantics allow: connecting a node to
// the project it is already in, or detaching a node that is already free,
// succeeds.
package hil

import "errors"

// ErrUnauthorized: bad or missing credentials (HIL 401). Only the HIL client
// returns it; the errors both allocators share are in allocator/node.
var ErrUnauthorized = errors.New("unauthorized")
