// Package grubenv is sealift's backend for upstream GRUB: boot flags live in
// a GRUB environment block on the ESP (RAUC-style variables ORDER, A_OK,
// A_TRY, B_OK, B_TRY) and a generated grub.cfg walks them at every boot,
// spending one try of a slot that has not yet booted successfully.
//
// Upstream GRUB has no gptprio command and no arithmetic, so everything the
// bootloader decides must be expressible with load_env, save_env, string
// comparisons and file tests; GrubConfig writes exactly that, and Simulate
// replays the same script on the environment in Go.
package grubenv

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Format of the block, as grub-editenv and GRUB's load_env/save_env use it.
const (
	// BlockSize is the only size sealift reads or writes. GRUB's save_env
	// rewrites the file's sectors in place and cannot grow it, so the whole
	// block is always written, never a prefix.
	BlockSize = 1024
	// Signature is the first line of every block.
	Signature = "# GRUB Environment Block\n"
)

// Errors callers (and tests) branch on; all are wrapped with detail.
var (
	ErrSize      = errors.New("grubenv: block is not 1024 bytes")
	ErrSignature = errors.New("grubenv: missing \"# GRUB Environment Block\" signature")
	ErrMalformed = errors.New("grubenv: malformed block")
	ErrNoSpace   = errors.New("grubenv: variables do not fit in the 1024-byte block")
	ErrName      = errors.New("grubenv: invalid variable name")
)

// line is one line of the block after the signature: a comment (Debian's
// grub-editenv adds a "# WARNING" line) or a variable. raw is the line as
// stored, without its newline, so lines sealift does not change are written
// back byte for byte, even if another tool escaped them unusually.
type line struct {
	comment bool
	name    string
	value   string
	raw     string
}

// Env is a parsed environment block: its lines in file order. The zero
// value is an empty block.
type Env struct {
	lines []line
}

// NewEnv returns an empty environment.
func NewEnv() *Env { return &Env{} }

// Parse reads a block as GRUB does: the signature, then "name=value" lines
// in which a backslash escapes the next byte, comment lines starting with
// '#', and '#' padding up to 1024 bytes. Anything GRUB would silently stop
// reading at (a line without '=', an unterminated line, bytes after the
// padding starts) is an error here, so a damaged block is never mistaken for
// one with fewer variables.
func Parse(b []byte) (*Env, error) {
	if len(b) != BlockSize {
		return nil, fmt.Errorf("%w (got %d bytes)", ErrSize, len(b))
	}
	if !bytes.HasPrefix(b, []byte(Signature)) {
		return nil, ErrSignature
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		// GRUB works on C strings; a NUL would cut a value short.
		return nil, fmt.Errorf("%w: NUL byte at offset %d", ErrMalformed, i)
	}
	e := &Env{}
	p := len(Signature)
	for p < len(b) {
		if b[p] == '#' {
			nl := bytes.IndexByte(b[p:], '\n')
			if nl < 0 {
				// The padding: only '#' may follow, or grub-editenv's
				// writer (which looks for the last newline before the
				// padding) would treat the block as broken.
				if k := bytes.IndexFunc(b[p:], func(r rune) bool { return r != '#' }); k >= 0 {
					return nil, fmt.Errorf("%w: unexpected byte %q in padding at offset %d", ErrMalformed, b[p+k], p+k)
				}
				break
			}
			e.lines = append(e.lines, line{comment: true, raw: string(b[p : p+nl])})
			p += nl + 1
			continue
		}
		eq := -1
		for q := p; q < len(b) && b[q] != '\n'; q++ {
			if b[q] == '=' {
				eq = q
				break
			}
		}
		if eq < 0 {
			return nil, fmt.Errorf("%w: line at offset %d has no '='", ErrMalformed, p)
		}
		if eq == p {
			return nil, fmt.Errorf("%w: empty variable name at offset %d", ErrMalformed, p)
		}
		q := eq + 1
		for q < len(b) && b[q] != '\n' {
			if b[q] == '\\' {
				q++ // the escaped byte, which may be a newline
			}
			q++
		}
		if q >= len(b) {
			return nil, fmt.Errorf("%w: variable %q at offset %d is not terminated by a newline", ErrMalformed, b[p:eq], p)
		}
		e.lines = append(e.lines, line{
			name:  string(b[p:eq]),
			value: unescape(b[eq+1 : q]),
			raw:   string(b[p:q]),
		})
		p = q + 1
	}
	return e, nil
}

// Encode renders the block: signature, lines, '#' padding to 1024 bytes.
// It fails rather than truncate when the lines do not fit.
func (e *Env) Encode() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(Signature)
	for _, l := range e.lines {
		buf.WriteString(l.raw)
		buf.WriteByte('\n')
	}
	if buf.Len() > BlockSize {
		return nil, fmt.Errorf("%w (%d bytes needed)", ErrNoSpace, buf.Len())
	}
	buf.Write(bytes.Repeat([]byte{'#'}, BlockSize-buf.Len()))
	return buf.Bytes(), nil
}

// Get returns a variable's value. With duplicate names the last one wins,
// because GRUB's load_env sets them in file order.
func (e *Env) Get(name string) (string, bool) {
	for i := len(e.lines) - 1; i >= 0; i-- {
		if l := e.lines[i]; !l.comment && l.name == name {
			return l.value, true
		}
	}
	return "", false
}

// Set changes a variable in place, or appends it after the last line, as
// grub-editenv set does, so other tools' variables keep their order.
// Later duplicates of the name are dropped so Get and GRUB agree.
func (e *Env) Set(name, value string) error {
	if err := validName(name); err != nil {
		return err
	}
	if strings.IndexByte(value, 0) >= 0 {
		return fmt.Errorf("%w: value of %q contains a NUL byte", ErrMalformed, name)
	}
	nl := line{name: name, value: value, raw: name + "=" + escape(value)}
	found := false
	out := e.lines[:0:0]
	for _, l := range e.lines {
		if !l.comment && l.name == name {
			if !found {
				out = append(out, nl)
				found = true
			}
			continue
		}
		out = append(out, l)
	}
	if !found {
		out = append(out, nl)
	}
	e.lines = out
	return nil
}

// Unset removes every occurrence of a variable.
func (e *Env) Unset(name string) {
	out := e.lines[:0:0]
	for _, l := range e.lines {
		if l.comment || l.name != name {
			out = append(out, l)
		}
	}
	e.lines = out
}

// Names lists the variables in file order (duplicates once, at their first
// position).
func (e *Env) Names() []string {
	var names []string
	seen := map[string]bool{}
	for _, l := range e.lines {
		if !l.comment && !seen[l.name] {
			seen[l.name] = true
			names = append(names, l.name)
		}
	}
	return names
}

func validName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrName)
	case strings.ContainsAny(name, "=\n\x00"):
		return fmt.Errorf("%w: %q contains '=', newline or NUL", ErrName, name)
	case name[0] == '#':
		// A line starting with '#' is a comment to GRUB.
		return fmt.Errorf("%w: %q starts with '#'", ErrName, name)
	}
	return nil
}

// escape is what grub-editenv writes: a backslash before every backslash
// and newline, nothing else.
func escape(v string) string {
	if !strings.ContainsAny(v, "\\\n") {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' || v[i] == '\n' {
			b.WriteByte('\\')
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// unescape is what GRUB's reader does: a backslash stands for the byte
// after it, whatever that byte is.
func unescape(raw []byte) string {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw)
	}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		if raw[i] == '\\' && i+1 < len(raw) {
			i++
		}
		b.WriteByte(raw[i])
	}
	return b.String()
}
