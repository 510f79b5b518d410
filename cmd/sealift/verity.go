package main

import (
	"encoding/hex"
	"fmt"
	"os"

	"sealift/partitions/verity"
	"sealift/updater"
)

func init() {
	register(command{"verity format", "build the dm-verity tree of an image file and append it", cmdVerityFormat})
	register(command{"verity verify", "check an image file against its appended dm-verity tree", cmdVerityVerify})
}

func cmdVerityFormat(g *globals, args []string) error {
	fs := g.flagSet("verity format", "verity format FILE [--salt HEX] [--data-blocks N]", false)
	salt := fs.String("salt", "", "salt, hex (default: 32 random bytes)")
	blocks := fs.Uint64("data-blocks", 0, "data blocks to cover (default: the whole file); the tree is written right after them")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"verity format takes exactly one FILE"}
	}
	f, err := os.OpenFile(fs.Arg(0), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	n := *blocks
	if n == 0 {
		if fi.Size() == 0 || fi.Size()%verity.BlockSize != 0 {
			return fmt.Errorf("%w: %s is %d bytes, not a non-zero multiple of %d", updater.ErrBadInput, fs.Arg(0), fi.Size(), verity.BlockSize)
		}
		n = uint64(fi.Size() / verity.BlockSize)
	} else if n*verity.BlockSize > uint64(fi.Size()) {
		return fmt.Errorf("%w: --data-blocks %d is beyond the end of %s (%d bytes)", updater.ErrBadInput, n, fs.Arg(0), fi.Size())
	}
	var s []byte
	if *salt != "" {
		if s, err = hex.DecodeString(*salt); err != nil {
			return usageError{fmt.Sprintf("--salt: %v", err)}
		}
	} else if s, err = verity.NewSalt(); err != nil {
		return err
	}
	p := verity.DefaultParams(n, s)
	root, tree, err := verity.Build(f, p, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(tree, int64(p.HashOffset)); err != nil {
		return fmt.Errorf("write tree: %w", err)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "root hash:   %x\nsalt:        %x\ndata blocks: %d\nhash offset: %d\n", root, p.Salt, p.DataBlocks, p.HashOffset)
	return nil
}

func cmdVerityVerify(g *globals, args []string) error {
	fs := g.flagSet("verity verify", "verity verify FILE --root-hash HEX --salt HEX --data-blocks N [--hash-offset N]", false)
	rootHex := fs.String("root-hash", "", "expected root hash, hex")
	saltHex := fs.String("salt", "", "salt, hex")
	blocks := fs.Uint64("data-blocks", 0, "data blocks covered")
	off := fs.Uint64("hash-offset", 0, "byte offset of the tree (default: right after the data)")
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *rootHex == "" || *blocks == 0 {
		return usageError{"verity verify needs FILE, --root-hash and --data-blocks"}
	}
	root, err := hex.DecodeString(*rootHex)
	if err != nil {
		return usageError{fmt.Sprintf("--root-hash: %v", err)}
	}
	salt, err := hex.DecodeString(*saltHex)
	if err != nil {
		return usageError{fmt.Sprintf("--salt: %v", err)}
	}
	p := verity.DefaultParams(*blocks, salt)
	if *off != 0 {
		p.HashOffset = *off
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := verity.Verify(f, p, root, 0); err != nil {
		return fmt.Errorf("%w: %v", updater.ErrVerify, err)
	}
	fmt.Fprintln(g.stdout, "verified")
	return nil
}
