package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/malleable-cloud/malleable/appliance/inicfg"
	"github.com/malleable-cloud/malleable/appliance/smartproxy"
)

const smartProxyUsage = `smart-proxy [--config FILE] [flags]      run one tenant's Foreman smart-proxy
       malleable smart-proxy health [--config FILE] [flags]  exit 0 if the local proxy answers and its broker takes its credential
       malleable smart-proxy init --dir DIR --tenant NAME [flags]  write a ready config, token, password and certificates
       malleable smart-proxy config check FILE | example`

// proxyFlags are the flags that override the smart-proxy's INI.
type proxyFlags struct {
	config                                             *string
	httpsListen, httpListen, bootListen, bootURL       *string
	brokerURL, tokenFile, brokerCA                     *string
	sslCertificate, sslPrivateKey, sslCA, trustedHosts *string
	bmcUsername, bmcPasswordFile                       *string
	logLevel, logFormat                                *string
}

func newProxyFlags(fs *flag.FlagSet, e env) proxyFlags {
	return proxyFlags{
		config:          fs.String("config", e.getenv("MALLEABLE_SMART_PROXY_CONFIG"), "smart-proxy INI to read (env MALLEABLE_SMART_PROXY_CONFIG); defaults and flags only if empty"),
		httpsListen:     fs.String("https-listen", "", "HTTPS address for Foreman (host:port, or off), overriding [smart_proxy] https_listen"),
		httpListen:      fs.String("http-listen", "", "plain-HTTP address for every route, overriding [smart_proxy] http_listen"),
		bootListen:      fs.String("boot-listen", "", "plain-HTTP address serving only boot scripts, overriding [m2] boot_listen"),
		bootURL:         fs.String("boot-url", "", "base URL nodes reach the boot listener at, overriding [m2] boot_url"),
		brokerURL:       fs.String("broker-url", "", "the appliance's URL, overriding [broker] url"),
		tokenFile:       fs.String("token-file", "", "file holding the tenant's broker token, overriding [broker] token_file"),
		brokerCA:        fs.String("broker-ca-file", "", "CA of the appliance's certificate, overriding [broker] ca_file"),
		sslCertificate:  fs.String("ssl-certificate", "", "server certificate, overriding [smart_proxy] ssl_certificate"),
		sslPrivateKey:   fs.String("ssl-private-key", "", "server key, overriding [smart_proxy] ssl_private_key"),
		sslCA:           fs.String("ssl-ca-file", "", "CA of client certificates, overriding [smart_proxy] ssl_ca_file"),
		trustedHosts:    fs.String("trusted-hosts", "", "comma-separated client certificate CNs, overriding [smart_proxy] trusted_hosts"),
		bmcUsername:     fs.String("bmc-username", "", "the tenant's virtual BMC username, overriding [bmc] username"),
		bmcPasswordFile: fs.String("bmc-password-file", "", "file holding the virtual BMC password, overriding [bmc] password_file"),
		logLevel:        fs.String("log-level", "", "debug, info, warn or error, overriding [smart_proxy] log_level"),
		logFormat:       fs.String("log-format", "", "text or json, overriding [smart_proxy] log_format"),
	}
}

// load reads the INI named by --config over the defaults, applies the
// flags, and validates once, reporting every problem as a usage error.
func (f proxyFlags) load() (smartproxy.Config, error) {
	cfg := smartproxy.DefaultConfig()
	var problems []string
	if *f.config != "" {
		data, err := os.ReadFile(*f.config)
		if err != nil {
			return cfg, usagef("read config: %v", err)
		}
		problems = inicfg.Decode(data, &cfg)
	}
	for _, o := range []struct {
		flag *string
		dst  *string
	}{
		{f.httpsListen, &cfg.Proxy.HTTPSListen}, {f.httpListen, &cfg.Proxy.HTTPListen},
		{f.bootListen, &cfg.M2.BootListen}, {f.bootURL, &cfg.M2.BootURL},
		{f.brokerURL, &cfg.Broker.URL}, {f.tokenFile, &cfg.Broker.TokenFile}, {f.brokerCA, &cfg.Broker.CAFile},
		{f.sslCertificate, &cfg.Proxy.SSLCertificate}, {f.sslPrivateKey, &cfg.Proxy.SSLPrivateKey},
		{f.sslCA, &cfg.Proxy.SSLCAFile}, {f.trustedHosts, &cfg.Proxy.TrustedHosts},
		{f.bmcUsername, &cfg.BMC.Username}, {f.bmcPasswordFile, &cfg.BMC.PasswordFile},
		{f.logLevel, &cfg.Proxy.LogLevel}, {f.logFormat, &cfg.Proxy.LogFormat},
	} {
		if *o.flag != "" {
			*o.dst = *o.flag
		}
	}
	var ce *inicfg.Error
	if err := cfg.Validate(); errors.As(err, &ce) {
		problems = append(problems, ce.Problems...)
	}
	if len(problems) > 0 {
		where := "smart-proxy flags"
		if *f.config != "" {
			where = *f.config + " with flags"
		}
		return cfg, &usageError{fmt.Sprintf("%s: %v", where, &inicfg.Error{Problems: problems})}
	}
	return cfg, nil
}

func proxyLogger(e env, cfg smartproxy.Config) *slog.Logger {
	level, _ := inicfg.ParseLogLevel(cfg.Proxy.LogLevel) // validated already
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Proxy.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(e.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(e.stderr, opts))
}

// cmdSmartProxy is `malleable smart-proxy`: one tenant's Foreman
// smart-proxy, which asks the appliance's broker for every decision.
func cmdSmartProxy(ctx context.Context, e env, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "health":
			return cmdSmartProxyHealth(ctx, e, args[1:])
		case "config":
			return cmdSmartProxyConfig(e, args[1:])
		case "init":
			return cmdSmartProxyInit(ctx, e, args[1:])
		}
	}
	fs := newFlagSet(e.stderr, "smart-proxy", smartProxyUsage)
	f := newProxyFlags(fs, e)
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("smart-proxy: unexpected arguments %q (want health, config, or flags)", pos)
	}
	cfg, err := f.load()
	if err != nil {
		return err
	}
	log := proxyLogger(e, cfg).With("role", "smart-proxy")
	c, err := smartproxy.OpenClient(cfg.Broker)
	if err != nil {
		return err
	}
	srv, err := smartproxy.New(cfg, smartproxy.Options{Logger: log, Broker: c.Broker, Storage: c.M2, Version: version})
	if err != nil {
		return err
	}
	log.Info("starting smart-proxy", "version", version, "config", *f.config, "broker", cfg.Broker.URL)
	return srv.Run(ctx, func(a smartproxy.Addrs) {
		var on []string
		for _, l := range []struct{ scheme, addr string }{{"https", a.HTTPS}, {"http", a.HTTP}, {"boot http", a.Boot}} {
			if l.addr != "" {
				on = append(on, l.scheme+" "+l.addr)
			}
		}
		fmt.Fprintf(e.stderr, "malleable: smart-proxy listening (%s), broker %s\n", strings.Join(on, ", "), cfg.Broker.URL)
	})
}

// cmdSmartProxyHealth is the container health check. Any failure,
// configuration included, exits 1 with the reason.
func cmdSmartProxyHealth(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e.stderr, "smart-proxy health", smartProxyUsage)
	f := newProxyFlags(fs, e)
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("smart-proxy health takes no arguments, got %q", pos)
	}
	cfg, err := f.load()
	if err != nil {
		return fmt.Errorf("smart-proxy unhealthy: %s", err.Error())
	}
	c, err := smartproxy.OpenClient(cfg.Broker)
	if err != nil {
		return fmt.Errorf("smart-proxy unhealthy: %w", err)
	}
	msg, err := smartproxy.Health(ctx, cfg, c.Broker)
	if err != nil {
		return fmt.Errorf("smart-proxy unhealthy: %w", err)
	}
	fmt.Fprintln(e.stdout, "ok:", msg)
	return nil
}

func cmdSmartProxyConfig(e env, args []string) error {
	if len(args) == 0 {
		return usagef("smart-proxy config: want 'check FILE' or 'example'")
	}
	switch args[0] {
	case "example":
		_, err := e.stdout.Write(smartproxy.ExampleINI)
		return err
	case "check":
		if len(args) != 2 {
			return usagef("smart-proxy config check: want exactly one FILE")
		}
		data, err := os.ReadFile(args[1])
		if err != nil {
			return usagef("read config: %v", err)
		}
		cfg, err := smartproxy.ParseConfig(data, smartproxy.DefaultConfig())
		if err != nil {
			return &usageError{fmt.Sprintf("%s: %v\n(fill these in, or let `malleable smart-proxy init --dir DIR --tenant NAME` write a ready file)", args[1], err)}
		}
		if problems := smartproxy.CheckFiles(cfg); len(problems) > 0 {
			return &usageError{fmt.Sprintf("%s: %v", args[1], &inicfg.Error{Problems: problems})}
		}
		fmt.Fprintf(e.stdout, "%s: OK (HTTPS %s, broker %s, trusted %s)\n", args[1], orOff(cfg.Proxy.HTTPSListen), cfg.Broker.URL, cfg.Proxy.TrustedHosts)
		return nil
	}
	return usagef("smart-proxy config: unknown subcommand %q (want check or example)", args[0])
}

func orOff(s string) string {
	if s == "" {
		return "off"
	}
	return s
}
