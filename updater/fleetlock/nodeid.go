package fleetlock

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// AppID is sealift's FleetLock application id: the fixed 128-bit value
// that NodeID derives the node's id with, so the id identifies the node
// for FleetLock without disclosing /etc/machine-id itself (machine-id(5)
// asks applications not to publish it).
const AppID = "d2ebfc52f8cc4dc0bce66de13cd968a3"

// DefaultMachineIDPath is where systemd keeps the machine id.
const DefaultMachineIDPath = "/etc/machine-id"

// ErrNoMachineID means the machine id file is missing, empty or not an id
// (e.g. "uninitialized" on a first boot).
var ErrNoMachineID = errors.New("no machine id")

// NodeID returns this node's FleetLock id: the app-specific id of the
// machine id in path (DefaultMachineIDPath when empty) for AppID. It is
// what `systemd-id128 machine-id --app-specific=<AppID>` prints: stable
// for the life of the installation, distinct per machine, and not the
// machine id.
func NodeID(path string) (string, error) {
	if path == "" {
		path = DefaultMachineIDPath
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoMachineID, err)
	}
	id, err := AppSpecificID(strings.TrimSpace(string(b)), AppID)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return id, nil
}

// AppSpecificID derives an application-specific id from a machine id the
// way systemd's sd_id128_get_machine_app_specific() does: HMAC-SHA256
// keyed with the 16 machine id bytes over the 16 app id bytes, the first
// 16 bytes of the result marked as a version 4 (random) UUID, written as
// 32 lowercase hex digits. Both ids are 32 hex digits (dashes allowed).
func AppSpecificID(machineID, appID string) (string, error) {
	m, err := parseID128(machineID)
	if err != nil {
		return "", fmt.Errorf("%w: machine id %q: %w", ErrNoMachineID, machineID, err)
	}
	a, err := parseID128(appID)
	if err != nil {
		return "", fmt.Errorf("app id %q: %w", appID, err)
	}
	mac := hmac.New(sha256.New, m)
	mac.Write(a)
	sum := mac.Sum(nil)[:16]
	sum[6] = sum[6]&0x0f | 0x40 // version 4
	sum[8] = sum[8]&0x3f | 0x80 // RFC 4122 variant
	return hex.EncodeToString(sum), nil
}

func parseID128(s string) ([]byte, error) {
	h := strings.ReplaceAll(s, "-", "")
	if len(h) != 32 {
		return nil, errors.New("want 32 hex digits")
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return nil, errors.New("want 32 hex digits")
	}
	for _, c := range b {
		if c != 0 {
			return b, nil
		}
	}
	return nil, errors.New("all zero")
}
