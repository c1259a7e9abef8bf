// Command ztracegen writes a synthetic allocation trace (bench/gen) to a
// file, gzip-compressed when its name ends in .gz:
//
//	go run ./bench/gen/cmd/ztracegen -kind small -n 20000 -seed 1 -o small.ztrace.gz
//
// -kind is small, large, huge, request or large-mix (see bench/gen); -n is
// the number of allocations; -per-request (request kind) and -live (large,
// huge and large-mix kinds) override the defaults. It prints a summary of the trace to
// standard error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/gozmm/zmm/bench/gen"
	"github.com/gozmm/zmm/trace"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "ztracegen:", err)
		os.Exit(2)
	}
}

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("ztracegen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kind := fs.String("kind", "", "kind of trace: "+gen.KindNames())
	n := fs.Int("n", 10000, "number of allocations")
	seed := fs.Uint64("seed", 1, "random seed")
	perRequest := fs.Int("per-request", 0, fmt.Sprintf("mean allocations per request (request kind; default %d)", gen.DefaultPerRequest))
	live := fs.Int("live", 0, fmt.Sprintf("live blocks: the mean (large and huge kinds; default %d and %d) or the count (large-mix; default %d)",
		gen.DefaultLiveLarge, gen.DefaultLiveHuge, gen.DefaultLiveLargeMix))
	out := fs.String("o", "", "output file (.ztrace or .ztrace.gz)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *out == "" {
		return errors.New("-o is required")
	}
	k, err := gen.ParseKind(*kind)
	if err != nil {
		return err
	}
	p := gen.Params{Kind: k, N: *n, Seed: *seed, PerRequest: *perRequest, Live: *live}
	if err := writeFile(*out, p); err != nil {
		return err
	}
	t, err := trace.ReadFile(*out)
	if err != nil {
		return fmt.Errorf("reading back: %w", err)
	}
	st, err := os.Stat(*out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "%s: %d bytes; %s\n", *out, st.Size(), gen.Describe(t))
	return nil
}

// writeFile generates p into path; a failed generation removes the file.
func writeFile(path string, p gen.Params) error {
	return trace.CreateFile(path, func(w io.Writer) error { return gen.Write(w, p) })
}
