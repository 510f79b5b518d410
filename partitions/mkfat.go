package partitions

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"time"
)

// formatFAT32 makes a FAT32 filesystem on a region, as mkfs.fat -F 32
// would. It is written here rather than taken from go-diskfs because
// go-diskfs v1.9.4 sizes the FAT two entries short for some volume sizes
// (a 64 MiB ESP gets "129024 clusters but only space for 129022 FAT
// entries", which fsck.vfat refuses to check and Linux silently shrinks).
//
// Layout: 32 reserved sectors (boot sector 0, FSInfo 1, their backups 6
// and 7), two FATs, then the data area with the root directory in cluster
// 2. The cluster size follows Microsoft's table, shrunk when needed so
// the volume has the 65525 clusters that make it FAT32.
func formatFAT32(dev region, sectorSize, firstLBA int64, label string) error {
	bps := sectorSize
	if bps != 512 && bps != 4096 {
		return fmt.Errorf("format FAT32: sector size %d", bps)
	}
	total := dev.size / bps
	const rsvd, numFATs = 32, 2
	var clusterBytes int64
	switch size := dev.size; {
	case size <= 260*mib:
		clusterBytes = 512
	case size <= 8<<30:
		clusterBytes = 4096
	case size <= 16<<30:
		clusterBytes = 8192
	case size <= 32<<30:
		clusterBytes = 16384
	default:
		clusterBytes = 32768
	}
	spc := max(clusterBytes/bps, 1)
	var fatSz, clusters int64
	for ; ; spc /= 2 {
		fatSz, clusters = fatGeometry(total, rsvd, numFATs, spc, bps)
		if clusters >= minFAT32Clust || spc == 1 {
			break
		}
	}
	if clusters < minFAT32Clust {
		return fmt.Errorf("%w: %s holds %d clusters, FAT32 needs %d", ErrTooSmall, formatBytes(dev.size), clusters, minFAT32Clust)
	}
	if clusters > 0x0FFFFFF5 {
		return fmt.Errorf("format FAT32: %d clusters is more than FAT32 can address", clusters)
	}

	// Reserved area, FATs and the root directory cluster start zeroed: a
	// device may hold anything there.
	zero := make([]byte, 1<<20)
	for off, end := int64(0), (rsvd+numFATs*fatSz+spc)*bps; off < end; off += int64(len(zero)) {
		if _, err := dev.WriteAt(zero[:min(int64(len(zero)), end-off)], off); err != nil {
			return fmt.Errorf("format FAT32: %w", err)
		}
	}

	le := binary.LittleEndian
	bs := make([]byte, bps)
	copy(bs[0:], []byte{0xEB, 0x58, 0x90}) // jump over the BPB to the boot code
	copy(bs[3:11], "SEALIFT ")
	le.PutUint16(bs[11:], uint16(bps))
	bs[13] = byte(spc)
	le.PutUint16(bs[14:], rsvd)
	bs[16] = numFATs
	bs[21] = 0xF8              // fixed disk
	le.PutUint16(bs[24:], 63)  // sectors per track, for BIOS geometry only
	le.PutUint16(bs[26:], 255) // heads
	le.PutUint32(bs[28:], uint32(firstLBA))
	le.PutUint32(bs[32:], uint32(total))
	le.PutUint32(bs[36:], uint32(fatSz))
	le.PutUint32(bs[44:], 2) // root directory cluster
	le.PutUint16(bs[48:], 1) // FSInfo sector
	le.PutUint16(bs[50:], 6) // backup boot sector
	bs[64] = 0x80            // drive number
	bs[66] = 0x29            // extended boot signature: the next three fields are valid
	serial := make([]byte, 4)
	if _, err := rand.Read(serial); err != nil {
		le.PutUint32(serial, uint32(time.Now().UnixNano()))
	}
	copy(bs[67:71], serial)
	copy(bs[71:82], fmt.Sprintf("%-11.11s", label))
	copy(bs[82:90], "FAT32   ")
	copy(bs[90:], []byte{0xCD, 0x18, 0xEB, 0xFE}) // int 18h (try the next boot device), hang
	bs[510], bs[511] = 0x55, 0xAA

	fsi := make([]byte, bps)
	le.PutUint32(fsi[0:], fsInfoLeadSig)
	le.PutUint32(fsi[484:], fsInfoStrucSig)
	le.PutUint32(fsi[488:], uint32(clusters-1)) // all free but the root directory
	le.PutUint32(fsi[492:], 3)
	le.PutUint32(fsi[508:], fsInfoTrailSig)

	fat := make([]byte, bps)
	le.PutUint32(fat[0:], 0x0FFFFFF8) // media byte in entry 0
	le.PutUint32(fat[4:], 0x0FFFFFFF) // entry 1: clean, no errors
	le.PutUint32(fat[8:], fatEOC)     // root directory: one cluster

	// The root directory holds the volume label, as mkfs.fat writes it.
	root := sfnEntry(pad83("", ""), attrVolumeID, 0, 0, time.Now())
	copy(root[:11], fmt.Sprintf("%-11.11s", label))

	writes := []struct {
		b   []byte
		off int64
	}{
		{fat, rsvd * bps},
		{fat, (rsvd + fatSz) * bps},
		{root, (rsvd + numFATs*fatSz) * bps},
		{fsi, 1 * bps},
		{fsi, 7 * bps},
		{bs, 6 * bps},
		{bs, 0}, // last: until here nothing recognises the region as FAT
	}
	for _, w := range writes {
		if _, err := dev.WriteAt(w.b, w.off); err != nil {
			return fmt.Errorf("format FAT32: %w", err)
		}
	}
	return nil
}

// fatGeometry finds the smallest FAT that maps every cluster of the data
// area it leaves, and that cluster count.
func fatGeometry(total, rsvd, numFATs, spc, bps int64) (fatSz, clusters int64) {
	perSector := bps / 4
	fatSz = 1
	for {
		clusters = (total - rsvd - numFATs*fatSz) / spc
		if clusters <= 0 || fatSz*perSector >= clusters+2 {
			return fatSz, max(clusters, 0)
		}
		// Jump close to the answer, then step.
		need := (clusters + 2 + perSector - 1) / perSector
		if need > fatSz+1 {
			fatSz = need - 1
		}
		fatSz++
	}
}
