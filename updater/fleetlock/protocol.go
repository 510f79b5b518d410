package fleetlock

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// Protocol constants, from Zincati's FleetLock specification.
const (
	// ProtocolHeader must be "true" on every request; it guards against
	// requests that reach the server by accident (e.g. a redirect).
	ProtocolHeader = "fleet-lock-protocol"
	// PathPreReboot takes a reboot slot.
	PathPreReboot = "/v1/pre-reboot"
	// PathSteadyState releases a reboot slot.
	PathSteadyState = "/v1/steady-state"
	// DefaultGroup is the group Zincati uses unless configured otherwise.
	DefaultGroup = "default"
)

// Error kinds in the {"kind","value"} body of a failed request. The set is
// small and fixed, as the protocol asks (clients use kinds as metric
// labels). KindSemaphoreFull is the kind Zincati's specification uses as
// its example for "no slot free".
const (
	KindSemaphoreFull   = "failed_lock_semaphore_full" // 409: all slots of the group are held
	KindBadMethod       = "bad_method"                 // 405: not POST (GET for the admin status)
	KindBadHeader       = "bad_protocol_header"        // 400: fleet-lock-protocol is not "true"
	KindBadBody         = "bad_request_body"           // 400, 413, 415: not the JSON body the endpoint takes
	KindBadClientParams = "bad_client_params"          // 400: id or group missing or invalid
	KindStoreError      = "store_error"                // 503: the lock store failed or did not answer; nothing changed that the client may rely on
	KindNotFound        = "not_found"                  // 404: no such endpoint
	KindNotHeld         = "not_held"                   // 404, admin release only: the id holds no slot in the group
)

// MaxIDLength bounds a client id. The protocol only asks for a non-empty
// string; a bound keeps a store's records and the status view sane.
const MaxIDLength = 256

// maxBody bounds every request body the server reads.
const maxBody = 64 << 10

// groupRE is the group syntax the protocol prescribes.
var groupRE = regexp.MustCompile(`^[a-zA-Z0-9.-]+$`)

// ValidGroup checks a group label against the protocol's ^[a-zA-Z0-9.-]+$.
func ValidGroup(g string) error {
	if !groupRE.MatchString(g) {
		return fmt.Errorf("group %q: want letters, digits, '.' and '-' only, non-empty", g)
	}
	return nil
}

// ValidID checks a client id: non-empty, valid UTF-8, no control
// characters, at most MaxIDLength bytes. Ids are case-sensitive.
//
// U+FFFD is refused too: encoding/json decodes invalid UTF-8 and lone
// surrogate escapes as U+FFFD, so "node\xff" and "node\xfe" would arrive
// as one id and two nodes would share a reboot slot.
func ValidID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("id is empty")
	case len(id) > MaxIDLength:
		return fmt.Errorf("id is %d bytes long, at most %d allowed", len(id), MaxIDLength)
	case !utf8.ValidString(id):
		return fmt.Errorf("id is not valid UTF-8")
	case strings.ContainsRune(id, utf8.RuneError):
		return fmt.Errorf("id %q contains U+FFFD: invalid UTF-8 or a lone surrogate in the request", id)
	}
	for _, r := range id {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("id %q contains a control character", id)
		}
	}
	return nil
}

// lockRequest is the body of pre-reboot and steady-state.
type lockRequest struct {
	ClientParams *clientParams `json:"client_params"`
}

type clientParams struct {
	ID    string `json:"id"`
	Group string `json:"group"`
}

// ErrorBody is the JSON body of every failed request.
type ErrorBody struct {
	Kind  string `json:"kind"`
	Value string `json:"value"`
}

// Holder is one id holding a reboot slot, with the time it took it.
type Holder struct {
	ID    string    `json:"id"`
	Since time.Time `json:"since"`
}

// GroupStatus is one group in the admin status view.
type GroupStatus struct {
	Group   string   `json:"group"`
	Slots   int      `json:"slots"`
	Holders []Holder `json:"holders"`
}

// Status is the admin status view: every group that has holders or a
// configured slot count, sorted by name.
type Status struct {
	DefaultSlots int           `json:"default_slots"`
	Groups       []GroupStatus `json:"groups"`
}

// releaseRequest is the body of the admin release endpoint.
type releaseRequest struct {
	Group string `json:"group"`
	ID    string `json:"id"`
}

// releaseResponse answers a successful admin release.
type releaseResponse struct {
	Released bool   `json:"released"`
	Group    string `json:"group"`
	ID       string `json:"id"`
}

func marshalError(kind, value string) []byte {
	b, _ := json.Marshal(ErrorBody{Kind: kind, Value: value})
	return b
}
