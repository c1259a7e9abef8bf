package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/gozmm/zmm/inspect"
	"github.com/gozmm/zmm/zmm"
)

// selftest sends requests to the server at base and prints what happened:
// that both paths answer the same bytes, the throughput and Go GC work of
// each, a pool heap as inspect shows it, and the server's counters.
func selftest(base string, c config, stdout io.Writer) error {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	get := func(path string) ([]byte, error) {
		resp, err := client.Get(base + path)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(body))
		}
		return body, err
	}

	// The same bytes from both paths, and valid JSON.
	for _, n := range []int{0, 2, 2000} {
		zb, err := get(fmt.Sprintf("/records?n=%d", n))
		if err != nil {
			return err
		}
		gb, err := get(fmt.Sprintf("/go/records?n=%d", n))
		if err != nil {
			return err
		}
		if !bytes.Equal(zb, gb) {
			return fmt.Errorf("n=%d: /records and /go/records differ:\n%s\n%s", n, zb, gb)
		}
		var doc struct {
			Count   int               `json:"count"`
			Records []json.RawMessage `json:"records"`
		}
		if err := json.Unmarshal(zb, &doc); err != nil {
			return fmt.Errorf("n=%d: not JSON: %v", n, err)
		}
		if doc.Count != n || len(doc.Records) != n {
			return fmt.Errorf("n=%d: %d records, count %d", n, len(doc.Records), doc.Count)
		}
		fmt.Fprintf(stdout, "n=%d: /records and /go/records answer the same %d bytes of JSON\n", n, len(zb))
		if n == 2 {
			fmt.Fprintf(stdout, "  %s", zb)
		}
	}

	// Load on each path: several clients with keep-alive.
	const clients = 4
	fmt.Fprintf(stdout, "\n%-12s %8s %7s %8s %8s %9s %12s %14s\n",
		"path", "requests", "clients", "time", "req/s", "gc cycles", "gc pause", "go heap alloc")
	for _, path := range []string{"/records?n=2000", "/go/records?n=2000"} {
		runtime.GC()
		before, start := readGC(), time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for i := range clients {
			wg.Go(func() {
				for range c.requests/clients + btoi(i < c.requests%clients) {
					if err := discard(client, base+path); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		elapsed, after := time.Since(start), readGC()
		close(errs)
		if err := <-errs; err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%-12s %8d %7d %8s %8.0f %9d %12v %14s\n",
			path[:len(path)-len("?n=2000")], c.requests, clients, elapsed.Round(time.Millisecond),
			float64(c.requests)/elapsed.Seconds(), after.cycles-before.cycles, after.pause-before.pause,
			inspect.FormatBytes(after.allocBytes-before.allocBytes))
	}
	fmt.Fprintln(stdout, "(gc and allocation figures are the whole process's: server and clients)")

	// A heap of the pool, between two requests.
	body, err := get("/debug/zmm/snapshot?heap=request-1&blocks=0")
	if err != nil {
		return err
	}
	var s zmm.Snapshot
	if err := json.Unmarshal(body, &s); err != nil {
		return fmt.Errorf("snapshot of request-1: %v", err)
	}
	fmt.Fprintf(stdout, "\nheap request-1 between requests: usage %s, real usage %s (peak %s), %d chunk(s)\n",
		inspect.FormatBytes(s.Stats.Usage), inspect.FormatBytes(s.Stats.RealUsage),
		inspect.FormatBytes(s.Stats.RealPeakUsage), s.Stats.Chunks)

	if c.debug {
		if _, err := get("/records?n=3&leak=1"); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "GET /records?n=3&leak=1 leaked its output buffer: see the leak report on stderr")
	}

	body, err = get("/stats")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n/stats:\n%s", body)
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// discard sends a request and reads the response into io.Discard, which
// makes no garbage: the load phase measures the server's.
func discard(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
