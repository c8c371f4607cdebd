package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/pkg/stdcopy"
)

// execTimeout bounds one Exec when the caller's context has no sooner deadline.
const execTimeout = 5 * time.Minute

// List returns our containers of one tenant, or all of ours (shared ones
// included) when tenant is "".
func (r *Runtime) List(ctx context.Context, tenant string) ([]Container, error) {
	f := filters.NewArgs(filters.Arg("label", LabelOwner+"="+r.owner))
	if tenant != "" {
		if err := checkTenant(tenant); err != nil {
			return nil, err
		}
		f.Add("label", LabelTenant+"="+tenant)
	}
	cctx, cancel := call(ctx, callTimeout)
	list, err := r.eng.ContainerList(cctx, container.ListOptions{All: true, Filters: f})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]Container, 0, len(list))
	for _, s := range list {
		c, err := r.inspectContainer(ctx, s.ID)
		if errors.Is(err, ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// Remove force-removes one of our containers with its anonymous volumes;
// a missing one is success, a foreign one ErrForeign.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	in, err := r.inspect(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !r.ours(in.Config.Labels) {
		return fmt.Errorf("remove container %s: %w", id, ErrForeign)
	}
	if err := r.remove(ctx, in.ID); err != nil {
		return err
	}
	r.log.Info("container removed", "container", in.Name, "id", short(in.ID))
	return nil
}

func (r *Runtime) remove(ctx context.Context, id string) error {
	cctx, cancel := call(ctx, callTimeout)
	defer cancel()
	err := r.eng.ContainerRemove(cctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
		// 409 here is "removal already in progress" by a racing caller.
		return fmt.Errorf("remove container %s: %w", short(id), err)
	}
	return nil
}

// RemoveVolume removes a named volume (one a Mount created); a missing
// one is success, one still in use fails. Only names starting with
// "<owner>-" are accepted, so a runtime never deletes another owner's data.
func (r *Runtime) RemoveVolume(ctx context.Context, name string) error {
	if !nameRE.MatchString(name) || !strings.HasPrefix(name, r.owner+"-") {
		return fmt.Errorf("volume %q: %w (want %s-...)", name, ErrInvalid, r.owner)
	}
	cctx, cancel := call(ctx, callTimeout)
	defer cancel()
	if err := r.eng.VolumeRemove(cctx, name, false); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	return nil
}

// RemoveTenant removes every container and network labelled for the
// tenant (shared containers are only disconnected by the removal of the
// network they joined). Idempotent.
func (r *Runtime) RemoveTenant(ctx context.Context, tenant string) error {
	if err := checkTenant(tenant); err != nil {
		return err
	}
	cs, err := r.List(ctx, tenant)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if err := r.remove(ctx, c.ID); err != nil {
			return err
		}
	}
	f := filters.NewArgs(
		filters.Arg("label", LabelOwner+"="+r.owner),
		filters.Arg("label", LabelTenant+"="+tenant),
	)
	cctx, cancel := call(ctx, callTimeout)
	nets, err := r.eng.NetworkList(cctx, network.ListOptions{Filters: f})
	cancel()
	if err != nil {
		return fmt.Errorf("list networks of %s: %w", tenant, err)
	}
	for _, n := range nets {
		// Shared containers (the PostgreSQL server) may still be attached.
		cctx, cancel := call(ctx, callTimeout)
		in, err := r.eng.NetworkInspect(cctx, n.ID, network.InspectOptions{})
		cancel()
		if err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("inspect network %s: %w", n.Name, err)
		}
		for cid := range in.Containers {
			if err := r.Disconnect(ctx, cid, n.ID); err != nil {
				return err
			}
		}
		if err := r.RemoveNetwork(ctx, n.ID); err != nil {
			return err
		}
	}
	r.log.Info("tenant removed from docker", "tenant", tenant, "containers", len(cs), "networks", len(nets))
	return nil
}

// WaitHealthy polls until the container is healthy (or running, when it
// has no health check). It fails with ErrUnhealthy as soon as the
// container is unhealthy or has stopped; ctx bounds the wait.
func (r *Runtime) WaitHealthy(ctx context.Context, id string) (Container, error) {
	for {
		in, err := r.inspect(ctx, id)
		if err != nil {
			return Container{}, err
		}
		c := toContainer(in)
		switch {
		case c.State == "exited" || c.State == "dead":
			return c, fmt.Errorf("container %s %s (exit %d): %w", c.Name, c.State, in.State.ExitCode, ErrUnhealthy)
		case c.Health == "unhealthy":
			return c, fmt.Errorf("container %s: %w", c.Name, ErrUnhealthy)
		case c.State == "running" && (c.Health == "healthy" || c.Health == ""):
			return c, nil
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return c, fmt.Errorf("wait for %s to be healthy (state %s, health %s): %w", c.Name, c.State, c.Health, err)
		}
	}
}

// WaitExit polls until a (one-shot) container has stopped and returns its
// exit code; ctx bounds the wait.
func (r *Runtime) WaitExit(ctx context.Context, id string) (int, error) {
	for {
		in, err := r.inspect(ctx, id)
		if err != nil {
			return -1, err
		}
		if s := in.State.Status; s == "exited" || s == "dead" {
			return in.State.ExitCode, nil
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return -1, fmt.Errorf("wait for %s to exit: %w", in.Name, err)
		}
	}
}

// Logs returns the last lines of a container's output (stdout and stderr
// interleaved), for error reports.
func (r *Runtime) Logs(ctx context.Context, id string, tail int) (string, error) {
	cctx, cancel := call(ctx, callTimeout)
	defer cancel()
	rc, err := r.eng.ContainerLogs(cctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: fmt.Sprint(tail)})
	if err != nil {
		return "", fmt.Errorf("logs of %s: %w", id, err)
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil {
		return out.String(), fmt.Errorf("read logs of %s: %w", id, err)
	}
	return out.String(), nil
}

// Exec runs cmd in a running container as its user and returns its
// output and exit code; a non-zero exit is not an error.
func (r *Runtime) Exec(ctx context.Context, id string, cmd []string) (stdout, stderr string, exit int, err error) {
	return r.ExecAs(ctx, id, "", cmd)
}

// ExecAs is Exec as another user ("uid[:gid]"; "" is the container's).
func (r *Runtime) ExecAs(ctx context.Context, id, user string, cmd []string) (stdout, stderr string, exit int, err error) {
	if len(cmd) == 0 {
		return "", "", -1, fmt.Errorf("exec in %s: empty command: %w", id, ErrInvalid)
	}
	ctx, cancel := context.WithTimeout(ctx, execTimeout)
	defer cancel()
	created, err := r.eng.ContainerExecCreate(ctx, id, container.ExecOptions{
		Cmd: cmd, User: user, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return "", "", -1, fmt.Errorf("exec in %s: %w", id, ErrNotFound)
		}
		return "", "", -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	att, err := r.eng.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return "", "", -1, fmt.Errorf("attach exec in %s: %w", id, err)
	}
	defer att.Close()
	var out, errOut bytes.Buffer
	done := make(chan error, 1)
	go func() { _, err := stdcopy.StdCopy(&out, &errOut, att.Reader); done <- err }()
	select {
	case err = <-done:
	case <-ctx.Done():
		att.Close()
		<-done
		return out.String(), errOut.String(), -1, fmt.Errorf("exec in %s: %w", id, ctx.Err())
	}
	if err != nil {
		return out.String(), errOut.String(), -1, fmt.Errorf("read exec output in %s: %w", id, err)
	}
	in, err := r.eng.ContainerExecInspect(ctx, created.ID)
	if err != nil {
		return out.String(), errOut.String(), -1, fmt.Errorf("inspect exec in %s: %w", id, err)
	}
	return out.String(), errOut.String(), in.ExitCode, nil
}
