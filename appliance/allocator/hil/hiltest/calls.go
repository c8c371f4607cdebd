package hiltest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// StatusError is a non-2xx answer to Call.
type StatusError struct {
	Method, URL string
	Status      int
	Body        string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.URL, e.Status, e.Body)
}

// Call makes one request to HIL (path under /v0) as its administrator,
// following OBMd redirects, and returns the body of a 2xx answer.
func (k *Kit) Call(method, path string, body any) ([]byte, error) {
	return k.call(method, k.URL+"/v0"+path, k.AdminUser, k.AdminPass, body)
}

// CallAs is Call with another HIL account.
func (k *Kit) CallAs(user, pass, method, path string, body any) ([]byte, error) {
	return k.call(method, k.URL+"/v0"+path, user, pass, body)
}

func (k *Kit) call(method, url, user, pass string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := k.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return b, &StatusError{Method: method, URL: url, Status: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	return b, nil
}

// Must is Call that fails the test on an error.
func (k *Kit) Must(method, path string, body any) []byte {
	k.tb.Helper()
	b, err := k.Call(method, path, body)
	if err != nil {
		k.tb.Fatalf("hiltest: %v", err)
	}
	return b
}

// AddNode registers node in OBMd with the "dummy" driver (remembers
// on/off, starts off) and in HIL, free.
func (k *Kit) AddNode(node string) {
	k.tb.Helper()
	k.addNode(node, "dummy", map[string]string{"addr": "127.0.0.1:9"})
}

func (k *Kit) addNode(node, driver string, info map[string]string) {
	k.tb.Helper()
	obm := map[string]any{"type": driver, "info": info}
	if _, err := k.call(http.MethodPut, k.OBMDURL+"/node/"+node, "admin", k.OBMDToken, obm); err != nil {
		k.tb.Fatalf("hiltest: OBMd node %s: %v", node, err)
	}
	k.Must(http.MethodPut, "/node/"+node, map[string]any{"obmd": map[string]string{
		"uri": k.OBMDURL + "/node/" + node, "admin_token": k.OBMDToken}})
}

// AddNodeIPMI registers node in OBMd with the "ipmi" driver (ipmitool
// to addr, host:port) and in HIL, free. An addr nothing answers on is a
// dead BMC: OBMd gives up after about 20 s, and serves nobody meanwhile.
func (k *Kit) AddNodeIPMI(node, addr, user, pass string) {
	k.tb.Helper()
	k.addNode(node, "ipmi", map[string]string{"addr": addr, "user": user, "pass": pass})
}

// AddProject creates project.
func (k *Kit) AddProject(project string) {
	k.tb.Helper()
	k.Must(http.MethodPut, "/project/"+project, nil)
}

// AddUser creates a HIL account, a member of projects.
func (k *Kit) AddUser(user, pass string, admin bool, projects ...string) {
	k.tb.Helper()
	k.Must(http.MethodPut, "/auth/basic/user/"+user, map[string]any{"password": pass, "is_admin": admin})
	for _, p := range projects {
		k.Must(http.MethodPost, "/auth/basic/user/"+user+"/add_project", map[string]string{"project": p})
	}
}

// MoveNode puts node in project by hand, as an operator would in HIL:
// OBM disabled, detached from its project if any, connected to project.
func (k *Kit) MoveNode(node, project string) {
	k.tb.Helper()
	k.Must(http.MethodPut, "/node/"+node+"/obm", map[string]bool{"enabled": false})
	if from := k.NodeProject(node); from != "" {
		k.Must(http.MethodPost, "/project/"+from+"/detach_node", map[string]string{"node": node})
	}
	if project != "" {
		k.Call(http.MethodPut, "/project/"+project, nil) // may exist
		k.Must(http.MethodPost, "/project/"+project+"/connect_node", map[string]string{"node": node})
	}
}

// NodeProject returns node's project in HIL, or "" when free.
func (k *Kit) NodeProject(node string) string {
	k.tb.Helper()
	var n struct {
		Project *string `json:"project"`
	}
	if err := json.Unmarshal(k.Must(http.MethodGet, "/node/"+node, nil), &n); err != nil {
		k.tb.Fatalf("hiltest: show node %s: %v", node, err)
	}
	if n.Project == nil {
		return ""
	}
	return *n.Project
}

// withOBM runs fn with node's OBM enabled, restoring a disabled OBM after.
func (k *Kit) withOBM(node string, fn func() error) {
	k.tb.Helper()
	err := fn()
	var se *StatusError
	if errors.As(err, &se) && se.Status == http.StatusConflict && strings.Contains(se.Body, "OBM is not enabled") {
		k.Must(http.MethodPut, "/node/"+node+"/obm", map[string]bool{"enabled": true})
		err = fn()
		k.Must(http.MethodPut, "/node/"+node+"/obm", map[string]bool{"enabled": false})
	}
	if err != nil {
		k.tb.Fatalf("hiltest: %v", err)
	}
}

// PowerIsOn reads node's power through HIL and OBMd, enabling its OBM for
// the read when it is disabled (a free node).
func (k *Kit) PowerIsOn(node string) bool {
	k.tb.Helper()
	var st struct {
		PowerStatus string `json:"power_status"`
	}
	k.withOBM(node, func() error {
		b, err := k.Call(http.MethodGet, "/node/"+node+"/power_status", nil)
		if err == nil {
			err = json.Unmarshal(b, &st)
		}
		return err
	})
	return st.PowerStatus == "on"
}

// SetPower powers node on or off through HIL and OBMd, enabling its OBM
// for the call when it is disabled (a free node).
func (k *Kit) SetPower(node string, on bool) {
	k.tb.Helper()
	op := "power_off"
	if on {
		op = "power_on"
	}
	k.withOBM(node, func() error {
		_, err := k.Call(http.MethodPost, "/node/"+node+"/"+op, nil)
		return err
	})
}

// AttachNetwork gives node a NIC eth0 on a mock switch port and connects
// it to network, a new network owned by project (the node must be in
// project), waiting until HIL's network daemon applied it.
func (k *Kit) AttachNetwork(node, project, network string) {
	k.tb.Helper()
	id := k.QueueAttachNetwork(node, project, network)
	if st := k.WaitAction(id, 30*time.Second); st != "DONE" {
		k.tb.Fatalf("hiltest: connect_network action %s is %s", id, st)
	}
}

// QueueAttachNetwork is AttachNetwork without the wait: it returns the
// networking action's id. With the network daemon stopped, the action
// stays PENDING.
//
// HIL's mock switch keeps its ports in the network daemon's memory: a
// daemon started again (StartNetworks) crashes on detaching a network an
// earlier daemon attached. Stop the daemon before queuing what a test
// wants to see PENDING.
func (k *Kit) QueueAttachNetwork(node, project, network string) string {
	k.tb.Helper()
	if _, err := k.Call(http.MethodGet, "/switch/sw0", nil); err != nil {
		k.Must(http.MethodPut, "/switch/sw0", map[string]string{"type": k.mockSwitch,
			"hostname": "sw0.invalid", "username": "x", "password": "x"})
	}
	k.ports++
	port := fmt.Sprintf("/switch/sw0/port/gi1/0/%d", k.ports) // the mock switch's port names
	k.Must(http.MethodPut, port, nil)
	k.Must(http.MethodPut, "/node/"+node+"/nic/eth0", map[string]string{"macaddr": fmt.Sprintf("52:54:00:12:34:%02x", k.ports)})
	k.Must(http.MethodPost, port+"/connect_nic", map[string]string{"node": node, "nic": "eth0"})
	k.Must(http.MethodPut, "/network/"+network, map[string]string{"owner": project, "access": project, "net_id": ""})
	var queued struct {
		StatusID string `json:"status_id"`
	}
	b := k.Must(http.MethodPost, "/node/"+node+"/nic/eth0/connect_network", map[string]string{"network": network})
	if err := json.Unmarshal(b, &queued); err != nil {
		k.tb.Fatalf("hiltest: connect_network: %v (%s)", err, b)
	}
	return queued.StatusID
}

// WaitAction polls a networking action until it leaves PENDING or within
// is over, and returns its last status.
func (k *Kit) WaitAction(id string, within time.Duration) string {
	k.tb.Helper()
	deadline := time.Now().Add(within)
	for {
		var a struct {
			Status string `json:"status"`
		}
		if err := json.Unmarshal(k.Must(http.MethodGet, "/networking_action/"+id, nil), &a); err != nil {
			k.tb.Fatalf("hiltest: networking action %s: %v", id, err)
		}
		if a.Status != "PENDING" || time.Now().After(deadline) {
			return a.Status
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Networks returns node's attached networks, by NIC label and channel.
func (k *Kit) Networks(node string) map[string]map[string]string {
	k.tb.Helper()
	var n struct {
		NICs []struct {
			Label    string            `json:"label"`
			Networks map[string]string `json:"networks"`
		} `json:"nics"`
	}
	if err := json.Unmarshal(k.Must(http.MethodGet, "/node/"+node, nil), &n); err != nil {
		k.tb.Fatalf("hiltest: show node %s: %v", node, err)
	}
	out := map[string]map[string]string{}
	for _, nic := range n.NICs {
		if len(nic.Networks) > 0 {
			out[nic.Label] = nic.Networks
		}
	}
	return out
}

// StopNetworks stops HIL's network daemon (hil-admin serve-networks), so
// that networking actions stay PENDING.
func (k *Kit) StopNetworks() {
	k.tb.Helper()
	pidFile := filepath.Join(k.Dir, "run", "serve-networks.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		k.tb.Fatalf("hiltest: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		k.tb.Fatalf("hiltest: %s: %v", pidFile, err)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if !bytes.Contains(cmdline, []byte("serve-networks")) {
		k.tb.Fatalf("hiltest: pid %d is not HIL's network daemon", pid)
	}
	p, err := os.FindProcess(pid)
	if err == nil {
		err = p.Kill()
	}
	if err != nil {
		k.tb.Fatalf("hiltest: stop serve-networks (pid %d): %v", pid, err)
	}
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/cmdline", pid)); err != nil {
			break
		}
		if c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); len(c) == 0 {
			break // a zombie until up.sh's shell reaps it
		}
		time.Sleep(50 * time.Millisecond)
	}
	os.Remove(pidFile)
}

// StartNetworks starts HIL's network daemon again, as up.sh does.
func (k *Kit) StartNetworks() {
	k.tb.Helper()
	env, err := readEnv(filepath.Join(k.Dir, "kit.env"))
	if err != nil {
		k.tb.Fatalf("hiltest: %v", err)
	}
	args := []string{"-c", `echo $$ > "$0"; exec "$@"`, filepath.Join(k.Dir, "run", "serve-networks.pid")}
	if u := env["KIT_RUN_USER"]; u != "" {
		args = append(args, "setpriv", "--reuid="+u, "--regid="+u, "--init-groups")
	}
	args = append(args, filepath.Join(k.Dir, "bin", "hil-admin"), "serve-networks")
	log, err := os.OpenFile(filepath.Join(k.Dir, "run", "serve-networks.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		k.tb.Fatalf("hiltest: %v", err)
	}
	defer log.Close()
	cmd := exec.Command("setsid", append([]string{"sh"}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		k.tb.Fatalf("hiltest: start serve-networks: %v", err)
	}
	go cmd.Wait() //nolint:errcheck // reaped when it stops; down.sh stops it
}
