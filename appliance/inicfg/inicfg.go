// Package inicfg decodes strict INI configuration files into structs: one
// struct field per section, one per key. Unknown sections and keys and
// values of the wrong type are problems, all reported at once with their
// section.key, so an operator fixes a file in one go. Every role of the
// binary (appliance, smart-proxy) configures itself through it.
package inicfg

import (
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"time"

	"gopkg.in/ini.v1"
)

// Error lists every problem found in a configuration. Each problem
// names its section.key.
type Error struct {
	Problems []string
}

// Error lists every problem, one per line.
func (e *Error) Error() string {
	return fmt.Sprintf("invalid configuration (%d problem(s)):\n  %s", len(e.Problems), strings.Join(e.Problems, "\n  "))
}

// Decode decodes INI data into dst, a pointer to a struct whose fields
// are sections (tag `ini:"name"`) of keys (tag `ini:"key"`), strictly:
// unknown sections and keys and values of the wrong type are problems,
// returned all together as "section.key: why". Well-formed keys are decoded
// even when others are not. Keys absent from data keep dst's values.
func Decode(data []byte, dst any) []string {
	f, err := ini.LoadSources(ini.LoadOptions{IgnoreInlineComment: true}, data)
	if err != nil {
		return []string{"syntax: " + err.Error()}
	}
	// Copy the well-formed keys into a clean file, so one bad key neither
	// hides the others nor keeps the rest of its section from being checked.
	clean := ini.Empty()
	var problems []string
	root := reflect.ValueOf(dst).Elem()
	sections := sectionFields(root.Type())
	for _, sec := range f.Sections() {
		name := sec.Name()
		if name == ini.DefaultSection {
			for _, k := range sec.Keys() {
				problems = append(problems, fmt.Sprintf("%s: key outside any section", k.Name()))
			}
			continue
		}
		field, ok := sections[name]
		if !ok {
			problems = append(problems, fmt.Sprintf("[%s]: unknown section (known: %s)", name, strings.Join(sortedKeys(sections), ", ")))
			continue
		}
		keys := keyTypes(field.Type)
		for _, k := range sec.Keys() {
			typ, ok := keys[k.Name()]
			if !ok {
				problems = append(problems, fmt.Sprintf("%s.%s: unknown key (known: %s)", name, k.Name(), strings.Join(sortedKeys(keys), ", ")))
				continue
			}
			if msg := checkType(k, typ); msg != "" {
				problems = append(problems, fmt.Sprintf("%s.%s: %s", name, k.Name(), msg))
				continue
			}
			if _, err := clean.Section(name).NewKey(k.Name(), k.Value()); err != nil {
				problems = append(problems, fmt.Sprintf("%s.%s: %v", name, k.Name(), err))
			}
		}
	}
	for _, name := range sortedKeys(sections) {
		field := sections[name]
		fdst := root.FieldByIndex(field.Index).Addr().Interface()
		if err := clean.Section(name).StrictMapTo(fdst); err != nil {
			problems = append(problems, fmt.Sprintf("[%s]: %v", name, err))
		}
	}
	return problems
}

// ParseLogLevel parses debug, info, warn or error.
func ParseLogLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not debug, info, warn or error", s)
}

// sectionFields maps each INI section name to its field of Config.
func sectionFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		out[f.Tag.Get("ini")] = f
	}
	return out
}

// keyTypes maps each INI key of a section struct to its Go type.
func keyTypes(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		out[strings.Split(f.Tag.Get("ini"), ",")[0]] = f.Type
	}
	return out
}

var durationType = reflect.TypeFor[time.Duration]()

// checkType returns why k's value cannot become typ, or "".
func checkType(k *ini.Key, typ reflect.Type) string {
	var err error
	switch {
	case typ == durationType:
		var d time.Duration
		if d, err = k.Duration(); err == nil && d < 0 {
			return fmt.Sprintf("%q is negative", k.String())
		}
		if err != nil {
			return fmt.Sprintf("%q is not a duration (for example 90s, 15m, 168h)", k.String())
		}
	case typ.Kind() == reflect.Int:
		if _, err = k.Int(); err != nil {
			return fmt.Sprintf("%q is not an integer", k.String())
		}
	case typ.Kind() == reflect.Bool:
		if _, err = k.Bool(); err != nil {
			return fmt.Sprintf("%q is not true or false", k.String())
		}
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
