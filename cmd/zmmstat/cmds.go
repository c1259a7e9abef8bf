package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/gozmm/zmm/inspect"
)

func cmdShow(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("show", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the snapshot's JSON")
	pos, err := parse(fs, args, 1, "FILE or URL")
	if err != nil {
		return err
	}
	s, err := load(pos[0])
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, s)
	}
	var b bytes.Buffer
	writeShow(&b, s)
	_, err = stdout.Write(b.Bytes())
	return err
}

// load reads a snapshot as inspect.LoadSummary does, and points at replay
// for an allocation trace.
func load(src string) (*inspect.Summary, error) {
	s, err := inspect.LoadSummary(src)
	if errors.Is(err, inspect.ErrTrace) && !isURL(src) {
		return nil, fmt.Errorf("%w: replay it with zmmstat replay %s", err, src)
	}
	return s, err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func cmdPprof(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("pprof", flag.ContinueOnError)
	out := fs.String("o", "", "the profile to write (.pb.gz)")
	pos, err := parse(fs, args, 1, "FILE or URL")
	if err != nil {
		return err
	}
	if *out == "" {
		return usageErr("pprof: missing -o OUT.pb.gz")
	}
	s, err := load(pos[0])
	if err != nil {
		return err
	}
	p, err := inspect.Profile(s.Snapshot)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := p.Write(&b); err != nil {
		return err
	}
	if err := os.WriteFile(*out, b.Bytes(), 0o644); err != nil {
		return err
	}
	var objects, space int64
	for _, smp := range p.Sample {
		objects += smp.Value[0]
		space += smp.Value[1]
	}
	what := "allocation sites"
	if len(s.Blocks) == 0 {
		what = "bins and kinds (the heap keeps no sites: use a debug heap for sites)"
	}
	fmt.Fprintf(stdout, "wrote %s: %s, %s, %s in use, by %s\nnext: go tool pprof -top %s\n",
		*out, count(len(p.Sample), "sample"), count(int(objects), "object"), inspect.FormatBytes(uint64(space)), what, *out)
	return nil
}

func cmdMap(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("map", flag.ContinueOnError)
	out := fs.String("o", "", "the picture to write: .svg or .png")
	pos, err := parse(fs, args, 1, "FILE or URL")
	if err != nil {
		return err
	}
	ext := strings.ToLower(filepath.Ext(*out))
	switch {
	case *out == "":
		return usageErr("map: missing -o OUT.svg or OUT.png")
	case ext != ".svg" && ext != ".png":
		return usageErr("map: -o %s: the picture's name must end in .svg or .png", *out)
	}
	s, err := load(pos[0])
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if ext == ".svg" {
		err = writeSVG(&b, s.Snapshot)
	} else {
		err = writePNG(&b, s.Snapshot)
	}
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, b.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: %s\n", *out, count(len(s.Chunks), "chunk"))
	return nil
}
