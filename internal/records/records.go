// Package records makes the JSON-like response that examples/httpserver
// serves and zmmhttp's benchmark measures: record i's values, and their
// encoding with strconv.Append*, and the whole response made on the Go heap
// (ServeGo). Both use it so that the example and the benchmark build the
// same bytes.
package records

import (
	"net/http"
	"strconv"
)

// Cities are the values of the city field; the last one needs escaping.
var Cities = []string{"Lisbon", "Zürich", "São Paulo", "Kraków", "Osaka", `Quote "City"`}

// The values of record i.
func ID(i int) int64      { return int64(i) + 1 }
func Score(i int) float64 { return float64(i*7919%100000) / 100 }
func Active(i int) bool   { return i%3 != 0 }
func CityIndex(i int) int { return i * 31 % len(Cities) }

// AppendName appends record i's name.
func AppendName(b []byte, i int) []byte {
	b = append(b, "user-"...)
	id := ID(i)
	for d := int64(100000); d > 1 && id < d; d /= 10 {
		b = append(b, '0')
	}
	return strconv.AppendInt(b, id, 10)
}

// AppendEmail appends record i's email address.
func AppendEmail(b []byte, i int) []byte {
	b = append(b, "user"...)
	b = strconv.AppendInt(b, ID(i), 10)
	return append(b, "@example.com"...)
}

// AppendRecord encodes one record as a JSON object.
func AppendRecord[S string | []byte](b []byte, id int64, name, email S, score float64, active bool, city string) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendInt(b, id, 10)
	b = append(b, `,"name":`...)
	b = AppendJSONString(b, name)
	b = append(b, `,"email":`...)
	b = AppendJSONString(b, email)
	b = append(b, `,"score":`...)
	b = strconv.AppendFloat(b, score, 'f', 2, 64)
	b = append(b, `,"active":`...)
	b = strconv.AppendBool(b, active)
	b = append(b, `,"city":`...)
	b = AppendJSONString(b, city)
	return append(b, '}')
}

// AppendJSONString appends s as a JSON string. Bytes from 0x80 up are
// copied as they are (the input is UTF-8).
func AppendJSONString[S string | []byte](b []byte, s S) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// MaxLen bounds the encoded length of a record whose name and email take
// nameEmail bytes: the fixed text, the numbers, the longest city, and every
// string byte escaped.
func MaxLen(nameEmail int) int { return 128 + 6*(nameEmail+maxCityLen) }

var maxCityLen = func() int {
	n := 0
	for _, c := range Cities {
		n = max(n, len(c))
	}
	return n
}()

// goRow is a record built on the Go heap, as a Go program would.
type goRow struct {
	id          int64
	score       float64
	name, email string
	city        string
	active      bool
}

// ServeGo writes the response of n records made the ordinary Go way: the
// records as Go structs with Go strings, the body in a growing Go slice.
// It is the Go-heap side that the example and the benchmark compare zmm with.
func ServeGo(w http.ResponseWriter, n int) {
	var rows []goRow
	for i := range n {
		rows = append(rows, goRow{
			id: ID(i), score: Score(i),
			name: string(AppendName(nil, i)), email: string(AppendEmail(nil, i)),
			city: Cities[CityIndex(i)], active: Active(i),
		})
	}
	out := make([]byte, 0, 4096)
	out = append(out, `{"count":`...)
	out = strconv.AppendInt(out, int64(n), 10)
	out = append(out, `,"records":[`...)
	for i, row := range rows {
		if i > 0 {
			out = append(out, ',')
		}
		out = AppendRecord(out, row.id, row.name, row.email, row.score, row.active, row.city)
	}
	out = append(out, "]}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.Write(out)
}
