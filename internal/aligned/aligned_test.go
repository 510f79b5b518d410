package aligned

import "testing"

func TestBuffer(t *testing.T) {
	for _, n := range []int{0, 1, 4095, 4096, 4 << 20} {
		b := Buffer(n)
		if len(b) != n || cap(b) != n || !Is(b) {
			t.Errorf("Buffer(%d): len %d cap %d aligned %v", n, len(b), cap(b), Is(b))
		}
	}
	if b := Buffer(8192); Is(b[1:]) {
		t.Error("b[1:] reported aligned")
	}
}
