package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"

	"github.com/malleable-cloud/malleable/appliance"
	"github.com/malleable-cloud/malleable/appliance/inicfg"
)

// version is set at link time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

// defaultDataDir is where state lives when neither flags nor config say:
// /var/lib/malleable for root, else the user's state directory.
func defaultDataDir(e env) string {
	if e.uid == 0 {
		return "/var/lib/malleable"
	}
	if d := e.getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "malleable")
	}
	if h := e.getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "state", "malleable")
	}
	return "malleable-data"
}

// loadConfig reads the config file at path (embedded defaults when path is
// empty) and applies overrides before validating. Every problem is a usage
// error, exit 2.
func loadConfig(e env, path string, override func(*appliance.Config)) (appliance.Config, error) {
	defaults := appliance.DefaultConfig(defaultDataDir(e))
	// M2 storage runs tgtd, which needs root: without root it is off unless
	// a configuration turns it on.
	defaults.M2.Enabled = e.uid == 0
	var data []byte
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return defaults, usagef("read config: %v", err)
		}
		data = b
	}
	cfg, err := appliance.ParseConfig(data, defaults)
	if err != nil {
		return cfg, &usageError{fmt.Sprintf("%s: %v", displayPath(path), err)}
	}
	if override != nil {
		override(&cfg)
		if err := cfg.Validate(); err != nil {
			return cfg, &usageError{fmt.Sprintf("%s with flags: %v", displayPath(path), err)}
		}
	}
	return cfg, nil
}

func displayPath(p string) string {
	if p == "" {
		return "embedded defaults"
	}
	return p
}

func newLogger(e env, cfg appliance.Config) *slog.Logger {
	level, _ := inicfg.ParseLogLevel(cfg.Appliance.LogLevel) // validated already
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Appliance.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(e.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(e.stderr, opts))
}

func cmdServe(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e.stderr, "serve", "serve [--config FILE] [flags]")
	configPath := fs.String("config", e.getenv("MALLEABLE_CONFIG"), "appliance.ini to read (env MALLEABLE_CONFIG); embedded defaults if empty")
	listen := fs.String("listen", "", "admin API address host:port, overriding [appliance] listen")
	dataDir := fs.String("data-dir", "", "state directory, overriding [appliance] data_dir")
	logLevel := fs.String("log-level", "", "debug, info, warn or error, overriding [appliance] log_level")
	logFormat := fs.String("log-format", "", "text or json, overriding [appliance] log_format")
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("serve takes no arguments, got %q", pos)
	}
	cfg, err := loadConfig(e, *configPath, func(c *appliance.Config) {
		if *listen != "" {
			c.Appliance.Listen = *listen
		}
		if *dataDir != "" {
			c.SetDataDir(*dataDir)
		}
		if *logLevel != "" {
			c.Appliance.LogLevel = *logLevel
		}
		if *logFormat != "" {
			c.Appliance.LogFormat = *logFormat
		}
	})
	if err != nil {
		return err
	}
	log := newLogger(e, cfg)
	log.Info("starting malleable", "version", version, "config", displayPath(*configPath), "data_dir", cfg.Appliance.DataDir)
	opts := appliance.RunOptions{Ready: func(addr string) {
		fmt.Fprintf(e.stderr, "malleable: admin API on http://%s, token in %s\n", addr, cfg.Appliance.AdminTokenFile)
	}}
	opts.Hook = faultInjection(e, log)
	return appliance.Run(ctx, cfg, log, opts)
}

func cmdVersion(e env, args []string) error {
	fs := newFlagSet(e.stderr, "version", "version [-o json]")
	out := fs.String("o", "text", "output format: text or json")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	info := map[string]string{"version": version}
	if bi, ok := debug.ReadBuildInfo(); ok {
		info["go"] = bi.GoVersion
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision", "vcs.time", "vcs.modified":
				info[s.Key] = s.Value
			}
		}
	}
	if *out == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	fmt.Fprintf(e.stdout, "malleable %s (%s", info["version"], info["go"])
	if r := info["vcs.revision"]; r != "" {
		fmt.Fprintf(e.stdout, ", commit %.12s", r)
		if info["vcs.modified"] == "true" {
			fmt.Fprint(e.stdout, "+dirty")
		}
	}
	fmt.Fprintln(e.stdout, ")")
	return nil
}

func cmdConfig(e env, args []string) error {
	if len(args) == 0 {
		return usagef("config: want 'check FILE' or 'example'")
	}
	switch args[0] {
	case "example":
		_, err := e.stdout.Write(appliance.ExampleINI)
		return err
	case "check":
		fs := newFlagSet(e.stderr, "config check", "config check FILE")
		pos, err := parseFlags(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("config check: want exactly one FILE")
		}
		cfg, err := loadConfig(e, pos[0], nil)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s: OK (admin API %s, data in %s)\n", pos[0], cfg.Appliance.Listen, cfg.Appliance.DataDir)
		return nil
	}
	return usagef("config: unknown subcommand %q (want check or example)", args[0])
}

// cmdM2 is `malleable m2 serve`: the M2 storage backend alone.
func cmdM2(ctx context.Context, e env, args []string) error {
	const m2Usage = "Usage: malleable m2 serve [--config FILE] [flags]\n\nRuns the M2 storage backend alone; 'malleable m2 serve --help' lists its flags.\n"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprint(e.stdout, m2Usage)
		return nil
	}
	if len(args) == 0 || args[0] != "serve" {
		fmt.Fprint(e.stderr, m2Usage)
		return usagef("m2: the only subcommand is 'm2 serve'")
	}
	fs := newFlagSet(e.stderr, "m2 serve", "m2 serve [--config FILE] [flags]")
	configPath := fs.String("config", e.getenv("MALLEABLE_CONFIG"), "appliance.ini to read (env MALLEABLE_CONFIG); embedded defaults if empty")
	listen := fs.String("listen", "", "M2 API address host:port, overriding [m2] listen")
	dataDir := fs.String("data-dir", "", "state directory, overriding [appliance] data_dir")
	if pos, err := parseFlags(fs, args[1:]); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("m2 serve takes no arguments, got %q", pos)
	}
	cfg, err := loadConfig(e, *configPath, func(c *appliance.Config) {
		if *listen != "" {
			c.M2.Listen = *listen
		}
		if *dataDir != "" {
			c.SetDataDir(*dataDir)
		}
	})
	if err != nil {
		return err
	}
	log := newLogger(e, cfg).With("role", "m2")
	return appliance.RunM2(ctx, cfg, log, func(addr string) {
		fmt.Fprintf(e.stderr, "malleable: M2 API on http://%s/m2/v1, token in %s\n", addr, cfg.Appliance.AdminTokenFile)
	})
}
