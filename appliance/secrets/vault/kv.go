package vault

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/malleable-cloud/malleable/appliance/secrets"
)

var _ secrets.Store = (*Store)(nil)

// valueField is the one field of a KV v2 secret that holds our value, in
// base64 so any bytes survive Vault's JSON.
const valueField = "value"

// Store is the secrets.Store contract on Vault's KV v2: the secret at path
// p lives at <KVMount>/data/<Root>/p. It is safe for concurrent use.
type Store struct {
	c  *Client
	kv *api.KVv2
}

// Store returns the KV v2 store under the client's Root.
func (c *Client) Store() *Store {
	return &Store{c: c, kv: c.api.KVv2(c.cfg.KVMount)}
}

// full is the path inside the KV mount.
func (s *Store) full(path string) string { return s.c.cfg.Root + "/" + path }

// Get returns the value at path, or secrets.ErrNotFound; a soft-deleted
// latest version counts as absent.
func (s *Store) Get(ctx context.Context, path string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get secret %q: %w", path, err)
	}
	if err := secrets.ValidatePath(path); err != nil {
		return nil, fmt.Errorf("get secret %q: %w", path, err)
	}
	var sec *api.KVSecret
	err := s.c.call(ctx, func(ctx context.Context) (err error) {
		sec, err = s.kv.Get(ctx, s.full(path))
		return err
	})
	if errors.Is(err, api.ErrSecretNotFound) || err == nil && (sec == nil || sec.Data == nil) {
		return nil, fmt.Errorf("get secret %q: %w", path, secrets.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get secret %q: %w", path, err)
	}
	enc, ok := sec.Data[valueField].(string)
	if !ok {
		return nil, fmt.Errorf("get secret %q: no %q string field (not written by the appliance?)", path, valueField)
	}
	v, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil, fmt.Errorf("get secret %q: field %q is not base64", path, valueField)
	}
	return append([]byte{}, v...), nil
}

// Put writes a new version holding value at path.
func (s *Store) Put(ctx context.Context, path string, value []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put secret %q: %w", path, err)
	}
	if err := secrets.ValidatePath(path); err != nil {
		return fmt.Errorf("put secret %q: %w", path, err)
	}
	if len(value) > secrets.MaxValueSize {
		return fmt.Errorf("put secret %q: %w: %d bytes, limit %d", path, secrets.ErrTooLarge, len(value), secrets.MaxValueSize)
	}
	data := map[string]any{valueField: base64.StdEncoding.EncodeToString(value)}
	err := s.c.call(ctx, func(ctx context.Context) error {
		_, err := s.kv.Put(ctx, s.full(path), data)
		return err
	})
	if err != nil {
		return fmt.Errorf("put secret %q: %w", path, err)
	}
	return nil
}

// Delete removes every version and the metadata of path, so it no longer
// lists; an absent path is not an error.
func (s *Store) Delete(ctx context.Context, path string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete secret %q: %w", path, err)
	}
	if err := secrets.ValidatePath(path); err != nil {
		return fmt.Errorf("delete secret %q: %w", path, err)
	}
	err := s.c.call(ctx, func(ctx context.Context) error {
		return s.kv.DeleteMetadata(ctx, s.full(path))
	})
	if err != nil {
		return fmt.Errorf("delete secret %q: %w", path, err)
	}
	return nil
}

// List walks LIST <KVMount>/metadata/<Root>/<prefix> recursively: Vault
// lists one level at a time and marks folders with a trailing slash.
func (s *Store) List(ctx context.Context, prefix string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list secrets %q: %w", prefix, err)
	}
	if err := secrets.ValidatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("list secrets %q: %w", prefix, err)
	}
	dir := strings.TrimSuffix(prefix, "/")
	if dir != "" {
		dir += "/"
	}
	out := []string{}
	if err := s.walk(ctx, dir, &out); err != nil {
		return nil, fmt.Errorf("list secrets %q: %w", prefix, err)
	}
	slices.Sort(out)
	return out, nil
}

// walk appends the secrets under dir ("" or ending in "/") to out.
func (s *Store) walk(ctx context.Context, dir string, out *[]string) error {
	var sec *api.Secret
	err := s.c.call(ctx, func(ctx context.Context) (err error) {
		sec, err = s.c.api.Logical().ListWithContext(ctx, s.c.cfg.KVMount+"/metadata/"+s.c.cfg.Root+"/"+dir)
		return err
	})
	if err != nil {
		return err
	}
	if sec == nil { // 404: no such folder
		return nil
	}
	keys, _ := sec.Data["keys"].([]any)
	for _, k := range keys {
		name, ok := k.(string)
		if !ok {
			continue
		}
		if sub, isDir := strings.CutSuffix(name, "/"); isDir {
			if err := s.walk(ctx, dir+sub+"/", out); err != nil {
				return err
			}
			continue
		}
		*out = append(*out, dir+name)
	}
	return nil
}
