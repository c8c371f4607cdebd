package foreman

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// jsonBody encodes v as a request body.
func jsonBody(v any) (io.Reader, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(b), nil
}

// wrap puts attrs under the resource's singular name, as Foreman's API
// expects: {"host": {...}}.
func wrap(singular string, attrs any) map[string]any { return map[string]any{singular: attrs} }

// searchPath is an index path finding records whose field equals value
// (Foreman's search is exact and case-sensitive for `field="value"`), every
// match in one page.
func searchPath(collection, field, value string) string {
	q := fmt.Sprintf("%s=%s", field, strconv.Quote(value))
	return "/api/" + collection + "?per_page=all&search=" + url.QueryEscape(q)
}

// itemPath is a record's path.
func itemPath(collection string, id int, rest ...string) string {
	return "/api/" + collection + "/" + strconv.Itoa(id) + strings.Join(append([]string{""}, rest...), "/")
}

// findOne returns into out the one record of collection whose field is
// exactly value. Foreman's search is not always exact (case, partial
// matches), so the results are checked again by name.
func findOne[T any](ctx context.Context, c *Client, collection, field, value string, name func(T) string) (T, error) {
	var page struct {
		Results []T `json:"results"`
	}
	var zero T
	if err := c.call(ctx, http.MethodGet, searchPath(collection, field, value), nil, &page); err != nil {
		return zero, fmt.Errorf("find %s %q: %w", collection, value, err)
	}
	for _, r := range page.Results {
		if name(r) == value {
			return r, nil
		}
	}
	return zero, fmt.Errorf("find %s %q: %w", collection, value, ErrNotFound)
}

// listPage is the page size of list.
const listPage = 1000

// list returns every record of collection (at most listPage).
func list[T any](ctx context.Context, c *Client, collection string) ([]T, error) {
	var page struct {
		Results []T `json:"results"`
	}
	// Not per_page=all: template_kinds answers it with no results (and
	// the right total). listPage bounds what Malleable lists: taxonomies
	// and template kinds, a handful each.
	if err := c.call(ctx, http.MethodGet, "/api/"+collection+"?per_page="+strconv.Itoa(listPage), nil, &page); err != nil {
		return nil, fmt.Errorf("list %s: %w", collection, err)
	}
	return page.Results, nil
}
