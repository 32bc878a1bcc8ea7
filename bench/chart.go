package main

import (
	"encoding/xml"
	"fmt"
	"image/color"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
)

// The chart: one horizontal bar per scenario, its median wall time as a
// multiple of the plain warm Go cache, on a log scale, with a whisker for
// the runs' min-max.

var groupColours = map[string]color.RGBA{
	"plain":     {117, 117, 117, 255},
	"disk":      {25, 118, 210, 255},
	"s3":        {0, 137, 123, 255},
	"fresh-on":  {230, 81, 0, 255},
	"fresh-off": {255, 167, 38, 255},
	"tar":       {198, 40, 40, 255},
	"many":      {106, 27, 154, 255},
}

var (
	black     = color.RGBA{0, 0, 0, 255}
	darkGrey  = color.RGBA{66, 66, 66, 255}
	lightGrey = color.RGBA{224, 224, 224, 255}
	white     = color.RGBA{255, 255, 255, 255}
)

const (
	charW  = 8.4 // average advance of a 14px monospace glyph
	charH  = 18
	rowH   = 32
	barH   = 20
	barsW  = 640
	margin = 16
)

// svg accumulates the elements of an SVG image.
type svg struct{ b strings.Builder }

func hexColour(c color.RGBA) string { return fmt.Sprintf("#%02x%02x%02x", c.R, c.G, c.B) }

// rect adds a filled rectangle.
func (s *svg) rect(x, y, w, h float64, c color.RGBA) {
	fmt.Fprintf(&s.b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n", x, y, w, h, hexColour(c))
}

// text adds s with its baseline's left end at (x, y), or its right end if
// anchor is "end", or its middle if "middle".
func (s *svg) text(x, y float64, str string, c color.RGBA, anchor string) {
	fmt.Fprintf(&s.b, "<text x=\"%.1f\" y=\"%.1f\" fill=\"%s\" text-anchor=\"%s\">", x, y, hexColour(c), anchor)
	xml.EscapeText(&s.b, []byte(str))
	s.b.WriteString("</text>\n")
}

func fmtRatio(x float64) string {
	switch {
	case x >= 10:
		return fmt.Sprintf("%.0fx", x)
	case x >= 2:
		return fmt.Sprintf("%.1fx", x)
	default:
		return fmt.Sprintf("%.2fx", x)
	}
}

// writeChart draws the ratios of every measured row to path as an SVG
// image (which GitHub shows like a picture, and which needs no font or
// image package).
func (b *s3Bench) writeChart(path string) error {
	base := b.byKey["plain-warm"].median()
	type bar struct {
		label, value  string
		med, lo, hi   float64 // ratios
		colour        color.RGBA
		notApplicable bool
	}
	var bars []bar
	maxRatio, labelChars := 1.0, 0
	for _, r := range b.rows {
		br := bar{label: r.short, colour: groupColours[r.group]}
		if r.na != "" || len(r.runs) == 0 {
			br.notApplicable, br.value = true, "n/a"
			if r.na != "" {
				br.value = "n/a: " + r.na
			}
		} else {
			xs := r.times()
			br.med, br.lo, br.hi = median(xs)/base, slices.Min(xs)/base, slices.Max(xs)/base
			br.value = fmtRatio(br.med)
			maxRatio = max(maxRatio, br.hi)
		}
		labelChars = max(labelChars, len(br.label))
		bars = append(bars, br)
	}
	// Log axis from 0.5x to a round number above the largest ratio.
	lo := 0.5
	hi := 1.0
	for _, t := range []float64{2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000} {
		hi = t
		if t >= maxRatio*1.05 {
			break
		}
	}
	labelW := float64(labelChars)*charW + 16
	valueW := 22 * charW
	width := margin + labelW + barsW + 12 + valueW + margin
	top := float64(margin + 3*charH + 16)
	height := top + float64(len(bars)*rowH) + 2*charH + margin

	var img svg
	fmt.Fprintf(&img.b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\" font-size=\"14\">\n", width, height, width, height)
	img.rect(0, 0, width, height, white)
	img.text(margin, margin+charH-4, "gobuildcache: wall time as a multiple of the plain warm Go cache", black, "start")
	sub := fmt.Sprintf("median bar, min-max whisker; log scale; lower is better. %s workload, %s, %d CPUs",
		b.wl.name, goVersionShort(), runtime.NumCPU())
	img.text(margin, margin+2*charH, sub, darkGrey, "start")
	sub2 := fmt.Sprintf("plain warm = %.2fs. MinIO on 127.0.0.1 through toxiproxy (RTT as labelled).", base)
	img.text(margin, margin+3*charH+4, sub2, darkGrey, "start")

	x0 := margin + labelW
	xOf := func(v float64) float64 {
		v = math.Min(math.Max(v, lo), hi)
		return x0 + barsW*math.Log(v/lo)/math.Log(hi/lo)
	}
	axisY := top + float64(len(bars)*rowH)
	for i := range bars {
		if i%2 == 1 {
			img.rect(margin, top+float64(i*rowH), width-2*margin, rowH, color.RGBA{247, 247, 247, 255})
		}
	}
	// Grid lines and tick labels.
	for _, t := range []float64{0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000} {
		if t < lo || t > hi {
			continue
		}
		x := xOf(t)
		c := lightGrey
		if t == 1 {
			c = darkGrey
		}
		img.rect(x, top-4, 1, axisY-top+4, c)
		img.rect(x, axisY, 1, 6, darkGrey)
		img.text(x, axisY+6+charH, fmt.Sprintf("%gx", t), darkGrey, "middle")
	}
	img.rect(x0, axisY, barsW+1, 1, darkGrey)

	for i, br := range bars {
		y := top + float64(i*rowH)
		ty := y + rowH/2 + 5
		img.text(x0-12, ty, br.label, black, "end")
		if br.notApplicable {
			img.text(x0+8, ty, br.value, darkGrey, "start")
			continue
		}
		by := y + (rowH-barH)/2
		img.rect(x0, by, max(xOf(br.med)-x0, 2), barH, br.colour)
		// Whisker: min to max.
		mid := y + rowH/2
		xl, xh := xOf(br.lo), xOf(br.hi)
		if xh-xl >= 2 {
			img.rect(xl, mid-1, xh-xl+1, 2, black)
			img.rect(xl, mid-6, 2, 12, black)
			img.rect(xh-1, mid-6, 2, 12, black)
		}
		img.text(max(xOf(br.med), xh)+10, ty, br.value, black, "start")
	}
	img.b.WriteString("</svg>\n")
	return os.WriteFile(path, []byte(img.b.String()), 0o644)
}
