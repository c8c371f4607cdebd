package appliance

import (
	"errors"
	"testing"
)

// FuzzParseConfig feeds arbitrary bytes to the INI loader: it must never
// panic, must answer either a valid configuration or a *ConfigError, and a
// configuration it accepts must validate again unchanged.
func FuzzParseConfig(f *testing.F) {
	f.Add(ExampleINI)
	f.Add([]byte("[appliance]\nlisten = 127.0.0.1:0\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data, DefaultConfig("/data"))
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Fatalf("error is not a *ConfigError with problems: %v", err)
			}
			return
		}
		again := cfg
		if err := again.Validate(); err != nil {
			t.Fatalf("accepted configuration fails validation: %v", err)
		}
		if again != cfg {
			t.Fatalf("validation is not idempotent:\n%+v\n%+v", cfg, again)
		}
	})
}
