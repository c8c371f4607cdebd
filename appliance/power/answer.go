package power

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/malleable-cloud/malleable/appliance/allocator/node"
	"github.com/malleable-cloud/malleable/appliance/httpx"
)

// AnswerError turns an allocator's error for node into the answer the
// broker and the admin API give. A tenant gets its node's name and a
// generic reason, the cause (which may name a real BMC) staying in the
// error for the log and the audit entry; an admin sees the cause.
func AnswerError(name string, err error, forTenant bool) error {
	e := &httpx.Error{Status: http.StatusBadGateway, Message: fmt.Sprintf("node %s: power control failed", name), Cause: err}
	switch {
	case errors.Is(err, node.ErrNoPowerControl):
		e.Status, e.Message = http.StatusConflict, fmt.Sprintf("node %s has no power control", name)
	case errors.Is(err, node.ErrBadArgument):
		e.Status, e.Message = http.StatusBadRequest, fmt.Sprintf("node %s: the request was refused as invalid", name)
	case errors.Is(err, node.ErrBlocked), errors.Is(err, node.ErrOwned):
		e.Status, e.Message = http.StatusConflict, fmt.Sprintf("node %s: power control refused", name)
	}
	if !forTenant {
		e.Message += ": " + err.Error()
		e.Cause = nil
	}
	return e
}
