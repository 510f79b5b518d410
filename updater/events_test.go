package updater

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"sealift/bootloader"
	"sealift/updater/state"
)

// TestEventHistory follows a node through install, trial, mark-good, a
// cancelled update (which leaves a skip), a failed one and a bad slot,
// and checks the history tells it in order.
func TestEventHistory(t *testing.T) {
	r := newRig(t, backends[0].make)
	u := r.u
	mustInstall(t, u, image(1, 16*4096), "v1")
	mustBoot(t, u, bootloader.SlotA, true)
	if _, err := u.MarkGood(); err != nil {
		t.Fatal(err)
	}
	mustInstall(t, u, image(2, 16*4096), "v2")
	if _, err := u.Cancel(Actor{}); err != nil {
		t.Fatal(err)
	}
	bad := req(image(3, 16*4096), "v3")
	bad.ExpectedRoot = bytes.Repeat([]byte{1}, 32)
	if _, err := u.Install(context.Background(), bad); err == nil {
		t.Fatal("install with a wrong root succeeded")
	}
	mustInstall(t, u, image(4, 16*4096), "v4")
	mustBoot(t, u, bootloader.SlotB, true)
	if _, err := u.MarkBad("probe /healthz: 503"); err != nil {
		t.Fatal(err)
	}
	st, err := r.store.Load()
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ kind, slot, version, text string }{
		{state.EventInstalled, "A", "v1", "first release"},
		{state.EventMarkedGood, "A", "v1", "kept"},
		{state.EventInstalled, "B", "v2", "next boot tries it"},
		{state.EventCancelled, "B", "v2", "cancelled"},
		{state.EventHoldSet, "", "v2", ": its staged update was cancelled; v2 is not taken"},
		{state.EventInterrupted, "B", "v3", "verity root hash"},
		{state.EventInstalled, "B", "v4", "next boot"},
		{state.EventMarkedBad, "B", "v4", "probe /healthz: 503"},
	}
	if len(st.Events) != len(want) {
		t.Fatalf("%d events, want %d: %+v", len(st.Events), len(want), st.Events)
	}
	for i, w := range want {
		e := st.Events[i]
		if e.Kind != w.kind || string(e.Slot) != w.slot || e.Version != w.version || !strings.Contains(e.Message, w.text) || e.Seq != uint64(i+1) {
			t.Errorf("event %d: %+v, want %s %s %s containing %q", i, e, w.kind, w.slot, w.version, w.text)
		}
	}
}
