package hil

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/malleable-cloud/malleable/appliance/allocator/node"
)

// NodeProjects returns every node HIL has, mapped to its project, free
// nodes to "". A node missing from the map is one HIL does not know. It
// needs an admin account and makes 2 calls, plus, when nodes are in
// projects, one more and the fewer of one per project and one per
// allocated node.
func (c *Client) NodeProjects(ctx context.Context) (map[string]string, error) {
	var all, free []string
	if err := c.get(ctx, "/nodes/all", &all); err != nil {
		return nil, fmt.Errorf("list HIL nodes: %w", err)
	}
	if err := c.get(ctx, "/nodes/free", &free); err != nil {
		return nil, fmt.Errorf("list free HIL nodes: %w", err)
	}
	out := make(map[string]string, len(all))
	for _, n := range all {
		out[n] = ""
	}
	held := len(all)
	for _, n := range free {
		if _, ok := out[n]; ok {
			held--
		}
	}
	if held == 0 {
		return out, nil
	}
	var projects []string
	if err := c.get(ctx, "/projects", &projects); err != nil {
		return nil, fmt.Errorf("list HIL projects: %w", err)
	}
	if held < len(projects) {
		return out, c.nodeByNode(ctx, out, free)
	}
	for _, p := range projects {
		if held == 0 {
			break
		}
		if checkName("project", p) != nil {
			continue // cannot be addressed; its nodes stay unknown below
		}
		var nodes []string
		if err := c.get(ctx, projectPath(p)+"/nodes", &nodes); err != nil {
			return nil, fmt.Errorf("list nodes of HIL project %s: %w", p, err)
		}
		for _, n := range nodes {
			if _, ok := out[n]; ok && out[n] == "" {
				out[n] = p
				held--
			}
		}
	}
	return out, nil
}

// nodeByNode fills in the project of every node of out that is not free
// with one show_node each.
func (c *Client) nodeByNode(ctx context.Context, out map[string]string, free []string) error {
	for _, n := range slices.Sorted(maps.Keys(out)) {
		if slices.Contains(free, n) || checkName("node", n) != nil {
			continue
		}
		p, err := c.NodeProject(ctx, n)
		if errors.Is(err, node.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return err
		}
		out[n] = p
	}
	return nil
}

// VerifyProject returns nil when HIL shows node in project, and otherwise
// an error wrapping node.ErrOwned, also wrapping node.ErrNotFound when HIL does not
// know the node at all (HIL lost its state). It costs one HIL call.
func (c *Client) VerifyProject(ctx context.Context, name, project string) error {
	if err := checkNames(name, project); err != nil {
		return fmt.Errorf("verify project: %w", err)
	}
	n, err := c.showNode(ctx, name)
	switch {
	case errors.Is(err, node.ErrNotFound):
		return fmt.Errorf("node %s: %w: HIL does not know the node (%w)", name, node.ErrOwned, err)
	case err != nil:
		return fmt.Errorf("verify project of node %s: %w", name, err)
	case n.Project == nil:
		return fmt.Errorf("node %s: %w: HIL shows it free, not in project %s", name, node.ErrOwned, project)
	case *n.Project != project:
		return fmt.Errorf("node %s: %w: HIL shows it in project %s, not %s", name, node.ErrOwned, *n.Project, project)
	}
	return nil
}

// CheckAdmin makes an administrator-only call (listing projects) and
// explains a refusal: the appliance needs a HIL admin account.
func (c *Client) CheckAdmin(ctx context.Context) error {
	var projects []string
	err := c.get(ctx, "/projects", &projects)
	if errors.Is(err, ErrUnauthorized) {
		who := "HIL's null auth"
		if c.user != "" {
			who = fmt.Sprintf("HIL account %q", c.user)
		}
		return fmt.Errorf("%s cannot list projects, an administrator-only call: the appliance needs a HIL "+
			"administrator (check [hil] username and password_file; HIL's answer: %w)", who, err)
	}
	if err != nil {
		return fmt.Errorf("check HIL account: %w", err)
	}
	return nil
}

// CheckNode checks that HIL can take node into a lease: HIL has a node of
// that name, it is in no project, and its OBM works — HIL gets an OBMd
// token for it and OBMd reads its power (the OBM is disabled again
// afterwards). The error says what is missing.
func (c *Client) CheckNode(ctx context.Context, name string) error {
	if err := checkName("node", name); err != nil {
		return fmt.Errorf("check HIL node: %w", err)
	}
	n, err := c.showNode(ctx, name)
	switch {
	case errors.Is(err, node.ErrNotFound):
		return fmt.Errorf("HIL has no node named %q: register it in HIL under the same name, with its OBM in OBMd (%w)", name, err)
	case err != nil:
		return fmt.Errorf("check HIL node %s: %w", name, err)
	case n.Project != nil:
		return fmt.Errorf("HIL node %s is in project %q: %w: a node must be free in HIL before its first lease (detach it in HIL)", name, *n.Project, node.ErrOwned)
	}
	if err := c.setOBM(ctx, name, true); err != nil {
		return fmt.Errorf("HIL node %s: HIL cannot enable its OBM (is the node registered in OBMd, and its obmd uri and admin token right?): %w", name, err)
	}
	_, serr := c.PowerStatus(ctx, name)
	derr := c.setOBM(context.WithoutCancel(ctx), name, false)
	if serr != nil {
		return fmt.Errorf("HIL node %s: OBMd cannot read its power (is its BMC reachable, its OBMd info right?): %w", name, serr)
	}
	if derr != nil {
		return fmt.Errorf("HIL node %s: disable its OBM again: %w", name, derr)
	}
	return nil
}

// ListsFreeNodes reports that NodeProjects includes free nodes, so a node
// missing from it is one HIL does not know.
func (c *Client) ListsFreeNodes() bool { return true }
