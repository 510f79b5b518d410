package partitions

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"math/bits"
	"path"
	"sort"
	"strings"
	"time"
	"unicode/utf16"
)

// This file is a small FAT32 reader/writer for the ESP when it is not
// mounted. go-diskfs formats the filesystem (Create), but its file
// operations leak clusters on remove and replace, give first-level
// directories a wrong ".." and allocate clusters to empty files, all of
// which fsck.vfat reports; on an ESP that is rewritten at every update the
// leaks alone would fill it. So the day-to-day operations are done here,
// following the FAT specification (Microsoft "FAT32 File System
// Specification" 1.03):
//
//   - a file's data and its FAT chain are written before the directory
//     entry that points at them, so a crash leaves at worst lost clusters;
//   - replacing a file repoints the target's directory entry at the new
//     chain in one 32-byte write, so readers see the old or the new file;
//   - renames rewrite an entry in place where the new name fits, so a
//     crash does not leave two names sharing clusters, which fsck would
//     "repair" by truncating one;
//   - both FAT copies and the FSInfo free count are kept in step;
//   - everything is re-read from the device at each operation, so nothing
//     is cached across calls (a bootloader may change the ESP between them).

const (
	attrReadOnly  = 0x01
	attrHidden    = 0x02
	attrSystem    = 0x04
	attrVolumeID  = 0x08
	attrDirectory = 0x10
	attrArchive   = 0x20
	attrLFN       = attrReadOnly | attrHidden | attrSystem | attrVolumeID

	fatEntryMask = 0x0FFFFFFF
	fatEOC       = 0x0FFFFFFF // written as end of chain
	fatEOCMin    = 0x0FFFFFF8 // anything from here is end of chain
	fatBad       = 0x0FFFFFF7

	dirEntrySize   = 32
	maxDirEntries  = 65536 // FAT limit per directory
	minFAT32Clust  = 65525 // fewer clusters make it FAT12/16
	fsInfoLeadSig  = 0x41615252
	fsInfoStrucSig = 0x61417272
	fsInfoTrailSig = 0xAA550000
)

// ErrESPFull is returned when the ESP has too few free clusters.
var ErrESPFull = errors.New("no space left on the ESP")

// blockFile is what the filesystem lives on: an *os.File in use, a
// fault-injecting file in tests.
type blockFile interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// region is a byte range of a file or device the filesystem lives in.
type region struct {
	f    blockFile
	base int64
	size int64
}

func (r region) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) > r.size {
		return 0, fmt.Errorf("FAT read at %d+%d: %w", off, len(b), ErrOutOfBounds)
	}
	return r.f.ReadAt(b, r.base+off)
}

func (r region) WriteAt(b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) > r.size {
		return 0, fmt.Errorf("FAT write at %d+%d: %w", off, len(b), ErrOutOfBounds)
	}
	return r.f.WriteAt(b, r.base+off)
}

// fat32 is one loaded FAT32 filesystem.
type fat32 struct {
	dev          region
	bps          int64 // bytes per sector
	clusterSize  int64
	fatStart     int64 // byte offset of the first FAT
	fatBytes     int64 // size of one FAT
	numFATs      int
	activeFAT    int // -1 when all FATs are mirrored
	rootCluster  uint32
	fsInfoOffset int64 // 0 when there is no valid FSInfo sector
	dataStart    int64
	maxCluster   uint32 // highest valid cluster number
	fat          []uint32
	dirtySectors map[int64]bool
	freeCount    uint32
	nextFree     uint32
}

func corrupt(format string, a ...any) error {
	return fmt.Errorf("ESP filesystem is corrupt: "+format, a...)
}

// loadFAT32 reads and checks the boot sector and loads the FAT.
func loadFAT32(dev region) (*fat32, error) {
	bs := make([]byte, 512)
	if _, err := dev.ReadAt(bs, 0); err != nil {
		return nil, fmt.Errorf("read FAT boot sector: %w", err)
	}
	le := binary.LittleEndian
	if bs[510] != 0x55 || bs[511] != 0xAA || (bs[0] != 0xEB && bs[0] != 0xE9) {
		return nil, errors.New("ESP has no FAT boot sector")
	}
	bps := int64(le.Uint16(bs[11:]))
	spc := int64(bs[13])
	rsvd := int64(le.Uint16(bs[14:]))
	numFATs := int(bs[16])
	rootEnt := le.Uint16(bs[17:])
	tot := int64(le.Uint16(bs[19:]))
	if tot == 0 {
		tot = int64(le.Uint32(bs[32:]))
	}
	fatSz16 := le.Uint16(bs[22:])
	fatSz := int64(le.Uint32(bs[36:]))
	switch {
	case bps != 512 && bps != 1024 && bps != 2048 && bps != 4096:
		return nil, corrupt("bytes per sector %d", bps)
	case spc == 0 || bits.OnesCount64(uint64(spc)) != 1:
		return nil, corrupt("sectors per cluster %d", spc)
	case rsvd == 0 || numFATs == 0:
		return nil, corrupt("reserved sectors %d, FAT count %d", rsvd, numFATs)
	case rootEnt != 0 || fatSz16 != 0 || fatSz == 0:
		return nil, errors.New("ESP filesystem is FAT12/16, not FAT32")
	case tot*bps > dev.size:
		return nil, corrupt("filesystem (%d bytes) larger than its partition (%d bytes)", tot*bps, dev.size)
	}
	dataSectors := tot - rsvd - int64(numFATs)*fatSz
	if dataSectors <= 0 {
		return nil, corrupt("no data area")
	}
	clusters := dataSectors / spc
	if clusters < minFAT32Clust {
		return nil, fmt.Errorf("ESP filesystem has %d clusters: it is FAT12/16, not FAT32", clusters)
	}
	if fatSz*bps/4 < clusters+2 {
		return nil, corrupt("FAT of %d sectors cannot map %d clusters", fatSz, clusters)
	}
	fs := &fat32{
		dev:          dev,
		bps:          bps,
		clusterSize:  bps * spc,
		fatStart:     rsvd * bps,
		fatBytes:     fatSz * bps,
		numFATs:      numFATs,
		activeFAT:    -1,
		rootCluster:  le.Uint32(bs[44:]) & fatEntryMask,
		dataStart:    (rsvd + int64(numFATs)*fatSz) * bps,
		maxCluster:   uint32(clusters + 1),
		dirtySectors: map[int64]bool{},
	}
	if ext := le.Uint16(bs[40:]); ext&0x80 != 0 {
		fs.activeFAT = int(ext & 0x0F)
		if fs.activeFAT >= numFATs {
			return nil, corrupt("active FAT %d of %d", fs.activeFAT, numFATs)
		}
	}
	if !fs.valid(fs.rootCluster) {
		return nil, corrupt("root directory cluster %d", fs.rootCluster)
	}
	// Only the part of the FAT that maps clusters is read.
	raw := make([]byte, int64(fs.maxCluster+1)*4)
	which := max(fs.activeFAT, 0)
	if _, err := dev.ReadAt(raw, fs.fatStart+int64(which)*fs.fatBytes); err != nil {
		return nil, fmt.Errorf("read FAT: %w", err)
	}
	fs.fat = make([]uint32, fs.maxCluster+1)
	for i := range fs.fat {
		fs.fat[i] = le.Uint32(raw[i*4:])
		if i >= 2 && fs.fat[i]&fatEntryMask == 0 {
			fs.freeCount++
		}
	}
	fs.nextFree = 2
	if fsi := int64(le.Uint16(bs[48:])); fsi > 0 && fsi < rsvd {
		sec := make([]byte, 512)
		if _, err := dev.ReadAt(sec, fsi*bps); err == nil &&
			le.Uint32(sec[0:]) == fsInfoLeadSig && le.Uint32(sec[484:]) == fsInfoStrucSig && le.Uint32(sec[508:]) == fsInfoTrailSig {
			fs.fsInfoOffset = fsi * bps
			if n := le.Uint32(sec[492:]); fs.valid(n) {
				fs.nextFree = n
			}
		}
	}
	return fs, nil
}

func (fs *fat32) valid(c uint32) bool { return c >= 2 && c <= fs.maxCluster }

func (fs *fat32) next(c uint32) uint32 { return fs.fat[c] & fatEntryMask }

func (fs *fat32) set(c, v uint32) {
	fs.fat[c] = fs.fat[c]&^fatEntryMask | v&fatEntryMask // the top 4 bits are reserved: keep them
	fs.dirtySectors[int64(c)*4/fs.bps] = true
}

// chain follows a cluster chain; first 0 is the empty chain.
func (fs *fat32) chain(first uint32) ([]uint32, error) {
	if first == 0 {
		return nil, nil
	}
	var out []uint32
	for c := first; ; {
		if !fs.valid(c) {
			return nil, corrupt("cluster chain from %d reaches invalid cluster %d", first, c)
		}
		out = append(out, c)
		if uint32(len(out)) > fs.maxCluster {
			return nil, corrupt("cluster chain from %d loops", first)
		}
		n := fs.next(c)
		switch {
		case n >= fatEOCMin:
			return out, nil
		case n == 0 || n == fatBad:
			return nil, corrupt("cluster chain from %d runs into a free or bad cluster at %d", first, c)
		}
		c = n
	}
}

func (fs *fat32) clustersFor(n int64) int64 { return (n + fs.clusterSize - 1) / fs.clusterSize }

// alloc takes n free clusters and links them into a chain.
func (fs *fat32) alloc(n int64) ([]uint32, error) {
	if n == 0 {
		return nil, nil
	}
	if n > int64(fs.freeCount) {
		return nil, fmt.Errorf("%w: need %d bytes, %d free", ErrESPFull, n*fs.clusterSize, int64(fs.freeCount)*fs.clusterSize)
	}
	out := make([]uint32, 0, n)
	c := fs.nextFree
	for scanned := uint32(0); int64(len(out)) < n && scanned < fs.maxCluster; scanned++ {
		if !fs.valid(c) {
			c = 2
		}
		if fs.next(c) == 0 {
			out = append(out, c)
		}
		c++
	}
	if int64(len(out)) < n {
		return nil, fmt.Errorf("%w: need %d clusters, found %d", ErrESPFull, n, len(out))
	}
	for i, c := range out {
		if i+1 < len(out) {
			fs.set(c, out[i+1])
		} else {
			fs.set(c, fatEOC)
		}
	}
	fs.freeCount -= uint32(n)
	fs.nextFree = out[len(out)-1] + 1
	if !fs.valid(fs.nextFree) {
		fs.nextFree = 2
	}
	return out, nil
}

func (fs *fat32) release(chain []uint32) {
	for _, c := range chain {
		fs.set(c, 0)
	}
	fs.freeCount += uint32(len(chain))
}

// flushFAT writes the changed FAT sectors to every FAT copy, then FSInfo.
func (fs *fat32) flushFAT() error {
	if len(fs.dirtySectors) == 0 {
		return nil
	}
	secs := make([]int64, 0, len(fs.dirtySectors))
	for s := range fs.dirtySectors {
		secs = append(secs, s)
	}
	sort.Slice(secs, func(i, j int) bool { return secs[i] < secs[j] })
	perSec := fs.bps / 4
	for i := 0; i < len(secs); {
		j := i + 1
		for j < len(secs) && secs[j] == secs[j-1]+1 {
			j++
		}
		first, count := secs[i], secs[j-1]-secs[i]+1
		buf := make([]byte, count*fs.bps)
		for k := int64(0); k < count*perSec; k++ {
			idx := first*perSec + k
			if idx < int64(len(fs.fat)) {
				binary.LittleEndian.PutUint32(buf[k*4:], fs.fat[idx])
			} else if err := fs.keepTail(buf[k*4:], idx); err != nil {
				return err
			}
		}
		for n := 0; n < fs.numFATs; n++ {
			if fs.activeFAT >= 0 && n != fs.activeFAT {
				continue
			}
			if _, err := fs.dev.WriteAt(buf, fs.fatStart+int64(n)*fs.fatBytes+first*fs.bps); err != nil {
				return fmt.Errorf("write FAT %d: %w", n, err)
			}
		}
		i = j
	}
	fs.dirtySectors = map[int64]bool{}
	return fs.writeFSInfo()
}

// keepTail copies FAT bytes past the last cluster (which the FAT sector
// holding the last entries also contains) from the disk unchanged.
func (fs *fat32) keepTail(dst []byte, idx int64) error {
	which := max(fs.activeFAT, 0)
	b := make([]byte, 4)
	if _, err := fs.dev.ReadAt(b, fs.fatStart+int64(which)*fs.fatBytes+idx*4); err != nil {
		return fmt.Errorf("read FAT: %w", err)
	}
	copy(dst, b)
	return nil
}

func (fs *fat32) writeFSInfo() error {
	if fs.fsInfoOffset == 0 {
		return nil
	}
	b := make([]byte, 8)
	binary.LittleEndian.PutUint32(b[0:], fs.freeCount)
	binary.LittleEndian.PutUint32(b[4:], fs.nextFree)
	if _, err := fs.dev.WriteAt(b, fs.fsInfoOffset+488); err != nil {
		return fmt.Errorf("write FSInfo: %w", err)
	}
	return nil
}

func (fs *fat32) clusterOffset(c uint32) int64 { return fs.dataStart + int64(c-2)*fs.clusterSize }

// runs calls fn for each run of consecutive clusters in a chain.
func runs(chain []uint32, fn func(first uint32, count int) error) error {
	for i := 0; i < len(chain); {
		j := i + 1
		for j < len(chain) && chain[j] == chain[j-1]+1 {
			j++
		}
		if err := fn(chain[i], j-i); err != nil {
			return err
		}
		i = j
	}
	return nil
}

func (fs *fat32) readChain(chain []uint32, size int64) ([]byte, error) {
	if int64(len(chain))*fs.clusterSize < size {
		return nil, corrupt("file of %d bytes has only %d clusters", size, len(chain))
	}
	buf := make([]byte, int64(len(chain))*fs.clusterSize)
	off := int64(0)
	err := runs(chain, func(first uint32, count int) error {
		n := int64(count) * fs.clusterSize
		if _, err := fs.dev.ReadAt(buf[off:off+n], fs.clusterOffset(first)); err != nil {
			return fmt.Errorf("read ESP: %w", err)
		}
		off += n
		return nil
	})
	if err != nil {
		return nil, err
	}
	return buf[:size], nil
}

// writeChain writes data over a chain; the tail of the last cluster is
// zeroed so no stale bytes of an earlier file linger in the new one.
func (fs *fat32) writeChain(chain []uint32, data []byte) error {
	off := int64(0)
	return runs(chain, func(first uint32, count int) error {
		n := int64(count) * fs.clusterSize
		part := make([]byte, n)
		copy(part, data[min(off, int64(len(data))):min(off+n, int64(len(data)))])
		if _, err := fs.dev.WriteAt(part, fs.clusterOffset(first)); err != nil {
			return fmt.Errorf("write ESP: %w", err)
		}
		off += n
		return nil
	})
}

// ---- directories ----

// fatDir is one directory read into memory.
type fatDir struct {
	cluster uint32 // first cluster; the root's is rootCluster
	chain   []uint32
	data    []byte
	end     int // index of the first slot marked end-of-directory (0x00); len(slots) when none
	entries []*fatEntry
}

// fatEntry is a directory entry: an 8.3 entry and the long-name entries
// before it.
type fatEntry struct {
	long      string
	short     string // display form of the 8.3 name: "VMLINUZ", "GRUB.CFG"
	sfn       [11]byte
	attr      byte
	cluster   uint32
	size      uint32
	firstSlot int // first LFN slot, or the 8.3 slot when there is no long name
	sfnSlot   int
}

func (e *fatEntry) name() string {
	if e.long != "" {
		return e.long
	}
	return e.short
}

func (e *fatEntry) isDir() bool { return e.attr&attrDirectory != 0 }

func (e *fatEntry) isDot() bool { return e.short == "." || e.short == ".." }

func (e *fatEntry) matches(name string) bool {
	return strings.EqualFold(e.long, name) || strings.EqualFold(e.short, name)
}

func (fs *fat32) readDir(cluster uint32) (*fatDir, error) {
	chain, err := fs.chain(cluster)
	if err != nil {
		return nil, err
	}
	if len(chain) == 0 {
		return nil, corrupt("directory without clusters")
	}
	data, err := fs.readChain(chain, int64(len(chain))*fs.clusterSize)
	if err != nil {
		return nil, err
	}
	d := &fatDir{cluster: cluster, chain: chain, data: data}
	d.parse()
	return d, nil
}

func (d *fatDir) slots() int { return len(d.data) / dirEntrySize }

func (d *fatDir) slot(i int) []byte { return d.data[i*dirEntrySize : (i+1)*dirEntrySize] }

func (d *fatDir) parse() {
	d.entries = nil
	d.end = d.slots()
	var (
		lfn      []uint16
		lfnStart = -1
		lfnNext  int // ordinal expected next
		lfnSum   byte
	)
	reset := func() { lfn, lfnStart, lfnNext = nil, -1, 0 }
	for i := 0; i < d.slots(); i++ {
		e := d.slot(i)
		if e[0] == 0x00 {
			d.end = i
			return
		}
		if e[0] == 0xE5 {
			reset()
			continue
		}
		attr := e[11]
		if attr&0x3F == attrLFN {
			ord := int(e[0] & 0x1F)
			switch {
			case e[0]&0x40 != 0 && ord > 0:
				lfn = make([]uint16, 13*ord)
				lfnStart, lfnNext, lfnSum = i, ord, e[13]
			case lfnStart < 0 || ord != lfnNext || e[13] != lfnSum:
				reset()
				continue
			}
			base := (ord - 1) * 13
			for k, off := range lfnOffsets {
				lfn[base+k] = binary.LittleEndian.Uint16(e[off:])
			}
			lfnNext = ord - 1
			continue
		}
		if attr&attrVolumeID != 0 && attr&attrDirectory == 0 {
			reset()
			continue
		}
		fe := &fatEntry{
			attr:      attr,
			cluster:   uint32(binary.LittleEndian.Uint16(e[20:]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:])),
			size:      binary.LittleEndian.Uint32(e[28:]),
			firstSlot: i,
			sfnSlot:   i,
		}
		copy(fe.sfn[:], e[:11])
		fe.short = shortDisplay(fe.sfn, e[12])
		if lfnStart >= 0 && lfnNext == 0 && sfnChecksum(fe.sfn) == lfnSum {
			fe.long = decodeLFN(lfn)
			fe.firstSlot = lfnStart
		}
		d.entries = append(d.entries, fe)
		reset()
	}
}

// UTF-16 unit offsets of the 13 name characters inside a long-name entry.
var lfnOffsets = [13]int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30}

func decodeLFN(u []uint16) string {
	for i, c := range u {
		if c == 0 {
			u = u[:i]
			break
		}
	}
	return string(utf16.Decode(u))
}

func shortDisplay(sfn [11]byte, ntres byte) string {
	b := sfn
	if b[0] == 0x05 {
		b[0] = 0xE5
	}
	conv := func(p []byte, lower bool) string {
		s := strings.TrimRight(string(latin1(p)), " ")
		if lower {
			s = strings.ToLower(s)
		}
		return s
	}
	name := conv(b[:8], ntres&0x08 != 0)
	if ext := conv(b[8:], ntres&0x10 != 0); ext != "" {
		name += "." + ext
	}
	return name
}

func latin1(b []byte) []rune {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return r
}

func sfnChecksum(sfn [11]byte) byte {
	var sum byte
	for _, c := range sfn {
		sum = (sum&1)<<7 + sum>>1 + c
	}
	return sum
}

func (d *fatDir) lookup(name string) *fatEntry {
	for _, e := range d.entries {
		if !e.isDot() && e.matches(name) {
			return e
		}
	}
	return nil
}

// writeSlots writes slots [from, to) of the directory to the device.
func (fs *fat32) writeSlots(d *fatDir, from, to int) error {
	for from < to {
		off := int64(from) * dirEntrySize
		ci := off / fs.clusterSize
		inCluster := off % fs.clusterSize
		n := min(int64(to-from)*dirEntrySize, fs.clusterSize-inCluster)
		if _, err := fs.dev.WriteAt(d.data[off:off+n], fs.clusterOffset(d.chain[ci])+inCluster); err != nil {
			return fmt.Errorf("write directory: %w", err)
		}
		from += int(n / dirEntrySize)
	}
	return nil
}

// validName checks a name against what FAT long names may hold.
func validName(name string) error {
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("invalid FAT file name %q: %w", name, iofs.ErrInvalid)
	}
	if len(utf16.Encode([]rune(name))) > 255 {
		return fmt.Errorf("FAT file name %q longer than 255 characters: %w", name, iofs.ErrInvalid)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7F || strings.ContainsRune(`"*/:<>?\|`, r) {
			return fmt.Errorf("FAT file name %q contains %q: %w", name, r, iofs.ErrInvalid)
		}
	}
	if strings.HasSuffix(name, ".") || strings.HasSuffix(name, " ") {
		return fmt.Errorf("FAT file name %q ends in a dot or space: %w", name, iofs.ErrInvalid)
	}
	return nil
}

const sfnSpecial = "!#$%&'()-@^_`{}~"

func sfnChar(r rune) bool {
	return r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(sfnSpecial, r)
}

// shortNameFor makes the 8.3 name of a new entry and tells whether a long
// name entry is needed. A name that already is an upper-case 8.3 name is
// stored as is; anything else also gets a long name (as Linux's vfat does
// by default), with an 8.3 alias "BASENA~N.EXT" unique in the directory.
func shortNameFor(name string, d *fatDir) (sfn [11]byte, needLFN bool) {
	taken := func(s [11]byte) bool {
		for _, e := range d.entries {
			if e.sfn == s {
				return true
			}
		}
		return false
	}
	upper := strings.ToUpper(name)
	base, ext := upper, ""
	if i := strings.LastIndexByte(upper, '.'); i >= 0 {
		base, ext = upper[:i], upper[i+1:]
	}
	fits := len(base) >= 1 && len(base) <= 8 && len(ext) <= 3 && !strings.HasPrefix(name, ".") &&
		strings.IndexFunc(base+ext, func(r rune) bool { return !sfnChar(r) }) < 0
	if fits {
		sfn = pad83(base, ext)
		if !taken(sfn) {
			return sfn, upper != name
		}
	}
	// Lossy: drop spaces and leading dots, replace what 8.3 cannot hold.
	clean := func(s string) string {
		var b strings.Builder
		for _, r := range s {
			switch {
			case r == ' ' || r == '.':
			case sfnChar(r):
				b.WriteRune(r)
			default:
				b.WriteByte('_')
			}
		}
		return b.String()
	}
	trimmed := strings.TrimLeft(upper, ".")
	b, e := trimmed, ""
	if i := strings.LastIndexByte(trimmed, '.'); i >= 0 {
		b, e = trimmed[:i], trimmed[i+1:]
	}
	b, e = clean(b), clean(e)
	if b == "" {
		b = "_"
	}
	if len(e) > 3 {
		e = e[:3]
	}
	for n := 1; n < 1000000; n++ {
		tail := fmt.Sprintf("~%d", n)
		stem := b
		if len(stem) > 8-len(tail) {
			stem = stem[:8-len(tail)]
		}
		sfn = pad83(stem+tail, e)
		if !taken(sfn) {
			return sfn, true
		}
	}
	return sfn, true // a directory cannot hold a million entries
}

func pad83(base, ext string) [11]byte {
	var s [11]byte
	for i := range s {
		s[i] = ' '
	}
	copy(s[:8], base)
	copy(s[8:], ext)
	if s[0] == 0xE5 {
		s[0] = 0x05
	}
	return s
}

// dosTime encodes a time as FAT date, time and 10 ms units.
func dosTime(t time.Time) (date, tm uint16, tenth byte) {
	t = t.UTC()
	if t.Year() < 1980 {
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	date = uint16(t.Year()-1980)<<9 | uint16(t.Month())<<5 | uint16(t.Day())
	tm = uint16(t.Hour())<<11 | uint16(t.Minute())<<5 | uint16(t.Second()/2)
	tenth = byte(t.Second()%2*100 + t.Nanosecond()/10_000_000)
	return
}

// sfnEntry builds a new 8.3 entry.
func sfnEntry(sfn [11]byte, attr byte, cluster, size uint32, now time.Time) []byte {
	e := make([]byte, dirEntrySize)
	copy(e, sfn[:])
	e[11] = attr
	date, tm, tenth := dosTime(now)
	le := binary.LittleEndian
	e[13] = tenth
	le.PutUint16(e[14:], tm)
	le.PutUint16(e[16:], date)
	le.PutUint16(e[18:], date)
	le.PutUint16(e[20:], uint16(cluster>>16))
	le.PutUint16(e[22:], tm)
	le.PutUint16(e[24:], date)
	le.PutUint16(e[26:], uint16(cluster))
	le.PutUint32(e[28:], size)
	return e
}

func lfnEntries(name string, sfn [11]byte) [][]byte {
	u := utf16.Encode([]rune(name))
	n := (len(u) + 12) / 13
	padded := make([]uint16, n*13)
	for i := range padded {
		switch {
		case i < len(u):
			padded[i] = u[i]
		case i == len(u):
			padded[i] = 0
		default:
			padded[i] = 0xFFFF
		}
	}
	sum := sfnChecksum(sfn)
	out := make([][]byte, 0, n)
	for ord := n; ord >= 1; ord-- {
		e := make([]byte, dirEntrySize)
		e[0] = byte(ord)
		if ord == n {
			e[0] |= 0x40
		}
		e[11] = attrLFN
		e[13] = sum
		for k, off := range lfnOffsets {
			binary.LittleEndian.PutUint16(e[off:], padded[(ord-1)*13+k])
		}
		out = append(out, e)
	}
	return out
}

// addEntry creates a directory entry for name pointing at cluster. The
// caller has written the data and the FAT already. sfnTail, when not nil,
// supplies bytes 11-31 of the 8.3 entry (attributes, times, cluster, size)
// so a rename keeps them.
func (fs *fat32) addEntry(d *fatDir, name string, attr byte, cluster, size uint32, sfnTail []byte) error {
	if err := validName(name); err != nil {
		return err
	}
	sfn, needLFN := shortNameFor(name, d)
	var ents [][]byte
	if needLFN {
		ents = lfnEntries(name, sfn)
	}
	se := sfnEntry(sfn, attr, cluster, size, time.Now())
	if sfnTail != nil {
		copy(se[11:], sfnTail)
		se[12] = 0 // case flags belong to the old 8.3 name
	}
	ents = append(ents, se)
	need := len(ents)

	start := -1
	for i, run := 0, 0; i < d.slots(); i++ {
		if i >= d.end || d.slot(i)[0] == 0xE5 {
			run++
			if run == need {
				start = i - need + 1
				break
			}
		} else {
			run = 0
		}
	}
	if start < 0 {
		if err := fs.growDir(d, need); err != nil {
			return err
		}
		return fs.addEntry(d, name, attr, cluster, size, sfnTail)
	}
	for k, e := range ents {
		copy(d.slot(start+k), e)
	}
	last := start + need
	// Slots past the end marker must stay zero so the new end is seen.
	if last < d.slots() && last >= d.end && d.slot(last)[0] != 0 {
		clear(d.slot(last))
		last++
	}
	if err := fs.writeSlots(d, start, last); err != nil {
		return err
	}
	d.parse()
	return nil
}

// growDir appends zeroed clusters to a directory for at least need slots.
func (fs *fat32) growDir(d *fatDir, need int) error {
	per := int(fs.clusterSize / dirEntrySize)
	n := int64((need + per - 1) / per)
	if d.slots()+int(n)*per > maxDirEntries {
		return fmt.Errorf("ESP directory is full (%d entries)", maxDirEntries)
	}
	// Whatever follows the end marker is free. Zero it, on disk too if
	// another writer left bytes there, so that once entries fill the old
	// end nothing stale is read as an entry.
	if d.end < d.slots() && !isZero(d.data[d.end*dirEntrySize:]) {
		clear(d.data[d.end*dirEntrySize:])
		if err := fs.writeSlots(d, d.end, d.slots()); err != nil {
			return err
		}
	}
	added, err := fs.alloc(n)
	if err != nil {
		return err
	}
	if err := fs.writeChain(added, nil); err != nil {
		return err
	}
	fs.set(d.chain[len(d.chain)-1], added[0])
	if err := fs.flushFAT(); err != nil {
		return err
	}
	d.chain = append(d.chain, added...)
	d.data = append(d.data, make([]byte, n*fs.clusterSize)...)
	return nil
}

// deleteEntry marks an entry's slots free.
func (fs *fat32) deleteEntry(d *fatDir, e *fatEntry) error {
	for i := e.firstSlot; i <= e.sfnSlot; i++ {
		d.slot(i)[0] = 0xE5
	}
	if err := fs.writeSlots(d, e.firstSlot, e.sfnSlot+1); err != nil {
		return err
	}
	d.parse()
	return nil
}

// ---- paths ----

func splitPath(p string) []string {
	p = strings.Trim(path.Clean("/"+p), "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

func notExist(op, p string) error {
	return &iofs.PathError{Op: op, Path: p, Err: iofs.ErrNotExist}
}

// walk returns the directory at the given components.
func (fs *fat32) walk(op, full string, parts []string) (*fatDir, error) {
	d, err := fs.readDir(fs.rootCluster)
	if err != nil {
		return nil, err
	}
	for i, name := range parts {
		e := d.lookup(name)
		if e == nil {
			return nil, notExist(op, full)
		}
		if !e.isDir() {
			return nil, &iofs.PathError{Op: op, Path: full, Err: fmt.Errorf("%s is not a directory", strings.Join(parts[:i+1], "/"))}
		}
		if d, err = fs.readDir(e.cluster); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// parent resolves the directory holding p and p's last component.
func (fs *fat32) parent(op, p string) (*fatDir, string, error) {
	parts := splitPath(p)
	if len(parts) == 0 {
		return nil, "", &iofs.PathError{Op: op, Path: p, Err: iofs.ErrInvalid}
	}
	d, err := fs.walk(op, p, parts[:len(parts)-1])
	return d, parts[len(parts)-1], err
}

func (fs *fat32) readFile(p string) ([]byte, error) {
	d, name, err := fs.parent("open", p)
	if err != nil {
		return nil, err
	}
	e := d.lookup(name)
	if e == nil {
		return nil, notExist("open", p)
	}
	if e.isDir() {
		return nil, &iofs.PathError{Op: "read", Path: p, Err: errors.New("is a directory")}
	}
	chain, err := fs.chain(e.cluster)
	if err != nil {
		return nil, err
	}
	return fs.readChain(chain, int64(e.size))
}

func (fs *fat32) readDirNames(p string) ([]string, error) {
	d, err := fs.walk("readdir", p, splitPath(p))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range d.entries {
		if !e.isDot() {
			names = append(names, e.name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// createFile writes data to a new file (name must not exist in d).
func (fs *fat32) createFile(d *fatDir, name string, data []byte) error {
	if int64(len(data)) > 0xFFFFFFFF {
		return fmt.Errorf("%s: %d bytes is more than FAT can hold in one file", name, len(data))
	}
	if err := validName(name); err != nil {
		return err
	}
	chain, err := fs.alloc(fs.clustersFor(int64(len(data))))
	if err != nil {
		return err
	}
	if err := fs.writeChain(chain, data); err != nil {
		return err
	}
	if err := fs.flushFAT(); err != nil {
		return err
	}
	// Data and chain must be on disk before an entry points at them.
	if err := fs.sync(); err != nil {
		return err
	}
	first := uint32(0)
	if len(chain) > 0 {
		first = chain[0]
	}
	if err := fs.addEntry(d, name, attrArchive, first, uint32(len(data)), nil); err != nil {
		return fs.undoAlloc(chain, err)
	}
	return nil
}

// removeEntry deletes an entry and frees its clusters, in that order, so
// no entry ever points at freed clusters.
func (fs *fat32) removeEntry(d *fatDir, e *fatEntry) error {
	chain, err := fs.chain(e.cluster)
	if err != nil {
		return err
	}
	// A rename cut short by a crash can leave two names for one file:
	// removing one name must not free the other's data.
	for _, o := range d.entries {
		if o != e && o.cluster == e.cluster && e.cluster != 0 && !o.isDot() {
			chain = nil
		}
	}
	if err := fs.deleteEntry(d, e); err != nil {
		return err
	}
	// The entry must be gone on disk before its clusters can be reused.
	if err := fs.sync(); err != nil {
		return err
	}
	fs.release(chain)
	return fs.flushFAT()
}

func (fs *fat32) remove(p string) error {
	d, name, err := fs.parent("remove", p)
	if errors.Is(err, iofs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	e := d.lookup(name)
	if e == nil {
		return nil
	}
	if e.isDir() {
		sub, err := fs.readDir(e.cluster)
		if err != nil {
			return err
		}
		for _, c := range sub.entries {
			if !c.isDot() {
				return &iofs.PathError{Op: "remove", Path: p, Err: errors.New("directory not empty")}
			}
		}
	}
	return fs.removeEntry(d, e)
}

func (fs *fat32) mkdirAll(p string) error {
	parts := splitPath(p)
	d, err := fs.readDir(fs.rootCluster)
	if err != nil {
		return err
	}
	for i, name := range parts {
		e := d.lookup(name)
		if e == nil {
			if err := fs.mkdir(d, name); err != nil {
				return fmt.Errorf("mkdir %s: %w", strings.Join(parts[:i+1], "/"), err)
			}
			e = d.lookup(name)
		}
		if e == nil || !e.isDir() {
			return &iofs.PathError{Op: "mkdir", Path: p, Err: fmt.Errorf("%s exists and is not a directory", strings.Join(parts[:i+1], "/"))}
		}
		if d, err = fs.readDir(e.cluster); err != nil {
			return err
		}
	}
	return nil
}

// mkdir creates a subdirectory: its cluster with "." and ".." first, then
// the entry in the parent.
func (fs *fat32) mkdir(parent *fatDir, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	chain, err := fs.alloc(1)
	if err != nil {
		return err
	}
	now := time.Now()
	buf := make([]byte, fs.clusterSize)
	copy(buf, sfnEntry(pad83(".", ""), attrDirectory, chain[0], 0, now))
	up := parent.cluster
	if up == fs.rootCluster {
		up = 0 // ".." of a first-level directory points at 0, not at the root's cluster
	}
	copy(buf[dirEntrySize:], sfnEntry(pad83("..", ""), attrDirectory, up, 0, now))
	if err := fs.writeChain(chain, buf); err != nil {
		return err
	}
	if err := fs.flushFAT(); err != nil {
		return err
	}
	if err := fs.sync(); err != nil {
		return err
	}
	if err := fs.addEntry(parent, name, attrDirectory, chain[0], 0, nil); err != nil {
		return fs.undoAlloc(chain, err)
	}
	return nil
}

// rename moves oldp to newp, replacing newp if it is a file.
//
// No step may leave a file that fsck would "repair" by cutting it short,
// so a crash never leaves two entries sharing clusters where it can be
// helped: a rename within a directory rewrites the entry in place when
// the new name needs no more slots than the old one (the usual case, e.g.
// systemd-boot's "+3" to "+2-1"); a replace drops the source entry before
// repointing the target. Only a rename that must move the entry (a longer
// name, another directory) writes the new entry before dropping the old,
// so the file is never without a name.
func (fs *fat32) rename(oldp, newp string) error {
	od, oname, err := fs.parent("rename", oldp)
	if err != nil {
		return err
	}
	oe := od.lookup(oname)
	if oe == nil {
		return notExist("rename", oldp)
	}
	nd, nname, err := fs.parent("rename", newp)
	if err != nil {
		return err
	}
	if nd.cluster == od.cluster {
		nd = od // one copy, so changes through either are seen by both
	}
	if err := validName(nname); err != nil {
		return err
	}
	ne := nd.lookup(nname)
	if ne != nil && nd == od && ne.sfnSlot == oe.sfnSlot {
		ne = nil // same entry: a change of case only
	}
	if ne != nil {
		if ne.isDir() || oe.isDir() {
			return &iofs.PathError{Op: "rename", Path: newp, Err: errors.New("cannot replace a directory or replace with one")}
		}
		return fs.replace(od, oe, nd, ne)
	}
	if nd == od {
		done, err := fs.renameInPlace(od, oe, nname)
		if done || err != nil {
			return err
		}
	}
	if oe.isDir() && nd.cluster != od.cluster {
		if err := fs.setDotDot(oe.cluster, nd.cluster); err != nil {
			return err
		}
	}
	tail := append([]byte(nil), od.slot(oe.sfnSlot)[11:]...)
	sfnSlot := oe.sfnSlot
	if err := fs.addEntry(nd, nname, oe.attr, oe.cluster, oe.size, tail); err != nil {
		return err
	}
	if err := fs.sync(); err != nil {
		return err
	}
	// addEntry re-parsed nd (maybe od): find the old entry again by slot.
	for _, e := range od.entries {
		if e.sfnSlot == sfnSlot {
			return fs.deleteEntry(od, e)
		}
	}
	return corrupt("renamed entry vanished")
}

// renameInPlace rewrites an entry's names in its own slots when the new
// name needs no more of them. It reports false when it does not fit.
func (fs *fat32) renameInPlace(d *fatDir, e *fatEntry, name string) (bool, error) {
	others := &fatDir{}
	for _, o := range d.entries {
		if o != e {
			others.entries = append(others.entries, o)
		}
	}
	sfn, needLFN := shortNameFor(name, others)
	var ents [][]byte
	if needLFN {
		ents = lfnEntries(name, sfn)
	}
	se := bytes.Clone(d.slot(e.sfnSlot))
	copy(se, sfn[:])
	se[12] = 0 // case flags belonged to the old 8.3 name
	ents = append(ents, se)
	if len(ents) > e.sfnSlot-e.firstSlot+1 {
		return false, nil
	}
	start := e.sfnSlot - len(ents) + 1
	for i := e.firstSlot; i < start; i++ {
		d.slot(i)[0] = 0xE5
	}
	for k, b := range ents {
		copy(d.slot(start+k), b)
	}
	if err := fs.writeSlots(d, e.firstSlot, e.sfnSlot+1); err != nil {
		return false, err
	}
	d.parse()
	return true, nil
}

// replace makes ne (the target) take oe's data: oe's entry is dropped
// first, then the target's entry is repointed at the data in one 32-byte
// write, then the target's old clusters are freed. A crash leaves the old
// target (and the new data as lost clusters) or the new one.
func (fs *fat32) replace(od *fatDir, oe *fatEntry, nd *fatDir, ne *fatEntry) error {
	oldChain, err := fs.chain(ne.cluster)
	if err != nil {
		return err
	}
	src := bytes.Clone(od.slot(oe.sfnSlot))
	if err := fs.deleteEntry(od, oe); err != nil {
		return err
	}
	if err := fs.sync(); err != nil {
		return err
	}
	s := nd.slot(ne.sfnSlot)   // slots do not move when others are deleted
	copy(s[20:22], src[20:22]) // cluster high
	copy(s[22:26], src[22:26]) // write time and date
	copy(s[26:32], src[26:32]) // cluster low, size
	if err := fs.writeSlots(nd, ne.sfnSlot, ne.sfnSlot+1); err != nil {
		return err
	}
	// The target must point at the new data on disk before its old
	// clusters are freed, or it could point at reused clusters.
	if err := fs.sync(); err != nil {
		return err
	}
	nd.parse()
	fs.release(oldChain)
	return fs.flushFAT()
}

func (fs *fat32) setDotDot(dirCluster, parentCluster uint32) error {
	d, err := fs.readDir(dirCluster)
	if err != nil {
		return err
	}
	if parentCluster == fs.rootCluster {
		parentCluster = 0
	}
	for _, e := range d.entries {
		if e.short == ".." {
			s := d.slot(e.sfnSlot)
			binary.LittleEndian.PutUint16(s[20:], uint16(parentCluster>>16))
			binary.LittleEndian.PutUint16(s[26:], uint16(parentCluster))
			return fs.writeSlots(d, e.sfnSlot, e.sfnSlot+1)
		}
	}
	return nil
}

// writeFileAtomic replaces (or creates) a file: the data goes to a
// temporary file next to it, which then replaces the target in one entry
// write (see replace). A crash leaves the old file or the new one, and at
// worst a stray temporary file or clusters fsck reclaims.
func (fs *fat32) writeFileAtomic(name string, data []byte) error {
	dir, base := path.Split(path.Clean("/" + name))
	if base == "" {
		return &iofs.PathError{Op: "write", Path: name, Err: iofs.ErrInvalid}
	}
	tmpName := "." + base + ".tmp"
	tmp := path.Join(dir, tmpName)
	if err := validName(base); err != nil {
		return err
	}
	if err := validName(tmpName); err != nil {
		return err
	}
	d, _, err := fs.parent("write", tmp)
	if err != nil {
		return err
	}
	if old := d.lookup(tmpName); old != nil { // left by a crash
		if err := fs.removeEntry(d, old); err != nil {
			return err
		}
	}
	if err := fs.createFile(d, tmpName, data); err != nil {
		return fmt.Errorf("write %s on ESP: %w", name, err)
	}
	if err := fs.sync(); err != nil {
		return err
	}
	if err := fs.rename(tmp, name); err != nil {
		return errors.Join(err, fs.remove(tmp))
	}
	return nil
}

// undoAlloc frees the clusters of an entry that could not be created, so
// a failed operation does not leave lost clusters behind.
func (fs *fat32) undoAlloc(chain []uint32, cause error) error {
	fs.release(chain)
	if err := fs.flushFAT(); err != nil {
		return errors.Join(cause, err)
	}
	return cause
}

func (fs *fat32) sync() error {
	if err := fs.dev.f.Sync(); err != nil {
		return fmt.Errorf("sync ESP: %w", err)
	}
	return nil
}
