package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// Plot geometry: panels in two columns, one per method.
const (
	svgCols    = 2
	svgPanelW  = 460
	svgPanelH  = 170
	svgMarginL = 52
	svgMarginR = 46
	svgMarginT = 34
	svgMarginB = 26
	svgHeader  = 46
)

// plotStorms are the storms the plot shows: every 100 ms new-connection
// storm, in table order.
func plotStorms(r *benchReport) []stormRow {
	var out []stormRow
	for _, s := range r.Storms {
		if s.IntervalMs == 100 && s.Mode == "newconn" {
			out = append(out, s)
		}
	}
	return out
}

// renderSVG draws requests/s (blue, left axis, the same scale in every
// panel) and failures/s (red bars, right axis, the same scale in every
// panel) over time for each method of the 100 ms new-connection storm,
// with a grey tick at each acknowledged reload.
func renderSVG(r *benchReport) string {
	storms := plotStorms(r)
	rows := max((len(storms)+svgCols-1)/svgCols, 1)
	w, h := svgCols*svgPanelW, svgHeader+rows*svgPanelH
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	title := "Reload due every 100 ms, a new connection per request"
	if len(storms) > 0 {
		title += fmt.Sprintf(" (%d clients, %.0f s, %d ms slices)", storms[0].Workers, storms[0].DurationS, seriesWidth.Milliseconds())
	}
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14" font-weight="bold">%s</text>`+"\n", esc(title))
	fmt.Fprintf(&b, `<text x="10" y="38"><tspan fill="#1f5fbf">— requests/s answered</tspan>   <tspan fill="#c62828">▮ failed requests/s (right axis)</tspan>   <tspan fill="#888">| reload acknowledged</tspan></text>`+"\n")
	if len(storms) == 0 {
		b.WriteString(`<text x="10" y="70">no 100 ms new-connection storm in this run</text>` + "\n</svg>\n")
		return b.String()
	}
	okMax, failMax, tMax := 1.0, 1.0, 1.0
	perS := 1 / seriesWidth.Seconds()
	for _, s := range storms {
		for _, bk := range s.Series {
			okMax = math.Max(okMax, float64(bk.OK)*perS)
			failMax = math.Max(failMax, float64(bk.Failed)*perS)
		}
		tMax = math.Max(tMax, s.DurationS)
	}
	okMax, failMax = niceCeil(okMax), niceCeil(failMax)
	for i, s := range storms {
		x0 := (i % svgCols) * svgPanelW
		y0 := svgHeader + (i/svgCols)*svgPanelH
		panel(&b, s, x0, y0, okMax, failMax, tMax)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// panel draws one method's storm with its top-left corner at x0, y0.
func panel(b *strings.Builder, s stormRow, x0, y0 int, okMax, failMax, tMax float64) {
	pw := float64(svgPanelW - svgMarginL - svgMarginR)
	ph := float64(svgPanelH - svgMarginT - svgMarginB)
	left, top := float64(x0+svgMarginL), float64(y0+svgMarginT)
	xs := func(t float64) float64 { return left + t/tMax*pw }
	perS := 1 / seriesWidth.Seconds()
	fmt.Fprintf(b, `<g><text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", x0+10, y0+16, esc(s.MethodName))
	fmt.Fprintf(b, `<text x="%d" y="%d" fill="#444">%s requests, %s failed, %s stale, %s reloads acked</text>`+"\n",
		x0+10, y0+29, num(s.Requests), num(s.Failed), num(s.Stale), num(s.Reloads))
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#ccc"/>`+"\n", left, top, pw, ph)
	// Axes: 0 and max on each side, a tick every 5 s (1 s if short).
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#1f5fbf">%s</text>`+"\n", left-4, top+8, esc(num(int(okMax))))
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#1f5fbf">0</text>`+"\n", left-4, top+ph)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="#c62828">%s</text>`+"\n", left+pw+4, top+8, esc(num(int(failMax))))
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="#c62828">0</text>`+"\n", left+pw+4, top+ph)
	step := 5.0
	if tMax <= 6 {
		step = 1
	}
	for t := 0.0; t <= tMax+1e-9; t += step {
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#666">%gs</text>`+"\n", xs(t), top+ph+14, t)
	}
	barW := math.Max(pw/tMax*seriesWidth.Seconds()-1, 1)
	for _, bk := range s.Series {
		if bk.Failed == 0 || bk.T > tMax {
			continue
		}
		hgt := float64(bk.Failed) * perS / failMax * ph
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#c62828" opacity="0.8"/>`+"\n", xs(bk.T), top+ph-hgt, barW, hgt)
	}
	var pts []string
	for _, bk := range s.Series {
		if bk.T+seriesWidth.Seconds() > s.DurationS+1e-9 {
			break // the last slice is partial
		}
		y := top + ph - float64(bk.OK)*perS/okMax*ph
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", xs(bk.T+seriesWidth.Seconds()/2), y))
	}
	fmt.Fprintf(b, `<polyline fill="none" stroke="#1f5fbf" stroke-width="1.5" points="%s"/>`+"\n", strings.Join(pts, " "))
	for _, a := range s.Acks {
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#888" stroke-width="1"/>`+"\n", xs(a), top+ph, xs(a), top+ph-6)
	}
	b.WriteString("</g>\n")
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func esc(s string) string { return html.EscapeString(s) }
