package inspect

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"path"
	"strings"
)

// Handler serves the registered heaps, in the style of net/http/pprof. It is
// meant to be mounted at /debug/zmm/:
//
//	http.Handle("/debug/zmm/", inspect.Handler())
//
// and answers, for GET (and HEAD) only:
//
//	/debug/zmm/                     an index of the heaps, with links
//	/debug/zmm/snapshot?heap=NAME   the snapshot as JSON (zmm.Snapshot's schema);
//	                                blocks=0 leaves out the live blocks and
//	                                adds their totals (see Summary)
//	/debug/zmm/profile?heap=NAME    a pprof profile of the live allocations
//	                                (see Profile), for go tool pprof
//
// heap defaults to "default". An unknown heap is a 404, another method a
// 405. Only the last element of the path matters, so the handler works
// under any prefix.
func Handler() http.Handler { return http.HandlerFunc(serve) }

func serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "zmm: method "+r.Method+" not allowed; use GET", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	if p == "" || strings.HasSuffix(p, "/") {
		serveIndex(w, r)
		return
	}
	switch path.Base(p) {
	case "snapshot":
		serveSnapshot(w, r)
	case "profile":
		serveProfile(w, r)
	default:
		http.Error(w, fmt.Sprintf("zmm: no such page %q (try snapshot or profile)", path.Base(p)), http.StatusNotFound)
	}
}

func heapParam(r *http.Request) string {
	if name := r.URL.Query().Get("heap"); name != "" {
		return name
	}
	return Default
}

func writeSnapshotError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	if errors.Is(err, ErrUnknownHeap) {
		code = http.StatusNotFound
		err = fmt.Errorf("%w (heaps: %s)", err, strings.Join(Heaps(), ", "))
	}
	http.Error(w, err.Error(), code)
}

func serveSnapshot(w http.ResponseWriter, r *http.Request) {
	s, err := Snapshot(heapParam(r))
	if err != nil {
		writeSnapshotError(w, err)
		return
	}
	page := &Summary{Snapshot: s}
	if r.URL.Query().Get("blocks") == "0" {
		page = withoutBlocks(s)
	}
	body, err := json.MarshalIndent(page, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(append(body, '\n'))
}

func serveProfile(w http.ResponseWriter, r *http.Request) {
	name := heapParam(r)
	s, err := Snapshot(name)
	if err != nil {
		writeSnapshotError(w, err)
		return
	}
	p, err := Profile(s)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", "zmm-"+name+".pb.gz"))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_ = p.Write(w) // gzipped protobuf
}

type indexRow struct {
	Name                   string
	Mode                   string
	Usage, Peak, Real      string
	Chunks, Blocks         int
	HasBlocks, Unavailable bool
	Err                    string
}

var indexTmpl = template.Must(template.New("index").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>/debug/zmm/</title>
<style>
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; }
th, td { padding: 0.2em 0.8em; text-align: right; }
th { border-bottom: 1px solid #888; }
td.l, th.l { text-align: left; }
code { background: #eee; padding: 0.1em 0.3em; }
</style></head>
<body>
<h1>/debug/zmm/</h1>
<p>The zmm heaps of this program. Take a snapshot as JSON, or a profile of the live allocations for <code>go tool pprof</code>.</p>
<table>
<tr><th class="l">heap</th><th class="l">mode</th><th>usage</th><th>peak</th><th>real usage</th><th>chunks</th><th>live blocks</th><th class="l"></th></tr>
{{range .}}<tr><td class="l">{{.Name}}</td>{{if .Err}}<td class="l" colspan="6">{{.Err}}</td>{{else}}<td class="l">{{.Mode}}</td><td>{{.Usage}}</td><td>{{.Peak}}</td><td>{{.Real}}</td><td>{{.Chunks}}</td><td>{{if .HasBlocks}}{{.Blocks}}{{else}}-{{end}}</td>{{end}}
<td class="l"><a href="snapshot?heap={{.Name}}">snapshot</a> · <a href="profile?heap={{.Name}}">profile</a></td></tr>
{{end}}</table>
<p>From a shell:</p>
<pre>
go tool pprof http://HOST/debug/zmm/profile?heap=NAME
go run ./cmd/zmmstat show http://HOST/debug/zmm/?heap=NAME
go run ./cmd/zmmstat watch http://HOST/debug/zmm/?heap=NAME
</pre>
</body></html>
`))

func serveIndex(w http.ResponseWriter, r *http.Request) {
	var rows []indexRow
	for _, name := range Heaps() {
		row := indexRow{Name: name}
		s, err := Snapshot(name)
		if err != nil {
			row.Err = err.Error()
		} else {
			row.Mode = s.Mode
			if s.Debug {
				row.Mode += ", debug"
			}
			row.Usage, row.Peak, row.Real = FormatBytes(s.Stats.Usage), FormatBytes(s.Stats.PeakUsage), FormatBytes(s.Stats.RealUsage)
			row.Chunks = s.Stats.Chunks
			row.HasBlocks = s.Debug || s.Mode != "chunks"
			row.Blocks = len(s.Blocks)
		}
		rows = append(rows, row)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if err := indexTmpl.Execute(w, rows); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}
