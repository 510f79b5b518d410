package partitions

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"unicode/utf16"
)

// This file reads the GPT byte for byte and rewrites only attribute words.
// go-diskfs writes the table at Create, but a read-modify-write through it
// re-serialises every entry (dropping bytes it does not model), and the
// attribute word is rewritten by bootloaders on every trial boot: updating
// it must change those 8 bytes and the CRCs and nothing else, exactly as
// cgpt does.

var gptSignature = []byte("EFI PART")

const (
	gptHeaderMinSize = 92
	gptEntryMinSize  = 128
	gptMaxEntryBytes = 1 << 20 // far above the 16 KiB everyone uses; bounds a corrupt header
	attrOffset       = 48      // of the attribute word inside an entry
)

// gptHeader is a parsed, validated GPT header. raw keeps the whole sector so
// a rewrite preserves fields (and reserved bytes) this code does not know.
type gptHeader struct {
	raw         []byte
	size        uint32 // header size
	myLBA       uint64
	altLBA      uint64
	firstUsable uint64
	lastUsable  uint64
	diskGUID    string
	entriesLBA  uint64
	numEntries  uint32
	entrySize   uint32
	entriesCRC  uint32
}

func (h *gptHeader) entriesBytes() int64 { return int64(h.numEntries) * int64(h.entrySize) }

// gptEntry is one used partition entry.
type gptEntry struct {
	index    int
	typeGUID string
	partUUID string
	firstLBA uint64
	lastLBA  uint64
	attrs    uint64
	name     string
}

// gptTable is what readGPT found: the header and entries used (the primary
// when valid, as firmware does, else the backup) and what is known of the
// other copy so a write can rebuild it.
type gptTable struct {
	sectorSize int64
	diskSize   int64
	primary    *gptHeader // nil when invalid
	backup     *gptHeader // nil when invalid
	// hdr and entries are the authoritative copy.
	hdr     *gptHeader
	entries []byte
	parsed  []gptEntry
}

// gptError describes why a header copy was rejected.
type gptError struct{ what, why string }

func (e *gptError) Error() string { return e.what + ": " + e.why }

// readGPT reads and validates both GPT copies. It returns an error wrapping
// ErrNoGPT when neither copy is valid.
func readGPT(r io.ReaderAt, diskSize, sectorSize int64) (*gptTable, error) {
	if diskSize < 3*sectorSize {
		return nil, fmt.Errorf("%w: disk of %d bytes is too small for one", ErrNoGPT, diskSize)
	}
	lastLBA := uint64(diskSize/sectorSize) - 1
	t := &gptTable{sectorSize: sectorSize, diskSize: diskSize}

	var pErr, bErr error
	var pEntries, bEntries []byte
	t.primary, pEntries, pErr = readGPTCopy(r, 1, lastLBA, sectorSize, "primary GPT")
	backupLBA := lastLBA
	if t.primary != nil && t.primary.altLBA <= lastLBA && t.primary.altLBA > 1 {
		backupLBA = t.primary.altLBA
	}
	t.backup, bEntries, bErr = readGPTCopy(r, backupLBA, lastLBA, sectorSize, "backup GPT")

	switch {
	case t.primary != nil:
		t.hdr, t.entries = t.primary, pEntries
	case t.backup != nil:
		t.hdr, t.entries = t.backup, bEntries
	default:
		var ioErr *os.PathError
		if errors.As(pErr, &ioErr) {
			return nil, fmt.Errorf("read GPT: %w", pErr)
		}
		return nil, fmt.Errorf("%w (%v; %v)", ErrNoGPT, pErr, bErr)
	}
	parsed, err := parseEntries(t.entries, t.hdr.entrySize)
	if err != nil {
		return nil, err
	}
	t.parsed = parsed
	return t, nil
}

// readGPTCopy reads the header at lba and its entry array, checking
// everything the UEFI specification asks a reader to check.
func readGPTCopy(r io.ReaderAt, lba, lastLBA uint64, sectorSize int64, what string) (*gptHeader, []byte, error) {
	raw := make([]byte, sectorSize)
	if _, err := r.ReadAt(raw, int64(lba)*sectorSize); err != nil {
		return nil, nil, fmt.Errorf("%s: read LBA %d: %w", what, lba, err)
	}
	if !bytes.Equal(raw[:8], gptSignature) {
		return nil, nil, &gptError{what, fmt.Sprintf("no signature at LBA %d", lba)}
	}
	h := &gptHeader{raw: raw}
	le := binary.LittleEndian
	h.size = le.Uint32(raw[12:])
	if h.size < gptHeaderMinSize || int64(h.size) > sectorSize {
		return nil, nil, &gptError{what, fmt.Sprintf("bad header size %d", h.size)}
	}
	if crc := headerCRC(raw[:h.size]); crc != le.Uint32(raw[16:]) {
		return nil, nil, &gptError{what, "header CRC mismatch"}
	}
	h.myLBA = le.Uint64(raw[24:])
	h.altLBA = le.Uint64(raw[32:])
	h.firstUsable = le.Uint64(raw[40:])
	h.lastUsable = le.Uint64(raw[48:])
	h.diskGUID = guidString(raw[56:72])
	h.entriesLBA = le.Uint64(raw[72:])
	h.numEntries = le.Uint32(raw[80:])
	h.entrySize = le.Uint32(raw[84:])
	h.entriesCRC = le.Uint32(raw[88:])
	switch {
	case h.myLBA != lba:
		return nil, nil, &gptError{what, fmt.Sprintf("header at LBA %d says it is at LBA %d", lba, h.myLBA)}
	case h.entrySize < gptEntryMinSize || h.entrySize%gptEntryMinSize != 0:
		return nil, nil, &gptError{what, fmt.Sprintf("bad entry size %d", h.entrySize)}
	case h.entriesBytes() == 0 || h.entriesBytes() > gptMaxEntryBytes:
		return nil, nil, &gptError{what, fmt.Sprintf("bad entry array size %d", h.entriesBytes())}
	case h.firstUsable > h.lastUsable || h.lastUsable > lastLBA:
		return nil, nil, &gptError{what, "bad usable LBA range"}
	}
	arraySectors := uint64((h.entriesBytes() + sectorSize - 1) / sectorSize)
	if h.entriesLBA < 2 || h.entriesLBA+arraySectors-1 > lastLBA {
		return nil, nil, &gptError{what, fmt.Sprintf("entry array at LBA %d outside the disk", h.entriesLBA)}
	}
	entries := make([]byte, h.entriesBytes())
	if _, err := r.ReadAt(entries, int64(h.entriesLBA)*sectorSize); err != nil {
		return nil, nil, fmt.Errorf("%s: read entries: %w", what, err)
	}
	if crc32.ChecksumIEEE(entries) != h.entriesCRC {
		return nil, nil, &gptError{what, "partition entry array CRC mismatch"}
	}
	return h, entries, nil
}

func headerCRC(hdr []byte) uint32 {
	c := make([]byte, len(hdr))
	copy(c, hdr)
	binary.LittleEndian.PutUint32(c[16:], 0)
	return crc32.ChecksumIEEE(c)
}

func parseEntries(entries []byte, entrySize uint32) ([]gptEntry, error) {
	var out []gptEntry
	le := binary.LittleEndian
	for i := 0; int64(i+1)*int64(entrySize) <= int64(len(entries)); i++ {
		e := entries[i*int(entrySize) : (i+1)*int(entrySize)]
		if isZero(e[:16]) {
			continue
		}
		p := gptEntry{
			index:    i + 1,
			typeGUID: guidString(e[0:16]),
			partUUID: guidString(e[16:32]),
			firstLBA: le.Uint64(e[32:]),
			lastLBA:  le.Uint64(e[40:]),
			attrs:    le.Uint64(e[attrOffset:]),
			name:     utf16Name(e[56:128]),
		}
		if p.lastLBA < p.firstLBA {
			return nil, fmt.Errorf("GPT entry %d ends (LBA %d) before it starts (LBA %d)", p.index, p.lastLBA, p.firstLBA)
		}
		out = append(out, p)
	}
	return out, nil
}

func utf16Name(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// guidString renders a GPT GUID (first three fields little endian) in the
// usual lower-case text form.
func guidString(b []byte) string {
	le := binary.LittleEndian
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", le.Uint32(b[0:]), le.Uint16(b[4:]), le.Uint16(b[6:]), b[8:10], b[10:16])
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// setAttributes rewrites the attribute words of the given entries (by
// 1-based index) in both GPT copies. Everything else in the table is kept
// byte for byte. A copy that was invalid is rebuilt from the valid one, as
// sgdisk and cgpt do.
//
// Order, for a crash at any point: backup array and header first, each
// made durable, then the primary's. Until the primary header is written
// readers see the old primary; a torn primary fails its CRC and readers
// (firmware, cgpt, the kernel) fall back to the already new backup.
func (t *gptTable) setAttributes(f *os.File, attrs map[int]uint64) error {
	entries := make([]byte, len(t.entries))
	copy(entries, t.entries)
	es := int(t.hdr.entrySize)
	for idx, v := range attrs {
		if idx < 1 || idx*es > len(entries) {
			return fmt.Errorf("GPT has no entry %d", idx)
		}
		binary.LittleEndian.PutUint64(entries[(idx-1)*es+attrOffset:], v)
	}
	entriesCRC := crc32.ChecksumIEEE(entries)
	arraySectors := uint64((int64(len(entries)) + t.sectorSize - 1) / t.sectorSize)
	padded := make([]byte, int64(arraySectors)*t.sectorSize)
	copy(padded, entries)

	// Both headers derive from the authoritative one: same fields, with
	// their own and the other copy's LBA and their own array location.
	primLBA, backLBA := t.hdr.myLBA, t.hdr.altLBA
	if t.hdr == t.backup {
		primLBA, backLBA = t.hdr.altLBA, t.hdr.myLBA
	}
	primEntries := uint64(2)
	if t.primary != nil {
		primEntries = t.primary.entriesLBA
	}
	backEntries := backLBA - arraySectors
	if t.backup != nil {
		backEntries = t.backup.entriesLBA
	}
	mk := func(my, alt, entriesLBA uint64) []byte {
		h := make([]byte, len(t.hdr.raw))
		copy(h, t.hdr.raw)
		le := binary.LittleEndian
		le.PutUint64(h[24:], my)
		le.PutUint64(h[32:], alt)
		le.PutUint64(h[72:], entriesLBA)
		le.PutUint32(h[88:], entriesCRC)
		le.PutUint32(h[16:], headerCRC(h[:t.hdr.size]))
		return h
	}
	writes := []struct {
		what string
		b    []byte
		lba  uint64
	}{
		{"backup GPT entries", padded, backEntries},
		{"backup GPT header", mk(backLBA, primLBA, backEntries), backLBA},
		{"primary GPT entries", padded, primEntries},
		{"primary GPT header", mk(primLBA, backLBA, primEntries), primLBA},
	}
	for _, w := range writes {
		if _, err := f.WriteAt(w.b, int64(w.lba)*t.sectorSize); err != nil {
			return fmt.Errorf("write %s: %w", w.what, err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", w.what, err)
		}
	}
	return nil
}

// hasPartitionTable reports a GPT (either copy's signature) or an MBR with
// a partition entry, without validating them: Create must not overwrite a
// table, even a damaged one, unless forced.
func hasPartitionTable(r io.ReaderAt, size int64) (string, error) {
	b := make([]byte, 8192)
	n, err := r.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	b = b[:n]
	for _, ss := range []int{512, 4096} {
		if len(b) >= ss+8 && bytes.Equal(b[ss:ss+8], gptSignature) {
			return "GPT", nil
		}
	}
	for _, ss := range []int64{512, 4096} {
		if size >= 2*ss {
			tail := make([]byte, 8)
			if _, err := r.ReadAt(tail, size-ss); err == nil && bytes.Equal(tail, gptSignature) {
				return "GPT (backup copy)", nil
			}
		}
	}
	if len(b) >= 512 && b[510] == 0x55 && b[511] == 0xaa {
		for i := 0; i < 4; i++ {
			if b[446+16*i+4] != 0 { // partition type byte
				return "MBR", nil
			}
		}
	}
	return "", nil
}
