package main

import (
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progress returns a callback for byte progress: a progress bar when
// stderr is a terminal, otherwise a structured log line every 10% (and at
// most every few seconds) so that journald and CI logs stay readable.
func (g *globals) progress(what string) (report func(done, total int64), finish func()) {
	var (
		mu   sync.Mutex
		bar  *progressbar.ProgressBar
		last int64 = -1
		at   time.Time
	)
	if isTerminal(g.stderr) {
		report = func(done, total int64) {
			mu.Lock()
			defer mu.Unlock()
			if bar == nil {
				bar = progressbar.NewOptions64(total,
					progressbar.OptionSetWriter(g.stderr),
					progressbar.OptionSetDescription(what),
					progressbar.OptionShowBytes(true),
					progressbar.OptionSetWidth(30),
					progressbar.OptionThrottle(100*time.Millisecond),
					progressbar.OptionClearOnFinish(),
				)
			}
			_ = bar.Set64(done)
		}
		return report, func() {
			mu.Lock()
			defer mu.Unlock()
			if bar != nil {
				_ = bar.Finish()
			}
		}
	}
	report = func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if total <= 0 {
			return
		}
		step := done * 10 / total
		if step == last || (done < total && time.Since(at) < 2*time.Second && last >= 0) {
			return
		}
		last, at = step, time.Now()
		g.log.WithFields(map[string]any{"bytes": done, "total": total, "percent": done * 100 / total}).Info(what)
	}
	return report, func() {}
}
