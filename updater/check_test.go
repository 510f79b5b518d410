package updater

import (
	"encoding/json"
	"strings"
	"testing"

	"sealift/signing"
	"sealift/updater/state"
)

func TestCompareVersions(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"1.2.0", "1.2.0", 0},
		{"v1.2.0", "1.2.0", 0},
		{"1.10.0", "1.9.0", 1},
		{"1.2", "1.2.1", -1},
		{"1.2.0-rc1", "1.2.0", -1},
		{"1.2.0-rc2", "1.2.0-rc10", -1},
		{"2026.11.1", "2026.2.9", 1},
		{"1.2.a", "1.2.1", 1},
	}
	for _, c := range cases {
		if got := CompareVersions(c.a, c.b); got != c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := CompareVersions(c.b, c.a); got != -c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", c.b, c.a, got, -c.want)
		}
	}
}

func target(variant, arch, version string, recalled bool) (string, signing.TargetInfo) {
	m, _ := json.Marshal(ReleaseMeta{Version: version, Variant: variant, Arch: arch, Recalled: recalled})
	name := TargetName(variant, arch, version)
	return name, signing.TargetInfo{Name: name, Length: 100, SHA256: strings.Repeat("a", 64), Custom: m}
}

func targets(ts ...func() (string, signing.TargetInfo)) map[string]signing.TargetInfo {
	out := map[string]signing.TargetInfo{}
	for _, f := range ts {
		n, i := f()
		out[n] = i
	}
	return out
}

func rel(variant, arch, version string, recalled bool) func() (string, signing.TargetInfo) {
	return func() (string, signing.TargetInfo) { return target(variant, arch, version, recalled) }
}

func TestDecide(t *testing.T) {
	node := CheckOptions{Variant: "k8s", Arch: "x86_64"}
	cases := []struct {
		name      string
		targets   map[string]signing.TargetInfo
		running   string
		opts      CheckOptions
		failed    map[string]*state.Outcome
		take      string
		downgrade bool
		reason    string
	}{
		{"fresh node takes newest", targets(rel("k8s", "x86_64", "1.0", false), rel("k8s", "x86_64", "1.1", false)), "", node, nil, "1.1", false, "no release is running"},
		{"newer release", targets(rel("k8s", "x86_64", "1.0", false), rel("k8s", "x86_64", "1.1", false)), "1.0", node, nil, "1.1", false, "newer"},
		{"up to date", targets(rel("k8s", "x86_64", "1.1", false)), "1.1", node, nil, "", false, "up to date"},
		{"other variant ignored", targets(rel("gpu", "x86_64", "9.0", false), rel("k8s", "x86_64", "1.0", false)), "1.0", node, nil, "", false, "up to date"},
		{"other arch ignored", targets(rel("k8s", "aarch64", "9.0", false)), "1.0", node, nil, "", false, "no signed release"},
		{"recalled newest skipped", targets(rel("k8s", "x86_64", "1.0", false), rel("k8s", "x86_64", "1.1", true)), "1.0", node, nil, "", false, "up to date"},
		{"downgrade refused", targets(rel("k8s", "x86_64", "1.0", false)), "1.1", node, nil, "", false, "not downgrading"},
		{"downgrade allowed by operator", targets(rel("k8s", "x86_64", "1.0", false)), "1.1", CheckOptions{Variant: "k8s", Arch: "x86_64", AllowDowngrade: true}, nil, "1.0", true, "allowed by the operator"},
		{"running release recalled", targets(rel("k8s", "x86_64", "1.0", false), rel("k8s", "x86_64", "1.1", true)), "1.1", node, nil, "1.0", true, "recalled"},
		{"failed release not retried", targets(rel("k8s", "x86_64", "1.0", false), rel("k8s", "x86_64", "1.1", false)), "1.0", node,
			map[string]*state.Outcome{"1.1": {Reason: "marked bad"}}, "", false, "skipped 1.1 (failed here: marked bad)"},
		{"a newer release after a failed one is taken", targets(rel("k8s", "x86_64", "1.1", false), rel("k8s", "x86_64", "1.2", false)), "1.0", node,
			map[string]*state.Outcome{"1.1": {Reason: "marked bad"}}, "1.2", false, "newer"},
		{"everything recalled", targets(rel("k8s", "x86_64", "1.1", true)), "1.0", node, nil, "", false, "recalled"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := decide(c.targets, c.running, c.failed, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if res.Take != nil {
				got = res.Take.Meta.Version
			}
			if got != c.take || res.Downgrade != c.downgrade || !strings.Contains(res.Reason, c.reason) {
				t.Fatalf("take %q downgrade %v reason %q", got, res.Downgrade, res.Reason)
			}
		})
	}
}

func TestDecideRejectsMislabelledTarget(t *testing.T) {
	_, info := target("k8s", "x86_64", "1.1", false)
	_, err := decide(map[string]signing.TargetInfo{"k8s/x86_64/1.0.json": info}, "1.0", nil, CheckOptions{Variant: "k8s", Arch: "x86_64"})
	if err == nil || !strings.Contains(err.Error(), "carries metadata") {
		t.Fatalf("got %v", err)
	}
}
