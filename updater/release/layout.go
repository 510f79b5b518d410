package release

import (
	"context"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"sealift/updater/oci"
)

// WriteLayout adds img to the OCI image layout at dir (created if needed)
// and points tag at it in index.json (org.opencontainers.image.ref.name),
// replacing what the tag named before; other tags and blobs stay. This is
// the medium for air-gapped sites and VM tests (oci.NewLayout reads it).
func WriteLayout(dir string, img v1.Image, tag string) error {
	p, err := oci.NewLayoutPublisher(dir)
	if err != nil {
		return err
	}
	_, _, err = p.PushImage(context.Background(), img, tag)
	return err
}
