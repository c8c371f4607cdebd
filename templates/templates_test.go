package templates

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// valid is a SANBoot that RenderSANBoot accepts, in the form M2 uses.
func valid() SANBoot {
	return SANBoot{
		InitiatorIQN: "iqn.2026-11.cloud.malleable:node-07",
		CHAPUser:     "acme.web-1",
		CHAPSecret:   "Zt8Kq2x_Vb9Lw4mN",
		Portal:       "192.0.2.10",
		TargetIQN:    "iqn.2026-11.cloud.malleable:acme.web-1",
	}
}

func TestRenderSANBootGolden(t *testing.T) {
	tests := map[string]func(*SANBoot){
		// ARCHITECTURE.md §4.4 exactly: port 3260, LUN 1, 10 s retry.
		"default": func(*SANBoot) {},
		// LUN 10 is "a" in iPXE's hex LUN field; a DNS portal; custom port.
		"lun_hex": func(s *SANBoot) {
			s.Portal, s.Port, s.LUN, s.RetryDelay = "san-1.storage.example", 13260, 10, 1
		},
		"limits": func(s *SANBoot) {
			s.Portal, s.Port, s.LUN, s.RetryDelay = "10.0.2.2", 65535, 255, 3600
			s.TargetIQN = "iqn.2004-01.com.example.san:tenant_a:disk.2"
		},
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			s := valid()
			mutate(&s)
			var buf bytes.Buffer
			if err := RenderSANBoot(&buf, s); err != nil {
				t.Fatalf("RenderSANBoot: %v", err)
			}
			golden(t, filepath.Join("testdata", "sanboot_"+name+".golden"), buf.Bytes())
		})
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (run with -update if intended)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestRenderSANBootRejectsInjection(t *testing.T) {
	// injections are values appended to (or replacing) a valid field, each an
	// attempt to make iPXE run or expand something.
	injections := map[string]string{
		"newline":      "\nshell",
		"carriage ret": "\rshell",
		"expansion":    "${net0/mac}",
		"braces only":  "{x}",
		"dollar":       "$x",
		"space":        " extra",
		"tab":          "\textra",
		"double quote": `"`,
		"single quote": "'",
		"backslash":    `\n`,
		"or":           "||shell",
		"and":          "&&shell",
		"comment":      "#x",
		"non-ASCII":    "é",
		"NUL":          "\x00",
		"too long":     strings.Repeat("a", 300),
	}
	fields := map[string]func(*SANBoot) *string{
		"initiator IQN": func(s *SANBoot) *string { return &s.InitiatorIQN },
		"target IQN":    func(s *SANBoot) *string { return &s.TargetIQN },
		"CHAP user":     func(s *SANBoot) *string { return &s.CHAPUser },
		"CHAP secret":   func(s *SANBoot) *string { return &s.CHAPSecret },
		"portal":        func(s *SANBoot) *string { return &s.Portal },
	}
	for field, at := range fields {
		for attack, payload := range injections {
			t.Run(field+"/"+attack, func(t *testing.T) {
				s := valid()
				*at(&s) += payload
				checkRejected(t, s, field)
			})
		}
	}
}

func TestRenderSANBootRejectsInvalid(t *testing.T) {
	tests := map[string]struct {
		mutate func(*SANBoot)
		want   string // substring of the error
	}{
		"no initiator":         {func(s *SANBoot) { s.InitiatorIQN = "" }, "initiator IQN: empty"},
		"initiator not iqn":    {func(s *SANBoot) { s.InitiatorIQN = "eui.02004567A425678D" }, `does not start with "iqn."`},
		"initiator upper case": {func(s *SANBoot) { s.InitiatorIQN = "iqn.2026-11.cloud.malleable:Node" }, "only [a-z0-9.:_-]"},
		"initiator bad month":  {func(s *SANBoot) { s.InitiatorIQN = "iqn.2026-13.cloud.malleable:n" }, "expected iqn.<yyyy-mm>"},
		"initiator no date":    {func(s *SANBoot) { s.InitiatorIQN = "iqn.cloud.malleable:n" }, "expected iqn.<yyyy-mm>"},
		"initiator bad domain": {func(s *SANBoot) { s.InitiatorIQN = "iqn.2026-11.-cloud:n" }, "naming authority"},
		"initiator empty name": {func(s *SANBoot) { s.InitiatorIQN = "iqn.2026-11.cloud.malleable:" }, "empty name after ':'"},
		"target 224 bytes": {func(s *SANBoot) {
			s.TargetIQN = "iqn.2026-11.cloud.malleable:" + strings.Repeat("d", 224-28)
		}, "target IQN: longer than 223 bytes"},
		"no CHAP user":       {func(s *SANBoot) { s.CHAPUser = "" }, "CHAP user: empty"},
		"CHAP user option":   {func(s *SANBoot) { s.CHAPUser = "--help" }, "CHAP user: starts with '-'"},
		"CHAP user colon":    {func(s *SANBoot) { s.CHAPUser = "a:b" }, "CHAP user: character 2 is outside"},
		"no CHAP secret":     {func(s *SANBoot) { s.CHAPSecret = "" }, "CHAP secret: shorter than 12"},
		"short CHAP secret":  {func(s *SANBoot) { s.CHAPSecret = "chap-secret" }, "CHAP secret: shorter than 12"},
		"CHAP secret 256":    {func(s *SANBoot) { s.CHAPSecret = strings.Repeat("s", 256) }, "CHAP secret: longer than 255"},
		"CHAP secret plus":   {func(s *SANBoot) { s.CHAPSecret = "abcdefghijk+/=" }, "CHAP secret: character 12 is outside"},
		"no portal":          {func(s *SANBoot) { s.Portal = "" }, "portal: empty"},
		"portal IPv6":        {func(s *SANBoot) { s.Portal = "fd00::1" }, "IPv6 portals are not supported"},
		"portal v4-mapped":   {func(s *SANBoot) { s.Portal = "::ffff:10.0.2.2" }, "IPv6 portals are not supported"},
		"portal 0.0.0.0":     {func(s *SANBoot) { s.Portal = "0.0.0.0" }, "not a unicast address"},
		"portal broadcast":   {func(s *SANBoot) { s.Portal = "255.255.255.255" }, "not a unicast address"},
		"portal 3 octets":    {func(s *SANBoot) { s.Portal = "10.0.2" }, "last label is all digits"},
		"portal octal":       {func(s *SANBoot) { s.Portal = "010.0.2.2" }, "last label is all digits"},
		"portal with port":   {func(s *SANBoot) { s.Portal = "10.0.2.2:3260" }, "neither an IPv4 address nor a DNS name"},
		"portal underscore":  {func(s *SANBoot) { s.Portal = "san_1.example" }, "only [A-Za-z0-9-]"},
		"portal empty label": {func(s *SANBoot) { s.Portal = "san..example" }, "labels must be 1 to 63"},
		"portal long label":  {func(s *SANBoot) { s.Portal = strings.Repeat("a", 64) + ".example" }, "labels must be 1 to 63"},
		"portal hyphen":      {func(s *SANBoot) { s.Portal = "-san.example" }, "starts or ends with '-'"},
		"port negative":      {func(s *SANBoot) { s.Port = -1 }, "port: -1 is outside 1..65535"},
		"port too big":       {func(s *SANBoot) { s.Port = 65536 }, "port: 65536 is outside"},
		"LUN negative":       {func(s *SANBoot) { s.LUN = -1 }, "LUN: -1 is outside 1..255"},
		"LUN 256":            {func(s *SANBoot) { s.LUN = 256 }, "LUN: 256 is outside"},
		"retry negative":     {func(s *SANBoot) { s.RetryDelay = -5 }, "retry delay: -5 is outside 1..3600"},
		"retry an hour+1":    {func(s *SANBoot) { s.RetryDelay = 3601 }, "retry delay: 3601 is outside"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := valid()
			tc.mutate(&s)
			checkRejected(t, s, tc.want)
		})
	}
}

// checkRejected renders s, which must fail with ErrInvalid and an error
// containing want, without writing anything or revealing the CHAP secret.
func checkRejected(t *testing.T, s SANBoot, want string) {
	t.Helper()
	var buf bytes.Buffer
	err := RenderSANBoot(&buf, s)
	switch {
	case err == nil:
		t.Fatalf("RenderSANBoot accepted %+v:\n%s", s, buf.String())
	case !errors.Is(err, ErrInvalid):
		t.Errorf("error %v does not wrap ErrInvalid", err)
	case !strings.Contains(err.Error(), want):
		t.Errorf("error %q does not contain %q", err, want)
	}
	if buf.Len() != 0 {
		t.Errorf("wrote %d bytes despite the error", buf.Len())
	}
	if len(s.CHAPSecret) >= 4 && strings.Contains(err.Error(), s.CHAPSecret) {
		t.Errorf("error reveals the CHAP secret: %v", err)
	}
	if vErr := s.Validate(); vErr == nil || vErr.Error() != err.Error() {
		t.Errorf("Validate() = %v, RenderSANBoot = %v", vErr, err)
	}
}

func TestValidateJoinsEveryBadField(t *testing.T) {
	err := SANBoot{Port: -1}.Validate()
	for _, field := range []string{"initiator IQN", "target IQN", "CHAP user", "CHAP secret", "portal", "port"} {
		if !strings.Contains(err.Error(), field+": ") {
			t.Errorf("error does not mention %s: %v", field, err)
		}
	}
	if err := valid().Validate(); err != nil {
		t.Errorf("Validate(valid) = %v", err)
	}
}

type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

func TestRenderSANBootWriteError(t *testing.T) {
	sentinel := errors.New("disk full")
	err := RenderSANBoot(failingWriter{sentinel}, valid())
	if !errors.Is(err, sentinel) || errors.Is(err, ErrInvalid) {
		t.Fatalf("RenderSANBoot = %v, want the writer's error", err)
	}
}

// FuzzRenderSANBoot checks that whatever RenderSANBoot accepts renders to
// the eleven-line script with each value a single, literal iPXE argument.
func FuzzRenderSANBoot(f *testing.F) {
	v := valid()
	f.Add(v.InitiatorIQN, v.CHAPUser, v.CHAPSecret, v.Portal, v.TargetIQN, 0, 0, 0)
	f.Add(v.InitiatorIQN, "u ${x}", "s\nshell", "10.0.2.2", v.TargetIQN, 3260, 10, 1)
	f.Add("iqn.2000-01.a:b||c", "u", "0123456789ab", "h.example", "iqn.2000-01.a", 1, 255, 3600)
	f.Fuzz(func(t *testing.T, initiator, user, secret, portal, target string, port, lun, delay int) {
		var buf bytes.Buffer
		err := RenderSANBoot(&buf, SANBoot{initiator, user, secret, portal, port, lun, target, delay})
		if err != nil {
			if buf.Len() != 0 {
				t.Fatalf("wrote %d bytes despite %v", buf.Len(), err)
			}
			return
		}
		lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
		if len(lines) != 11 {
			t.Fatalf("%d lines:\n%s", len(lines), buf.String())
		}
		for i, line := range lines[1:] {
			for _, c := range []byte(line) {
				if c < 0x21 && c != ' ' || c > 0x7e || strings.IndexByte("$\"'\\{}#&", c) >= 0 {
					t.Fatalf("line %d has byte %#x: %q", i+2, c, line)
				}
			}
		}
		want := map[int]int{2: 3, 3: 3, 4: 3, 6: 6} // line index -> word count
		for n, count := range want {
			if got := len(strings.Fields(lines[n])); got != count {
				t.Fatalf("line %d has %d words, want %d: %q", n+1, got, count, lines[n])
			}
		}
		if strings.Count(buf.String(), "|") != 2 {
			t.Fatalf("extra '|' in:\n%s", buf.String())
		}
	})
}

func TestForemanSANBoot(t *testing.T) {
	tmpl := ForemanSANBoot()
	header, body, ok := strings.Cut(tmpl, "-%>\n")
	if !ok || !strings.HasPrefix(header, "<%#\n") {
		t.Fatalf("template does not start with a <%%# ... -%%> metadata header:\n%s", tmpl)
	}
	for _, line := range []string{"kind: iPXE", "name: " + ForemanSANBootName, "model: ProvisioningTemplate"} {
		if !strings.Contains(header, "\n"+line+"\n") {
			t.Errorf("metadata header lacks %q", line)
		}
	}
	// ERB comments and trimmed tags render nothing, so #!ipxe is the first
	// line iPXE sees.
	if !strings.HasPrefix(body, "#!ipxe\n") {
		t.Errorf("body does not start with #!ipxe:\n%s", body)
	}
	for _, line := range []string{"set keep-san 1\n", "sanboot --keep <%= @host.iscsi_target %> || shell\n"} {
		if !strings.Contains(body, line) {
			t.Errorf("body lacks the M2 prototype's %q", line)
		}
	}
}
