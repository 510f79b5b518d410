package rollout

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Chart geometry, in SVG user units.
const (
	chartW, chartH           = 800, 440
	plotLeft, plotRight      = 64, 776
	plotTop, plotBottom      = 96, 384
	labelCharWidth           = 6.2 // of 11-unit sans-serif text, an estimate for spacing labels
	curveColor, planColor    = "#1f6fb2", "#c0392b"
	gridColor, axisTextColor = "#dddddd", "#444444"
)

// tickSteps are the candidate spacings of the time axis's ticks.
var tickSteps = []time.Duration{
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour,
	24 * time.Hour, 2 * 24 * time.Hour, 7 * 24 * time.Hour, 14 * 24 * time.Hour, 30 * 24 * time.Hour, 60 * 24 * time.Hour,
}

// WriteSVG draws the simulation as a step chart: the simulated fleet's
// eligible share over time since the start, the wave boundaries as dashed
// lines and the plan's percentage at each boundary as a dot. The output
// depends only on the simulation, so a committed chart can be compared
// byte for byte with a regenerated one.
func (s *Simulation) WriteSVG(w io.Writer) error {
	bw := bufio.NewWriter(w)
	p := &s.Plan
	last := p.Waves[len(p.Waves)-1].After
	if last <= 0 {
		last = time.Hour
	}
	span := last + last/10 // the flat tail shows where the plan ends
	x := func(d time.Duration) float64 {
		return plotLeft + float64(d)/float64(span)*(plotRight-plotLeft)
	}
	y := func(frac float64) float64 { return plotBottom - frac*(plotBottom-plotTop) }

	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		chartW, chartH, chartW, chartH)
	fmt.Fprintf(bw, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", chartW, chartH)
	fmt.Fprintf(bw, `<text x="%d" y="22" font-size="15" font-weight="bold">Rollout: share of the fleet eligible over time</text>`+"\n", plotLeft)
	fmt.Fprintf(bw, `<text x="%d" y="40" font-size="11" fill="%s">%d waves; %d simulated nodes (random seed %d); dashed lines: wave boundaries; dots: the plan's percentage</text>`+"\n",
		plotLeft, axisTextColor, len(p.Waves), s.Nodes, s.RandSeed)

	// Grid and axes.
	for pct := 0; pct <= 100; pct += 20 {
		yy := num(y(float64(pct) / 100))
		fmt.Fprintf(bw, `<line x1="%d" y1="%s" x2="%d" y2="%s" stroke="%s"/>`+"\n", plotLeft, yy, plotRight, yy, gridColor)
		fmt.Fprintf(bw, `<text x="%d" y="%s" text-anchor="end" dominant-baseline="middle" fill="%s">%d%%</text>`+"\n", plotLeft-8, yy, axisTextColor, pct)
	}
	step := tickSteps[len(tickSteps)-1]
	for _, st := range tickSteps {
		if span/st <= 8 {
			step = st
			break
		}
	}
	for d := time.Duration(0); d <= span; d += step {
		xx := num(x(d))
		fmt.Fprintf(bw, `<line x1="%s" y1="%d" x2="%s" y2="%d" stroke="%s"/>`+"\n", xx, plotBottom, xx, plotBottom+5, axisTextColor)
		label := FormatDuration(d)
		if d == 0 {
			label = "0"
		}
		fmt.Fprintf(bw, `<text x="%s" y="%d" text-anchor="middle" fill="%s">%s</text>`+"\n", xx, plotBottom+19, axisTextColor, label)
	}
	fmt.Fprintf(bw, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s"/>`+"\n", plotLeft, plotBottom, plotRight, plotBottom, axisTextColor)
	fmt.Fprintf(bw, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s"/>`+"\n", plotLeft, plotTop, plotLeft, plotBottom, axisTextColor)
	fmt.Fprintf(bw, `<text x="%d" y="%d" text-anchor="middle" fill="%s">time since the plan's start</text>`+"\n",
		(plotLeft+plotRight)/2, plotBottom+42, axisTextColor)

	// Wave boundaries, labelled "after percent" above the plot; a label
	// that would run into the one before it goes up a row.
	var rowEnd [3]float64
	for i := range rowEnd {
		rowEnd[i] = -1e9
	}
	for _, wv := range p.Waves {
		xx := x(wv.After)
		label := fmt.Sprintf("%s %d%%", FormatDuration(wv.After), wv.Percent)
		half := labelCharWidth * float64(len(label)) / 2
		lx := min(max(xx, plotLeft+half), plotRight-half)
		row := 0
		for row < len(rowEnd)-1 && lx-half < rowEnd[row]+4 {
			row++
		}
		rowEnd[row] = lx + half
		ly := plotTop - 8 - 12*row
		fmt.Fprintf(bw, `<line x1="%s" y1="%d" x2="%s" y2="%d" stroke="%s" stroke-dasharray="4 3" stroke-opacity="0.6"/>`+"\n",
			num(xx), ly+3, num(xx), plotBottom, planColor)
		fmt.Fprintf(bw, `<text x="%s" y="%d" font-size="11" text-anchor="middle" fill="%s">%s</text>`+"\n", num(lx), ly, planColor, label)
	}

	// The simulated fleet, one sample per half unit of width: a step
	// chart drawn with horizontal and vertical moves only.
	var path strings.Builder
	samples := 2 * (plotRight - plotLeft)
	prevY := y(s.Fraction(0))
	fmt.Fprintf(&path, "M%s %s", num(x(0)), num(prevY))
	for i := 1; i <= samples; i++ {
		d := time.Duration(float64(span) * float64(i) / float64(samples))
		yy := y(s.Fraction(d))
		if yy != prevY {
			fmt.Fprintf(&path, "H%sV%s", num(x(d)), num(yy))
			prevY = yy
		}
	}
	fmt.Fprintf(&path, "H%d", plotRight)
	fmt.Fprintf(bw, `<path d="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", path.String(), curveColor)

	// The plan's points.
	for _, wv := range p.Waves {
		fmt.Fprintf(bw, `<circle cx="%s" cy="%s" r="3.5" fill="%s"/>`+"\n", num(x(wv.After)), num(y(float64(wv.Percent)/100)), planColor)
	}

	// Legend.
	lx, ly := plotRight-290, plotBottom-56
	fmt.Fprintf(bw, `<rect x="%d" y="%d" width="284" height="44" fill="#ffffff" stroke="%s"/>`+"\n", lx, ly, gridColor)
	fmt.Fprintf(bw, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>`+"\n", lx+10, ly+15, lx+34, ly+15, curveColor)
	fmt.Fprintf(bw, `<text x="%d" y="%d" dominant-baseline="middle">simulated fleet, eligible</text>`+"\n", lx+42, ly+15)
	fmt.Fprintf(bw, `<circle cx="%d" cy="%d" r="3.5" fill="%s"/>`+"\n", lx+22, ly+31, planColor)
	fmt.Fprintf(bw, `<text x="%d" y="%d" dominant-baseline="middle">plan: fleet percentage at the boundary</text>`+"\n", lx+42, ly+31)
	fmt.Fprintln(bw, `</svg>`)
	return bw.Flush()
}

// num formats a coordinate with one decimal, without a trailing ".0".
func num(v float64) string {
	return strings.TrimSuffix(strconv.FormatFloat(v, 'f', 1, 64), ".0")
}
