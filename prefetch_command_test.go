package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestToolchainEnvAsksTheGoCommand: the prefetch command names its scope
// after the toolchain the go command reports, as the servers the go
// command starts do (it sets GOVERSION, GOOS, GOARCH, ... for them), not
// after a GOVERSION of the job's own (a workflow's `GOVERSION: "1.22"`),
// which the go command overrides for its servers: then it would land
// another scope's manifests, or none.
func TestToolchainEnvAsksTheGoCommand(t *testing.T) {
	out, err := exec.Command("go", "env", "GOVERSION", "GOOS", "GOARCH").Output()
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	want := strings.Fields(string(out))
	env := map[string]string{"GOVERSION": "1.22"}
	getenv, err := toolchainEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range []string{"GOVERSION", "GOOS", "GOARCH"} {
		if got := getenv(k); got != want[i] {
			t.Errorf("%s = %q, want %q (the go command's)", k, got, want[i])
		}
	}
}
