package iscsi

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// parseTargets parses `tgtadm --lld iscsi --mode target --op show`. The
// listing is indented by four spaces per level:
//
//	Target 1: iqn.2026-01.cloud.malleable:p.d1
//	    System information:
//	        State: ready
//	    I_T nexus information:
//	        I_T nexus: 3
//	            Initiator: iqn.2026-01.cloud.malleable:node1 alias: none
//	            Connection: 0
//	                IP Address: 127.0.0.1
//	    LUN information:
//	        LUN: 1
//	            Type: disk
//	            SCSI SN: ...
//	            Backing store path: /srv/disk.img
//	    Account information:
//	        user1
//	        user2 (outgoing)
//	    ACL information:
//	        ALL
//	        iqn.2026-01.cloud.malleable:node1
//
// Unknown lines are skipped, so that additions in later tgt versions do not
// break the driver.
func parseTargets(out []byte) ([]Status, error) {
	var (
		targets []Status
		t       *Status
		section string
		lun     *LUN
		sess    *Session
	)
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		raw := sc.Text()
		line := strings.TrimLeft(raw, " ")
		if line == "" {
			continue
		}
		depth := (len(raw) - len(line)) / 4
		if depth == 0 {
			tid, iqn, err := parseTargetHeader(line)
			if err != nil {
				return nil, fmt.Errorf("parse tgtadm target listing, line %d: %w", n, err)
			}
			targets = append(targets, Status{TID: tid, IQN: iqn})
			t, section, lun, sess = &targets[len(targets)-1], "", nil, nil
			continue
		}
		if t == nil {
			return nil, fmt.Errorf("parse tgtadm target listing, line %d: %q before the first target", n, line)
		}
		if depth == 1 {
			section, lun, sess = line, nil, nil
			continue
		}
		key, value, _ := strings.Cut(line, ": ")
		value = strings.TrimSpace(value)
		switch section {
		case "System information:":
			if depth == 2 && key == "State" {
				t.State = value
			}
		case "LUN information:":
			if depth == 2 && key == "LUN" {
				num, err := strconv.Atoi(value)
				if err != nil {
					return nil, fmt.Errorf("parse tgtadm target listing, line %d: LUN %q: %w", n, value, err)
				}
				t.LUNs = append(t.LUNs, LUN{Number: num})
				lun = &t.LUNs[len(t.LUNs)-1]
				continue
			}
			if lun == nil || depth != 3 {
				continue
			}
			switch key {
			case "Type":
				lun.Type = value
			case "SCSI SN":
				lun.Serial = value
			case "Backing store path":
				lun.Backing = value
			}
		case "I_T nexus information:":
			if depth == 2 && key == "I_T nexus" {
				nexus, err := strconv.Atoi(value)
				if err != nil {
					return nil, fmt.Errorf("parse tgtadm target listing, line %d: I_T nexus %q: %w", n, value, err)
				}
				t.Sessions = append(t.Sessions, Session{Nexus: nexus})
				sess = &t.Sessions[len(t.Sessions)-1]
				continue
			}
			if sess == nil {
				continue
			}
			switch {
			case depth == 3 && key == "Initiator":
				// "<name> alias: <alias>"; the name is the initiator's and
				// could hold anything, so cut at the last " alias: ".
				if i := strings.LastIndex(value, " alias:"); i >= 0 {
					value = value[:i]
				}
				sess.Initiator = value
			case depth == 4 && key == "IP Address":
				sess.Addresses = append(sess.Addresses, value)
			}
		case "Account information:":
			if depth != 2 {
				continue
			}
			if name, ok := strings.CutSuffix(line, " (outgoing)"); ok {
				t.Outgoing = append(t.Outgoing, name)
			} else {
				t.Accounts = append(t.Accounts, line)
			}
		case "ACL information:":
			if depth != 2 {
				continue
			}
			if isAddressACL(line) {
				t.Addresses = append(t.Addresses, line)
			} else {
				t.Initiators = append(t.Initiators, line)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("parse tgtadm target listing: %w", err)
	}
	// LUN 0 is tgtd's controller, never a disk.
	for i := range targets {
		lus := targets[i].LUNs[:0]
		for _, l := range targets[i].LUNs {
			if l.Number != 0 {
				lus = append(lus, l)
			}
		}
		targets[i].LUNs = lus
	}
	return targets, nil
}

// parseTargetHeader parses "Target <tid>: <name>".
func parseTargetHeader(line string) (int, string, error) {
	rest, ok := strings.CutPrefix(line, "Target ")
	if !ok {
		return 0, "", fmt.Errorf("expected \"Target <tid>: <name>\", got %q", line)
	}
	num, name, ok := strings.Cut(rest, ": ")
	if !ok {
		return 0, "", fmt.Errorf("expected \"Target <tid>: <name>\", got %q", line)
	}
	tid, err := strconv.Atoi(num)
	if err != nil || tid < 1 {
		return 0, "", fmt.Errorf("bad target ID in %q", line)
	}
	return tid, name, nil
}

// isAddressACL tells the two kinds of ACL entry apart. tgtd keeps them in
// two lists (bound with -I and -Q) but prints both under "ACL
// information:". An address entry is ALL, an address or a prefix.
func isAddressACL(entry string) bool {
	if entry == "ALL" {
		return true
	}
	if _, err := netip.ParseAddr(entry); err == nil {
		return true
	}
	_, err := netip.ParsePrefix(entry)
	return err == nil
}

// parseAccounts parses `tgtadm --lld iscsi --mode account --op show`:
//
//	Account list:
//	    user1
//	    user2
func parseAccounts(out []byte) []string {
	var names []string
	for line := range strings.Lines(string(out)) {
		if !strings.HasPrefix(line, " ") {
			continue // the "Account list:" header
		}
		if name := strings.TrimSpace(line); name != "" {
			names = append(names, name)
		}
	}
	return names
}
