package verity

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"sealift/internal/testutil"
)

// interopCases are sizes around level boundaries, most of them not a power
// of 128, with the salts sealift may meet.
var interopCases = []struct {
	blocks uint64
	salt   string // key of testSalts
	gap    uint64 // blocks between data and tree (non-default hash offset)
}{
	{1, "32", 0},
	{2, "empty", 0},
	{127, "short", 0},
	{128, "32", 0},
	{129, "32", 1},
	{1000, "256", 0},
	{128*128 + 1, "32", 0},
	{20000, "empty", 3},
}

// veritysetupArgs is written out here rather than taken from
// VeritysetupArgs so the test does not trust the code it checks.
func veritysetupArgs(p Params) []string {
	salt := "-"
	if len(p.Salt) > 0 {
		salt = hex.EncodeToString(p.Salt)
	}
	return []string{
		"--no-superblock",
		fmt.Sprintf("--hash-offset=%d", p.HashOffset),
		fmt.Sprintf("--data-blocks=%d", p.DataBlocks),
		"--salt=" + salt,
	}
}

// TestVeritysetupVerifiesOurTree: our tree written after the data is
// accepted by veritysetup verify, which then rejects a flipped data byte.
func TestVeritysetupVerifiesOurTree(t *testing.T) {
	tool := testutil.RequireTool(t, "veritysetup")
	for _, tc := range interopCases {
		t.Run(fmt.Sprintf("%d/%s/gap%d", tc.blocks, tc.salt, tc.gap), func(t *testing.T) {
			p := DefaultParams(tc.blocks, testSalts[tc.salt])
			p.HashOffset += tc.gap * BlockSize
			dev, root := device(t, pattern(tc.blocks, 5), p)
			file := filepath.Join(t.TempDir(), "slot.img")
			if err := os.WriteFile(file, dev, 0o600); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"verify", file, file, hex.EncodeToString(root)}, veritysetupArgs(p)...)
			testutil.Run(t, tool, args...)

			// Also through the package's own argument list.
			args = append([]string{"verify", file, file, hex.EncodeToString(root)}, VeritysetupArgs(p)...)
			testutil.Run(t, tool, args...)

			dev[(tc.blocks/2)*BlockSize+3] ^= 0x10
			if err := os.WriteFile(file, dev, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(tool, args...).CombinedOutput()
			if err == nil {
				t.Fatalf("veritysetup verify accepted a flipped data byte:\n%s", out)
			}
		})
	}
}

var rootLine = regexp.MustCompile(`(?m)^Root hash:\s+([0-9a-f]{64})\s*$`)

// TestVeritysetupFormatMatches: veritysetup format on the same data gives
// the same root and byte-identical tree bytes.
func TestVeritysetupFormatMatches(t *testing.T) {
	tool := testutil.RequireTool(t, "veritysetup")
	for _, tc := range interopCases {
		t.Run(fmt.Sprintf("%d/%s/gap%d", tc.blocks, tc.salt, tc.gap), func(t *testing.T) {
			p := DefaultParams(tc.blocks, testSalts[tc.salt])
			p.HashOffset += tc.gap * BlockSize
			data := pattern(tc.blocks, 6)
			root, tree, err := Build(bytes.NewReader(data), p, 0)
			if err != nil {
				t.Fatal(err)
			}

			file := filepath.Join(t.TempDir(), "slot.img")
			if err := os.WriteFile(file, data, 0o600); err != nil {
				t.Fatal(err)
			}
			out := testutil.Run(t, tool, append([]string{"format", file, file}, veritysetupArgs(p)...)...)
			m := rootLine.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no root hash in veritysetup output:\n%s", out)
			}
			if m[1] != hex.EncodeToString(root) {
				t.Errorf("root %x, veritysetup %s", root, m[1])
			}

			written, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(written[:len(data)], data) {
				t.Fatal("veritysetup changed the data area")
			}
			if want := p.HashOffset + uint64(len(tree)); uint64(len(written)) < want {
				t.Fatalf("file is %d bytes after format, want at least %d", len(written), want)
			}
			theirs := written[p.HashOffset : p.HashOffset+uint64(len(tree))]
			if !bytes.Equal(theirs, tree) {
				for i := range tree {
					if tree[i] != theirs[i] {
						t.Fatalf("tree differs first at byte %d (hash block %d)", i, i/BlockSize)
					}
				}
			}
			// Nothing of the tree may lie past what TreeSize promised.
			if rest := written[p.HashOffset+uint64(len(tree)):]; len(bytes.Trim(rest, "\x00")) != 0 {
				t.Errorf("veritysetup wrote %d bytes beyond TreeSize", len(rest))
			}
		})
	}
}
