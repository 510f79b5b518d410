package oci

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// emptyJSON is the OCI empty descriptor's content.
var emptyJSON = []byte("{}")

// FileImage returns data as a one-layer OCI artifact: an image manifest
// with artifactType mediaType, the empty config ({}) and a single layer of
// type mediaType holding data. Distribution 2.8 stores it like any image,
// and the manifest bytes depend only on data and mediaType, so pushing the
// same file twice gives the same digest.
func FileImage(data []byte, mediaType string) (v1.Image, error) {
	if _, _, err := mime.ParseMediaType(mediaType); err != nil || mediaType == "" {
		return nil, fmt.Errorf("oci: bad media type %q", mediaType)
	}
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int    `json:"size"`
	}
	m := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		ArtifactType  string `json:"artifactType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{
		SchemaVersion: 2,
		MediaType:     MediaTypeImageManifest,
		ArtifactType:  mediaType,
		Config:        desc{MediaTypeEmpty, digestOf(emptyJSON), len(emptyJSON)},
		Layers:        []desc{{mediaType, digestOf(data), len(data)}},
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	layer := &bytesLayer{data: append([]byte(nil), data...), mediaType: types.MediaType(mediaType)}
	h, err := v1.NewHash(digestOf(data))
	if err != nil {
		return nil, err
	}
	layer.digest = h
	return partial.CompressedToImage(&bytesImage{manifest: raw, config: emptyJSON, layer: layer})
}

// FileFromManifest returns the layer descriptor of a one-layer artifact
// made by FileImage, checking its shape and media type.
func FileFromManifest(manifest []byte, mediaType string) (digest string, size int64, err error) {
	var m struct {
		MediaType string `json:"mediaType"`
		Layers    []struct {
			MediaType string `json:"mediaType"`
			Digest    string `json:"digest"`
			Size      int64  `json:"size"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(manifest, &m); err != nil {
		return "", 0, fmt.Errorf("oci: file artifact manifest: %w", err)
	}
	if m.MediaType != MediaTypeImageManifest {
		return "", 0, fmt.Errorf("oci: file artifact manifest has mediaType %q, want %q", m.MediaType, MediaTypeImageManifest)
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != mediaType {
		return "", 0, fmt.Errorf("oci: not a file artifact: want exactly one layer of type %q", mediaType)
	}
	l := m.Layers[0]
	if err := checkDigest(l.Digest); err != nil {
		return "", 0, err
	}
	if l.Size < 0 {
		return "", 0, fmt.Errorf("oci: file artifact layer size %d", l.Size)
	}
	return l.Digest, l.Size, nil
}

type bytesLayer struct {
	data      []byte
	digest    v1.Hash
	mediaType types.MediaType
}

func (l *bytesLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *bytesLayer) Size() (int64, error)     { return int64(len(l.data)), nil }
func (l *bytesLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.data)), nil
}
func (l *bytesLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }

type bytesImage struct {
	manifest, config []byte
	layer            *bytesLayer
}

func (i *bytesImage) RawConfigFile() ([]byte, error)      { return i.config, nil }
func (i *bytesImage) MediaType() (types.MediaType, error) { return MediaTypeImageManifest, nil }
func (i *bytesImage) RawManifest() ([]byte, error)        { return i.manifest, nil }
func (i *bytesImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == i.layer.digest {
		return i.layer, nil
	}
	return nil, fmt.Errorf("oci: no layer %s", h)
}
