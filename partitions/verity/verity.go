// Package verity builds and checks dm-verity hash trees that are bit-exact
// with what the Linux kernel and veritysetup use for hash format 1 with
// sha256, 4096-byte data blocks and 4096-byte hash blocks.
//
// sealift writes no verity superblock: the parameters (salt, number of data
// blocks, hash offset) and the root hash travel in the kernel command line
// and the updater state, so a slot's tree is pure hash blocks. By default the
// tree sits on the same device right after the data.
//
// Tree layout (format 1): digest(block) = sha256(salt || block). Level 0
// holds the digests of all data blocks, 128 per hash block, with the last
// hash block of every level zero-padded. Each further level holds the
// digests of the previous level's hash blocks, until a level fits in one
// hash block; the root hash is the digest of that top block. On disk the
// top level comes first and level 0 last, which is where the kernel looks
// for them. A device of a single data block has no hash blocks at all: its
// root hash is the digest of that block.
//
// The whole tree is kept in memory (1/128 of the data size, plus a little),
// which is what lets Builder accept data blocks in any order.
package verity

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

const (
	// BlockSize is the size of both data and hash blocks, in bytes.
	BlockSize = 4096
	// DigestSize is the size of a sha256 digest.
	DigestSize = 32
	// MaxSaltSize is the longest salt veritysetup accepts; the kernel would
	// take longer ones, but sealift's trees must stay checkable with it.
	MaxSaltSize = 256
	// LevelData is the MismatchError level that names a data block rather
	// than a hash block.
	LevelData = -1

	// digestsPerBlock is how many digests fit in one hash block; format 1
	// pads digests to a power of two, which sha256 already is.
	digestsPerBlock = BlockSize / DigestSize
	// maxDataBlocks keeps byte offsets of the data area within int64, the
	// offset type of io.ReaderAt.
	maxDataBlocks = math.MaxInt64 / BlockSize
)

// Params are the verity parameters that travel beside the root hash.
type Params struct {
	// Salt is prepended to every hashed block; empty means no salt.
	Salt []byte
	// DataBlocks is the number of 4096-byte data blocks covered, from
	// byte 0 of the data device.
	DataBlocks uint64
	// HashOffset is the byte offset of the tree on the hash device; a
	// multiple of BlockSize. When data and tree share a device it is at
	// least DataBlocks*BlockSize (see DefaultParams).
	HashOffset uint64
}

// DefaultParams returns sealift's usual layout: the tree directly after the
// data on the same device.
func DefaultParams(dataBlocks uint64, salt []byte) Params {
	return Params{Salt: salt, DataBlocks: dataBlocks, HashOffset: dataBlocks * BlockSize}
}

// Validate reports whether p describes a tree this package (and
// veritysetup) can build.
func (p Params) Validate() error {
	if p.DataBlocks == 0 {
		return errors.New("verity: no data blocks (dm-verity needs at least one)")
	}
	if p.DataBlocks > maxDataBlocks {
		return fmt.Errorf("verity: %d data blocks is too many", p.DataBlocks)
	}
	if len(p.Salt) > MaxSaltSize {
		return fmt.Errorf("verity: salt of %d bytes is longer than %d", len(p.Salt), MaxSaltSize)
	}
	if p.HashOffset%BlockSize != 0 {
		return fmt.Errorf("verity: hash offset %d is not a multiple of %d", p.HashOffset, BlockSize)
	}
	if p.HashOffset > math.MaxInt64-TreeSize(p.DataBlocks) {
		return fmt.Errorf("verity: hash offset %d is too large", p.HashOffset)
	}
	if TreeSize(p.DataBlocks) > math.MaxInt {
		return fmt.Errorf("verity: hash tree for %d data blocks does not fit in memory", p.DataBlocks)
	}
	return nil
}

// levelBlocks returns the number of hash blocks of each level, level 0
// first; nil when there is at most one data block. The loop stops at the
// first level of one block, which is the same level count as the kernel's
// "smallest L with (dataBlocks-1) >> (7*L) == 0".
func levelBlocks(dataBlocks uint64) []uint64 {
	var levels []uint64
	for n := dataBlocks; n > 1; {
		n = (n + digestsPerBlock - 1) / digestsPerBlock
		levels = append(levels, n)
	}
	return levels
}

// geometry is where each level lives inside the tree, in blocks from the
// start of the tree.
type geometry struct {
	blocks []uint64 // per level, level 0 first
	start  []uint64 // per level, level 0 first
	total  uint64   // blocks in the whole tree
}

func newGeometry(dataBlocks uint64) geometry {
	g := geometry{blocks: levelBlocks(dataBlocks)}
	g.start = make([]uint64, len(g.blocks))
	// The top level comes first on disk, so walk from the top down.
	for i := len(g.blocks) - 1; i >= 0; i-- {
		g.start[i] = g.total
		g.total += g.blocks[i]
	}
	return g
}

// level returns the bytes of level i within tree.
func (g geometry) level(tree []byte, i int) []byte {
	return tree[g.start[i]*BlockSize : (g.start[i]+g.blocks[i])*BlockSize]
}

// TreeSize returns the size in bytes of the hash tree for dataBlocks data
// blocks; 0 when there are at most one.
func TreeSize(dataBlocks uint64) uint64 {
	var total uint64
	for _, n := range levelBlocks(dataBlocks) {
		total += n
	}
	return total * BlockSize
}

// KernelTable returns the device-mapper table line for a verity target over
// p, e.g. for dmsetup or the dm-mod.create= kernel parameter:
//
//	0 <data sectors> verity 1 <data dev> <hash dev> 4096 4096 <data blocks> <hash start block> sha256 <root hex> <salt hex>
//
// The salt is "-" when empty, as the kernel expects. p should be valid.
func KernelTable(p Params, root []byte, dataDev, hashDev string) string {
	salt := "-"
	if len(p.Salt) > 0 {
		salt = hex.EncodeToString(p.Salt)
	}
	return strings.Join([]string{
		"0", strconv.FormatUint(p.DataBlocks*(BlockSize/512), 10), "verity", "1",
		dataDev, hashDev,
		strconv.Itoa(BlockSize), strconv.Itoa(BlockSize),
		strconv.FormatUint(p.DataBlocks, 10), strconv.FormatUint(p.HashOffset/BlockSize, 10),
		"sha256", hex.EncodeToString(root), salt,
	}, " ")
}

// VeritysetupArgs returns the veritysetup options that describe p without a
// superblock, to follow "veritysetup format|verify|open DATA HASH [ROOT]".
func VeritysetupArgs(p Params) []string {
	salt := "-"
	if len(p.Salt) > 0 {
		salt = hex.EncodeToString(p.Salt)
	}
	return []string{
		"--no-superblock", "--format=1", "--hash=sha256",
		"--data-block-size=4096", "--hash-block-size=4096",
		"--data-blocks=" + strconv.FormatUint(p.DataBlocks, 10),
		"--hash-offset=" + strconv.FormatUint(p.HashOffset, 10),
		"--salt=" + salt,
	}
}

// NewSalt returns 32 random bytes, the salt length veritysetup picks itself.
func NewSalt() ([]byte, error) {
	salt := make([]byte, 32)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("verity: reading random salt: %w", err)
	}
	return salt, nil
}

// MismatchError says where a device disagrees with its hash tree or root
// hash. Because Verify checks the stored tree top-down from the root, the
// block it names is the one that is itself wrong: its parent was already
// found good.
type MismatchError struct {
	// Level is the hash level of the bad block (0 = the level holding the
	// digests of data blocks), or LevelData for a data block.
	Level int
	// Block is the index of the bad block within its level (the data block
	// number for LevelData).
	Block uint64
	// Offset is the byte offset of the bad block on the device.
	Offset uint64
}

func (e *MismatchError) Error() string {
	if e.Level == LevelData {
		return fmt.Sprintf("verity: data block %d (offset %d) does not match its hash", e.Block, e.Offset)
	}
	return fmt.Sprintf("verity: hash block %d of level %d (offset %d) does not match its hash", e.Block, e.Level, e.Offset)
}
