// Package hil allocates nodes to projects and drives their power, in the
// shape of the Hardware Isolation Layer's API. Two implementations share one
// contract: Client speaks to a real HIL server over its REST API (power via
// OBMd's 307 redirects), and Embedded keeps project membership in the
// appliance's own database and drives BMCs itself over IPMI.
//
// Every call is idempotent where HIL's semantics allow: connecting a node to
// the project it is already in, or detaching a node that is already free,
// succeeds.
package hil

import "errors"

// ErrUnauthorized: bad or missing credentials (HIL 401). Only the HIL client
// returns it; the errors both allocators share are in allocator/node.
var ErrUnauthorized = errors.New("unauthorized")
