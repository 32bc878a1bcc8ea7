package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"runtime"
	"slices"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
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
	textScale = 2 // basicfont's 7x13 glyphs, drawn at twice their size
	charW     = 7 * textScale
	charH     = 13 * textScale
	rowH      = 40
	barH      = 26
	barsW     = 760
	margin    = 24
)

// drawText draws s with its top-left corner at (x, y), scale times the
// size of basicfont.Face7x13.
func drawText(dst *image.RGBA, x, y int, s string, c color.RGBA, scale int) {
	face := basicfont.Face7x13
	w := font.MeasureString(face, s).Ceil()
	if w == 0 {
		return
	}
	small := image.NewAlpha(image.Rect(0, 0, w, 13))
	d := &font.Drawer{Dst: small, Src: image.Opaque, Face: face, Dot: fixed.P(0, face.Metrics().Ascent.Ceil())}
	d.DrawString(s)
	for sy := 0; sy < 13; sy++ {
		for sx := 0; sx < w; sx++ {
			if small.AlphaAt(sx, sy).A < 128 {
				continue
			}
			draw.Draw(dst, image.Rect(x+sx*scale, y+sy*scale, x+(sx+1)*scale, y+(sy+1)*scale), image.NewUniform(c), image.Point{}, draw.Src)
		}
	}
}

func fillRect(dst *image.RGBA, r image.Rectangle, c color.RGBA) {
	draw.Draw(dst, r, image.NewUniform(c), image.Point{}, draw.Src)
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

// writeChart draws the ratios of every measured row to path as a PNG.
func (b *s3Bench) writeChart(path string) error {
	base := b.byKey["plain-warm"].median()
	type bar struct {
		label, value   string
		med, lo, hi    float64 // ratios
		colour         color.RGBA
		notApplicable  bool
		notApplicableR string
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
	labelW := labelChars*charW + 16
	valueW := 22 * charW
	width := margin + labelW + barsW + 12 + valueW + margin
	top := margin + 3*charH + 24
	height := top + len(bars)*rowH + 2*charH + margin + 8

	img := image.NewRGBA(image.Rect(0, 0, width, height))
	fillRect(img, img.Bounds(), white)
	title := "gobuildcache: wall time as a multiple of the plain warm Go cache"
	drawText(img, margin, margin, title, black, textScale)
	sub := fmt.Sprintf("median bar, min-max whisker; log scale; lower is better. %s workload, %s, %d CPUs",
		b.wl.name, goVersionShort(), runtime.NumCPU())
	drawText(img, margin, margin+charH+6, sub, darkGrey, textScale)
	sub2 := fmt.Sprintf("plain warm = %.2fs. MinIO on 127.0.0.1 through toxiproxy (RTT as labelled).", base)
	drawText(img, margin, margin+2*charH+12, sub2, darkGrey, textScale)

	x0 := margin + labelW
	xOf := func(v float64) int {
		v = math.Min(math.Max(v, lo), hi)
		return x0 + int(math.Round(float64(barsW)*math.Log(v/lo)/math.Log(hi/lo)))
	}
	axisY := top + len(bars)*rowH
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
		fillRect(img, image.Rect(x, top-4, x+1, axisY), c)
		fillRect(img, image.Rect(x, axisY, x+1, axisY+6), darkGrey)
		lbl := fmt.Sprintf("%gx", t)
		drawText(img, x-len(lbl)*charW/2, axisY+10, lbl, darkGrey, textScale)
	}
	fillRect(img, image.Rect(x0, axisY, x0+barsW+1, axisY+1), darkGrey)

	for i, br := range bars {
		y := top + i*rowH
		bg := white
		if i%2 == 1 {
			bg = color.RGBA{247, 247, 247, 255}
			fillRect(img, image.Rect(margin, y, width-margin, y+rowH), bg)
		}
		ty := y + (rowH-charH)/2
		drawText(img, x0-12-len(br.label)*charW, ty, br.label, black, textScale)
		if br.notApplicable {
			fillRect(img, image.Rect(x0+2, y+2, x0+16+len(br.value)*charW, y+rowH-2), bg)
			drawText(img, x0+8, ty, br.value, darkGrey, textScale)
			continue
		}
		by := y + (rowH-barH)/2
		fillRect(img, image.Rect(x0, by, max(xOf(br.med), x0+2), by+barH), br.colour)
		// Whisker: min to max.
		mid := y + rowH/2
		xl, xh := xOf(br.lo), xOf(br.hi)
		if xh-xl >= 2 {
			fillRect(img, image.Rect(xl, mid-1, xh+1, mid+1), black)
			fillRect(img, image.Rect(xl, mid-6, xl+2, mid+6), black)
			fillRect(img, image.Rect(xh-1, mid-6, xh+1, mid+6), black)
		}
		drawText(img, max(xOf(br.med), xh)+10, ty, br.value, black, textScale)
	}

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
