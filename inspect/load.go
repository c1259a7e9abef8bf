package inspect

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"reflect"
	"strings"
	"time"

	"github.com/gozmm/zmm/trace"
	"github.com/gozmm/zmm/zmm"
)

// LoadTimeout bounds how long Load waits for a URL.
var LoadTimeout = 10 * time.Second

// ErrTrace is what Load and Decode return, wrapped, for an allocation
// trace (package trace's format, docs/TRACE_FORMAT.md): both are files
// of a heap's life, gzipped or not, easily taken one for the other.
var ErrTrace = errors.New("an allocation trace, not a heap snapshot")

// maxSnapshotBytes bounds what Load reads: a snapshot listing every block
// of a large debug heap is big, but not this big.
const maxSnapshotBytes = 1 << 30

// Load reads a snapshot from src: a file holding the JSON (gzipped or not),
// or an http(s) URL: the handler's snapshot page, or its index
// (http://host/debug/zmm/, whose heap= parameter is kept), to which
// "snapshot" is added. It rejects a missing file, an unreachable URL, a
// status other than 200, bad JSON, a snapshot of another version and a
// snapshot whose chunk maps do not add up, each with an error saying so.
func Load(src string) (*zmm.Snapshot, error) {
	s, err := LoadSummary(src)
	if err != nil {
		return nil, err
	}
	return s.Snapshot, nil
}

// LoadSummary is Load, keeping the totals of the blocks that the handler
// left out (blocks=0 in the URL).
func LoadSummary(src string) (*Summary, error) {
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		return loadURL(src)
	}
	f, err := os.Open(src)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: no such file", src)
		}
		return nil, err
	}
	defer f.Close()
	s, err := DecodeSummary(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	return s, nil
}

// SnapshotURL turns the URL of the handler's index, or of any of its
// pages, into the URL of its snapshot page, keeping the query.
func SnapshotURL(src string) (string, error) {
	u, err := url.Parse(src)
	if err != nil {
		return "", fmt.Errorf("bad URL %q: %v", src, err)
	}
	if u.Host == "" {
		return "", fmt.Errorf("bad URL %q: no host", src)
	}
	switch p := u.Path; {
	case p == "" || strings.HasSuffix(p, "/"):
		u.Path = p + "snapshot"
		if p == "" {
			u.Path = "/debug/zmm/snapshot"
		}
	case path.Base(p) == "snapshot":
	case path.Base(p) == "profile":
		u.Path = path.Dir(p) + "/snapshot"
	default:
		u.Path = p + "/snapshot"
	}
	return u.String(), nil
}

func loadURL(src string) (*Summary, error) {
	target, err := SnapshotURL(src)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: LoadTimeout}
	resp, err := client.Get(target)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%s: unreachable: %v", target, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		line, _, _ := strings.Cut(strings.TrimSpace(string(msg)), "\n")
		if line != "" {
			line = ": " + line
		}
		return nil, fmt.Errorf("%s: %s%s", target, resp.Status, line)
	}
	s, err := DecodeSummary(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", target, err)
	}
	return s, nil
}

// Decode reads a snapshot's JSON (gzipped or not) from r and checks it as
// Load does.
func Decode(r io.Reader) (*zmm.Snapshot, error) {
	s, err := DecodeSummary(r)
	if err != nil {
		return nil, err
	}
	return s.Snapshot, nil
}

// DecodeSummary is Decode, keeping the totals of the blocks that the
// handler left out.
func DecodeSummary(r io.Reader) (*Summary, error) {
	br := bufio.NewReader(io.LimitReader(r, maxSnapshotBytes))
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("not a snapshot: %v", err)
		}
		defer zr.Close()
		br = bufio.NewReader(io.LimitReader(zr, maxSnapshotBytes))
	}
	if magic, _ := br.Peek(len(trace.Magic)); string(magic) == trace.Magic {
		return nil, ErrTrace
	}
	data, err := io.ReadAll(br)
	if err != nil {
		return nil, fmt.Errorf("reading the snapshot: %v", err)
	}
	// A snapshot is a JSON object: say what else it is in words, not as
	// the Go type it does not fit.
	switch text := bytes.TrimLeft(data, " \t\r\n"); {
	case len(text) == 0:
		return nil, errors.New("not a snapshot: empty")
	case text[0] != '{' && json.Valid(text):
		return nil, fmt.Errorf("not a snapshot: a heap snapshot is a JSON object, and this is %s", jsonKind(text[0]))
	}
	var probe struct {
		Version       *int         `json:"version"`
		BlocksLeftOut *BlockTotals `json:"blocks_left_out"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("not a snapshot: %v", jsonError(data, err))
	}
	switch {
	case probe.Version == nil:
		return nil, fmt.Errorf("not a snapshot: no \"version\" field")
	case *probe.Version != zmm.SnapshotVersion:
		return nil, fmt.Errorf("unsupported snapshot version %d (this program reads version %d)", *probe.Version, zmm.SnapshotVersion)
	}
	s := Summary{Snapshot: new(zmm.Snapshot), BlocksLeftOut: probe.BlocksLeftOut}
	if err := json.Unmarshal(data, s.Snapshot); err != nil {
		return nil, fmt.Errorf("bad snapshot: %v", jsonError(data, err))
	}
	if err := Validate(s.Snapshot); err != nil {
		return nil, err
	}
	if s.BlocksLeftOut != nil && len(s.Blocks) > 0 {
		return nil, errors.New("bad snapshot: it lists its blocks and says it left them out")
	}
	return &s, nil
}

// jsonError says what is wrong with JSON that does not decode as a
// snapshot: where a syntax error is, or which field holds a value of the
// wrong kind.
func jsonError(data []byte, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) && se.Offset <= int64(len(data)) {
		before := data[:se.Offset]
		line := bytes.Count(before, []byte("\n")) + 1
		col := len(before) - bytes.LastIndexByte(before, '\n')
		return fmt.Errorf("bad JSON: line %d, column %d: %v", line, col, err)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		if n, ok := strings.CutPrefix(te.Value, "number "); ok {
			return fmt.Errorf("field %q holds %s, out of its range", te.Field, n)
		}
		return fmt.Errorf("field %q is a JSON %s, where a snapshot has %s", te.Field, te.Value, typeKind(te.Type))
	}
	return err
}

// jsonKind names the kind of the JSON value that starts with c.
func jsonKind(c byte) string {
	switch c {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// typeKind names the kind of JSON value that decodes into t.
func typeKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return jsonKind('{')
	case reflect.Slice, reflect.Array:
		return jsonKind('[')
	case reflect.String:
		return jsonKind('"')
	case reflect.Bool:
		return jsonKind('t')
	case reflect.Pointer:
		return typeKind(t.Elem())
	}
	return jsonKind('0')
}

// Validate checks what the reports rely on: the geometry, the bins, and
// that every chunk's runs tile its pages in order.
func Validate(s *zmm.Snapshot) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("bad snapshot: "+format, args...)
	}
	if s.PageSize == 0 || s.ChunkSize == 0 || s.ChunkSize%s.PageSize != 0 || s.ChunkSize/s.PageSize > 1<<16 {
		return bad("page size %d and chunk size %d do not fit", s.PageSize, s.ChunkSize)
	}
	pages := uint32(s.ChunkSize / s.PageSize)
	for i, b := range s.Bins {
		if b.Bin != i {
			return bad("bins[%d] is bin %d", i, b.Bin)
		}
	}
	for _, c := range s.Chunks {
		next := uint32(0)
		for _, r := range c.Runs {
			if r.Start != next || r.Pages == 0 || r.Pages > pages-r.Start {
				return bad("chunk 0x%x: run at page %d of %d pages does not follow page %d within %d pages", c.Addr, r.Start, r.Pages, next, pages)
			}
			switch r.Kind {
			case "header", "free", "large":
			case "small":
				if r.Bin < 0 || r.Bin >= len(s.Bins) {
					return bad("chunk 0x%x: run at page %d has bin %d of %d", c.Addr, r.Start, r.Bin, len(s.Bins))
				}
			default:
				return bad("chunk 0x%x: run at page %d has unknown kind %q", c.Addr, r.Start, r.Kind)
			}
			next = r.Start + r.Pages
		}
		if next != pages && len(c.Runs) > 0 {
			return bad("chunk 0x%x: runs end at page %d of %d", c.Addr, next, pages)
		}
	}
	return nil
}
