package foreman

import (
	"context"
	"fmt"
	"net/http"
)

// Template is a provisioning template.
type Template struct {
	ID             int    `json:"id"`
	Name           string `json:"name"`
	Template       string `json:"template"`
	TemplateKindID int    `json:"template_kind_id"`
	Locked         bool   `json:"locked"`
}

// TemplateKinds lists the provisioning template kinds (PXELinux, iPXE, ...).
func (c *Client) TemplateKinds(ctx context.Context) ([]Ref, error) {
	return list[Ref](ctx, c, "template_kinds")
}

// TemplateKind returns the kind named name (e.g. "iPXE").
func (c *Client) TemplateKind(ctx context.Context, name string) (Ref, error) {
	kinds, err := c.TemplateKinds(ctx)
	if err != nil {
		return Ref{}, err
	}
	for _, k := range kinds {
		if k.Name == name {
			return k, nil
		}
	}
	return Ref{}, fmt.Errorf("template kind %q: %w", name, ErrNotFound)
}

// FindTemplate returns the provisioning template named name, with its body.
func (c *Client) FindTemplate(ctx context.Context, name string) (Template, error) {
	t, err := findOne(ctx, c, "provisioning_templates", "name", name, func(t Template) string { return t.Name })
	if err != nil {
		return t, err
	}
	if err := c.call(ctx, http.MethodGet, itemPath("provisioning_templates", t.ID), nil, &t); err != nil {
		return t, fmt.Errorf("read provisioning template %d: %w", t.ID, err)
	}
	return t, nil
}

// TemplateSpec is a provisioning template to store.
type TemplateSpec struct {
	Name   string
	Body   string
	KindID int
	Placement
}

func (s TemplateSpec) body() map[string]any {
	return wrap("provisioning_template", s.add(map[string]any{"name": s.Name, "template": s.Body,
		"template_kind_id": s.KindID, "locked": false}))
}

// CreateTemplate stores a new provisioning template.
func (c *Client) CreateTemplate(ctx context.Context, s TemplateSpec) (Template, error) {
	var t Template
	if err := c.call(ctx, http.MethodPost, "/api/provisioning_templates", s.body(), &t); err != nil {
		return t, fmt.Errorf("create provisioning template %q: %w", s.Name, err)
	}
	return t, nil
}

// UpdateTemplate replaces provisioning template id.
func (c *Client) UpdateTemplate(ctx context.Context, id int, s TemplateSpec) (Template, error) {
	var t Template
	if err := c.call(ctx, http.MethodPut, itemPath("provisioning_templates", id), s.body(), &t); err != nil {
		return t, fmt.Errorf("update provisioning template %q: %w", s.Name, err)
	}
	return t, nil
}
