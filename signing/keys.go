package signing

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Private key files.
//
// Each private key is one file keys/<role>/<keyid>.pem holding a PKCS#8
// "PRIVATE KEY" PEM block with an ed25519 key (what `openssl genpkey
// -algorithm ed25519` writes and `openssl pkey -pubout` reads). <keyid> is
// the TUF key ID: the hex sha256 of the canonical JSON of the public key as
// it appears in root.json. Files are 0600 and directories 0700. A key file
// belongs to a role only while the current root lists its key ID for that
// role; other files in the directory are ignored.

// signingKey is a private key together with its TUF identity.
type signingKey struct {
	id   string
	priv ed25519.PrivateKey
	pub  *metadata.Key
}

func newSigningKey(priv ed25519.PrivateKey) (*signingKey, error) {
	pub, err := metadata.KeyFromPublicKey(priv.Public())
	if err != nil {
		return nil, err
	}
	id, err := pub.ID()
	if err != nil {
		return nil, err
	}
	return &signingKey{id: id, priv: priv, pub: pub}, nil
}

func generateKey() (*signingKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return newSigningKey(priv)
}

func keyDir(repoDir string, role Role) string {
	return filepath.Join(repoDir, "keys", string(role))
}

func keyPath(repoDir string, role Role, id string) string {
	return filepath.Join(keyDir(repoDir, role), id+".pem")
}

// writeKey stores k durably with mode 0600 under keys/<role>/.
func writeKey(repoDir string, role Role, k *signingKey) error {
	d := keyDir(repoDir, role)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return err
	}
	// MkdirAll leaves existing directories alone and is subject to umask;
	// force 0700 so keys are never listable by others.
	if err := os.Chmod(d, 0o700); err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return err
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := writeFileAtomic(keyPath(repoDir, role, k.id), data, 0o600); err != nil {
		return fmt.Errorf("write %s key: %w", role, err)
	}
	return syncDir(filepath.Dir(d))
}

func readKey(path string) (*signingKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s: no PKCS#8 PRIVATE KEY PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an ed25519 key", path)
	}
	return newSigningKey(priv)
}

// loadRoleKeys returns the private keys on disk for the key IDs the root
// assigns to role. It fails with ErrMissingKeys when fewer than the
// threshold are present, because metadata signed with them would be
// rejected by every client.
func loadRoleKeys(repoDir string, root *metadata.RootType, role Role) ([]*signingKey, error) {
	r, ok := root.Roles[string(role)]
	if !ok {
		return nil, fmt.Errorf("%w: root has no role %q", ErrInvalid, role)
	}
	var keys []*signingKey
	for _, id := range r.KeyIDs {
		k, err := readKey(keyPath(repoDir, role, id))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if k.id != id {
			return nil, fmt.Errorf("%w: key file %s holds key %s", ErrInvalid, keyPath(repoDir, role, id), k.id)
		}
		keys = append(keys, k)
	}
	if len(keys) < r.Threshold {
		return nil, fmt.Errorf("%w: %s: have %d of threshold %d in %s", ErrMissingKeys, role, len(keys), r.Threshold, keyDir(repoDir, role))
	}
	return keys, nil
}

// removeKeys deletes the key files of ids (retired by a rotation). Old keys
// are destroyed rather than archived: a retired root key left on disk could
// still fork the root chain for nodes that have not yet seen the rotation.
func removeKeys(repoDir string, role Role, ids []string) error {
	for _, id := range ids {
		if strings.ContainsAny(id, `/\`) {
			continue
		}
		if err := os.Remove(keyPath(repoDir, role, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return syncDir(keyDir(repoDir, role))
}

// signWith replaces md's signatures with one signature per key.
func signWith[T metadata.Roles](md *metadata.Metadata[T], keys ...[]*signingKey) error {
	md.ClearSignatures()
	seen := map[string]bool{}
	for _, set := range keys {
		for _, k := range set {
			if seen[k.id] {
				continue
			}
			seen[k.id] = true
			s, err := signature.LoadED25519Signer(k.priv)
			if err != nil {
				return err
			}
			if _, err := md.Sign(s); err != nil {
				return fmt.Errorf("sign: %w", err)
			}
		}
	}
	return nil
}
