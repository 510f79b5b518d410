// Package aligned allocates buffers for direct I/O (O_DIRECT), which needs
// the buffer's address, the offset and the length to be multiples of the
// device's logical block size.
package aligned

import "unsafe"

// Align is the alignment Buffer gives and direct I/O callers use: 4096
// covers disks with 512-byte and with 4096-byte logical blocks.
const Align = 4096

// Buffer returns n bytes starting at an address that is a multiple of
// Align. Go's heap does not move objects, so the alignment holds for the
// buffer's life.
func Buffer(n int) []byte {
	b := make([]byte, n+Align)
	skip := (Align - int(uintptr(unsafe.Pointer(unsafe.SliceData(b)))%Align)) % Align
	return b[skip : skip+n : skip+n]
}

// Is reports whether b starts at a multiple of Align.
func Is(b []byte) bool {
	return len(b) == 0 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%Align == 0
}
