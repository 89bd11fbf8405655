// Package buildreq is the request image/imagetest sends to its image-building helper process
// (image/internal/buildimage), and what the helper does with it.
package buildreq

import (
	"context"

	"meshroot/board"
	"meshroot/image"
)

// Request is an image.Options that crosses a process boundary (the board by name).
type Request struct {
	Board         string            `json:"board"`
	OutDir        string            `json:"out_dir"`
	Version       string            `json:"version"`
	SourceDir     string            `json:"source_dir"`
	KernelDir     string            `json:"kernel_dir"`
	Modules       []string          `json:"modules,omitempty"`
	Files         []image.File      `json:"files,omitempty"`
	ExtraCommands []string          `json:"extra_commands,omitempty"`
	Compression   image.Compression `json:"compression,omitempty"`
	OTARoot       []byte            `json:"ota_root,omitempty"`
	Budget        *image.Budget     `json:"budget,omitempty"`
	Programs      []image.Program   `json:"programs,omitempty"`
}

// Build looks the board up and builds the image.
func (r Request) Build(ctx context.Context, progress func(string, ...any)) (image.Manifest, error) {
	b, err := board.Lookup(r.Board)
	if err != nil {
		return image.Manifest{}, err
	}
	return image.Build(ctx, image.Options{
		Board:         b,
		OutDir:        r.OutDir,
		Version:       r.Version,
		SourceDir:     r.SourceDir,
		KernelDir:     r.KernelDir,
		Modules:       r.Modules,
		Files:         r.Files,
		ExtraCommands: r.ExtraCommands,
		Compression:   r.Compression,
		OTARoot:       r.OTARoot,
		Budget:        r.Budget,
		Programs:      r.Programs,
		Progress:      progress,
	})
}
