package state

import (
	"fmt"
	"testing"
	"time"
)

func TestRecordNumbersFoldsAndTrims(t *testing.T) {
	s := New()
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	s.Record(Event{At: t0, Kind: EventCheckFailed, Message: "registry down"})
	s.Record(Event{At: t0.Add(time.Hour), Kind: EventCheckFailed, Message: "registry down"})
	if len(s.Events) != 1 || s.Events[0].Repeats != 1 || !s.Events[0].At.Equal(t0.Add(time.Hour)) || s.Events[0].Seq != 1 {
		t.Fatalf("identical events not folded: %+v", s.Events)
	}
	s.Record(Event{At: t0, Kind: EventCheckFailed, Message: "timeout"})
	if len(s.Events) != 2 || s.Events[1].Seq != 2 {
		t.Fatalf("a different event was folded: %+v", s.Events)
	}
	for i := range MaxEvents + 10 {
		s.Record(Event{At: t0, Kind: EventInstalled, Message: fmt.Sprint(i)})
	}
	if len(s.Events) != MaxEvents {
		t.Fatalf("%d events kept, want %d", len(s.Events), MaxEvents)
	}
	last := s.Events[len(s.Events)-1]
	if last.Seq != MaxEvents+12 || last.Message != fmt.Sprint(MaxEvents+9) {
		t.Fatalf("newest event %+v", last)
	}
	if got := s.EventsAfter(last.Seq - 2); len(got) != 2 || got[0].Seq != last.Seq-1 {
		t.Fatalf("EventsAfter: %+v", got)
	}
	if got := s.EventsAfter(last.Seq); len(got) != 0 {
		t.Fatalf("EventsAfter(newest): %+v", got)
	}
	if got := s.EventsAfter(0); len(got) != MaxEvents {
		t.Fatalf("EventsAfter(0): %d events", len(got))
	}
}

func TestEventsSurviveSaveAndLoad(t *testing.T) {
	d := Dir(t.TempDir())
	s := New()
	s.Record(Event{At: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Kind: EventBooted, Slot: "B", Version: "1.2", Message: "booted"})
	s.FleetLock = &LockHold{Group: "workers", Slot: "B", Version: "1.2"}
	if err := d.Save(s); err != nil {
		t.Fatal(err)
	}
	got, err := d.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Events) != 1 || got.Events[0] != s.Events[0] || got.EventSeq != 1 || got.FleetLock == nil || *got.FleetLock != *s.FleetLock {
		t.Fatalf("loaded %+v", got)
	}
}
