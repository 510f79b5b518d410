package state

import (
	"time"

	"sealift/bootloader"
)

// MaxEvents bounds the history kept in the state file: the oldest events
// go first. A few hundred cover months of a node's updates, and the state
// file (rewritten whole on every change) stays small.
const MaxEvents = 300

// Event is one entry of the node's history: what sealift did or saw.
// Events live in the state file, so an event is recorded exactly when the
// change it describes is: both are in the same crash-safe write.
type Event struct {
	// Seq numbers events from 1, never reused, so a reader can ask for
	// what came after the last one it saw.
	Seq  uint64    `json:"seq"`
	At   time.Time `json:"at"`
	Kind string    `json:"kind"`
	// Slot and Version are the ones the event concerns, when any.
	Slot    bootloader.Slot `json:"slot,omitempty"`
	Version string          `json:"version,omitempty"`
	Message string          `json:"message"`
	// Repeats counts identical events folded into this one (the same
	// failure every check), with At the latest.
	Repeats int `json:"repeats,omitempty"`
}

// Event kinds.
const (
	EventInstalled     = "installed"      // a release was written and the flags flipped
	EventInterrupted   = "interrupted"    // an install stopped before the flip
	EventMarkedGood    = "marked-good"    // the running slot passed its health check
	EventMarkedBad     = "marked-bad"     // the running slot failed its health check
	EventRolledBack    = "rolled-back"    // the other slot was chosen for the next boot
	EventCancelled     = "cancelled"      // a staged update was undone
	EventBooted        = "booted"         // boot-check saw a boot of a slot
	EventFellBack      = "fell-back"      // boot-check saw the bootloader give up on a slot
	EventRetry         = "retry"          // an operator allowed a failed release again
	EventCheckFailed   = "check-failed"   // the agent could not check or download
	EventRebooting     = "rebooting"      // the agent reboots into a staged update
	EventLockTaken     = "lock-taken"     // the fleet's reboot lock was granted
	EventLockReleased  = "lock-released"  // the fleet's reboot lock was given back
	EventAgentStarted  = "agent-started"  // the agent started or reloaded its config
	EventRebootWaiting = "reboot-waiting" // a staged update waits for its window, the lock or a hold
	EventHoldSet       = "hold-set"       // an operator hold was set (or replaced)
	EventHoldCleared   = "hold-cleared"   // an operator hold was lifted
	EventHoldExpired   = "hold-expired"   // a pause reached its end by itself
)

// Record appends an event, numbering it, and trims the history to
// MaxEvents. An event equal to the newest one in kind, slot, version and
// message is folded into it.
func (s *State) Record(e Event) {
	if n := len(s.Events); n > 0 {
		last := &s.Events[n-1]
		if last.Kind == e.Kind && last.Slot == e.Slot && last.Version == e.Version && last.Message == e.Message {
			last.Repeats++
			last.At = e.At
			return
		}
	}
	s.EventSeq++
	e.Seq = s.EventSeq
	e.Repeats = 0
	s.Events = append(s.Events, e)
	if over := len(s.Events) - MaxEvents; over > 0 {
		s.Events = append([]Event(nil), s.Events[over:]...)
	}
}

// EventsAfter returns the events numbered after seq, oldest first.
func (s *State) EventsAfter(seq uint64) []Event {
	for i, e := range s.Events {
		if e.Seq > seq {
			return s.Events[i:]
		}
	}
	return nil
}
