package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// syncBuffer is a bytes.Buffer for the leak reports, which the pool's heaps
// write from the goroutines of their requests.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestSelftest(t *testing.T) {
	var stdout, stderr syncBuffer
	require.NoError(t, run([]string{"-selftest", "-requests", "20"}, &stdout, &stderr), "stderr: %s", stderr.String())
	out := stdout.String()
	t.Log("\n" + out)
	assert.Contains(t, out, "n=2000: /records and /go/records answer the same 220584 bytes of JSON")
	assert.Contains(t, out, `{"id":2,"name":"user-000002","email":"user2@example.com","score":79.19,"active":true,"city":"Zürich"}`)
	assert.Regexp(t, `(?m)^/records\s+20\s+4\s`, out)
	assert.Regexp(t, `(?m)^/go/records\s+20\s+4\s`, out)
	assert.Contains(t, out, "heap request-1 between requests: usage 0 B")
	assert.Contains(t, out, "zmm requests 23,") // 3 checks, 20 under load
	assert.Contains(t, out, "in use 0")
	assert.Empty(t, stderr.String(), "no leak report: the handler frees what it allocates")
}

func TestSelftestDebugReportsTheLeakingRequest(t *testing.T) {
	var stdout, stderr syncBuffer
	require.NoError(t, run([]string{"-selftest", "-debug", "-requests", "4"}, &stdout, &stderr))
	assert.Contains(t, stdout.String(), "GET /records?n=3&leak=1 leaked its output buffer")
	report := stderr.String()
	assert.Contains(t, report, "Script:  'GET /records'")
	assert.Contains(t, report, "(4096 bytes), script=GET /records\n")
	assert.Contains(t, report, "=== Total 1 memory leaks detected ===")
}

func TestBadRequests(t *testing.T) {
	var stderr syncBuffer
	s, err := newServer(config{maxIdle: 1}, &stderr)
	require.NoError(t, err)
	defer s.close()
	for _, path := range []string{"/records?n=-1", "/go/records?n=x", "/records?n=1000001"} {
		w := httptest.NewRecorder()
		s.mux.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		assert.Equal(t, http.StatusBadRequest, w.Code, path)
	}
	w := httptest.NewRecorder()
	s.mux.ServeHTTP(w, httptest.NewRequest("GET", "/records?n=1", nil))
	assert.Equal(t, http.StatusOK, w.Code)
	assert.JSONEq(t, `{"count":1,"records":[{"id":1,"name":"user-000001","email":"user1@example.com","score":0,"active":false,"city":"Lisbon"}]}`, w.Body.String())
}

func TestFlags(t *testing.T) {
	var stdout, stderr syncBuffer
	assert.Error(t, run([]string{"-nope"}, &stdout, &stderr))
	assert.Error(t, run([]string{"extra"}, &stdout, &stderr))
}
