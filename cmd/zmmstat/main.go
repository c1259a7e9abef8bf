// Command zmmstat looks inside zmm heaps: it reports a heap snapshot (a
// file, or a running program's inspect handler), writes its pprof profile
// and a picture of its chunks, replays allocation traces, watches a live
// heap, and runs a demo.
//
//	zmmstat demo                      a PHP-like workload with a planted leak, on a debug heap
//	zmmstat show FILE|URL [--json]    the report: summary, bins, fragmentation, page maps, sites
//	zmmstat pprof FILE|URL -o OUT     a pprof profile of the live allocations
//	zmmstat map FILE|URL -o OUT       a picture of every chunk's pages (.svg or .png)
//	zmmstat replay TRACE [--json]     replay an allocation trace on a fresh heap
//	zmmstat watch URL                 a refreshing view of a running program's heap
//
// See zmmstat help for the flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"golang.org/x/sys/unix"
)

const usage = `zmmstat looks inside zmm heaps.

usage:
  zmmstat demo [--json] [--save FILE]
        run a built-in PHP-like workload on a debug heap, with a leak
        planted in its last request, and print the heap report and the
        leak report (--save writes the snapshot's JSON to FILE)
  zmmstat show FILE|URL [--json]
        report a snapshot: summary, bins, fragmentation, each chunk's page
        map, huge blocks and the top allocation sites
  zmmstat pprof FILE|URL -o OUT.pb.gz
        write a pprof profile of the live allocations by site
        (then: go tool pprof -top OUT.pb.gz)
  zmmstat map FILE|URL -o OUT.svg|OUT.png
        draw every chunk's pages coloured by kind and bin
  zmmstat replay TRACE [--json]
        replay an allocation trace (.ztrace or .ztrace.gz) on a fresh heap
        and report the heap at the end of the trace's last request
  zmmstat watch URL [--interval 2s] [--count N] [--json]
        refresh the summary and bins of a running program's heap until
        Ctrl-C, or N times
  zmmstat help
        this text

FILE is a snapshot's JSON (zmm.Heap.Snapshot, or zmmstat demo --save);
URL is a program's inspect handler, http://HOST/debug/zmm/?heap=NAME
(the heap defaults to "default"). --json prints JSON instead of a report.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks a usage error: exit code 2 and the usage text.
type errUsage struct{ msg string }

func (e *errUsage) Error() string { return e.msg }

func usageErr(format string, args ...any) error { return &errUsage{fmt.Sprintf(format, args...)} }

// run runs zmmstat with args (without the program name) and returns the
// exit code: 0, 1 for a failure (a one-line message on stderr), 2 for a
// usage error (the message and the usage text on stderr).
func run(args []string, stdout, stderr io.Writer) int {
	err := dispatch(args, stdout, stderr)
	var ue *errUsage
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "zmmstat: %s\n\n%s", ue.msg, usage)
		return 2
	default:
		msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", " ")
		fmt.Fprintf(stderr, "zmmstat: %s\n", msg)
		return 1
	}
}

func dispatch(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErr("no command")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "demo":
		return cmdDemo(args, stdout, stderr)
	case "show":
		return cmdShow(args, stdout)
	case "pprof":
		return cmdPprof(args, stdout)
	case "map":
		return cmdMap(args, stdout)
	case "replay":
		return cmdReplay(args, stdout, stderr)
	case "watch":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		defer stop()
		return cmdWatch(ctx, args, stdout)
	case "help", "-h", "-help", "--help":
		return flag.ErrHelp
	}
	return usageErr("unknown command %q", cmd)
}

// parse parses a command's flags, which may come before, between or after
// its arguments, and checks the number of arguments.
func parse(fs *flag.FlagSet, args []string, want int, what string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageErr("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != want {
		if want == 0 {
			return nil, usageErr("%s takes no arguments", fs.Name())
		}
		if len(pos) < want {
			return nil, usageErr("%s: missing %s", fs.Name(), what)
		}
		return nil, usageErr("%s: too many arguments: %s", fs.Name(), strings.Join(pos[want:], " "))
	}
	return pos, nil
}

// isURL reports whether src names a running program's handler rather than
// a file.
func isURL(src string) bool {
	return strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://")
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
