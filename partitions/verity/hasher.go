package verity

import (
	"crypto/sha256"
	"encoding"
	"hash"
)

// hasher computes salted block digests without allocating per block. Each
// goroutine needs its own.
type hasher struct {
	h    hash.Hash
	salt []byte
	// state is the marshaled sha256 state after absorbing a salt of 64 bytes
	// or more. Restoring it skips compressing the salt for every block;
	// for shorter salts Reset+Write only buffers them and measured the
	// same, so state stays nil there.
	state []byte
	sum   [DigestSize]byte
}

func newHasher(salt []byte) *hasher {
	hs := &hasher{h: sha256.New(), salt: salt}
	if len(salt) >= sha256.BlockSize {
		hs.h.Write(salt)
		if m, ok := hs.h.(encoding.BinaryMarshaler); ok {
			if st, err := m.MarshalBinary(); err == nil {
				hs.state = st
			}
		}
	}
	return hs
}

func (hs *hasher) reset() {
	if hs.state != nil {
		// Cannot fail on a state this same implementation produced.
		if err := hs.h.(encoding.BinaryUnmarshaler).UnmarshalBinary(hs.state); err == nil {
			return
		}
	}
	hs.h.Reset()
	hs.h.Write(hs.salt)
}

// digestTo writes sha256(salt || block) into dst, which must have room for
// DigestSize bytes.
func (hs *hasher) digestTo(dst, block []byte) {
	hs.reset()
	hs.h.Write(block)
	hs.h.Sum(dst[:0:DigestSize])
}

// digest returns sha256(salt || block) in the hasher's own buffer, valid
// until the next call.
func (hs *hasher) digest(block []byte) []byte {
	hs.digestTo(hs.sum[:], block)
	return hs.sum[:]
}

// digestBlocks writes the digests of the consecutive blocks in data into
// dst, one DigestSize slot per block.
func (hs *hasher) digestBlocks(dst, data []byte) {
	for len(data) > 0 {
		hs.digestTo(dst, data[:BlockSize])
		dst = dst[DigestSize:]
		data = data[BlockSize:]
	}
}
