package kernelimage

import "encoding/binary"

// Synthetic returns a file that passes Check for every loader and boots
// nothing: the headers of an x86-64 bzImage with an EFI stub (boot
// protocol 2.15, one setup sector, a PE32+ header with one section)
// followed by payload, padded to 16 bytes. It is for tests and demos that
// install releases they never boot; the layout is the real one, so the
// checks run on them as on a node.
func Synthetic(payload []byte) []byte {
	b := synthetic(payload, 0x8664)
	b[x86SetupSects] = 1
	binary.LittleEndian.PutUint32(b[x86SysSize:], uint32((len(b)-syntheticHead)/16))
	binary.LittleEndian.PutUint16(b[x86BootFlag:], 0xAA55)
	copy(b[x86Header:], "HdrS")
	binary.LittleEndian.PutUint16(b[x86Version:], 0x020F)
	b[0x211] = 0x01 // loadflags: LOADED_HIGH (a bzImage)
	return b
}

// SyntheticARM64 is Synthetic for arm64: the headers of an arm64 Image
// with an EFI stub, then payload.
func SyntheticARM64(payload []byte) []byte {
	b := synthetic(payload, 0xaa64)
	copy(b[arm64Magic:], "ARM\x64")
	return b
}

// syntheticHead is the size of the headers Synthetic writes: the boot
// sector and one setup sector of a bzImage.
const syntheticHead = 1024

// synthetic lays out "MZ", a PE32+ EFI application header for machine at
// 0x40 with one section holding payload, and the payload after the
// headers.
func synthetic(payload []byte, machine uint16) []byte {
	body := (len(payload) + 15) &^ 15
	b := make([]byte, syntheticHead+body)
	copy(b[syntheticHead:], payload)
	le16 := binary.LittleEndian.PutUint16
	le32 := binary.LittleEndian.PutUint32

	copy(b, "MZ")
	const pe = 0x40
	le32(b[0x3C:], pe)
	copy(b[pe:], "PE\x00\x00")
	le16(b[pe+4:], machine)
	le16(b[pe+6:], 1)   // sections
	const optSize = 240 // PE32+ with 16 data directories
	le16(b[pe+20:], optSize)
	le16(b[pe+22:], 0x0206) // executable, line numbers and debug stripped
	opt := pe + 24
	le16(b[opt:], 0x20b)                         // PE32+
	le32(b[opt+16:], syntheticHead)              // entry point
	le32(b[opt+32:], 512)                        // section alignment
	le32(b[opt+36:], 512)                        // file alignment
	le32(b[opt+56:], uint32(syntheticHead+body)) // size of image
	le32(b[opt+60:], syntheticHead)              // size of headers
	le16(b[opt+68:], efiApplication)             // subsystem
	le32(b[opt+108:], 16)                        // data directories
	sec := opt + optSize
	copy(b[sec:], ".text")
	le32(b[sec+8:], uint32(body))   // virtual size
	le32(b[sec+12:], syntheticHead) // virtual address
	le32(b[sec+16:], uint32(body))  // raw size
	le32(b[sec+20:], syntheticHead) // raw pointer
	le32(b[sec+36:], 0x60000020)    // code, execute, read
	return b
}
