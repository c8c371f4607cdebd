package smartproxy

import (
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/malleable-cloud/malleable/appliance/m2"
)

// The foreman_m2 prototype's routes (ianballou/smart_proxy_m2 @ 365f07c6,
// as ianballou/foreman_m2 calls them): GET /m2/test, /m2/image_list,
// /m2/snapshot_list, GET and DELETE /m2/iscsi_target. Their answers keep
// the prototype's forms, so that plugin works unchanged; the project
// parameter is optional and may only name the tenant's own.

// m2Test is the prototype's liveness route: its default test_msg.
func (s *Server) m2Test(w http.ResponseWriter, _ *http.Request) error {
	writeText(w, http.StatusOK, "test")
	return nil
}

// m2ImageList is the prototype's image list: a JSON array of names.
func (s *Server) m2ImageList(w http.ResponseWriter, r *http.Request) error {
	imgs, err := s.storage.Images(r.Context())
	if err != nil {
		return err
	}
	names := make([]string, 0, len(imgs))
	for _, i := range imgs {
		names = append(names, i.Name)
	}
	writeJSON(w, http.StatusOK, names)
	return nil
}

// m2SnapshotList is the prototype's snapshot list, BMI's
// [[snapshot, parent disk], ...].
func (s *Server) m2SnapshotList(w http.ResponseWriter, r *http.Request) error {
	p, err := s.project(r)
	if err != nil {
		return err
	}
	snaps, err := s.storage.Snapshots(r.Context(), p)
	if err != nil {
		return err
	}
	out := make([][2]string, 0, len(snaps))
	for _, sn := range snaps {
		out = append(out, [2]string{sn.Name, sn.Disk})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// m2ISCSITarget is the prototype's create_disk: it clones image into disk
// (default: the image's name) and answers the iPXE SAN URI of its target.
// Asking again for the same disk and image answers the same target.
func (s *Server) m2ISCSITarget(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	image, disk := q.Get("image"), q.Get("disk")
	if image == "" {
		return &halt{http.StatusBadRequest, "image: the golden image to clone is required"}
	}
	if disk == "" {
		disk = image
	}
	p, err := s.project(r)
	if err != nil {
		return err
	}
	d, err := s.storage.CreateDisk(r.Context(), p, disk, image, "")
	if statusOf(err) == http.StatusConflict {
		if d, err = s.storage.Disk(r.Context(), p, disk); err == nil && d.Source != "image:"+image {
			return &halt{http.StatusConflict, fmt.Sprintf("disk %s already exists, cloned from %s, not image %s", disk, d.Source, image)}
		}
	}
	if err != nil {
		return err
	}
	writeText(w, http.StatusOK, sanURI(d.Target))
	return nil
}

// sanURI is iPXE's iSCSI root path for a target,
// iscsi:<server>:<protocol>:<port>:<lun>:<iqn>, LUN in hex, as the
// appliance's boot scripts write it.
func sanURI(t m2.Target) string {
	host, port, err := net.SplitHostPort(t.Portal)
	if err != nil {
		host, port = t.Portal, "3260"
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("iscsi:%s::%s:%x:%s", host, port, t.LUN, t.IQN)
}

// m2DeleteISCSITarget is the prototype's delete_disk.
func (s *Server) m2DeleteISCSITarget(w http.ResponseWriter, r *http.Request) error {
	disk := r.URL.Query().Get("disk")
	if disk == "" {
		return &halt{http.StatusBadRequest, "disk: the disk to delete is required"}
	}
	p, err := s.project(r)
	if err != nil {
		return err
	}
	if err := s.storage.DeleteDisk(r.Context(), p, disk); err != nil {
		return err
	}
	writeText(w, http.StatusOK, "Success")
	return nil
}
