// Package signing will hold the TUF repository (publisher side) and client
// (node side) over OCI registries. It is empty until the signed-release work
// lands; nothing imports it yet.
package signing
