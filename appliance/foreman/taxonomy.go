package foreman

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
)

// Ref is a record's id and name.
type Ref struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
}

// Taxonomy is an organization or a location.
type Taxonomy string

// The two taxonomies: their collection names.
const (
	Organizations Taxonomy = "organizations"
	Locations     Taxonomy = "locations"
)

// singular is the key Foreman wraps a body in.
func (k Taxonomy) singular() string { return string(k[:len(k)-1]) }

func refName(r Ref) string { return r.Name }

// FindTaxonomy returns the organization or location named name, or an
// error wrapping ErrNotFound.
func (c *Client) FindTaxonomy(ctx context.Context, kind Taxonomy, name string) (Ref, error) {
	return findOne(ctx, c, string(kind), "name", name, refName)
}

// Taxonomies lists every organization or location.
func (c *Client) Taxonomies(ctx context.Context, kind Taxonomy) ([]Ref, error) {
	return list[Ref](ctx, c, string(kind))
}

// CreateTaxonomy creates an organization or location.
func (c *Client) CreateTaxonomy(ctx context.Context, kind Taxonomy, name string) (Ref, error) {
	var r Ref
	err := c.call(ctx, http.MethodPost, "/api/"+string(kind), wrap(kind.singular(), map[string]any{"name": name}), &r)
	if err != nil {
		return r, fmt.Errorf("create %s %q: %w", kind.singular(), name, err)
	}
	return r, nil
}

// RenameTaxonomy renames the organization or location id.
func (c *Client) RenameTaxonomy(ctx context.Context, kind Taxonomy, id int, name string) (Ref, error) {
	var r Ref
	err := c.call(ctx, http.MethodPut, itemPath(string(kind), id), wrap(kind.singular(), map[string]any{"name": name}), &r)
	if err != nil {
		return r, fmt.Errorf("rename %s %d to %q: %w", kind.singular(), id, name, err)
	}
	return r, nil
}

// User is a Foreman user.
type User struct {
	ID    int    `json:"id"`
	Login string `json:"login"`
	Admin bool   `json:"admin"`
}

// FindUser returns the user whose login is login.
func (c *Client) FindUser(ctx context.Context, login string) (User, error) {
	return findOne(ctx, c, "users", "login", login, func(u User) string { return u.Login })
}

// ChangePassword sets user id's password; Foreman asks for the current
// one when a user changes their own.
func (c *Client) ChangePassword(ctx context.Context, id int, current, password string) error {
	body := wrap("user", map[string]any{"current_password": current, "password": password, "password_confirmation": password})
	if err := c.call(ctx, http.MethodPut, itemPath("users", id), body, nil); err != nil {
		return fmt.Errorf("change the password of user %d: %w", id, err)
	}
	return nil
}

// Setting is one of Foreman's settings.
type Setting struct {
	Name  string `json:"name"`
	Value any    `json:"value"`
}

// settingRE is a setting's name as Foreman spells them.
var settingRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,99}$`)

// Setting returns the setting named name.
func (c *Client) Setting(ctx context.Context, name string) (Setting, error) {
	var s Setting
	if !settingRE.MatchString(name) {
		return s, fmt.Errorf("setting name %q: want [a-z][a-z0-9_]*", name)
	}
	if err := c.call(ctx, http.MethodGet, "/api/settings/"+name, nil, &s); err != nil {
		return s, fmt.Errorf("read setting %s: %w", name, err)
	}
	return s, nil
}

// SetSetting sets the setting named name to value.
func (c *Client) SetSetting(ctx context.Context, name string, value any) error {
	if !settingRE.MatchString(name) {
		return fmt.Errorf("setting name %q: want [a-z][a-z0-9_]*", name)
	}
	if err := c.call(ctx, http.MethodPut, "/api/settings/"+name, wrap("setting", map[string]any{"value": value}), nil); err != nil {
		return fmt.Errorf("set setting %s: %w", name, err)
	}
	return nil
}
