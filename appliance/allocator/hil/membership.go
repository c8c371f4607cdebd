package hil

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/malleable-cloud/malleable/appliance/allocator/node"
)

// hilNode is the part of show_node's answer the client reads.
type hilNode struct {
	Project *string `json:"project"` // null when free
	NICs    []struct {
		Label    string            `json:"label"`
		Networks map[string]string `json:"networks"` // channel → network
	} `json:"nics"`
}

func (c *Client) showNode(ctx context.Context, node string) (hilNode, error) {
	var n hilNode
	err := c.get(ctx, nodePath(node), &n)
	return n, err
}

// NodeProject returns the HIL project node is in, or "" when it is free.
func (c *Client) NodeProject(ctx context.Context, node string) (string, error) {
	if err := checkName("node", node); err != nil {
		return "", fmt.Errorf("show node: %w", err)
	}
	n, err := c.showNode(ctx, node)
	if err != nil {
		return "", fmt.Errorf("show node %s: %w", node, err)
	}
	if n.Project == nil {
		return "", nil
	}
	return *n.Project, nil
}

// Connect puts node in project and enables its OBM so the project can
// drive its power. It creates the project when missing. A node already in
// project is success; a node in another project is node.ErrOwned. Enabling the
// OBM again issues a fresh OBMd token, which is harmless: the client asks
// HIL for a redirect on every power call and never keeps a token.
func (c *Client) Connect(ctx context.Context, node, project string) error {
	if err := checkNames(node, project); err != nil {
		return fmt.Errorf("connect node: %w", err)
	}
	if err := c.connect(ctx, node, project); err != nil {
		return fmt.Errorf("connect node %s to project %s: %w", node, project, err)
	}
	return nil
}

func (c *Client) connect(ctx context.Context, name, project string) error {
	if err := c.ensureProject(ctx, project); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		err := c.do(ctx, http.MethodPost, projectPath(project)+"/connect_node", nodeArg{name}, nil)
		if err == nil {
			break
		}
		if !errors.Is(err, node.ErrOwned) {
			return err
		}
		// "Node is already owned by a project.": by which one?
		owner, gerr := c.NodeProject(ctx, name)
		if errors.Is(gerr, ErrUnauthorized) {
			// We may use project but may not see the node: another
			// project has it.
			return err
		}
		if gerr != nil {
			return gerr
		}
		if owner == project {
			break
		}
		if owner == "" && attempt == 0 {
			continue // released meanwhile
		}
		return fmt.Errorf("%w (HIL shows project %q)", err, owner)
	}
	return c.setOBM(ctx, name, true)
}

// ensureProject creates project; one that exists is fine. Creating is
// admin-only in HIL: a project member's 401 means the project must already
// exist, which connect_node then settles.
func (c *Client) ensureProject(ctx context.Context, project string) error {
	err := c.do(ctx, http.MethodPut, projectPath(project), nil, nil)
	if e, ok := asAPIError(err); ok {
		switch {
		case e.status == http.StatusConflict && (e.typ == "DuplicateError" || e.typ == ""):
			return nil
		case errors.Is(err, ErrUnauthorized):
			c.log.DebugContext(ctx, "hil: cannot create project, assuming it exists", "project", project, "err", err)
			return nil
		}
	}
	return err
}

// Detach takes node out of project in HIL's hand-over order: detach every
// network (waiting for each networking action), disable the OBM, which
// revokes the OBMd token project used, then detach the node. A free node is
// success; a node in another project is node.ErrOwned. Power the node off first:
// once its OBM is disabled nobody can.
func (c *Client) Detach(ctx context.Context, node, project string) error {
	if err := checkNames(node, project); err != nil {
		return fmt.Errorf("detach node: %w", err)
	}
	if err := c.detach(ctx, node, project); err != nil {
		return fmt.Errorf("detach node %s from project %s: %w", node, project, err)
	}
	return nil
}

func (c *Client) detach(ctx context.Context, name, project string) error {
	n, err := c.showNode(ctx, name)
	if err != nil {
		return err
	}
	switch {
	case n.Project == nil:
		return nil
	case *n.Project != project:
		return fmt.Errorf("%w: HIL shows project %q", node.ErrOwned, *n.Project)
	}
	// One NIC takes one networking action at a time: detach in turn.
	for _, nic := range n.NICs {
		for _, network := range slices.Compact(slices.Sorted(maps.Values(nic.Networks))) {
			if err := c.detachNetwork(ctx, name, nic.Label, network); err != nil {
				return err
			}
		}
	}
	if err := c.setOBM(ctx, name, false); err != nil {
		return err
	}
	err = c.do(ctx, http.MethodPost, projectPath(project)+"/detach_node", nodeArg{name}, nil)
	if e, ok := asAPIError(err); ok && e.status == http.StatusNotFound && e.msg == "Node not in project" {
		return nil // detached by someone else since show_node
	}
	if errors.Is(err, node.ErrPending) {
		return fmt.Errorf("%w; %s", err, daemonHint)
	}
	if e, ok := asAPIError(err); ok && e.status == http.StatusConflict && e.msg == "Node attached to a network" {
		// HIL's network daemon attached a network after show_node: the
		// next attempt detaches it.
		return fmt.Errorf("%w (%w: a network action was applied meanwhile; detach again)", err, node.ErrPending)
	}
	return err
}

// detachNetwork queues HIL's detach_network and waits for the action.
func (c *Client) detachNetwork(ctx context.Context, name, nic, network string) error {
	if err := checkName("nic", nic); err != nil {
		return fmt.Errorf("detach nic: %w", err)
	}
	var queued struct {
		StatusID string `json:"status_id"`
	}
	path := nodePath(name) + "/nic/" + url.PathEscape(nic) + "/detach_network"
	err := c.do(ctx, http.MethodPost, path, networkArg{network}, &queued)
	if e, ok := asAPIError(err); ok && e.status == http.StatusBadRequest && strings.Contains(e.msg, "not attached") {
		return nil // detached meanwhile
	}
	if errors.Is(err, node.ErrPending) {
		return fmt.Errorf("detach network %s from nic %s: %w; an earlier network action on the nic is still PENDING: %s", network, nic, err, daemonHint)
	}
	if err != nil {
		return fmt.Errorf("detach network %s from nic %s: %w", network, nic, err)
	}
	if queued.StatusID == "" {
		return fmt.Errorf("detach network %s from nic %s: %w: no status_id in HIL's answer", network, nic, node.ErrBackend)
	}
	if err := c.waitAction(ctx, queued.StatusID); err != nil {
		return fmt.Errorf("detach network %s from nic %s: %w", network, nic, err)
	}
	return nil
}

// daemonHint is the likely reason a networking action stays PENDING.
const daemonHint = "is HIL's network daemon (hil-admin serve-networks) running?"

// waitAction polls a networking action until DONE, with a growing delay,
// for at most c.actionWait: an action that stays PENDING longer means HIL's
// network daemon (hil-admin serve-networks) is not running.
func (c *Client) waitAction(parent context.Context, id string) error {
	ctx, cancel := context.WithTimeout(parent, c.actionWait)
	defer cancel()
	delay := c.pollMin
	for {
		var action struct {
			Status string `json:"status"`
		}
		err := c.get(ctx, "/networking_action/"+url.PathEscape(id), &action)
		switch {
		case err != nil && parent.Err() == nil && ctx.Err() != nil:
			return fmt.Errorf("networking action %s: %w: still PENDING after %s; %s", id, node.ErrPending, c.actionWait, daemonHint)
		case err != nil:
			return fmt.Errorf("networking action %s: %w", id, err)
		case action.Status == "DONE":
			return nil
		case action.Status != "PENDING":
			return fmt.Errorf("networking action %s: %w: status %q", id, node.ErrBackend, action.Status)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			if parent.Err() != nil {
				return fmt.Errorf("networking action %s: %w", id, parent.Err())
			}
			return fmt.Errorf("networking action %s: %w: still PENDING after %s; %s", id, node.ErrPending, c.actionWait, daemonHint)
		case <-t.C:
		}
		delay = min(2*delay, c.pollMax)
	}
}
