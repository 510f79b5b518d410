// Package fleetlock implements both sides of FleetLock, the reboot
// coordination protocol of Fedora CoreOS's Zincati: a client that takes
// and releases a reboot slot, the node id it identifies itself with, and
// a server (an http.Handler over a Store) that hands out a bounded number
// of slots per group.
//
// The protocol is followed as Zincati's specification states it, so that
// Zincati nodes can use sealift's server and sealift's agent can use any
// FleetLock server:
//
//   - POST {base}/v1/pre-reboot takes a slot, POST {base}/v1/steady-state
//     releases it;
//   - every request carries the header "fleet-lock-protocol: true" and the
//     body {"client_params":{"id":ID,"group":GROUP}};
//   - 200 means done; anything else is a failure with a JSON body
//     {"kind":KIND,"value":TEXT}, KIND from a small fixed set;
//   - locks are owned by an id and recursive: taking a slot already held
//     by the same id succeeds without using another, and releasing a slot
//     that is not held succeeds (nothing to do).
//
// The operator endpoints (status, release) are not part of the protocol
// and have their own handler, meant for a listener on 127.0.0.1. The
// package never logs; the server reports what it did through an optional
// callback.
package fleetlock
