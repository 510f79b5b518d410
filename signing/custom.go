package signing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// normalizeCustom checks that custom target metadata can be signed and
// returns it compacted (nil stays nil). TUF signs the OLPC canonical JSON
// form, which has no floating point numbers: a rollout fraction must be
// written as an integer (per mille, percent, seconds...), not 0.05.
func normalizeCustom(custom json.RawMessage) (json.RawMessage, error) {
	if len(bytes.TrimSpace(custom)) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(custom))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCustom, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: trailing data after the JSON value", ErrBadCustom)
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, fmt.Errorf("%w: not a JSON object", ErrBadCustom)
	}
	if err := checkIntegers(v); err != nil {
		return nil, err
	}
	return compactJSON(custom), nil
}

func checkIntegers(v any) error {
	switch v := v.(type) {
	case json.Number:
		if _, err := strconv.ParseInt(string(v), 10, 64); err != nil {
			return fmt.Errorf("%w: number %s is not a 64-bit integer (canonical JSON has no fractions or exponents)", ErrBadCustom, v)
		}
	case map[string]any:
		for _, e := range v {
			if err := checkIntegers(e); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range v {
			if err := checkIntegers(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// compactJSON returns raw without insignificant whitespace; metadata files
// are indented, and callers should not see that indentation in Custom.
func compactJSON(raw []byte) json.RawMessage {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return append(json.RawMessage(nil), raw...)
	}
	return b.Bytes()
}
