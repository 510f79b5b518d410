package agent

import (
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"sealift/updater"
	"sealift/updater/state"
)

// Metrics exports what the agent knows for Prometheus, on its own
// registry so only sealift's series are served.
type Metrics struct {
	reg        *prometheus.Registry
	info       *prometheus.GaugeVec
	step       *prometheus.GaugeVec
	lastStep   prometheus.Gauge
	nextStep   prometheus.Gauge
	lastCheck  prometheus.Gauge
	checkOK    prometheus.Gauge
	available  prometheus.Gauge
	failed     prometheus.Gauge
	lockHeld   prometheus.Gauge
	eligibleAt prometheus.Gauge
	rollbacks  prometheus.Gauge
	hold       *prometheus.GaugeVec
	holdSince  *prometheus.GaugeVec
	skipped    prometheus.Gauge
	mu         sync.Mutex
}

// NewMetrics creates the series.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sealift_info",
			Help: "1 for the running release: its version and slot."}, []string{"version", "slot"}),
		step: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sealift_agent_state",
			Help: "1 for what the agent's last step did or waits for (up-to-date, staged, wait-window, wait-lock, trial, error, ...)."}, []string{"state"}),
		lastStep: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sealift_agent_last_step_timestamp_seconds", Help: "When the agent last decided."}),
		nextStep: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sealift_agent_next_step_timestamp_seconds", Help: "When the agent decides next (a window's start, the next check)."}),
		lastCheck: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sealift_last_check_timestamp_seconds",
			Help: "When the agent last checked for a release."}),
		checkOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sealift_last_check_success",
			Help: "1 if the last check (and download) succeeded, 0 if it failed."}),
		available: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sealift_update_available",
			Help: "1 if the last check found a release this node takes."}),
		failed: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sealift_failed_releases",
			Help: "Releases that fell back on this node and are not retried."}),
		lockHeld: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sealift_fleetlock_held",
			Help: "1 while this node holds the fleet's reboot lock."}),
		// A gauge over the persisted history rather than a counter in
		// memory: fallbacks happen across reboots, before the agent runs.
		eligibleAt: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sealift_rollout_eligible_timestamp_seconds",
			Help: "When this node may take the newest release under its rollout plan (0: no plan, halted, or beyond the plan)."}),
		rollbacks: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sealift_rollbacks",
			Help: "Fallbacks from a new slot in the node's recorded history (its newest 300 events)."}),
	}
	m.hold = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sealift_hold",
		Help: "1 for each operator hold in force: kind skip or pin with its version, or pause (version empty)."}, []string{"kind", "version"})
	m.holdSince = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sealift_hold_since_timestamp_seconds",
		Help: "When each operator hold in force was set (to find forgotten ones)."}, []string{"kind", "version"})
	m.skipped = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sealift_hold_skipped_versions",
		Help: "Releases an operator hold skips on this node (cancelled, rolled back from, or skipped)."})
	m.reg.MustRegister(m.info, m.step, m.lastStep, m.nextStep, m.lastCheck, m.checkOK, m.available, m.failed, m.lockHeld, m.eligibleAt, m.rollbacks,
		m.hold, m.holdSince, m.skipped)
	return m
}

// Handler serves the metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Observe updates the series from a step, the node's status after it and
// its recorded history (nil: unchanged).
func (m *Metrics) Observe(info StepInfo, st *updater.Status, events []state.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.step.Reset()
	m.step.WithLabelValues(info.Action).Set(1)
	m.lastStep.Set(float64(info.At.Unix()))
	m.nextStep.Set(float64(info.Next.Unix()))
	switch info.Action {
	case ActionUpToDate, ActionStaged:
		m.lastCheck.Set(float64(info.At.Unix()))
		m.checkOK.Set(1)
		m.available.Set(map[bool]float64{true: 1, false: 0}[info.Check != nil && info.Check.Take != nil])
		m.eligibleAt.Set(0)
		if c := info.Check; c != nil && c.Rollout != nil && !c.Rollout.At.IsZero() {
			m.eligibleAt.Set(float64(c.Rollout.At.Unix()))
		}
	case ActionWaitRelease, ActionCancelled:
		// The signed metadata was refreshed to judge the staged update.
		m.lastCheck.Set(float64(info.At.Unix()))
		m.checkOK.Set(1)
	case ActionError:
		m.lastCheck.Set(float64(info.At.Unix()))
		m.checkOK.Set(0)
	}
	if st != nil {
		m.info.Reset()
		for _, s := range st.Slots {
			if s.Running && s.Record != nil {
				m.info.WithLabelValues(s.Record.Version, string(s.Slot)).Set(1)
			}
		}
		m.failed.Set(float64(len(st.Failed)))
		m.lockHeld.Set(map[bool]float64{true: 1, false: 0}[st.FleetLock != nil])
		m.hold.Reset()
		m.holdSince.Reset()
		skipped := 0
		for _, h := range st.Holds {
			m.hold.WithLabelValues(string(h.Kind), h.Version).Set(1)
			m.holdSince.WithLabelValues(string(h.Kind), h.Version).Set(float64(h.Since.Unix()))
			if h.Kind == state.HoldSkip {
				skipped++
			}
		}
		m.skipped.Set(float64(skipped))
	}
	if events != nil {
		n := 0
		for _, e := range events {
			if e.Kind == state.EventFellBack {
				n++
			}
		}
		m.rollbacks.Set(float64(n))
	}
}
