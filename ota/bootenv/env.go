// Package bootenv reads and writes the U-Boot environment the way U-Boot and Debian's
// libubootenv (fw_printenv/fw_setenv 0.3.2) do, byte for byte: a CRC32 over the data area,
// then "name=value\0" pairs sorted by name, a terminating NUL, zero padding. The redundant
// layout has two copies with a flags byte after the CRC; a save writes the copy that is not in
// use with the next flag value, so a power cut leaves the previous copy in force.
//
// The device access sits behind Device (a file or block device in production, a Mem in tests).
package bootenv

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Env is a set of U-Boot environment variables. The zero value is not usable; call New.
type Env struct {
	vars  map[string]string
	attrs map[string]attr // from the .flags variable (libubootenv keeps and re-emits them)
}

// attr is a variable's .flags entry: a type and an access letter.
type attr struct {
	typ    byte // 's', 'd', 'x', 'b', 'i', 'm' as parsed; 0 for none
	access byte // 'a', 'r', 'o', 'c'; 0 for none
}

// New returns an empty environment.
func New() *Env {
	return &Env{vars: map[string]string{}, attrs: map[string]attr{}}
}

// FromMap returns an environment holding vars. It fails on a name or value U-Boot cannot store.
func FromMap(vars map[string]string) (*Env, error) {
	e := New()
	for k, v := range vars {
		if err := e.Set(k, v); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// ErrReadOnly is returned when .flags marks a variable read-only or write-once.
var ErrReadOnly = errors.New("variable is read-only (.flags)")

// Get returns the value of name.
func (e *Env) Get(name string) (string, bool) {
	v, ok := e.vars[name]
	return v, ok
}

// Set sets name to value. An empty value deletes the variable, as fw_setenv does.
func (e *Env) Set(name, value string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if strings.IndexByte(value, 0) >= 0 {
		return fmt.Errorf("bootenv: variable %q: value contains a NUL byte", name)
	}
	if a, ok := e.attrs[name]; ok {
		if _, exists := e.vars[name]; exists && (a.access == 'r' || a.access == 'o') {
			return fmt.Errorf("bootenv: variable %q: %w", name, ErrReadOnly)
		}
	}
	if value == "" {
		delete(e.vars, name)
		return nil
	}
	e.vars[name] = value
	return nil
}

// Delete removes name.
func (e *Env) Delete(name string) error { return e.Set(name, "") }

// Names returns the variable names in the order they are stored (byte order, like strcmp).
func (e *Env) Names() []string {
	names := make([]string, 0, len(e.vars))
	for k := range e.vars {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// Map returns a copy of the variables.
func (e *Env) Map() map[string]string {
	m := make(map[string]string, len(e.vars))
	for k, v := range e.vars {
		m[k] = v
	}
	return m
}

// Clone returns a deep copy.
func (e *Env) Clone() *Env {
	c := New()
	for k, v := range e.vars {
		c.vars[k] = v
	}
	for k, v := range e.attrs {
		c.attrs[k] = v
	}
	return c
}

func (e *Env) equal(o *Env) bool {
	if len(e.vars) != len(o.vars) || len(e.attrs) != len(o.attrs) {
		return false
	}
	for k, v := range e.vars {
		if ov, ok := o.vars[k]; !ok || ov != v {
			return false
		}
	}
	for k, v := range e.attrs {
		if o.attrs[k] != v {
			return false
		}
	}
	return true
}

func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("bootenv: empty variable name")
	case strings.ContainsAny(name, "=\x00"):
		return fmt.Errorf("bootenv: variable name %q contains '=' or NUL", name)
	case name == ".flags":
		return errors.New("bootenv: .flags is managed by the library")
	}
	return nil
}

// marshalData writes the data area (without CRC or flags) of exactly n bytes.
func (e *Env) marshalData(n int) ([]byte, error) {
	buf := make([]byte, 0, n)
	for _, k := range e.Names() {
		buf = append(buf, k...)
		buf = append(buf, '=')
		buf = append(buf, e.vars[k]...)
		buf = append(buf, 0)
	}
	// libubootenv re-emits .flags for the variables that still exist, in stored order.
	var flags []string
	for _, k := range e.Names() {
		if a, ok := e.attrs[k]; ok && (a.typ != 0 || a.access != 0) {
			flags = append(flags, k+":"+string(typeLetter(a.typ))+string(accessLetter(a.access)))
		}
	}
	if len(flags) > 0 {
		buf = append(buf, ".flags="+strings.Join(flags, ",")...)
		buf = append(buf, 0)
	}
	buf = append(buf, 0)
	if len(buf) > n {
		return nil, fmt.Errorf("bootenv: environment needs %d bytes; the area holds %d", len(buf), n)
	}
	return buf[:n], nil
}

// typeLetter mirrors libubootenv's attr_tostring (which writes 'h' for a hex variable).
func typeLetter(t byte) byte {
	switch t {
	case 'd', 'b', 'i', 'm':
		return t
	case 'x':
		return 'h'
	}
	return 's'
}

func accessLetter(a byte) byte {
	switch a {
	case 'r', 'o', 'c':
		return a
	}
	return 'a'
}

// parseData reads a data area as libubootenv does: NUL-terminated "name=value" strings up to
// an empty string; strings without '=' are skipped; a later duplicate wins.
func parseData(data []byte) (*Env, error) {
	e := New()
	var flags string
	haveFlags := false
	i := 0
	for i < len(data) && data[i] != 0 {
		end := i
		for end < len(data) && data[end] != 0 {
			end++
		}
		if end == len(data) {
			return nil, fmt.Errorf("bootenv: variable at offset %d is not NUL-terminated", i)
		}
		line := string(data[i:end])
		i = end + 1
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if name == ".flags" {
			flags, haveFlags = value, true
			continue
		}
		if name == "" {
			continue // libubootenv would store it, but U-Boot cannot address it; drop it
		}
		e.vars[name] = value // an empty value is kept, as libubootenv keeps it
	}
	if haveFlags {
		e.parseFlags(flags)
	}
	return e, nil
}

// parseFlags reads ".flags=name:ta,name:ta" the way libubootenv does: the name runs to the
// next ':', the letters to the next ','; entries for variables that do not exist and unknown
// letters are ignored.
func (e *Env) parseFlags(s string) {
	for s != "" {
		name, rest, ok := strings.Cut(s, ":")
		if !ok {
			return
		}
		letters, next, _ := strings.Cut(rest, ",")
		s = next
		if _, exists := e.vars[name]; !exists {
			continue
		}
		var a attr
		for i := 0; i < len(letters); i++ {
			switch c := letters[i]; c {
			case 's', 'd', 'x', 'b', 'i', 'm':
				a.typ = c
			case 'a', 'r', 'o', 'c':
				a.access = c
			}
		}
		if a.typ == 's' {
			a.typ = 0 // TYPE_ATTR_STRING is libubootenv's zero value
		}
		if a.access == 'a' {
			a.access = 0
		}
		e.attrs[name] = a
	}
}
