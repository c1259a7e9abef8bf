package inspect

import (
	"fmt"
	"maps"
	"slices"

	"github.com/google/pprof/profile"

	"github.com/gozmm/zmm/zmm"
)

// Profile turns a snapshot into a pprof profile of the memory in use, with
// the sample types inuse_objects (count) and inuse_space (bytes, the
// default), as Go's heap profile names them.
//
// When the snapshot lists blocks (heaps in debug, system or guard mode),
// each sample is a set of live blocks of one size from one allocation site:
// one Function per site's function, one Location per function and
// file:line, and for a reallocated block its first allocation as a second,
// calling frame. Samples carry the label kind (small, large or huge) and
// the numeric label bytes (the requested size), so pprof's -tags and
// -tagfocus work on them; inuse_space counts requested bytes.
//
// A normal heap keeps no sites, so its profile shows where the memory sits
// instead, counted at class size: the used blocks of each bin under
// synthetic functions named like "zmm.bin[7] 64B", large runs like
// "zmm.large[3 pages] 12KiB", huge blocks like "zmm.huge 4MiB", each called
// from "zmm.small", "zmm.large" or "zmm.huge".
func Profile(s *zmm.Snapshot) (*profile.Profile, error) {
	if s == nil {
		return nil, fmt.Errorf("inspect: Profile of a nil snapshot")
	}
	b := newBuilder(s)
	if len(s.Blocks) > 0 {
		b.sites(s)
	} else {
		b.classes(s)
	}
	if err := b.p.CheckValid(); err != nil {
		return nil, fmt.Errorf("inspect: building the profile: %w", err)
	}
	return b.p, nil
}

type builder struct {
	p    *profile.Profile
	m    *profile.Mapping
	fns  map[[2]string]*profile.Function
	locs map[locKey]*profile.Location
}

type locKey struct {
	fn   *profile.Function
	line int64
}

func newBuilder(s *zmm.Snapshot) *builder {
	p := &profile.Profile{
		SampleType: []*profile.ValueType{
			{Type: "inuse_objects", Unit: "count"},
			{Type: "inuse_space", Unit: "bytes"},
		},
		DefaultSampleType: "inuse_space",
		PeriodType:        &profile.ValueType{Type: "space", Unit: "bytes"},
		Period:            1,
		TimeNanos:         s.Time.UnixNano(),
		Comments: []string{fmt.Sprintf("zmm heap %q, %s mode, debug %v: usage %d bytes, real usage %d bytes",
			s.Name, s.Mode, s.Debug, s.Stats.Usage, s.Stats.RealUsage)},
	}
	// One mapping that claims full symbol information, so that pprof
	// never tries to symbolize the (absent) addresses.
	m := &profile.Mapping{ID: 1, File: "zmm", HasFunctions: true, HasFilenames: true, HasLineNumbers: true}
	p.Mapping = []*profile.Mapping{m}
	return &builder{p: p, m: m, fns: map[[2]string]*profile.Function{}, locs: map[locKey]*profile.Location{}}
}

func (b *builder) function(name, file string) *profile.Function {
	k := [2]string{name, file}
	if f := b.fns[k]; f != nil {
		return f
	}
	f := &profile.Function{ID: uint64(len(b.p.Function) + 1), Name: name, SystemName: name, Filename: file}
	b.p.Function = append(b.p.Function, f)
	b.fns[k] = f
	return f
}

func (b *builder) location(name, file string, line int) *profile.Location {
	f := b.function(name, file)
	k := locKey{f, int64(line)}
	if l := b.locs[k]; l != nil {
		return l
	}
	l := &profile.Location{ID: uint64(len(b.p.Location) + 1), Mapping: b.m, Line: []profile.Line{{Function: f, Line: int64(line)}}}
	b.p.Location = append(b.p.Location, l)
	b.locs[k] = l
	return l
}

func (b *builder) siteLocation(s zmm.SiteRecord) *profile.Location {
	name := s.Function
	if name == "" {
		name = "(unknown site)"
	}
	return b.location(name, s.File, s.Line)
}

func (b *builder) sample(locs []*profile.Location, kind string, size, count uint64) {
	b.p.Sample = append(b.p.Sample, &profile.Sample{
		Location: locs,
		Value:    []int64{int64(count), int64(count * size)},
		Label:    map[string][]string{"kind": {kind}},
		NumLabel: map[string][]int64{"bytes": {int64(size)}},
		NumUnit:  map[string][]string{"bytes": {"bytes"}},
	})
}

// sites makes one sample per site, original site, kind and size.
func (b *builder) sites(s *zmm.Snapshot) {
	type key struct {
		site, orig zmm.SiteRecord
		kind       string
		size       uint64
	}
	counts := map[key]uint64{}
	var order []key
	for _, bl := range s.Blocks {
		k := key{bl.Site, bl.Orig, bl.Kind, bl.Size}
		if counts[k] == 0 {
			order = append(order, k)
		}
		counts[k]++
	}
	for _, k := range order {
		locs := []*profile.Location{b.siteLocation(k.site)}
		if k.orig != (zmm.SiteRecord{}) {
			locs = append(locs, b.siteLocation(k.orig))
		}
		b.sample(locs, k.kind, k.size, counts[k])
	}
}

// classes makes samples per bin, large run size and huge size.
func (b *builder) classes(s *zmm.Snapshot) {
	for _, bin := range s.Bins {
		if bin.Used > 0 {
			leaf := b.location(fmt.Sprintf("zmm.bin[%d] %s", bin.Bin, shortSize(uint64(bin.Size))), "", 0)
			b.sample([]*profile.Location{leaf, b.location("zmm.small", "", 0)}, "small", uint64(bin.Size), uint64(bin.Used))
		}
	}
	page := s.PageSize
	if page == 0 {
		page = 4096
	}
	large := map[uint32]uint64{}
	for _, c := range s.Chunks {
		for _, r := range c.Runs {
			if r.Kind == "large" {
				large[r.Pages]++
			}
		}
	}
	for _, pages := range slices.Sorted(maps.Keys(large)) {
		size := uint64(pages) * page
		leaf := b.location(fmt.Sprintf("zmm.large[%d pages] %s", pages, shortSize(size)), "", 0)
		b.sample([]*profile.Location{leaf, b.location("zmm.large", "", 0)}, "large", size, large[pages])
	}
	huge := map[uint64]uint64{}
	for _, h := range s.Huge {
		huge[h.Size]++
	}
	for _, size := range slices.Sorted(maps.Keys(huge)) {
		leaf := b.location("zmm.huge "+shortSize(size), "", 0)
		b.sample([]*profile.Location{leaf, b.location("zmm.huge", "", 0)}, "huge", size, huge[size])
	}
}

// shortSize writes a size without spaces: 64B, 12KiB, 4MiB, 4100B.
func shortSize(n uint64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
