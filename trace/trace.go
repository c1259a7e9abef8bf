// Package trace reads and writes allocation traces, version 1 of the format
// specified in the repository's [docs/TRACE_FORMAT.md]: the sequence of
// alloc, free, realloc and request-end calls a program made, with sizes, so
// that any allocator can replay the same work. Package
// github.com/gozmm/zmm/trace/replay replays them; hooks.Tracer records them
// from a live heap.
//
// A trace file is a 16-byte header (the magic "ZMMTRACE", a little-endian
// u32 version = 1 and a u32 reserved = 0) followed by 16-byte records: op
// (1 byte), three zero bytes, id (u32), size (u64). Traces are stored
// gzip-compressed as .ztrace.gz; Read detects gzip by its magic bytes, so
// plain .ztrace files are read too.
//
// Read validates everything the format says (magic, version, reserved
// field, whole records, known ops, zero padding, ids that are live when
// freed or reallocated and not live when allocated, sizes up to 2^48, zero
// fields where the spec says 0) and reports the first problem as a
// *FormatError naming the record index. A trace that Read accepts can be
// replayed without checks.
//
// Hostile input cannot make Read allocate much more than the decoded trace
// itself needs: nothing is preallocated from the input, ids are capped at
// MaxIDs (the live-id set is a bitset of at most MaxIDs bits, 8 MiB) and
// the number of records at MaxRecords.
//
// [docs/TRACE_FORMAT.md]: https://github.com/gozmm/zmm/blob/main/docs/TRACE_FORMAT.md
package trace

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Version is the format version this package reads and writes.
const Version = 1

// Magic is the first 8 bytes of every trace.
const Magic = "ZMMTRACE"

const (
	// HeaderSize is the size of the file header.
	HeaderSize = 16
	// RecordSize is the size of one record.
	RecordSize = 16
	// MaxSize is the largest block size a record may carry (2^48).
	MaxSize = 1 << 48
	// MaxIDs bounds the ids: every id is below MaxIDs. A replayer keeps
	// live blocks in a slice indexed by id, so a larger id in a hostile
	// trace would make it allocate gigabytes.
	MaxIDs = 1 << 26
	// MaxRecords bounds the records Read loads (2 GiB of decoded records);
	// a gzip bomb stops there with an error.
	MaxRecords = 1 << 27
)

// Op is a record's operation.
type Op uint8

// The operations of format version 1.
const (
	// OpAlloc: a new block of Size bytes, known from now on as ID.
	OpAlloc Op = 1
	// OpFree: the block ID is freed; Size is 0.
	OpFree Op = 2
	// OpRealloc: the block ID is resized to Size and keeps its id.
	OpRealloc Op = 3
	// OpRequestEnd: every block still live is released (the request's
	// heap is reset); ID and Size are 0.
	OpRequestEnd Op = 4
)

func (o Op) String() string {
	switch o {
	case OpAlloc:
		return "alloc"
	case OpFree:
		return "free"
	case OpRealloc:
		return "realloc"
	case OpRequestEnd:
		return "request-end"
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// Record is one operation of a trace.
type Record struct {
	Op   Op
	ID   uint32
	Size uint64
}

func (r Record) String() string {
	switch r.Op {
	case OpAlloc, OpRealloc:
		return fmt.Sprintf("%v id=%d size=%d", r.Op, r.ID, r.Size)
	case OpFree:
		return fmt.Sprintf("%v id=%d", r.Op, r.ID)
	case OpRequestEnd:
		return r.Op.String()
	}
	return fmt.Sprintf("%v id=%d size=%d", r.Op, r.ID, r.Size)
}

// Trace is a whole trace in memory, with the facts about it a replayer
// needs before it starts. Read fills every field; for a trace built by
// hand, Analyze fills the derived ones. Write uses Records alone.
type Trace struct {
	Records []Record

	// IDs is one more than the largest id any record uses (0 for a trace
	// without allocations): the length of a replayer's slice of live
	// blocks indexed by id.
	IDs int
	// MaxLive is the largest number of blocks live at one time.
	MaxLive int
	// Allocs, Frees, Reallocs and Requests count the records of each op
	// (Requests counts request ends).
	Allocs, Frees, Reallocs, Requests int
}

// Analyze validates t.Records and sets the derived fields of t from them.
// It returns a *FormatError naming the first invalid record; t is left
// unchanged then.
func (t *Trace) Analyze() error {
	var v validator
	for i, r := range t.Records {
		if err := v.check(i, r); err != nil {
			return err
		}
	}
	v.fill(t)
	return nil
}

// FormatError is what Read (and Write, for an invalid trace) returns when a
// trace breaks the format. Index is the record's index, counting from 0
// after the header, or -1 for a problem with the header.
type FormatError struct {
	Index int
	Msg   string
}

func (e *FormatError) Error() string {
	if e.Index < 0 {
		return "trace: header: " + e.Msg
	}
	return fmt.Sprintf("trace: record %d: %s", e.Index, e.Msg)
}

func formatErr(index int, format string, args ...any) *FormatError {
	return &FormatError{Index: index, Msg: fmt.Sprintf(format, args...)}
}

// validator checks records one by one and keeps the derived facts.
type validator struct {
	live []uint64 // bitset of live ids, grown as ids appear
	// since lists the ids allocated since the last request end, so that a
	// request end clears their bits only; when it grows as long as live,
	// sinceFull says to clear all of live instead. Either way a request
	// end costs no more than the allocs before it.
	since     []uint32
	sinceFull bool
	nLive     int
	maxLive   int
	ids       int
	counts    [5]int
}

func (v *validator) isLive(id uint32) bool {
	w := int(id >> 6)
	return w < len(v.live) && v.live[w]&(1<<(id&63)) != 0
}

func (v *validator) setLive(id uint32) {
	w := int(id >> 6)
	if w >= len(v.live) {
		// Grow to the word needed, doubling, never beyond MaxIDs bits.
		n := max(w+1, 2*len(v.live), 16)
		n = min(n, MaxIDs/64)
		grown := make([]uint64, n)
		copy(grown, v.live)
		v.live = grown
	}
	v.live[w] |= 1 << (id & 63)
}

func (v *validator) clearLive(id uint32) { v.live[id>>6] &^= 1 << (id & 63) }

// check validates record i, given every record before it, and updates the
// state.
func (v *validator) check(i int, r Record) error {
	if i >= MaxRecords {
		return formatErr(i, "too many records (at most %d)", MaxRecords)
	}
	switch r.Op {
	case OpAlloc, OpFree, OpRealloc, OpRequestEnd:
	default:
		return formatErr(i, "unknown op %d", uint8(r.Op))
	}
	if r.Op == OpRequestEnd {
		if r.ID != 0 {
			return formatErr(i, "request end with id %d (must be 0)", r.ID)
		}
		if r.Size != 0 {
			return formatErr(i, "request end with size %d (must be 0)", r.Size)
		}
		if v.sinceFull {
			clear(v.live)
		} else {
			for _, id := range v.since {
				v.clearLive(id)
			}
		}
		v.since, v.sinceFull = v.since[:0], false
		v.nLive = 0
		v.counts[r.Op]++
		return nil
	}
	if r.ID >= MaxIDs {
		return formatErr(i, "%v of id %d: ids must be below %d", r.Op, r.ID, MaxIDs)
	}
	if r.Size > MaxSize {
		return formatErr(i, "%v of id %d with size %d, above 2^48", r.Op, r.ID, r.Size)
	}
	switch r.Op {
	case OpAlloc:
		if v.isLive(r.ID) {
			return formatErr(i, "alloc of id %d, which is already live", r.ID)
		}
		v.setLive(r.ID)
		if !v.sinceFull {
			if len(v.since) >= max(len(v.live), 64) {
				v.since, v.sinceFull = v.since[:0], true
			} else {
				v.since = append(v.since, r.ID)
			}
		}
		v.nLive++
		v.maxLive = max(v.maxLive, v.nLive)
		v.ids = max(v.ids, int(r.ID)+1)
	case OpFree:
		if r.Size != 0 {
			return formatErr(i, "free of id %d with size %d (must be 0)", r.ID, r.Size)
		}
		if !v.isLive(r.ID) {
			return formatErr(i, "free of id %d, which is not live", r.ID)
		}
		v.clearLive(r.ID)
		v.nLive--
	case OpRealloc:
		if !v.isLive(r.ID) {
			return formatErr(i, "realloc of id %d, which is not live", r.ID)
		}
	}
	v.counts[r.Op]++
	return nil
}

func (v *validator) fill(t *Trace) {
	t.IDs = v.ids
	t.MaxLive = v.maxLive
	t.Allocs = v.counts[OpAlloc]
	t.Frees = v.counts[OpFree]
	t.Reallocs = v.counts[OpRealloc]
	t.Requests = v.counts[OpRequestEnd]
}

// Reader reads a trace record by record, validating as it goes. Use it to
// stream a trace too large to hold; Read loads a whole one.
type Reader struct {
	r     io.Reader // the decoded stream
	gz    *gzip.Reader
	index int
	v     validator
	buf   [RecordSize]byte
	err   error // sticky
}

// NewReader reads and checks the header of the trace in r, decompressing
// it first if it starts with the gzip magic.
func NewReader(r io.Reader) (*Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	tr := &Reader{r: br}
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("trace: gzip: %w", err)
		}
		tr.gz, tr.r = gz, bufio.NewReaderSize(gz, 64<<10)
	}
	var h [HeaderSize]byte
	n, err := readFull(tr.r, h[:])
	switch {
	case err != nil && err != io.EOF:
		return nil, tr.wrapIOErr(-1, err)
	case n < HeaderSize:
		return nil, formatErr(-1, "truncated header: %d of %d bytes", n, HeaderSize)
	case string(h[:8]) != Magic:
		return nil, formatErr(-1, "bad magic %q (want %q)", h[:8], Magic)
	}
	if ver := binary.LittleEndian.Uint32(h[8:]); ver != Version {
		return nil, formatErr(-1, "unsupported version %d (want %d)", ver, Version)
	}
	if res := binary.LittleEndian.Uint32(h[12:]); res != 0 {
		return nil, formatErr(-1, "reserved field is %#x (must be 0)", res)
	}
	return tr, nil
}

// readFull reads len(b) bytes unless the stream ends first; it returns
// io.EOF (with the count read) for a clean end, and any other error as it
// is, so that a truncated record is told apart from a broken gzip stream.
func readFull(r io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			if err == io.EOF && n == len(b) {
				return n, nil
			}
			return n, err
		}
	}
	return n, nil
}

// wrapIOErr reports an error of the underlying reader or of the gzip
// stream. It is not a *FormatError: the bytes of the trace itself could
// not be had.
func (tr *Reader) wrapIOErr(index int, err error) error {
	where := "header"
	if index >= 0 {
		where = fmt.Sprintf("record %d", index)
	}
	if tr.gz != nil {
		return fmt.Errorf("trace: %s: gzip: %w", where, err)
	}
	return fmt.Errorf("trace: %s: read: %w", where, err)
}

// Next returns the next record, or io.EOF after the last one. Any other
// error is final: a *FormatError for an invalid trace, or the wrapped error
// of the underlying reader or the gzip stream.
func (tr *Reader) Next() (Record, error) {
	if tr.err != nil {
		return Record{}, tr.err
	}
	r, err := tr.next()
	if err != nil {
		tr.err = err
		return Record{}, err
	}
	tr.index++
	return r, nil
}

func (tr *Reader) next() (Record, error) {
	i := tr.index
	n, err := readFull(tr.r, tr.buf[:])
	if err == io.EOF {
		if n == 0 {
			return Record{}, io.EOF
		}
		return Record{}, formatErr(i, "truncated record: %d of %d bytes (a trace is 16 + 16·k bytes long)", n, RecordSize)
	}
	if err != nil {
		return Record{}, tr.wrapIOErr(i, err)
	}
	b := &tr.buf
	r := Record{Op: Op(b[0]), ID: binary.LittleEndian.Uint32(b[4:]), Size: binary.LittleEndian.Uint64(b[8:])}
	if r.Op >= OpAlloc && r.Op <= OpRequestEnd && (b[1]|b[2]|b[3]) != 0 {
		return Record{}, formatErr(i, "%v: padding bytes 1..3 are % x (must be 0)", r.Op, b[1:4])
	}
	if err := tr.v.check(i, r); err != nil {
		return Record{}, err
	}
	return r, nil
}

// AppendHeader appends the 16-byte header of a version 1 trace to b.
func AppendHeader(b []byte) []byte {
	b = append(b, Magic...)
	b = binary.LittleEndian.AppendUint32(b, Version)
	return binary.LittleEndian.AppendUint32(b, 0)
}

// AppendRecord appends the 16-byte encoding of r to b, without validating
// it (tests use it to build invalid traces; Writer validates).
func AppendRecord(b []byte, r Record) []byte {
	b = append(b, byte(r.Op), 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, r.ID)
	return binary.LittleEndian.AppendUint64(b, r.Size)
}

// Read reads a whole trace, plain or gzip-compressed, and validates it.
// It returns a *FormatError naming the record index for an invalid trace,
// and a wrapped error of the underlying reader or the gzip decoder when the
// bytes cannot be read.
func Read(r io.Reader) (*Trace, error) {
	tr, err := NewReader(r)
	if err != nil {
		return nil, err
	}
	t := &Trace{}
	for {
		rec, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		t.Records = append(t.Records, rec)
	}
	tr.v.fill(t)
	return t, nil
}

// ReadFile reads the trace in the file at path (see Read).
func ReadFile(path string) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// Writer writes a trace record by record, validating each as Read would:
// a trace a Writer accepted is one Read accepts. It buffers; call Flush at
// the end.
type Writer struct {
	w     *bufio.Writer
	v     validator
	index int
	err   error // sticky
	// rec is the scratch space of Write: a local array would escape
	// through the bufio.Writer and cost a Go allocation per record.
	rec [RecordSize]byte
}

// NewWriter writes the header to w and returns a Writer for the records.
func NewWriter(w io.Writer) (*Writer, error) {
	tw := &Writer{w: bufio.NewWriterSize(w, 64<<10)}
	var h [HeaderSize]byte
	if _, err := tw.w.Write(AppendHeader(h[:0])); err != nil {
		return nil, err
	}
	return tw, nil
}

// Write validates and writes one record. An invalid record is refused
// with a *FormatError and not written; the Writer stays usable.
func (tw *Writer) Write(r Record) error {
	if tw.err != nil {
		return tw.err
	}
	if err := tw.v.check(tw.index, r); err != nil {
		return err
	}
	if _, err := tw.w.Write(AppendRecord(tw.rec[:0], r)); err != nil {
		tw.err = err
		return err
	}
	tw.index++
	return nil
}

// Records returns how many records were written.
func (tw *Writer) Records() int { return tw.index }

// Flush writes any buffered data to the underlying writer.
func (tw *Writer) Flush() error {
	if tw.err != nil {
		return tw.err
	}
	if err := tw.w.Flush(); err != nil {
		tw.err = err
		return err
	}
	return nil
}

// Write writes t.Records as a plain (uncompressed) trace to w. It refuses
// an invalid trace with a *FormatError, possibly after writing part of it.
func Write(w io.Writer, t *Trace) error {
	tw, err := NewWriter(w)
	if err != nil {
		return err
	}
	for _, r := range t.Records {
		if err := tw.Write(r); err != nil {
			return err
		}
	}
	return tw.Flush()
}

// WriteFile writes t to the file at path, gzip-compressed when the path
// ends in .gz. An invalid trace is refused with a *FormatError before the
// file is created.
func WriteFile(path string, t *Trace) error {
	check := Trace{Records: t.Records}
	if err := check.Analyze(); err != nil {
		return err
	}
	return CreateFile(path, func(w io.Writer) error { return Write(w, t) })
}

// CreateFile creates the file at path and lets write fill it through a
// writer that gzip-compresses when the path ends in .gz. If write or the
// file fails, the file is removed. Generators that stream records use it
// directly.
func CreateFile(path string, write func(io.Writer) error) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	if !strings.HasSuffix(path, ".gz") {
		return write(f)
	}
	gz, err := gzip.NewWriterLevel(f, gzip.BestCompression)
	if err != nil {
		return err
	}
	if err := write(gz); err != nil {
		return err
	}
	return gz.Close()
}

// IsFormatError reports whether err is or wraps a *FormatError, and
// returns it.
func IsFormatError(err error) (*FormatError, bool) {
	var fe *FormatError
	ok := errors.As(err, &fe)
	return fe, ok
}
