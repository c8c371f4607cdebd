package bmctest

import (
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The files that configure one ipmi_sim live in sim/ as plain files with
// @PLACEHOLDERS@, so that scripts/bmc-sim.sh runs exactly the same BMCs
// outside tests. The chassis (power, reset, boot device) is handed to
// sim/chassis.sh through `chassis_control`, which ipmi_sim prefers over its
// own startcmd/VM-serial machinery; that is what makes the boot device
// settable and every chassis command observable. ipmi_sim runs chassis.sh
// through popen, synchronously: the whole BMC waits for it, so it must stay
// well under the client's timeout and leave no child holding its stdout
// (hence qemu -daemonize with its output redirected). sim/lan.sh answers the
// BMC's LAN parameters as name:value lines.
var (
	//go:embed sim/lan.conf
	lanConf string
	//go:embed sim/bmc.emu
	bmcEmu string
	//go:embed sim/chassis.sh
	chassisScript string
	//go:embed sim/lan.sh
	lanScript string
)

// writeFiles writes the configuration of s listening on port.
func (s *Sim) writeFiles(qemu string, guid string, qemuArgs []string) error {
	args := make([]string, len(qemuArgs))
	for i, a := range qemuArgs {
		args[i] = shellQuote(a)
	}
	gw := "0.0.0.0"
	if s.LAN.Gateway.IsValid() {
		gw = s.LAN.Gateway.String()
	}
	r := strings.NewReplacer(
		"@DIR@", s.Dir,
		"@QDIR@", shellQuote(s.Dir),
		"@PORT@", fmt.Sprint(s.Port),
		"@GUID@", guid,
		"@USER@", s.User,
		"@PASSWORD@", s.Password,
		"@QEMU@", shellQuote(qemu),
		"@QEMUARGS@", strings.Join(args, " "),
		"@IP@", s.LAN.IP.String(),
		"@MASK@", s.LAN.Netmask.String(),
		"@MAC@", s.LAN.MAC.String(),
		"@GW@", gw,
	)
	for _, f := range []struct {
		name, text string
		mode       os.FileMode
	}{
		{"lan.conf", lanConf, 0o600},
		{"bmc.emu", bmcEmu, 0o600},
		{"chassis.sh", chassisScript, 0o700},
		{"lan.sh", lanScript, 0o700},
	} {
		if err := os.WriteFile(filepath.Join(s.Dir, f.name), []byte(r.Replace(f.text)), f.mode); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	return nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
