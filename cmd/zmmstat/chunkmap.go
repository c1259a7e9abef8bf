package main

import (
	"bufio"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"strings"

	"github.com/gozmm/zmm/inspect"
	"github.com/gozmm/zmm/zmm"
)

// The chunk map (`zmmstat map`): every chunk's pages as a grid of 64×8
// cells coloured by kind and bin, runs drawn as unbroken bars, with a
// legend of the bins present. One layout, two outputs: SVG as text, PNG
// with image/png and the bitmap font of font.go.

const (
	mapMargin  = 20
	cellSize   = 12 // a page
	cellPitch  = 14 // a page and the gap after it
	lineHeight = 22
	swatch     = 14
)

var (
	colBackground = color.RGBA{0xff, 0xff, 0xff, 0xff}
	colText       = color.RGBA{0x22, 0x22, 0x22, 0xff}
	colDim        = color.RGBA{0x66, 0x66, 0x66, 0xff}
	colHeader     = color.RGBA{0x33, 0x33, 0x33, 0xff}
	colFree       = color.RGBA{0xe6, 0xe6, 0xe6, 0xff}
	colLarge      = color.RGBA{0x5b, 0x67, 0x78, 0xff}
	colUnknown    = color.RGBA{0xff, 0x00, 0xff, 0xff}
)

// binColour is bin b's colour: a sweep around the colour wheel from
// yellow through red, violet and blue to green as bins grow, lightness
// alternating so that neighbours differ. Runs without a live block are
// drawn paler.
func binColour(b int, empty bool) color.RGBA {
	hue := math.Mod(55-float64(b)*300/29+720, 360)
	light := 0.48
	if b%2 == 1 {
		light = 0.62
	}
	c := hsl(hue, 0.78, light)
	if empty {
		c = mix(c, colBackground, 0.6)
	}
	return c
}

func hsl(h, s, l float64) color.RGBA {
	c := (1 - math.Abs(2*l-1)) * s
	x := c * (1 - math.Abs(math.Mod(h/60, 2)-1))
	m := l - c/2
	var r, g, b float64
	switch {
	case h < 60:
		r, g, b = c, x, 0
	case h < 120:
		r, g, b = x, c, 0
	case h < 180:
		r, g, b = 0, c, x
	case h < 240:
		r, g, b = 0, x, c
	case h < 300:
		r, g, b = x, 0, c
	default:
		r, g, b = c, 0, x
	}
	to := func(v float64) uint8 { return uint8(math.Round((v + m) * 255)) }
	return color.RGBA{to(r), to(g), to(b), 0xff}
}

func mix(a, b color.RGBA, t float64) color.RGBA {
	f := func(x, y uint8) uint8 { return uint8(math.Round(float64(x)*(1-t) + float64(y)*t)) }
	return color.RGBA{f(a.R, b.R), f(a.G, b.G), f(a.B, b.B), 0xff}
}

type mapRect struct {
	x, y, w, h int
	c          color.RGBA
	title      string // SVG tooltip
}

type mapText struct {
	x, y int // top left
	s    string
	c    color.RGBA
}

type mapDrawing struct {
	w, h  int
	rects []mapRect
	texts []mapText
}

func (d *mapDrawing) text(x, y int, s string, c color.RGBA) {
	d.texts = append(d.texts, mapText{x, y, s, c})
	d.w = max(d.w, x+len(s)*charAdvance+mapMargin)
}

func (d *mapDrawing) rect(x, y, w, h int, c color.RGBA, title string) {
	d.rects = append(d.rects, mapRect{x, y, w, h, c, title})
}

// layoutMap lays out the chunk map of s.
func layoutMap(s *zmm.Snapshot) *mapDrawing {
	d := &mapDrawing{}
	pages := int(s.ChunkSize / s.PageSize)
	rows := (pages + mapCols - 1) / mapCols
	gridW := mapCols*cellPitch - (cellPitch - cellSize)
	x0, y := mapMargin, mapMargin

	d.text(x0, y, fmt.Sprintf("zmm heap %q, %s, %s", s.Name, modeString(s), s.Time.Format("2006-01-02 15:04:05")), colText)
	y += lineHeight
	var hugeBytes uint64
	for _, h := range s.Huge {
		hugeBytes += h.Size
	}
	d.text(x0, y, fmt.Sprintf("usage %s, real %s, %s, %d huge (%s)",
		inspect.FormatBytes(s.Stats.Usage), inspect.FormatBytes(s.Stats.RealUsage), count(len(s.Chunks), "chunk"), len(s.Huge), inspect.FormatBytes(hugeBytes)), colDim)
	y += lineHeight + 10

	present := map[int]bool{}
	for _, c := range s.Chunks {
		name := fmt.Sprintf("chunk %d", c.Num)
		if c.Num == 0 {
			name += " (main)"
		}
		d.text(x0, y, fmt.Sprintf("%s at 0x%x: %d/%d pages free", name, c.Addr, c.FreePages, pages), colText)
		y += lineHeight
		// The grid's background: every page a free cell.
		for p := range pages {
			d.rect(x0+p%mapCols*cellPitch, y+p/mapCols*cellPitch, cellSize, cellSize, colFree, "")
		}
		for _, r := range c.Runs {
			var col color.RGBA
			title := fmt.Sprintf("pages %d-%d: ", r.Start, r.Start+r.Pages-1)
			if r.Pages == 1 {
				title = fmt.Sprintf("page %d: ", r.Start)
			}
			switch r.Kind {
			case "free":
				continue
			case "header":
				col, title = colHeader, title+"chunk header"
			case "large":
				col, title = colLarge, title+fmt.Sprintf("large run, %s", inspect.FormatBytes(uint64(r.Pages)*s.PageSize))
			case "small":
				col = binColour(r.Bin, r.Used == 0)
				present[r.Bin] = true
				size := uint32(0)
				if r.Bin >= 0 && r.Bin < len(s.Bins) {
					size = s.Bins[r.Bin].Size
				}
				title += fmt.Sprintf("bin %d (%d B), %s used", r.Bin, size, count(r.Used, "block"))
			default:
				col, title = colUnknown, title+r.Kind
			}
			// A run is an unbroken bar within each row it covers.
			for p := int(r.Start); p < int(r.Start+r.Pages) && p < pages; {
				row, col0 := p/mapCols, p%mapCols
				end := min(int(r.Start+r.Pages), (row+1)*mapCols, pages)
				n := end - p
				d.rect(x0+col0*cellPitch, y+row*cellPitch, n*cellPitch-(cellPitch-cellSize), cellSize, col, title)
				p = end
			}
		}
		y += rows*cellPitch + 14
	}
	if len(s.Huge) > 0 {
		d.text(x0, y, fmt.Sprintf("huge blocks (a mapping each): %d, %s", len(s.Huge), inspect.FormatBytes(hugeBytes)), colText)
		y += lineHeight
	}
	if n := len(s.CachedChunks) + len(s.CachedHuge); n > 0 {
		d.text(x0, y, fmt.Sprintf("cached for reuse: %s, %s", count(len(s.CachedChunks), "chunk"), count(len(s.CachedHuge), "huge mapping")), colDim)
		y += lineHeight
	}
	bottom := y

	// The legend, right of the grids.
	lx, ly := x0+gridW+40, mapMargin+2*lineHeight+10
	entry := func(c color.RGBA, label string) {
		d.rect(lx, ly, swatch, swatch, c, "")
		d.text(lx+swatch+8, ly, label, colText)
		ly += lineHeight
	}
	d.text(lx, ly, "one cell = one page", colDim)
	ly += lineHeight
	d.text(lx, ly, fmt.Sprintf("(%s), %d a row", inspect.FormatBytes(s.PageSize), mapCols), colDim)
	ly += lineHeight + 6
	entry(colHeader, "chunk header")
	entry(colFree, "free page")
	entry(colLarge, "large run")
	if len(present) > 0 {
		ly += 6
		d.text(lx, ly, "bin runs:", colText)
		ly += lineHeight
		for b := range 32 {
			if !present[b] {
				continue
			}
			size := uint32(0)
			if b < len(s.Bins) {
				size = s.Bins[b].Size
			}
			entry(binColour(b, false), fmt.Sprintf("bin %2d %5d B", b, size))
		}
		d.rect(lx, ly, swatch, swatch, binColour(present1(present), true), "")
		d.text(lx+swatch+8, ly, "paler: no live", colDim)
		ly += lineHeight
		d.text(lx+swatch+8, ly, "block in the run", colDim)
		ly += lineHeight
	}
	d.w = max(d.w, lx+swatch+8+16*charAdvance+mapMargin)
	d.h = max(bottom, ly) + mapMargin
	return d
}

// present1 is the smallest bin present, for the legend's pale swatch.
func present1(present map[int]bool) int {
	for b := range 32 {
		if present[b] {
			return b
		}
	}
	return 0
}

func hexColour(c color.RGBA) string { return fmt.Sprintf("#%02x%02x%02x", c.R, c.G, c.B) }

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&apos;").Replace(s)
}

func writeSVG(w io.Writer, s *zmm.Snapshot) error {
	d := layoutMap(s)
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">
<rect width="100%%" height="100%%" fill="%s"/>
<g shape-rendering="crispEdges">
`, d.w, d.h, d.w, d.h, hexColour(colBackground))
	for _, r := range d.rects {
		if r.title != "" {
			fmt.Fprintf(bw, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"><title>%s</title></rect>`+"\n",
				r.x, r.y, r.w, r.h, hexColour(r.c), xmlEscape(r.title))
		} else {
			fmt.Fprintf(bw, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", r.x, r.y, r.w, r.h, hexColour(r.c))
		}
	}
	fmt.Fprintf(bw, "</g>\n<g font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\" font-size=\"16\" xml:space=\"preserve\">\n")
	for _, t := range d.texts {
		fmt.Fprintf(bw, `<text x="%d" y="%d" fill="%s">%s</text>`+"\n", t.x, t.y+textHeight-1, hexColour(t.c), xmlEscape(t.s))
	}
	fmt.Fprintf(bw, "</g>\n</svg>\n")
	return bw.Flush()
}

func writePNG(w io.Writer, s *zmm.Snapshot) error {
	d := layoutMap(s)
	img := image.NewRGBA(image.Rect(0, 0, d.w, d.h))
	draw.Draw(img, img.Bounds(), &image.Uniform{colBackground}, image.Point{}, draw.Src)
	for _, r := range d.rects {
		draw.Draw(img, image.Rect(r.x, r.y, r.x+r.w, r.y+r.h), &image.Uniform{r.c}, image.Point{}, draw.Src)
	}
	for _, t := range d.texts {
		drawText(img, t.x, t.y, t.s, t.c)
	}
	return png.Encode(w, img)
}
