package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/gozmm/zmm/inspect"
)

func cmdWatch(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	interval := fs.Duration("interval", 2*time.Second, "time between refreshes")
	count := fs.Int("count", 0, "stop after this many refreshes (0: until Ctrl-C)")
	asJSON := fs.Bool("json", false, "print each snapshot as one line of JSON")
	pos, err := parse(fs, args, 1, "URL")
	if err != nil {
		return err
	}
	if *interval <= 0 {
		return usageErr("watch: --interval must be positive")
	}
	if *count < 0 {
		return usageErr("watch: --count must not be negative")
	}
	src := pos[0]
	if !isURL(src) {
		return usageErr("watch: %q is not an http(s) URL (zmmstat show reads files)", src)
	}
	src, err = watchURL(src)
	if err != nil {
		return err
	}
	tty := isTerminal(stdout)
	var prev *inspect.Summary
	for i := 0; *count == 0 || i < *count; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(*interval):
			}
		}
		s, err := inspect.LoadSummary(src)
		if err != nil {
			if i == 0 {
				return err // nothing to watch
			}
			fmt.Fprintf(stdout, "%s  %v\n", time.Now().Format("15:04:05"), err)
			continue
		}
		if *asJSON {
			line, err := json.Marshal(s)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s\n", line)
			continue
		}
		var b strings.Builder
		if tty {
			b.WriteString("\x1b[H\x1b[2J") // home, clear the screen
		} else if i > 0 {
			b.WriteString("\n")
		}
		stop := "Ctrl-C to stop"
		if *count > 0 {
			stop = fmt.Sprintf("%d of %d", i+1, *count)
		}
		fmt.Fprintf(&b, "zmmstat watch %s  (every %v, %s)\n", pos[0], *interval, stop)
		writeSummary(&b, s)
		if prev != nil {
			fmt.Fprintf(&b, "  change      usage %s, real usage %s since the last refresh\n",
				delta(prev.Stats.Usage, s.Stats.Usage), delta(prev.Stats.RealUsage, s.Stats.RealUsage))
		}
		fmt.Fprintln(&b)
		writeBins(&b, s.Snapshot)
		if _, err := io.WriteString(stdout, b.String()); err != nil {
			return err
		}
		prev = s
	}
	return nil
}

// watchURL is the snapshot URL for src, without the blocks: watch shows
// only their totals, which the handler sends instead, and a debug heap has
// many.
func watchURL(src string) (string, error) {
	s, err := inspect.SnapshotURL(src)
	if err != nil {
		return "", err
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set("blocks", "0")
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func delta(a, b uint64) string {
	if b >= a {
		return "+" + inspect.FormatBytes(b-a)
	}
	return "-" + inspect.FormatBytes(a-b)
}
